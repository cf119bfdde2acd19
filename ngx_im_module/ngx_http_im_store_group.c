
/*
 * ngx_im: the stores of groups (group.lua) and of users' relations
 * (friend.lua), and the routing of groups.
 *
 * A group's record, members and applications live in the slot of its
 * conversation sg_<groupID>, so that a send checks membership and mutes
 * in the script that takes its seq.  A group message is published once,
 * on the group's channel; each worker holding members subscribes to it
 * (docs/architecture.md, "Groups").
 *
 * A user's profile, friends, blacklist and friend applications live in
 * the user's slot.  Both are records whose source of truth is MongoDB
 * when it is configured: one machinery loads an owner's documents the
 * first time this Redis needs them and saves what an op changed before
 * the op answers.
 */


#include "ngx_http_im_store_int.h"


#define NGX_HTTP_IM_GROUP_OK        0
#define NGX_HTTP_IM_GROUP_LOAD     -2

/* documents per restore call */
#define NGX_HTTP_IM_GROUP_CHUNK     1000


/* what differs between the kinds of records */
typedef struct {
    const char                  *name;        /* in logs */
    ngx_uint_t                   script;
    const char                  *key;         /* KEYS[1], of the owner */
    const char                  *prefix;      /* the other keys' */
    ngx_uint_t                   load;        /* MongoDB ops */
    ngx_uint_t                   save;
    ngx_uint_t                   load_max;    /* documents of an owner */
    ngx_uint_t                   max;         /* ARGV[10] */
    const char                  *found;       /* the kind of document */
                                              /* that exists; NULL: any */
} ngx_http_im_store_kind_t;


static const ngx_http_im_store_kind_t  ngx_http_im_store_group_kind = {
    "group", NGX_HTTP_IM_LUA_GROUP, "im:{c:sg_%V}:g", "im:{c:sg_%V}:",
    NGX_HTTP_IM_MONGO_GROUP_LOAD, NGX_HTTP_IM_MONGO_GROUP_SAVE,
    2 * NGX_HTTP_IM_GROUP_MAX_MEMBERS + 10000, NGX_HTTP_IM_GROUP_MAX_MEMBERS,
    "g"
};

/* a user with no document is loaded too: it has nothing yet */
static const ngx_http_im_store_kind_t  ngx_http_im_store_user_kind = {
    "user", NGX_HTTP_IM_LUA_FRIEND, "im:{u:%V}:profile", "im:{u:%V}:f:",
    NGX_HTTP_IM_MONGO_USER_LOAD, NGX_HTTP_IM_MONGO_USER_SAVE,
    2 * NGX_HTTP_IM_MAX_FRIENDS + 2 * NGX_HTTP_IM_MAX_FRIEND_APPS + 1,
    NGX_HTTP_IM_MAX_FRIENDS, NULL
};


typedef struct {
    const ngx_http_im_store_kind_t  *kind;
    ngx_str_t                    gid;         /* or the user's ID */
    ngx_str_t                    caller;
    char                         op[24];      /* "": a load alone */
    ngx_uint_t                   admin;
    ngx_uint_t                   loaded;
    ngx_http_im_buf_t            args;
    ngx_http_im_store_conv_pt    done;
    void                        *data;
    redisReply                  *reply;       /* kept while MongoDB saves */
    yajl_val                     docs;        /* a load's, restored */
    ngx_uint_t                   next;
    ngx_uint_t                   found;
} ngx_http_im_store_group_call_t;


static ngx_int_t ngx_http_im_store_record(
    const ngx_http_im_store_kind_t *kind, ngx_str_t *gid, const char *op,
    ngx_str_t *caller, ngx_uint_t admin, ngx_str_t *args,
    ngx_http_im_store_conv_pt done, void *data);
static ngx_int_t ngx_http_im_store_record_load(
    const ngx_http_im_store_kind_t *kind, ngx_str_t *gid,
    ngx_http_im_store_conv_pt done, void *data);
static ngx_int_t ngx_http_im_store_group_run(
    ngx_http_im_store_group_call_t *gc, const char *op, ngx_str_t *args);
static void ngx_http_im_store_group_reply(redisReply *reply, void *data);
static void ngx_http_im_store_group_finish(ngx_http_im_store_group_call_t *gc,
    ngx_int_t err, redisReply *reply);
static ngx_int_t ngx_http_im_store_group_fetch(
    ngx_http_im_store_group_call_t *gc);
static void ngx_http_im_store_group_fetched(ngx_http_im_mongo_task_t *t);
static ngx_int_t ngx_http_im_store_group_restore(
    ngx_http_im_store_group_call_t *gc);
static void ngx_http_im_store_group_restored(redisReply *reply, void *data);
static ngx_int_t ngx_http_im_store_group_save(
    ngx_http_im_store_group_call_t *gc, redisReply *docs);
static void ngx_http_im_store_group_saved(ngx_http_im_mongo_task_t *t);


static ngx_http_im_store_group_call_t *
ngx_http_im_store_group_call(const ngx_http_im_store_kind_t *kind,
    ngx_str_t *gid, const char *op, ngx_str_t *caller, ngx_str_t *args,
    ngx_http_im_store_conv_pt done, void *data)
{
    ngx_http_im_store_group_call_t  *gc;

    gc = ngx_calloc(sizeof(ngx_http_im_store_group_call_t) + gid->len
                    + caller->len, ngx_cycle->log);
    if (gc == NULL) {
        return NULL;
    }

    gc->kind = kind;
    gc->found = kind->found == NULL;
    gc->gid.data = (u_char *) (gc + 1);
    gc->gid.len = gid->len;
    ngx_memcpy(gc->gid.data, gid->data, gid->len);
    gc->caller.data = gc->gid.data + gid->len;
    gc->caller.len = caller->len;
    ngx_memcpy(gc->caller.data, caller->data, caller->len);
    ngx_cpystrn((u_char *) gc->op, (u_char *) op, sizeof(gc->op));
    gc->done = done;
    gc->data = data;

    /* kept for a second run, after a load from MongoDB */
    ngx_http_im_buf_init(&gc->args, NGX_HTTP_IM_API_MAX_BODY + 4096);
    ngx_http_im_buf_add(&gc->args, args->data, args->len);

    if (gc->args.failed) {
        ngx_http_im_buf_free(&gc->args);
        ngx_free(gc);
        return NULL;
    }

    return gc;
}


/*
 * Runs op of group.lua for group gid, as caller (an app admin with
 * admin set), with args (a JSON object, the request body).  done gets
 * {err, msg, answer, extra: the effects JSON}.  With MongoDB, a group
 * this Redis never had is loaded first, and the documents the op changed
 * are in MongoDB before done() runs.
 */
ngx_int_t
ngx_http_im_store_group(ngx_str_t *gid, const char *op, ngx_str_t *caller,
    ngx_uint_t admin, ngx_str_t *args, ngx_http_im_store_conv_pt done,
    void *data)
{
    return ngx_http_im_store_record(&ngx_http_im_store_group_kind, gid, op,
                                    caller, admin, args, done, data);
}


/* the same with op of friend.lua, in user uid's slot */
ngx_int_t
ngx_http_im_store_friend(ngx_str_t *uid, const char *op, ngx_str_t *caller,
    ngx_uint_t admin, ngx_str_t *args, ngx_http_im_store_conv_pt done,
    void *data)
{
    return ngx_http_im_store_record(&ngx_http_im_store_user_kind, uid, op,
                                    caller, admin, args, done, data);
}


static ngx_int_t
ngx_http_im_store_record(const ngx_http_im_store_kind_t *kind,
    ngx_str_t *gid, const char *op, ngx_str_t *caller, ngx_uint_t admin,
    ngx_str_t *args, ngx_http_im_store_conv_pt done, void *data)
{
    ngx_str_t                        a;
    ngx_http_im_store_group_call_t  *gc;

    gc = ngx_http_im_store_group_call(kind, gid, op, caller, args, done,
                                      data);
    if (gc == NULL) {
        return NGX_DECLINED;
    }

    gc->admin = admin;
    a.data = gc->args.data;
    a.len = gc->args.len;

    if (ngx_http_im_store_group_run(gc, gc->op, &a) != NGX_OK) {
        ngx_http_im_buf_free(&gc->args);
        ngx_free(gc);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* loads group gid from MongoDB into Redis (a send found it missing) */
ngx_int_t
ngx_http_im_store_group_load(ngx_str_t *gid, ngx_http_im_store_conv_pt done,
    void *data)
{
    return ngx_http_im_store_record_load(&ngx_http_im_store_group_kind, gid,
                                         done, data);
}


/* likewise user uid's profile and relations */
ngx_int_t
ngx_http_im_store_user_load(ngx_str_t *uid, ngx_http_im_store_conv_pt done,
    void *data)
{
    return ngx_http_im_store_record_load(&ngx_http_im_store_user_kind, uid,
                                         done, data);
}


static ngx_int_t
ngx_http_im_store_record_load(const ngx_http_im_store_kind_t *kind,
    ngx_str_t *gid, ngx_http_im_store_conv_pt done, void *data)
{
    ngx_str_t                        none;
    ngx_http_im_store_group_call_t  *gc;

    ngx_str_set(&none, "");

    gc = ngx_http_im_store_group_call(kind, gid, "", &none, &none, done,
                                      data);
    if (gc == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_http_im_store_group_fetch(gc) != NGX_OK) {
        ngx_http_im_buf_free(&gc->args);
        ngx_free(gc);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_im_store_group_run(ngx_http_im_store_group_call_t *gc,
    const char *op, ngx_str_t *args)
{
    size_t                     cmd_len;
    const char                *cmd, *mongo;
    ngx_http_im_store_args_t   a;
    u_char                     chan[NGX_HTTP_IM_STORE_CHANNEL_LEN];

    cmd = ngx_http_im_store_publish_cmd(&cmd_len);
    mongo = !ngx_http_im_mongo_enabled() ? "0" : gc->loaded ? "2" : "1";

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, gc->kind->key, &gc->gid);
    ngx_http_im_store_arg(&a, op, ngx_strlen(op));
    ngx_http_im_store_arg_key(&a, gc->kind->prefix, &gc->gid);
    ngx_http_im_store_arg(&a, gc->gid.data, gc->gid.len);
    ngx_http_im_store_arg(&a, gc->caller.data, gc->caller.len);
    ngx_http_im_store_arg(&a, gc->admin ? "1" : "0", 1);
    ngx_http_im_store_arg_int(&a, (long long) ngx_time() * 1000
                                  + (long long) ngx_timeofday()->msec);
    ngx_http_im_store_arg(&a, args->data, args->len);
    ngx_http_im_store_arg(&a, chan,
                          ngx_http_im_store_group_channel(chan, &gc->gid));
    ngx_http_im_store_arg(&a, cmd, cmd_len);
    ngx_http_im_store_arg_int(&a, gc->kind->max);
    ngx_http_im_store_arg(&a, mongo, 1);

    return ngx_http_im_store_call(gc->kind->script,
                                  ngx_strcmp(op, "restore") == 0
                                  ? ngx_http_im_store_group_restored
                                  : ngx_http_im_store_group_reply,
                                  gc, 1, &a);
}


/* {0, answer, effects, docs}, {-1, errCode, errMsg} or {-2}: load */
static void
ngx_http_im_store_group_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_group_call_t  *gc = data;

    ngx_int_t  status;

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im: %s op %s failed: %*s", gc->kind->name, gc->op,
                      (size_t) reply->len, reply->str);
        ngx_http_im_store_group_finish(gc, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1)
    {
        ngx_http_im_store_group_finish(gc, NGX_HTTP_IM_ERR_UNAVAILABLE,
                                       NULL);
        return;
    }

    status = (ngx_int_t) ngx_http_im_store_int(reply->element[0]);

    if (status == NGX_HTTP_IM_GROUP_LOAD && !gc->loaded) {
        if (ngx_http_im_store_group_fetch(gc) != NGX_OK) {
            ngx_http_im_store_group_finish(gc, NGX_HTTP_IM_ERR_UNAVAILABLE,
                                           NULL);
        }
        return;
    }

    if (status == NGX_HTTP_IM_GROUP_OK && reply->elements == 4) {
        if (ngx_http_im_mongo_enabled()
            && reply->element[3]->type == REDIS_REPLY_STRING
            && reply->element[3]->len > 2)
        {
            gc->reply = ngx_http_im_store_copy(reply);

            if (gc->reply == NULL
                || ngx_http_im_store_group_save(gc, gc->reply->element[3])
                   != NGX_OK)
            {
                ngx_http_im_store_group_finish(gc,
                                               NGX_HTTP_IM_ERR_UNAVAILABLE,
                                               NULL);
            }
            return;
        }

        ngx_http_im_store_group_finish(gc, 0, reply);
        return;
    }

    if (status == -1 && reply->elements == 3) {
        ngx_http_im_store_group_finish(gc,
            (ngx_int_t) ngx_http_im_store_int(reply->element[1]), reply);
        return;
    }

    ngx_http_im_store_group_finish(gc, NGX_HTTP_IM_ERR_INTERNAL, NULL);
}


/* answers (reply: the script's, for the strings) and frees the call */
static void
ngx_http_im_store_group_finish(ngx_http_im_store_group_call_t *gc,
    ngx_int_t err, redisReply *reply)
{
    ngx_http_im_store_conv_res_t  r;

    ngx_http_im_store_script_res(reply, err, 2, &r);
    gc->done(gc->data, &r);

    if (gc->reply) {
        freeReplyObject(gc->reply);
    }

    if (gc->docs) {
        yajl_tree_free(gc->docs);
    }

    ngx_http_im_buf_free(&gc->args);
    ngx_free(gc);
}


/* the group's documents from MongoDB, on the thread pool */
static ngx_int_t
ngx_http_im_store_group_fetch(ngx_http_im_store_group_call_t *gc)
{
    ngx_http_im_mongo_task_t  *t;

    t = ngx_http_im_mongo_task(gc->kind->load, 0);
    if (t == NULL) {
        return NGX_ERROR;
    }

    ngx_http_im_buf_add(&t->in, gc->gid.data, gc->gid.len);
    t->value = gc->kind->load_max;

    return ngx_http_im_store_mongo_post(t, ngx_http_im_store_group_fetched,
                                        gc);
}


static void
ngx_http_im_store_group_fetched(ngx_http_im_mongo_task_t *t)
{
    ngx_http_im_store_group_call_t  *gc = t->data;

    char  err[128];

    if (t->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im: loading %s \"%V\" from MongoDB failed: %s",
                      gc->kind->name, &gc->gid, t->rc == NGX_ERROR ? t->err : "skipped");
        ngx_http_im_mongo_task_free(t);
        ngx_http_im_store_group_finish(gc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        return;
    }

    gc->docs = ngx_http_im_json_parse(t->out.data, t->out.len, err,
                                      sizeof(err));
    ngx_http_im_mongo_task_free(t);

    if (gc->docs == NULL || !YAJL_IS_ARRAY(gc->docs)) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im: %s \"%V\" from MongoDB unreadable: %s",
                      gc->kind->name, &gc->gid, err);
        ngx_http_im_store_group_finish(gc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        return;
    }

    if (ngx_http_im_store_group_restore(gc) != NGX_OK) {
        ngx_http_im_store_group_finish(gc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


/* the next chunk of the loaded documents into Redis ("restore") */
static ngx_int_t
ngx_http_im_store_group_restore(ngx_http_im_store_group_call_t *gc)
{
    ngx_int_t           rc;
    ngx_str_t           args;
    ngx_uint_t          i, end, n;
    yajl_val            v;
    ngx_http_im_buf_t   b;

    n = gc->docs->u.array.len;
    end = ngx_min(gc->next + NGX_HTTP_IM_GROUP_CHUNK, n);

    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_buf_str(&b, gc->next == 0 ? "{\"first\":true,\"docs\":["
                                          : "{\"docs\":[");

    for (i = gc->next; i < end; i++) {
        v = gc->docs->u.array.values[i];
        ngx_http_im_buf_str(&b, i > gc->next ? "," : "");
        ngx_http_im_buf_json_val(&b, v);

        v = ngx_http_im_json_get(v, "kind");
        if (gc->kind->found == NULL
            || (v && YAJL_IS_STRING(v) && v->u.string
                && ngx_strcmp(v->u.string, gc->kind->found) == 0))
        {
            gc->found = 1;
        }
    }

    gc->next = end;
    ngx_http_im_buf_str(&b, "]");

    if (end == n) {
        ngx_http_im_buf_str(&b, gc->found ? ",\"last\":true,\"found\":true"
                                          : ",\"last\":true");
    }

    ngx_http_im_buf_str(&b, "}");

    args.data = b.data;
    args.len = b.len;

    rc = b.failed ? NGX_ERROR
                  : ngx_http_im_store_group_run(gc, "restore", &args);

    ngx_http_im_buf_free(&b);

    return rc;
}


static void
ngx_http_im_store_group_restored(redisReply *reply, void *data)
{
    ngx_http_im_store_group_call_t  *gc = data;

    ngx_str_t  args;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || ngx_http_im_store_int(reply->element[0]) != NGX_HTTP_IM_GROUP_OK)
    {
        ngx_http_im_store_group_finish(gc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        return;
    }

    if (gc->next < gc->docs->u.array.len) {
        if (ngx_http_im_store_group_restore(gc) != NGX_OK) {
            ngx_http_im_store_group_finish(gc, NGX_HTTP_IM_ERR_UNAVAILABLE,
                                           NULL);
        }
        return;
    }

    yajl_tree_free(gc->docs);
    gc->docs = NULL;
    gc->loaded = 1;

    if (gc->op[0] == '\0') {
        /* a load alone */
        ngx_http_im_store_group_finish(gc, 0, NULL);
        return;
    }

    /* the call itself, now on the loaded group */
    args.data = gc->args.data;
    args.len = gc->args.len;

    if (ngx_http_im_store_group_run(gc, gc->op, &args) != NGX_OK) {
        ngx_http_im_store_group_finish(gc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static ngx_int_t
ngx_http_im_store_group_save(ngx_http_im_store_group_call_t *gc,
    redisReply *docs)
{
    return ngx_http_im_store_docs_save(gc->kind->save, docs,
                                       ngx_http_im_store_group_saved, gc);
}


/* answers once MongoDB has every changed document (a rev as new counts) */
static void
ngx_http_im_store_group_saved(ngx_http_im_mongo_task_t *t)
{
    ngx_http_im_store_group_call_t  *gc = t->data;

    ngx_uint_t  i;
    ngx_int_t   err;

    err = t->rc == NGX_OK ? 0 : NGX_HTTP_IM_ERR_UNAVAILABLE;

    for (i = 0; err == 0 && i < t->n; i++) {
        if (t->items[i].failed) {
            err = NGX_HTTP_IM_ERR_UNAVAILABLE;
        }
    }

    if (err) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im: saving %s \"%V\" to MongoDB failed: %s",
                      gc->kind->name, &gc->gid, t->rc == NGX_ERROR ? t->err : "refused");
    }

    ngx_http_im_mongo_task_free(t);
    ngx_http_im_store_group_finish(gc, err, err ? NULL : gc->reply);
}


ngx_int_t
ngx_http_im_store_group_subscribe(ngx_str_t *gid, ngx_uint_t on)
{
    ngx_str_t  channel;
    u_char     buf[NGX_HTTP_IM_STORE_CHANNEL_LEN];

    channel.data = buf;
    channel.len = ngx_http_im_store_group_channel(buf, gid);

    return on ? ngx_http_im_redis_subscribe(&channel)
              : ngx_http_im_redis_unsubscribe(&channel);
}


/* tells uid's workers that it joined gid ("g +<gid>" on its channel) */
void
ngx_http_im_store_group_joined(ngx_str_t *uid, ngx_str_t *gid)
{
    size_t                     cmd_len;
    const char                *cmd;
    ngx_http_im_store_args_t   a;
    u_char                     line[NGX_HTTP_IM_UID_MAX + 8];

    if (gid->len > NGX_HTTP_IM_UID_MAX) {
        return;
    }

    cmd = ngx_http_im_store_publish_cmd(&cmd_len);

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg(&a, cmd, cmd_len);
    ngx_http_im_store_arg_channel(&a, uid);
    ngx_http_im_store_arg(&a, line, ngx_sprintf(line, "g +%V", gid) - line);

    (void) ngx_http_im_store_send(NULL, NULL, &a);
}


typedef struct {
    ngx_http_im_store_ids_pt     done;
    void                        *data;
} ngx_http_im_store_page_t;


static void ngx_http_im_store_group_paged(redisReply *reply, void *data);


/* members start .. start + count - 1 of gid, in join order */
ngx_int_t
ngx_http_im_store_group_page(ngx_str_t *gid, ngx_uint_t start,
    ngx_uint_t count, ngx_http_im_store_ids_pt done, void *data)
{
    ngx_http_im_store_args_t   a;
    ngx_http_im_store_page_t  *pg;

    pg = ngx_alloc(sizeof(ngx_http_im_store_page_t), ngx_cycle->log);
    if (pg == NULL) {
        return NGX_DECLINED;
    }

    pg->done = done;
    pg->data = data;

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg(&a, "ZRANGE", 6);
    ngx_http_im_store_arg_key(&a, "im:{c:sg_%V}:gz", gid);
    ngx_http_im_store_arg_int(&a, (long long) start);
    ngx_http_im_store_arg_int(&a, (long long) (start + count - 1));

    if (a.failed
        || ngx_http_im_redis_command(ngx_http_im_store_group_paged, pg, a.n,
                                     a.argv, a.len)
           != NGX_OK)
    {
        ngx_free(pg);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_im_store_group_paged(redisReply *reply, void *data)
{
    ngx_http_im_store_page_t  *pg = data;

    ngx_str_t   *ids;
    ngx_uint_t   i, n;

    ids = NULL;
    n = 0;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements) {
        ids = ngx_alloc(reply->elements * sizeof(ngx_str_t), ngx_cycle->log);
    }

    if (ids) {
        for (i = 0; i < reply->elements; i++) {
            if (reply->element[i]->type == REDIS_REPLY_STRING) {
                ngx_http_im_store_str(reply->element[i], &ids[n++]);
            }
        }
    }

    pg->done(pg->data, reply && reply->type == REDIS_REPLY_ARRAY
                       && (ids || reply->elements == 0)
                       ? 0 : NGX_HTTP_IM_ERR_UNAVAILABLE,
             ids, n);

    if (ids) {
        ngx_free(ids);
    }

    ngx_free(pg);
}


/* a stored message that changed (a revoke) to the group's workers */
void
ngx_http_im_store_group_publish(ngx_str_t *gid, ngx_str_t *conv,
    ngx_str_t *json)
{
    size_t                     cmd_len;
    const char                *cmd;
    ngx_http_im_buf_t          b;
    ngx_http_im_store_args_t   a;
    u_char                     chan[NGX_HTTP_IM_STORE_CHANNEL_LEN];

    cmd = ngx_http_im_store_publish_cmd(&cmd_len);

    /* "m <origin> 0 <conv>\n" and the MsgData, as a send's */
    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_buf_str(&b, "m ");
    ngx_http_im_buf_add(&b, ngx_http_im_worker->origin.data,
                        ngx_http_im_worker->origin.len);
    ngx_http_im_buf_str(&b, " 0 ");
    ngx_http_im_buf_add(&b, conv->data, conv->len);
    ngx_http_im_buf_str(&b, "\n");
    ngx_http_im_buf_add(&b, json->data, json->len);

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg(&a, cmd, cmd_len);
    ngx_http_im_store_arg(&a, chan, ngx_http_im_store_group_channel(chan,
                                                                     gid));
    ngx_http_im_store_arg(&a, b.data, b.len);

    if (!b.failed) {
        (void) ngx_http_im_store_send(NULL, NULL, &a);
    }

    ngx_http_im_buf_free(&b);
}
