
/*
 * ngx_im: users' profiles with MongoDB as their source of truth.
 *
 * A registration writes each profile to MongoDB (collection user, the
 * "p" document friend.lua keeps) before Redis.  A profile this Redis
 * does not have, for a user it never loaded (a Redis loss), is loaded
 * with the user's relations (friend.lua "restore") and looked up again.
 * Without MongoDB both are Redis's alone (ngx_http_im_store.c).
 */


#include "ngx_http_im_store_int.h"


typedef struct {
    ngx_http_im_store_user_t    *users;
    ngx_uint_t                   n;
    long long                    now_ms;
    ngx_http_im_store_done_pt    done;
    void                        *data;
} ngx_http_im_store_reg_t;


static void ngx_http_im_store_register_saved(ngx_http_im_mongo_task_t *t);
static void ngx_http_im_store_listed_new(void *data, ngx_int_t err);


/*
 * With MongoDB, the profiles go there first, inserted as friend.lua's
 * "p" documents with rev 1: a user MongoDB has already (its _id exists)
 * is registered, even if this Redis lost it (1102).
 */
ngx_int_t
ngx_http_im_store_users_register(ngx_http_im_store_user_t *users,
    ngx_uint_t n, long long now_ms, ngx_http_im_store_done_pt done,
    void *data)
{
    ngx_uint_t                 i;
    ngx_http_im_buf_t         *b;
    ngx_http_im_mongo_task_t  *t;
    ngx_http_im_store_reg_t   *reg;

    /* the caller's list is gone when it returns; its strings are not */
    reg = ngx_alloc(sizeof(ngx_http_im_store_reg_t)
                    + n * sizeof(ngx_http_im_store_user_t), ngx_cycle->log);
    if (reg == NULL) {
        return NGX_DECLINED;
    }

    reg->users = (ngx_http_im_store_user_t *) (reg + 1);
    ngx_memcpy(reg->users, users, n * sizeof(ngx_http_im_store_user_t));
    reg->n = n;
    reg->now_ms = now_ms;
    reg->done = done;
    reg->data = data;

    if (!ngx_http_im_mongo_enabled()) {
        if (ngx_http_im_store_users_register_redis(reg->users, n, now_ms,
                                                  ngx_http_im_store_listed_new,
                                                  reg)
            != NGX_OK)
        {
            ngx_free(reg);
            return NGX_DECLINED;
        }

        return NGX_OK;
    }

    t = ngx_http_im_mongo_task(NGX_HTTP_IM_MONGO_USER_INSERT, n);
    if (t == NULL) {
        ngx_free(reg);
        return NGX_DECLINED;
    }

    b = &t->in;
    t->n = n;

    for (i = 0; i < n; i++) {
        t->items[i].off = b->len;
        /* a valid user ID needs no escaping */
        ngx_http_im_buf_str(b, "{\"_id\":\"p:");
        ngx_http_im_buf_add(b, users[i].user_id.data, users[i].user_id.len);
        ngx_http_im_buf_str(b, "\",\"ownerUserID\":");
        ngx_http_im_buf_json_str(b, (char *) users[i].user_id.data,
                                 users[i].user_id.len);
        ngx_http_im_buf_str(b, ",\"kind\":\"p\",\"rev\":1,"
                               "\"deleted\":false,\"doc\":{\"nickname\":");
        ngx_http_im_buf_json_str(b, (char *) users[i].nickname.data,
                                 users[i].nickname.len);
        ngx_http_im_buf_str(b, ",\"faceURL\":");
        ngx_http_im_buf_json_str(b, (char *) users[i].face_url.data,
                                 users[i].face_url.len);
        ngx_http_im_buf_str(b, ",\"ex\":");
        ngx_http_im_buf_json_str(b, (char *) users[i].ex.data,
                                 users[i].ex.len);
        ngx_http_im_buf_str(b, ",\"createTime\":");
        ngx_http_im_buf_int(b, now_ms);
        ngx_http_im_buf_str(b, "},\"updateTime\":");
        ngx_http_im_buf_int(b, now_ms);
        ngx_http_im_buf_str(b, "}");
        t->items[i].len = b->len - t->items[i].off;
    }

    if (b->failed) {
        ngx_http_im_mongo_task_free(t);
        ngx_free(reg);
        return NGX_DECLINED;
    }

    return ngx_http_im_store_mongo_post(t, ngx_http_im_store_register_saved,
                                        reg);
}


/* without MongoDB, registered users enter the lists' indexes */
static void
ngx_http_im_store_listed_new(void *data, ngx_int_t err)
{
    ngx_http_im_store_reg_t  *reg = data;

    ngx_uint_t  i;

    for (i = 0; err == 0 && i < reg->n; i++) {
        ngx_http_im_store_users_index(&reg->users[i].user_id,
                                      &reg->users[i].nickname, NULL,
                                      reg->now_ms);
    }

    reg->done(reg->data, err);
    ngx_free(reg);
}


static void
ngx_http_im_store_register_saved(ngx_http_im_mongo_task_t *t)
{
    ngx_http_im_store_reg_t  *reg = t->data;

    ngx_int_t   err;
    ngx_uint_t  i;

    err = t->rc == NGX_OK ? 0 : NGX_HTTP_IM_ERR_UNAVAILABLE;

    for (i = 0; err == 0 && i < t->n; i++) {
        err = t->items[i].duplicate ? NGX_HTTP_IM_ERR_REGISTERED
              : t->items[i].failed ? NGX_HTTP_IM_ERR_UNAVAILABLE : 0;
    }

    ngx_http_im_mongo_task_free(t);

    if (err == 0
        && ngx_http_im_store_users_register_redis(reg->users, reg->n, reg->now_ms,
                                            reg->done, reg->data)
           != NGX_OK)
    {
        err = NGX_HTTP_IM_ERR_UNAVAILABLE;
    }

    if (err) {
        reg->done(reg->data, err);
    }

    ngx_free(reg);
}


typedef struct {
    ngx_str_t                   *uids;
    ngx_uint_t                   n;
    ngx_uint_t                   pending;
    ngx_uint_t                   again;
    ngx_http_im_store_users_pt   done;
    void                        *data;
} ngx_http_im_store_lookup_t;


static void ngx_http_im_store_looked_up(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n);
static void ngx_http_im_store_user_loaded(void *data,
    ngx_http_im_store_conv_res_t *r);


ngx_int_t
ngx_http_im_store_users_info(ngx_str_t *uids, ngx_uint_t n,
    ngx_http_im_store_users_pt done, void *data)
{
    ngx_int_t                    rc;
    ngx_http_im_store_lookup_t  *l;

    if (!ngx_http_im_mongo_enabled()) {
        return ngx_http_im_store_users_profiles(uids, n, done, data);
    }

    l = ngx_calloc(sizeof(ngx_http_im_store_lookup_t), ngx_cycle->log);
    if (l == NULL) {
        return NGX_DECLINED;
    }

    l->uids = uids;
    l->n = n;
    l->done = done;
    l->data = data;

    rc = ngx_http_im_store_users_profiles(uids, n,
                                          ngx_http_im_store_looked_up, l);
    if (rc != NGX_OK) {
        ngx_free(l);
    }

    return rc;
}


/* the users never loaded into this Redis are loaded, then looked up
 * once more (an ID MongoDB does not know stays unknown) */
static void
ngx_http_im_store_looked_up(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n)
{
    ngx_http_im_store_lookup_t  *l = data;

    ngx_uint_t  i;

    for (i = 0; err == 0 && !l->again && i < n; i++) {
        if (users[i].load
            && ngx_http_im_store_user_load(&users[i].user_id,
                                           ngx_http_im_store_user_loaded, l)
               == NGX_OK)
        {
            l->pending++;
        }
    }

    if (l->pending) {
        l->again = 1;
        return;
    }

    l->done(l->data, err, users, n);
    ngx_free(l);
}


static void
ngx_http_im_store_user_loaded(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_store_lookup_t  *l = data;

    if (--l->pending) {
        return;
    }

    if (ngx_http_im_store_users_profiles(l->uids, l->n,
                                         ngx_http_im_store_looked_up, l)
        != NGX_OK)
    {
        l->done(l->data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL, 0);
        ngx_free(l);
    }
}


/* ----------------------------------------------------------------------
 * lists of users: MongoDB's profiles, else Redis's indexes
 */


typedef struct {
    ngx_http_im_store_list_pt    done;
    void                        *data;
    long long                    total;
    ngx_str_t                   *uids;
    ngx_uint_t                   n;
    yajl_val                     root;
} ngx_http_im_store_list_t;


static void ngx_http_im_store_listed(ngx_http_im_mongo_task_t *t);
static void ngx_http_im_store_indexed(redisReply *reply, void *data);
static void ngx_http_im_store_list_profiles(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n);
static void ngx_http_im_store_user_doc(ngx_http_im_store_user_t *u,
    yajl_val d);
static ngx_str_t ngx_http_im_store_json_str(yajl_val v);


/*
 * A page (skip, at most limit <= 1000) of the registered users: how
 * NGX_HTTP_IM_STORE_LIST_ID the one user "what", _NICK those whose
 * nickname holds "what" (without MongoDB: starts with it), _ALL
 * everyone.  done gets the total and the page's profiles.
 */
ngx_int_t
ngx_http_im_store_users_list(ngx_uint_t how, ngx_str_t *what,
    ngx_uint_t skip, ngx_uint_t limit, ngx_http_im_store_list_pt done,
    void *data)
{
    static const char         *hows[] = { "", "id", "nick" };
    ngx_int_t                  rc;
    ngx_http_im_store_args_t   a;
    ngx_http_im_mongo_task_t  *t;
    ngx_http_im_store_list_t  *l;

    l = ngx_calloc(sizeof(ngx_http_im_store_list_t), ngx_cycle->log);
    if (l == NULL) {
        return NGX_DECLINED;
    }

    l->done = done;
    l->data = data;

    if (ngx_http_im_mongo_enabled()) {
        t = ngx_http_im_mongo_task(NGX_HTTP_IM_MONGO_USER_LIST, 0);
        if (t == NULL) {
            ngx_free(l);
            return NGX_DECLINED;
        }

        ngx_http_im_buf_str(&t->in, hows[how]);
        ngx_http_im_buf_str(&t->in, "\n");
        ngx_http_im_buf_add(&t->in, what->data, what->len);
        t->value = (int64_t) skip;
        t->stored = (int64_t) limit;

        rc = ngx_http_im_store_mongo_post(t, ngx_http_im_store_listed, l);

    } else {
        ngx_http_im_store_args(&a);
        ngx_http_im_store_arg(&a, NGX_HTTP_IM_STORE_USERS_ALL,
                              sizeof(NGX_HTTP_IM_STORE_USERS_ALL) - 1);
        ngx_http_im_store_arg(&a, NGX_HTTP_IM_STORE_USERS_NICKS,
                              sizeof(NGX_HTTP_IM_STORE_USERS_NICKS) - 1);
        ngx_http_im_store_arg(&a, hows[how], ngx_strlen(hows[how]));
        ngx_http_im_store_arg(&a, what->data, what->len);
        ngx_http_im_store_arg_int(&a, (long long) skip);
        ngx_http_im_store_arg_int(&a, (long long) limit);

        rc = ngx_http_im_store_call(NGX_HTTP_IM_LUA_USERS_LIST,
                                    ngx_http_im_store_indexed, l, 2, &a);
    }

    if (rc != NGX_OK) {
        ngx_free(l);
    }

    return rc;
}


/* MongoDB's {"total": n, "users": [documents]} */
static void
ngx_http_im_store_listed(ngx_http_im_mongo_task_t *t)
{
    ngx_http_im_store_list_t  *l = t->data;

    char                       err[64];
    yajl_val                   users, d;
    ngx_uint_t                 i, n;
    ngx_http_im_store_user_t  *list;

    l->root = t->rc == NGX_OK
              ? ngx_http_im_json_parse(t->out.data, t->out.len, err,
                                       sizeof(err))
              : NULL;
    ngx_http_im_mongo_task_free(t);

    users = l->root ? ngx_http_im_json_get(l->root, "users") : NULL;
    n = users && YAJL_IS_ARRAY(users) ? users->u.array.len : 0;
    list = ngx_calloc((n + 1) * sizeof(ngx_http_im_store_user_t),
                      ngx_cycle->log);

    if (users == NULL || list == NULL) {
        ngx_http_im_store_list_profiles(l, NGX_HTTP_IM_ERR_UNAVAILABLE,
                                        NULL, 0);
        ngx_free(list);
        return;
    }

    d = ngx_http_im_json_get(l->root, "total");
    l->total = d && YAJL_IS_INTEGER(d) ? YAJL_GET_INTEGER(d) : 0;

    for (i = 0; i < n; i++) {
        d = users->u.array.values[i];
        ngx_http_im_store_user_doc(&list[i], d);
    }

    ngx_http_im_store_list_profiles(l, 0, list, n);
    ngx_free(list);
}


/* a profile document's fields (strings of the parsed tree) */
static void
ngx_http_im_store_user_doc(ngx_http_im_store_user_t *u, yajl_val d)
{
    yajl_val  doc, v;

    u->user_id = ngx_http_im_store_json_str(ngx_http_im_json_get(d,
                                                           "ownerUserID"));
    doc = ngx_http_im_json_get(d, "doc");
    u->nickname = ngx_http_im_store_json_str(ngx_http_im_json_get(doc,
                                                              "nickname"));
    u->face_url = ngx_http_im_store_json_str(ngx_http_im_json_get(doc,
                                                              "faceURL"));
    u->ex = ngx_http_im_store_json_str(ngx_http_im_json_get(doc, "ex"));
    v = ngx_http_im_json_get(doc, "createTime");
    u->create_time = v && YAJL_IS_INTEGER(v) ? YAJL_GET_INTEGER(v) : 0;
    u->found = u->user_id.len > 0;
}


static ngx_str_t
ngx_http_im_store_json_str(yajl_val v)
{
    ngx_str_t  s;

    if (v && YAJL_IS_STRING(v) && v->u.string) {
        s.data = (u_char *) v->u.string;
        s.len = ngx_strlen(s.data);

    } else {
        ngx_str_set(&s, "");
    }

    return s;
}


/* users_list.lua's {total, {uid, ...}}: then their profiles */
static void
ngx_http_im_store_indexed(redisReply *reply, void *data)
{
    ngx_http_im_store_list_t  *l = data;

    u_char      *p;
    ngx_str_t    id;
    ngx_uint_t   i, n;
    redisReply  *ids;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 2 || reply->element[1]->type
                                   != REDIS_REPLY_ARRAY)
    {
        ngx_http_im_store_list_profiles(l, NGX_HTTP_IM_ERR_UNAVAILABLE,
                                        NULL, 0);
        return;
    }

    l->total = ngx_http_im_store_int(reply->element[0]);
    ids = reply->element[1];
    n = ids->elements;

    /* the IDs outlive the reply: copied after the array */
    l->uids = ngx_alloc(n * (sizeof(ngx_str_t) + NGX_HTTP_IM_UID_MAX) + 1,
                        ngx_cycle->log);
    p = l->uids ? (u_char *) (l->uids + n) : NULL;

    for (i = 0; p && i < n; i++) {
        ngx_http_im_store_str(ids->element[i], &id);

        if (id.len && id.len <= NGX_HTTP_IM_UID_MAX) {
            l->uids[l->n].data = p;
            l->uids[l->n++].len = id.len;
            p = ngx_cpymem(p, id.data, id.len);
        }
    }

    if (l->uids == NULL || l->n == 0
        || ngx_http_im_store_users_profiles(l->uids, l->n,
                                            ngx_http_im_store_list_profiles,
                                            l)
           != NGX_OK)
    {
        ngx_http_im_store_list_profiles(l, l->uids ? 0
                                           : NGX_HTTP_IM_ERR_UNAVAILABLE,
                                        NULL, 0);
    }
}


static void
ngx_http_im_store_list_profiles(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n)
{
    ngx_http_im_store_list_t  *l = data;

    l->done(l->data, err, l->total, users, err ? 0 : n);

    if (l->root) {
        yajl_tree_free(l->root);
    }

    ngx_free(l->uids);
    ngx_free(l);
}


/*
 * Without MongoDB, the indexes users_list.lua reads: the registration
 * order, and the nicknames (one "<nickname>\0<uid>" each; old, when
 * set, is replaced).  Best effort: an index write that fails leaves a
 * user out of lists, never out of the system.
 */
void
ngx_http_im_store_users_index(ngx_str_t *uid, ngx_str_t *nick,
    ngx_str_t *old, long long create_time)
{
    ngx_http_im_store_args_t  a;
    u_char                    entry[NGX_HTTP_IM_UID_MAX + 1024 + 2];

    if (ngx_http_im_mongo_enabled()
        || uid->len > NGX_HTTP_IM_UID_MAX || nick->len > 1024
        || (old && old->len > 1024))
    {
        return;
    }

    if (create_time) {
        ngx_http_im_store_args(&a);
        ngx_http_im_store_arg(&a, "ZADD", 4);
        ngx_http_im_store_arg(&a, NGX_HTTP_IM_STORE_USERS_ALL,
                              sizeof(NGX_HTTP_IM_STORE_USERS_ALL) - 1);
        ngx_http_im_store_arg_int(&a, create_time);
        ngx_http_im_store_arg(&a, uid->data, uid->len);
        (void) ngx_http_im_store_send(NULL, NULL, &a);
    }

    if (old) {
        ngx_http_im_store_args(&a);
        ngx_http_im_store_arg(&a, "ZREM", 4);
        ngx_http_im_store_arg(&a, NGX_HTTP_IM_STORE_USERS_NICKS,
                              sizeof(NGX_HTTP_IM_STORE_USERS_NICKS) - 1);
        ngx_http_im_store_arg(&a, entry,
                              ngx_sprintf(entry, "%V%Z%V", old, uid)
                              - entry);
        (void) ngx_http_im_store_send(NULL, NULL, &a);
    }

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg(&a, "ZADD", 4);
    ngx_http_im_store_arg(&a, NGX_HTTP_IM_STORE_USERS_NICKS,
                          sizeof(NGX_HTTP_IM_STORE_USERS_NICKS) - 1);
    ngx_http_im_store_arg(&a, "0", 1);
    ngx_http_im_store_arg(&a, entry,
                          ngx_sprintf(entry, "%V%Z%V", nick, uid) - entry);
    (void) ngx_http_im_store_send(NULL, NULL, &a);
}
