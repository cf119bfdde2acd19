
/*
 * ngx_im: libFuzzer target of the origin codec (ngx_http_im_origin.c).
 *
 * The input is read as an Origin header and as a Host header.  Every
 * canonical form must be short, be itself an origin whose canonical
 * form is the same (so comparing canonical forms is an equivalence),
 * and hold only lower-case letters, digits and "+-._:[]/".
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_im_origin.h"


#define fuzz_assert(cond)  if (!(cond)) { __builtin_trap(); }


static void
fuzz_check(const char *out, int n)
{
    int   i, m;
    char  again[NGX_HTTP_IM_ORIGIN_MAX];

    if (n < 0) {
        return;
    }

    fuzz_assert(n <= NGX_HTTP_IM_ORIGIN_MAX);

    for (i = 0; i < n; i++) {
        fuzz_assert(out[i] != '\0'
                    && strchr("abcdefghijklmnopqrstuvwxyz0123456789"
                              "+-._:[]/", out[i]) != NULL);
    }

    m = ngx_http_im_origin_canon(out, n, again);
    fuzz_assert(m == n && memcmp(again, out, n) == 0);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char  *in, out[NGX_HTTP_IM_ORIGIN_MAX];

    /* a heap copy of the exact size, so ASan sees any over-read */
    in = malloc(size ? size : 1);
    if (in == NULL) {
        return 0;
    }

    memcpy(in, data, size);

    fuzz_check(out, ngx_http_im_origin_canon(in, size, out));
    fuzz_check(out, ngx_http_im_origin_of_host("http", in, size, out));
    fuzz_check(out, ngx_http_im_origin_of_host("https", in, size, out));

    free(in);

    return 0;
}
