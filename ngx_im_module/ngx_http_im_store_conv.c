
/*
 * ngx_im: the store of conversation records and read state.
 *
 * Every call runs conv.lua once in the user's slot.  With MongoDB, the
 * records live there too, and Redis is their cache:
 *
 *   - a user whose records were never loaded into this Redis (new, or
 *     Redis lost its data) gets them loaded first (conv.lua answers -2,
 *     the thread pool reads them, "restore" merges them in, the call
 *     runs again);
 *   - a call that changed records answers only once MongoDB has them
 *     (each document carries a revision, so an older write never
 *     overwrites a newer one).  If MongoDB fails, the answer is 90004 and
 *     a retry writes the records again.
 */


#include "ngx_http_im_store_int.h"
#include "ngx_http_im_mongo.h"


#define NGX_HTTP_IM_CONV_OK       0
#define NGX_HTTP_IM_CONV_FAILED  -1
#define NGX_HTTP_IM_CONV_LOAD    -2
#define NGX_HTTP_IM_CONV_HEADS   -3

/* the latest messages of a user's groups, in one call's arguments */
#define NGX_HTTP_IM_CONV_HEADS_BUDGET  (4 * 1024 * 1024)

/* a loaded record's latest message, as conv.lua stores it */
#define NGX_HTTP_IM_CONV_LOAD_MAX  (64 * 1024 * 1024)

/* records per restore call: no call holds Redis long */
#define NGX_HTTP_IM_CONV_CHUNK     1000


typedef struct {
    ngx_str_t                      uid;
    char                           op[16];
    ngx_http_im_buf_t              args;
    ngx_http_im_store_conv_pt      done;
    void                          *data;
    ngx_uint_t                     loaded;
    ngx_uint_t                     noload;      /* Redis's records will do */
    redisReply                    *reply;       /* kept while MongoDB saves */
    ngx_uint_t                     heads;       /* A.gh is in args */
    yajl_val                       docs;        /* loaded, being restored */
    ngx_uint_t                     next;
    ngx_http_im_buf_t              heads_ids;   /* the groups asked */
} ngx_http_im_store_conv_call_t;


static ngx_int_t ngx_http_im_store_conv_run(ngx_http_im_store_conv_call_t *cc,
    const char *op, ngx_str_t *args);
static ngx_int_t ngx_http_im_store_conv_script(
    ngx_http_im_store_conv_call_t *cc, const char *op, ngx_str_t *args,
    ngx_http_im_redis_pt handler);
static void ngx_http_im_store_conv_reply(redisReply *reply, void *data);
static void ngx_http_im_store_conv_answer(ngx_http_im_store_conv_call_t *cc,
    redisReply *reply);
static void ngx_http_im_store_conv_finish(ngx_http_im_store_conv_call_t *cc,
    ngx_int_t err, redisReply *reply);
static ngx_int_t ngx_http_im_store_conv_load(
    ngx_http_im_store_conv_call_t *cc);
static void ngx_http_im_store_conv_loaded(ngx_http_im_mongo_task_t *t);
static ngx_int_t ngx_http_im_store_conv_restore(
    ngx_http_im_store_conv_call_t *cc);
static void ngx_http_im_store_conv_restore_args(ngx_http_im_buf_t *b,
    yajl_val docs, ngx_uint_t from, ngx_uint_t to);
static void ngx_http_im_store_conv_restored(redisReply *reply, void *data);
static ngx_int_t ngx_http_im_store_conv_save(
    ngx_http_im_store_conv_call_t *cc, redisReply *changed);
static void ngx_http_im_store_conv_saved(ngx_http_im_mongo_task_t *t);
static ngx_int_t ngx_http_im_store_conv_heads(
    ngx_http_im_store_conv_call_t *cc, redisReply *groups);
static void ngx_http_im_store_conv_headed(redisReply *all, void *data);


/*
 * Runs op of conv.lua for uid with args (a JSON object the caller built
 * and bounded).  done gets {err, msg, answer, extra}.
 */
ngx_int_t
ngx_http_im_store_conv(ngx_str_t *uid, const char *op, ngx_str_t *args,
    ngx_http_im_store_conv_pt done, void *data)
{
    ngx_http_im_store_conv_call_t  *cc;

    cc = ngx_calloc(sizeof(ngx_http_im_store_conv_call_t) + uid->len,
                    ngx_cycle->log);
    if (cc == NULL) {
        return NGX_DECLINED;
    }

    cc->uid.data = (u_char *) (cc + 1);
    cc->uid.len = uid->len;
    ngx_memcpy(cc->uid.data, uid->data, uid->len);
    ngx_cpystrn((u_char *) cc->op, (u_char *) op, sizeof(cc->op));
    cc->done = done;
    cc->data = data;

    /*
     * Pulls and offline-push jobs never wait for MongoDB: what a user
     * deleted, and its unread count, come from Redis as it is; the user's
     * next conversation call loads the rest.
     */
    cc->noload = ngx_strcmp(op, "view") == 0 || ngx_strcmp(op, "badge") == 0;

    /* kept for a second run, after a load from MongoDB */
    ngx_http_im_buf_init(&cc->args, NGX_HTTP_IM_CONV_LOAD_MAX);
    ngx_http_im_buf_add(&cc->args, args->data, args->len);

    if (cc->args.failed
        || ngx_http_im_store_conv_run(cc, cc->op, args) != NGX_OK)
    {
        ngx_http_im_buf_free(&cc->args);
        ngx_free(cc);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_im_store_conv_run(ngx_http_im_store_conv_call_t *cc, const char *op,
    ngx_str_t *args)
{
    return ngx_http_im_store_conv_script(cc, op, args,
                                         ngx_http_im_store_conv_reply);
}


/* conv.lua: KEYS the user's index; ARGV op, key prefix, uid, now,
 * MongoDB, cluster, args */
static ngx_int_t
ngx_http_im_store_conv_script(ngx_http_im_store_conv_call_t *cc,
    const char *op, ngx_str_t *args, ngx_http_im_redis_pt handler)
{
    ngx_http_im_store_args_t  a;

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:convs", &cc->uid);
    ngx_http_im_store_arg(&a, op, ngx_strlen(op));
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:", &cc->uid);
    ngx_http_im_store_arg(&a, cc->uid.data, cc->uid.len);
    ngx_http_im_store_arg_int(&a, (long long) ngx_time() * 1000
                                  + (long long) ngx_timeofday()->msec);
    ngx_http_im_store_arg(&a, ngx_http_im_mongo_enabled() && !cc->noload
                              ? "1" : "0", 1);
    ngx_http_im_store_arg(&a, ngx_http_im_redis_cluster() ? "1" : "0", 1);
    ngx_http_im_store_arg(&a, args->data, args->len);

    return ngx_http_im_store_call(NGX_HTTP_IM_LUA_CONV, handler, cc, 1, &a);
}


static void
ngx_http_im_store_conv_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_conv_call_t  *cc = data;

    ngx_int_t  status;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        if (reply && reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "im: conv.lua %s failed: %*s", cc->op,
                          (size_t) reply->len, reply->str);
        }

        ngx_http_im_store_conv_finish(cc, reply && reply->type
                                          == REDIS_REPLY_ERROR
                                          ? NGX_HTTP_IM_ERR_INTERNAL
                                          : NGX_HTTP_IM_ERR_UNAVAILABLE,
                                      NULL);
        return;
    }

    status = (ngx_int_t) reply->element[0]->integer;

    if (status == NGX_HTTP_IM_CONV_LOAD && !cc->loaded) {
        cc->loaded = 1;

        if (ngx_http_im_store_conv_load(cc) != NGX_OK) {
            ngx_http_im_store_conv_finish(cc, NGX_HTTP_IM_ERR_UNAVAILABLE,
                                          NULL);
        }

        return;
    }

    if (status == NGX_HTTP_IM_CONV_HEADS && !cc->heads
        && reply->elements == 2)
    {
        if (ngx_http_im_store_conv_heads(cc, reply->element[1]) != NGX_OK) {
            ngx_http_im_store_conv_finish(cc, NGX_HTTP_IM_ERR_UNAVAILABLE,
                                          NULL);
        }
        return;
    }

    if (status == NGX_HTTP_IM_CONV_OK && reply->elements == 4) {
        ngx_http_im_store_conv_answer(cc, reply);
        return;
    }

    if (status == NGX_HTTP_IM_CONV_FAILED && reply->elements == 3) {
        ngx_http_im_store_conv_finish(cc,
                                      ngx_http_im_store_int(reply->element[1]),
                                      reply);
        return;
    }

    ngx_http_im_store_conv_finish(cc, NGX_HTTP_IM_ERR_INTERNAL, NULL);
}


/* {0, answer, changed records, extra}: MongoDB gets the records first */
static void
ngx_http_im_store_conv_answer(ngx_http_im_store_conv_call_t *cc,
    redisReply *reply)
{
    redisReply  *changed;

    changed = reply->element[2];

    if (!ngx_http_im_mongo_enabled() || changed->type != REDIS_REPLY_STRING
        || changed->len <= 2)
    {
        ngx_http_im_store_conv_finish(cc, 0, reply);
        return;
    }

    cc->reply = ngx_http_im_store_copy(reply);

    if (cc->reply == NULL
        || ngx_http_im_store_conv_save(cc, cc->reply->element[2]) != NGX_OK)
    {
        ngx_http_im_store_conv_finish(cc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


/* answers (reply: the script's, for the strings) and frees the call */
static void
ngx_http_im_store_conv_finish(ngx_http_im_store_conv_call_t *cc,
    ngx_int_t err, redisReply *reply)
{
    ngx_http_im_store_conv_res_t  r;

    ngx_http_im_store_script_res(reply, err, 3, &r);
    cc->done(cc->data, &r);

    if (cc->reply) {
        freeReplyObject(cc->reply);
    }

    if (cc->docs) {
        yajl_tree_free(cc->docs);
    }

    ngx_http_im_buf_free(&cc->args);
    ngx_free(cc);
}


/* ----------------------------------------------------------------------
 * a Redis Cluster: the heads of the user's groups (group_head.lua, one
 * per group, in each group's slot), then the op again with them
 */


static ngx_int_t
ngx_http_im_store_conv_heads(ngx_http_im_store_conv_call_t *cc,
    redisReply *groups)
{
    char                       err[64];
    ngx_uint_t                 i, n;
    ngx_str_t                  gid;
    yajl_val                   list, v;
    ngx_http_im_store_args_t   a;
    ngx_http_im_store_part_t  *parts;

    list = groups->type == REDIS_REPLY_STRING
           ? ngx_http_im_json_parse((u_char *) groups->str, groups->len, err,
                                    sizeof(err))
           : NULL;

    if (list == NULL || !YAJL_IS_ARRAY(list)) {
        if (list) {
            yajl_tree_free(list);
        }
        return NGX_ERROR;
    }

    n = ngx_min(list->u.array.len, NGX_HTTP_IM_USER_MAX_GROUPS);

    if (ngx_http_im_store_gather(n, 0, ngx_http_im_store_conv_headed,
                                 (ngx_http_im_store_op_t *) cc, &parts)
        != NGX_OK)
    {
        yajl_tree_free(list);
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        v = list->u.array.values[i];
        gid.data = (u_char *) (YAJL_IS_STRING(v) && v->u.string
                               ? v->u.string : "");
        gid.len = ngx_strlen(gid.data);

        ngx_http_im_store_args(&a);
        ngx_http_im_store_arg_key(&a, "im:{c:sg_%V}:seq", &gid);
        ngx_http_im_store_arg_key(&a, "im:{c:sg_%V}:g", &gid);
        ngx_http_im_store_arg_key(&a, "im:{c:sg_%V}:msgs", &gid);

        ngx_http_im_store_part_queued(&parts[i],
            ngx_http_im_store_call(NGX_HTTP_IM_LUA_GROUP_HEAD,
                                   ngx_http_im_store_part_reply, &parts[i],
                                   3, &a));
    }

    /* the replies name their groups by index: keep the list till then */
    ngx_http_im_buf_init(&cc->heads_ids, 0);
    ngx_http_im_buf_add(&cc->heads_ids, groups->str, groups->len);
    yajl_tree_free(list);

    ngx_http_im_store_gathered(parts[0].g);

    return NGX_OK;
}


/* all: {seq, @all seq, latest} per group, in the order asked */
static void
ngx_http_im_store_conv_headed(redisReply *all, void *data)
{
    ngx_http_im_store_conv_call_t  *cc = data;

    char                 err[64];
    size_t               budget;
    ngx_str_t            args;
    ngx_uint_t           i;
    yajl_val             list, v;
    redisReply          *e;
    ngx_http_im_buf_t    b;

    list = ngx_http_im_json_parse(cc->heads_ids.data, cc->heads_ids.len, err,
                                  sizeof(err));
    ngx_http_im_buf_free(&cc->heads_ids);

    if (all == NULL || list == NULL || !YAJL_IS_ARRAY(list)) {
        if (list) {
            yajl_tree_free(list);
        }
        ngx_http_im_store_conv_finish(cc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        return;
    }

    /* {"gh":{"sg_<gid>":[seq, atall, "latest"],...}, + the args */
    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_buf_str(&b, "{\"gh\":{");
    budget = NGX_HTTP_IM_CONV_HEADS_BUDGET;

    for (i = 0; i < all->elements && i < list->u.array.len; i++) {
        e = all->element[i];
        v = list->u.array.values[i];

        if (e->type != REDIS_REPLY_ARRAY || e->elements != 3
            || !YAJL_IS_STRING(v) || v->u.string == NULL)
        {
            continue;
        }

        ngx_http_im_buf_str(&b, b.data[b.len - 1] == '{' ? "\"sg_" : ",\"sg_");
        ngx_http_im_buf_add(&b, v->u.string, ngx_strlen(v->u.string));
        ngx_http_im_buf_str(&b, "\":[");
        ngx_http_im_buf_int(&b, ngx_http_im_store_int(e->element[0]));
        ngx_http_im_buf_str(&b, ",");
        ngx_http_im_buf_int(&b, ngx_http_im_store_int(e->element[1]));
        ngx_http_im_buf_str(&b, ",");

        if (e->element[2]->type == REDIS_REPLY_STRING
            && e->element[2]->len < budget)
        {
            budget -= e->element[2]->len;
            ngx_http_im_buf_json_str(&b, e->element[2]->str,
                                     e->element[2]->len);

        } else {
            ngx_http_im_buf_str(&b, "\"\"");
        }

        ngx_http_im_buf_str(&b, "]");
    }

    yajl_tree_free(list);

    ngx_http_im_buf_str(&b, "}");

    /* the op's own arguments after it: "{...}" less its "{" */
    if (cc->args.len > 2) {
        ngx_http_im_buf_str(&b, ",");
        ngx_http_im_buf_add(&b, cc->args.data + 1, cc->args.len - 1);

    } else {
        ngx_http_im_buf_str(&b, "}");
    }

    cc->heads = 1;
    cc->args.len = 0;
    ngx_http_im_buf_add(&cc->args, b.data, b.len);
    ngx_http_im_buf_free(&b);

    args.data = cc->args.data;
    args.len = cc->args.len;

    if (cc->args.failed
        || ngx_http_im_store_conv_run(cc, cc->op, &args) != NGX_OK)
    {
        ngx_http_im_store_conv_finish(cc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


/* ----------------------------------------------------------------------
 * loading a user's records from MongoDB
 */


static ngx_int_t
ngx_http_im_store_conv_load(ngx_http_im_store_conv_call_t *cc)
{
    ngx_http_im_mongo_task_t  *t;

    t = ngx_http_im_mongo_task(NGX_HTTP_IM_MONGO_CONV_LOAD, 0);
    if (t == NULL) {
        return NGX_ERROR;
    }

    ngx_http_im_buf_add(&t->in, cc->uid.data, cc->uid.len);
    t->value = ngx_http_im_worker->imcf->max_convs;

    return ngx_http_im_store_mongo_post(t, ngx_http_im_store_conv_loaded, cc);
}


/* the task goes to the thread pool, or is freed */
ngx_int_t
ngx_http_im_store_mongo_post(ngx_http_im_mongo_task_t *t,
    void (*done)(ngx_http_im_mongo_task_t *t), void *data)
{
    t->done = done;
    t->data = data;

    if (t->in.failed || ngx_http_im_mongo_post(t) != NGX_OK) {
        ngx_http_im_mongo_task_free(t);
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_im_store_conv_loaded(ngx_http_im_mongo_task_t *t)
{
    ngx_http_im_store_conv_call_t  *cc = t->data;

    char       err[128];
    ngx_str_t  args;

    if (t->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im: loading the conversations of \"%V\" from "
                      "MongoDB failed: %s", &cc->uid,
                      t->rc == NGX_ERROR ? t->err : "skipped");
        ngx_http_im_mongo_task_free(t);

        /* 1006 at login answers from Redis rather than not at all */
        if (ngx_strcmp(cc->op, "seqs") == 0) {
            args.data = cc->args.data;
            args.len = cc->args.len;
            cc->noload = 1;

            if (ngx_http_im_store_conv_run(cc, cc->op, &args) == NGX_OK) {
                return;
            }
        }

        ngx_http_im_store_conv_finish(cc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        return;
    }

    cc->docs = ngx_http_im_json_parse(t->out.data, t->out.len, err,
                                      sizeof(err));
    ngx_http_im_mongo_task_free(t);

    if (cc->docs == NULL || !YAJL_IS_ARRAY(cc->docs)) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im: conversations of \"%V\" from MongoDB unreadable: "
                      "%s", &cc->uid, err);
        ngx_http_im_store_conv_finish(cc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        return;
    }

    if (ngx_http_im_store_conv_restore(cc) != NGX_OK) {
        ngx_http_im_store_conv_finish(cc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


/* the next chunk of the loaded records into Redis ("restore") */
static ngx_int_t
ngx_http_im_store_conv_restore(ngx_http_im_store_conv_call_t *cc)
{
    ngx_int_t          rc;
    ngx_str_t          args;
    ngx_uint_t         end, n;
    ngx_http_im_buf_t  b;

    n = cc->docs->u.array.len;
    end = ngx_min(cc->next + NGX_HTTP_IM_CONV_CHUNK, n);

    ngx_http_im_buf_init(&b, NGX_HTTP_IM_CONV_LOAD_MAX);
    ngx_http_im_buf_str(&b, cc->next == 0 ? "{\"first\":true," : "{");
    ngx_http_im_buf_str(&b, end == n ? "\"last\":true," : "");
    ngx_http_im_store_conv_restore_args(&b, cc->docs, cc->next, end);
    cc->next = end;

    args.data = b.data;
    args.len = b.len;

    rc = b.failed ? NGX_ERROR
                  : ngx_http_im_store_conv_script(cc, "restore", &args,
                                               ngx_http_im_store_conv_restored);
    ngx_http_im_buf_free(&b);

    return rc;
}


/*
 * "docs":[...],"maxc":N} for conv.lua's restore, from CONV_LOAD's
 * records from .. to - 1: each record as MongoDB has it, its latest
 * message as a JSON string (stored as it is), and that message's time and
 * sender.
 */
static void
ngx_http_im_store_conv_restore_args(ngx_http_im_buf_t *b, yajl_val docs,
    ngx_uint_t from, ngx_uint_t to)
{
    char                  err[128];
    size_t                i, j;
    yajl_val              doc, last, v;
    ngx_http_im_buf_t     msg;
    ngx_http_im_str_t     sender;
    long long             time;

    ngx_http_im_buf_init(&msg, NGX_HTTP_IM_CONV_LOAD_MAX);
    ngx_http_im_buf_str(b, "\"docs\":[");

    for (i = from; i < to; i++) {
        doc = docs->u.array.values[i];
        if (!YAJL_IS_OBJECT(doc)) {
            continue;
        }

        ngx_http_im_buf_str(b, i > from ? ",{" : "{");
        last = NULL;

        for (j = 0; j < doc->u.object.len; j++) {
            v = doc->u.object.values[j];

            if (ngx_strcmp(doc->u.object.keys[j], "last") == 0) {
                last = v;
                continue;
            }

            ngx_http_im_buf_json_str(b, doc->u.object.keys[j],
                                     ngx_strlen(doc->u.object.keys[j]));
            ngx_http_im_buf_str(b, ":");
            ngx_http_im_buf_json_val(b, v);
            ngx_http_im_buf_str(b, ",");
        }

        time = 0;
        sender.len = 0;
        ngx_http_im_buf_reset(&msg);

        if (last && YAJL_IS_OBJECT(last)) {
            ngx_http_im_buf_json_val(&msg, last);
            (void) ngx_http_im_json_get_int(last, "sendTime", 0, &time, err,
                                            sizeof(err));
            (void) ngx_http_im_json_get_str(last, "sendID", 0, &sender, err,
                                            sizeof(err));
        }

        ngx_http_im_buf_str(b, "\"last\":");
        ngx_http_im_buf_json_str(b, (char *) msg.data, msg.len);
        ngx_http_im_buf_str(b, ",\"lastTime\":");
        ngx_http_im_buf_int(b, time);
        ngx_http_im_buf_str(b, ",\"lastSender\":");
        ngx_http_im_buf_json_str(b, sender.len ? sender.data : "",
                                 sender.len);
        ngx_http_im_buf_str(b, "}");
    }

    ngx_http_im_buf_str(b, "],\"maxc\":");
    ngx_http_im_buf_int(b, ngx_http_im_worker->imcf->max_convs);
    ngx_http_im_buf_str(b, "}");

    ngx_http_im_buf_free(&msg);
}


static void
ngx_http_im_store_conv_restored(redisReply *reply, void *data)
{
    ngx_http_im_store_conv_call_t  *cc = data;

    ngx_str_t  args;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 1
        || ngx_http_im_store_int(reply->element[0]) != NGX_HTTP_IM_CONV_OK)
    {
        ngx_http_im_store_conv_finish(cc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        return;
    }

    if (cc->next < cc->docs->u.array.len) {
        if (ngx_http_im_store_conv_restore(cc) != NGX_OK) {
            ngx_http_im_store_conv_finish(cc, NGX_HTTP_IM_ERR_UNAVAILABLE,
                                          NULL);
        }
        return;
    }

    yajl_tree_free(cc->docs);
    cc->docs = NULL;

    /* the call itself, now on the loaded records */
    args.data = cc->args.data;
    args.len = cc->args.len;

    if (ngx_http_im_store_conv_run(cc, cc->op, &args) != NGX_OK) {
        ngx_http_im_store_conv_finish(cc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


/* ----------------------------------------------------------------------
 * saving changed records to MongoDB
 */


static ngx_int_t
ngx_http_im_store_conv_save(ngx_http_im_store_conv_call_t *cc,
    redisReply *changed)
{
    return ngx_http_im_store_docs_save(NGX_HTTP_IM_MONGO_CONV_SAVE, changed,
                                       ngx_http_im_store_conv_saved, cc);
}


/*
 * A task (op, CONV_SAVE or GROUP_SAVE) of the documents in docs, a JSON
 * array a script returned: each becomes an item; posted, or freed.
 */
ngx_int_t
ngx_http_im_store_docs_save(ngx_uint_t op, redisReply *docs,
    void (*done)(ngx_http_im_mongo_task_t *t), void *data)
{
    char                       err[128];
    size_t                     i, n;
    yajl_val                   root;
    ngx_http_im_mongo_item_t  *it;
    ngx_http_im_mongo_task_t  *t;

    root = ngx_http_im_json_parse((u_char *) docs->str, docs->len, err,
                                  sizeof(err));
    if (root == NULL || !YAJL_IS_ARRAY(root)) {
        if (root) {
            yajl_tree_free(root);
        }
        return NGX_ERROR;
    }

    n = root->u.array.len;

    t = ngx_http_im_mongo_task(op, n);
    if (t == NULL) {
        yajl_tree_free(root);
        return NGX_ERROR;
    }

    t->n = n;

    for (i = 0; i < n; i++) {
        it = &t->items[i];
        it->off = t->in.len;
        ngx_http_im_buf_json_val(&t->in, root->u.array.values[i]);
        it->len = t->in.len - it->off;
    }

    yajl_tree_free(root);

    return ngx_http_im_store_mongo_post(t, done, data);
}


static void
ngx_http_im_store_conv_saved(ngx_http_im_mongo_task_t *t)
{
    ngx_http_im_store_conv_call_t  *cc = t->data;

    ngx_int_t   err;
    ngx_uint_t  i;

    err = 0;

    if (t->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im: saving conversations of \"%V\" to MongoDB "
                      "failed: %s", &cc->uid,
                      t->rc == NGX_ERROR ? t->err : "skipped");
        err = NGX_HTTP_IM_ERR_UNAVAILABLE;

    } else {
        for (i = 0; i < t->n; i++) {
            if (t->items[i].failed) {
                ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                              "im: MongoDB refused a conversation record "
                              "of \"%V\"", &cc->uid);
                err = NGX_HTTP_IM_ERR_UNAVAILABLE;
            }
        }
    }

    ngx_http_im_mongo_task_free(t);
    ngx_http_im_store_conv_finish(cc, err, err ? NULL : cc->reply);
}


/* ----------------------------------------------------------------------
 * notifications
 */


/*
 * A message that is not stored (seq 0: read receipts, settings and
 * deletions synced to other devices) to every session of uid; best
 * effort, like every push.
 */
void
ngx_http_im_store_notify(ngx_str_t *uid, ngx_str_t *conv, ngx_str_t *json)
{
    ngx_http_im_buf_t         *b;
    ngx_http_im_store_args_t   a;
    u_char                     head[NGX_MAXHOSTNAMELEN + 256];

    b = &ngx_http_im_worker->scratch;
    ngx_http_im_buf_reset(b);
    ngx_http_im_buf_add(b, head,
                        ngx_snprintf(head, sizeof(head), "m %V 0 %V\n",
                                     &ngx_http_im_worker->origin, conv)
                        - head);
    ngx_http_im_buf_add(b, json->data, json->len);

    if (b->failed) {
        return;
    }

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg(&a, "PUBLISH", 7);
    a.argv[0] = ngx_http_im_store_publish_cmd(&a.len[0]);
    ngx_http_im_store_arg_channel(&a, uid);
    ngx_http_im_store_arg(&a, b->data, b->len);

    (void) ngx_http_im_store_send(NULL, NULL, &a);
}


/* ----------------------------------------------------------------------
 * messages rewritten or purged
 */


static void
ngx_http_im_store_counted(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    ngx_http_im_store_count_pt  done;

    done = (ngx_http_im_store_count_pt) op->handler;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        done(op->data, NGX_HTTP_IM_ERR_UNAVAILABLE, 0);

    } else {
        done(op->data, 0, (ngx_int_t) reply->integer);
    }

    ngx_http_im_store_op_free(op);
}


/* msg_set.lua: KEYS msgs; ARGV seq, MsgData */
ngx_int_t
ngx_http_im_store_msg_replace(ngx_str_t *conv, long long seq,
    ngx_str_t *json, ngx_http_im_store_count_pt done, void *data)
{
    ngx_http_im_store_op_t    *op;
    ngx_http_im_store_args_t   a;

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:msgs", conv);
    ngx_http_im_store_arg_int(&a, seq);
    ngx_http_im_store_arg(&a, json->data, json->len);

    return ngx_http_im_store_run(NGX_HTTP_IM_LUA_MSG_SET,
                                 ngx_http_im_store_counted, op, 1, &a);
}


/* msg_purge.lua: KEYS msgs, purge mark, seq, done; ARGV time */
ngx_int_t
ngx_http_im_store_msg_purge(ngx_str_t *conv, long long time,
    ngx_http_im_store_count_pt done, void *data)
{
    ngx_http_im_store_op_t    *op;
    ngx_http_im_store_args_t   a;

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:msgs", conv);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:purged", conv);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:seq", conv);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:done", conv);
    ngx_http_im_store_arg_int(&a, time);

    return ngx_http_im_store_run(NGX_HTTP_IM_LUA_MSG_PURGE,
                                 ngx_http_im_store_counted, op, 4, &a);
}
