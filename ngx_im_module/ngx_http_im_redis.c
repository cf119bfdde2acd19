
/*
 * ngx_im: the Redis transport: hiredis async command connections driven
 * by the nginx event loop, pub/sub connections of our own
 * (ngx_http_im_redis_sub.c), and with Redis Cluster the routing of each
 * command to the master of its key's slot.
 *
 * One node (im_redis) or the masters of a cluster (im_redis_cluster):
 * every node has one command connection and one pub/sub connection per
 * worker.  A cluster's slot map comes from CLUSTER SLOTS; MOVED updates
 * it and resends, ASK resends once with ASKING, TRYAGAIN and CLUSTERDOWN
 * are retried a bounded number of times, then the caller gets NULL
 * (90004).  A node that is down refuses its slots' commands at once.
 *
 * hiredis owns the command sockets; the nginx connection only wraps the
 * fd for event notification and is freed, never closed, in the cleanup
 * hook.  Event handlers return as soon as hiredis returns, since hiredis
 * may have freed the context (and through cleanup, the nginx connection)
 * inside the call.  The transport calls upward only through the handlers
 * registered at init.
 */


#include <openssl/sha.h>

#include "ngx_http_im_redis.h"
#include "ngx_http_im_redis_sub.h"
#include "ngx_http_im_slot.h"
#include "ngx_http_im_scripts.h"


#define NGX_HTTP_IM_REDIS_DOWN        0
#define NGX_HTTP_IM_REDIS_CONNECTING  1
#define NGX_HTTP_IM_REDIS_READY       2

#define NGX_HTTP_IM_BACKOFF_MIN       100
#define NGX_HTTP_IM_BACKOFF_MAX       5000

#define NGX_HTTP_IM_REDIS_NODES_MAX   64
#define NGX_HTTP_IM_REDIS_REDIRECTS   5       /* MOVED/ASK per command */
#define NGX_HTTP_IM_REDIS_RETRIES     20      /* TRYAGAIN, CLUSTERDOWN */
#define NGX_HTTP_IM_REDIS_RETRY_WAIT  100
#define NGX_HTTP_IM_REDIS_REFRESH_MIN 100     /* between CLUSTER SLOTS */
#define NGX_HTTP_IM_REDIS_REFRESH     10000   /* every so often anyway */
#define NGX_HTTP_IM_REDIS_PING        10000


typedef struct ngx_http_im_redis_node_s  ngx_http_im_redis_node_t;


/* a hiredis command connection */
typedef struct {
    redisAsyncContext         *ac;
    ngx_uint_t                 state;
    ngx_uint_t                 pending;
    ngx_uint_t                 connects;
    ngx_msec_t                 backoff;
    ngx_event_t                reconnect;   /* also the connect timeout */
    ngx_event_t                timeout;     /* a reply is overdue */
    ngx_http_im_redis_node_t  *node;
} ngx_http_im_redis_t;


struct ngx_http_im_redis_node_s {
    ngx_str_t                  host;        /* IP text or unix path */
    ngx_int_t                  port;        /* 0: unix socket */
    ngx_http_im_redis_t        cmd;
    ngx_http_im_redis_sub_t   *sub;
    ngx_uint_t                 sub_up;
    u_char                     text[NGX_HTTP_IM_REDIS_HOST_MAX];
};


/* a command waiting for its reply */
typedef struct {
    ngx_http_im_redis_pt       handler;
    void                      *data;
    char                      *cmd;        /* formatted: for redirects */
    int                        len;        /* and NOSCRIPT retries */
    ngx_uint_t                 script;     /* NGX_HTTP_IM_LUA_N: none */
    ngx_uint_t                 slot;
    ngx_uint_t                 redirects;
    ngx_uint_t                 retries;
    ngx_uint_t                 asking;
    ngx_http_im_redis_t       *ask;        /* ASK: where it must go */
    ngx_http_im_redis_t       *rd;         /* where it went */
    ngx_queue_t                link;       /* in the retry queue */
} ngx_http_im_redis_op_t;


typedef struct {
    const char                *body;
    size_t                     len;
    char                       sha[2 * SHA_DIGEST_LENGTH + 1];
} ngx_http_im_script_t;


/* this worker's view of Redis */
typedef struct {
    ngx_http_im_redis_node_t   nodes[NGX_HTTP_IM_REDIS_NODES_MAX];
    ngx_uint_t                 nnodes;
    ngx_uint_t                 cluster;
    uint16_t                  *owner;      /* slot -> node, cluster only */
    ngx_http_im_slot_map_t    *map;        /* CLUSTER SLOTS, parsed */
    ngx_uint_t                 pending;    /* commands, all nodes */
    ngx_uint_t                 exiting;
    ngx_uint_t                 refreshing;
    ngx_uint_t                 mapped;     /* a slot map was loaded */
    ngx_uint_t                 resubscribe;
    ngx_msec_t                 refreshed;
    ngx_event_t                refresh;
    ngx_event_t                retry;
    ngx_event_t                ping;
    ngx_queue_t                retries;
    ngx_http_im_redis_handlers_t  *up;
} ngx_http_im_redis_ctx_t;


static ngx_int_t ngx_http_im_redis_node_add(ngx_str_t *host,
    ngx_int_t port);
static ngx_http_im_redis_node_t *ngx_http_im_redis_node_find(
    ngx_str_t *host, ngx_int_t port);
static void ngx_http_im_redis_connect(ngx_http_im_redis_t *rd);
static void ngx_http_im_redis_schedule(ngx_http_im_redis_t *rd);
static void ngx_http_im_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_im_redis_timeout_handler(ngx_event_t *ev);
static void ngx_http_im_redis_connected(const redisAsyncContext *ac,
    int status);
static void ngx_http_im_redis_disconnected(const redisAsyncContext *ac,
    int status);
static void ngx_http_im_redis_ready_up(ngx_http_im_redis_t *rd);
static void ngx_http_im_redis_free_ctx(ngx_http_im_redis_t *rd);
static ngx_http_im_redis_t *ngx_http_im_redis_route(ngx_uint_t slot);
static ngx_int_t ngx_http_im_redis_queue(ngx_http_im_redis_pt handler,
    void *data, char *cmd, int len, ngx_uint_t script, ngx_uint_t slot);
static ngx_int_t ngx_http_im_redis_send(ngx_http_im_redis_op_t *op,
    ngx_http_im_redis_t *rd);
static void ngx_http_im_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static ngx_int_t ngx_http_im_redis_redirect(ngx_http_im_redis_op_t *op,
    redisReply *reply);
static void ngx_http_im_redis_done(ngx_http_im_redis_op_t *op,
    redisReply *reply);
static void ngx_http_im_redis_retry_later(ngx_http_im_redis_op_t *op);
static void ngx_http_im_redis_retry_handler(ngx_event_t *ev);
static ngx_int_t ngx_http_im_redis_noscript(ngx_http_im_redis_op_t *op);
static void ngx_http_im_redis_refresh_soon(void);
static void ngx_http_im_redis_refresh_handler(ngx_event_t *ev);
static void ngx_http_im_redis_slots_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static ngx_uint_t ngx_http_im_redis_slots_apply(ngx_http_im_redis_t *rd);
static void ngx_http_im_redis_sub_message(void *data, ngx_str_t *channel,
    u_char *msg, size_t len);
static void ngx_http_im_redis_sub_answer(void *data, ngx_str_t *channel,
    ngx_int_t ok);
static void ngx_http_im_redis_sub_moved(void *data, ngx_str_t *channel);
static void ngx_http_im_redis_sub_state(void *data, ngx_uint_t up);
static ngx_http_im_redis_sub_t *ngx_http_im_redis_sub_of(
    ngx_str_t *channel);
static ngx_uint_t ngx_http_im_redis_ip(ngx_str_t *host);
static ngx_uint_t ngx_http_im_redis_slot(int n, const char **argv,
    const size_t *argvlen);
static ngx_int_t ngx_http_im_redis_attach(redisAsyncContext *ac,
    ngx_log_t *log);
static void ngx_http_im_redis_add_read(void *data);
static void ngx_http_im_redis_del_read(void *data);
static void ngx_http_im_redis_add_write(void *data);
static void ngx_http_im_redis_del_write(void *data);
static void ngx_http_im_redis_cleanup(void *data);
static void ngx_http_im_redis_read_handler(ngx_event_t *ev);
static void ngx_http_im_redis_write_handler(ngx_event_t *ev);
static void ngx_http_im_redis_arm_timeout(ngx_http_im_redis_t *rd);


static ngx_http_im_redis_ctx_t  ngx_http_im_redis;

static ngx_http_im_script_t  ngx_http_im_scripts[NGX_HTTP_IM_LUA_N] = {
    { ngx_http_im_lua_send, sizeof(ngx_http_im_lua_send) - 1, "" },
    { ngx_http_im_lua_pull, sizeof(ngx_http_im_lua_pull) - 1, "" },
    { ngx_http_im_lua_pull_seqs, sizeof(ngx_http_im_lua_pull_seqs) - 1,
      "" },
    { ngx_http_im_lua_newest, sizeof(ngx_http_im_lua_newest) - 1, "" },
    { ngx_http_im_lua_conv_seq, sizeof(ngx_http_im_lua_conv_seq) - 1, "" },
    { ngx_http_im_lua_auth, sizeof(ngx_http_im_lua_auth) - 1, "" },
    { ngx_http_im_lua_token, sizeof(ngx_http_im_lua_token) - 1, "" },
    { ngx_http_im_lua_register, sizeof(ngx_http_im_lua_register) - 1, "" },
    { ngx_http_im_lua_kick, sizeof(ngx_http_im_lua_kick) - 1, "" },
    { ngx_http_im_lua_online, sizeof(ngx_http_im_lua_online) - 1, "" },
    { ngx_http_im_lua_users_info, sizeof(ngx_http_im_lua_users_info) - 1,
      "" },
    { ngx_http_im_lua_seq_seed, sizeof(ngx_http_im_lua_seq_seed) - 1, "" },
    { ngx_http_im_lua_persist_take,
      sizeof(ngx_http_im_lua_persist_take) - 1, "" },
    { ngx_http_im_lua_persist_done,
      sizeof(ngx_http_im_lua_persist_done) - 1, "" },
    { ngx_http_im_lua_conv_index, sizeof(ngx_http_im_lua_conv_index) - 1,
      "" },
    { ngx_http_im_lua_send_conv, sizeof(ngx_http_im_lua_send_conv) - 1,
      "" },
    { ngx_http_im_lua_deliver, sizeof(ngx_http_im_lua_deliver) - 1, "" },
    { ngx_http_im_lua_persist_trim,
      sizeof(ngx_http_im_lua_persist_trim) - 1, "" },
    { ngx_http_im_lua_conv, sizeof(ngx_http_im_lua_conv) - 1, "" },
    { ngx_http_im_lua_msg_set, sizeof(ngx_http_im_lua_msg_set) - 1, "" },
    { ngx_http_im_lua_msg_purge, sizeof(ngx_http_im_lua_msg_purge) - 1, "" },
    { ngx_http_im_lua_group, sizeof(ngx_http_im_lua_group) - 1, "" },
    { ngx_http_im_lua_group_head, sizeof(ngx_http_im_lua_group_head) - 1,
      "" },
    { ngx_http_im_lua_friend, sizeof(ngx_http_im_lua_friend) - 1, "" },
    { ngx_http_im_lua_users_list, sizeof(ngx_http_im_lua_users_list) - 1,
      "" },
    { ngx_http_im_lua_login, sizeof(ngx_http_im_lua_login) - 1, "" },
    { ngx_http_im_lua_online_tokens,
      sizeof(ngx_http_im_lua_online_tokens) - 1, "" },
    { ngx_http_im_lua_presence, sizeof(ngx_http_im_lua_presence) - 1, "" }
};

static ngx_http_im_redis_sub_handlers_t  ngx_http_im_redis_sub_handlers = {
    ngx_http_im_redis_sub_message,
    ngx_http_im_redis_sub_answer,
    ngx_http_im_redis_sub_moved,
    ngx_http_im_redis_sub_state
};


/*
 * Starts the connections of this worker: to the one node, or to the
 * cluster's seeds (the masters are learned from them).  Failures to
 * connect are retried on timers, so this only fails on allocation errors.
 */
ngx_int_t
ngx_http_im_redis_init(ngx_cycle_t *cycle,
    ngx_http_im_redis_handlers_t *handlers)
{
    u_char                     md[SHA_DIGEST_LENGTH];
    ngx_uint_t                 i;
    ngx_http_im_redis_ctx_t   *r;
    ngx_http_im_main_conf_t   *imcf;
    ngx_http_im_redis_addr_t  *seeds;

    for (i = 0; i < NGX_HTTP_IM_LUA_N; i++) {
        SHA1((u_char *) ngx_http_im_scripts[i].body,
             ngx_http_im_scripts[i].len, md);
        ngx_hex_dump((u_char *) ngx_http_im_scripts[i].sha, md,
                     SHA_DIGEST_LENGTH);
    }

    r = &ngx_http_im_redis;
    ngx_memzero(r, sizeof(ngx_http_im_redis_ctx_t));
    r->up = handlers;
    ngx_queue_init(&r->retries);

    imcf = ngx_http_im_worker->imcf;
    r->cluster = imcf->redis_cluster != NULL;

    r->refresh.handler = ngx_http_im_redis_refresh_handler;
    r->retry.handler = ngx_http_im_redis_retry_handler;

    r->refresh.log = cycle->log;
    r->retry.log = cycle->log;
    r->refresh.cancelable = 1;
    r->retry.cancelable = 1;

    if (!r->cluster) {
        return ngx_http_im_redis_node_add(&imcf->redis_host,
                                          imcf->redis_port);
    }

    r->owner = ngx_alloc(NGX_HTTP_IM_SLOT_COUNT * sizeof(uint16_t),
                         cycle->log);
    r->map = ngx_alloc(sizeof(ngx_http_im_slot_map_t), cycle->log);
    if (r->owner == NULL || r->map == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < NGX_HTTP_IM_SLOT_COUNT; i++) {
        r->owner[i] = NGX_HTTP_IM_SLOT_NONE;
    }

    seeds = imcf->redis_cluster->elts;

    for (i = 0; i < imcf->redis_cluster->nelts; i++) {
        if (ngx_http_im_redis_node_add(&seeds[i].host, seeds[i].port)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    ngx_add_timer(&r->refresh, NGX_HTTP_IM_REDIS_REFRESH);

    return NGX_OK;
}


/* Frees every connection; every pending handler runs with a NULL reply. */
void
ngx_http_im_redis_exit(void)
{
    ngx_uint_t                 i;
    ngx_queue_t               *q;
    ngx_http_im_redis_op_t    *op;
    ngx_http_im_redis_ctx_t   *r;
    ngx_http_im_redis_node_t  *node;

    r = &ngx_http_im_redis;
    r->exiting = 1;

    if (r->refresh.timer_set) {
        ngx_del_timer(&r->refresh);
    }

    if (r->retry.timer_set) {
        ngx_del_timer(&r->retry);
    }

    while (!ngx_queue_empty(&r->retries)) {
        q = ngx_queue_head(&r->retries);
        ngx_queue_remove(q);
        op = ngx_queue_data(q, ngx_http_im_redis_op_t, link);
        r->pending--;
        ngx_http_im_redis_done(op, NULL);
    }

    for (i = 0; i < r->nnodes; i++) {
        node = &r->nodes[i];
        ngx_http_im_redis_free_ctx(&node->cmd);

        if (node->sub) {
            ngx_http_im_redis_sub_free(node->sub);
            node->sub = NULL;
        }
    }

    ngx_free(r->owner);
    ngx_free(r->map);
    r->owner = NULL;
    r->map = NULL;
}


/* a node with its two connections; they start connecting now */
static ngx_int_t
ngx_http_im_redis_node_add(ngx_str_t *host, ngx_int_t port)
{
    ngx_http_im_redis_t           *rd;
    ngx_http_im_redis_ctx_t       *r;
    ngx_http_im_redis_node_t      *node;
    ngx_http_im_redis_sub_conf_t   sc;

    r = &ngx_http_im_redis;

    if (r->nnodes == NGX_HTTP_IM_REDIS_NODES_MAX
        || host->len >= NGX_HTTP_IM_REDIS_HOST_MAX)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "im redis: cannot add node \"%V:%i\": at most %d "
                      "nodes", host, port, NGX_HTTP_IM_REDIS_NODES_MAX);
        return NGX_DECLINED;
    }

    node = &r->nodes[r->nnodes];
    ngx_memzero(node, sizeof(ngx_http_im_redis_node_t));

    node->host.data = node->text;
    node->host.len = host->len;
    ngx_memcpy(node->text, host->data, host->len);
    node->port = port;

    rd = &node->cmd;
    rd->node = node;
    rd->backoff = NGX_HTTP_IM_BACKOFF_MIN;
    rd->reconnect.handler = ngx_http_im_redis_reconnect_handler;
    rd->reconnect.data = rd;
    rd->reconnect.log = ngx_cycle->log;
    rd->reconnect.cancelable = 1;
    rd->timeout.handler = ngx_http_im_redis_timeout_handler;
    rd->timeout.data = rd;
    rd->timeout.log = ngx_cycle->log;
    rd->timeout.cancelable = 1;

    ngx_memzero(&sc, sizeof(ngx_http_im_redis_sub_conf_t));
    sc.host = node->host;
    sc.port = port;
    sc.sharded = r->cluster;
    sc.connect_timeout = ngx_http_im_worker->imcf->redis_connect_timeout;
    sc.timeout = ngx_http_im_worker->imcf->redis_timeout;
    sc.ping = NGX_HTTP_IM_REDIS_PING;
    sc.log = ngx_cycle->log;
    sc.handlers = &ngx_http_im_redis_sub_handlers;
    sc.data = node;

    node->sub = ngx_http_im_redis_sub_create(&sc);
    if (node->sub == NULL) {
        return NGX_ERROR;
    }

    r->nnodes++;
    ngx_http_im_redis_connect(rd);

    return NGX_OK;
}


static ngx_http_im_redis_node_t *
ngx_http_im_redis_node_find(ngx_str_t *host, ngx_int_t port)
{
    ngx_uint_t                 i;
    ngx_http_im_redis_node_t  *node;

    for (i = 0; i < ngx_http_im_redis.nnodes; i++) {
        node = &ngx_http_im_redis.nodes[i];

        if (node->port == port && node->host.len == host->len
            && ngx_strncmp(node->host.data, host->data, host->len) == 0)
        {
            return node;
        }
    }

    return NULL;
}


static void
ngx_http_im_redis_free_ctx(ngx_http_im_redis_t *rd)
{
    redisAsyncContext  *ac;

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    if (rd->timeout.timer_set) {
        ngx_del_timer(&rd->timeout);
    }

    ac = rd->ac;

    if (ac && (ac->c.flags & REDIS_CONNECTED)) {
        /* what the exiting sessions queued (presence) goes out if the
         * socket takes it; the write does not block.  On a write error
         * hiredis frees the context itself, and the disconnect callback
         * clears rd->ac */
        redisAsyncHandleWrite(ac);
    }

    ac = rd->ac;
    rd->ac = NULL;
    rd->state = NGX_HTTP_IM_REDIS_DOWN;

    if (ac) {
        redisAsyncFree(ac);
    }
}


/* 1 when commands can be sent: to the node, or to some cluster node */
ngx_int_t
ngx_http_im_redis_ready(void)
{
    ngx_uint_t  i;

    for (i = 0; i < ngx_http_im_redis.nnodes; i++) {
        if (ngx_http_im_redis.nodes[i].cmd.state == NGX_HTTP_IM_REDIS_READY)
        {
            return 1;
        }
    }

    return 0;
}


/* 1 when subscriptions can be made (on some node, in a cluster) */
ngx_int_t
ngx_http_im_redis_sub_ready(void)
{
    ngx_uint_t  i;

    for (i = 0; i < ngx_http_im_redis.nnodes; i++) {
        if (ngx_http_im_redis.nodes[i].sub_up) {
            return 1;
        }
    }

    return 0;
}


ngx_int_t
ngx_http_im_redis_cluster(void)
{
    return ngx_http_im_redis.cluster;
}


static void
ngx_http_im_redis_connect(ngx_http_im_redis_t *rd)
{
    char                       host[NGX_HTTP_IM_REDIS_HOST_MAX];
    ngx_log_t                 *log;
    redisAsyncContext         *ac;
    ngx_http_im_redis_node_t  *node;

    node = rd->node;
    log = ngx_http_im_worker->log;

    ngx_memcpy(host, node->host.data, node->host.len);
    host[node->host.len] = '\0';

    /* the host is an address (checked when it was added), so no name
     * lookup can block here */
    if (node->port) {
        ac = redisAsyncConnect(host, (int) node->port);

    } else {
        ac = redisAsyncConnectUnix(host);
    }

    if (ac == NULL) {
        ngx_log_error(NGX_LOG_ALERT, log, 0, "im redis: out of memory");
        ngx_http_im_redis_schedule(rd);
        return;
    }

    if (ac->err) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "im redis connect to \"%V:%i\" failed: %s",
                      &node->host, node->port, ac->errstr);
        redisAsyncFree(ac);
        ngx_http_im_redis_schedule(rd);
        return;
    }

    ac->data = rd;

    if (ngx_http_im_redis_attach(ac, log) != NGX_OK) {
        redisAsyncFree(ac);
        ngx_http_im_redis_schedule(rd);
        return;
    }

    redisAsyncSetConnectCallback(ac, ngx_http_im_redis_connected);
    redisAsyncSetDisconnectCallback(ac, ngx_http_im_redis_disconnected);

    rd->ac = ac;
    rd->state = NGX_HTTP_IM_REDIS_CONNECTING;

    /* hiredis notices a finished connect(2) on the first writable event */
    ngx_http_im_redis_add_write(ac->ev.data);

    ngx_add_timer(&rd->reconnect,
                  ngx_http_im_worker->imcf->redis_connect_timeout);
}


static void
ngx_http_im_redis_schedule(ngx_http_im_redis_t *rd)
{
    if (ngx_http_im_redis.exiting || ngx_exiting || ngx_terminate) {
        return;
    }

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    ngx_add_timer(&rd->reconnect, rd->backoff);

    rd->backoff *= 2;
    if (rd->backoff > NGX_HTTP_IM_BACKOFF_MAX) {
        rd->backoff = NGX_HTTP_IM_BACKOFF_MAX;
    }

    /* a cluster node that went away may have been failed over */
    if (ngx_http_im_redis.cluster) {
        ngx_http_im_redis_refresh_soon();
    }
}


static void
ngx_http_im_redis_reconnect_handler(ngx_event_t *ev)
{
    redisAsyncContext    *ac;
    ngx_http_im_redis_t  *rd;

    rd = ev->data;

    if (rd->state == NGX_HTTP_IM_REDIS_CONNECTING) {
        /* connect timed out: the context was never connected, so hiredis
         * calls no disconnect callback; retry from here */
        ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                      "im redis connect to \"%V:%i\" timed out",
                      &rd->node->host, rd->node->port);
        ac = rd->ac;
        rd->ac = NULL;
        rd->state = NGX_HTTP_IM_REDIS_DOWN;
        redisAsyncFree(ac);
        ngx_http_im_redis_schedule(rd);
        return;
    }

    if (rd->state == NGX_HTTP_IM_REDIS_DOWN) {
        ngx_http_im_redis_connect(rd);
    }
}


static void
ngx_http_im_redis_timeout_handler(ngx_event_t *ev)
{
    ngx_http_im_redis_t  *rd;

    rd = ev->data;

    if (rd->ac == NULL || rd->pending == 0) {
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                  "im redis \"%V:%i\": no reply for %M ms, %ui commands "
                  "pending, reconnecting", &rd->node->host, rd->node->port,
                  ngx_http_im_worker->imcf->redis_timeout, rd->pending);

    /* fails every pending command, then calls the disconnect callback;
     * redisAsyncDisconnect() would wait for the overdue replies */
    redisAsyncFree(rd->ac);
}


static void
ngx_http_im_redis_connected(const redisAsyncContext *ac, int status)
{
    ngx_http_im_redis_t  *rd;

    rd = ac->data;

    if (rd->reconnect.timer_set) {
        ngx_del_timer(&rd->reconnect);
    }

    if (status != REDIS_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_im_worker->log, 0,
                      "im redis connect to \"%V:%i\" failed: %s",
                      &rd->node->host, rd->node->port, ac->errstr);

        /* hiredis frees the context after this callback */
        rd->ac = NULL;
        rd->state = NGX_HTTP_IM_REDIS_DOWN;
        ngx_http_im_redis_schedule(rd);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_http_im_worker->log, 0,
                  "im redis command connection to \"%V:%i\" connected",
                  &rd->node->host, rd->node->port);

    if (rd->connects++) {
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_REDIS_RECONNECTS);
    }

    rd->backoff = NGX_HTTP_IM_BACKOFF_MIN;
    ngx_http_im_redis_ready_up(rd);
}


static void
ngx_http_im_redis_ready_up(ngx_http_im_redis_t *rd)
{
    ngx_uint_t   i;
    const char  *argv[3];
    size_t       argvlen[3];

    rd->state = NGX_HTTP_IM_REDIS_READY;

    /* scripts go first in the pipeline, so EVALSHA finds them */
    argv[0] = "SCRIPT";
    argvlen[0] = 6;
    argv[1] = "LOAD";
    argvlen[1] = 4;

    for (i = 0; i < NGX_HTTP_IM_LUA_N; i++) {
        argv[2] = ngx_http_im_scripts[i].body;
        argvlen[2] = ngx_http_im_scripts[i].len;
        (void) redisAsyncCommandArgv(rd->ac, NULL, NULL, 3, argv, argvlen);
    }

    if (ngx_http_im_redis.cluster) {
        ngx_http_im_redis_refresh_soon();
    }

    ngx_http_im_redis.up->up(0);
}


static void
ngx_http_im_redis_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_http_im_redis_t  *rd;

    rd = ac->data;

    if (!ngx_http_im_redis.exiting) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_im_worker->log, 0,
                      "im redis \"%V:%i\" disconnected: %s",
                      &rd->node->host, rd->node->port,
                      ac->err ? ac->errstr : "closed");
    }

    rd->ac = NULL;
    rd->state = NGX_HTTP_IM_REDIS_DOWN;
    rd->pending = 0;

    if (rd->timeout.timer_set) {
        ngx_del_timer(&rd->timeout);
    }

    ngx_http_im_redis_schedule(rd);
}


/* the connection for a slot: the node's, or the slot owner's; NULL when
 * it is not ready (the caller answers 90004 at once) */
static ngx_http_im_redis_t *
ngx_http_im_redis_route(ngx_uint_t slot)
{
    ngx_uint_t            i;
    ngx_http_im_redis_t  *rd;

    if (!ngx_http_im_redis.cluster) {
        rd = &ngx_http_im_redis.nodes[0].cmd;

    } else if (slot < NGX_HTTP_IM_SLOT_COUNT && ngx_http_im_redis.mapped) {
        i = ngx_http_im_redis.owner[slot];
        if (i == NGX_HTTP_IM_SLOT_NONE) {
            return NULL;
        }

        rd = &ngx_http_im_redis.nodes[i].cmd;

    } else {
        /* no key, or no slot map yet (MOVED will redirect): any node */
        for (i = 0; i < ngx_http_im_redis.nnodes; i++) {
            rd = &ngx_http_im_redis.nodes[i].cmd;
            if (rd->state == NGX_HTTP_IM_REDIS_READY) {
                return rd;
            }
        }

        return NULL;
    }

    return rd->state == NGX_HTTP_IM_REDIS_READY ? rd : NULL;
}


/* a key's slot, or NGX_HTTP_IM_SLOT_COUNT for none */
static ngx_uint_t
ngx_http_im_redis_slot(int n, const char **argv, const size_t *argvlen)
{
    if (!ngx_http_im_redis.cluster || n < 0) {
        return NGX_HTTP_IM_SLOT_COUNT;
    }

    return ngx_http_im_slot(argv[n], argvlen[n]);
}


/*
 * Queues a command; its key (for routing in a cluster) is argv[1].
 * Returns NGX_OK, or NGX_DECLINED when Redis (the key's node) is
 * unavailable or the pending-command bound is reached (the caller answers
 * 90004); the handler is not called then.  A NULL handler means nobody
 * waits for the reply.
 */
ngx_int_t
ngx_http_im_redis_command(ngx_http_im_redis_pt handler, void *data,
    int argc, const char **argv, const size_t *argvlen)
{
    int    len;
    char  *cmd;

    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) {
        return NGX_DECLINED;
    }

    return ngx_http_im_redis_queue(handler, data, cmd, len,
                                   NGX_HTTP_IM_LUA_N,
                                   ngx_http_im_redis_slot(argc > 1 ? 1 : -1,
                                                          argv, argvlen));
}


ngx_int_t
ngx_http_im_redis_script(ngx_uint_t script, ngx_http_im_redis_pt handler,
    void *data, int nkeys, int argc, const char **argv,
    const size_t *argvlen)
{
    int           i, len;
    char         *cmd, nk[NGX_INT_T_LEN];
    size_t       *avlen, avlen_small[32];
    const char  **av, *av_small[32];

    av = av_small;
    avlen = avlen_small;

    if (argc + 3 > 32) {
        av = ngx_alloc((argc + 3) * (sizeof(char *) + sizeof(size_t)),
                       ngx_cycle->log);
        if (av == NULL) {
            return NGX_DECLINED;
        }

        avlen = (size_t *) (av + argc + 3);
    }

    av[0] = "EVALSHA";
    avlen[0] = 7;
    av[1] = ngx_http_im_scripts[script].sha;
    avlen[1] = 2 * SHA_DIGEST_LENGTH;
    av[2] = nk;
    avlen[2] = ngx_sprintf((u_char *) nk, "%d", nkeys) - (u_char *) nk;

    for (i = 0; i < argc; i++) {
        av[i + 3] = argv[i];
        avlen[i + 3] = argvlen[i];
    }

    len = redisFormatCommandArgv(&cmd, argc + 3, av, avlen);

    if (av != av_small) {
        ngx_free(av);
    }

    if (len < 0) {
        return NGX_DECLINED;
    }

    return ngx_http_im_redis_queue(handler, data, cmd, len, script,
                                   ngx_http_im_redis_slot(nkeys ? 0 : -1,
                                                          argv, argvlen));
}


ngx_int_t
ngx_http_im_redis_script_raw(ngx_uint_t script, ngx_http_im_redis_pt handler,
    void *data, ngx_uint_t nkeys, ngx_uint_t argc, ngx_str_t *keys,
    ngx_str_t *args)
{
    u_char  *cmd, *p, nk[NGX_INT_T_LEN];
    size_t   nklen;

    nklen = ngx_sprintf(nk, "%ui", nkeys) - nk;

    cmd = ngx_alloc(sizeof("*\r\n$7\r\nEVALSHA\r\n$40\r\n\r\n$\r\n\r\n")
                    + 3 * NGX_INT_T_LEN + 2 * SHA_DIGEST_LENGTH + keys->len
                    + args->len, ngx_cycle->log);
    if (cmd == NULL) {
        return NGX_DECLINED;
    }

    p = ngx_sprintf(cmd, "*%ui\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$%uz\r\n",
                    argc + 3, ngx_http_im_scripts[script].sha, nklen);
    p = ngx_cpymem(p, nk, nklen);
    *p++ = '\r';
    *p++ = '\n';
    p = ngx_cpymem(p, keys->data, keys->len);
    p = ngx_cpymem(p, args->data, args->len);

    return ngx_http_im_redis_queue(handler, data, (char *) cmd, p - cmd,
                                   script, NGX_HTTP_IM_SLOT_COUNT);
}


/* takes cmd (formatted by hiredis) in every case */
static ngx_int_t
ngx_http_im_redis_queue(ngx_http_im_redis_pt handler, void *data,
    char *cmd, int len, ngx_uint_t script, ngx_uint_t slot)
{
    ngx_http_im_redis_t     *rd;
    ngx_http_im_redis_op_t  *op;

    rd = ngx_http_im_redis_route(slot);

    if (rd == NULL
        || ngx_http_im_redis.pending
           >= ngx_http_im_worker->imcf->redis_max_pending)
    {
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_REDIS_BUSY);
        redisFreeCommand(cmd);
        return NGX_DECLINED;
    }

    op = ngx_calloc(sizeof(ngx_http_im_redis_op_t), ngx_cycle->log);
    if (op == NULL) {
        redisFreeCommand(cmd);
        return NGX_DECLINED;
    }

    op->handler = handler;
    op->data = data;
    op->cmd = cmd;
    op->len = len;
    op->script = script;
    op->slot = slot;

    if (ngx_http_im_redis_send(op, rd) != NGX_OK) {
        redisFreeCommand(cmd);
        ngx_free(op);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* op goes out on rd (with ASKING first when it was asked to) */
static ngx_int_t
ngx_http_im_redis_send(ngx_http_im_redis_op_t *op, ngx_http_im_redis_t *rd)
{
    if (op->asking
        && redisAsyncCommand(rd->ac, NULL, NULL, "ASKING") != REDIS_OK)
    {
        return NGX_DECLINED;
    }

    op->asking = 0;

    if (redisAsyncFormattedCommand(rd->ac, ngx_http_im_redis_reply, op,
                                   op->cmd, op->len)
        != REDIS_OK)
    {
        return NGX_DECLINED;
    }

    op->rd = rd;
    rd->pending++;
    ngx_http_im_redis.pending++;
    ngx_http_im_redis_arm_timeout(rd);

    return NGX_OK;
}


static void
ngx_http_im_redis_arm_timeout(ngx_http_im_redis_t *rd)
{
    if (!rd->timeout.timer_set) {
        ngx_add_timer(&rd->timeout, ngx_http_im_worker->imcf->redis_timeout);
    }
}


static void
ngx_http_im_redis_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply              *reply;
    ngx_http_im_redis_t     *rd;
    ngx_http_im_redis_op_t  *op;

    op = privdata;
    reply = r;
    rd = op->rd;

    if (rd->pending) {
        rd->pending--;
    }

    if (ngx_http_im_redis.pending) {
        ngx_http_im_redis.pending--;
    }

    if (rd->timeout.timer_set) {
        ngx_del_timer(&rd->timeout);
    }

    if (rd->pending && rd->ac) {
        ngx_http_im_redis_arm_timeout(rd);
    }

    if (reply && reply->type == REDIS_REPLY_ERROR
        && ngx_http_im_redis_redirect(op, reply) == NGX_OK)
    {
        return;
    }

    ngx_http_im_redis_done(op, reply);
}


/* the command's answer reaches its handler, and op is freed */
static void
ngx_http_im_redis_done(ngx_http_im_redis_op_t *op, redisReply *reply)
{
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_REDIS_ERRORS);
    }

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_im_worker->log, 0,
                      "im redis error: %*s", (size_t) reply->len,
                      reply->str);
    }

    if (op->handler) {
        op->handler(reply, op->data);
    }

    redisFreeCommand(op->cmd);
    ngx_free(op);
}


/*
 * An error reply that asks for the command again: NOSCRIPT (the script
 * cache was flushed), and in a cluster MOVED, ASK, TRYAGAIN and
 * CLUSTERDOWN.  Returns NGX_OK when the command went out again (or will),
 * else the error reaches the handler.
 */
static ngx_int_t
ngx_http_im_redis_redirect(ngx_http_im_redis_op_t *op, redisReply *reply)
{
    int                        port, ask;
    unsigned                   slot;
    ngx_str_t                  host;
    ngx_http_im_redis_t       *rd;
    ngx_http_im_redis_node_t  *node;
    char                       text[NGX_HTTP_IM_REDIS_HOST_MAX];

    if (ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        return ngx_http_im_redis_noscript(op);
    }

    if (!ngx_http_im_redis.cluster) {
        return NGX_DECLINED;
    }

    switch (ngx_http_im_slot_error_kind(reply->str, reply->len)) {

    case NGX_HTTP_IM_SLOT_ERR_TRYAGAIN:
    case NGX_HTTP_IM_SLOT_ERR_CLUSTERDOWN:
        if (op->retries++ >= NGX_HTTP_IM_REDIS_RETRIES) {
            return NGX_DECLINED;
        }

        ngx_http_im_redis_retry_later(op);
        return NGX_OK;

    case NGX_HTTP_IM_SLOT_ERR_MOVED:
    case NGX_HTTP_IM_SLOT_ERR_ASK:
        break;

    default:
        return NGX_DECLINED;
    }

    if (op->redirects++ >= NGX_HTTP_IM_REDIS_REDIRECTS
        || ngx_http_im_slot_redirect(reply->str, reply->len, &slot, text,
                                     sizeof(text), &port, &ask) != 0)
    {
        return NGX_DECLINED;
    }

    host.data = (u_char *) text;
    host.len = ngx_strlen(text);

    if (host.len == 0) {
        /* "the address you reached me at" */
        host = op->rd->node->host;
    }

    node = ngx_http_im_redis_node_find(&host, port);

    if (node == NULL) {
        if (ngx_http_im_redis_node_add(&host, port) != NGX_OK) {
            return NGX_DECLINED;
        }

        node = &ngx_http_im_redis.nodes[ngx_http_im_redis.nnodes - 1];
    }

    rd = &node->cmd;

    if (ask) {
        op->asking = 1;
        op->ask = rd;

    } else {
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_REDIS_MOVED);
        ngx_http_im_redis.owner[slot] = node - ngx_http_im_redis.nodes;
        ngx_http_im_redis_refresh_soon();
    }

    if (ask) {
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_REDIS_ASK);
    }

    if (rd->state != NGX_HTTP_IM_REDIS_READY) {
        /* a node just learned of: try once it is connected */
        ngx_http_im_redis_retry_later(op);
        return NGX_OK;
    }

    return ngx_http_im_redis_send(op, rd);
}


/* a command waiting to be sent again still counts as pending, so the
 * pending bound covers it too */
static void
ngx_http_im_redis_retry_later(ngx_http_im_redis_op_t *op)
{
    ngx_queue_insert_tail(&ngx_http_im_redis.retries, &op->link);
    ngx_http_im_redis.pending++;

    if (!ngx_http_im_redis.retry.timer_set) {
        ngx_add_timer(&ngx_http_im_redis.retry,
                      NGX_HTTP_IM_REDIS_RETRY_WAIT);
    }
}


/* sends the waiting commands again, to where their slots are now */
static void
ngx_http_im_redis_retry_handler(ngx_event_t *ev)
{
    ngx_queue_t              queue, *q;
    ngx_http_im_redis_t     *rd;
    ngx_http_im_redis_op_t  *op;

    ngx_queue_init(&queue);
    ngx_queue_add(&queue, &ngx_http_im_redis.retries);
    ngx_queue_init(&ngx_http_im_redis.retries);

    while (!ngx_queue_empty(&queue)) {
        q = ngx_queue_head(&queue);
        ngx_queue_remove(q);
        op = ngx_queue_data(q, ngx_http_im_redis_op_t, link);
        ngx_http_im_redis.pending--;

        rd = op->asking ? op->ask : ngx_http_im_redis_route(op->slot);

        if (rd == NULL || rd->state != NGX_HTTP_IM_REDIS_READY
            || ngx_http_im_redis_send(op, rd) != NGX_OK)
        {
            if (op->retries++ < NGX_HTTP_IM_REDIS_RETRIES
                && !ngx_http_im_redis.exiting)
            {
                ngx_http_im_redis_retry_later(op);
                continue;
            }

            ngx_http_im_redis_done(op, NULL);
        }
    }
}


/*
 * Someone flushed the script cache: resend the command as EVAL with the
 * script body, which also caches the script again.  The formatted
 * EVALSHA is "*N\r\n$7\r\nEVALSHA\r\n$40\r\n<sha>\r\n<rest>".
 */
static ngx_int_t
ngx_http_im_redis_noscript(ngx_http_im_redis_op_t *op)
{
    u_char                *p, *rest, *cmd;
    size_t                 len, nlen;
    ngx_http_im_script_t  *sc;

    if (op->script == NGX_HTTP_IM_LUA_N
        || op->rd->state != NGX_HTTP_IM_REDIS_READY)
    {
        return NGX_DECLINED;
    }

    sc = &ngx_http_im_scripts[op->script];

    p = (u_char *) ngx_strchr(op->cmd, '\n');
    if (p == NULL) {
        return NGX_DECLINED;
    }

    nlen = p + 1 - (u_char *) op->cmd;
    rest = p + 1 + sizeof("$7\r\nEVALSHA\r\n$40\r\n") - 1
           + 2 * SHA_DIGEST_LENGTH + 2;
    len = op->len - (rest - (u_char *) op->cmd);

    cmd = ngx_alloc(nlen + 32 + NGX_SIZE_T_LEN + sc->len + len,
                    ngx_cycle->log);
    if (cmd == NULL) {
        return NGX_DECLINED;
    }

    p = ngx_cpymem(cmd, op->cmd, nlen);
    p = ngx_sprintf(p, "$4\r\nEVAL\r\n$%uz\r\n", sc->len);
    p = ngx_cpymem(p, sc->body, sc->len);
    *p++ = '\r';
    *p++ = '\n';
    p = ngx_cpymem(p, rest, len);

    ngx_log_error(NGX_LOG_NOTICE, ngx_http_im_worker->log, 0,
                  "im redis: script cache was flushed, resending as EVAL");

    /* the EVAL replaces the EVALSHA; a second NOSCRIPT cannot come */
    redisFreeCommand(op->cmd);
    op->cmd = (char *) cmd;
    op->len = p - cmd;
    op->script = NGX_HTTP_IM_LUA_N;

    return ngx_http_im_redis_send(op, op->rd);
}


/* ----------------------------------------------------------------------
 * the cluster's slot map
 */


static void
ngx_http_im_redis_refresh_soon(void)
{
    ngx_msec_t                delay, since;
    ngx_http_im_redis_ctx_t  *r;

    r = &ngx_http_im_redis;

    if (r->exiting || ngx_exiting || ngx_terminate) {
        return;
    }

    since = ngx_current_msec - r->refreshed;
    delay = since < NGX_HTTP_IM_REDIS_REFRESH_MIN
            ? NGX_HTTP_IM_REDIS_REFRESH_MIN - since : 1;

    if (r->refresh.timer_set && r->refresh.timer.key <= ngx_current_msec
                                                        + delay)
    {
        return;
    }

    if (r->refresh.timer_set) {
        ngx_del_timer(&r->refresh);
    }

    ngx_add_timer(&r->refresh, delay);
}


/* asks a ready node for CLUSTER SLOTS; again every so often anyway */
static void
ngx_http_im_redis_refresh_handler(ngx_event_t *ev)
{
    ngx_uint_t                i;
    ngx_http_im_redis_t      *rd;
    ngx_http_im_redis_ctx_t  *r;

    r = &ngx_http_im_redis;

    if (r->exiting || ngx_exiting || ngx_terminate) {
        return;
    }

    ngx_add_timer(&r->refresh, NGX_HTTP_IM_REDIS_REFRESH);

    if (r->refreshing) {
        return;
    }

    /* the nodes in turn, so one that answers wrongly is not always it */
    for (i = 0; i < r->nnodes; i++) {
        rd = &r->nodes[(r->refreshed + i) % r->nnodes].cmd;

        if (rd->state == NGX_HTTP_IM_REDIS_READY
            && redisAsyncCommand(rd->ac, ngx_http_im_redis_slots_reply, rd,
                                 "CLUSTER SLOTS")
               == REDIS_OK)
        {
            r->refreshing = 1;
            r->refreshed = ngx_current_msec;
            return;
        }
    }
}


static void
ngx_http_im_redis_slots_reply(redisAsyncContext *ac, void *reply,
    void *privdata)
{
    char                      err[128];
    ngx_uint_t                changed;
    ngx_http_im_redis_ctx_t  *r;

    r = &ngx_http_im_redis;
    r->refreshing = 0;

    if (reply == NULL || r->exiting) {
        return;
    }

    if (ngx_http_im_slot_map_parse(r->map, reply, err, sizeof(err)) != 0) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_im_worker->log, 0,
                      "im redis: bad CLUSTER SLOTS reply: %s", err);
        return;
    }

    changed = ngx_http_im_redis_slots_apply(privdata);
    r->mapped = 1;
    ngx_http_im_metric_inc(NGX_HTTP_IM_M_REDIS_REFRESHES);

    if (changed || r->resubscribe) {
        /* subscriptions follow their slots to their new masters */
        r->resubscribe = 0;
        r->up->up(1);
    }
}


/* the parsed map becomes the routing table; returns 1 if it changed */
static ngx_uint_t
ngx_http_im_redis_slots_apply(ngx_http_im_redis_t *asked)
{
    ngx_int_t                  port;
    ngx_str_t                  host;
    ngx_uint_t                 i, changed;
    uint16_t                   index[NGX_HTTP_IM_SLOT_NODES_MAX], o;
    ngx_http_im_redis_ctx_t   *r;
    ngx_http_im_redis_node_t  *node;

    r = &ngx_http_im_redis;

    for (i = 0; i < r->map->nnodes; i++) {
        host.data = (u_char *) r->map->nodes[i].host;
        host.len = ngx_strlen(r->map->nodes[i].host);
        port = r->map->nodes[i].port;
        index[i] = NGX_HTTP_IM_SLOT_NONE;

        if (host.len == 0) {
            host = asked->node->host;
        }

        if (!ngx_http_im_redis_ip(&host)) {
            /* a name would need a lookup, which could block */
            ngx_log_error(NGX_LOG_ERR, ngx_http_im_worker->log, 0,
                          "im redis: cluster node \"%V\" is not an IP "
                          "address; announce IPs (cluster-announce-ip)",
                          &host);
            continue;
        }

        node = ngx_http_im_redis_node_find(&host, port);

        if (node == NULL && ngx_http_im_redis_node_add(&host, port) == NGX_OK)
        {
            node = &r->nodes[r->nnodes - 1];
        }

        if (node) {
            index[i] = node - r->nodes;
        }
    }

    changed = 0;

    for (i = 0; i < NGX_HTTP_IM_SLOT_COUNT; i++) {
        o = r->map->owner[i];
        o = o == NGX_HTTP_IM_SLOT_NONE ? o : index[o];

        if (r->owner[i] != o) {
            r->owner[i] = o;
            changed = 1;
        }
    }

    return changed;
}


/* 1 when host is an IPv4 or IPv6 literal */
static ngx_uint_t
ngx_http_im_redis_ip(ngx_str_t *host)
{
    u_char  buf[sizeof(struct in6_addr)];
    char    text[NGX_HTTP_IM_REDIS_HOST_MAX];

    if (host->len == 0 || host->len >= sizeof(text)) {
        return 0;
    }

    ngx_memcpy(text, host->data, host->len);
    text[host->len] = '\0';

    return inet_pton(AF_INET, text, buf) == 1
           || inet_pton(AF_INET6, text, buf) == 1;
}


/* ----------------------------------------------------------------------
 * pub/sub
 */


ngx_int_t
ngx_http_im_redis_subscribe(ngx_str_t *channel)
{
    ngx_http_im_redis_sub_t  *sub;

    sub = ngx_http_im_redis_sub_of(channel);

    return sub ? ngx_http_im_redis_sub_subscribe(sub, channel)
               : NGX_DECLINED;
}


ngx_int_t
ngx_http_im_redis_unsubscribe(ngx_str_t *channel)
{
    ngx_http_im_redis_sub_t  *sub;

    sub = ngx_http_im_redis_sub_of(channel);

    return sub ? ngx_http_im_redis_sub_unsubscribe(sub, channel)
               : NGX_DECLINED;
}


/* the ready pub/sub connection a channel lives on, or NULL */
static ngx_http_im_redis_sub_t *
ngx_http_im_redis_sub_of(ngx_str_t *channel)
{
    ngx_uint_t                 i;
    ngx_http_im_redis_node_t  *node;

    if (!ngx_http_im_redis.cluster) {
        node = &ngx_http_im_redis.nodes[0];
        return node->sub_up ? node->sub : NULL;
    }

    if (!ngx_http_im_redis.mapped) {
        /* no slot map yet: a node that is up answers MOVED if it must */
        for (i = 0; i < ngx_http_im_redis.nnodes; i++) {
            if (ngx_http_im_redis.nodes[i].sub_up) {
                return ngx_http_im_redis.nodes[i].sub;
            }
        }

        return NULL;
    }

    i = ngx_http_im_redis.owner[ngx_http_im_slot((char *) channel->data,
                                                 channel->len)];
    if (i == NGX_HTTP_IM_SLOT_NONE) {
        return NULL;
    }

    node = &ngx_http_im_redis.nodes[i];

    return node->sub_up ? node->sub : NULL;
}


static void
ngx_http_im_redis_sub_message(void *data, ngx_str_t *channel, u_char *msg,
    size_t len)
{
    ngx_http_im_redis.up->message(channel, msg, len);
}


static void
ngx_http_im_redis_sub_answer(void *data, ngx_str_t *channel, ngx_int_t ok)
{
    if (ok < 0) {
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_REDIS_RESUBSCRIBES);
    }

    ngx_http_im_redis.up->subscribed(channel, ok);
}


/* the channel's slot is elsewhere: subscribe again after a refresh */
static void
ngx_http_im_redis_sub_moved(void *data, ngx_str_t *channel)
{
    ngx_http_im_redis.resubscribe = 1;
    ngx_http_im_redis_refresh_soon();
}


static void
ngx_http_im_redis_sub_state(void *data, ngx_uint_t up)
{
    ngx_http_im_redis_node_t  *node = data;

    node->sub_up = up;

    if (up) {
        ngx_http_im_redis.up->up(1);
        return;
    }

    if (ngx_http_im_redis.cluster) {
        ngx_http_im_redis_refresh_soon();
    }
}


/* ----------------------------------------------------------------------
 * the hiredis event-library hooks
 */


static ngx_int_t
ngx_http_im_redis_attach(redisAsyncContext *ac, ngx_log_t *log)
{
    ngx_connection_t  *c;

    c = ngx_get_connection(ac->c.fd, log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = ac;
    c->read->handler = ngx_http_im_redis_read_handler;
    c->write->handler = ngx_http_im_redis_write_handler;
    c->read->log = log;
    c->write->log = log;
    c->number = ngx_atomic_fetch_add(ngx_connection_counter, 1);

    ac->ev.data = c;
    ac->ev.addRead = ngx_http_im_redis_add_read;
    ac->ev.delRead = ngx_http_im_redis_del_read;
    ac->ev.addWrite = ngx_http_im_redis_add_write;
    ac->ev.delWrite = ngx_http_im_redis_del_write;
    ac->ev.cleanup = ngx_http_im_redis_cleanup;

    return NGX_OK;
}


/* level-triggered on both directions: replies larger than one read must
 * not stall, and add/del must use the same flags (see epoll_del_event) */

static void
ngx_http_im_redis_add_read(void *data)
{
    ngx_connection_t  *c = data;

    if (!c->read->active) {
        (void) ngx_add_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_im_redis_del_read(void *data)
{
    ngx_connection_t  *c = data;

    if (c->read->active) {
        (void) ngx_del_event(c->read, NGX_READ_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_im_redis_add_write(void *data)
{
    ngx_connection_t  *c = data;

    if (!c->write->active) {
        (void) ngx_add_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_im_redis_del_write(void *data)
{
    ngx_connection_t  *c = data;

    if (c->write->active) {
        (void) ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_LEVEL_EVENT);
    }
}


static void
ngx_http_im_redis_cleanup(void *data)
{
    ngx_connection_t  *c = data;

    if (c == NULL) {
        return;
    }

    ngx_http_im_redis_del_read(c);
    ngx_http_im_redis_del_write(c);

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    /* hiredis closes the fd; a stale event in this epoll batch sees -1 */
    ngx_free_connection(c);
    c->fd = (ngx_socket_t) -1;
}


static void
ngx_http_im_redis_read_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = ev->data;
    redisAsyncHandleRead(c->data);
}


static void
ngx_http_im_redis_write_handler(ngx_event_t *ev)
{
    ngx_connection_t  *c;

    c = ev->data;
    redisAsyncHandleWrite(c->data);
}
