
/*
 * ngx_im: token buckets, the rate limits of clients (docs/directives.md,
 * im_ws_rate and im_api_rate).  Pure C: no nginx types.
 */


#ifndef _NGX_HTTP_IM_RATE_H_INCLUDED_
#define _NGX_HTTP_IM_RATE_H_INCLUDED_


#include <stdint.h>


typedef struct {
    uint64_t                   at;          /* ms of the last refill */
    uint64_t                   milli;       /* tokens x 1000 */
    uint32_t                   key;         /* who owns it, in a table */
    unsigned                   used:1;
} ngx_http_im_bucket_t;


/*
 * Takes one token at time now (ms) from a bucket refilled at rate per
 * second up to burst (a new bucket starts full).  Returns 1 when the
 * request may go, 0 when it is over the limit.  rate 0: no limit.
 */
int ngx_http_im_bucket_take(ngx_http_im_bucket_t *b, uint64_t now,
    uint64_t rate, uint64_t burst);


#endif /* _NGX_HTTP_IM_RATE_H_INCLUDED_ */
