
/*
 * ngx_im: hiredis async contexts driven by the nginx event loop.
 */


#ifndef _NGX_HTTP_IM_REDIS_H_INCLUDED_
#define _NGX_HTTP_IM_REDIS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "ngx_http_im_module.h"


/* room for an address or a unix socket path */
#define NGX_HTTP_IM_REDIS_HOST_MAX  256


/* the embedded scripts, in lua/ */
enum {
    NGX_HTTP_IM_LUA_SEND = 0,
    NGX_HTTP_IM_LUA_PULL,
    NGX_HTTP_IM_LUA_PULL_SEQS,
    NGX_HTTP_IM_LUA_NEWEST,
    NGX_HTTP_IM_LUA_CONV_SEQ,
    NGX_HTTP_IM_LUA_AUTH,
    NGX_HTTP_IM_LUA_TOKEN,
    NGX_HTTP_IM_LUA_REGISTER,
    NGX_HTTP_IM_LUA_KICK,
    NGX_HTTP_IM_LUA_ONLINE,
    NGX_HTTP_IM_LUA_USERS_INFO,
    NGX_HTTP_IM_LUA_PUSH_JOB,
    NGX_HTTP_IM_LUA_SEQ_SEED,
    NGX_HTTP_IM_LUA_PERSIST_TAKE,
    NGX_HTTP_IM_LUA_PERSIST_DONE,
    NGX_HTTP_IM_LUA_N
};


/*
 * A reply handler runs exactly once per accepted command: with the reply,
 * or with NULL when the command failed (disconnect, timeout, shutdown).
 * The reply is freed when the handler returns.
 */
typedef void (*ngx_http_im_redis_pt)(redisReply *reply, void *data);


/*
 * What the transport calls upward, registered at init: a pub/sub message,
 * a (un)subscribe answer (ok 0: unsubscribed), and a connection that
 * became ready (subscriber 1: every subscription must be made again).
 */
typedef struct {
    void  (*message)(ngx_str_t *channel, u_char *data, size_t len);
    void  (*subscribed)(ngx_str_t *channel, ngx_int_t ok);
    void  (*up)(ngx_uint_t subscriber);
} ngx_http_im_redis_handlers_t;


/*
 * Starts both connections of this worker.  heartbeat is a channel only
 * this worker subscribes to: it keeps the subscriber connection
 * subscribed, and its re-subscribe is the connection's heartbeat.
 */
ngx_int_t ngx_http_im_redis_init(ngx_cycle_t *cycle,
    ngx_http_im_redis_handlers_t *handlers, ngx_str_t *heartbeat);
void ngx_http_im_redis_exit(void);

/*
 * Queues a command on the worker's command connection.  Returns NGX_OK, or
 * NGX_DECLINED when Redis is unavailable or the pending-command bound is
 * reached (the caller answers 90004); the handler is not called then.
 * A NULL handler means nobody waits for the reply.
 */
ngx_int_t ngx_http_im_redis_command(ngx_http_im_redis_pt handler,
    void *data, int argc, const char **argv, const size_t *argvlen);

/* Like ngx_http_im_redis_command(), for EVALSHA of an embedded script;
 * argv holds nkeys keys, then the arguments. */
ngx_int_t ngx_http_im_redis_script(ngx_uint_t script,
    ngx_http_im_redis_pt handler, void *data, int nkeys, int argc,
    const char **argv, const size_t *argvlen);

/* Pub/sub connection: the results arrive through the handlers. */
ngx_int_t ngx_http_im_redis_subscribe(ngx_str_t *channel);
ngx_int_t ngx_http_im_redis_unsubscribe(ngx_str_t *channel);
ngx_int_t ngx_http_im_redis_sub_ready(void);
void ngx_http_im_redis_sub_ping(void);

/* 1 while the command connection is usable */
ngx_int_t ngx_http_im_redis_ready(void);


#endif /* _NGX_HTTP_IM_REDIS_H_INCLUDED_ */
