
/*
 * ngx_im: hiredis async contexts driven by the nginx event loop.
 *
 * Each worker keeps two connections: one for commands and scripts, one
 * for pub/sub.  hiredis owns the socket; the nginx connection only wraps
 * the fd for event notification and is freed, never closed, in the
 * cleanup hook.  Event handlers return as soon as hiredis returns, since
 * hiredis may have freed the context (and through cleanup, the nginx
 * connection) inside the call.
 */


#include <openssl/sha.h>

#include "ngx_http_im_redis.h"
#include "ngx_http_im_scripts.h"


#define NGX_HTTP_IM_REDIS_DOWN        0
#define NGX_HTTP_IM_REDIS_CONNECTING  1
#define NGX_HTTP_IM_REDIS_READY       2

#define NGX_HTTP_IM_BACKOFF_MIN       100
#define NGX_HTTP_IM_BACKOFF_MAX       5000


typedef struct {
    redisAsyncContext         *ac;
    ngx_uint_t                 state;
    ngx_uint_t                 subscriber;
    ngx_uint_t                 pending;
    ngx_uint_t                 connects;
    ngx_msec_t                 backoff;
    ngx_event_t                reconnect;   /* also the connect timeout */
    ngx_event_t                timeout;     /* a reply is overdue */
    const char                *name;
} ngx_http_im_redis_t;


/* a command waiting for its reply */
typedef struct {
    ngx_http_im_redis_pt       handler;
    void                      *data;
    char                      *cmd;        /* formatted EVALSHA, for */
    int                        len;        /* a retry after NOSCRIPT */
    ngx_uint_t                 script;
} ngx_http_im_redis_op_t;


typedef struct {
    const char                *body;
    size_t                     len;
    char                       sha[2 * SHA_DIGEST_LENGTH + 1];
} ngx_http_im_script_t;


static void ngx_http_im_redis_connect(ngx_http_im_redis_t *rd);
static void ngx_http_im_redis_schedule(ngx_http_im_redis_t *rd);
static void ngx_http_im_redis_reconnect_handler(ngx_event_t *ev);
static void ngx_http_im_redis_timeout_handler(ngx_event_t *ev);
static void ngx_http_im_redis_connected(const redisAsyncContext *ac,
    int status);
static void ngx_http_im_redis_disconnected(const redisAsyncContext *ac,
    int status);
static void ngx_http_im_redis_ready_up(ngx_http_im_redis_t *rd);
static ngx_int_t ngx_http_im_redis_attach(redisAsyncContext *ac,
    ngx_log_t *log);
static void ngx_http_im_redis_add_read(void *data);
static void ngx_http_im_redis_del_read(void *data);
static void ngx_http_im_redis_add_write(void *data);
static void ngx_http_im_redis_del_write(void *data);
static void ngx_http_im_redis_cleanup(void *data);
static void ngx_http_im_redis_read_handler(ngx_event_t *ev);
static void ngx_http_im_redis_write_handler(ngx_event_t *ev);
static void ngx_http_im_redis_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static ngx_int_t ngx_http_im_redis_retry(ngx_http_im_redis_op_t *op);
static void ngx_http_im_redis_sub_reply(redisAsyncContext *ac, void *r,
    void *privdata);
static ngx_int_t ngx_http_im_redis_sub_command(const char *cmd,
    ngx_str_t *channel);
static void ngx_http_im_redis_sub_alive(void);
static void ngx_http_im_redis_arm_timeout(ngx_http_im_redis_t *rd);
static void ngx_http_im_redis_free_ctx(ngx_http_im_redis_t *rd);


static ngx_http_im_redis_t            ngx_http_im_redis_cmd;
static ngx_http_im_redis_t            ngx_http_im_redis_sub;
static ngx_uint_t                     ngx_http_im_redis_exiting;
static ngx_http_im_redis_handlers_t  *ngx_http_im_redis_up;
static ngx_str_t                      ngx_http_im_redis_heartbeat;

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
    { ngx_http_im_lua_push_job, sizeof(ngx_http_im_lua_push_job) - 1, "" },
    { ngx_http_im_lua_seq_seed, sizeof(ngx_http_im_lua_seq_seed) - 1, "" },
    { ngx_http_im_lua_persist_take,
      sizeof(ngx_http_im_lua_persist_take) - 1, "" },
    { ngx_http_im_lua_persist_done,
      sizeof(ngx_http_im_lua_persist_done) - 1, "" }
};


/*
 * Starts both connections of this worker; failures to connect are retried
 * on a timer, so this only fails on allocation errors.
 */
ngx_int_t
ngx_http_im_redis_init(ngx_cycle_t *cycle,
    ngx_http_im_redis_handlers_t *handlers, ngx_str_t *heartbeat)
{
    u_char                 md[SHA_DIGEST_LENGTH];
    ngx_uint_t             i;
    ngx_http_im_redis_t   *rds[2];

    for (i = 0; i < NGX_HTTP_IM_LUA_N; i++) {
        SHA1((u_char *) ngx_http_im_scripts[i].body,
             ngx_http_im_scripts[i].len, md);
        ngx_hex_dump((u_char *) ngx_http_im_scripts[i].sha, md,
                     SHA_DIGEST_LENGTH);
    }

    rds[0] = &ngx_http_im_redis_cmd;
    rds[1] = &ngx_http_im_redis_sub;
    ngx_http_im_redis_exiting = 0;
    ngx_http_im_redis_up = handlers;
    ngx_http_im_redis_heartbeat = *heartbeat;

    for (i = 0; i < 2; i++) {
        ngx_memzero(rds[i], sizeof(ngx_http_im_redis_t));
        rds[i]->subscriber = i;
        rds[i]->name = i ? "subscriber" : "command";
        rds[i]->backoff = NGX_HTTP_IM_BACKOFF_MIN;

        rds[i]->reconnect.handler = ngx_http_im_redis_reconnect_handler;
        rds[i]->reconnect.data = rds[i];
        rds[i]->reconnect.log = cycle->log;
        rds[i]->reconnect.cancelable = 1;

        rds[i]->timeout.handler = ngx_http_im_redis_timeout_handler;
        rds[i]->timeout.data = rds[i];
        rds[i]->timeout.log = cycle->log;
        rds[i]->timeout.cancelable = 1;

        ngx_http_im_redis_connect(rds[i]);
    }

    return NGX_OK;
}


/* Frees both contexts; every pending handler runs with a NULL reply. */
void
ngx_http_im_redis_exit(void)
{
    ngx_http_im_redis_exiting = 1;
    ngx_http_im_redis_free_ctx(&ngx_http_im_redis_cmd);
    ngx_http_im_redis_free_ctx(&ngx_http_im_redis_sub);
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


ngx_int_t
ngx_http_im_redis_ready(void)
{
    return ngx_http_im_redis_cmd.state == NGX_HTTP_IM_REDIS_READY;
}


ngx_int_t
ngx_http_im_redis_sub_ready(void)
{
    return ngx_http_im_redis_sub.state == NGX_HTTP_IM_REDIS_READY;
}


static void
ngx_http_im_redis_connect(ngx_http_im_redis_t *rd)
{
    char                      host[NGX_HTTP_IM_REDIS_HOST_MAX];
    ngx_log_t                *log;
    redisAsyncContext        *ac;
    ngx_http_im_main_conf_t  *imcf;

    imcf = ngx_http_im_worker->imcf;
    log = ngx_http_im_worker->log;

    if (imcf->redis_host.len >= sizeof(host)) {
        /* cannot happen: checked at configuration time */
        ngx_log_error(NGX_LOG_ALERT, log, 0, "im redis: address too long");
        return;
    }

    ngx_memcpy(host, imcf->redis_host.data, imcf->redis_host.len);
    host[imcf->redis_host.len] = '\0';

    /* the host is an address resolved at configuration time, so no
     * name lookup can block here */
    if (imcf->redis_port) {
        ac = redisAsyncConnect(host, (int) imcf->redis_port);

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
                      "im redis %s connect to \"%V\" failed: %s",
                      rd->name, &imcf->redis_host, ac->errstr);
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

    ngx_add_timer(&rd->reconnect, imcf->redis_connect_timeout);
}


static void
ngx_http_im_redis_schedule(ngx_http_im_redis_t *rd)
{
    if (ngx_http_im_redis_exiting || ngx_exiting || ngx_terminate) {
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
                      "im redis %s connect timed out", rd->name);
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
                  "im redis %s: no reply for %M ms, %ui commands pending, "
                  "reconnecting", rd->name,
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
                      "im redis %s connect to \"%V\" failed: %s", rd->name,
                      &ngx_http_im_worker->imcf->redis_host, ac->errstr);

        /* hiredis frees the context after this callback */
        rd->ac = NULL;
        rd->state = NGX_HTTP_IM_REDIS_DOWN;
        ngx_http_im_redis_schedule(rd);
        return;
    }

    ngx_log_error(NGX_LOG_INFO, ngx_http_im_worker->log, 0,
                  "im redis %s connected", rd->name);

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

    if (rd->subscriber) {
        /* the worker channel keeps the context subscribed to at least one
         * channel at all times: hiredis 0.14 asserts if a subscribe reply
         * arrives after the subscription count dropped to zero */
        ngx_http_im_redis_subscribe(&ngx_http_im_redis_heartbeat);
        ngx_http_im_redis_up->up(1);
        return;
    }

    /* scripts go first in the pipeline, so EVALSHA finds them */
    argv[0] = "SCRIPT";
    argvlen[0] = 6;
    argv[1] = "LOAD";
    argvlen[1] = 4;

    for (i = 0; i < NGX_HTTP_IM_LUA_N; i++) {
        argv[2] = ngx_http_im_scripts[i].body;
        argvlen[2] = ngx_http_im_scripts[i].len;
        (void) ngx_http_im_redis_command(NULL, NULL, 3, argv, argvlen);
    }

    ngx_http_im_redis_up->up(0);
}


static void
ngx_http_im_redis_disconnected(const redisAsyncContext *ac, int status)
{
    ngx_http_im_redis_t  *rd;

    rd = ac->data;

    if (!ngx_http_im_redis_exiting) {
        ngx_log_error(NGX_LOG_ERR, ngx_http_im_worker->log, 0,
                      "im redis %s disconnected: %s", rd->name,
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


ngx_int_t
ngx_http_im_redis_command(ngx_http_im_redis_pt handler, void *data,
    int argc, const char **argv, const size_t *argvlen)
{
    char                    *cmd;
    int                      len;
    ngx_http_im_redis_t     *rd;
    ngx_http_im_redis_op_t  *op;

    rd = &ngx_http_im_redis_cmd;

    if (rd->state != NGX_HTTP_IM_REDIS_READY
        || rd->pending >= ngx_http_im_worker->imcf->redis_max_pending)
    {
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_REDIS_BUSY);
        return NGX_DECLINED;
    }

    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) {
        return NGX_DECLINED;
    }

    op = ngx_alloc(sizeof(ngx_http_im_redis_op_t), ngx_cycle->log);
    if (op == NULL) {
        redisFreeCommand(cmd);
        return NGX_DECLINED;
    }

    op->handler = handler;
    op->data = data;
    op->cmd = NULL;
    op->len = 0;
    op->script = NGX_HTTP_IM_LUA_N;

    if (redisAsyncFormattedCommand(rd->ac, ngx_http_im_redis_reply, op,
                                   cmd, len)
        != REDIS_OK)
    {
        redisFreeCommand(cmd);
        ngx_free(op);
        return NGX_DECLINED;
    }

    redisFreeCommand(cmd);

    rd->pending++;
    ngx_http_im_redis_arm_timeout(rd);

    return NGX_OK;
}


ngx_int_t
ngx_http_im_redis_script(ngx_uint_t script, ngx_http_im_redis_pt handler,
    void *data, int nkeys, int argc, const char **argv,
    const size_t *argvlen)
{
    int                      i, len;
    char                    *cmd, nk[NGX_INT_T_LEN];
    size_t                  *avlen, avlen_small[32];
    const char             **av, *av_small[32];
    ngx_http_im_redis_t     *rd;
    ngx_http_im_redis_op_t  *op;

    rd = &ngx_http_im_redis_cmd;

    if (rd->state != NGX_HTTP_IM_REDIS_READY
        || rd->pending >= ngx_http_im_worker->imcf->redis_max_pending)
    {
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_REDIS_BUSY);
        return NGX_DECLINED;
    }

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

    op = ngx_alloc(sizeof(ngx_http_im_redis_op_t), ngx_cycle->log);
    if (op == NULL) {
        redisFreeCommand(cmd);
        return NGX_DECLINED;
    }

    op->handler = handler;
    op->data = data;
    op->cmd = cmd;
    op->len = len;
    op->script = script;

    if (redisAsyncFormattedCommand(rd->ac, ngx_http_im_redis_reply, op,
                                   cmd, len)
        != REDIS_OK)
    {
        redisFreeCommand(cmd);
        ngx_free(op);
        return NGX_DECLINED;
    }

    rd->pending++;
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

    rd = &ngx_http_im_redis_cmd;
    op = privdata;
    reply = r;

    if (rd->pending) {
        rd->pending--;
    }

    if (rd->timeout.timer_set) {
        ngx_del_timer(&rd->timeout);
    }

    if (rd->pending && rd->ac) {
        ngx_http_im_redis_arm_timeout(rd);
    }

    if (reply && reply->type == REDIS_REPLY_ERROR && op->cmd
        && ngx_strncmp(reply->str, "NOSCRIPT", 8) == 0
        && ngx_http_im_redis_retry(op) == NGX_OK)
    {
        return;
    }

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

    if (op->cmd) {
        redisFreeCommand(op->cmd);
    }

    ngx_free(op);
}


/*
 * Someone flushed the script cache: resend the command as EVAL with the
 * script body, which also caches the script again.  The formatted
 * EVALSHA is "*N\r\n$7\r\nEVALSHA\r\n$40\r\n<sha>\r\n<rest>".
 */
static ngx_int_t
ngx_http_im_redis_retry(ngx_http_im_redis_op_t *op)
{
    u_char                *p, *rest, *cmd;
    size_t                 len, nlen;
    ngx_http_im_script_t  *sc;
    ngx_http_im_redis_t   *rd;

    rd = &ngx_http_im_redis_cmd;
    sc = &ngx_http_im_scripts[op->script];

    if (rd->state != NGX_HTTP_IM_REDIS_READY) {
        return NGX_DECLINED;
    }

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

    if (redisAsyncFormattedCommand(rd->ac, ngx_http_im_redis_reply, op,
                                   (char *) cmd, p - cmd)
        != REDIS_OK)
    {
        ngx_free(cmd);
        return NGX_DECLINED;
    }

    ngx_free(cmd);

    /* do not loop: a second NOSCRIPT reaches the handler */
    redisFreeCommand(op->cmd);
    op->cmd = NULL;

    rd->pending++;
    ngx_http_im_redis_arm_timeout(rd);

    return NGX_OK;
}


ngx_int_t
ngx_http_im_redis_subscribe(ngx_str_t *channel)
{
    return ngx_http_im_redis_sub_command("SUBSCRIBE", channel);
}


ngx_int_t
ngx_http_im_redis_unsubscribe(ngx_str_t *channel)
{
    return ngx_http_im_redis_sub_command("UNSUBSCRIBE", channel);
}


static ngx_int_t
ngx_http_im_redis_sub_command(const char *cmd, ngx_str_t *channel)
{
    const char           *argv[2];
    size_t                argvlen[2];
    ngx_http_im_redis_t  *rd;

    rd = &ngx_http_im_redis_sub;

    if (rd->state != NGX_HTTP_IM_REDIS_READY) {
        return NGX_DECLINED;
    }

    argv[0] = cmd;
    argvlen[0] = ngx_strlen(cmd);
    argv[1] = (const char *) channel->data;
    argvlen[1] = channel->len;

    if (redisAsyncCommandArgv(rd->ac, ngx_http_im_redis_sub_reply, NULL, 2,
                              argv, argvlen)
        != REDIS_OK)
    {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_im_redis_sub_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    ngx_str_t    kind, channel;
    redisReply  *reply;

    reply = r;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 3
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        return;
    }

    kind.data = (u_char *) reply->element[0]->str;
    kind.len = reply->element[0]->len;
    channel.data = (u_char *) reply->element[1]->str;
    channel.len = reply->element[1]->len;

    if (kind.len == 7 && ngx_strncmp(kind.data, "message", 7) == 0) {
        if (reply->element[2]->type == REDIS_REPLY_STRING) {
            ngx_http_im_redis_up->message(&channel,
                                    (u_char *) reply->element[2]->str,
                                    reply->element[2]->len);
        }
        return;
    }

    if (kind.len == 9 && ngx_strncmp(kind.data, "subscribe", 9) == 0) {
        if (channel.len == ngx_http_im_redis_heartbeat.len
            && ngx_strncmp(channel.data, ngx_http_im_redis_heartbeat.data,
                           channel.len) == 0)
        {
            ngx_http_im_redis_sub_alive();
            return;
        }

        ngx_http_im_redis_up->subscribed(&channel, 1);
        return;
    }

    if (kind.len == 11 && ngx_strncmp(kind.data, "unsubscribe", 11) == 0) {
        ngx_http_im_redis_up->subscribed(&channel, 0);
    }
}


/* the hiredis event-library hooks */


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


/*
 * A heartbeat on the subscriber connection: a silent network partition
 * would otherwise leave it "connected" and deaf.  The reply timeout
 * applies as on the command connection.  It is a SUBSCRIBE of the worker
 * channel, which is subscribed already: hiredis 0.14 drops the reply of a
 * PING on a subscribed connection without calling its callback.
 */
void
ngx_http_im_redis_sub_ping(void)
{
    ngx_http_im_redis_t  *rd;

    rd = &ngx_http_im_redis_sub;

    if (rd->state != NGX_HTTP_IM_REDIS_READY || rd->pending) {
        return;
    }

    if (ngx_http_im_redis_subscribe(&ngx_http_im_redis_heartbeat) == NGX_OK) {
        rd->pending++;
        ngx_http_im_redis_arm_timeout(rd);
    }
}


/* the worker channel's (re)subscribe answered: the connection is alive */
static void
ngx_http_im_redis_sub_alive(void)
{
    ngx_http_im_redis_t  *rd;

    rd = &ngx_http_im_redis_sub;

    if (rd->pending) {
        rd->pending--;
    }

    if (rd->pending == 0 && rd->timeout.timer_set) {
        ngx_del_timer(&rd->timeout);
    }
}
