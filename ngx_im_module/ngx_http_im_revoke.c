
/*
 * ngx_im: REST /msg/revoke_msg and /msg/delete_msg_physical: messages
 * rewritten or removed after they were stored (docs/api.md).
 *
 * A revoke reads the message (from Redis, else MongoDB), checks who may
 * revoke it, and writes it back as contentType 2101 with the original
 * text gone: in Redis while it holds the message, and in MongoDB (an
 * upsert, so a persist that races with it finds the revoked version
 * there and keeps it).  Both users' devices get the new version.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_api.h"
#include "ngx_http_im_store.h"
#include "ngx_http_im_mongo.h"
#include "ngx_http_im_id.h"


#define NGX_HTTP_IM_CONTENT_REVOKED   2101
#define NGX_HTTP_IM_REVOKE_BUDGET     (2 * 1024 * 1024)


typedef struct {
    ngx_http_im_api_t          *api;
    ngx_str_t                   conv;
    ngx_str_t                   revoker;
    long long                   seq;
    ngx_uint_t                  admin;
    ngx_uint_t                  pending;
    ngx_int_t                   err;
    ngx_http_im_buf_t           json;        /* the revoked MsgData */
    ngx_http_im_mongo_task_t   *task;
    ngx_str_t                   gid;         /* a group's message */
    ngx_uint_t                  allowed;     /* the group said so */
    ngx_http_im_buf_t           orig;        /* kept while it decides */
} ngx_http_im_revoke_t;


typedef struct {
    ngx_http_im_api_t          *api;
    long long                   time;
    ngx_uint_t                  pending;
    ngx_uint_t                  saved;       /* MongoDB had its turn */
    ngx_int_t                   err;
    yajl_val                    ids;
} ngx_http_im_purge_t;


static void ngx_http_im_revoke_read(void *data, ngx_http_im_store_msgs_t *r);
static void ngx_http_im_revoke_found(ngx_http_im_mongo_task_t *t);
static void ngx_http_im_revoke_check(ngx_http_im_revoke_t *rv,
    const u_char *json, size_t len);
static ngx_int_t ngx_http_im_revoke_build(ngx_http_im_revoke_t *rv,
    ngx_http_im_msg_t *m);
static ngx_int_t ngx_http_im_revoke_ask(ngx_http_im_revoke_t *rv,
    ngx_http_im_msg_t *m, const u_char *json, size_t len);
static void ngx_http_im_revoke_asked(void *data,
    ngx_http_im_store_conv_res_t *r);
static void ngx_http_im_revoke_write(ngx_http_im_revoke_t *rv);
static void ngx_http_im_revoke_stored(void *data, ngx_int_t err,
    ngx_int_t n);
static void ngx_http_im_revoke_saved(ngx_http_im_mongo_task_t *t);
static void ngx_http_im_revoke_step(ngx_http_im_revoke_t *rv);
static void ngx_http_im_revoke_tell(ngx_http_im_revoke_t *rv);
static void ngx_http_im_revoke_end(ngx_http_im_revoke_t *rv, ngx_int_t code,
    const char *msg);
static void ngx_http_im_relast_done(void *data,
    ngx_http_im_store_conv_res_t *r);
static void ngx_http_im_purge_step(ngx_http_im_purge_t *pg);
static void ngx_http_im_purged(void *data, ngx_int_t err, ngx_int_t n);
static void ngx_http_im_purge_saved(ngx_http_im_mongo_task_t *t);
static void ngx_http_im_purge_lasts(ngx_http_im_purge_t *pg);


/* /msg/revoke_msg {conversationID, seq, userID} */
void
ngx_http_im_msg_revoke(ngx_http_im_api_t *api)
{
    char                   err[128];
    long long              seq;
    ngx_http_im_str_t      conv, uid;
    ngx_http_im_revoke_t  *rv;

    if (ngx_http_im_json_get_str(api->root, "conversationID", 1, &conv, err,
                                 sizeof(err)) != 0
        || ngx_http_im_json_get_int(api->root, "seq", 1, &seq, err,
                                    sizeof(err)) != 0
        || ngx_http_im_json_get_str(api->root, "userID", 0, &uid, err,
                                    sizeof(err)) != 0)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, err);
        return;
    }

    rv = ngx_calloc(sizeof(ngx_http_im_revoke_t), ngx_cycle->log);
    if (rv == NULL) {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    rv->api = api;
    rv->admin = api->claims.platform_id == NGX_HTTP_IM_PLATFORM_ADMIN;
    rv->seq = seq;
    rv->conv.data = (u_char *) conv.data;
    rv->conv.len = conv.len;
    ngx_http_im_buf_init(&rv->json, NGX_HTTP_IM_REVOKE_BUDGET);

    if (uid.len == 0 && !rv->admin) {
        uid.data = api->claims.user_id;
        uid.len = ngx_strlen(uid.data);
    }

    rv->revoker.data = (u_char *) uid.data;
    rv->revoker.len = uid.len;

    if (!ngx_http_im_user_id_valid(uid.data, uid.len) || seq < 1) {
        ngx_http_im_revoke_end(rv, NGX_HTTP_IM_ERR_ARGS,
                               "fields \"userID\" (a user ID) and \"seq\" "
                               "(>= 1) are required");
        return;
    }

    if (!rv->admin && (uid.len != ngx_strlen(api->claims.user_id)
                       || ngx_strncmp(uid.data, api->claims.user_id,
                                      uid.len) != 0))
    {
        ngx_http_im_revoke_end(rv, NGX_HTTP_IM_ERR_PERMISSION,
                               "a user token may revoke as itself only");
        return;
    }

    if (ngx_http_im_conv_group(conv.data, conv.len)) {
        /* the group decides, once the sender is known */
        rv->gid.data = (u_char *) conv.data + 3;
        rv->gid.len = conv.len - 3;

    } else if (!ngx_http_im_conv_member(conv.data, conv.len, uid.data,
                                        uid.len))
    {
        ngx_http_im_revoke_end(rv, NGX_HTTP_IM_ERR_PERMISSION,
                               "not a member of the conversation");
        return;
    }

    if (ngx_http_im_store_pull_seqs(&rv->conv, &rv->seq, 1,
                                    NGX_HTTP_IM_REVOKE_BUDGET,
                                    ngx_http_im_revoke_read, rv)
        != NGX_OK)
    {
        ngx_http_im_revoke_end(rv, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static void
ngx_http_im_revoke_read(void *data, ngx_http_im_store_msgs_t *r)
{
    ngx_http_im_revoke_t  *rv = data;

    ngx_http_im_mongo_task_t  *t;

    if (r->err) {
        ngx_http_im_revoke_end(rv, r->err, NULL);
        return;
    }

    if (r->n == 1 && r->items[0].state == NGX_HTTP_IM_ITEM_FOUND) {
        ngx_http_im_revoke_check(rv, r->items[0].json.data,
                                 r->items[0].json.len);
        return;
    }

    /* not in Redis: MongoDB has it, if anyone does */
    if (!ngx_http_im_mongo_enabled()) {
        ngx_http_im_revoke_end(rv, NGX_HTTP_IM_ERR_NOT_FOUND,
                               "no message with this seq");
        return;
    }

    t = ngx_http_im_mongo_task(NGX_HTTP_IM_MONGO_FIND, 1);
    if (t == NULL) {
        ngx_http_im_revoke_end(rv, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    t->items[0].conv_off = 0;
    t->items[0].conv_len = rv->conv.len;
    t->items[0].seq = rv->seq;
    t->n = 1;
    ngx_http_im_buf_add(&t->in, rv->conv.data, rv->conv.len);
    t->done = ngx_http_im_revoke_found;
    t->data = rv;

    if (t->in.failed || ngx_http_im_mongo_post(t) != NGX_OK) {
        ngx_http_im_mongo_task_free(t);
        ngx_http_im_revoke_end(rv, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static void
ngx_http_im_revoke_found(ngx_http_im_mongo_task_t *t)
{
    ngx_http_im_revoke_t  *rv = t->data;

    ngx_http_im_mongo_item_t  *it;

    it = &t->items[0];

    if (t->rc != NGX_OK) {
        ngx_http_im_revoke_end(rv, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);

    } else if (it->len == 0) {
        ngx_http_im_revoke_end(rv, NGX_HTTP_IM_ERR_NOT_FOUND,
                               "no message with this seq");

    } else {
        ngx_http_im_revoke_check(rv, t->out.data + it->off, it->len);
    }

    ngx_http_im_mongo_task_free(t);
}


/* who may revoke (the sender, or an admin for anyone) and when */
static void
ngx_http_im_revoke_check(ngx_http_im_revoke_t *rv, const u_char *json,
    size_t len)
{
    char               err[128];
    time_t             window;
    yajl_val           root;
    long long          now;
    ngx_int_t          rc;
    ngx_http_im_msg_t  m;

    root = ngx_http_im_json_parse(json, len, err, sizeof(err));
    if (root == NULL
        || ngx_http_im_msg_from_json(root, &m, err, sizeof(err)) != 0)
    {
        if (root) {
            yajl_tree_free(root);
        }
        ngx_http_im_revoke_end(rv, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    now = (long long) ngx_time() * 1000;
    window = rv->api->imcf->revoke_window;

    if (m.content_type == NGX_HTTP_IM_CONTENT_REVOKED) {
        rc = 0;                                 /* revoked before: done */

    } else if (rv->gid.len && !rv->admin && !rv->allowed) {
        rc = ngx_http_im_revoke_ask(rv, &m, json, len);

    } else if (!rv->admin && !rv->allowed
               && (m.send_id.len != rv->revoker.len
                   || ngx_strncmp(m.send_id.data, rv->revoker.data,
                                  rv->revoker.len) != 0))
    {
        rc = NGX_HTTP_IM_ERR_PERMISSION;

    } else if (window && !rv->admin && now - m.send_time > window * 1000) {
        rc = NGX_HTTP_IM_ERR_PERMISSION;

    } else {
        rc = ngx_http_im_revoke_build(rv, &m);
    }

    ngx_http_im_msg_free(&m);
    yajl_tree_free(root);

    if (rc == NGX_AGAIN) {
        /* the group answers in ngx_http_im_revoke_asked() */
        return;
    }

    if (rc == 0 && rv->json.len) {
        ngx_http_im_revoke_write(rv);
        return;
    }

    ngx_http_im_revoke_end(rv, rc, rc == NGX_HTTP_IM_ERR_PERMISSION
                                   ? "only the sender (or an admin) may "
                                     "revoke, within im_revoke_window"
                                   : NULL);
}


/* a group's message: may the revoker revoke the sender's? (group.lua) */
static ngx_int_t
ngx_http_im_revoke_ask(ngx_http_im_revoke_t *rv, ngx_http_im_msg_t *m,
    const u_char *json, size_t len)
{
    ngx_str_t          args;
    ngx_int_t          rc;
    ngx_http_im_buf_t  b;

    ngx_http_im_buf_init(&rv->orig, 0);
    ngx_http_im_buf_add(&rv->orig, json, len);

    ngx_http_im_buf_init(&b, 1024);
    ngx_http_im_buf_str(&b, "{\"sender\":");
    ngx_http_im_buf_json_str(&b, m->send_id.data, m->send_id.len);
    ngx_http_im_buf_str(&b, "}");

    args.data = b.data;
    args.len = b.len;

    rc = rv->orig.failed || b.failed
         ? NGX_DECLINED
         : ngx_http_im_store_group(&rv->gid, "can_revoke", &rv->revoker, 0,
                                   &args, ngx_http_im_revoke_asked, rv);

    ngx_http_im_buf_free(&b);

    return rc == NGX_OK ? NGX_AGAIN : NGX_HTTP_IM_ERR_UNAVAILABLE;
}


static void
ngx_http_im_revoke_asked(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_revoke_t  *rv = data;

    u_char  msg[256];

    if (r->err) {
        ngx_snprintf(msg, sizeof(msg), "%*s%Z", ngx_min(r->msg.len, 200),
                     r->msg.data);
        ngx_http_im_revoke_end(rv, r->err, r->msg.len ? (char *) msg : NULL);
        return;
    }

    rv->allowed = 1;
    ngx_http_im_revoke_check(rv, rv->orig.data, rv->orig.len);
}


/* the message as 2101 with its MessageRevokedContent; the text is gone */
static ngx_int_t
ngx_http_im_revoke_build(ngx_http_im_revoke_t *rv, ngx_http_im_msg_t *m)
{
    ngx_http_im_buf_t  detail, content;

    ngx_http_im_buf_init(&detail, 64 * 1024);
    ngx_http_im_buf_init(&content, 64 * 1024);

    ngx_http_im_buf_str(&detail, "{\"revokerID\":");
    ngx_http_im_buf_json_str(&detail, (char *) rv->revoker.data,
                             rv->revoker.len);
    ngx_http_im_buf_str(&detail, rv->admin ? ",\"revokerRole\":1"
                                           : ",\"revokerRole\":0");
    ngx_http_im_buf_str(&detail, ",\"clientMsgID\":");
    ngx_http_im_buf_json_str(&detail, m->client_msg_id.data,
                             m->client_msg_id.len);
    ngx_http_im_buf_str(&detail, ",\"revokeTime\":");
    ngx_http_im_buf_int(&detail, (long long) ngx_time() * 1000
                                 + (long long) ngx_timeofday()->msec);
    ngx_http_im_buf_str(&detail, ",\"sourceMessageSendTime\":");
    ngx_http_im_buf_int(&detail, m->send_time);
    ngx_http_im_buf_str(&detail, ",\"sourceMessageSendID\":");
    ngx_http_im_buf_json_str(&detail, m->send_id.data, m->send_id.len);
    ngx_http_im_buf_str(&detail, ",\"sourceMessageSenderNickname\":");
    ngx_http_im_buf_json_str(&detail, m->sender_nickname.data,
                             m->sender_nickname.len);
    ngx_http_im_buf_str(&detail, ",\"sessionType\":");
    ngx_http_im_buf_int(&detail, m->session_type);
    ngx_http_im_buf_str(&detail, ",\"seq\":");
    ngx_http_im_buf_int(&detail, m->seq);
    ngx_http_im_buf_str(&detail, "}");

    ngx_http_im_buf_str(&content, "{\"detail\":");
    ngx_http_im_buf_json_str(&content, (char *) detail.data, detail.len);
    ngx_http_im_buf_str(&content, "}");

    m->content_type = NGX_HTTP_IM_CONTENT_REVOKED;
    m->content.data = (char *) content.data;
    m->content.len = content.len;
    m->has_push_info = 0;

    ngx_http_im_msg_to_json(m, &rv->json, NULL);

    ngx_http_im_buf_free(&detail);
    ngx_http_im_buf_free(&content);

    return rv->json.failed || detail.failed || content.failed
           ? NGX_HTTP_IM_ERR_INTERNAL : 0;
}


/* Redis, while it holds the message, and MongoDB, at the same time */
static void
ngx_http_im_revoke_write(ngx_http_im_revoke_t *rv)
{
    ngx_str_t                  json;
    ngx_http_im_mongo_task_t  *t;

    json.data = rv->json.data;
    json.len = rv->json.len;
    rv->pending = 1;

    if (ngx_http_im_mongo_enabled()) {
        t = ngx_http_im_mongo_task(NGX_HTTP_IM_MONGO_MSG_REPLACE, 1);

        if (t == NULL) {
            rv->err = NGX_HTTP_IM_ERR_INTERNAL;

        } else {
            t->n = 1;
            t->items[0].conv_off = 0;
            t->items[0].conv_len = rv->conv.len;
            t->items[0].seq = rv->seq;
            ngx_http_im_buf_add(&t->in, rv->conv.data, rv->conv.len);
            t->items[0].off = t->in.len;
            t->items[0].len = json.len;
            ngx_http_im_buf_add(&t->in, json.data, json.len);
            t->done = ngx_http_im_revoke_saved;
            t->data = rv;

            if (!t->in.failed && ngx_http_im_mongo_post(t) == NGX_OK) {
                rv->pending++;

            } else {
                ngx_http_im_mongo_task_free(t);
                rv->err = NGX_HTTP_IM_ERR_UNAVAILABLE;
            }
        }
    }

    if (ngx_http_im_store_msg_replace(&rv->conv, rv->seq, &json,
                                      ngx_http_im_revoke_stored, rv)
        != NGX_OK)
    {
        rv->err = NGX_HTTP_IM_ERR_UNAVAILABLE;
        ngx_http_im_revoke_step(rv);
    }
}


static void
ngx_http_im_revoke_stored(void *data, ngx_int_t err, ngx_int_t n)
{
    ngx_http_im_revoke_t  *rv = data;

    if (err) {
        rv->err = err;

    } else if (n == 0 && !ngx_http_im_mongo_enabled()) {
        rv->err = NGX_HTTP_IM_ERR_NOT_FOUND;
    }

    ngx_http_im_revoke_step(rv);
}


static void
ngx_http_im_revoke_saved(ngx_http_im_mongo_task_t *t)
{
    ngx_http_im_revoke_t  *rv = t->data;

    if (t->rc != NGX_OK || t->items[0].failed) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im: revoking %V:%L in MongoDB failed: %s", &rv->conv,
                      rv->seq, t->rc == NGX_ERROR ? t->err : "refused");
        rv->err = NGX_HTTP_IM_ERR_UNAVAILABLE;
    }

    ngx_http_im_mongo_task_free(t);
    ngx_http_im_revoke_step(rv);
}


static void
ngx_http_im_revoke_step(ngx_http_im_revoke_t *rv)
{
    if (--rv->pending) {
        return;
    }

    if (rv->err == 0) {
        ngx_http_im_revoke_tell(rv);
    }

    ngx_http_im_revoke_end(rv, rv->err, NULL);
}


/* both users: the latest message of their list, and their devices; a
 * group's members: on the group's channel (their lists read the group's
 * messages, the revoked one now) */
static void
ngx_http_im_revoke_tell(ngx_http_im_revoke_t *rv)
{
    size_t             n;
    ngx_str_t          users[2], json;
    ngx_uint_t         i;
    ngx_http_im_buf_t  args;
    char               peer[NGX_HTTP_IM_UID_MAX + 1];

    if (rv->gid.len) {
        json.data = rv->json.data;
        json.len = rv->json.len;
        ngx_http_im_store_group_publish(&rv->gid, &rv->conv, &json);
        return;
    }

    users[0] = rv->revoker;
    n = ngx_http_im_conv_peer((char *) rv->conv.data, rv->conv.len,
                              (char *) rv->revoker.data, rv->revoker.len,
                              peer);
    users[1].data = (u_char *) peer;
    users[1].len = n;

    ngx_http_im_buf_init(&args, NGX_HTTP_IM_REVOKE_BUDGET + 1024);
    ngx_http_im_buf_str(&args, "{\"c\":");
    ngx_http_im_buf_json_str(&args, (char *) rv->conv.data, rv->conv.len);
    ngx_http_im_buf_str(&args, ",\"seq\":");
    ngx_http_im_buf_int(&args, rv->seq);
    ngx_http_im_buf_str(&args, ",\"json\":");
    ngx_http_im_buf_json_str(&args, (char *) rv->json.data, rv->json.len);
    ngx_http_im_buf_str(&args, "}");

    json.data = args.data;
    json.len = args.len;

    for (i = 0; i < 2; i++) {
        if (users[i].len == 0 || (i == 1 && users[1].len == users[0].len
                                  && ngx_strncmp(users[0].data,
                                                 users[1].data,
                                                 users[0].len) == 0))
        {
            continue;
        }

        if (!args.failed) {
            (void) ngx_http_im_store_conv(&users[i], "relast", &json,
                                          ngx_http_im_relast_done, NULL);
        }

        json.data = rv->json.data;
        json.len = rv->json.len;
        ngx_http_im_store_notify(&users[i], &rv->conv, &json);
        json.data = args.data;
        json.len = args.len;
    }

    ngx_http_im_buf_free(&args);
}


static void
ngx_http_im_relast_done(void *data, ngx_http_im_store_conv_res_t *r)
{
    if (r->err) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "im: a revoked latest message was not replaced: %i",
                      r->err);
    }
}


static void
ngx_http_im_revoke_end(ngx_http_im_revoke_t *rv, ngx_int_t code,
    const char *msg)
{
    ngx_http_im_api_t  *api;

    api = rv->api;
    ngx_http_im_buf_free(&rv->orig);
    ngx_http_im_buf_free(&rv->json);
    ngx_free(rv);
    ngx_http_im_api_answer(api, code, msg);
}


/* ----------------------------------------------------------------------
 * /msg/delete_msg_physical {conversationIDs, timestamp}
 */


void
ngx_http_im_msg_purge(ngx_http_im_api_t *api)
{
    char                  err[128];
    size_t                len;
    yajl_val              ids, v;
    ngx_uint_t            i;
    long long             time;
    const char           *id, *us;
    ngx_http_im_purge_t  *pg;

    if (ngx_http_im_json_get_array(api->root, "conversationIDs", 1, &ids,
                                   err, sizeof(err)) != 0
        || ids->u.array.len == 0 || ids->u.array.len > 1000
        || ngx_http_im_json_get_int(api->root, "timestamp", 1, &time, err,
                                    sizeof(err)) != 0
        || time < 0)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS,
                               "fields \"conversationIDs\" (1..1000) and "
                               "\"timestamp\" (ms) are required");
        return;
    }

    for (i = 0; i < ids->u.array.len; i++) {
        v = ids->u.array.values[i];
        id = YAJL_IS_STRING(v) ? v->u.string : NULL;
        len = id ? ngx_strlen(id) : 0;
        us = len > 3 ? (char *) ngx_strlchr((u_char *) id + 3,
                                            (u_char *) id + len, '_')
                     : NULL;

        /* a single or notification conversation of two valid users */
        if (us == NULL
            || !ngx_http_im_conv_member(id, len, id + 3, us - id - 3))
        {
            ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS,
                                   "field \"conversationIDs\" holds an "
                                   "invalid conversation ID");
            return;
        }
    }

    pg = ngx_calloc(sizeof(ngx_http_im_purge_t), ngx_cycle->log);
    if (pg == NULL) {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    pg->api = api;
    pg->time = time;
    pg->ids = ids;
    pg->pending = 1;

    for (i = 0; i < ids->u.array.len; i++) {
        ngx_str_t  conv;

        conv.data = (u_char *) ids->u.array.values[i]->u.string;
        conv.len = ngx_strlen(conv.data);

        if (ngx_http_im_store_msg_purge(&conv, time, ngx_http_im_purged, pg)
            == NGX_OK)
        {
            pg->pending++;

        } else {
            pg->err = NGX_HTTP_IM_ERR_UNAVAILABLE;
        }
    }

    ngx_http_im_purge_step(pg);
}


static void
ngx_http_im_purged(void *data, ngx_int_t err, ngx_int_t n)
{
    ngx_http_im_purge_t  *pg = data;

    if (err) {
        pg->err = err;
    }

    ngx_http_im_purge_step(pg);
}


/* after Redis, MongoDB; then the users' latest messages */
static void
ngx_http_im_purge_step(ngx_http_im_purge_t *pg)
{
    size_t                     len;
    ngx_uint_t                 i;
    ngx_http_im_api_t         *api;
    ngx_http_im_mongo_task_t  *t;

    if (--pg->pending) {
        return;
    }

    if (pg->err == 0 && ngx_http_im_mongo_enabled() && !pg->saved) {
        t = ngx_http_im_mongo_task(NGX_HTTP_IM_MONGO_MSG_PURGE,
                                   pg->ids->u.array.len);

        if (t) {
            for (i = 0; i < pg->ids->u.array.len; i++) {
                len = ngx_strlen(pg->ids->u.array.values[i]->u.string);
                t->items[i].conv_off = t->in.len;
                t->items[i].conv_len = len;
                ngx_http_im_buf_add(&t->in,
                                    pg->ids->u.array.values[i]->u.string,
                                    len);
            }

            t->n = pg->ids->u.array.len;
            t->value = pg->time;
            t->done = ngx_http_im_purge_saved;
            t->data = pg;

            if (!t->in.failed && ngx_http_im_mongo_post(t) == NGX_OK) {
                pg->pending = 1;
                pg->saved = 1;
                return;
            }

            ngx_http_im_mongo_task_free(t);
        }

        pg->err = NGX_HTTP_IM_ERR_UNAVAILABLE;
    }

    if (pg->err == 0) {
        ngx_http_im_purge_lasts(pg);
    }

    api = pg->api;
    i = pg->err;
    ngx_free(pg);
    ngx_http_im_api_answer(api, i, NULL);
}


static void
ngx_http_im_purge_saved(ngx_http_im_mongo_task_t *t)
{
    ngx_http_im_purge_t  *pg = t->data;

    if (t->rc != NGX_OK) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im: delete_msg_physical in MongoDB failed: %s",
                      t->rc == NGX_ERROR ? t->err : "skipped");
        pg->err = NGX_HTTP_IM_ERR_UNAVAILABLE;
    }

    ngx_http_im_mongo_task_free(t);
    ngx_http_im_purge_step(pg);
}


/* both users of each conversation: a latest message purged is gone */
static void
ngx_http_im_purge_lasts(ngx_http_im_purge_t *pg)
{
    size_t             n;
    ngx_str_t          uid, args;
    ngx_uint_t         i, k;
    const char        *id, *us;
    ngx_http_im_buf_t  b;

    for (i = 0; i < pg->ids->u.array.len; i++) {
        id = pg->ids->u.array.values[i]->u.string;
        n = ngx_strlen(id);
        us = (char *) ngx_strlchr((u_char *) id + 3, (u_char *) id + n, '_');

        ngx_http_im_buf_init(&b, 64 * 1024);
        ngx_http_im_buf_str(&b, "{\"ids\":[");
        ngx_http_im_buf_json_str(&b, id, n);
        ngx_http_im_buf_str(&b, "],\"t\":");
        ngx_http_im_buf_int(&b, pg->time);
        ngx_http_im_buf_str(&b, "}");

        args.data = b.data;
        args.len = b.len;

        for (k = 0; k < 2 && !b.failed; k++) {
            uid.data = (u_char *) (k ? us + 1 : id + 3);
            uid.len = k ? (size_t) (id + n - us - 1) : (size_t) (us - id - 3);
            (void) ngx_http_im_store_conv(&uid, "purge", &args,
                                          ngx_http_im_relast_done, NULL);
        }

        ngx_http_im_buf_free(&b);
    }
}
