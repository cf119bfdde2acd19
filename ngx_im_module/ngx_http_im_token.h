
/*
 * ngx_im: HS256 JSON Web Tokens with OpenIM's claims, base64url, and the
 * user ID rule.  Pure C (libc, libcrypto, yajl); no nginx types, so it is
 * unit-tested and fuzzed outside nginx.
 */


#ifndef _NGX_HTTP_IM_TOKEN_H_INCLUDED_
#define _NGX_HTTP_IM_TOKEN_H_INCLUDED_


#include <stddef.h>

#include "ngx_http_im_error.h"


#define NGX_HTTP_IM_TOKEN_MAX_LEN        4096
#define NGX_HTTP_IM_UID_MAX              64
#define NGX_HTTP_IM_PLATFORM_MIN         1
#define NGX_HTTP_IM_PLATFORM_MAX         11

/* OpenIM sets iat = now - 5 s; nbf is the same instant */
#define NGX_HTTP_IM_TOKEN_IAT_SKEW       5

/* room that ngx_http_im_token_issue() needs, NUL included */
#define NGX_HTTP_IM_TOKEN_ISSUE_MAX      512

/* sizes for the base64url helpers (no padding) */
#define NGX_HTTP_IM_BASE64URL_ENCODED_LEN(n)                                \
    (((n) / 3) * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))
#define NGX_HTTP_IM_BASE64URL_DECODED_LEN(n)                                \
    (((n) / 4) * 3 + ((n) % 4 ? (n) % 4 - 1 : 0))


typedef struct {
    char                       user_id[NGX_HTTP_IM_UID_MAX + 1];
    int                        platform_id;
    long long                  exp;
    long long                  iat;        /* 0 when the token has none */
} ngx_http_im_token_claims_t;


/*
 * Signs {"UserID","PlatformID","exp","nbf","iat"} with HMAC-SHA256 under
 * "secret": exp = now + ttl, iat = nbf = now - 5.  The user ID must pass
 * ngx_http_im_user_id_valid(), platform_id must be 1..11, ttl > 0, and the
 * secret non-empty.  Writes the token and a NUL to "out".  Returns the
 * token length, or 0 when an argument is bad or "cap" is too small
 * (NGX_HTTP_IM_TOKEN_ISSUE_MAX is always enough).
 */
size_t ngx_http_im_token_issue(const unsigned char *secret, size_t secret_len,
    const char *user_id, size_t uid_len, int platform_id, long long now,
    long long ttl, char *out, size_t cap);

/*
 * Checks a token at time "now" (seconds).  The signature is checked, in
 * constant time, before any claim is read.  Returns
 *   NGX_HTTP_IM_OK                   claims filled in;
 *   NGX_HTTP_IM_ERR_TOKEN_MALFORMED  not three base64url parts, longer
 *                                    than 4096 bytes, bad JSON, claims
 *                                    missing or of the wrong type or
 *                                    range;
 *   NGX_HTTP_IM_ERR_TOKEN_INVALID    alg is not HS256, or bad signature;
 *   NGX_HTTP_IM_ERR_TOKEN_NOT_YET    nbf > now;
 *   NGX_HTTP_IM_ERR_TOKEN_EXPIRED    exp <= now.
 * "claims" may be NULL; it is written only on NGX_HTTP_IM_OK.
 */
int ngx_http_im_token_verify(const unsigned char *secret, size_t secret_len,
    const char *token, size_t len, long long now,
    ngx_http_im_token_claims_t *claims);

/*
 * Encodes "len" bytes as base64url without padding into "dst", which must
 * hold NGX_HTTP_IM_BASE64URL_ENCODED_LEN(len) bytes; no NUL is written.
 * Returns the number of bytes written.
 */
size_t ngx_http_im_base64url_encode(const unsigned char *src, size_t len,
    char *dst);

/*
 * Decodes strict base64url: no padding, no other characters, unused bits
 * zero (so every byte string has exactly one encoding).  "dst" must hold
 * NGX_HTTP_IM_BASE64URL_DECODED_LEN(len) bytes.  Returns 0 and sets
 * *dst_len, or -1 on bad input.
 */
int ngx_http_im_base64url_decode(const char *src, size_t len,
    unsigned char *dst, size_t *dst_len);

/*
 * A user ID is 1..64 bytes of [A-Za-z0-9.@+-].  No '_' (conversation IDs
 * join user IDs with it), no ':' or braces (Redis keys).  Returns 1 when
 * valid, 0 otherwise.
 */
int ngx_http_im_user_id_valid(const char *s, size_t len);


/* im_multi_login_policy values (docs/directives.md) */
#define NGX_HTTP_IM_LOGIN_ANY            0     /* any number of devices */
#define NGX_HTTP_IM_LOGIN_PER_CLASS      1     /* one per platform class */
#define NGX_HTTP_IM_LOGIN_PER_PLATFORM   4     /* one per platform ID */
#define NGX_HTTP_IM_LOGIN_PC_AND_OTHER   5     /* one PC, one other */

/*
 * The seat of each platform under a login policy: writes one letter per
 * platform ID 1..11 into seats[0..10] (two platforms share a seat when
 * their letters are equal; a seat holds one session).  The classes are
 * OpenIM's: mobile (1, 2), PC (3, 4, 7), Web (5), MiniWeb (6), Pad (8, 9),
 * Admin (10), HarmonyOS (11); policy 5 has the seats PC and "the rest".
 * Returns 11, or 0 when the policy has no seats (0, or unknown): nobody
 * is kicked.
 */
size_t ngx_http_im_login_seats(int policy, char *seats);


#endif /* _NGX_HTTP_IM_TOKEN_H_INCLUDED_ */
