
/*
 * ngx_im: a pub/sub connection to one Redis node.
 *
 * It speaks RESP2 itself over an nginx connection and parses replies with
 * hiredis's reader alone, because hiredis 0.14's async layer knows
 * neither sharded pub/sub (SSUBSCRIBE, smessage, sunsubscribe) nor a PING
 * on a subscribed connection.  One channel per command, so every reply
 * (or error) answers the oldest command in flight.
 */


#ifndef _NGX_HTTP_IM_REDIS_SUB_H_INCLUDED_
#define _NGX_HTTP_IM_REDIS_SUB_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


typedef struct ngx_http_im_redis_sub_s  ngx_http_im_redis_sub_t;


/*
 * What the connection reports upward; data is the creator's.  Handlers
 * run from the connection's own events, never from create, free,
 * subscribe or unsubscribe.  They may call subscribe and unsubscribe on
 * it, and may free it.  channel and msg live only during the call.
 */
typedef struct {
    /* a message (message or smessage) on a channel */
    void  (*message)(void *data, ngx_str_t *channel, u_char *msg,
                     size_t len);
    /*
     * The answer to (s)subscribe (ok 1) or (s)unsubscribe (ok 0) of a
     * channel; ok -1 when Redis dropped the channel by itself (an
     * sunsubscribe of a slot that moved to another node) or refused the
     * subscribe with an error other than MOVED or ASK.
     */
    void  (*subscribed)(void *data, ngx_str_t *channel, ngx_int_t ok);
    /*
     * A subscribe was refused with MOVED or ASK (the slot is elsewhere):
     * the caller refreshes its slot map and subscribes again where it
     * belongs.
     */
    void  (*moved)(void *data, ngx_str_t *channel);
    /* the connection is ready (up 1; no channel is subscribed yet), or
     * went down (up 0, once after each up 1; every subscription and
     * every command in flight is gone with it, unanswered) */
    void  (*state)(void *data, ngx_uint_t up);
} ngx_http_im_redis_sub_handlers_t;


typedef struct {
    ngx_str_t                  host;         /* IP literal, or unix path */
    ngx_int_t                  port;         /* 0: unix socket */
    ngx_uint_t                 sharded;      /* SSUBSCRIBE, not SUBSCRIBE */
    ngx_msec_t                 connect_timeout;
    ngx_msec_t                 timeout;      /* a reply is overdue */
    ngx_msec_t                 ping;         /* heartbeat interval */
    ngx_log_t                 *log;
    ngx_http_im_redis_sub_handlers_t  *handlers;
    void                      *data;
} ngx_http_im_redis_sub_conf_t;


/*
 * Creates the connection and starts connecting; failures are retried
 * with a backoff (100 ms doubling to 5 s).  conf is copied (host too);
 * a zero connect_timeout, timeout or ping turns that timer off.
 * Returns NULL when out of memory, or when host is neither an IP literal
 * nor a unix path that fits (logged at ALERT).
 */
ngx_http_im_redis_sub_t *ngx_http_im_redis_sub_create(
    ngx_http_im_redis_sub_conf_t *conf);

/* closes and frees it; no handler runs from here on */
void ngx_http_im_redis_sub_free(ngx_http_im_redis_sub_t *sub);

/* 1 while commands can be sent */
ngx_int_t ngx_http_im_redis_sub_is_ready(ngx_http_im_redis_sub_t *sub);

/*
 * Queues SUBSCRIBE/SSUBSCRIBE (or the unsubscribe) of one channel.
 * Returns NGX_OK (a handler answers later), or NGX_DECLINED when the
 * connection is not ready or its bounds (commands in flight, bytes
 * queued) are reached; no handler runs then.
 */
ngx_int_t ngx_http_im_redis_sub_subscribe(ngx_http_im_redis_sub_t *sub,
    ngx_str_t *channel);
ngx_int_t ngx_http_im_redis_sub_unsubscribe(ngx_http_im_redis_sub_t *sub,
    ngx_str_t *channel);


#endif /* _NGX_HTTP_IM_REDIS_SUB_H_INCLUDED_ */
