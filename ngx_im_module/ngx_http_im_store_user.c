
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


/*
 * With MongoDB, the profiles go there first, as friend.lua's "p" documents
 * with rev 1: a user MongoDB has already (stored with a rev as new) is
 * registered, even if this Redis lost it (1102).
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

    if (!ngx_http_im_mongo_enabled()) {
        return ngx_http_im_store_users_register_redis(users, n, now_ms, done,
                                                data);
    }

    t = ngx_http_im_mongo_task(NGX_HTTP_IM_MONGO_USER_SAVE, n);

    /* the caller's list is gone when it returns; its strings are not */
    reg = ngx_alloc(sizeof(ngx_http_im_store_reg_t)
                    + n * sizeof(ngx_http_im_store_user_t), ngx_cycle->log);

    if (t == NULL || reg == NULL) {
        if (t) {
            ngx_http_im_mongo_task_free(t);
        }
        ngx_free(reg);
        return NGX_DECLINED;
    }

    reg->users = (ngx_http_im_store_user_t *) (reg + 1);
    ngx_memcpy(reg->users, users, n * sizeof(ngx_http_im_store_user_t));
    reg->n = n;
    reg->now_ms = now_ms;
    reg->done = done;
    reg->data = data;

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
