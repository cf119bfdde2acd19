
/*
 * ngx_im: HS256 JSON Web Tokens compatible with OpenIM.
 *
 * A token is base64url(header) "." base64url(claims) "." base64url(mac),
 * with mac = HMAC-SHA256(secret, base64url(header) "." base64url(claims)).
 */


#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <yajl/yajl_tree.h>

#include "ngx_http_im_token.h"


#define NGX_HTTP_IM_TOKEN_MAC_LEN  32


/* base64url of {"alg":"HS256","typ":"JWT"} */
#define NGX_HTTP_IM_TOKEN_HEADER   "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"


static int ngx_http_im_base64url_value(unsigned char c);
static int ngx_http_im_token_mac(const unsigned char *secret,
    size_t secret_len, const char *data, size_t len, unsigned char *mac);
static int ngx_http_im_token_header(const char *b64, size_t len);
static int ngx_http_im_token_claims(const char *b64, size_t len,
    long long now, ngx_http_im_token_claims_t *claims);
static int ngx_http_im_token_json_ok(const char *json, size_t n);
static yajl_val ngx_http_im_token_member(yajl_val obj, const char *key);
static int ngx_http_im_token_int(yajl_val obj, const char *key,
    int required, long long *out);


static const char  ngx_http_im_base64url_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";


size_t
ngx_http_im_base64url_encode(const unsigned char *src, size_t len, char *dst)
{
    char           *d;
    unsigned long   v;

    d = dst;

    while (len >= 3) {
        v = ((unsigned long) src[0] << 16) | (src[1] << 8) | src[2];

        *d++ = ngx_http_im_base64url_chars[(v >> 18) & 0x3f];
        *d++ = ngx_http_im_base64url_chars[(v >> 12) & 0x3f];
        *d++ = ngx_http_im_base64url_chars[(v >> 6) & 0x3f];
        *d++ = ngx_http_im_base64url_chars[v & 0x3f];

        src += 3;
        len -= 3;
    }

    if (len == 2) {
        v = ((unsigned long) src[0] << 8) | src[1];

        *d++ = ngx_http_im_base64url_chars[(v >> 10) & 0x3f];
        *d++ = ngx_http_im_base64url_chars[(v >> 4) & 0x3f];
        *d++ = ngx_http_im_base64url_chars[(v << 2) & 0x3f];

    } else if (len == 1) {
        v = src[0];

        *d++ = ngx_http_im_base64url_chars[(v >> 2) & 0x3f];
        *d++ = ngx_http_im_base64url_chars[(v << 4) & 0x3f];
    }

    return d - dst;
}


int
ngx_http_im_base64url_decode(const char *src, size_t len, unsigned char *dst,
    size_t *dst_len)
{
    int            v, bits;
    size_t         i, n;
    unsigned int   acc;

    if (len % 4 == 1) {
        return -1;
    }

    acc = 0;
    bits = 0;
    n = 0;

    for (i = 0; i < len; i++) {
        v = ngx_http_im_base64url_value((unsigned char) src[i]);
        if (v < 0) {
            return -1;
        }

        acc = (acc << 6) | (unsigned int) v;
        bits += 6;

        if (bits >= 8) {
            bits -= 8;
            dst[n++] = (unsigned char) (acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }

    /* the bits left over must be zero, so each encoding is unique */

    if (acc != 0) {
        return -1;
    }

    *dst_len = n;

    return 0;
}


static int
ngx_http_im_base64url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }

    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }

    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }

    if (c == '-') {
        return 62;
    }

    if (c == '_') {
        return 63;
    }

    return -1;
}


int
ngx_http_im_user_id_valid(const char *s, size_t len)
{
    size_t         i;
    unsigned char  c;

    if (len == 0 || len > NGX_HTTP_IM_UID_MAX) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        c = (unsigned char) s[i];

        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
            || (c >= '0' && c <= '9')
            || c == '.' || c == '@' || c == '+' || c == '-')
        {
            continue;
        }

        return 0;
    }

    return 1;
}


size_t
ngx_http_im_token_issue(const unsigned char *secret, size_t secret_len,
    const char *user_id, size_t uid_len, int platform_id, long long now,
    long long ttl, char *out, size_t cap)
{
    int            n;
    char          *p, claims[256];
    size_t         hlen, need;
    long long      iat;
    unsigned char  mac[NGX_HTTP_IM_TOKEN_MAC_LEN];

    if (!ngx_http_im_user_id_valid(user_id, uid_len)
        || platform_id < NGX_HTTP_IM_PLATFORM_MIN
        || platform_id > NGX_HTTP_IM_PLATFORM_MAX
        || ttl <= 0 || now > LLONG_MAX - ttl
        || now < LLONG_MIN + NGX_HTTP_IM_TOKEN_IAT_SKEW
        || secret_len == 0)
    {
        return 0;
    }

    iat = now - NGX_HTTP_IM_TOKEN_IAT_SKEW;

    n = snprintf(claims, sizeof(claims),
                 "{\"UserID\":\"%.*s\",\"PlatformID\":%d,\"exp\":%lld,"
                 "\"nbf\":%lld,\"iat\":%lld}",
                 (int) uid_len, user_id, platform_id, now + ttl, iat, iat);

    if (n < 0 || (size_t) n >= sizeof(claims)) {
        return 0;
    }

    hlen = sizeof(NGX_HTTP_IM_TOKEN_HEADER) - 1;

    need = hlen + 1 + NGX_HTTP_IM_BASE64URL_ENCODED_LEN((size_t) n) + 1
           + NGX_HTTP_IM_BASE64URL_ENCODED_LEN(NGX_HTTP_IM_TOKEN_MAC_LEN) + 1;

    if (cap < need) {
        return 0;
    }

    memcpy(out, NGX_HTTP_IM_TOKEN_HEADER, hlen);
    p = out + hlen;
    *p++ = '.';
    p += ngx_http_im_base64url_encode((unsigned char *) claims, n, p);

    if (ngx_http_im_token_mac(secret, secret_len, out, p - out, mac) != 0) {
        return 0;
    }

    *p++ = '.';
    p += ngx_http_im_base64url_encode(mac, NGX_HTTP_IM_TOKEN_MAC_LEN, p);
    *p = '\0';

    return p - out;
}


int
ngx_http_im_token_verify(const unsigned char *secret, size_t secret_len,
    const char *token, size_t len, long long now,
    ngx_http_im_token_claims_t *claims)
{
    int             rc;
    size_t          n;
    const char     *end, *dot1, *dot2;
    unsigned char   mac[NGX_HTTP_IM_TOKEN_MAC_LEN];
    unsigned char   sig[NGX_HTTP_IM_BASE64URL_DECODED_LEN(
                            NGX_HTTP_IM_TOKEN_MAX_LEN)];

    if (token == NULL || len == 0 || len > NGX_HTTP_IM_TOKEN_MAX_LEN) {
        return NGX_HTTP_IM_ERR_TOKEN_MALFORMED;
    }

    end = token + len;

    dot1 = memchr(token, '.', len);
    if (dot1 == NULL) {
        return NGX_HTTP_IM_ERR_TOKEN_MALFORMED;
    }

    dot2 = memchr(dot1 + 1, '.', end - (dot1 + 1));
    if (dot2 == NULL || memchr(dot2 + 1, '.', end - (dot2 + 1)) != NULL) {
        return NGX_HTTP_IM_ERR_TOKEN_MALFORMED;
    }

    rc = ngx_http_im_token_header(token, dot1 - token);
    if (rc != NGX_HTTP_IM_OK) {
        return rc;
    }

    if (ngx_http_im_base64url_decode(dot2 + 1, end - (dot2 + 1), sig, &n)
        != 0)
    {
        return NGX_HTTP_IM_ERR_TOKEN_MALFORMED;
    }

    if (n != NGX_HTTP_IM_TOKEN_MAC_LEN
        || ngx_http_im_token_mac(secret, secret_len, token, dot2 - token,
                                 mac)
           != 0)
    {
        return NGX_HTTP_IM_ERR_TOKEN_INVALID;
    }

    if (CRYPTO_memcmp(sig, mac, NGX_HTTP_IM_TOKEN_MAC_LEN) != 0) {
        return NGX_HTTP_IM_ERR_TOKEN_INVALID;
    }

    /* the claims are trusted only from here on */

    return ngx_http_im_token_claims(dot1 + 1, dot2 - (dot1 + 1), now, claims);
}


static int
ngx_http_im_token_mac(const unsigned char *secret, size_t secret_len,
    const char *data, size_t len, unsigned char *mac)
{
    unsigned int  n;

    if (secret == NULL || secret_len == 0 || secret_len > INT_MAX) {
        return -1;
    }

    n = 0;

    if (HMAC(EVP_sha256(), secret, (int) secret_len,
             (const unsigned char *) data, len, mac, &n)
        == NULL
        || n != NGX_HTTP_IM_TOKEN_MAC_LEN)
    {
        return -1;
    }

    return 0;
}


/*
 * The header is parsed (not compared with ours byte for byte), so tokens
 * from other HS256 signers with the same secret are accepted.
 */

static int
ngx_http_im_token_header(const char *b64, size_t len)
{
    int        rc;
    size_t     n;
    yajl_val   root, alg;
    char       json[NGX_HTTP_IM_BASE64URL_DECODED_LEN(
                    NGX_HTTP_IM_TOKEN_MAX_LEN) + 1];

    if (ngx_http_im_base64url_decode(b64, len, (unsigned char *) json, &n)
        != 0
        || !ngx_http_im_token_json_ok(json, n))
    {
        return NGX_HTTP_IM_ERR_TOKEN_MALFORMED;
    }

    json[n] = '\0';

    root = yajl_tree_parse(json, NULL, 0);
    if (root == NULL || !YAJL_IS_OBJECT(root)) {
        rc = NGX_HTTP_IM_ERR_TOKEN_MALFORMED;
        goto done;
    }

    alg = ngx_http_im_token_member(root, "alg");

    if (alg == NULL || !YAJL_IS_STRING(alg)
        || strcmp(alg->u.string, "HS256") != 0)
    {
        rc = NGX_HTTP_IM_ERR_TOKEN_INVALID;
        goto done;
    }

    rc = NGX_HTTP_IM_OK;

done:

    yajl_tree_free(root);

    return rc;
}


static int
ngx_http_im_token_claims(const char *b64, size_t len, long long now,
    ngx_http_im_token_claims_t *claims)
{
    int         rc;
    size_t      n;
    yajl_val    root, uid;
    long long   pid, exp, iat, nbf;
    char        json[NGX_HTTP_IM_BASE64URL_DECODED_LEN(
                     NGX_HTTP_IM_TOKEN_MAX_LEN) + 1];

    if (ngx_http_im_base64url_decode(b64, len, (unsigned char *) json, &n)
        != 0
        || !ngx_http_im_token_json_ok(json, n))
    {
        return NGX_HTTP_IM_ERR_TOKEN_MALFORMED;
    }

    json[n] = '\0';

    rc = NGX_HTTP_IM_ERR_TOKEN_MALFORMED;

    root = yajl_tree_parse(json, NULL, 0);
    if (root == NULL || !YAJL_IS_OBJECT(root)) {
        goto done;
    }

    uid = ngx_http_im_token_member(root, "UserID");

    if (uid == NULL || !YAJL_IS_STRING(uid)
        || !ngx_http_im_user_id_valid(uid->u.string,
                                      strlen(uid->u.string)))
    {
        goto done;
    }

    if (ngx_http_im_token_int(root, "PlatformID", 1, &pid) != 0
        || pid < NGX_HTTP_IM_PLATFORM_MIN || pid > NGX_HTTP_IM_PLATFORM_MAX
        || ngx_http_im_token_int(root, "exp", 1, &exp) != 0
        || ngx_http_im_token_int(root, "iat", 0, &iat) != 0
        || ngx_http_im_token_int(root, "nbf", 0, &nbf) != 0)
    {
        goto done;
    }

    if (nbf > now) {
        rc = NGX_HTTP_IM_ERR_TOKEN_NOT_YET;
        goto done;
    }

    if (exp <= now) {
        rc = NGX_HTTP_IM_ERR_TOKEN_EXPIRED;
        goto done;
    }

    if (claims) {
        strcpy(claims->user_id, uid->u.string);
        claims->platform_id = (int) pid;
        claims->exp = exp;
        claims->iat = iat;
    }

    rc = NGX_HTTP_IM_OK;

done:

    yajl_tree_free(root);

    return rc;
}


/*
 * Text yajl may read: not empty, no NUL byte, and no "\u0000" escape,
 * which yajl would decode into a NUL that ends the string (a UserID
 * "u1\u0000x" would read as "u1").
 */

static int
ngx_http_im_token_json_ok(const char *json, size_t n)
{
    size_t  i;

    if (n == 0 || memchr(json, '\0', n) != NULL) {
        return 0;
    }

    for (i = 0; i + 1 < n; i++) {
        if (json[i] != '\\') {
            continue;
        }

        if (n - i >= 6 && memcmp(&json[i + 1], "u0000", 5) == 0) {
            return 0;
        }

        i++;                                /* the escaped character */
    }

    return 1;
}


static yajl_val
ngx_http_im_token_member(yajl_val obj, const char *key)
{
    size_t  i;

    for (i = 0; i < obj->u.object.len; i++) {
        if (strcmp(obj->u.object.keys[i], key) == 0) {
            return obj->u.object.values[i];
        }
    }

    return NULL;
}


/* an optional claim that is absent reads as 0 */

static int
ngx_http_im_token_int(yajl_val obj, const char *key, int required,
    long long *out)
{
    yajl_val  v;

    v = ngx_http_im_token_member(obj, key);

    if (v == NULL) {
        *out = 0;
        return required ? -1 : 0;
    }

    if (!YAJL_IS_INTEGER(v)) {
        return -1;
    }

    *out = YAJL_GET_INTEGER(v);

    return 0;
}


size_t
ngx_http_im_login_seats(int policy, char *seats)
{
    int  i;

    /* OpenIM's platform classes, by platform ID 1..11 */
    static const char  classes[] = "mmppwnpaadh";

    switch (policy) {

    case NGX_HTTP_IM_LOGIN_PER_CLASS:
        memcpy(seats, classes, 11);
        return 11;

    case NGX_HTTP_IM_LOGIN_PER_PLATFORM:
        for (i = 0; i < 11; i++) {
            seats[i] = (char) ('a' + i);
        }
        return 11;

    case NGX_HTTP_IM_LOGIN_PC_AND_OTHER:
        for (i = 0; i < 11; i++) {
            seats[i] = classes[i] == 'p' ? 'p' : 'o';
        }
        return 11;

    default:
        return 0;
    }
}
