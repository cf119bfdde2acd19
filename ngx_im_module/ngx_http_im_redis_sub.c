
/*
 * ngx_im: a pub/sub connection to one Redis node, RESP2 over an nginx
 * connection, parsed by hiredis's reader alone.
 *
 * Commands go out as RESP arrays from one output buffer; each is also
 * queued in a FIFO of commands in flight, and every reply that is not a
 * message (a (s)(un)subscribe answer, a pong, an error) answers the FIFO
 * head.  Redis may also send an sunsubscribe by itself when a slot moves:
 * that one matches no unsubscribe at the head and is passed on as such.
 *
 * Handlers may free the object: every upward call sets "entered", and a
 * free() inside it only closes the connection and sets "freed"; the code
 * that made the call frees the memory and returns at once.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_event_connect.h>

#include "ngx_http_im_redis_sub.h"
#include "ngx_http_im_slot.h"


#define NGX_HTTP_IM_REDIS_SUB_DOWN         0
#define NGX_HTTP_IM_REDIS_SUB_CONNECTING   1
#define NGX_HTTP_IM_REDIS_SUB_READY        2

/* the kinds of commands in flight */
#define NGX_HTTP_IM_REDIS_SUB_SUBSCRIBE    0
#define NGX_HTTP_IM_REDIS_SUB_UNSUBSCRIBE  1
#define NGX_HTTP_IM_REDIS_SUB_PING         2
#define NGX_HTTP_IM_REDIS_SUB_ANY          3     /* to match any head */

#define NGX_HTTP_IM_REDIS_SUB_BACKOFF_MIN  100
#define NGX_HTTP_IM_REDIS_SUB_BACKOFF_MAX  5000

#define NGX_HTTP_IM_REDIS_SUB_CMDS_MAX     65536
#define NGX_HTTP_IM_REDIS_SUB_OUT_MAX      (4 * 1024 * 1024)
#define NGX_HTTP_IM_REDIS_SUB_OUT_MIN      4096
#define NGX_HTTP_IM_REDIS_SUB_OUT_KEEP     16384    /* kept while idle */
#define NGX_HTTP_IM_REDIS_SUB_REPLY_MAX    (16 * 1024 * 1024)
#define NGX_HTTP_IM_REDIS_SUB_RECV         16384
/* reads of one turn of the event loop (as hiredis: one buffer each) */
#define NGX_HTTP_IM_REDIS_SUB_READS        1


/* a command in flight; the channel's bytes follow the struct */
typedef struct {
    ngx_queue_t                     queue;
    ngx_uint_t                      kind;
    ngx_msec_t                      sent;       /* when it was queued */
    ngx_str_t                       channel;
} ngx_http_im_redis_sub_cmd_t;


struct ngx_http_im_redis_sub_s {
    ngx_http_im_redis_sub_conf_t    conf;       /* host: our copy */
    ngx_uint_t                      state;
    ngx_msec_t                      backoff;

    ngx_peer_connection_t           peer;
    ngx_sockaddr_t                  sockaddr;
    ngx_str_t                       name;       /* host:port, for logs */
    u_char                          text[NGX_SOCKADDR_STRLEN];
    ngx_log_t                       log;        /* with our action */

    redisReader                    *reader;
    size_t                          partial;    /* of the reply read */

    ngx_queue_t                     cmds;       /* oldest first */
    ngx_uint_t                      ncmds;
    ngx_buf_t                       out;        /* not sent yet */

    ngx_event_t                     retry;      /* backoff, connect */
    ngx_event_t                     timeout;    /* the oldest command's */
    ngx_event_t                     ping;

    unsigned                        entered:1;  /* in a handler */
    unsigned                        freed:1;    /* by that handler */
};


static ngx_int_t ngx_http_im_redis_sub_address(ngx_http_im_redis_sub_t *sub);
static ngx_int_t ngx_http_im_redis_sub_address_unix(
    ngx_http_im_redis_sub_t *sub);
static ngx_int_t ngx_http_im_redis_sub_address_inet(
    ngx_http_im_redis_sub_t *sub);
static void ngx_http_im_redis_sub_connect(ngx_http_im_redis_sub_t *sub);
static ngx_int_t ngx_http_im_redis_sub_unix_exists(
    ngx_http_im_redis_sub_t *sub);
static ngx_int_t ngx_http_im_redis_sub_connected(
    ngx_http_im_redis_sub_t *sub);
static void ngx_http_im_redis_sub_schedule(ngx_http_im_redis_sub_t *sub);
static void ngx_http_im_redis_sub_close(ngx_http_im_redis_sub_t *sub);
static void ngx_http_im_redis_sub_lost(ngx_http_im_redis_sub_t *sub);
static ngx_int_t ngx_http_im_redis_sub_leave(ngx_http_im_redis_sub_t *sub);
static void ngx_http_im_redis_sub_retry_handler(ngx_event_t *ev);
static void ngx_http_im_redis_sub_timeout_handler(ngx_event_t *ev);
static void ngx_http_im_redis_sub_ping_handler(ngx_event_t *ev);
static void ngx_http_im_redis_sub_read_handler(ngx_event_t *rev);
static void ngx_http_im_redis_sub_write_handler(ngx_event_t *wev);
static ngx_int_t ngx_http_im_redis_sub_flush(ngx_http_im_redis_sub_t *sub);
static ngx_int_t ngx_http_im_redis_sub_feed(ngx_http_im_redis_sub_t *sub,
    u_char *buf, size_t n);
static ngx_int_t ngx_http_im_redis_sub_reply(ngx_http_im_redis_sub_t *sub,
    redisReply *reply);
static ngx_int_t ngx_http_im_redis_sub_error_reply(
    ngx_http_im_redis_sub_t *sub, redisReply *reply);
static ngx_int_t ngx_http_im_redis_sub_on_message(
    ngx_http_im_redis_sub_t *sub, ngx_http_im_slot_push_t *push);
static ngx_int_t ngx_http_im_redis_sub_on_subscribe(
    ngx_http_im_redis_sub_t *sub, ngx_http_im_slot_push_t *push);
static ngx_int_t ngx_http_im_redis_sub_on_unsubscribe(
    ngx_http_im_redis_sub_t *sub, ngx_http_im_slot_push_t *push);
static ngx_int_t ngx_http_im_redis_sub_on_pong(ngx_http_im_redis_sub_t *sub);
static ngx_http_im_redis_sub_cmd_t *ngx_http_im_redis_sub_head(
    ngx_http_im_redis_sub_t *sub, ngx_uint_t kind,
    ngx_http_im_slot_push_t *push);
static void ngx_http_im_redis_sub_pop(ngx_http_im_redis_sub_t *sub,
    ngx_http_im_redis_sub_cmd_t *cmd);
static ngx_int_t ngx_http_im_redis_sub_queue(ngx_http_im_redis_sub_t *sub,
    ngx_uint_t kind, ngx_str_t *channel);
static u_char *ngx_http_im_redis_sub_reserve(ngx_http_im_redis_sub_t *sub,
    size_t size);
static u_char *ngx_http_im_redis_sub_log_error(ngx_log_t *log, u_char *buf,
    size_t len);


/* by [sharded][kind] */
static ngx_str_t  ngx_http_im_redis_sub_names[2][3] = {
    { ngx_string("SUBSCRIBE"), ngx_string("UNSUBSCRIBE"),
      ngx_string("PING") },
    { ngx_string("SSUBSCRIBE"), ngx_string("SUNSUBSCRIBE"),
      ngx_string("PING") }
};


/*
 * Copies conf, builds the socket address from the IP literal (or unix
 * path) and starts connecting; no handler runs from here.  Returns NULL
 * when out of memory or when the address is unusable (logged at ALERT:
 * the configuration should have refused it).
 */
ngx_http_im_redis_sub_t *
ngx_http_im_redis_sub_create(ngx_http_im_redis_sub_conf_t *conf)
{
    ngx_http_im_redis_sub_t  *sub;

    sub = ngx_calloc(sizeof(ngx_http_im_redis_sub_t) + conf->host.len,
                     conf->log);
    if (sub == NULL) {
        return NULL;
    }

    sub->conf = *conf;
    sub->conf.host.data = (u_char *) &sub[1];
    ngx_memcpy(sub->conf.host.data, conf->host.data, conf->host.len);

    sub->log = *conf->log;
    sub->log.handler = ngx_http_im_redis_sub_log_error;
    sub->log.data = sub;
    sub->log.action = NULL;

    if (ngx_http_im_redis_sub_address(sub) != NGX_OK) {
        ngx_free(sub);
        return NULL;
    }

    sub->backoff = NGX_HTTP_IM_REDIS_SUB_BACKOFF_MIN;
    ngx_queue_init(&sub->cmds);

    sub->peer.sockaddr = &sub->sockaddr.sockaddr;
    sub->peer.name = &sub->name;
    sub->peer.get = ngx_event_get_peer;
    sub->peer.log = &sub->log;
    sub->peer.log_error = NGX_ERROR_ERR;

    sub->retry.handler = ngx_http_im_redis_sub_retry_handler;
    sub->timeout.handler = ngx_http_im_redis_sub_timeout_handler;
    sub->ping.handler = ngx_http_im_redis_sub_ping_handler;

    sub->retry.data = sub;
    sub->timeout.data = sub;
    sub->ping.data = sub;

    sub->retry.log = &sub->log;
    sub->timeout.log = &sub->log;
    sub->ping.log = &sub->log;

    sub->retry.cancelable = 1;
    sub->timeout.cancelable = 1;
    sub->ping.cancelable = 1;

    ngx_http_im_redis_sub_connect(sub);

    return sub;
}


/* sockaddr, socklen and name from conf's host and port */

static ngx_int_t
ngx_http_im_redis_sub_address(ngx_http_im_redis_sub_t *sub)
{
    ngx_int_t  rc;

    if (sub->conf.port == 0) {
        rc = ngx_http_im_redis_sub_address_unix(sub);

    } else {
        rc = ngx_http_im_redis_sub_address_inet(sub);
    }

    if (rc != NGX_OK) {
        return rc;
    }

    sub->name.data = sub->text;
    sub->name.len = ngx_sock_ntop(&sub->sockaddr.sockaddr, sub->peer.socklen,
                                  sub->text, NGX_SOCKADDR_STRLEN, 1);

    return NGX_OK;
}


static ngx_int_t
ngx_http_im_redis_sub_address_unix(ngx_http_im_redis_sub_t *sub)
{
    ngx_str_t  *host;

    host = &sub->conf.host;

#if (NGX_HAVE_UNIX_DOMAIN)

    if (host->len > 0
        && host->len < sizeof(sub->sockaddr.sockaddr_un.sun_path))
    {
        sub->sockaddr.sockaddr_un.sun_family = AF_UNIX;
        ngx_memcpy(sub->sockaddr.sockaddr_un.sun_path, host->data,
                   host->len);
        sub->peer.socklen = sizeof(struct sockaddr_un);

        return NGX_OK;
    }

#endif

    ngx_log_error(NGX_LOG_ALERT, sub->conf.log, 0,
                  "im redis subscriber: bad unix socket \"%V\"", host);

    return NGX_ERROR;
}


/* an IP literal, without a name lookup; the pool lives for the parse */

static ngx_int_t
ngx_http_im_redis_sub_address_inet(ngx_http_im_redis_sub_t *sub)
{
    u_char      *p;
    size_t       len;
    ngx_int_t    rc;
    ngx_str_t   *host;
    ngx_addr_t   addr;
    ngx_pool_t  *pool;

    host = &sub->conf.host;
    p = host->data;
    len = host->len;

    /* "[::1]" as well as "::1" */
    if (len > 2 && p[0] == '[' && p[len - 1] == ']') {
        p++;
        len -= 2;
    }

    pool = ngx_create_pool(512, sub->conf.log);
    if (pool == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_parse_addr(pool, &addr, p, len);

    if (rc != NGX_OK || sub->conf.port < 1 || sub->conf.port > 65535
        || addr.socklen > sizeof(ngx_sockaddr_t))
    {
        ngx_destroy_pool(pool);
        ngx_log_error(NGX_LOG_ALERT, sub->conf.log, 0,
                      "im redis subscriber: bad address \"%V:%i\"",
                      host, sub->conf.port);
        return NGX_ERROR;
    }

    ngx_memcpy(&sub->sockaddr, addr.sockaddr, addr.socklen);
    sub->peer.socklen = addr.socklen;
    ngx_destroy_pool(pool);

    ngx_inet_set_port(&sub->sockaddr.sockaddr, (in_port_t) sub->conf.port);

    return NGX_OK;
}


/*
 * Closes the connection and frees the object, with every command in
 * flight; no handler runs.  Called from a handler of its own, it leaves
 * the memory to the code that called the handler.
 */
void
ngx_http_im_redis_sub_free(ngx_http_im_redis_sub_t *sub)
{
    ngx_http_im_redis_sub_close(sub);

    if (sub->retry.timer_set) {
        ngx_del_timer(&sub->retry);
    }

    if (sub->entered) {
        sub->freed = 1;
        return;
    }

    ngx_free(sub);
}


/* 1 from the connect to the loss of the connection */
ngx_int_t
ngx_http_im_redis_sub_is_ready(ngx_http_im_redis_sub_t *sub)
{
    return sub->state == NGX_HTTP_IM_REDIS_SUB_READY;
}


/*
 * Queue (S)SUBSCRIBE or (S)UNSUBSCRIBE of one channel; its answer comes
 * through a handler later, never from this call.  NGX_DECLINED when not
 * ready, at a bound, or out of memory.
 */
ngx_int_t
ngx_http_im_redis_sub_subscribe(ngx_http_im_redis_sub_t *sub,
    ngx_str_t *channel)
{
    return ngx_http_im_redis_sub_queue(sub, NGX_HTTP_IM_REDIS_SUB_SUBSCRIBE,
                                       channel);
}


ngx_int_t
ngx_http_im_redis_sub_unsubscribe(ngx_http_im_redis_sub_t *sub,
    ngx_str_t *channel)
{
    return ngx_http_im_redis_sub_queue(sub,
                                       NGX_HTTP_IM_REDIS_SUB_UNSUBSCRIBE,
                                       channel);
}


/* ----------------------------------------------------------------------
 * connecting and losing the connection
 */


static void
ngx_http_im_redis_sub_connect(ngx_http_im_redis_sub_t *sub)
{
    ngx_int_t          rc;
    ngx_connection_t  *c;

    if (ngx_http_im_redis_sub_unix_exists(sub) != NGX_OK) {
        ngx_http_im_redis_sub_schedule(sub);
        return;
    }

    sub->reader = redisReaderCreate();
    if (sub->reader == NULL) {
        ngx_log_error(NGX_LOG_ALERT, &sub->log, 0,
                      "im redis subscriber %V: out of memory", &sub->name);
        ngx_http_im_redis_sub_schedule(sub);
        return;
    }

    sub->log.action = "connecting to redis";
    sub->peer.tries = 1;

    rc = ngx_event_connect_peer(&sub->peer);

    if (rc != NGX_OK && rc != NGX_AGAIN) {
        /* ngx_event_connect_peer() logged why, with the address */
        ngx_http_im_redis_sub_close(sub);
        ngx_http_im_redis_sub_schedule(sub);
        return;
    }

    c = sub->peer.connection;
    c->data = sub;
    c->read->handler = ngx_http_im_redis_sub_read_handler;
    c->write->handler = ngx_http_im_redis_sub_write_handler;

    sub->state = NGX_HTTP_IM_REDIS_SUB_CONNECTING;

    if (sub->conf.connect_timeout) {
        ngx_add_timer(&sub->retry, sub->conf.connect_timeout);
    }

    if (rc == NGX_OK) {
        /* connected at once (unix sockets do): the write handler says
         * so, never our caller's stack */
        ngx_post_event(c->write, &ngx_posted_events);
    }
}


/*
 * A unix socket's file is gone while Redis is down; connect(2) would
 * fail with ENOENT, which ngx_event_connect_peer() logs at CRIT.
 */

static ngx_int_t
ngx_http_im_redis_sub_unix_exists(ngx_http_im_redis_sub_t *sub)
{
#if (NGX_HAVE_UNIX_DOMAIN)
    ngx_file_info_t  fi;

    if (sub->sockaddr.sockaddr.sa_family == AF_UNIX
        && ngx_file_info(sub->sockaddr.sockaddr_un.sun_path, &fi)
           == NGX_FILE_ERROR)
    {
        ngx_log_error(NGX_LOG_ERR, &sub->log, ngx_errno,
                      "im redis subscriber %V connect failed", &sub->name);
        return NGX_DECLINED;
    }
#endif

    return NGX_OK;
}


/*
 * The connect(2) in progress ended: on success the connection is ready
 * and the creator hears of it.  NGX_OK; NGX_ERROR when it failed (and a
 * retry is scheduled); NGX_DONE when the state handler freed sub.
 */

static ngx_int_t
ngx_http_im_redis_sub_connected(ngx_http_im_redis_sub_t *sub)
{
    int                err;
    socklen_t          len;
    ngx_connection_t  *c;

    c = sub->peer.connection;

    if (sub->retry.timer_set) {
        ngx_del_timer(&sub->retry);
    }

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    if (err) {
        ngx_log_error(NGX_LOG_ERR, &sub->log, err,
                      "im redis subscriber %V connect failed", &sub->name);
        ngx_http_im_redis_sub_close(sub);
        ngx_http_im_redis_sub_schedule(sub);
        return NGX_ERROR;
    }

    sub->state = NGX_HTTP_IM_REDIS_SUB_READY;
    sub->log.action = NULL;

    ngx_log_error(NGX_LOG_INFO, &sub->log, 0,
                  "im redis subscriber connected to %V", &sub->name);

    if (sub->conf.ping) {
        ngx_add_timer(&sub->ping, sub->conf.ping);
    }

    sub->entered = 1;
    sub->conf.handlers->state(sub->conf.data, 1);

    return ngx_http_im_redis_sub_leave(sub);
}


/* the next connect after the backoff, unless the worker is exiting */

static void
ngx_http_im_redis_sub_schedule(ngx_http_im_redis_sub_t *sub)
{
    if (ngx_exiting || ngx_terminate || ngx_quit) {
        return;
    }

    if (sub->retry.timer_set) {
        ngx_del_timer(&sub->retry);
    }

    ngx_add_timer(&sub->retry, sub->backoff);

    sub->backoff *= 2;

    if (sub->backoff > NGX_HTTP_IM_REDIS_SUB_BACKOFF_MAX) {
        sub->backoff = NGX_HTTP_IM_REDIS_SUB_BACKOFF_MAX;
    }
}


/* back to DOWN: everything of the connection goes, the retry timer stays */

static void
ngx_http_im_redis_sub_close(ngx_http_im_redis_sub_t *sub)
{
    ngx_queue_t  *q;

    if (sub->peer.connection) {
        ngx_close_connection(sub->peer.connection);
        sub->peer.connection = NULL;
    }

    if (sub->reader) {
        redisReaderFree(sub->reader);
        sub->reader = NULL;
    }

    while (!ngx_queue_empty(&sub->cmds)) {
        q = ngx_queue_head(&sub->cmds);
        ngx_queue_remove(q);
        ngx_free(ngx_queue_data(q, ngx_http_im_redis_sub_cmd_t, queue));
    }

    sub->ncmds = 0;
    sub->partial = 0;

    if (sub->out.start) {
        ngx_free(sub->out.start);
    }

    ngx_memzero(&sub->out, sizeof(ngx_buf_t));

    if (sub->timeout.timer_set) {
        ngx_del_timer(&sub->timeout);
    }

    if (sub->ping.timer_set) {
        ngx_del_timer(&sub->ping);
    }

    sub->state = NGX_HTTP_IM_REDIS_SUB_DOWN;
    sub->log.action = NULL;
}


/*
 * The connection broke (error, EOF, timeout, a reply we cannot take):
 * the commands in flight go without an answer, the creator hears "down"
 * once if it heard "up", and a reconnect is scheduled.  The caller must
 * return at once: sub may be gone.
 */

static void
ngx_http_im_redis_sub_lost(ngx_http_im_redis_sub_t *sub)
{
    ngx_uint_t  up;

    up = (sub->state == NGX_HTTP_IM_REDIS_SUB_READY);

    ngx_http_im_redis_sub_close(sub);

    if (up) {
        sub->entered = 1;
        sub->conf.handlers->state(sub->conf.data, 0);

        if (ngx_http_im_redis_sub_leave(sub) != NGX_OK) {
            return;
        }
    }

    ngx_http_im_redis_sub_schedule(sub);
}


/* after an upward call: NGX_DONE if the handler freed sub (now freed) */

static ngx_int_t
ngx_http_im_redis_sub_leave(ngx_http_im_redis_sub_t *sub)
{
    sub->entered = 0;

    if (sub->freed) {
        ngx_free(sub);
        return NGX_DONE;
    }

    return NGX_OK;
}


/* ----------------------------------------------------------------------
 * timers
 */


/* the backoff ended, or the connect timed out */

static void
ngx_http_im_redis_sub_retry_handler(ngx_event_t *ev)
{
    ngx_http_im_redis_sub_t  *sub;

    sub = ev->data;

    if (sub->state == NGX_HTTP_IM_REDIS_SUB_CONNECTING) {
        ngx_log_error(NGX_LOG_ERR, ev->log, NGX_ETIMEDOUT,
                      "im redis subscriber %V connect timed out",
                      &sub->name);
        ngx_http_im_redis_sub_close(sub);
        ngx_http_im_redis_sub_schedule(sub);
        return;
    }

    if (sub->state == NGX_HTTP_IM_REDIS_SUB_DOWN) {
        ngx_http_im_redis_sub_connect(sub);
    }
}


/*
 * Armed when a command is queued and none is timed; the head may have
 * been answered since, so it checks the present head.
 */

static void
ngx_http_im_redis_sub_timeout_handler(ngx_event_t *ev)
{
    ngx_msec_t                    waited;
    ngx_queue_t                  *q;
    ngx_http_im_redis_sub_t      *sub;
    ngx_http_im_redis_sub_cmd_t  *cmd;

    sub = ev->data;

    if (sub->state != NGX_HTTP_IM_REDIS_SUB_READY
        || ngx_queue_empty(&sub->cmds))
    {
        return;
    }

    q = ngx_queue_head(&sub->cmds);
    cmd = ngx_queue_data(q, ngx_http_im_redis_sub_cmd_t, queue);
    waited = ngx_current_msec - cmd->sent;

    if (waited < sub->conf.timeout) {
        ngx_add_timer(ev, sub->conf.timeout - waited);
        return;
    }

    ngx_log_error(NGX_LOG_ERR, ev->log, 0,
                  "im redis subscriber %V timed out: no reply for %M ms, "
                  "%ui commands in flight", &sub->name, waited, sub->ncmds);

    ngx_http_im_redis_sub_lost(sub);
}


/* a PING when nothing is in flight: the timeout then watches it */

static void
ngx_http_im_redis_sub_ping_handler(ngx_event_t *ev)
{
    ngx_http_im_redis_sub_t  *sub;

    sub = ev->data;

    if (sub->state != NGX_HTTP_IM_REDIS_SUB_READY) {
        return;
    }

    if (sub->ncmds == 0) {
        (void) ngx_http_im_redis_sub_queue(sub, NGX_HTTP_IM_REDIS_SUB_PING,
                                           NULL);
    }

    ngx_add_timer(ev, sub->conf.ping);
}


/* ----------------------------------------------------------------------
 * reading and writing
 */


static void
ngx_http_im_redis_sub_read_handler(ngx_event_t *rev)
{
    u_char                    buf[NGX_HTTP_IM_REDIS_SUB_RECV];
    ssize_t                   n;
    ngx_int_t                 rc;
    ngx_uint_t                reads;
    ngx_connection_t         *c;
    ngx_http_im_redis_sub_t  *sub;

    c = rev->data;
    sub = c->data;

    if (sub->state == NGX_HTTP_IM_REDIS_SUB_CONNECTING
        && ngx_http_im_redis_sub_connected(sub) != NGX_OK)
    {
        return;
    }

    for (reads = 0; rev->ready; reads++) {

        if (reads == NGX_HTTP_IM_REDIS_SUB_READS) {
            /*
             * The rest waits for the next turn of the event loop: the
             * pushes queued so far go out to the clients first, so a
             * burst of deliveries does not pile up in their send queues.
             */
            ngx_post_event(rev, &ngx_posted_events);
            break;
        }

        sub->log.action = "reading from redis";

        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0) {
            ngx_log_error(NGX_LOG_ERR, &sub->log, 0,
                          "im redis subscriber %V closed the connection",
                          &sub->name);
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_http_im_redis_sub_lost(sub);
            return;
        }

        rc = ngx_http_im_redis_sub_feed(sub, buf, n);

        if (rc == NGX_DONE) {
            return;
        }

        if (rc != NGX_OK) {
            ngx_http_im_redis_sub_lost(sub);
            return;
        }
    }

    sub->log.action = NULL;

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_im_redis_sub_lost(sub);
    }
}


static void
ngx_http_im_redis_sub_write_handler(ngx_event_t *wev)
{
    ngx_connection_t         *c;
    ngx_http_im_redis_sub_t  *sub;

    c = wev->data;
    sub = c->data;

    if (sub->state == NGX_HTTP_IM_REDIS_SUB_CONNECTING
        && ngx_http_im_redis_sub_connected(sub) != NGX_OK)
    {
        return;
    }

    if (ngx_http_im_redis_sub_flush(sub) != NGX_OK) {
        ngx_http_im_redis_sub_lost(sub);
    }
}


/* sends what the socket takes; the rest waits for the next write event */

static ngx_int_t
ngx_http_im_redis_sub_flush(ngx_http_im_redis_sub_t *sub)
{
    ssize_t            n;
    ngx_buf_t         *b;
    ngx_connection_t  *c;

    c = sub->peer.connection;
    b = &sub->out;

    sub->log.action = "writing to redis";

    while (b->pos < b->last) {
        n = c->send(c, b->pos, b->last - b->pos);

        if (n == NGX_ERROR) {
            return NGX_ERROR;
        }

        if (n == NGX_AGAIN || n == 0) {
            break;
        }

        b->pos += n;
    }

    sub->log.action = NULL;

    if (b->pos == b->last && b->start) {
        /* give a large buffer back once it is drained */
        if (b->end - b->start > NGX_HTTP_IM_REDIS_SUB_OUT_KEEP) {
            ngx_free(b->start);
            ngx_memzero(b, sizeof(ngx_buf_t));

        } else {
            b->pos = b->start;
            b->last = b->start;
        }
    }

    return ngx_handle_write_event(c->write, 0);
}


/*
 * Feeds what was read to the reader and dispatches each whole reply.
 * NGX_OK; NGX_ERROR when the connection is unusable (a protocol error, a
 * reply over NGX_HTTP_IM_REDIS_SUB_REPLY_MAX, a reply out of turn);
 * NGX_DONE when a handler freed sub.
 */

static ngx_int_t
ngx_http_im_redis_sub_feed(ngx_http_im_redis_sub_t *sub, u_char *buf,
    size_t n)
{
    void        *reply;
    ngx_int_t    rc;
    ngx_uint_t   got;

    if (redisReaderFeed(sub->reader, (const char *) buf, n) != REDIS_OK) {
        ngx_log_error(NGX_LOG_ALERT, &sub->log, 0,
                      "im redis subscriber %V: %s", &sub->name,
                      sub->reader->errstr);
        return NGX_ERROR;
    }

    sub->partial += n;
    got = 0;

    for ( ;; ) {
        if (redisReaderGetReply(sub->reader, &reply) != REDIS_OK) {
            ngx_log_error(NGX_LOG_ERR, &sub->log, 0,
                          "im redis subscriber %V: %s", &sub->name,
                          sub->reader->errstr);
            return NGX_ERROR;
        }

        if (reply == NULL) {
            break;
        }

        got = 1;

        rc = ngx_http_im_redis_sub_reply(sub, reply);
        freeReplyObject(reply);

        if (rc != NGX_OK) {
            return rc;
        }
    }

    /* the reply in progress began in this read at the latest: counting
     * from here is short by less than one read */
    if (got) {
        sub->partial = 0;
    }

    if (sub->partial > NGX_HTTP_IM_REDIS_SUB_REPLY_MAX) {
        ngx_log_error(NGX_LOG_ERR, &sub->log, 0,
                      "im redis subscriber %V sent a reply over %uz bytes",
                      &sub->name, (size_t) NGX_HTTP_IM_REDIS_SUB_REPLY_MAX);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* ----------------------------------------------------------------------
 * replies; each returns as ngx_http_im_redis_sub_feed() does
 */


static ngx_int_t
ngx_http_im_redis_sub_reply(ngx_http_im_redis_sub_t *sub, redisReply *reply)
{
    ngx_http_im_slot_push_t  push;

    /* Redis talks: the next loss retries quickly again */
    sub->backoff = NGX_HTTP_IM_REDIS_SUB_BACKOFF_MIN;

    if (reply->type == REDIS_REPLY_ERROR) {
        return ngx_http_im_redis_sub_error_reply(sub, reply);
    }

    if (ngx_http_im_slot_push(reply, &push) != 0) {
        ngx_log_error(NGX_LOG_ERR, &sub->log, 0,
                      "im redis subscriber %V sent a malformed reply "
                      "(type %d)", &sub->name, reply->type);
        return NGX_ERROR;
    }

    switch (push.kind) {

    case NGX_HTTP_IM_SLOT_PUSH_MESSAGE:
    case NGX_HTTP_IM_SLOT_PUSH_SMESSAGE:
        return ngx_http_im_redis_sub_on_message(sub, &push);

    case NGX_HTTP_IM_SLOT_PUSH_SUBSCRIBE:
    case NGX_HTTP_IM_SLOT_PUSH_SSUBSCRIBE:
        return ngx_http_im_redis_sub_on_subscribe(sub, &push);

    case NGX_HTTP_IM_SLOT_PUSH_UNSUBSCRIBE:
    case NGX_HTTP_IM_SLOT_PUSH_SUNSUBSCRIBE:
        return ngx_http_im_redis_sub_on_unsubscribe(sub, &push);

    case NGX_HTTP_IM_SLOT_PUSH_PONG:
        return ngx_http_im_redis_sub_on_pong(sub);

    default:
        /* pmessage, psubscribe...: we send no such command */
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, &sub->log, 0,
                       "im redis subscriber %V: push ignored", &sub->name);
        return NGX_OK;
    }
}


/*
 * An error answers the head: MOVED or ASK to a subscribe is "moved";
 * any other error to a subscribe or an unsubscribe is "not subscribed".
 */

static ngx_int_t
ngx_http_im_redis_sub_error_reply(ngx_http_im_redis_sub_t *sub,
    redisReply *reply)
{
    int                           kind;
    ngx_str_t                    *name;
    ngx_uint_t                    level;
    ngx_http_im_redis_sub_cmd_t  *cmd;

    cmd = ngx_http_im_redis_sub_head(sub, NGX_HTTP_IM_REDIS_SUB_ANY, NULL);
    if (cmd == NULL) {
        ngx_log_error(NGX_LOG_ERR, &sub->log, 0,
                      "im redis subscriber %V: %*s", &sub->name,
                      (size_t) reply->len, reply->str);
        return NGX_ERROR;
    }

    ngx_http_im_redis_sub_pop(sub, cmd);

    kind = ngx_http_im_slot_error_kind(reply->str, reply->len);
    name = &ngx_http_im_redis_sub_names[sub->conf.sharded ? 1 : 0][cmd->kind];

    if (cmd->kind == NGX_HTTP_IM_REDIS_SUB_SUBSCRIBE
        && (kind == NGX_HTTP_IM_SLOT_ERR_MOVED
            || kind == NGX_HTTP_IM_SLOT_ERR_ASK))
    {
        ngx_log_debug5(NGX_LOG_DEBUG_EVENT, &sub->log, 0,
                       "im redis subscriber %V: %V \"%V\": %*s", &sub->name,
                       name, &cmd->channel, (size_t) reply->len, reply->str);

        sub->entered = 1;
        sub->conf.handlers->moved(sub->conf.data, &cmd->channel);
        ngx_free(cmd);

        return ngx_http_im_redis_sub_leave(sub);
    }

    if (cmd->kind == NGX_HTTP_IM_REDIS_SUB_PING) {
        ngx_log_error(NGX_LOG_ERR, &sub->log, 0,
                      "im redis subscriber %V: PING failed: %*s",
                      &sub->name, (size_t) reply->len, reply->str);
        ngx_free(cmd);
        return NGX_OK;
    }

    /* an unsubscribe redirected: the channel was not subscribed here */
    level = (kind == NGX_HTTP_IM_SLOT_ERR_MOVED
             || kind == NGX_HTTP_IM_SLOT_ERR_ASK)
            ? NGX_LOG_INFO : NGX_LOG_ERR;

    ngx_log_error(level, &sub->log, 0,
                  "im redis subscriber %V: %V \"%V\" failed: %*s",
                  &sub->name, name, &cmd->channel, (size_t) reply->len,
                  reply->str);

    /* a refused subscribe is dropped; a refused unsubscribe is done */
    sub->entered = 1;
    sub->conf.handlers->subscribed(sub->conf.data, &cmd->channel,
                                   cmd->kind == NGX_HTTP_IM_REDIS_SUB_SUBSCRIBE
                                   ? -1 : 0);
    ngx_free(cmd);

    return ngx_http_im_redis_sub_leave(sub);
}


static ngx_int_t
ngx_http_im_redis_sub_on_message(ngx_http_im_redis_sub_t *sub,
    ngx_http_im_slot_push_t *push)
{
    ngx_str_t  channel;

    channel.data = (u_char *) push->channel;
    channel.len = push->channel_len;

    sub->entered = 1;
    sub->conf.handlers->message(sub->conf.data, &channel,
                                (u_char *) push->data, push->data_len);

    return ngx_http_im_redis_sub_leave(sub);
}


/* a subscribe answers the subscribe at the head, of the same channel */

static ngx_int_t
ngx_http_im_redis_sub_on_subscribe(ngx_http_im_redis_sub_t *sub,
    ngx_http_im_slot_push_t *push)
{
    ngx_http_im_redis_sub_cmd_t  *cmd;

    cmd = ngx_http_im_redis_sub_head(sub, NGX_HTTP_IM_REDIS_SUB_SUBSCRIBE,
                                     push);
    if (cmd == NULL) {
        ngx_log_error(NGX_LOG_ERR, &sub->log, 0,
                      "im redis subscriber %V answered a subscribe out of "
                      "turn", &sub->name);
        return NGX_ERROR;
    }

    ngx_http_im_redis_sub_pop(sub, cmd);

    sub->entered = 1;
    sub->conf.handlers->subscribed(sub->conf.data, &cmd->channel, 1);
    ngx_free(cmd);

    return ngx_http_im_redis_sub_leave(sub);
}


/*
 * An unsubscribe answers the unsubscribe at the head if it names its
 * channel; otherwise Redis sent it by itself (the slot moved).  Either
 * way the channel is no longer subscribed.
 */

static ngx_int_t
ngx_http_im_redis_sub_on_unsubscribe(ngx_http_im_redis_sub_t *sub,
    ngx_http_im_slot_push_t *push)
{
    ngx_int_t                     ok;
    ngx_str_t                     channel;
    ngx_http_im_redis_sub_cmd_t  *cmd;

    ok = 0;
    cmd = ngx_http_im_redis_sub_head(sub, NGX_HTTP_IM_REDIS_SUB_UNSUBSCRIBE,
                                     push);
    if (cmd) {
        ngx_http_im_redis_sub_pop(sub, cmd);
        ngx_free(cmd);

    } else if (push->channel == NULL) {
        /* an unsubscribe of nothing: we name a channel in each */
        return NGX_OK;

    } else {
        ngx_log_error(NGX_LOG_INFO, &sub->log, 0,
                      "im redis subscriber %V dropped channel \"%*s\"",
                      &sub->name, push->channel_len, push->channel);
        ok = -1;
    }

    channel.data = (u_char *) push->channel;
    channel.len = push->channel_len;

    sub->entered = 1;
    sub->conf.handlers->subscribed(sub->conf.data, &channel, ok);

    return ngx_http_im_redis_sub_leave(sub);
}


/* a pong answers our PING at the head: it only proves liveness */

static ngx_int_t
ngx_http_im_redis_sub_on_pong(ngx_http_im_redis_sub_t *sub)
{
    ngx_http_im_redis_sub_cmd_t  *cmd;

    cmd = ngx_http_im_redis_sub_head(sub, NGX_HTTP_IM_REDIS_SUB_PING, NULL);
    if (cmd == NULL) {
        ngx_log_error(NGX_LOG_ERR, &sub->log, 0,
                      "im redis subscriber %V answered a PING out of turn",
                      &sub->name);
        return NGX_ERROR;
    }

    ngx_http_im_redis_sub_pop(sub, cmd);
    ngx_free(cmd);

    return NGX_OK;
}


/*
 * The oldest command in flight if it is of kind (or kind is ANY) and,
 * with push, names push's channel; else NULL.
 */

static ngx_http_im_redis_sub_cmd_t *
ngx_http_im_redis_sub_head(ngx_http_im_redis_sub_t *sub, ngx_uint_t kind,
    ngx_http_im_slot_push_t *push)
{
    ngx_queue_t                  *q;
    ngx_http_im_redis_sub_cmd_t  *cmd;

    if (ngx_queue_empty(&sub->cmds)) {
        return NULL;
    }

    q = ngx_queue_head(&sub->cmds);
    cmd = ngx_queue_data(q, ngx_http_im_redis_sub_cmd_t, queue);

    if (kind != NGX_HTTP_IM_REDIS_SUB_ANY && cmd->kind != kind) {
        return NULL;
    }

    if (push
        && (push->channel == NULL
            || push->channel_len != cmd->channel.len
            || ngx_memcmp(push->channel, cmd->channel.data,
                          cmd->channel.len) != 0))
    {
        return NULL;
    }

    return cmd;
}


static void
ngx_http_im_redis_sub_pop(ngx_http_im_redis_sub_t *sub,
    ngx_http_im_redis_sub_cmd_t *cmd)
{
    ngx_queue_remove(&cmd->queue);
    sub->ncmds--;
}


/* ----------------------------------------------------------------------
 * commands
 */


/* channel is NULL for a PING */

static ngx_int_t
ngx_http_im_redis_sub_queue(ngx_http_im_redis_sub_t *sub, ngx_uint_t kind,
    ngx_str_t *channel)
{
    u_char                       *p;
    size_t                        len, size;
    ngx_str_t                    *name;
    ngx_connection_t             *c;
    ngx_http_im_redis_sub_cmd_t  *cmd;

    if (sub->state != NGX_HTTP_IM_REDIS_SUB_READY
        || sub->ncmds >= NGX_HTTP_IM_REDIS_SUB_CMDS_MAX)
    {
        return NGX_DECLINED;
    }

    name = &ngx_http_im_redis_sub_names[sub->conf.sharded ? 1 : 0][kind];
    len = channel ? channel->len : 0;

    cmd = ngx_alloc(sizeof(ngx_http_im_redis_sub_cmd_t) + len, &sub->log);
    if (cmd == NULL) {
        return NGX_DECLINED;
    }

    /* "*2\r\n$<n>\r\n<name>\r\n$<n>\r\n<channel>\r\n", or "*1..." */
    size = sizeof("*2\r\n$\r\n\r\n$\r\n\r\n") - 1 + 2 * NGX_SIZE_T_LEN
           + name->len + len;

    p = ngx_http_im_redis_sub_reserve(sub, size);
    if (p == NULL) {
        ngx_free(cmd);
        return NGX_DECLINED;
    }

    if (channel) {
        p = ngx_sprintf(p, "*2\r\n$%uz\r\n%V\r\n$%uz\r\n%V\r\n",
                        name->len, name, len, channel);

    } else {
        p = ngx_sprintf(p, "*1\r\n$%uz\r\n%V\r\n", name->len, name);
    }

    sub->out.last = p;

    cmd->kind = kind;
    cmd->sent = ngx_current_msec;
    cmd->channel.data = (u_char *) &cmd[1];
    cmd->channel.len = len;

    if (len) {
        ngx_memcpy(cmd->channel.data, channel->data, len);
    }

    ngx_queue_insert_tail(&sub->cmds, &cmd->queue);
    sub->ncmds++;

    if (sub->conf.timeout && !sub->timeout.timer_set) {
        ngx_add_timer(&sub->timeout, sub->conf.timeout);
    }

    /* sent after the caller returns, with whatever else it queues */
    c = sub->peer.connection;

    if (c->write->ready) {
        ngx_post_event(c->write, &ngx_posted_events);
    }

    return NGX_OK;
}


/*
 * Room for size more bytes of output, growing or compacting the buffer;
 * NULL beyond NGX_HTTP_IM_REDIS_SUB_OUT_MAX unsent bytes or when out of
 * memory.
 */

static u_char *
ngx_http_im_redis_sub_reserve(ngx_http_im_redis_sub_t *sub, size_t size)
{
    u_char     *p;
    size_t      used, cap;
    ngx_buf_t  *b;

    b = &sub->out;
    used = b->last - b->pos;

    if (used + size > NGX_HTTP_IM_REDIS_SUB_OUT_MAX) {
        return NULL;
    }

    if ((size_t) (b->end - b->last) >= size) {
        return b->last;
    }

    cap = b->end - b->start;

    if (used + size <= cap) {
        ngx_memmove(b->start, b->pos, used);

    } else {
        cap = ngx_max(cap * 2, used + size);
        cap = ngx_max(cap, NGX_HTTP_IM_REDIS_SUB_OUT_MIN);
        cap = ngx_min(cap, NGX_HTTP_IM_REDIS_SUB_OUT_MAX);

        p = ngx_alloc(cap, &sub->log);
        if (p == NULL) {
            return NULL;
        }

        if (used) {
            ngx_memcpy(p, b->pos, used);
        }

        if (b->start) {
            ngx_free(b->start);
        }

        b->start = p;
        b->end = p + cap;
    }

    b->pos = b->start;
    b->last = b->start + used;

    return b->last;
}


static u_char *
ngx_http_im_redis_sub_log_error(ngx_log_t *log, u_char *buf, size_t len)
{
    if (log->action == NULL) {
        return buf;
    }

    return ngx_snprintf(buf, len, " while %s", log->action);
}
