
/*
 * Unit tests of ngx_http_im_token.c: HS256 issue/verify, base64url and
 * the user ID rule.
 */


#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ngx_http_im_token.h"

#include "check.h"


#define SECRET      (const unsigned char *) "openIM123"
#define SECRET_LEN  9


/*
 * Generated once with python3 (hmac, hashlib, base64), secret "openIM123":
 * {"UserID":"openIM123456","PlatformID":10,"exp":1999999999,
 *  "nbf":1699999995,"iat":1699999995}
 */
static const char  known[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJVc2VySUQiOiJvcGVuSU0xMjM0NTYiLCJQbGF0Zm9ybUlEIjoxMCwiZXhwIjoxOTk5"
    "OTk5OTk5LCJuYmYiOjE2OTk5OTk5OTUsImlhdCI6MTY5OTk5OTk5NX0."
    "LVhGuC_lJFQnQps73u5M4LrG3ZxNapIcGiD1mkrOlug";


/* builds header.payload.signature from JSON texts, signing independently */

static size_t
sign(const char *header, const char *payload, const char *secret, char *out)
{
    char           *p;
    unsigned int    n;
    unsigned char   mac[EVP_MAX_MD_SIZE];

    p = out;
    p += ngx_http_im_base64url_encode((const unsigned char *) header,
                                      strlen(header), p);
    *p++ = '.';
    p += ngx_http_im_base64url_encode((const unsigned char *) payload,
                                      strlen(payload), p);

    HMAC(EVP_sha256(), secret, (int) strlen(secret),
         (unsigned char *) out, p - out, mac, &n);

    *p++ = '.';
    p += ngx_http_im_base64url_encode(mac, n, p);
    *p = '\0';

    return p - out;
}


static int
verify(const char *token, long long now, ngx_http_im_token_claims_t *cl)
{
    return ngx_http_im_token_verify(SECRET, SECRET_LEN, token, strlen(token),
                                    now, cl);
}


static int
verify_claims(const char *payload)
{
    char  tok[2048];

    sign("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, "openIM123", tok);

    return verify(tok, 1700000000, NULL);
}


static void
test_base64url(void)
{
    size_t         n;
    char           enc[16];
    unsigned char  dec[16];

    static const unsigned char  bin[] = { 0xfb, 0xff };

    CHECK(ngx_http_im_base64url_encode((unsigned char *) "", 0, enc) == 0);

    n = ngx_http_im_base64url_encode((unsigned char *) "f", 1, enc);
    CHECK(n == 2 && memcmp(enc, "Zg", 2) == 0);

    n = ngx_http_im_base64url_encode((unsigned char *) "fo", 2, enc);
    CHECK(n == 3 && memcmp(enc, "Zm8", 3) == 0);

    n = ngx_http_im_base64url_encode((unsigned char *) "foo", 3, enc);
    CHECK(n == 4 && memcmp(enc, "Zm9v", 4) == 0);

    n = ngx_http_im_base64url_encode((unsigned char *) "foobar", 6, enc);
    CHECK(n == 8 && memcmp(enc, "Zm9vYmFy", 8) == 0);

    n = ngx_http_im_base64url_encode(bin, 2, enc);
    CHECK(n == 3 && memcmp(enc, "-_8", 3) == 0);

    CHECK(NGX_HTTP_IM_BASE64URL_ENCODED_LEN(0) == 0);
    CHECK(NGX_HTTP_IM_BASE64URL_ENCODED_LEN(1) == 2);
    CHECK(NGX_HTTP_IM_BASE64URL_ENCODED_LEN(5) == 7);
    CHECK(NGX_HTTP_IM_BASE64URL_ENCODED_LEN(32) == 43);
    CHECK(NGX_HTTP_IM_BASE64URL_DECODED_LEN(43) == 32);

    CHECK(ngx_http_im_base64url_decode("Zm9vYg", 6, dec, &n) == 0
          && n == 4 && memcmp(dec, "foob", 4) == 0);
    CHECK(ngx_http_im_base64url_decode("", 0, dec, &n) == 0 && n == 0);
    CHECK(ngx_http_im_base64url_decode("-_8", 3, dec, &n) == 0
          && n == 2 && memcmp(dec, bin, 2) == 0);

    /* padding, the standard alphabet, a lone char, non-zero spare bits */
    CHECK(ngx_http_im_base64url_decode("Zg==", 4, dec, &n) == -1);
    CHECK(ngx_http_im_base64url_decode("+/8", 3, dec, &n) == -1);
    CHECK(ngx_http_im_base64url_decode("Zm9vY", 5, dec, &n) == -1);
    CHECK(ngx_http_im_base64url_decode("Zh", 2, dec, &n) == -1);
    CHECK(ngx_http_im_base64url_decode("Zm9", 3, dec, &n) == -1);
    CHECK(ngx_http_im_base64url_decode("Zm\n9v", 5, dec, &n) == -1);
}


static void
test_user_id(void)
{
    char  id[70];

    CHECK(ngx_http_im_user_id_valid("u1", 2));
    CHECK(ngx_http_im_user_id_valid("openIM123456", 12));
    CHECK(ngx_http_im_user_id_valid("a.b@c+d-e", 9));
    CHECK(!ngx_http_im_user_id_valid("", 0));
    CHECK(!ngx_http_im_user_id_valid("a_b", 3));
    CHECK(!ngx_http_im_user_id_valid("a:b", 3));
    CHECK(!ngx_http_im_user_id_valid("a{b", 3));
    CHECK(!ngx_http_im_user_id_valid("a}b", 3));
    CHECK(!ngx_http_im_user_id_valid("a b", 3));
    CHECK(!ngx_http_im_user_id_valid("a/b", 3));
    CHECK(!ngx_http_im_user_id_valid("\xc3\xa9", 2));
    CHECK(!ngx_http_im_user_id_valid("ab\0", 3));

    memset(id, 'x', sizeof(id));
    CHECK(ngx_http_im_user_id_valid(id, 64));
    CHECK(!ngx_http_im_user_id_valid(id, 65));
}


static void
test_known_vector(void)
{
    int                          rc;
    char                         tok[NGX_HTTP_IM_TOKEN_ISSUE_MAX];
    size_t                       n;
    ngx_http_im_token_claims_t   cl;

    memset(&cl, 0, sizeof(cl));

    rc = verify(known, 1700000000, &cl);
    CHECK(rc == NGX_HTTP_IM_OK);
    CHECK(strcmp(cl.user_id, "openIM123456") == 0);
    CHECK(cl.platform_id == 10);
    CHECK(cl.exp == 1999999999LL);
    CHECK(cl.iat == 1699999995LL);

    /* issuing the same claims gives the same bytes */

    n = ngx_http_im_token_issue(SECRET, SECRET_LEN, "openIM123456", 12, 10,
                                1700000000, 299999999, tok, sizeof(tok));
    CHECK(n == sizeof(known) - 1);
    CHECK(strcmp(tok, known) == 0);
}


static void
test_roundtrip(void)
{
    char                         tok[NGX_HTTP_IM_TOKEN_ISSUE_MAX];
    char                         other[NGX_HTTP_IM_TOKEN_ISSUE_MAX];
    char                         mix[2 * NGX_HTTP_IM_TOKEN_ISSUE_MAX];
    char                         uid[65];
    size_t                       n;
    const char                  *d1, *d2;
    ngx_http_im_token_claims_t   cl;

    n = ngx_http_im_token_issue(SECRET, SECRET_LEN, "u1", 2, 1, 1000, 60,
                                tok, sizeof(tok));
    CHECK(n > 0 && n == strlen(tok));

    memset(&cl, 0, sizeof(cl));
    CHECK(verify(tok, 1001, &cl) == NGX_HTTP_IM_OK);
    CHECK(strcmp(cl.user_id, "u1") == 0 && cl.platform_id == 1);
    CHECK(cl.exp == 1060 && cl.iat == 995);

    CHECK(verify(tok, 1001, NULL) == NGX_HTTP_IM_OK);
    CHECK(verify(tok, 1059, NULL) == NGX_HTTP_IM_OK);

    /* exp <= now */
    CHECK(verify(tok, 1060, NULL) == NGX_HTTP_IM_ERR_TOKEN_EXPIRED);
    CHECK(verify(tok, 99999, NULL) == NGX_HTTP_IM_ERR_TOKEN_EXPIRED);

    /* nbf = iat = now - 5 */
    CHECK(verify(tok, 995, NULL) == NGX_HTTP_IM_OK);
    CHECK(verify(tok, 994, NULL) == NGX_HTTP_IM_ERR_TOKEN_NOT_YET);

    /* wrong secret */
    CHECK(ngx_http_im_token_verify((unsigned char *) "openIM124", 9, tok, n,
                                   1001, NULL)
          == NGX_HTTP_IM_ERR_TOKEN_INVALID);
    CHECK(ngx_http_im_token_verify((unsigned char *) "openIM12", 8, tok, n,
                                   1001, NULL)
          == NGX_HTTP_IM_ERR_TOKEN_INVALID);
    CHECK(ngx_http_im_token_verify((unsigned char *) "", 0, tok, n,
                                   1001, NULL)
          == NGX_HTTP_IM_ERR_TOKEN_INVALID);

    /* a 64-byte user ID, the longest */

    memset(uid, 'Z', 64);
    uid[64] = '\0';

    n = ngx_http_im_token_issue(SECRET, SECRET_LEN, uid, 64, 11, 1000, 60,
                                tok, sizeof(tok));
    CHECK(n > 0);
    CHECK(verify(tok, 1001, &cl) == NGX_HTTP_IM_OK);
    CHECK(strcmp(cl.user_id, uid) == 0 && cl.platform_id == 11);

    /* the claims of one token under the signature of another */

    n = ngx_http_im_token_issue(SECRET, SECRET_LEN, "u1", 2, 1, 1000, 60,
                                tok, sizeof(tok));
    CHECK(n > 0);
    n = ngx_http_im_token_issue(SECRET, SECRET_LEN, "admin", 5, 10, 1000,
                                60, other, sizeof(other));
    CHECK(n > 0);

    d1 = strrchr(tok, '.');
    d2 = strrchr(other, '.');
    snprintf(mix, sizeof(mix), "%.*s%s", (int) (d2 - other), other, d1);
    CHECK(verify(mix, 1001, NULL) == NGX_HTTP_IM_ERR_TOKEN_INVALID);
}


static void
test_tamper(void)
{
    char    tok[NGX_HTTP_IM_TOKEN_ISSUE_MAX], bad[NGX_HTTP_IM_TOKEN_ISSUE_MAX];
    char   *dot1, *dot2;
    size_t  n, i;

    n = ngx_http_im_token_issue(SECRET, SECRET_LEN, "u1", 2, 1, 1000, 60,
                                tok, sizeof(tok));
    CHECK(n > 0);

    dot1 = strchr(tok, '.');
    dot2 = strrchr(tok, '.');

    /* a payload byte changed */
    memcpy(bad, tok, n + 1);
    bad[dot1 - tok + 5] ^= 0x01;
    CHECK(verify(bad, 1001, NULL) == NGX_HTTP_IM_ERR_TOKEN_INVALID);

    /* a signature byte changed */
    memcpy(bad, tok, n + 1);
    bad[dot2 - tok + 1] = (bad[dot2 - tok + 1] == 'A') ? 'B' : 'A';
    CHECK(verify(bad, 1001, NULL) == NGX_HTTP_IM_ERR_TOKEN_INVALID);

    /* the last signature char with non-zero spare bits: not base64url */
    memcpy(bad, tok, n + 1);
    bad[n - 1] = (bad[n - 1] == 'B') ? 'C' : 'B';
    CHECK(verify(bad, 1001, NULL) != NGX_HTTP_IM_OK);

    /* a header byte changed */
    memcpy(bad, tok, n + 1);
    bad[3] ^= 0x01;
    CHECK(verify(bad, 1001, NULL) != NGX_HTTP_IM_OK);

    /* signature cut short, signature empty */
    memcpy(bad, tok, n + 1);
    bad[n - 3] = '\0';
    CHECK(verify(bad, 1001, NULL) == NGX_HTTP_IM_ERR_TOKEN_INVALID);
    bad[dot2 - tok + 1] = '\0';
    CHECK(verify(bad, 1001, NULL) == NGX_HTTP_IM_ERR_TOKEN_INVALID);

    /* every single-byte change is refused */

    for (i = 0; i < n; i++) {
        memcpy(bad, tok, n + 1);
        bad[i] = (bad[i] == 'x') ? 'y' : 'x';

        if (verify(bad, 1001, NULL) == NGX_HTTP_IM_OK) {
            break;
        }
    }

    CHECK(i == n);
}


/* a token, or its claims, and the verdict on it */

typedef struct {
    const char  *text;
    int          rc;
} case_t;


static void
test_alg(void)
{
    char         tok[1024];
    size_t       i;
    const char  *claims;

    static const case_t  headers[] = {
        { "{\"alg\":\"none\",\"typ\":\"JWT\"}", NGX_HTTP_IM_ERR_TOKEN_INVALID },
        { "{\"alg\":\"HS512\",\"typ\":\"JWT\"}", NGX_HTTP_IM_ERR_TOKEN_INVALID },
        { "{\"alg\":\"hs256\"}", NGX_HTTP_IM_ERR_TOKEN_INVALID },
        { "{\"typ\":\"JWT\"}", NGX_HTTP_IM_ERR_TOKEN_INVALID },
        { "{\"alg\":1}", NGX_HTTP_IM_ERR_TOKEN_INVALID },

        /* another signer's header layout is fine */
        { "{\"typ\":\"JWT\",\"alg\":\"HS256\"}", NGX_HTTP_IM_OK },
        { "{\"alg\":\"HS256\"}", NGX_HTTP_IM_OK },

        /* the header is not JSON */
        { "{\"alg\":\"HS256\"", NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "[\"HS256\"]", NGX_HTTP_IM_ERR_TOKEN_MALFORMED }
    };

    claims = "{\"UserID\":\"u1\",\"PlatformID\":1,\"exp\":1800000000}";

    for (i = 0; i < CHECK_N(headers); i++) {
        sign(headers[i].text, claims, "openIM123", tok);
        CHECK_CASE(verify(tok, 1700000000, NULL) == headers[i].rc,
                   headers[i].text);
    }

    /* alg none without a signature */

    sign("{\"alg\":\"none\",\"typ\":\"JWT\"}", claims, "openIM123", tok);
    *(strrchr(tok, '.') + 1) = '\0';
    CHECK(verify(tok, 1700000000, NULL) == NGX_HTTP_IM_ERR_TOKEN_INVALID);
}


static void
test_malformed(void)
{
    char    tok[5000];
    char    issued[NGX_HTTP_IM_TOKEN_ISSUE_MAX];
    size_t  i, n;

    static const char  *shapes[] = {
        "", "abc", "a.b", "..", "a.b.c.d", "a!.b.c", "Bearer x.y.z"
    };

    /* signed, but the claims are not acceptable */

    static const case_t  claims[] = {
        { "{\"UserID\":\"u1\",\"PlatformID\":1,\"exp\":1800000000}",
          NGX_HTTP_IM_OK },
        { "not json", NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "[1]", NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "{\"PlatformID\":1,\"exp\":1800000000}",
          NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "{\"UserID\":\"u1\",\"exp\":1800000000}",
          NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "{\"UserID\":\"u1\",\"PlatformID\":1}", NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "{\"UserID\":\"\",\"PlatformID\":1,\"exp\":1800000000}",
          NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "{\"UserID\":\"a_b\",\"PlatformID\":1,\"exp\":1800000000}",
          NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "{\"UserID\":7,\"PlatformID\":1,\"exp\":1800000000}",
          NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "{\"UserID\":\"u1\",\"PlatformID\":0,\"exp\":1800000000}",
          NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "{\"UserID\":\"u1\",\"PlatformID\":12,\"exp\":1800000000}",
          NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "{\"UserID\":\"u1\",\"PlatformID\":\"1\",\"exp\":1800000000}",
          NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "{\"UserID\":\"u1\",\"PlatformID\":1.0,\"exp\":1800000000}",
          NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "{\"UserID\":\"u1\",\"PlatformID\":1,\"exp\":1.8e9}",
          NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "{\"UserID\":\"u1\",\"PlatformID\":1,\"exp\":1800000000,"
          "\"iat\":\"x\"}",
          NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "{\"UserID\":\"u1\",\"PlatformID\":1,\"exp\":1600000000}",
          NGX_HTTP_IM_ERR_TOKEN_EXPIRED },
        { "{\"UserID\":\"u1\",\"PlatformID\":1,\"exp\":1800000000,"
          "\"nbf\":1750000000}",
          NGX_HTTP_IM_ERR_TOKEN_NOT_YET },

        /* "\u0000" would end the UserID early: "u1" */
        { "{\"UserID\":\"u1\\u0000x\",\"PlatformID\":1,"
          "\"exp\":1800000000}",
          NGX_HTTP_IM_ERR_TOKEN_MALFORMED },
        { "{\"UserID\":\"u1\",\"PlatformID\":1,\"exp\":1800000000,"
          "\"x\":\"\\u0000\"}",
          NGX_HTTP_IM_ERR_TOKEN_MALFORMED },

        /* an escaped backslash before "u0000" is no NUL */
        { "{\"UserID\":\"u1\",\"PlatformID\":1,\"exp\":1800000000,"
          "\"x\":\"\\\\u0000\"}",
          NGX_HTTP_IM_OK }
    };

    for (i = 0; i < CHECK_N(shapes); i++) {
        CHECK_CASE(verify(shapes[i], 1, NULL) == NGX_HTTP_IM_ERR_TOKEN_MALFORMED,
                   shapes[i]);
    }

    CHECK(ngx_http_im_token_verify(SECRET, SECRET_LEN, NULL, 0, 1, NULL)
          == NGX_HTTP_IM_ERR_TOKEN_MALFORMED);

    n = ngx_http_im_token_issue(SECRET, SECRET_LEN, "u1", 2, 1, 1000, 60,
                                issued, sizeof(issued));
    CHECK(n > 0);

    /* a valid token with trailing bytes, a fourth part, padding */

    snprintf(tok, sizeof(tok), "%s.", issued);
    CHECK(verify(tok, 1001, NULL) == NGX_HTTP_IM_ERR_TOKEN_MALFORMED);
    snprintf(tok, sizeof(tok), "%s=", issued);
    CHECK(verify(tok, 1001, NULL) != NGX_HTTP_IM_OK);
    snprintf(tok, sizeof(tok), " %s", issued);
    CHECK(verify(tok, 1001, NULL) == NGX_HTTP_IM_ERR_TOKEN_MALFORMED);

    /* a valid token passed with a shorter length */
    CHECK(ngx_http_im_token_verify(SECRET, SECRET_LEN, issued, n - 1, 1001,
                                   NULL)
          != NGX_HTTP_IM_OK);

    /* longer than 4096 bytes */

    memset(tok, 'A', sizeof(tok));
    tok[100] = '.';
    tok[200] = '.';
    tok[4097] = '\0';
    CHECK(verify(tok, 1, NULL) == NGX_HTTP_IM_ERR_TOKEN_MALFORMED);

    for (i = 0; i < CHECK_N(claims); i++) {
        CHECK_CASE(verify_claims(claims[i].text) == claims[i].rc,
                   claims[i].text);
    }
}


static void
test_issue_args(void)
{
    char  tok[NGX_HTTP_IM_TOKEN_ISSUE_MAX];

#define ISSUE(uid, pid, ttl, cap)                                           \
    ngx_http_im_token_issue(SECRET, SECRET_LEN, uid, strlen(uid), pid,      \
                            1000, ttl, tok, cap)

    CHECK(ISSUE("u1", 1, 60, sizeof(tok)) > 0);
    CHECK(ISSUE("u1", 1, 60, 20) == 0);
    CHECK(ISSUE("u1", 1, 60, 0) == 0);
    CHECK(ISSUE("", 1, 60, sizeof(tok)) == 0);
    CHECK(ISSUE("u_1", 1, 60, sizeof(tok)) == 0);
    CHECK(ISSUE("u\"1", 1, 60, sizeof(tok)) == 0);
    CHECK(ISSUE("u1", 0, 60, sizeof(tok)) == 0);
    CHECK(ISSUE("u1", 12, 60, sizeof(tok)) == 0);
    CHECK(ISSUE("u1", 1, 0, sizeof(tok)) == 0);
    CHECK(ISSUE("u1", 1, 0x7fffffffffffffffLL, sizeof(tok)) == 0);

#undef ISSUE

    CHECK(ngx_http_im_token_issue(SECRET, 0, "u1", 2, 1, 1000, 60, tok,
                                  sizeof(tok))
          == 0);
}


/* seats[p - 1] == seats[q - 1]: a login on q kicks one on p */
static int
same_seat(int policy, int p, int q)
{
    char  seats[11];

    if (ngx_http_im_login_seats(policy, seats) == 0) {
        return 0;
    }

    return seats[p - 1] == seats[q - 1];
}


static void
test_login_seats(void)
{
    int   p, q;
    char  seats[11];

    CHECK(ngx_http_im_login_seats(0, seats) == 0);
    CHECK(ngx_http_im_login_seats(2, seats) == 0);
    CHECK(ngx_http_im_login_seats(-1, seats) == 0);

    /* 1: per class: iOS and Android share, Windows/OSX/Linux share,
     * Web, MiniWeb, Pads, Admin and HarmonyOS each alone */
    CHECK(same_seat(1, 1, 2));
    CHECK(same_seat(1, 3, 4) && same_seat(1, 4, 7));
    CHECK(same_seat(1, 8, 9));
    CHECK(!same_seat(1, 1, 3));
    CHECK(!same_seat(1, 5, 6));
    CHECK(!same_seat(1, 5, 3));
    CHECK(!same_seat(1, 1, 11));
    CHECK(!same_seat(1, 8, 1));
    CHECK(!same_seat(1, 10, 5));

    /* 4: per platform ID */
    for (p = 1; p <= 11; p++) {
        for (q = 1; q <= 11; q++) {
            CHECK(same_seat(4, p, q) == (p == q));
        }
    }

    /* 5: one PC, one of everything else */
    CHECK(same_seat(5, 3, 7) && same_seat(5, 3, 4));
    CHECK(same_seat(5, 1, 2) && same_seat(5, 1, 5) && same_seat(5, 2, 8));
    CHECK(same_seat(5, 5, 11) && same_seat(5, 6, 10));
    CHECK(!same_seat(5, 3, 1) && !same_seat(5, 7, 5));
}


int
main(void)
{
    test_login_seats();
    test_base64url();
    test_user_id();
    test_known_vector();
    test_roundtrip();
    test_tamper();
    test_alg();
    test_malformed();
    test_issue_args();

    return check_done();
}
