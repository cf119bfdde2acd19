
/*
 * Unit tests of the token buckets (ngx_http_im_rate.c).
 */


#include <stdio.h>
#include <string.h>

#include "ngx_http_im_rate.h"

#include "check.h"


static int
takes(ngx_http_im_bucket_t *b, uint64_t now, uint64_t rate, uint64_t burst,
    int n)
{
    int  i, ok;

    ok = 0;
    for (i = 0; i < n; i++) {
        ok += ngx_http_im_bucket_take(b, now, rate, burst);
    }

    return ok;
}


static void
test_bucket(void)
{
    ngx_http_im_bucket_t  b;

    /* a new bucket holds burst tokens, then refills at rate */
    memset(&b, 0, sizeof(b));
    CHECK(takes(&b, 1000, 10, 20, 25) == 20);
    CHECK(takes(&b, 1000, 10, 20, 1) == 0);
    CHECK(takes(&b, 1100, 10, 20, 5) == 1);       /* 100 ms: 1 token */
    CHECK(takes(&b, 1550, 10, 20, 10) == 4);      /* 450 ms: 4.5 */
    CHECK(takes(&b, 1600, 10, 20, 10) == 1);      /* the half, + 0.5 */

    /* a long pause fills it to burst, no more */
    CHECK(takes(&b, 1000000, 10, 20, 30) == 20);
    CHECK(takes(&b, UINT64_MAX / 2, 10, 20, 30) == 20);

    /* the clock going back refills nothing and breaks nothing */
    CHECK(takes(&b, 5, 10, 20, 3) == 0);

    /* rate 0: no limit */
    memset(&b, 0, sizeof(b));
    CHECK(takes(&b, 0, 0, 0, 100000) == 100000);

    /* huge rates and bursts do not overflow */
    memset(&b, 0, sizeof(b));
    CHECK(takes(&b, 1, 1000000, 1000000, 100) == 100);
    CHECK(takes(&b, 100000000, 1000000, 1000000, 100) == 100);

    /* burst 0 with a rate: never */
    memset(&b, 0, sizeof(b));
    CHECK(takes(&b, 1, 10, 0, 3) == 0);
}


int
main(void)
{
    test_bucket();

    return check_done();
}
