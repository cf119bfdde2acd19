
/*
 * ngx_im: web origins in canonical form, so that two origins are the
 * same exactly when their canonical forms are equal byte for byte: no
 * prefix, suffix or substring ever matches.
 */


#include <string.h>

#include "ngx_http_im_origin.h"


static int ngx_http_im_origin_scheme(const char **pp, const char *end,
    char *out);
static int ngx_http_im_origin_host(const char **pp, const char *end,
    char *out);
static long ngx_http_im_origin_port(const char *p, const char *end);
static long ngx_http_im_origin_default_port(const char *scheme, int len);
static char ngx_http_im_origin_lower(char ch);


int
ngx_http_im_origin_canon(const char *in, size_t len, char *out)
{
    int          n, h;
    long         port;
    const char  *p, *end;

    if (len > NGX_HTTP_IM_ORIGIN_MAX) {
        return -1;
    }

    p = in;
    end = in + len;

    n = ngx_http_im_origin_scheme(&p, end, out);
    if (n < 0) {
        return -1;
    }

    memcpy(out + n, "://", 3);

    h = ngx_http_im_origin_host(&p, end, out + n + 3);
    if (h < 0) {
        return -1;
    }

    port = ngx_http_im_origin_port(p, end);
    if (port < 0) {
        return -1;
    }

    h += n + 3;

    /* browsers leave the default port out: so does the canonical form */
    if (port == 0 || port == ngx_http_im_origin_default_port(out, n)) {
        return h;
    }

    /* 32 + 3 + 253 + 6 bytes at most: far below NGX_HTTP_IM_ORIGIN_MAX */
    out[h++] = ':';

    for (n = 10000; n > port; n /= 10) { /* void */ }

    for ( /* void */ ; n; n /= 10) {
        out[h++] = (char) ('0' + port / n % 10);
    }

    return h;
}


int
ngx_http_im_origin_of_host(const char *scheme, const char *host,
    size_t len, char *out)
{
    char    buf[NGX_HTTP_IM_ORIGIN_MAX];
    size_t  n;

    n = strlen(scheme);

    if (n + 3 + len > sizeof(buf)) {
        return -1;
    }

    memcpy(buf, scheme, n);
    memcpy(buf + n, "://", 3);
    memcpy(buf + n + 3, host, len);

    return ngx_http_im_origin_canon(buf, n + 3 + len, out);
}


/* RFC 3986 scheme, then "://"; written in lower case, without "://" */
static int
ngx_http_im_origin_scheme(const char **pp, const char *end, char *out)
{
    int          n;
    char         ch;
    const char  *p;

    p = *pp;

    for (n = 0; p < end && *p != ':'; n++, p++) {
        ch = ngx_http_im_origin_lower(*p);

        if (n == NGX_HTTP_IM_ORIGIN_SCHEME_MAX
            || !((ch >= 'a' && ch <= 'z')
                 || (n > 0 && ((ch >= '0' && ch <= '9')
                               || ch == '+' || ch == '-' || ch == '.'))))
        {
            return -1;
        }

        out[n] = ch;
    }

    if (n == 0 || end - p < 3 || memcmp(p, "://", 3) != 0) {
        return -1;
    }

    *pp = p + 3;

    return n;
}


/*
 * A host name (letters, digits, '-', '.', '_') or an IPv6 literal in
 * brackets; written in lower case.  Stops at the ':' of a port.
 */
static int
ngx_http_im_origin_host(const char **pp, const char *end, char *out)
{
    int          n, v6, max;
    char         ch;
    const char  *p;

    p = *pp;
    v6 = (p < end && *p == '[');
    max = v6 ? 2 + 45 : NGX_HTTP_IM_ORIGIN_HOST_MAX;

    for (n = 0; p < end && n < max; n++, p++) {
        ch = ngx_http_im_origin_lower(*p);

        if (v6 ? (n == 0 || (ch >= '0' && ch <= '9')
                  || (ch >= 'a' && ch <= 'f') || ch == ':' || ch == '.')
               : ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
                  || ch == '-' || ch == '.' || ch == '_'))
        {
            out[n] = ch;
            continue;
        }

        if (v6 && ch == ']' && n > 1) {
            out[n++] = ch;
            p++;
        }

        break;
    }

    if (n == 0 || (v6 && out[n - 1] != ']')
        || (p < end && *p != ':'))
    {
        return -1;
    }

    *pp = p;

    return n;
}


/* ":1".."65535" up to the end; 0 when there is no port, -1 when bad */
static long
ngx_http_im_origin_port(const char *p, const char *end)
{
    long  port;

    if (p == end) {
        return 0;
    }

    if (*p++ != ':' || p == end || end - p > 5) {
        return -1;
    }

    for (port = 0; p < end; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }

        port = port * 10 + (*p - '0');
    }

    return (port >= 1 && port <= 65535) ? port : -1;
}


static long
ngx_http_im_origin_default_port(const char *scheme, int len)
{
    if ((len == 4 && memcmp(scheme, "http", 4) == 0)
        || (len == 2 && memcmp(scheme, "ws", 2) == 0))
    {
        return 80;
    }

    if ((len == 5 && memcmp(scheme, "https", 5) == 0)
        || (len == 3 && memcmp(scheme, "wss", 3) == 0))
    {
        return 443;
    }

    return -1;
}


static char
ngx_http_im_origin_lower(char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (char) (ch - 'A' + 'a') : ch;
}
