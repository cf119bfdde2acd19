
/*
 * Unit tests of the origin codec (ngx_http_im_origin.c): canonical
 * forms, and everything that is not a serialized origin refused.
 */


#include <stdio.h>
#include <string.h>

#include "ngx_http_im_origin.h"

#include "check.h"


static int
canon_is(const char *in, const char *want)
{
    int   n;
    char  out[NGX_HTTP_IM_ORIGIN_MAX];

    n = ngx_http_im_origin_canon(in, strlen(in), out);

    if (want == NULL) {
        return n == -1;
    }

    return n == (int) strlen(want) && memcmp(out, want, n) == 0;
}


static void
test_canonical(void)
{
    static const char  *cases[][2] = {
        { "http://example.com", "http://example.com" },
        { "HTTPS://Example.COM", "https://example.com" },
        { "http://127.0.0.1:8080", "http://127.0.0.1:8080" },
        { "http://a.test:80", "http://a.test" },
        { "https://a.test:443", "https://a.test" },
        { "https://a.test:80", "https://a.test:80" },
        { "http://a.test:443", "http://a.test:443" },
        { "http://a.test:00080", "http://a.test" },
        { "http://a.test:65535", "http://a.test:65535" },
        { "http://a.test:10000", "http://a.test:10000" },
        { "http://a.test:1", "http://a.test:1" },
        { "wss://a.test:443", "wss://a.test" },
        { "capacitor://localhost", "capacitor://localhost" },
        { "chrome-extension://abcdef", "chrome-extension://abcdef" },
        { "app+x.y://h_1", "app+x.y://h_1" },
        { "http://[::1]:8080", "http://[::1]:8080" },
        { "http://[FE80::1]", "http://[fe80::1]" },
        { "http://[::ffff:1.2.3.4]", "http://[::ffff:1.2.3.4]" },
    };

    size_t  i;

    for (i = 0; i < CHECK_N(cases); i++) {
        CHECK_CASE(canon_is(cases[i][0], cases[i][1]), cases[i][0]);
    }
}


static void
test_refused(void)
{
    static const char  *bad[] = {
        "", "null", "*", "http://", "http:/a.test", "http//a.test",
        "://a.test", "1http://a.test", "ht tp://a.test", "http://a.test/",
        "http://a.test/path", "http://a.test?x", "http://a.test#x",
        "http://u@a.test", "http://*.a.test", "http://a.test:",
        "http://a.test:0", "http://a.test:65536", "http://a.test:123456",
        "http://a.test:8o", "http://a.test:80:81", "http://a test",
        "http://a.test ", " http://a.test", "http://a%2e.test",
        "http://[::1", "http://[]", "http://[::1]x", "http://[::g]",
        "http://:80", "http://a.test\r\nX: y", "http://a.tes\x80t",
        "https://a.test,https://b.test",
    };

    size_t  i;

    for (i = 0; i < CHECK_N(bad); i++) {
        CHECK_CASE(canon_is(bad[i], NULL), bad[i]);
    }
}


static void
test_bounds(void)
{
    int    n;
    char   in[NGX_HTTP_IM_ORIGIN_MAX + 16], out[NGX_HTTP_IM_ORIGIN_MAX];
    char   host[300];

    /* the longest host name passes, one more byte does not */
    memset(host, 'h', sizeof(host));
    n = snprintf(in, sizeof(in), "https://%.*s:8443",
                 NGX_HTTP_IM_ORIGIN_HOST_MAX, host);
    CHECK(ngx_http_im_origin_canon(in, n, out) == n);

    n = snprintf(in, sizeof(in), "https://%.*s",
                 NGX_HTTP_IM_ORIGIN_HOST_MAX + 1, host);
    CHECK(ngx_http_im_origin_canon(in, n, out) == -1);

    /* the longest scheme */
    n = snprintf(in, sizeof(in), "%.*s://a", NGX_HTTP_IM_ORIGIN_SCHEME_MAX,
                 host);
    CHECK(ngx_http_im_origin_canon(in, n, out) == n);

    n = snprintf(in, sizeof(in), "%.*s://a",
                 NGX_HTTP_IM_ORIGIN_SCHEME_MAX + 1, host);
    CHECK(ngx_http_im_origin_canon(in, n, out) == -1);

    /* input over the limit is refused before it is read */
    memset(in, 'a', sizeof(in));
    CHECK(ngx_http_im_origin_canon(in, NGX_HTTP_IM_ORIGIN_MAX + 1, out)
          == -1);
}


static void
test_of_host(void)
{
    int   n;
    char  out[NGX_HTTP_IM_ORIGIN_MAX], big[NGX_HTTP_IM_ORIGIN_MAX];

    n = ngx_http_im_origin_of_host("http", "127.0.0.1:8080", 14, out);
    CHECK(n == 21 && memcmp(out, "http://127.0.0.1:8080", 21) == 0);

    n = ngx_http_im_origin_of_host("https", "Chat.Example:443", 16, out);
    CHECK(n == 20 && memcmp(out, "https://chat.example", 20) == 0);

    n = ngx_http_im_origin_of_host("http", "a.test/x", 8, out);
    CHECK(n == -1);

    memset(big, 'a', sizeof(big));
    n = ngx_http_im_origin_of_host("http", big, sizeof(big), out);
    CHECK(n == -1);
}


int
main(void)
{
    test_canonical();
    test_refused();
    test_bounds();
    test_of_host();

    return check_done();
}
