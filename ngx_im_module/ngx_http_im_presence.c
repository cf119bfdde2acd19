
/*
 * ngx_im: this worker's watched users (2005 SubUserOnlineStatus).
 *
 * presence.lua (and login.lua) publish a user's online platforms on the
 * user's presence channel whenever they change.  A worker subscribes to
 * that channel while one of its sessions watches the user, and fans each
 * change out to those sessions, the frame built once per encoding.  So a
 * change costs one PUBLISH whatever the number of watchers, and each
 * worker does work only for its own watchers.
 *
 * A watched user's subscription moves through the states of a user's
 * (session.c): NONE -> PENDING -> DONE -> LEAVING.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_store.h"
#include "ngx_http_im_pb.h"
#include "ngx_http_im_presence.h"


typedef struct {
    ngx_str_node_t             sn;
    ngx_queue_t                link;         /* in worker->watched_list */
    ngx_queue_t                watchers;     /* ngx_http_im_watch_t */
    ngx_uint_t                 state;
    ngx_uint_t                 known;        /* bit p: online on p */
    unsigned                   has_known:1;
} ngx_http_im_watched_t;

typedef struct {
    ngx_queue_t                tlink;        /* in watched->watchers */
    ngx_queue_t                slink;        /* in session->watches */
    ngx_http_im_watched_t     *target;
    ngx_http_im_session_t     *session;
} ngx_http_im_watch_t;


static ngx_http_im_watch_t *ngx_http_im_presence_find(
    ngx_http_im_session_t *s, ngx_http_im_watched_t *t);
static void ngx_http_im_presence_remove(ngx_http_im_watch_t *w);
static void ngx_http_im_presence_idle(ngx_http_im_watched_t *t);
static void ngx_http_im_presence_push(ngx_http_im_watched_t *t,
    ngx_http_im_frames_t *f);
static void ngx_http_im_presence_changed(ngx_http_im_watched_t *t,
    ngx_int_t *platforms, ngx_uint_t n);
static ngx_uint_t ngx_http_im_presence_mask(ngx_int_t *platforms,
    ngx_uint_t n);
static void ngx_http_im_presence_check(ngx_http_im_watched_t *t);
static void ngx_http_im_presence_checked(void *data, ngx_int_t err,
    ngx_http_im_store_online_t *users, ngx_uint_t n);
static ngx_http_im_watched_t *ngx_http_im_watched_get(ngx_str_t *uid,
    ngx_uint_t create);
static void ngx_http_im_watched_free(ngx_http_im_watched_t *t);


ngx_int_t
ngx_http_im_presence_watch(ngx_http_im_session_t *s, ngx_str_t *uid,
    ngx_uint_t on)
{
    ngx_http_im_watch_t    *w;
    ngx_http_im_watched_t  *t;

    t = ngx_http_im_watched_get(uid, on);
    w = t ? ngx_http_im_presence_find(s, t) : NULL;

    if (!on) {
        if (w == NULL) {
            return NGX_DECLINED;
        }

        ngx_http_im_presence_remove(w);
        return NGX_OK;
    }

    if (t == NULL) {
        return NGX_ERROR;
    }

    if (w) {
        return NGX_DECLINED;
    }

    if (s->nwatches >= NGX_HTTP_IM_MAX_WATCH
        || (w = ngx_alloc(sizeof(ngx_http_im_watch_t), ngx_cycle->log))
           == NULL)
    {
        if (ngx_queue_empty(&t->watchers)) {
            ngx_http_im_presence_idle(t);
        }

        return s->nwatches >= NGX_HTTP_IM_MAX_WATCH ? NGX_BUSY : NGX_ERROR;
    }

    w->target = t;
    w->session = s;
    ngx_queue_insert_tail(&t->watchers, &w->tlink);
    ngx_queue_insert_tail(&s->watches, &w->slink);
    s->nwatches++;

    if (t->state == NGX_HTTP_IM_SUB_NONE) {
        if (ngx_http_im_store_watch(uid, 1) == NGX_OK) {
            t->state = NGX_HTTP_IM_SUB_PENDING;

        } else {
            /* the subscriber connection is down: its return subscribes */
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "im: cannot watch the presence of \"%V\" now",
                          uid);
        }
    }

    return NGX_OK;
}


ngx_uint_t
ngx_http_im_presence_watching(ngx_http_im_session_t *s, ngx_str_t *uid)
{
    ngx_http_im_watched_t  *t;

    t = ngx_http_im_watched_get(uid, 0);

    return t && ngx_http_im_presence_find(s, t) ? 1 : 0;
}


/* s's watch of t: a session watches at most NGX_HTTP_IM_MAX_WATCH */
static ngx_http_im_watch_t *
ngx_http_im_presence_find(ngx_http_im_session_t *s, ngx_http_im_watched_t *t)
{
    ngx_queue_t          *q;
    ngx_http_im_watch_t  *w;

    for (q = ngx_queue_head(&s->watches);
         q != ngx_queue_sentinel(&s->watches);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_http_im_watch_t, slink);

        if (w->target == t) {
            return w;
        }
    }

    return NULL;
}


void
ngx_http_im_presence_session_gone(ngx_http_im_session_t *s)
{
    ngx_queue_t  *q;

    while (!ngx_queue_empty(&s->watches)) {
        q = ngx_queue_head(&s->watches);
        ngx_http_im_presence_remove(ngx_queue_data(q, ngx_http_im_watch_t,
                                                   slink));
    }
}


static void
ngx_http_im_presence_remove(ngx_http_im_watch_t *w)
{
    ngx_http_im_watched_t  *t;

    t = w->target;

    ngx_queue_remove(&w->tlink);
    ngx_queue_remove(&w->slink);
    w->session->nwatches--;
    ngx_free(w);

    if (ngx_queue_empty(&t->watchers)) {
        ngx_http_im_presence_idle(t);
    }
}


void
ngx_http_im_presence_entry(ngx_http_im_buf_t *b, ngx_str_t *uid,
    ngx_int_t *platforms, ngx_uint_t n)
{
    ngx_uint_t  i;

    ngx_http_im_buf_str(b, "{\"userID\":");
    ngx_http_im_buf_json_str(b, (char *) uid->data, uid->len);
    ngx_http_im_buf_str(b, ",\"onlinePlatformIDs\":[");

    for (i = 0; i < n; i++) {
        if (i) {
            ngx_http_im_buf_str(b, ",");
        }
        ngx_http_im_buf_int(b, platforms[i]);
    }

    ngx_http_im_buf_str(b, "]}");
}


/*
 * A watched user's platforms changed: "<id> <id> ..." ("" offline).
 * Every watching session gets a 2005 push.
 */
void
ngx_http_im_presence_delivery(ngx_str_t *uid, u_char *data, size_t len)
{
    u_char                 *p, *last;
    ngx_int_t               id, platforms[NGX_HTTP_IM_PLATFORM_MAX];
    ngx_uint_t              n;
    ngx_http_im_watched_t  *t;

    t = ngx_http_im_watched_get(uid, 0);
    if (t == NULL || t->state != NGX_HTTP_IM_SUB_DONE) {
        return;
    }

    n = 0;
    last = data + len;

    for (p = data; p < last && n < NGX_HTTP_IM_PLATFORM_MAX; p++) {
        if (*p < '0' || *p > '9') {
            continue;
        }

        for (id = 0; p < last && *p >= '0' && *p <= '9' && id < 100; p++) {
            id = id * 10 + (*p - '0');
        }

        if (id >= NGX_HTTP_IM_PLATFORM_MIN && id <= NGX_HTTP_IM_PLATFORM_MAX)
        {
            platforms[n++] = id;
        }
    }

    t->known = ngx_http_im_presence_mask(platforms, n);
    t->has_known = 1;

    ngx_http_im_presence_changed(t, platforms, n);
}


/* a 2005 push of t's platforms to every session watching it */
static void
ngx_http_im_presence_changed(ngx_http_im_watched_t *t, ngx_int_t *platforms,
    ngx_uint_t n)
{
    ngx_http_im_frames_t  f;

    ngx_http_im_frames_begin(&f, NGX_HTTP_IM_REQ_PRESENCE);
    ngx_http_im_buf_str(&f.json, "{\"subscribers\":[");
    ngx_http_im_presence_entry(&f.json, &t->sn.str, platforms, n);
    ngx_http_im_buf_str(&f.json, "]}");
    ngx_http_im_frames_end(&f);

    ngx_http_im_presence_push(t, &f);
    ngx_http_im_frames_free(&f);
}


static ngx_uint_t
ngx_http_im_presence_mask(ngx_int_t *platforms, ngx_uint_t n)
{
    ngx_uint_t  i, mask;

    mask = 0;

    for (i = 0; i < n; i++) {
        if (platforms[i] >= NGX_HTTP_IM_PLATFORM_MIN
            && platforms[i] <= NGX_HTTP_IM_PLATFORM_MAX)
        {
            mask |= (ngx_uint_t) 1 << platforms[i];
        }
    }

    return mask;
}


/* a 2005 answer read uid's platforms: what the worker now knows */
void
ngx_http_im_presence_seen(ngx_str_t *uid, ngx_int_t *platforms,
    ngx_uint_t n)
{
    ngx_http_im_watched_t  *t;

    t = ngx_http_im_watched_get(uid, 0);
    if (t == NULL) {
        return;
    }

    t->known = ngx_http_im_presence_mask(platforms, n);
    t->has_known = 1;
}


/*
 * t's channel was just subscribed (first, or again after a reconnect or
 * a slot move): a change published before that reached nobody here, so
 * the platforms are read once more, and pushed if they differ from what
 * the watchers were told.  One read per watched user and subscription,
 * whatever the number of watchers.
 */
static void
ngx_http_im_presence_check(ngx_http_im_watched_t *t)
{
    ngx_str_t  *uid;

    uid = ngx_alloc(sizeof(ngx_str_t) + t->sn.str.len, ngx_cycle->log);
    if (uid == NULL) {
        return;
    }

    uid->data = (u_char *) (uid + 1);
    uid->len = t->sn.str.len;
    ngx_memcpy(uid->data, t->sn.str.data, uid->len);

    if (ngx_http_im_store_users_online(uid, 1, ngx_http_im_presence_checked,
                                       uid)
        != NGX_OK)
    {
        ngx_free(uid);
    }
}


static void
ngx_http_im_presence_checked(void *data, ngx_int_t err,
    ngx_http_im_store_online_t *users, ngx_uint_t n)
{
    ngx_str_t  *uid = data;

    ngx_uint_t              mask;
    ngx_http_im_watched_t  *t;

    t = err || n != 1 ? NULL : ngx_http_im_watched_get(uid, 0);

    if (t && t->state == NGX_HTTP_IM_SUB_DONE) {
        mask = ngx_http_im_presence_mask(users[0].platforms,
                                         users[0].nplatforms);

        if (!t->has_known || mask != t->known) {
            t->known = mask;
            t->has_known = 1;
            ngx_http_im_presence_changed(t, users[0].platforms,
                                         users[0].nplatforms);
        }
    }

    ngx_free(uid);
}


/* the frame to every watcher, in each one's encoding */
static void
ngx_http_im_presence_push(ngx_http_im_watched_t *t, ngx_http_im_frames_t *f)
{
    ngx_queue_t            *q;
    ngx_http_im_watch_t    *w;
    ngx_http_im_session_t  *s;

    for (q = ngx_queue_head(&t->watchers);
         q != ngx_queue_sentinel(&t->watchers);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_http_im_watch_t, tlink);
        s = w->session;

        if (!s->upgraded || s->closing || s->closed) {
            continue;
        }

        ngx_http_im_metric_inc(NGX_HTTP_IM_M_PUSHES);
        ngx_http_im_frames_send(s, f);
    }
}


/* the last watcher here left: unsubscribe, or forget t */
static void
ngx_http_im_presence_idle(ngx_http_im_watched_t *t)
{
    switch (t->state) {

    case NGX_HTTP_IM_SUB_DONE:
        if (ngx_http_im_store_watch(&t->sn.str, 0) == NGX_OK) {
            t->state = NGX_HTTP_IM_SUB_LEAVING;
            return;
        }

        ngx_http_im_watched_free(t);
        return;

    case NGX_HTTP_IM_SUB_NONE:
        ngx_http_im_watched_free(t);
        return;

    default:
        /* a reply is in flight; ngx_http_im_presence_subscribed()
         * decides */
        return;
    }
}


/* A (un)subscribe reply for a user's presence channel arrived. */
void
ngx_http_im_presence_subscribed(ngx_str_t *uid, ngx_int_t ok)
{
    ngx_http_im_watched_t  *t;

    t = ngx_http_im_watched_get(uid, 0);
    if (t == NULL) {
        return;
    }

    if (ok == NGX_HTTP_IM_STORE_DROPPED
        || (!ok && t->state == NGX_HTTP_IM_SUB_LEAVING))
    {
        /* its slot moved, or a watcher came while we were leaving */
        if (ngx_queue_empty(&t->watchers)) {
            ngx_http_im_watched_free(t);
            return;
        }

        t->state = ngx_http_im_store_watch(uid, 1) == NGX_OK
                   ? NGX_HTTP_IM_SUB_PENDING : NGX_HTTP_IM_SUB_NONE;
        return;
    }

    if (!ok || (t->state != NGX_HTTP_IM_SUB_PENDING
                && t->state != NGX_HTTP_IM_SUB_DONE))
    {
        return;
    }

    t->state = NGX_HTTP_IM_SUB_DONE;

    if (ngx_queue_empty(&t->watchers)) {
        ngx_http_im_presence_idle(t);
        return;
    }

    ngx_http_im_presence_check(t);
}


/* The subscriber connection (re)connected: every watched user again. */
void
ngx_http_im_presence_resubscribe(void)
{
    ngx_queue_t            *q, *next;
    ngx_http_im_watched_t  *t;

    for (q = ngx_queue_head(&ngx_http_im_worker->watched_list);
         q != ngx_queue_sentinel(&ngx_http_im_worker->watched_list);
         q = next)
    {
        next = ngx_queue_next(q);
        t = ngx_queue_data(q, ngx_http_im_watched_t, link);

        if (ngx_queue_empty(&t->watchers)) {
            ngx_http_im_watched_free(t);
            continue;
        }

        if (t->state == NGX_HTTP_IM_SUB_DONE) {
            (void) ngx_http_im_store_watch(&t->sn.str, 1);
            continue;
        }

        t->state = ngx_http_im_store_watch(&t->sn.str, 1) == NGX_OK
                   ? NGX_HTTP_IM_SUB_PENDING : NGX_HTTP_IM_SUB_NONE;
    }
}


static ngx_http_im_watched_t *
ngx_http_im_watched_get(ngx_str_t *uid, ngx_uint_t create)
{
    uint32_t                hash;
    ngx_http_im_watched_t  *t;

    hash = ngx_crc32_short(uid->data, uid->len);

    t = (ngx_http_im_watched_t *)
            ngx_str_rbtree_lookup(&ngx_http_im_worker->watched, uid, hash);

    if (t || !create) {
        return t;
    }

    t = ngx_alloc(sizeof(ngx_http_im_watched_t) + uid->len, ngx_cycle->log);
    if (t == NULL) {
        return NULL;
    }

    t->sn.str.data = (u_char *) (t + 1);
    t->sn.str.len = uid->len;
    ngx_memcpy(t->sn.str.data, uid->data, uid->len);
    t->sn.node.key = hash;
    t->state = NGX_HTTP_IM_SUB_NONE;
    t->known = 0;
    t->has_known = 0;
    ngx_queue_init(&t->watchers);

    ngx_rbtree_insert(&ngx_http_im_worker->watched, &t->sn.node);
    ngx_queue_insert_tail(&ngx_http_im_worker->watched_list, &t->link);

    return t;
}


static void
ngx_http_im_watched_free(ngx_http_im_watched_t *t)
{
    ngx_rbtree_delete(&ngx_http_im_worker->watched, &t->sn.node);
    ngx_queue_remove(&t->link);
    ngx_free(t);
}
