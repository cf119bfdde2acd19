
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


/* a node's address from the configuration */
typedef struct {
    ngx_str_t                  host;       /* IP text or unix path */
    ngx_int_t                  port;       /* 0: unix socket */
} ngx_http_im_redis_addr_t;


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
    NGX_HTTP_IM_LUA_SEQ_SEED,
    NGX_HTTP_IM_LUA_PERSIST_TAKE,
    NGX_HTTP_IM_LUA_PERSIST_DONE,
    NGX_HTTP_IM_LUA_CONV_INDEX,
    NGX_HTTP_IM_LUA_SEND_CONV,
    NGX_HTTP_IM_LUA_DELIVER,
    NGX_HTTP_IM_LUA_PERSIST_TRIM,
    NGX_HTTP_IM_LUA_CONV,
    NGX_HTTP_IM_LUA_MSG_SET,
    NGX_HTTP_IM_LUA_MSG_PURGE,
    NGX_HTTP_IM_LUA_GROUP,
    NGX_HTTP_IM_LUA_GROUP_HEAD,
    NGX_HTTP_IM_LUA_FRIEND,
    NGX_HTTP_IM_LUA_USERS_LIST,
    NGX_HTTP_IM_LUA_LOGIN,
    NGX_HTTP_IM_LUA_ONLINE_TOKENS,
    NGX_HTTP_IM_LUA_PRESENCE,
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


/* Starts this worker's connections (to the node, or the cluster). */
ngx_int_t ngx_http_im_redis_init(ngx_cycle_t *cycle,
    ngx_http_im_redis_handlers_t *handlers);
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

/* Like ngx_http_im_redis_script(), with the keys and the arguments
 * already in the protocol's form ("$<len>\r\n<data>\r\n" each); only
 * with one Redis (no key routes it). */
ngx_int_t ngx_http_im_redis_script_raw(ngx_uint_t script,
    ngx_http_im_redis_pt handler, void *data, ngx_uint_t nkeys,
    ngx_uint_t argc, ngx_str_t *keys, ngx_str_t *args);

/*
 * Pub/sub, on the channel's node: the results arrive through the
 * handlers.  In a cluster the channels are sharded (SSUBSCRIBE), and
 * publishing is SPUBLISH (see ngx_http_im_redis_cluster()).
 */
ngx_int_t ngx_http_im_redis_subscribe(ngx_str_t *channel);
ngx_int_t ngx_http_im_redis_unsubscribe(ngx_str_t *channel);
ngx_int_t ngx_http_im_redis_sub_ready(void);

/* 1 while commands can be sent (to some node, in a cluster) */
ngx_int_t ngx_http_im_redis_ready(void);

/* 1 with Redis Cluster (im_redis_cluster) */
ngx_int_t ngx_http_im_redis_cluster(void);


#endif /* _NGX_HTTP_IM_REDIS_H_INCLUDED_ */
