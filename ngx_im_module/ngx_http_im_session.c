
/*
 * ngx_im: the worker's table of users and their sessions, and the routing
 * of pub/sub messages to them.
 *
 * A user with sessions on this worker is subscribed to its deliveries
 * once, however many devices it has here.  The subscription moves through
 * NONE -> PENDING -> DONE -> LEAVING -> (freed or PENDING again); a new
 * SUBSCRIBE is never sent while an UNSUBSCRIBE is in flight, because
 * hiredis drops the channel's callback when the unsubscribe reply comes.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_store.h"
#include "ngx_http_im_pb.h"
#include "ngx_http_im_group.h"
#include "ngx_http_im_presence.h"


static ngx_http_im_user_t *ngx_http_im_user_get(ngx_str_t *uid,
    ngx_uint_t create);
static void ngx_http_im_user_free(ngx_http_im_user_t *u);
static void ngx_http_im_user_idle(ngx_http_im_user_t *u);
static void ngx_http_im_user_notify(ngx_http_im_user_t *u, ngx_int_t ok);
static ngx_int_t ngx_http_im_session_dropped(ngx_http_im_user_t *u);
static void ngx_http_im_session_cleanup(void *data);
static void ngx_http_im_session_push(ngx_http_im_user_t *u,
    ngx_http_im_delivery_t *d, ngx_http_im_frames_t *f);
static void ngx_http_im_session_kick(ngx_http_im_user_t *u,
    ngx_int_t platform);
static void ngx_http_im_session_kick_one(ngx_http_im_session_t *s);
static void ngx_http_im_session_seats(ngx_http_im_user_t *u,
    ngx_str_t *list);
static void ngx_http_im_session_watch(ngx_http_im_user_t *u,
    ngx_str_t *line);
static void ngx_http_im_session_recheck(ngx_http_im_user_t *u);
static void ngx_http_im_session_rechecked(void *data, ngx_int_t err);
static ngx_http_im_session_t *ngx_http_im_session_find(
    ngx_http_im_user_t *u, uint64_t sid);


static ngx_http_im_user_t *ngx_http_im_user_find(ngx_str_t *uid);
static void ngx_http_im_user_ready(ngx_http_im_user_t *u);


/* what group.c calls back */
ngx_http_im_group_users_t  ngx_http_im_session_users = {
    ngx_http_im_session_push,
    ngx_http_im_user_ready,
    ngx_http_im_user_find
};


/* what the store layer calls: deliveries and subscription answers */
ngx_http_im_store_routes_t  ngx_http_im_session_routes = {
    ngx_http_im_session_delivery,
    ngx_http_im_session_subscribed,
    ngx_http_im_session_resubscribe,
    ngx_http_im_group_delivery,
    ngx_http_im_group_subscribed,
    ngx_http_im_presence_delivery,
    ngx_http_im_presence_subscribed
};


/*
 * Creates the session of a WebSocket handshake.  The connection holds one
 * reference, dropped by a cleanup on r->pool; every pending operation
 * holds another, so callbacks never see freed memory.
 */
ngx_http_im_session_t *
ngx_http_im_session_create(ngx_http_request_t *r,
    ngx_http_im_session_io_t *io)
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

    s->io = io;
    s->r = r;
    s->c = r->connection;
    s->refs = 1;
    s->id = ++ngx_http_im_worker->next_id;
    s->conf = ngx_http_get_module_loc_conf(r, ngx_http_im_module);
    ngx_queue_init(&s->watches);

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


/*
 * The WebSocket layer takes the connection over from its request after
 * the 101 (ws.c): the request's pool, about to go, no longer ends the
 * session; ngx_http_im_session_end() does, when the connection closes.
 */
void
ngx_http_im_session_detach(ngx_http_im_session_t *s)
{
    ngx_pool_cleanup_t  *cln;

    /* a handful of entries: this module's and nginx's own */
    for (cln = s->r->pool->cleanup; cln; cln = cln->next) {
        if (cln->handler == ngx_http_im_session_cleanup && cln->data == s) {
            cln->handler = NULL;
        }
    }

    s->r = NULL;
}


/* a detached session's connection is closing */
void
ngx_http_im_session_end(ngx_http_im_session_t *s)
{
    ngx_http_im_session_cleanup(s);
}


/* the request and its connection are going away */
static void
ngx_http_im_session_cleanup(void *data)
{
    ngx_http_im_session_t  *s = data;

    s->io->goodbye(s);

    if (s->upgraded) {
        ngx_http_im_metric_add(NGX_HTTP_IM_M_CONNECTIONS, -1);
    }

    if (s->upgraded || s->seated) {
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

    ngx_http_im_presence_session_gone(s);
    ngx_http_im_session_leave(s);
    ngx_queue_remove(&s->link);

    ngx_http_im_session_unref(s);
}


/*
 * Adds a session to its user's list.  Returns NGX_OK when the user's
 * channel is already subscribed, NGX_AGAIN when the caller must wait for
 * s->io->login_done(), and NGX_ERROR when Redis is down.
 */
ngx_int_t
ngx_http_im_session_join(ngx_http_im_session_t *s)
{
    ngx_http_im_user_t  *u;

    /* a user marked subscribed is not, while the subscriber connection is
     * down: no login completes until it is back */
    if (!ngx_http_im_store_routing_ready()) {
        return NGX_ERROR;
    }

    u = ngx_http_im_user_get(&s->uid, 1);
    if (u == NULL) {
        return NGX_ERROR;
    }

    if (u->state == NGX_HTTP_IM_SUB_NONE) {
        if (ngx_http_im_store_subscribe(&u->sn.str) != NGX_OK) {
            if (ngx_queue_empty(&u->sessions)) {
                ngx_http_im_user_free(u);
            }
            return NGX_ERROR;
        }

        u->state = NGX_HTTP_IM_SUB_PENDING;
    }

    if (u->gload == 0) {
        ngx_http_im_group_load(u);
    }

    s->user = u;
    s->queued = 1;
    ngx_queue_insert_tail(&u->sessions, &s->user_link);

    return u->state == NGX_HTTP_IM_SUB_DONE && u->gwait == 0 ? NGX_OK
                                                             : NGX_AGAIN;
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
    ngx_http_im_group_user_gone(u);

    switch (u->state) {

    case NGX_HTTP_IM_SUB_DONE:
        if (ngx_http_im_store_unsubscribe(&u->sn.str) == NGX_OK) {
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


/* A (un)subscribe reply for a user's deliveries arrived. */
void
ngx_http_im_session_subscribed(ngx_str_t *uid, ngx_int_t ok)
{
    ngx_http_im_user_t  *u;

    u = ngx_http_im_user_get(uid, 0);
    if (u == NULL) {
        return;
    }

    if (ok == NGX_HTTP_IM_STORE_DROPPED) {
        if (ngx_http_im_session_dropped(u) != NGX_DECLINED) {
            return;
        }

        ok = 0;
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
        if (ngx_http_im_store_subscribe(&u->sn.str) == NGX_OK) {
            u->state = NGX_HTTP_IM_SUB_PENDING;
            return;
        }

        ok = 0;
        goto failed;
    }

    if (u->state == NGX_HTTP_IM_SUB_DONE) {
        /* subscribed again after a reconnect */
        ngx_http_im_session_recheck(u);
        return;
    }

    if (u->state != NGX_HTTP_IM_SUB_PENDING) {
        return;
    }

    if (ngx_queue_empty(&u->sessions)) {
        if (ngx_http_im_store_unsubscribe(&u->sn.str) == NGX_OK) {
            u->state = NGX_HTTP_IM_SUB_LEAVING;
        } else {
            ngx_http_im_user_free(u);
        }
        return;
    }

    u->state = NGX_HTTP_IM_SUB_DONE;

    /* open sessions: it was dropped (a slot moved) and is made again */
    ngx_http_im_session_recheck(u);

    if (u->gwait) {
        /* its groups' subscriptions call ngx_http_im_user_ready() */
        return;
    }

failed:

    ngx_http_im_user_notify(u, ok);
}


/*
 * u's subscription was made again (the subscriber connection came back,
 * or its slot moved): a kick published meanwhile (force_logout, a seat
 * taken under the login policy) reached no session here, so each open
 * session asks the registry about its token once more, and a kicked one
 * goes (one small script per session, only after a reconnect).
 */
static void
ngx_http_im_session_recheck(ngx_http_im_user_t *u)
{
    ngx_queue_t            *q;
    ngx_http_im_session_t  *s;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_http_im_session_t, user_link);

        if (!s->upgraded || s->closing) {
            continue;
        }

        if (ngx_http_im_store_token_check(&s->uid, &s->token, 0,
                                          ngx_http_im_session_rechecked, s)
            == NGX_OK)
        {
            ngx_http_im_session_ref(s);
        }
    }
}


static void
ngx_http_im_session_rechecked(void *data, ngx_int_t err)
{
    ngx_http_im_session_t  *s = data;

    if (!s->closed && err == NGX_HTTP_IM_ERR_TOKEN_KICKED) {
        ngx_http_im_session_kick_one(s);
    }

    ngx_http_im_session_unref(s);
}


/* every group of u is subscribed (or given up on) */
static void
ngx_http_im_user_ready(ngx_http_im_user_t *u)
{
    if (u->state == NGX_HTTP_IM_SUB_DONE) {
        ngx_http_im_user_notify(u, 1);
    }
}


/*
 * Redis dropped u's subscription (its slot moved to another master), or
 * refused it.  A subscribed user subscribes again, where its slot is
 * now; logins waiting on a refused one fail.  NGX_DECLINED: it was an
 * unsubscribe after all.
 */
static ngx_int_t
ngx_http_im_session_dropped(ngx_http_im_user_t *u)
{
    switch (u->state) {

    case NGX_HTTP_IM_SUB_DONE:
        if (ngx_queue_empty(&u->sessions)) {
            return NGX_DECLINED;
        }

        u->state = NGX_HTTP_IM_SUB_NONE;
        if (ngx_http_im_store_subscribe(&u->sn.str) == NGX_OK) {
            u->state = NGX_HTTP_IM_SUB_PENDING;
        }

        /* else the next resubscribe() tries again */
        return NGX_OK;

    case NGX_HTTP_IM_SUB_PENDING:
        u->state = NGX_HTTP_IM_SUB_NONE;
        ngx_http_im_user_notify(u, 0);
        return NGX_OK;

    default:
        return NGX_DECLINED;
    }
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
            s->io->login_done(s, ok);
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

        if (u->state == NGX_HTTP_IM_SUB_DONE) {
            /*
             * Subscribed again where its slot is now (a no-op where it
             * was): deliveries on a subscription that never stopped keep
             * flowing meanwhile.  One that did stop came back as dropped.
             */
            (void) ngx_http_im_store_subscribe(&u->sn.str);
            continue;
        }

        u->state = NGX_HTTP_IM_SUB_NONE;

        if (ngx_http_im_store_subscribe(&u->sn.str) == NGX_OK) {
            u->state = NGX_HTTP_IM_SUB_PENDING;
            continue;
        }

        /* logins waiting on this user fail now; established sessions
         * stay, and are subscribed again on the next reconnect */
        ngx_http_im_user_notify(u, 0);
    }

    ngx_http_im_group_resubscribe();
    ngx_http_im_presence_resubscribe();
}


/* A delivery for a user arrived. */
void
ngx_http_im_session_delivery(ngx_str_t *uid, u_char *data, size_t len)
{
    ngx_http_im_user_t      *u;
    ngx_http_im_frames_t     f;
    ngx_http_im_delivery_t   d;

    u = ngx_http_im_user_get(uid, 0);
    if (u == NULL || u->state != NGX_HTTP_IM_SUB_DONE) {
        return;
    }

    if (ngx_http_im_store_delivery_parse(data, len, &d) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ngx_http_im_worker->log, 0,
                      "im: malformed delivery for \"%V\"", uid);
        return;
    }

    if (d.kind == NGX_HTTP_IM_DELIVERY_KICK) {
        ngx_http_im_session_kick(u, d.platform);
        return;
    }

    if (d.kind == NGX_HTTP_IM_DELIVERY_GROUP) {
        ngx_http_im_group_user_line(u, &d.json);
        return;
    }

    if (d.kind == NGX_HTTP_IM_DELIVERY_LOGIN) {
        ngx_http_im_session_seats(u, &d.json);
        return;
    }

    if (d.kind == NGX_HTTP_IM_DELIVERY_WATCH) {
        ngx_http_im_session_watch(u, &d.json);
        return;
    }

    ngx_memzero(&f, sizeof(ngx_http_im_frames_t));
    ngx_http_im_session_push(u, &d, &f);
    ngx_http_im_frames_free(&f);
}


/*
 * "k <platform>": force_logout of that platform (0: all), from any host.
 * Each session gets 2002, then Close 1000.
 */
static void
ngx_http_im_session_kick(ngx_http_im_user_t *u, ngx_int_t platform)
{
    ngx_queue_t            *q;
    ngx_http_im_session_t  *s;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_http_im_session_t, user_link);

        if (platform == 0 || s->platform == platform) {
            ngx_http_im_session_kick_one(s);
        }
    }
}


/* 2002, then Close 1000; a login not yet open is refused (1506) instead */
static void
ngx_http_im_session_kick_one(ngx_http_im_session_t *s)
{
    ngx_http_im_frames_t  f;

    if (s->closing) {
        return;
    }

    if (!s->upgraded) {
        /* its token passed the registry just before the kick */
        s->kicked = 1;
        return;
    }

    ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                  "im: \"%V\" platform %i kicked offline",
                  &s->uid, s->platform);

    /* counters move before the frames that a client can observe */
    ngx_http_im_metric_inc(NGX_HTTP_IM_M_KICKS);

    ngx_http_im_frames_begin(&f, NGX_HTTP_IM_REQ_KICK);
    ngx_http_im_buf_str(&f.json, "{}");
    ngx_http_im_frames_end(&f);
    ngx_http_im_frames_send(s, &f);
    ngx_http_im_frames_free(&f);

    s->io->close(s, 1000, "kicked");
}


/*
 * "l ...": a login under the multi-login policy took its seat (login.lua).
 * Every worker reads the line at the same point of the user's channel:
 * the sessions that lost their seat are kicked here, the new one goes
 * live here, so no delivery reaches both.  A session refused on the way
 * may leave u's list: u must outlive the walk.
 */
static void
ngx_http_im_session_seats(ngx_http_im_user_t *u, ngx_str_t *list)
{
    ngx_uint_t              n;
    ngx_http_im_seat_t      seat;
    ngx_http_im_session_t  *s;

    u->busy = 1;

    /* a line names at most a session per seat, and a few of dead
     * workers; the bound only guards against a malformed one */
    for (n = 0; n < 64; n++) {
        if (ngx_http_im_store_seat(list, &seat) != NGX_OK) {
            break;
        }

        s = seat.self ? ngx_http_im_session_find(u, seat.sid) : NULL;
        if (s == NULL) {
            continue;
        }

        if (seat.what == NGX_HTTP_IM_SEAT_NEW) {
            s->io->seated(s);

        } else {
            /* replaced by its own token or kicked: either way the
             * device is told, so two clients sharing a token do not
             * take the seat from each other forever */
            ngx_http_im_session_kick_one(s);
        }
    }

    u->busy = 0;

    if (ngx_queue_empty(&u->sessions)) {
        ngx_http_im_user_idle(u);
    }
}


/*
 * "+<uid> <uid> ..." (or "-"): /user/subscribe_users_status for this
 * user: each of its open sessions starts (stops) watching those users,
 * as if it had sent 2005 (the line holds at most NGX_HTTP_IM_MAX_LIST;
 * a session at its bound keeps what it has).
 */
static void
ngx_http_im_session_watch(ngx_http_im_user_t *u, ngx_str_t *line)
{
    u_char                 *p, *last, *end;
    ngx_str_t               id;
    ngx_uint_t              on, n;
    ngx_queue_t            *q;
    ngx_http_im_session_t  *s;

    on = line->data[0] == '+';
    last = line->data + line->len;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_http_im_session_t, user_link);

        if (!s->upgraded || s->closing) {
            continue;
        }

        for (p = line->data + 1, n = 0;
             p < last && n < NGX_HTTP_IM_MAX_LIST;
             p = end + 1, n++)
        {
            end = ngx_strlchr(p, last, ' ');
            if (end == NULL) {
                end = last;
            }

            id.data = p;
            id.len = end - p;

            if (id.len && id.len <= NGX_HTTP_IM_UID_MAX) {
                (void) ngx_http_im_presence_watch(s, &id, on);
            }
        }
    }
}


static ngx_http_im_session_t *
ngx_http_im_session_find(ngx_http_im_user_t *u, uint64_t sid)
{
    ngx_queue_t            *q;
    ngx_http_im_session_t  *s;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = ngx_queue_next(q))
    {
        s = ngx_queue_data(q, ngx_http_im_session_t, user_link);

        if (s->id == sid) {
            return s;
        }
    }

    return NULL;
}


void
ngx_http_im_session_presence(ngx_http_im_session_t *s, ngx_uint_t on)
{
    (void) ngx_http_im_store_presence(&s->uid, s->platform, s->id,
                                      &s->token, on, s->background, NULL,
                                      NULL);
}


/* every 10 s: this worker is alive, which presence entries rely on */
void
ngx_http_im_session_alive(ngx_event_t *ev)
{
    ngx_http_im_store_worker_alive();

    if (!ngx_exiting) {
        ngx_add_timer(ev, 10000);
    }
}


/*
 * A message for u: every upgraded session of the user gets one 2001
 * frame, except the session that sent the message.  The frame is built
 * once per encoding and delivery (f, kept by the caller across the
 * members of a group): sessions that spoke protobuf get it as protobuf.
 */
static void
ngx_http_im_session_push(ngx_http_im_user_t *u, ngx_http_im_delivery_t *d,
    ngx_http_im_frames_t *f)
{
    ngx_uint_t              n;
    ngx_queue_t            *q, *next;
    ngx_http_im_session_t  *s;

    if (!f->built) {
        ngx_http_im_frames_begin(f, NGX_HTTP_IM_REQ_PUSH);
        ngx_http_im_buf_str(&f->json, "{\"msgs\":{");
        ngx_http_im_buf_json_str(&f->json, (char *) d->conv.data,
                                 d->conv.len);
        ngx_http_im_buf_str(&f->json, ":[");
        ngx_http_im_buf_add(&f->json, d->json.data, d->json.len);
        ngx_http_im_buf_str(&f->json, "]}}");
        ngx_http_im_frames_end(f);
    }

    n = 0;

    for (q = ngx_queue_head(&u->sessions);
         q != ngx_queue_sentinel(&u->sessions);
         q = next)
    {
        next = ngx_queue_next(q);
        s = ngx_queue_data(q, ngx_http_im_session_t, user_link);

        /* the sender's own session has its ack (and a JS SDK's echo) */
        if (!s->upgraded || s->closing || (d->self && s->id == d->sid)) {
            continue;
        }

        ngx_http_im_frames_send(s, f);
        n++;
    }

    /* one atomic add on the counters every worker writes */
    if (n) {
        ngx_http_im_metric_add(NGX_HTTP_IM_M_PUSHES, (ngx_atomic_int_t) n);
    }
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

    u = ngx_alloc(sizeof(ngx_http_im_user_t) + uid->len, ngx_cycle->log);
    if (u == NULL) {
        return NULL;
    }

    p = (u_char *) (u + 1);

    u->sn.str.data = p;
    u->sn.str.len = uid->len;
    ngx_memcpy(p, uid->data, uid->len);

    u->sn.node.key = hash;
    /* a new bucket starts full: its "used" bit must start clear */
    ngx_memzero(&u->bucket, sizeof(ngx_http_im_bucket_t));
    u->state = NGX_HTTP_IM_SUB_NONE;
    u->busy = 0;
    u->gwait = 0;
    u->gload = 0;
    ngx_queue_init(&u->sessions);
    ngx_queue_init(&u->groups);

    ngx_rbtree_insert(&ngx_http_im_worker->users, &u->sn.node);
    ngx_queue_insert_tail(&ngx_http_im_worker->user_list, &u->link);

    return u;
}


static ngx_http_im_user_t *
ngx_http_im_user_find(ngx_str_t *uid)
{
    return ngx_http_im_user_get(uid, 0);
}


static void
ngx_http_im_user_free(ngx_http_im_user_t *u)
{
    ngx_http_im_group_user_gone(u);
    ngx_rbtree_delete(&ngx_http_im_worker->users, &u->sn.node);
    ngx_queue_remove(&u->link);
    ngx_free(u);
}
