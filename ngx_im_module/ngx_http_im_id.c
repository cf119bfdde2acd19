
/*
 * ngx_im: identifiers and conversation IDs.  Pure C, no nginx types.
 */


#include <string.h>

#include <openssl/rand.h>

#include "ngx_http_im_id.h"
#include "ngx_http_im_token.h"


void
ngx_http_im_id_format(uint64_t prefix, uint64_t counter, char *out)
{
    static const char  hex[] = "0123456789abcdef";

    int  i;

    for (i = 15; i >= 0; i--) {
        out[i] = hex[prefix & 0xf];
        out[16 + i] = hex[counter & 0xf];
        prefix >>= 4;
        counter >>= 4;
    }
}


int
ngx_http_im_id_random(uint64_t *v)
{
    return RAND_bytes((unsigned char *) v, sizeof(uint64_t)) == 1;
}


static size_t
ngx_http_im_conv_join(const char *prefix, const char *a, size_t a_len,
    const char *b, size_t b_len, char *out)
{
    char  *p;

    p = out;
    memcpy(p, prefix, 3);
    p += 3;
    memcpy(p, a, a_len);
    p += a_len;
    *p++ = '_';
    memcpy(p, b, b_len);
    p += b_len;

    return p - out;
}


size_t
ngx_http_im_conv_single(const char *a, size_t a_len, const char *b,
    size_t b_len, char *out)
{
    int     cmp;
    size_t  n;

    n = a_len < b_len ? a_len : b_len;
    cmp = memcmp(a, b, n);

    if (cmp > 0 || (cmp == 0 && a_len > b_len)) {
        return ngx_http_im_conv_join("si_", b, b_len, a, a_len, out);
    }

    return ngx_http_im_conv_join("si_", a, a_len, b, b_len, out);
}


size_t
ngx_http_im_conv_notification(const char *send, size_t send_len,
    const char *recv, size_t recv_len, char *out)
{
    return ngx_http_im_conv_join("sn_", send, send_len, recv, recv_len, out);
}


int
ngx_http_im_conv_member(const char *conv, size_t conv_len, const char *uid,
    size_t uid_len)
{
    const char  *us, *rest;
    size_t       first;

    if (conv_len < 3 || uid_len == 0
        || (memcmp(conv, "si_", 3) != 0 && memcmp(conv, "sn_", 3) != 0))
    {
        return 0;
    }

    rest = conv + 3;
    us = memchr(rest, '_', conv_len - 3);
    if (us == NULL || memchr(us + 1, '_', conv + conv_len - us - 1)) {
        return 0;
    }

    first = us - rest;

    /* both sides are user IDs: this also bounds the ID's length */
    if (!ngx_http_im_user_id_valid(rest, first)
        || !ngx_http_im_user_id_valid(us + 1, conv + conv_len - us - 1))
    {
        return 0;
    }

    if (first == uid_len && memcmp(rest, uid, uid_len) == 0) {
        return 1;
    }

    return (size_t) (conv + conv_len - us - 1) == uid_len
           && memcmp(us + 1, uid, uid_len) == 0;
}


int
ngx_http_im_conv_group(const char *conv, size_t conv_len)
{
    return conv_len > 3 && memcmp(conv, "sg_", 3) == 0
           && ngx_http_im_user_id_valid(conv + 3, conv_len - 3);
}


size_t
ngx_http_im_conv_peer(const char *conv, size_t conv_len, const char *uid,
    size_t uid_len, char *out)
{
    size_t       n;
    const char  *us, *peer;

    if (!ngx_http_im_conv_member(conv, conv_len, uid, uid_len)) {
        return 0;
    }

    /* "xx_<a>_<b>", both valid: the side that is not uid */
    us = memchr(conv + 3, '_', conv_len - 3);
    n = us - conv - 3;

    if (n == uid_len && memcmp(conv + 3, uid, uid_len) == 0) {
        peer = us + 1;
        n = conv + conv_len - peer;

    } else {
        peer = conv + 3;
    }

    memcpy(out, peer, n);
    out[n] = '\0';

    return n;
}
