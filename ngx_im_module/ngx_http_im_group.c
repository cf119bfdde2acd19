
/*
 * ngx_im: this worker's groups.  A group message is published once, on
 * the group's channel; the worker subscribes to that channel while it
 * holds at least one online member, and fans each message out to the
 * members' sessions here.  So the Redis work of a message does not grow
 * with the group.
 *
 * A user's groups are loaded when its first session here logs in, and
 * the login completes only once every one of them is subscribed
 * ("subscribe before you serve").  Later changes arrive as lines: "g
 * +<gid>" on the user's channel (joined), "g -<uid>" (left) on the
 * group's channel, in order with its messages.
 *
 * A group's subscription moves through the states of a user's
 * (session.c): NONE -> PENDING -> DONE -> LEAVING.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_group.h"


typedef struct {
    ngx_str_node_t             sn;
    ngx_queue_t                link;         /* in worker->group_list */
    ngx_queue_t                members;      /* ngx_http_im_gmember_t */
    ngx_uint_t                 state;
} ngx_http_im_group_t;

typedef struct {
    ngx_queue_t                glink;        /* in group->members */
    ngx_queue_t                ulink;        /* in user->groups */
    ngx_http_im_group_t       *group;
    ngx_http_im_user_t        *user;
    ngx_uint_t                 waiting;      /* its login waits on it */
} ngx_http_im_gmember_t;

typedef struct {
    uint64_t                   load;
    ngx_str_t                  uid;
} ngx_http_im_group_load_t;


static ngx_http_im_group_users_t  *ngx_http_im_group_users;


static void ngx_http_im_group_loaded(void *data,
    ngx_http_im_store_conv_res_t *r);
static void ngx_http_im_group_add(ngx_http_im_user_t *u, ngx_str_t *gid,
    ngx_uint_t wait);
static void ngx_http_im_group_remove(ngx_http_im_gmember_t *m);
static void ngx_http_im_group_idle(ngx_http_im_group_t *g);
static void ngx_http_im_group_release(ngx_http_im_group_t *g);
static void ngx_http_im_group_unwait(ngx_http_im_gmember_t *m);
static ngx_http_im_group_t *ngx_http_im_group_get(ngx_str_t *gid,
    ngx_uint_t create);
static void ngx_http_im_group_free(ngx_http_im_group_t *g);


void
ngx_http_im_group_init(ngx_http_im_group_users_t *users)
{
    ngx_http_im_group_users = users;
}


/*
 * The first session of u logs in: its groups are loaded and subscribed
 * before users->ready() lets the logins complete.
 */
void
ngx_http_im_group_load(ngx_http_im_user_t *u)
{
    ngx_str_t                  args;
    ngx_http_im_group_load_t  *l;

    l = ngx_alloc(sizeof(ngx_http_im_group_load_t) + u->sn.str.len,
                  ngx_cycle->log);
    if (l == NULL) {
        return;
    }

    l->load = ++ngx_http_im_worker->next_id;
    l->uid.data = (u_char *) (l + 1);
    l->uid.len = u->sn.str.len;
    ngx_memcpy(l->uid.data, u->sn.str.data, u->sn.str.len);

    ngx_str_set(&args, "{}");

    if (ngx_http_im_store_conv(&l->uid, "groups", &args,
                               ngx_http_im_group_loaded, l)
        != NGX_OK)
    {
        /* its groups stay unsubscribed: pulls still find every message */
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "im: cannot load the groups of \"%V\"", &l->uid);
        ngx_free(l);
        return;
    }

    u->gload = l->load;
    u->gwait++;
}


/* {"groupIDs": [...]} */
static void
ngx_http_im_group_loaded(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_group_load_t  *l = data;

    char                 err[64];
    yajl_val             root, list, v;
    ngx_str_t            gid;
    ngx_uint_t           i;
    ngx_http_im_user_t  *u;

    u = ngx_http_im_group_users->find(&l->uid);

    /* a user freed meanwhile, and perhaps made again, loads anew */
    if (u == NULL || u->gload != l->load) {
        ngx_free(l);
        return;
    }

    root = r->err ? NULL
                  : ngx_http_im_json_parse(r->answer.data, r->answer.len,
                                           err, sizeof(err));
    list = root ? ngx_http_im_json_get(root, "groupIDs") : NULL;

    if (list && YAJL_IS_ARRAY(list)) {
        for (i = 0; i < list->u.array.len; i++) {
            v = list->u.array.values[i];

            if (YAJL_IS_STRING(v)) {
                gid.data = (u_char *) YAJL_GET_STRING(v);
                gid.len = ngx_strlen(gid.data);
                ngx_http_im_group_add(u, &gid, 1);
            }
        }

    } else {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "im: cannot load the groups of \"%V\": %i",
                      &l->uid, r->err);
    }

    if (root) {
        yajl_tree_free(root);
    }

    ngx_free(l);

    if (--u->gwait == 0) {
        ngx_http_im_group_users->ready(u);
    }
}


/* u is in group gid: subscribed if it is the first member here */
static void
ngx_http_im_group_add(ngx_http_im_user_t *u, ngx_str_t *gid,
    ngx_uint_t wait)
{
    ngx_queue_t            *q;
    ngx_http_im_group_t    *g;
    ngx_http_im_gmember_t  *m;

    if (gid->len == 0 || gid->len > NGX_HTTP_IM_UID_MAX) {
        return;
    }

    for (q = ngx_queue_head(&u->groups);
         q != ngx_queue_sentinel(&u->groups);
         q = ngx_queue_next(q))
    {
        m = ngx_queue_data(q, ngx_http_im_gmember_t, ulink);

        if (m->group->sn.str.len == gid->len
            && ngx_strncmp(m->group->sn.str.data, gid->data, gid->len) == 0)
        {
            return;
        }
    }

    g = ngx_http_im_group_get(gid, 1);
    m = ngx_alloc(sizeof(ngx_http_im_gmember_t), ngx_cycle->log);

    if (g == NULL || m == NULL) {
        if (m) {
            ngx_free(m);
        }
        if (g && ngx_queue_empty(&g->members)) {
            ngx_http_im_group_idle(g);
        }
        return;
    }

    m->group = g;
    m->user = u;
    m->waiting = 0;
    ngx_queue_insert_tail(&g->members, &m->glink);
    ngx_queue_insert_tail(&u->groups, &m->ulink);

    if (g->state == NGX_HTTP_IM_SUB_NONE) {
        if (ngx_http_im_store_group_subscribe(gid, 1) != NGX_OK) {
            ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                          "im: cannot subscribe to group \"%V\"", gid);
            return;
        }

        g->state = NGX_HTTP_IM_SUB_PENDING;
    }

    if (wait && g->state != NGX_HTTP_IM_SUB_DONE) {
        m->waiting = 1;
        u->gwait++;
    }
}


static void
ngx_http_im_group_remove(ngx_http_im_gmember_t *m)
{
    ngx_http_im_group_t  *g;

    g = m->group;

    ngx_http_im_group_unwait(m);
    ngx_queue_remove(&m->glink);
    ngx_queue_remove(&m->ulink);
    ngx_free(m);

    if (ngx_queue_empty(&g->members)) {
        ngx_http_im_group_idle(g);
    }
}


/* the user's last session here left: its memberships go */
void
ngx_http_im_group_user_gone(ngx_http_im_user_t *u)
{
    ngx_queue_t  *q;

    u->gload = 0;

    while (!ngx_queue_empty(&u->groups)) {
        q = ngx_queue_head(&u->groups);
        ngx_http_im_group_remove(ngx_queue_data(q, ngx_http_im_gmember_t,
                                                ulink));
    }

    u->gwait = 0;
}


/* "+<gid>" on the user's channel: it joined gid */
void
ngx_http_im_group_user_line(ngx_http_im_user_t *u, ngx_str_t *line)
{
    ngx_str_t  gid;

    if (line->len < 2 || line->data[0] != '+') {
        return;
    }

    gid.data = line->data + 1;
    gid.len = line->len - 1;

    ngx_http_im_group_add(u, &gid, 0);
}


/* a message, or a control line, on a group's channel */
void
ngx_http_im_group_delivery(ngx_str_t *gid, u_char *data, size_t len)
{
    ngx_str_t               uid;
    ngx_queue_t            *q;
    ngx_http_im_group_t    *g;
    ngx_http_im_frames_t    f;
    ngx_http_im_gmember_t  *m;
    ngx_http_im_delivery_t  d;

    g = ngx_http_im_group_get(gid, 0);
    if (g == NULL || g->state != NGX_HTTP_IM_SUB_DONE) {
        return;
    }

    if (ngx_http_im_store_delivery_parse(data, len, &d) != NGX_OK) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "im: malformed delivery for group \"%V\"", gid);
        return;
    }

    if (d.kind == NGX_HTTP_IM_DELIVERY_MSG) {
        /* one frame per encoding for all of them */
        ngx_memzero(&f, sizeof(ngx_http_im_frames_t));

        for (q = ngx_queue_head(&g->members);
             q != ngx_queue_sentinel(&g->members);
             q = ngx_queue_next(q))
        {
            m = ngx_queue_data(q, ngx_http_im_gmember_t, glink);
            ngx_http_im_group_users->push(m->user, &d, &f);
        }

        ngx_http_im_frames_free(&f);
        return;
    }

    if (d.kind != NGX_HTTP_IM_DELIVERY_GROUP || d.json.len == 0) {
        return;
    }

    /* "-<uid>": that member left (a user is in g's list once) */
    if (d.json.data[0] != '-') {
        return;
    }

    uid.data = d.json.data + 1;
    uid.len = d.json.len - 1;

    for (q = ngx_queue_head(&g->members);
         q != ngx_queue_sentinel(&g->members);
         q = ngx_queue_next(q))
    {
        m = ngx_queue_data(q, ngx_http_im_gmember_t, glink);

        if (m->user->sn.str.len == uid.len
            && ngx_strncmp(m->user->sn.str.data, uid.data, uid.len) == 0)
        {
            /* g may be freed with its last member: stop here */
            ngx_http_im_group_remove(m);
            return;
        }
    }
}


/* the last member here left: unsubscribe, or forget g */
static void
ngx_http_im_group_idle(ngx_http_im_group_t *g)
{
    switch (g->state) {

    case NGX_HTTP_IM_SUB_DONE:
        if (ngx_http_im_store_group_subscribe(&g->sn.str, 0) == NGX_OK) {
            g->state = NGX_HTTP_IM_SUB_LEAVING;
            return;
        }

        ngx_http_im_group_free(g);
        return;

    case NGX_HTTP_IM_SUB_NONE:
        ngx_http_im_group_free(g);
        return;

    default:
        /* a reply is in flight; ngx_http_im_group_subscribed() decides */
        return;
    }
}


/* A (un)subscribe reply for a group's channel arrived. */
void
ngx_http_im_group_subscribed(ngx_str_t *gid, ngx_int_t ok)
{
    ngx_http_im_group_t  *g;

    g = ngx_http_im_group_get(gid, 0);
    if (g == NULL) {
        return;
    }

    if (ok == NGX_HTTP_IM_STORE_DROPPED) {
        /* its slot moved (or Redis refused it): subscribe again; the
         * logins waiting on it go on without it, pulls find the rest */
        ngx_http_im_group_release(g);

        if (ngx_queue_empty(&g->members)) {
            ngx_http_im_group_free(g);
            return;
        }

        g->state = ngx_http_im_store_group_subscribe(gid, 1) == NGX_OK
                   ? NGX_HTTP_IM_SUB_PENDING : NGX_HTTP_IM_SUB_NONE;
        return;
    }

    if (!ok) {
        if (g->state != NGX_HTTP_IM_SUB_LEAVING) {
            return;
        }

        if (ngx_queue_empty(&g->members)) {
            ngx_http_im_group_free(g);
            return;
        }

        /* a member came while we were leaving */
        g->state = ngx_http_im_store_group_subscribe(gid, 1) == NGX_OK
                   ? NGX_HTTP_IM_SUB_PENDING : NGX_HTTP_IM_SUB_NONE;
        return;
    }

    if (g->state != NGX_HTTP_IM_SUB_PENDING) {
        return;
    }

    if (ngx_queue_empty(&g->members)) {
        g->state = NGX_HTTP_IM_SUB_DONE;
        ngx_http_im_group_idle(g);
        return;
    }

    g->state = NGX_HTTP_IM_SUB_DONE;
    ngx_http_im_group_release(g);
}


/* the logins waiting on g's subscription go on */
static void
ngx_http_im_group_release(ngx_http_im_group_t *g)
{
    ngx_queue_t            *q, *next;
    ngx_http_im_gmember_t  *m;

    for (q = ngx_queue_head(&g->members);
         q != ngx_queue_sentinel(&g->members);
         q = next)
    {
        next = ngx_queue_next(q);
        m = ngx_queue_data(q, ngx_http_im_gmember_t, glink);
        ngx_http_im_group_unwait(m);
    }
}


static void
ngx_http_im_group_unwait(ngx_http_im_gmember_t *m)
{
    if (!m->waiting) {
        return;
    }

    m->waiting = 0;

    if (--m->user->gwait == 0) {
        ngx_http_im_group_users->ready(m->user);
    }
}


/* The subscriber connection (re)connected: every group again. */
void
ngx_http_im_group_resubscribe(void)
{
    ngx_queue_t          *q, *next;
    ngx_http_im_group_t  *g;

    for (q = ngx_queue_head(&ngx_http_im_worker->group_list);
         q != ngx_queue_sentinel(&ngx_http_im_worker->group_list);
         q = next)
    {
        next = ngx_queue_next(q);
        g = ngx_queue_data(q, ngx_http_im_group_t, link);

        if (ngx_queue_empty(&g->members)) {
            ngx_http_im_group_free(g);
            continue;
        }

        if (g->state == NGX_HTTP_IM_SUB_DONE) {
            (void) ngx_http_im_store_group_subscribe(&g->sn.str, 1);
            continue;
        }

        g->state = ngx_http_im_store_group_subscribe(&g->sn.str, 1)
                   == NGX_OK
                   ? NGX_HTTP_IM_SUB_PENDING : NGX_HTTP_IM_SUB_NONE;

        if (g->state == NGX_HTTP_IM_SUB_NONE) {
            ngx_http_im_group_release(g);
        }
    }
}


static ngx_http_im_group_t *
ngx_http_im_group_get(ngx_str_t *gid, ngx_uint_t create)
{
    uint32_t              hash;
    ngx_http_im_group_t  *g;

    hash = ngx_crc32_short(gid->data, gid->len);

    g = (ngx_http_im_group_t *)
            ngx_str_rbtree_lookup(&ngx_http_im_worker->groups, gid, hash);

    if (g || !create) {
        return g;
    }

    g = ngx_alloc(sizeof(ngx_http_im_group_t) + gid->len, ngx_cycle->log);
    if (g == NULL) {
        return NULL;
    }

    g->sn.str.data = (u_char *) (g + 1);
    g->sn.str.len = gid->len;
    ngx_memcpy(g->sn.str.data, gid->data, gid->len);
    g->sn.node.key = hash;
    g->state = NGX_HTTP_IM_SUB_NONE;
    ngx_queue_init(&g->members);

    ngx_rbtree_insert(&ngx_http_im_worker->groups, &g->sn.node);
    ngx_queue_insert_tail(&ngx_http_im_worker->group_list, &g->link);

    return g;
}


static void
ngx_http_im_group_free(ngx_http_im_group_t *g)
{
    ngx_rbtree_delete(&ngx_http_im_worker->groups, &g->sn.node);
    ngx_queue_remove(&g->link);
    ngx_free(g);
}
