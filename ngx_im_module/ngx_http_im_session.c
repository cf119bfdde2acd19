
/*
 * ngx_im: the worker's table of users and their sessions, and the routing
 * of pub/sub messages to them.
 *
 * A user with sessions on this worker is subscribed to im:u:<uid> once,
 * however many devices it has here.  The subscription moves through
 * NONE -> PENDING -> DONE -> LEAVING -> (freed or PENDING again); a new
 * SUBSCRIBE is never sent while an UNSUBSCRIBE is in flight, because
 * hiredis drops the channel's callback when the unsubscribe reply comes.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_redis.h"
#include "ngx_http_im_pb.h"


#define NGX_HTTP_IM_CHANNEL_PREFIX  "im:u:"


static ngx_http_im_user_t *ngx_http_im_user_get(ngx_str_t *uid,
    ngx_uint_t create);
static void ngx_http_im_user_free(ngx_http_im_user_t *u);
static void ngx_http_im_user_idle(ngx_http_im_user_t *u);
static void ngx_http_im_user_notify(ngx_http_im_user_t *u, ngx_int_t ok);
static void ngx_http_im_session_cleanup(void *data);
static void ngx_http_im_session_push(ngx_http_im_user_t *u, u_char *data,
    size_t len);
static void ngx_http_im_worker_message(u_char *data, size_t len);
static void ngx_http_im_session_kick(ngx_http_im_user_t *u,
    ngx_int_t platform);
static ngx_int_t ngx_http_im_push_pb(u_char *data, size_t len,
    long long req_identifier, ngx_http_im_buf_t *out, char *err,
    size_t errlen);


/*
 * Creates the session of a WebSocket handshake.  The connection holds one
 * reference, dropped by a cleanup on r->pool; every pending operation
 * holds another, so callbacks never see freed memory.
 */
ngx_http_im_session_t *
ngx_http_im_session_create(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t     *cln;
    ngx_http_im_session_t  *s;

    s = ngx_calloc(sizeof(ngx_http_im_session_t), r->connection->log);
    if (s == NULL) {
        return NULL;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_free(s);
        return NULL;
    }

    cln->handler = ngx_http_im_session_cleanup;
    cln->data = s;

    s->r = r;
    s->c = r->connection;
    s->refs = 1;
    s->id = ++ngx_http_im_worker->next_id;
    s->conf = ngx_http_get_module_loc_conf(r, ngx_http_im_module);

    ngx_queue_insert_tail(&ngx_http_im_worker->sessions, &s->link);

    return s;
}


void
ngx_http_im_session_ref(ngx_http_im_session_t *s)
{
    s->refs++;
}


void
ngx_http_im_session_unref(ngx_http_im_session_t *s)
{
    if (--s->refs) {
        return;
    }

    ngx_http_im_ws_parser_release(&s->parser);

    if (s->out) {
        ngx_free(s->out);
    }

    if (s->stash) {
        ngx_free(s->stash);
    }

    ngx_free(s->uid.data);
    ngx_free(s->token.data);
    ngx_free(s->operation_id.data);
    ngx_free(s);
}


/* the request and its connection are going away */
static void
ngx_http_im_session_cleanup(void *data)
{
    ngx_http_im_session_t  *s = data;

    ngx_http_im_ws_goodbye(s);

    if (s->upgraded) {
        ngx_http_im_metric_add(NGX_HTTP_IM_M_CONNECTIONS, -1);
        ngx_http_im_session_presence(s, 0);
    }

    s->closed = 1;
    s->r = NULL;
    s->c = NULL;

    if (s->ping.timer_set) {
        ngx_del_timer(&s->ping);
    }

    if (s->ping.posted) {
        ngx_delete_posted_event(&s->ping);
    }

    ngx_http_im_session_leave(s);
    ngx_queue_remove(&s->link);

    ngx_http_im_session_unref(s);
}


/*
 * Adds a session to its user's list.  Returns NGX_OK when the user's
 * channel is already subscribed, NGX_AGAIN when the caller must wait for
 * ngx_http_im_session_login_done(), and NGX_ERROR when Redis is down.
 */
ngx_int_t
ngx_http_im_session_join(ngx_http_im_session_t *s)
{
    ngx_http_im_user_t  *u;

    /* a user marked subscribed is not, while the subscriber connection is
     * down: no login completes until it is back */
    if (!ngx_http_im_redis_sub_ready()) {
        return NGX_ERROR;
    }

    u = ngx_http_im_user_get(&s->uid, 1);
    if (u == NULL) {
        return NGX_ERROR;
    }

    if (u->state == NGX_HTTP_IM_SUB_NONE) {
        if (ngx_http_im_redis_subscribe(&u->channel) != NGX_OK) {
            if (ngx_queue_empty(&u->sessions)) {
                ngx_http_im_user_free(u);
            }
            return NGX_ERROR;
        }

        u->state = NGX_HTTP_IM_SUB_PENDING;
    }

    s->user = u;
    s->queued = 1;
    ngx_queue_insert_tail(&u->sessions, &s->user_link);

    return u->state == NGX_HTTP_IM_SUB_DONE ? NGX_OK : NGX_AGAIN;
}


void
ngx_http_im_session_leave(ngx_http_im_session_t *s)
{
    ngx_http_im_user_t  *u;

    if (!s->queued) {
        return;
    }

    u = s->user;
    s->queued = 0;
    s->user = NULL;
    ngx_queue_remove(&s->user_link);

    if (!ngx_queue_empty(&u->sessions) || u->busy) {
        return;
    }

    ngx_http_im_user_idle(u);
}


/* the last session of u left: unsubscribe, or forget u */
static void
ngx_http_im_user_idle(ngx_http_im_user_t *u)
{
    switch (u->state) {

    case NGX_HTTP_IM_SUB_DONE:
        if (ngx_http_im_redis_unsubscribe(&u->channel) == NGX_OK) {
            u->state = NGX_HTTP_IM_SUB_LEAVING;
            return;
        }

        /* the subscriber connection is gone, and with it the
         * subscription */
        ngx_http_im_user_free(u);
        return;

    case NGX_HTTP_IM_SUB_NONE:
        ngx_http_im_user_free(u);
        return;

    default:
        /* a reply is in flight; ngx_http_im_session_subscribed() decides */
        return;
    }
}


/* A (un)subscribe reply for channel arrived. */
void
ngx_http_im_session_subscribed(ngx_str_t *channel, ngx_int_t ok)
{
    ngx_str_t            uid;
    ngx_http_im_user_t  *u;

    if (channel->len <= sizeof(NGX_HTTP_IM_CHANNEL_PREFIX) - 1
        || ngx_strncmp(channel->data, NGX_HTTP_IM_CHANNEL_PREFIX,
                       sizeof(NGX_HTTP_IM_CHANNEL_PREFIX) - 1) != 0)
    {
        return;
    }

    uid.data = channel->data + sizeof(NGX_HTTP_IM_CHANNEL_PREFIX) - 1;
    uid.len = channel->len - (sizeof(NGX_HTTP_IM_CHANNEL_PREFIX) - 1);

    u = ngx_http_im_user_get(&uid, 0);
    if (u == NULL) {
        return;
    }

    if (!ok) {
        if (u->state != NGX_HTTP_IM_SUB_LEAVING) {
            return;
        }

        if (ngx_queue_empty(&u->sessions)) {
            ngx_http_im_user_free(u);
            return;
        }

        /* a device logged in while we were leaving */
        u->state = NGX_HTTP_IM_SUB_NONE;
        if (ngx_http_im_redis_subscribe(&u->channel) == NGX_OK) {
            u->state = NGX_HTTP_IM_SUB_PENDING;
            return;
        }

        ok = 0;
        goto failed;
    }

    if (u->state != NGX_HTTP_IM_SUB_PENDING) {
        return;
    }

    if (ngx_queue_empty(&u->sessions)) {
        if (ngx_http_im_redis_unsubscribe(&u->channel) == NGX_OK) {
            u->state = NGX_HTTP_IM_SUB_LEAVING;
        } else {
            ngx_http_im_user_free(u);
        }
        return;
    }

    u->state = NGX_HTTP_IM_SUB_DONE;

failed:

    ngx_http_im_user_notify(u, ok);
}


/* finishes the logins waiting on u's subscription */
static void
ngx_http_im_user_notify(ngx_http_im_user_t *u, ngx_int_t ok)
{
    ngx_queue_t            *q, *next;
    ngx_http_im_session_t  *s;

    /* sessions may leave meanwhile; u must outlive the walk */
    u->busy = 1;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        s = ngx_queue_data(q, ngx_http_im_session_t, user_link);

        if (!s->upgraded) {
            ngx_http_im_session_login_done(s, ok);
        }
    }

    u->busy = 0;

    if (ngx_queue_empty(&u->sessions)) {
        ngx_http_im_user_idle(u);
    }
}


/* The subscriber connection (re)connected: restore every subscription. */
void
ngx_http_im_session_resubscribe(void)
{
    ngx_queue_t         *q, *next;
    ngx_http_im_user_t  *u;

    for (q = ngx_queue_head(&ngx_http_im_worker->user_list);
         q != ngx_queue_sentinel(&ngx_http_im_worker->user_list);
         q = next)
    {
        next = ngx_queue_next(q);
        u = ngx_queue_data(q, ngx_http_im_user_t, link);

        if (ngx_queue_empty(&u->sessions)) {
            ngx_http_im_user_free(u);
            continue;
        }

        u->state = NGX_HTTP_IM_SUB_NONE;

        if (ngx_http_im_redis_subscribe(&u->channel) == NGX_OK) {
            u->state = NGX_HTTP_IM_SUB_PENDING;
            continue;
        }

        /* logins waiting on this user fail now; established sessions
         * stay, and are subscribed again on the next reconnect */
        ngx_http_im_user_notify(u, 0);
    }
}


/* A pub/sub message arrived on channel. */
void
ngx_http_im_session_message(ngx_str_t *channel, u_char *data, size_t len)
{
    ngx_str_t            uid;
    ngx_http_im_user_t  *u;

    if (channel->len == ngx_http_im_worker->origin.len
        && ngx_strncmp(channel->data, ngx_http_im_worker->origin.data,
                       channel->len) == 0)
    {
        ngx_http_im_worker_message(data, len);
        return;
    }

    if (channel->len <= sizeof(NGX_HTTP_IM_CHANNEL_PREFIX) - 1) {
        return;
    }

    uid.data = channel->data + sizeof(NGX_HTTP_IM_CHANNEL_PREFIX) - 1;
    uid.len = channel->len - (sizeof(NGX_HTTP_IM_CHANNEL_PREFIX) - 1);

    u = ngx_http_im_user_get(&uid, 0);
    if (u == NULL || u->state != NGX_HTTP_IM_SUB_DONE || len < 2) {
        return;
    }

    if (data[0] == 'k') {
        ngx_http_im_session_kick(u, ngx_atoi(data + 2, len - 2));
        return;
    }

    ngx_http_im_session_push(u, data, len);
}


/*
 * "k <platform>": force_logout of that platform (0: all), from any host.
 * Each session gets 2002, then Close 1000.
 */
static void
ngx_http_im_session_kick(ngx_http_im_user_t *u, ngx_int_t platform)
{
    char                    err[NGX_HTTP_IM_PB_ERRLEN];
    ngx_queue_t            *q;
    ngx_http_im_buf_t       pb;
    ngx_http_im_session_t  *s;

    static u_char  kick[] = "{\"reqIdentifier\":2002,\"operationID\":\"\","
                            "\"msgIncr\":\"\",\"errCode\":0,\"errMsg\":\"\","
                            "\"data\":{}}";

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_http_im_session_t, user_link);

        if (s->closing || (platform && s->platform != platform)) {
            continue;
        }

        if (!s->upgraded) {
            /* its token passed the registry just before the kick */
            s->kicked = 1;
            continue;
        }

        ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                      "im: \"%V\" platform %i kicked offline",
                      &s->uid, s->platform);

        /* counters move before the frames that a client can observe */
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_KICKS);

        if (!s->binary) {
            ngx_http_im_ws_send(s, NGX_HTTP_IM_WS_OP_TEXT, kick,
                                sizeof(kick) - 1);

        } else {
            ngx_http_im_buf_init(&pb, 0);
            if (ngx_http_im_push_pb((u_char *) "{}", 2, NGX_HTTP_IM_REQ_KICK,
                                    &pb, err, sizeof(err))
                == NGX_OK)
            {
                ngx_http_im_ws_send(s, NGX_HTTP_IM_WS_OP_BINARY, pb.data,
                                    pb.len);
            }
            ngx_http_im_buf_free(&pb);
        }

        ngx_http_im_ws_close(s, 1000, "kicked");
    }
}


/* a server push (2001, 2002) as a protobuf Resp, from its data JSON */
static ngx_int_t
ngx_http_im_push_pb(u_char *data, size_t len, long long req_identifier,
    ngx_http_im_buf_t *out, char *err, size_t errlen)
{
    ngx_http_im_str_t  empty;

    empty.data = "";
    empty.len = 0;

    if (ngx_http_im_pb_resp_encode(req_identifier, empty, empty, 0, "",
                                   data, len, out, err, errlen)
        != 0)
    {
        ngx_log_error(NGX_LOG_ALERT, ngx_http_im_worker->log, 0,
                      "im: cannot encode a protobuf push: %s", err);
        return NGX_ERROR;
    }

    return NGX_OK;
}


void
ngx_http_im_session_presence(ngx_http_im_session_t *s, ngx_uint_t on)
{
    (void) ngx_http_im_session_presence_write(s, on, NULL, NULL);
}


/*
 * Records (on) or removes a session in its user's presence hash.  The
 * field names the worker, whose liveness key lets readers drop entries
 * of crashed workers; the value is the time, prefixed with "b" while the
 * app is in the background (send.lua reads that).
 */
ngx_int_t
ngx_http_im_session_presence_write(ngx_http_im_session_t *s, ngx_uint_t on,
    ngx_http_im_redis_pt handler, void *data)
{
    u_char      *p;
    size_t       len[4];
    const char  *argv[4];
    u_char       key[NGX_HTTP_IM_UID_MAX + 32];
    u_char       field[NGX_MAXHOSTNAMELEN + 128], now[NGX_INT64_LEN + 1];

    argv[0] = on ? "HSET" : "HDEL";
    len[0] = 4;
    argv[1] = (char *) key;
    len[1] = ngx_sprintf(key, "im:{u:%V}:online", &s->uid) - key;

    p = ngx_snprintf(field, sizeof(field), "%i:%V:%uL", s->platform,
                     &ngx_http_im_worker->origin, s->id);
    argv[2] = (char *) field;
    len[2] = p - field;

    argv[3] = (char *) now;
    len[3] = ngx_sprintf(now, s->background ? "b%T" : "%T", ngx_time())
             - now;

    return ngx_http_im_redis_command(handler, data, on ? 4 : 3, argv, len);
}


/* keeps this worker's liveness key, which presence entries rely on */
void
ngx_http_im_session_alive(ngx_event_t *ev)
{
    const char  *argv[5];
    size_t       len[5];

    argv[0] = "SET";
    len[0] = 3;
    argv[1] = (char *) ngx_http_im_worker->origin.data;
    len[1] = ngx_http_im_worker->origin.len;
    argv[2] = "1";
    len[2] = 1;
    argv[3] = "EX";
    len[3] = 2;
    argv[4] = "30";
    len[4] = 2;

    (void) ngx_http_im_redis_command(NULL, NULL, 5, argv, len);
    ngx_http_im_redis_sub_ping();

    if (ev && !ngx_exiting) {
        ngx_add_timer(ev, 10000);
    }
}


/*
 * A delivery is "m <origin> <session id> <conversation>\n<MsgData JSON>":
 * every upgraded session of the user gets one 2001 frame, except the
 * session that sent the message.  The frame is built once per encoding:
 * sessions that spoke protobuf get it as protobuf.
 */
static void
ngx_http_im_session_push(ngx_http_im_user_t *u, u_char *data, size_t len)
{
    u_char                 *p, *last, *f[4];
    size_t                  head;
    uint64_t                sid;
    ngx_uint_t              n, self;
    ngx_queue_t            *q, *next;
    ngx_http_im_buf_t      *b, pb;
    ngx_http_im_session_t  *s;
    char                    err[NGX_HTTP_IM_PB_ERRLEN];

    last = data + len;
    p = data;

    for (n = 0; n < 4 && p < last; n++) {
        f[n] = p;
        while (p < last && *p != ' ' && *p != '\n') {
            p++;
        }
        if (p == last || (n < 3 && *p != ' ') || (n == 3 && *p != '\n')) {
            break;
        }
        p++;
    }

    if (n != 4 || f[0][0] != 'm') {
        ngx_log_error(NGX_LOG_ALERT, ngx_http_im_worker->log, 0,
                      "im: malformed delivery on im:u:%V", &u->sn.str);
        return;
    }

    self = (size_t) (f[2] - f[1] - 1) == ngx_http_im_worker->origin.len
           && ngx_strncmp(f[1], ngx_http_im_worker->origin.data,
                          ngx_http_im_worker->origin.len) == 0;
    sid = (uint64_t) ngx_atoof(f[2], f[3] - f[2] - 1);

    b = &ngx_http_im_worker->scratch;
    ngx_http_im_buf_reset(b);
    ngx_http_im_buf_str(b, "{\"reqIdentifier\":2001,\"operationID\":\"\","
                        "\"msgIncr\":\"\",\"errCode\":0,\"errMsg\":\"\","
                        "\"data\":");
    head = b->len;
    ngx_http_im_buf_str(b, "{\"msgs\":{");
    ngx_http_im_buf_json_str(b, (char *) f[3], p - 1 - f[3]);
    ngx_http_im_buf_str(b, ":[");
    ngx_http_im_buf_add(b, p, last - p);
    ngx_http_im_buf_str(b, "]}}}");

    if (b->failed) {
        return;
    }

    ngx_http_im_buf_init(&pb, 0);

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        s = ngx_queue_data(q, ngx_http_im_session_t, user_link);

        if (!s->upgraded || s->closing || (self && s->id == sid)) {
            continue;
        }

        ngx_http_im_metric_inc(NGX_HTTP_IM_M_PUSHES);

        if (!s->binary) {
            ngx_http_im_ws_send_json(s, b);

        } else if (pb.len
                   || ngx_http_im_push_pb(b->data + head, b->len - head - 1,
                                          NGX_HTTP_IM_REQ_PUSH, &pb, err,
                                          sizeof(err))
                      == NGX_OK)
        {
            ngx_http_im_ws_send(s, NGX_HTTP_IM_WS_OP_BINARY, pb.data,
                                pb.len);
        }
    }

    ngx_http_im_buf_free(&pb);
}


static void
ngx_http_im_worker_message(u_char *data, size_t len)
{
    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, ngx_http_im_worker->log, 0,
                   "im worker message: %*s", len, data);
}


static ngx_http_im_user_t *
ngx_http_im_user_get(ngx_str_t *uid, ngx_uint_t create)
{
    u_char              *p;
    uint32_t             hash;
    ngx_http_im_user_t  *u;

    hash = ngx_crc32_short(uid->data, uid->len);

    u = (ngx_http_im_user_t *)
            ngx_str_rbtree_lookup(&ngx_http_im_worker->users, uid, hash);

    if (u || !create) {
        return u;
    }

    u = ngx_alloc(sizeof(ngx_http_im_user_t) + 2 * uid->len
                  + sizeof(NGX_HTTP_IM_CHANNEL_PREFIX), ngx_cycle->log);
    if (u == NULL) {
        return NULL;
    }

    p = (u_char *) (u + 1);

    u->sn.str.data = p;
    u->sn.str.len = uid->len;
    p = ngx_cpymem(p, uid->data, uid->len);

    u->channel.data = p;
    p = ngx_cpymem(p, NGX_HTTP_IM_CHANNEL_PREFIX,
                   sizeof(NGX_HTTP_IM_CHANNEL_PREFIX) - 1);
    p = ngx_cpymem(p, uid->data, uid->len);
    u->channel.len = p - u->channel.data;

    u->sn.node.key = hash;
    u->state = NGX_HTTP_IM_SUB_NONE;
    u->busy = 0;
    ngx_queue_init(&u->sessions);

    ngx_rbtree_insert(&ngx_http_im_worker->users, &u->sn.node);
    ngx_queue_insert_tail(&ngx_http_im_worker->user_list, &u->link);

    return u;
}


static void
ngx_http_im_user_free(ngx_http_im_user_t *u)
{
    ngx_rbtree_delete(&ngx_http_im_worker->users, &u->sn.node);
    ngx_queue_remove(&u->link);
    ngx_free(u);
}
