
/*
 * ngx_im: token buckets.  Tokens are counted in thousandths, so a rate
 * per second refills exactly rate thousandths per millisecond.
 */


#include "ngx_http_im_rate.h"


int
ngx_http_im_bucket_take(ngx_http_im_bucket_t *b, uint64_t now,
    uint64_t rate, uint64_t burst)
{
    uint64_t  full, elapsed;

    if (rate == 0) {
        return 1;
    }

    full = burst * 1000;

    if (!b->used) {
        b->used = 1;
        b->at = now;
        b->milli = full;
    }

    /* a clock that went back refills nothing; a long pause fills it, and
     * the product below cannot overflow */
    elapsed = now > b->at ? now - b->at : 0;
    b->at = now > b->at ? now : b->at;

    if (elapsed >= full / rate + 1) {
        b->milli = full;

    } else {
        b->milli += elapsed * rate;
        if (b->milli > full) {
            b->milli = full;
        }
    }

    if (b->milli < 1000) {
        return 0;
    }

    b->milli -= 1000;

    return 1;
}
