
/*
 * ngx_im: the send path, shared by WebSocket 1003 and the REST API.
 *
 * Every message is checked here, the same way whichever surface took it
 * (ngx_http_im_msg_check()), before anything is stored.
 *
 * A stored message costs one store round trip: it stores the message and
 * delivers it to both users, and its reply is the ack.  When the
 * recipient has no subscribed worker anywhere, an offline-push job goes
 * out.  An online-only message is not stored: it is delivered, and the
 * answer says whether anyone got it.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_store.h"
#include "ngx_http_im_group.h"
#include "ngx_http_im_id.h"
#include "ngx_http_im_mongo.h"


#define NGX_HTTP_IM_MAX_MSG_JSON  (1024 * 1024)
#define NGX_HTTP_IM_SEQ_RETRIES   8
#define NGX_HTTP_IM_SEQ_WAIT      1000
#define NGX_HTTP_IM_RESEED_WAIT   5000

/* a MsgData's strings together: at most im_max_content plus
 * NGX_HTTP_IM_MSG_EXTRA (ngx_http_im_limits.h) */

#define NGX_HTTP_IM_MSG_FROM_USER    100
#define NGX_HTTP_IM_MSG_FROM_SYSTEM  200

/* fits every text of ngx_http_im_msg_check(), content's too */
#define NGX_HTTP_IM_MSG_ERRLEN       256

/* what becomes of sends that waited for MongoDB */
#define NGX_HTTP_IM_SEQ_RETRY     0
#define NGX_HTTP_IM_SEQ_FORCE     1      /* without a new reservation */
#define NGX_HTTP_IM_SEQ_REFUSE    2      /* 90004: no re-seed possible */

typedef struct {
    ngx_http_im_send_t         opts;
    ngx_http_im_buf_t          json;         /* MsgData with "seq":0 */
    size_t                     seq_at;
    ngx_str_t                  conv;
    ngx_str_t                  send_id;
    ngx_str_t                  recv_id;
    ngx_str_t                  server_msg_id;
    ngx_str_t                  client_msg_id;
    ngx_str_t                  title;        /* for the push job */
    ngx_str_t                  desc;
    ngx_str_t                  ex;
    long long                  send_time;
    long long                  content_type;
    long long                  session_type;
    long long                  seq;
    ngx_uint_t                 kind;         /* for metrics */
    ngx_uint_t                 force;        /* MongoDB could not reserve */
    ngx_uint_t                 retries;
    ngx_queue_t                wait;         /* in a seq wait */
    ngx_str_t                  group;        /* sessionType 3 */
    ngx_uint_t                 system;       /* msgFrom 200 */
    ngx_uint_t                 at_all;
    ngx_str_t                 *at;           /* copies, after the ctx */
    ngx_uint_t                 nat;
    ngx_uint_t                 rules;        /* the store's m->rules */
    ngx_uint_t                 load_recv;
} ngx_http_im_send_ctx_t;


/* sends of one conversation waiting for MongoDB to reserve its seqs */
typedef struct {
    ngx_queue_t                link;
    ngx_queue_t                sends;
    ngx_str_t                  conv;
    ngx_event_t                timer;        /* MongoDB is too slow */
    ngx_http_im_mongo_task_t  *task;         /* until it is done */
    ngx_uint_t                 abandoned;
    ngx_uint_t                 reseed;
} ngx_http_im_seq_wait_t;


/* a bounded string field of MsgData */
typedef struct {
    const char                *name;
    size_t                     offset;       /* of its ngx_http_im_str_t */
    size_t                     max;
} ngx_http_im_msg_str_t;


/* this worker's seq waits; few at a time, so a list */
static ngx_queue_t  ngx_http_im_send_waits;


/*
 * The bounds of docs/protocol.md ("MsgData"); content is bounded by
 * im_max_content, sendID and recvID are user IDs, and the server replaces
 * serverMsgID.
 */
static const ngx_http_im_msg_str_t  ngx_http_im_msg_strs[] = {

    { "groupID", offsetof(ngx_http_im_msg_t, group_id),
      NGX_HTTP_IM_UID_MAX },

    { "clientMsgID", offsetof(ngx_http_im_msg_t, client_msg_id),
      NGX_HTTP_IM_CMID_MAX },

    { "serverMsgID", offsetof(ngx_http_im_msg_t, server_msg_id),
      NGX_HTTP_IM_CMID_MAX },

    { "senderNickname", offsetof(ngx_http_im_msg_t, sender_nickname), 255 },

    { "senderFaceURL", offsetof(ngx_http_im_msg_t, sender_face_url), 1024 },

    { "ex", offsetof(ngx_http_im_msg_t, ex), 4096 },

    { "offlinePushInfo.title",
      offsetof(ngx_http_im_msg_t, offline_push_info.title), 255 },

    { "offlinePushInfo.desc",
      offsetof(ngx_http_im_msg_t, offline_push_info.desc), 1024 },

    { "offlinePushInfo.ex",
      offsetof(ngx_http_im_msg_t, offline_push_info.ex), 4096 },

    { "offlinePushInfo.iOSPushSound",
      offsetof(ngx_http_im_msg_t, offline_push_info.ios_push_sound), 255 },

    { NULL, 0, 0 }
};


static ngx_int_t ngx_http_im_msg_check_ints(ngx_http_im_msg_t *m,
    char *err, size_t errlen);
static ngx_int_t ngx_http_im_msg_check_ids(ngx_http_im_msg_t *m,
    char *err, size_t errlen);
static ngx_int_t ngx_http_im_msg_check_strs(ngx_http_im_msg_t *m,
    char *err, size_t errlen);
static ngx_int_t ngx_http_im_msg_check_options(ngx_http_im_msg_t *m,
    char *err, size_t errlen);
static ngx_int_t ngx_http_im_msg_check_content(ngx_http_im_msg_t *m,
    char *err, size_t errlen);
static ngx_int_t ngx_http_im_msg_error(char *err, size_t errlen,
    const char *fmt, ...);
static ngx_http_im_send_ctx_t *ngx_http_im_send_ctx(ngx_http_im_msg_t *m,
    ngx_str_t *conv, ngx_http_im_send_t *opts);
static void ngx_http_im_send_at(ngx_http_im_send_ctx_t *ctx,
    ngx_http_im_msg_t *m, u_char **p);
static void ngx_http_im_send_free(ngx_http_im_send_ctx_t *ctx);
static void ngx_http_im_send_msg(ngx_http_im_send_ctx_t *ctx,
    ngx_http_im_store_msg_t *m);
static ngx_int_t ngx_http_im_send_stored(ngx_http_im_send_ctx_t *ctx);
static void ngx_http_im_send_stored_reply(void *data,
    ngx_http_im_store_sent_t *r);
static void ngx_http_im_send_push_job(ngx_http_im_send_ctx_t *ctx);
static void ngx_http_im_send_group_loaded(void *data,
    ngx_http_im_store_conv_res_t *r);
static ngx_uint_t ngx_http_im_send_rules(ngx_http_im_msg_t *m);
static void ngx_http_im_send_user_loaded(void *data,
    ngx_http_im_store_conv_res_t *r);
static ngx_int_t ngx_http_im_send_online(ngx_http_im_send_ctx_t *ctx);
static void ngx_http_im_send_online_reply(void *data, ngx_int_t err,
    ngx_int_t n);
static void ngx_http_im_send_echo(ngx_http_im_send_ctx_t *ctx);
static void ngx_http_im_send_ack(ngx_http_im_send_ctx_t *ctx,
    long long seq, ngx_int_t online);
static void ngx_http_im_send_seq(ngx_http_im_send_ctx_t *ctx,
    ngx_uint_t op, long long cur);
static void ngx_http_im_send_seq_done(ngx_http_im_mongo_task_t *t);
static void ngx_http_im_send_seeded(void *data, ngx_int_t err);
static void ngx_http_im_send_wait_end(ngx_http_im_seq_wait_t *w,
    ngx_uint_t how);
static void ngx_http_im_send_retry(ngx_http_im_send_ctx_t *ctx);
static void ngx_http_im_send_force(ngx_http_im_send_ctx_t *ctx);
static void ngx_http_im_send_resume(ngx_http_im_seq_wait_t *w,
    ngx_uint_t how);
static void ngx_http_im_send_seq_late(ngx_event_t *ev);
static void ngx_http_im_send_cannot(ngx_http_im_send_ctx_t *ctx,
    ngx_uint_t op);
static void ngx_http_im_notify_as(ngx_str_t *from, ngx_str_t *to,
    ngx_str_t *conv, ngx_str_t *key, ngx_int_t content_type,
    ngx_http_im_buf_t *detail);


/*
 * Sends m: checks it (ngx_http_im_msg_check()), then sends it in conv,
 * or when conv is NULL in the conversation of its sessionType (si_ for
 * 1, sn_ for 4).  Fills the fields the server owns (serverMsgID,
 * sendTime, createTime, status; clientMsgID when missing); the caller
 * has set msgFrom, senderPlatformID and max_content.  opts->done gets
 * the ack data {serverMsgID, clientMsgID, sendTime, seq} (plus "online"
 * for online-only messages), or an error code.  Returns 0, or an error
 * code when the message cannot be taken; done() is not called then.  For
 * NGX_HTTP_IM_ERR_ARGS, ngx_http_im_msg_check() tells the reason.
 */
ngx_int_t
ngx_http_im_msg_send(ngx_http_im_msg_t *m, ngx_str_t *conv,
    ngx_http_im_send_t *opts)
{
    ngx_int_t                rc;
    ngx_str_t                own;
    ngx_http_im_send_ctx_t  *ctx;
    u_char                   buf[2 * NGX_HTTP_IM_UID_MAX + 8];

    if (ngx_http_im_msg_check(m) != NULL) {
        return NGX_HTTP_IM_ERR_ARGS;
    }

    if (m->session_type == 3 && opts->online_only) {
        /* a group's online-only messages are not supported */
        return NGX_HTTP_IM_ERR_ARGS;
    }

    if (conv == NULL && m->session_type == 3) {
        own.data = buf;
        own.len = ngx_sprintf(buf, "sg_%*s", m->group_id.len,
                              m->group_id.data)
                  - buf;
        conv = &own;

    } else if (conv == NULL) {
        /* the IDs are valid user IDs now, so they fit */
        own.data = buf;
        own.len = m->session_type == 4
                  ? ngx_http_im_conv_notification(m->send_id.data,
                                                  m->send_id.len,
                                                  m->recv_id.data,
                                                  m->recv_id.len,
                                                  (char *) buf)
                  : ngx_http_im_conv_single(m->send_id.data, m->send_id.len,
                                            m->recv_id.data, m->recv_id.len,
                                            (char *) buf);
        conv = &own;
    }

    /* typing is never stored, counted or pushed offline (as OpenIM) */
    if (m->content_type == NGX_HTTP_IM_CONTENT_TYPING) {
        opts->online_only = 1;
    }

    ctx = ngx_http_im_send_ctx(m, conv, opts);
    if (ctx == NULL) {
        return NGX_HTTP_IM_ERR_INTERNAL;
    }

    rc = opts->online_only ? ngx_http_im_send_online(ctx)
                           : ngx_http_im_send_stored(ctx);

    if (rc != NGX_OK) {
        ngx_http_im_send_free(ctx);
        return NGX_HTTP_IM_ERR_UNAVAILABLE;
    }

    return 0;
}


/*
 * The one check of a message, whatever surface took it (WebSocket 1003
 * in JSON or protobuf, the REST sends), before anything is stored: the
 * numbers in their ranges, the IDs valid, every string within its bound
 * and all of them together within m->max_content + 16 KiB, and the
 * content a JSON object valid for its contentType.  msgFrom says who
 * sends: a user (100) sends contentTypes below 1000 in sessionType 1, a
 * system sender (200) also sessionType 4 and notification types.
 * Returns NULL, or the error for errCode 1001, naming the field; the
 * text stays valid until the next call.
 */
const char *
ngx_http_im_msg_check(ngx_http_im_msg_t *m)
{
    static char  err[NGX_HTTP_IM_MSG_ERRLEN];

    if (ngx_http_im_msg_check_ints(m, err, sizeof(err)) != NGX_OK
        || ngx_http_im_msg_check_ids(m, err, sizeof(err)) != NGX_OK
        || ngx_http_im_msg_check_strs(m, err, sizeof(err)) != NGX_OK
        || ngx_http_im_msg_check_options(m, err, sizeof(err)) != NGX_OK
        || ngx_http_im_msg_check_content(m, err, sizeof(err)) != NGX_OK)
    {
        return err;
    }

    return NULL;
}


/* the int32 fields of MsgData (im.proto), in the protocol's ranges */
static ngx_int_t
ngx_http_im_msg_check_ints(ngx_http_im_msg_t *m, char *err, size_t errlen)
{
    ngx_uint_t  user;

    if (m->msg_from != NGX_HTTP_IM_MSG_FROM_USER
        && m->msg_from != NGX_HTTP_IM_MSG_FROM_SYSTEM)
    {
        return ngx_http_im_msg_error(err, errlen, "field \"msgFrom\" must "
                                     "be 100 (user) or 200 (system)");
    }

    user = (m->msg_from == NGX_HTTP_IM_MSG_FROM_USER);

    if (m->sender_platform_id < 0 || m->sender_platform_id > 11) {
        return ngx_http_im_msg_error(err, errlen, "field "
                                     "\"senderPlatformID\" must be 0..11");
    }

    if (m->status < INT32_MIN || m->status > INT32_MAX) {
        return ngx_http_im_msg_error(err, errlen, "field \"status\" must "
                                     "be a 32-bit integer");
    }

    if (user && m->session_type != 1 && m->session_type != 3) {
        return ngx_http_im_msg_error(err, errlen, "field \"sessionType\" "
                                     "must be 1 (single chat) or 3 "
                                     "(group)");
    }

    if (m->session_type != 1 && m->session_type != 3
        && m->session_type != 4)
    {
        return ngx_http_im_msg_error(err, errlen, "field \"sessionType\" "
                                     "must be 1 (single), 3 (group) or 4 "
                                     "(notification)");
    }

    if (m->session_type == 3
        && m->content_type == NGX_HTTP_IM_CONTENT_TYPING)
    {
        return ngx_http_im_msg_error(err, errlen, "typing (113) is for "
                                     "single chats");
    }

    if (!ngx_http_im_content_known(m->content_type)) {
        return ngx_http_im_msg_error(err, errlen, "contentType %L is not "
                                     "supported", m->content_type);
    }

    if (user && m->content_type >= NGX_HTTP_IM_CONTENT_SYSTEM) {
        return ngx_http_im_msg_error(err, errlen, "contentType %L is for "
                                     "system senders only",
                                     m->content_type);
    }

    return NGX_OK;
}


/* sendID, recvID and each @ entry: user IDs */
static ngx_int_t
ngx_http_im_msg_check_ids(ngx_http_im_msg_t *m, char *err, size_t errlen)
{
    ngx_uint_t  i;

    if (!ngx_http_im_user_id_valid(m->send_id.data, m->send_id.len)) {
        return ngx_http_im_msg_error(err, errlen, "field \"sendID\" must "
                                     "be a valid user ID");
    }

    if (m->session_type == 3) {
        if (!ngx_http_im_user_id_valid(m->group_id.data, m->group_id.len)) {
            return ngx_http_im_msg_error(err, errlen, "field \"groupID\" "
                                         "must be a valid group ID");
        }

    } else if (!ngx_http_im_user_id_valid(m->recv_id.data, m->recv_id.len))
    {
        return ngx_http_im_msg_error(err, errlen, "field \"recvID\" must "
                                     "be a valid user ID");
    }

    for (i = 0; i < m->nat; i++) {
        if (!ngx_http_im_user_id_valid(m->at_user_ids[i].data,
                                       m->at_user_ids[i].len))
        {
            return ngx_http_im_msg_error(err, errlen, "field "
                                         "\"atUserIDList[%ui]\" must be "
                                         "a valid user ID", i);
        }
    }

    return NGX_OK;
}


/* each string within its bound, and all of them within the total */
static ngx_int_t
ngx_http_im_msg_check_strs(ngx_http_im_msg_t *m, char *err, size_t errlen)
{
    size_t                        total, max_content;
    ngx_uint_t                    i;
    ngx_http_im_str_t            *f;
    const ngx_http_im_msg_str_t  *b;

    max_content = m->max_content;

    if (m->content.len == 0) {
        return ngx_http_im_msg_error(err, errlen, "field \"content\" is "
                                     "required");
    }

    if (m->content.len > max_content) {
        return ngx_http_im_msg_error(err, errlen, "field \"content\" is "
                                     "over %uz bytes (im_max_content)",
                                     max_content);
    }

    total = m->send_id.len + m->recv_id.len + m->content.len;

    for (b = ngx_http_im_msg_strs; b->name; b++) {
        f = (ngx_http_im_str_t *) ((u_char *) m + b->offset);

        if (f->len > b->max) {
            return ngx_http_im_msg_error(err, errlen, "field \"%s\" is "
                                         "over %uz bytes", b->name, b->max);
        }

        total += f->len;
    }

    for (i = 0; i < m->nat; i++) {
        total += m->at_user_ids[i].len;
    }

    for (i = 0; i < m->noptions; i++) {
        total += m->options[i].key.len;
    }

    if (total > max_content + NGX_HTTP_IM_MSG_EXTRA) {
        return ngx_http_im_msg_error(err, errlen, "MsgData is over %uz "
                                     "bytes in all (im_max_content + "
                                     "16 KiB)",
                                     max_content + NGX_HTTP_IM_MSG_EXTRA);
    }

    return NGX_OK;
}


/*
 * Options keys become MongoDB field names, where "", "$..." and "a.b"
 * are refused: one such message would stop persistence.
 */
static ngx_int_t
ngx_http_im_msg_check_options(ngx_http_im_msg_t *m, char *err,
    size_t errlen)
{
    size_t      j;
    ngx_uint_t  i;
    u_char      c;

    for (i = 0; i < m->noptions; i++) {
        if (m->options[i].key.len == 0 || m->options[i].key.len > 64) {
            goto invalid;
        }

        for (j = 0; j < m->options[i].key.len; j++) {
            c = m->options[i].key.data[j];

            if (!(c == '_' || (c >= '0' && c <= '9')
                  || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')))
            {
                goto invalid;
            }
        }
    }

    return NGX_OK;

invalid:

    return ngx_http_im_msg_error(err, errlen, "field \"options\": keys "
                                 "must be 1..64 letters, digits or _");
}


/* the content string holds a JSON object, valid for its contentType */
static ngx_int_t
ngx_http_im_msg_check_content(ngx_http_im_msg_t *m, char *err,
    size_t errlen)
{
    int       rc;
    yajl_val  root;

    root = ngx_http_im_json_parse((u_char *) m->content.data,
                                  m->content.len, err, errlen);
    if (root == NULL) {
        return ngx_http_im_msg_error(err, errlen, "content must be a JSON "
                                     "object for contentType %L",
                                     m->content_type);
    }

    rc = ngx_http_im_content_check(m->content_type, root, err, errlen);

    yajl_tree_free(root);

    return rc == 0 ? NGX_OK : NGX_ERROR;
}


/* writes a NUL-terminated error (ngx_vslprintf's formats) */
static ngx_int_t
ngx_http_im_msg_error(char *err, size_t errlen, const char *fmt, ...)
{
    u_char   *p;
    va_list   args;

    if (errlen == 0) {
        return NGX_ERROR;
    }

    va_start(args, fmt);
    p = ngx_vslprintf((u_char *) err, (u_char *) err + errlen - 1, fmt,
                      args);
    va_end(args);

    *p = '\0';

    return NGX_ERROR;
}


/* the value of an options key; a missing key means true (OpenIM) */
ngx_int_t
ngx_http_im_msg_option(ngx_http_im_msg_t *m, const char *key)
{
    size_t      len;
    ngx_uint_t  i;

    len = ngx_strlen(key);

    for (i = 0; i < m->noptions; i++) {
        if (m->options[i].key.len == len
            && ngx_strncmp(m->options[i].key.data, key, len) == 0)
        {
            return m->options[i].value;
        }
    }

    return 1;
}


static ngx_http_im_send_ctx_t *
ngx_http_im_send_ctx(ngx_http_im_msg_t *m, ngx_str_t *conv,
    ngx_http_im_send_t *opts)
{
    u_char                  *p;
    size_t                   size;
    ngx_uint_t               i;
    const char              *title;
    ngx_http_im_send_ctx_t  *ctx;
    char                     smid[NGX_HTTP_IM_ID_LEN];
    char                     cmid[NGX_HTTP_IM_ID_LEN];

    ngx_http_im_id_format(ngx_http_im_worker->id_prefix,
                          ++ngx_http_im_worker->id_counter, smid);

    m->server_msg_id.data = smid;
    m->server_msg_id.len = NGX_HTTP_IM_ID_LEN;

    if (m->client_msg_id.len == 0) {
        ngx_http_im_id_format(ngx_http_im_worker->id_prefix,
                              ++ngx_http_im_worker->id_counter, cmid);
        m->client_msg_id.data = cmid;
        m->client_msg_id.len = NGX_HTTP_IM_ID_LEN;
    }

    m->send_time = (long long) ngx_time() * 1000
                   + (long long) ngx_timeofday()->msec;
    m->create_time = m->send_time;
    m->status = 2;
    m->seq = 0;

    title = m->offline_push_info.title.len
            ? m->offline_push_info.title.data
            : ngx_http_im_content_title(m->content_type);

    size = conv->len + m->send_id.len + m->recv_id.len + NGX_HTTP_IM_ID_LEN
           + m->client_msg_id.len + ngx_strlen(title) + opts->push_class.len
           + m->offline_push_info.desc.len + m->offline_push_info.ex.len
           + m->group_id.len + (m->nat + 1) * sizeof(ngx_str_t);

    for (i = 0; i < m->nat; i++) {
        size += m->at_user_ids[i].len;
    }

    ctx = ngx_calloc(sizeof(ngx_http_im_send_ctx_t) + size, ngx_cycle->log);
    if (ctx == NULL) {
        return NULL;
    }

    ctx->opts = *opts;
    ctx->send_time = m->send_time;
    ctx->content_type = m->content_type;
    ctx->session_type = m->session_type;
    ctx->kind = opts->online_only ? 3
                : m->session_type == 3 ? 1
                : m->session_type == 4 ? 2 : 0;
    ctx->rules = ngx_http_im_send_rules(m);
    ctx->load_recv = ngx_http_im_mongo_enabled() && m->session_type != 3;

    p = (u_char *) (ctx + 1);

/* an empty source may be NULL (a notification's options) */
#define ngx_http_im_send_copy(dst, src, n)                                  \
    (dst).data = p; (dst).len = (n); p = (n) ? ngx_cpymem(p, src, n) : p

    ngx_http_im_send_copy(ctx->conv, conv->data, conv->len);
    ngx_http_im_send_copy(ctx->send_id, m->send_id.data, m->send_id.len);
    ngx_http_im_send_copy(ctx->recv_id, m->recv_id.data, m->recv_id.len);
    ngx_http_im_send_copy(ctx->server_msg_id, smid, NGX_HTTP_IM_ID_LEN);
    ngx_http_im_send_copy(ctx->client_msg_id, m->client_msg_id.data,
                          m->client_msg_id.len);
    ngx_http_im_send_copy(ctx->title, title, ngx_strlen(title));
    ngx_http_im_send_copy(ctx->desc, m->offline_push_info.desc.data,
                          m->offline_push_info.desc.len);
    ngx_http_im_send_copy(ctx->ex, m->offline_push_info.ex.data,
                          m->offline_push_info.ex.len);

    /* the caller's strings (a REST body) may be gone when the job goes */
    ngx_http_im_send_copy(ctx->opts.push_class, opts->push_class.data,
                          opts->push_class.len);

    if (m->session_type == 3) {
        ngx_http_im_send_copy(ctx->group, m->group_id.data,
                              m->group_id.len);
        ngx_http_im_send_at(ctx, m, &p);
    }

#undef ngx_http_im_send_copy

    /* the copies outlive m; its pointers into this stack frame do not */
    m->server_msg_id.data = (char *) ctx->server_msg_id.data;
    m->client_msg_id.data = (char *) ctx->client_msg_id.data;

    ngx_http_im_buf_init(&ctx->json, NGX_HTTP_IM_MAX_MSG_JSON);
    ngx_http_im_msg_to_json(m, &ctx->json, &ctx->seq_at);

    if (ctx->json.failed) {
        ngx_http_im_send_free(ctx);
        return NULL;
    }

    return ctx;
}


/*
 * A group message's @: "AtAllTag" is @all, the others are copied (at most
 * the protocol's 1000) at *p, within the ctx's memory.
 */
static void
ngx_http_im_send_at(ngx_http_im_send_ctx_t *ctx, ngx_http_im_msg_t *m,
    u_char **p)
{
    ngx_uint_t  i;

    /* the server's own group notifications need no member: the operator
     * may have just left; any other sender must be one */
    ctx->system = (m->content_type >= NGX_HTTP_IM_CONTENT_GROUP_FIRST
                   && m->content_type <= NGX_HTTP_IM_CONTENT_GROUP_LAST);

    if (m->content_type != NGX_HTTP_IM_CONTENT_AT_TEXT || m->nat == 0) {
        return;
    }

    ctx->at = (ngx_str_t *) ngx_align_ptr(*p, sizeof(void *));
    *p = (u_char *) (ctx->at + m->nat);

    for (i = 0; i < m->nat; i++) {
        if (m->at_user_ids[i].len == sizeof("AtAllTag") - 1
            && ngx_strncmp(m->at_user_ids[i].data, "AtAllTag",
                           sizeof("AtAllTag") - 1) == 0)
        {
            ctx->at_all = 1;
            continue;
        }

        ctx->at[ctx->nat].data = *p;
        ctx->at[ctx->nat].len = m->at_user_ids[i].len;
        *p = ngx_cpymem(*p, m->at_user_ids[i].data, m->at_user_ids[i].len);
        ctx->nat++;
    }
}


static void
ngx_http_im_send_free(ngx_http_im_send_ctx_t *ctx)
{
    ngx_http_im_buf_free(&ctx->json);
    ngx_free(ctx);
}


/* what the store needs of a message */
static void
ngx_http_im_send_msg(ngx_http_im_send_ctx_t *ctx, ngx_http_im_store_msg_t *m)
{
    m->conv = ctx->conv;
    m->send_id = ctx->send_id;
    m->recv_id = ctx->recv_id;
    m->client_msg_id = ctx->client_msg_id;
    m->server_msg_id = ctx->server_msg_id;
    m->json.data = ctx->json.data;
    m->json.len = ctx->json.len;
    m->seq_at = ctx->seq_at;
    m->send_time = ctx->send_time;
    m->sid = ctx->opts.sid;
    m->force = ctx->force;
    m->group = ctx->group;
    m->system = ctx->system;
    m->at_all = ctx->at_all;
    m->at = ctx->at;
    m->nat = ctx->nat;
    m->rules = ctx->rules;
    m->load_recv = ctx->load_recv;
}


/*
 * The recipient's rules for a 1:1 message (as OpenIM's): 1 its blacklist,
 * 2 its friend list too (im_friend_verify).  Notifications and the app's
 * admin users are exempt.
 */
static ngx_uint_t
ngx_http_im_send_rules(ngx_http_im_msg_t *m)
{
    ngx_str_t                *a;
    ngx_uint_t                i;
    ngx_http_im_main_conf_t  *imcf;

    if (m->session_type != 1
        || (m->content_type >= NGX_HTTP_IM_NOTIFICATION_BEGIN
            && m->content_type <= NGX_HTTP_IM_NOTIFICATION_END))
    {
        return 0;
    }

    imcf = ngx_http_cycle_get_module_main_conf(ngx_cycle, ngx_http_im_module);

    if (imcf->admins != NGX_CONF_UNSET_PTR && imcf->admins) {
        a = imcf->admins->elts;

        for (i = 0; i < imcf->admins->nelts; i++) {
            if (a[i].len == m->send_id.len
                && ngx_strncmp(a[i].data, m->send_id.data, a[i].len) == 0)
            {
                return 0;
            }
        }
    }

    return imcf->friend_verify ? 2 : 1;
}


static ngx_int_t
ngx_http_im_send_stored(ngx_http_im_send_ctx_t *ctx)
{
    ngx_http_im_store_msg_t  m;

    ngx_http_im_send_msg(ctx, &m);

    return ngx_http_im_store_msg_save(&m, ngx_http_im_send_stored_reply,
                                      ctx);
}


static void
ngx_http_im_send_stored_reply(void *data, ngx_http_im_store_sent_t *r)
{
    ngx_http_im_send_ctx_t  *ctx = data;

    if (r->err) {
        ctx->opts.done(ctx->opts.data, r->err, NULL);
        goto done;
    }

    switch (r->status) {

    case NGX_HTTP_IM_STORE_RESEED:
    case NGX_HTTP_IM_STORE_RESERVE:
        /* MongoDB first: seed a lost seq, or reserve the next block */
        ngx_http_im_send_seq(ctx, r->status == NGX_HTTP_IM_STORE_RESEED
                                  ? NGX_HTTP_IM_MONGO_RESEED
                                  : NGX_HTTP_IM_MONGO_RESERVE,
                             r->seq);
        return;

    case NGX_HTTP_IM_STORE_LOAD:
        /* the group first, from MongoDB; not there either: 1201 */
        if (ctx->retries++) {
            ctx->opts.done(ctx->opts.data, NGX_HTTP_IM_ERR_GROUP_ID, NULL);
            goto done;
        }

        if (ngx_http_im_store_group_load(&ctx->group,
                                         ngx_http_im_send_group_loaded, ctx)
            == NGX_OK)
        {
            return;
        }

        ctx->opts.done(ctx->opts.data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        goto done;

    case NGX_HTTP_IM_STORE_LOAD_USER:
        /* the recipient's profile and relations first, from MongoDB */
        ctx->load_recv = 0;

        if (ngx_http_im_store_user_load(&ctx->recv_id,
                                        ngx_http_im_send_user_loaded, ctx)
            == NGX_OK)
        {
            return;
        }

        ngx_http_im_send_retry(ctx);
        return;

    case NGX_HTTP_IM_STORE_RESENT:
        /* a resend: answer with the first ack, deliver nothing */
        ctx->send_time = r->send_time;
        ctx->server_msg_id.len = ngx_min(r->server_msg_id.len,
                                         NGX_HTTP_IM_ID_LEN);
        ngx_memcpy(ctx->server_msg_id.data, r->server_msg_id.data,
                   ctx->server_msg_id.len);
        ngx_http_im_send_ack(ctx, r->seq, -1);
        goto done;

    default: /* NGX_HTTP_IM_STORE_SENT */
        break;
    }

    ctx->seq = r->seq;
    ngx_http_im_metric_sent(ctx->kind);

    /*
     * No worker anywhere subscribed to the recipient: offline.  The job
     * goes out before the ack, so that whoever holds the ack also sees
     * the job counted.
     */
    if (ctx->opts.offline_push && (!r->online || ctx->group.len)) {
        ngx_http_im_send_push_job(ctx);
    }

    if (ctx->opts.echo) {
        ngx_http_im_send_echo(ctx);
    }

    ngx_http_im_send_ack(ctx, ctx->seq, -1);

done:

    ngx_http_im_send_free(ctx);
}


static void
ngx_http_im_send_group_loaded(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_send_ctx_t  *ctx = data;

    if (r->err) {
        ctx->opts.done(ctx->opts.data, r->err, NULL);
        ngx_http_im_send_free(ctx);
        return;
    }

    ngx_http_im_send_retry(ctx);
}


/*
 * Loaded, or MongoDB failed: the send goes on with what Redis has, so an
 * outage of MongoDB stops no message (a blacklist this Redis lost is
 * then not applied: docs/architecture.md, "Friends").
 */
static void
ngx_http_im_send_user_loaded(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_send_retry(data);
}


/* the recipient is offline: a job for the push gateway */
static void
ngx_http_im_send_push_job(ngx_http_im_send_ctx_t *ctx)
{
    ngx_http_im_store_job_t  job;

    job.recv_id = ctx->recv_id;
    job.send_id = ctx->send_id;
    job.conv = ctx->conv;
    job.seq = ctx->seq;
    job.server_msg_id = ctx->server_msg_id;
    job.content_type = ctx->content_type;
    job.session_type = ctx->session_type;
    job.push_class = ctx->opts.push_class;
    job.title = ctx->title;
    job.desc = ctx->desc;
    job.ex = ctx->ex;

    if (ctx->group.len) {
        /* the offline members', later and in pages (push.c) */
        ngx_http_im_push_group(&job, &ctx->group);
        return;
    }

    if (ngx_http_im_store_push_job(&job) == NGX_OK) {
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_PUSH_JOBS);
    }
}


/* online-only: published if the recipient exists, never stored */
static ngx_int_t
ngx_http_im_send_online(ngx_http_im_send_ctx_t *ctx)
{
    ngx_http_im_store_msg_t  m;

    ngx_http_im_send_msg(ctx, &m);

    return ngx_http_im_store_msg_online(&m, ngx_http_im_send_online_reply,
                                        ctx);
}


static void
ngx_http_im_send_online_reply(void *data, ngx_int_t err, ngx_int_t n)
{
    ngx_http_im_send_ctx_t  *ctx = data;

    if (err) {
        ctx->opts.done(ctx->opts.data, err, NULL);

    } else {
        ngx_http_im_metric_sent(ctx->kind);
        ngx_http_im_send_ack(ctx, 0, n > 0);
    }

    ngx_http_im_send_free(ctx);
}


/* {"msgs":{"<conv>":[MsgData]}}: the message as its recipients get it */
static void
ngx_http_im_send_echo(ngx_http_im_send_ctx_t *ctx)
{
    ngx_http_im_buf_t  *b;

    b = ctx->opts.echo;

    ngx_http_im_buf_str(b, "{\"msgs\":{");
    ngx_http_im_buf_json_str(b, (char *) ctx->conv.data, ctx->conv.len);
    ngx_http_im_buf_str(b, ":[");
    ngx_http_im_buf_add(b, ctx->json.data, ctx->seq_at);
    ngx_http_im_buf_int(b, ctx->seq);
    ngx_http_im_buf_add(b, ctx->json.data + ctx->seq_at + 1,
                        ctx->json.len - ctx->seq_at - 1);
    ngx_http_im_buf_str(b, "]}}");
}


/* calls done() with the ack; online >= 0 adds "online" */
static void
ngx_http_im_send_ack(ngx_http_im_send_ctx_t *ctx, long long seq,
    ngx_int_t online)
{
    ngx_http_im_buf_t  ack;

    ngx_http_im_buf_init(&ack, 4096);

    ngx_http_im_buf_str(&ack, "{\"serverMsgID\":");
    ngx_http_im_buf_json_str(&ack, (char *) ctx->server_msg_id.data,
                             ctx->server_msg_id.len);
    ngx_http_im_buf_str(&ack, ",\"clientMsgID\":");
    ngx_http_im_buf_json_str(&ack, (char *) ctx->client_msg_id.data,
                             ctx->client_msg_id.len);
    ngx_http_im_buf_str(&ack, ",\"sendTime\":");
    ngx_http_im_buf_int(&ack, ctx->send_time);
    ngx_http_im_buf_str(&ack, ",\"seq\":");
    ngx_http_im_buf_int(&ack, seq);

    if (online >= 0) {
        ngx_http_im_buf_str(&ack, online ? ",\"online\":true"
                                         : ",\"online\":false");
    }

    ngx_http_im_buf_str(&ack, "}");

    ctx->opts.done(ctx->opts.data,
                   ack.failed ? NGX_HTTP_IM_ERR_INTERNAL : 0, &ack);
    ngx_http_im_buf_free(&ack);
}


/*
 * The seq must never repeat, even if Redis loses its data: before a
 * conversation uses seqs past its reservation, MongoDB records the next
 * block (RESERVE); a conversation without a seq key in Redis (new, or
 * lost) is seeded from the highest seq MongoDB ever reserved or stored
 * (RESEED).  Then the send runs again.  Sends of a conversation that find
 * it waiting queue behind the first and run again in arrival order, so
 * their seqs keep the order they were sent in.
 */
static void
ngx_http_im_send_seq(ngx_http_im_send_ctx_t *ctx, ngx_uint_t op,
    long long cur)
{
    ngx_queue_t               *q;
    ngx_http_im_seq_wait_t    *w;
    ngx_http_im_mongo_task_t  *t;

    if (++ctx->retries > NGX_HTTP_IM_SEQ_RETRIES) {
        ctx->opts.done(ctx->opts.data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        ngx_http_im_send_free(ctx);
        return;
    }

    if (!ngx_http_im_send_waits.prev) {
        ngx_queue_init(&ngx_http_im_send_waits);
    }

    for (q = ngx_queue_head(&ngx_http_im_send_waits);
         q != ngx_queue_sentinel(&ngx_http_im_send_waits);
         q = ngx_queue_next(q))
    {
        w = ngx_queue_data(q, ngx_http_im_seq_wait_t, link);

        if (w->conv.len == ctx->conv.len
            && ngx_strncmp(w->conv.data, ctx->conv.data, w->conv.len) == 0)
        {
            ngx_queue_insert_tail(&w->sends, &ctx->wait);
            return;
        }
    }

    w = ngx_alloc(sizeof(ngx_http_im_seq_wait_t) + ctx->conv.len,
                  ngx_cycle->log);
    t = ngx_http_im_mongo_task(op, 1);

    if (w == NULL || t == NULL) {
        ngx_free(w);
        if (t) {
            ngx_http_im_mongo_task_free(t);
        }
        ngx_http_im_send_cannot(ctx, op);
        return;
    }

    ngx_memzero(w, sizeof(ngx_http_im_seq_wait_t));
    w->conv.data = (u_char *) (w + 1);
    w->conv.len = ctx->conv.len;
    ngx_memcpy(w->conv.data, ctx->conv.data, ctx->conv.len);
    ngx_queue_init(&w->sends);
    ngx_queue_insert_tail(&w->sends, &ctx->wait);
    w->reseed = (op == NGX_HTTP_IM_MONGO_RESEED);

    w->timer.handler = ngx_http_im_send_seq_late;
    w->timer.data = w;
    w->timer.log = ngx_cycle->log;
    w->timer.cancelable = 1;

    t->done = ngx_http_im_send_seq_done;
    t->data = w;
    t->n = 1;
    t->value = cur + ngx_http_im_worker->imcf->seq_block;
    t->items[0].conv_off = 0;
    t->items[0].conv_len = w->conv.len;
    ngx_http_im_buf_add(&t->in, w->conv.data, w->conv.len);

    if (!t->in.failed && ngx_http_im_mongo_post(t) == NGX_OK) {
        /* a reservation can be skipped soon; a re-seed only waits */
        w->task = t;
        ngx_queue_insert_tail(&ngx_http_im_send_waits, &w->link);
        ngx_add_timer(&w->timer, w->reseed ? NGX_HTTP_IM_RESEED_WAIT
                                           : NGX_HTTP_IM_SEQ_WAIT);
        return;
    }

    ngx_http_im_mongo_task_free(t);
    ngx_free(w);
    ngx_http_im_send_cannot(ctx, op);
}


/* MongoDB cannot be asked now: a reservation can wait, a re-seed not */
static void
ngx_http_im_send_cannot(ngx_http_im_send_ctx_t *ctx, ngx_uint_t op)
{
    static ngx_msec_t  logged;

    if (op == NGX_HTTP_IM_MONGO_RESEED) {
        /* once a second at most: under load this would be every send */
        if (ngx_current_msec - logged >= 1000) {
            logged = ngx_current_msec;
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "im: MongoDB unavailable to seed the seq of "
                          "\"%V\" (and maybe others): refused with 90004",
                          &ctx->conv);
        }

        ctx->opts.done(ctx->opts.data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        ngx_http_im_send_free(ctx);
        return;
    }

    ngx_http_im_send_force(ctx);
}


/*
 * MongoDB did not answer in time: waiting sends go on without a new
 * reservation, so a slow MongoDB never holds a send for long; sends that
 * need a re-seed cannot (their seq would start over) and get 90004.  The
 * wait stays until its task completes.  A re-seed that has not started
 * by then is skipped (a later send seeds again), so a backlog of them
 * never keeps MongoDB's threads; a reservation still runs, because it
 * covers the seqs that the sends used meanwhile.
 */
static void
ngx_http_im_send_seq_late(ngx_event_t *ev)
{
    ngx_http_im_seq_wait_t  *w = ev->data;

    ngx_queue_remove(&w->link);
    w->abandoned = 1;

    if (w->reseed) {
        ngx_http_im_mongo_cancel(w->task);
    }
    ngx_http_im_send_resume(w, w->reseed ? NGX_HTTP_IM_SEQ_REFUSE
                                         : NGX_HTTP_IM_SEQ_FORCE);
}


/* MongoDB is out of reach: go on without a reservation, and say so */
static void
ngx_http_im_send_force(ngx_http_im_send_ctx_t *ctx)
{
    static ngx_msec_t  logged;

    if (ngx_current_msec - logged >= 1000) {
        logged = ngx_current_msec;
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "im: MongoDB unavailable for the seq of \"%V\" (and "
                      "maybe others); allocating without a reservation",
                      &ctx->conv);
    }

    ctx->force = 1;
    ngx_http_im_send_retry(ctx);
}


static void
ngx_http_im_send_seq_done(ngx_http_im_mongo_task_t *t)
{
    ngx_http_im_seq_wait_t  *w = t->data;

    long long   seq, reserved, stored;
    ngx_uint_t  how;

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    if (t->rc != NGX_OK) {
        how = t->op == NGX_HTTP_IM_MONGO_RESEED ? NGX_HTTP_IM_SEQ_REFUSE
                                                : NGX_HTTP_IM_SEQ_FORCE;
        ngx_http_im_mongo_task_free(t);
        ngx_http_im_send_wait_end(w, how);
        return;
    }

    /* a re-seed moves the seq to the mark, and the reservation with it:
     * the next send then reserves a fresh block before using it */
    reserved = (long long) t->value;
    seq = t->op == NGX_HTTP_IM_MONGO_RESEED ? reserved : -1;
    stored = t->op == NGX_HTTP_IM_MONGO_RESEED ? (long long) t->stored : -1;

    ngx_http_im_mongo_task_free(t);

    /*
     * An abandoned wait whose task ran records its reservation too.  The
     * wait stays listed until the seed is stored: sends of the
     * conversation that come meanwhile queue behind the others, instead
     * of starting a wait of their own that could finish first.
     */
    if (ngx_http_im_store_seq_seed(&w->conv, seq, reserved, stored,
                                   ngx_http_im_send_seeded, w)
        != NGX_OK)
    {
        ngx_http_im_send_wait_end(w, NGX_HTTP_IM_SEQ_RETRY);
    }
}


static void
ngx_http_im_send_seeded(void *data, ngx_int_t err)
{
    ngx_http_im_send_wait_end(data, NGX_HTTP_IM_SEQ_RETRY);
}


/* a wait is over: its sends go on (how), in order, and it is freed */
static void
ngx_http_im_send_wait_end(ngx_http_im_seq_wait_t *w, ngx_uint_t how)
{
    if (!w->abandoned) {
        ngx_queue_remove(&w->link);
    }

    ngx_http_im_send_resume(w, how);
    ngx_free(w);
}


/* the waiting sends, in order: sent again, forced or refused; the
 * caller frees w */
static void
ngx_http_im_send_resume(ngx_http_im_seq_wait_t *w, ngx_uint_t how)
{
    ngx_queue_t             *q;
    ngx_http_im_send_ctx_t  *ctx;

    while (!ngx_queue_empty(&w->sends)) {
        q = ngx_queue_head(&w->sends);
        ngx_queue_remove(q);
        ctx = ngx_queue_data(q, ngx_http_im_send_ctx_t, wait);

        switch (how) {

        case NGX_HTTP_IM_SEQ_FORCE:
            ngx_http_im_send_force(ctx);
            break;

        case NGX_HTTP_IM_SEQ_REFUSE:
            ctx->opts.done(ctx->opts.data, NGX_HTTP_IM_ERR_UNAVAILABLE,
                           NULL);
            ngx_http_im_send_free(ctx);
            break;

        default: /* NGX_HTTP_IM_SEQ_RETRY */
            ngx_http_im_send_retry(ctx);
        }
    }
}


static void
ngx_http_im_send_retry(ngx_http_im_send_ctx_t *ctx)
{
    if (ngx_http_im_send_stored(ctx) != NGX_OK) {
        ctx->opts.done(ctx->opts.data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        ngx_http_im_send_free(ctx);
    }
}


/*
 * A notification's MsgData from "from" to "to" (a user, or the group of
 * an sg_ conv) with content {"detail": the JSON text of detail}, which
 * is built into content.
 */
static void
ngx_http_im_note_msg(ngx_http_im_msg_t *m, ngx_str_t *from, ngx_str_t *to,
    ngx_str_t *conv, ngx_int_t content_type, ngx_http_im_buf_t *detail,
    ngx_http_im_buf_t *content, char *smid)
{
    ngx_http_im_buf_init(content, NGX_HTTP_IM_MAX_MSG_JSON);
    ngx_http_im_buf_str(content, "{\"detail\":");
    ngx_http_im_buf_json_str(content, (char *) detail->data, detail->len);
    ngx_http_im_buf_str(content, "}");

    ngx_http_im_id_format(ngx_http_im_worker->id_prefix,
                          ++ngx_http_im_worker->id_counter, smid);

    ngx_http_im_msg_init(m);
    m->send_id.data = (char *) from->data;
    m->send_id.len = from->len;
    m->client_msg_id.data = smid;
    m->client_msg_id.len = NGX_HTTP_IM_ID_LEN;
    m->server_msg_id = m->client_msg_id;
    m->content.data = (char *) content->data;
    m->content.len = content->len;
    m->content_type = content_type;
    m->msg_from = NGX_HTTP_IM_MSG_FROM_SYSTEM;
    m->send_time = (long long) ngx_time() * 1000
                   + (long long) ngx_timeofday()->msec;
    m->create_time = m->send_time;
    m->status = 2;

    if (conv->len > 3 && ngx_strncmp(conv->data, "sg_", 3) == 0) {
        m->session_type = 3;
        m->group_id.data = (char *) conv->data + 3;
        m->group_id.len = conv->len - 3;

    } else {
        m->session_type = ngx_strncmp(conv->data, "si_", 3) == 0 ? 1 : 4;
    }

    m->recv_id.data = to ? (char *) to->data : "";
    m->recv_id.len = to ? to->len : 0;
}


/*
 * A notification (docs/api.md): a MsgData that is not stored (seq 0)
 * from "from" to every session of "to", in conv (NULL: the user's own
 * "n_<to>_<to>"), with content {"detail": the JSON text of detail}.
 * Best effort, like every push: devices that miss it see the state at
 * their next sync.
 */
void
ngx_http_im_notify(ngx_str_t *from, ngx_str_t *to, ngx_str_t *conv,
    ngx_int_t content_type, ngx_http_im_buf_t *detail)
{
    ngx_str_t  id;
    u_char     own[2 * NGX_HTTP_IM_UID_MAX + 8];

    if (conv == NULL) {
        id.data = own;
        id.len = ngx_snprintf(own, sizeof(own), "n_%V_%V", to, to) - own;
        conv = &id;
    }

    ngx_http_im_notify_as(from, to, conv, conv, content_type, detail);
}


/*
 * A notification of a conversation's state (api_conv.c: read receipts
 * 2200, 1300, 2102) is pushed, as OpenIM pushes it, under the
 * conversation's notification conversation, "n_" and the rest of its ID:
 * the JS SDK takes a read receipt only from notificationMsgs, where the
 * JS mode puts "n_" pushes; in msgs it would take it for a new message,
 * and count it unread.
 */
void
ngx_http_im_conv_notify(ngx_str_t *from, ngx_str_t *to, ngx_str_t *conv,
    ngx_int_t content_type, ngx_http_im_buf_t *detail)
{
    ngx_str_t  key;
    u_char     buf[2 * NGX_HTTP_IM_UID_MAX + 8];

    if (conv == NULL || conv->len <= 3 || conv->len > sizeof(buf)
        || (ngx_strncmp(conv->data, "si_", 3) != 0
            && ngx_strncmp(conv->data, "sg_", 3) != 0))
    {
        ngx_http_im_notify(from, to, conv, content_type, detail);
        return;
    }

    key.data = buf;
    key.len = ngx_snprintf(buf, sizeof(buf), "n_%*s", conv->len - 3,
                           conv->data + 3)
              - buf;

    ngx_http_im_notify_as(from, to, conv, &key, content_type, detail);
}


/* the MsgData in conv, pushed under key */
static void
ngx_http_im_notify_as(ngx_str_t *from, ngx_str_t *to, ngx_str_t *conv,
    ngx_str_t *key, ngx_int_t content_type, ngx_http_im_buf_t *detail)
{
    ngx_str_t           json;
    ngx_http_im_buf_t   content, b;
    ngx_http_im_msg_t   m;
    char                smid[NGX_HTTP_IM_ID_LEN];

    ngx_http_im_note_msg(&m, from, to, conv, content_type, detail, &content,
                         smid);

    ngx_http_im_buf_init(&b, NGX_HTTP_IM_MAX_MSG_JSON);
    ngx_http_im_msg_to_json(&m, &b, NULL);

    if (!b.failed && !content.failed) {
        json.data = b.data;
        json.len = b.len;
        ngx_http_im_store_notify(to, key, &json);
    }

    ngx_http_im_buf_free(&b);
    ngx_http_im_buf_free(&content);
}


static void
ngx_http_im_stored_note_sent(void *data, ngx_int_t err,
    ngx_http_im_buf_t *ack)
{
    if (err) {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "im: a notification was not stored: %i", err);
    }
}


/*
 * A notification stored in conv like any message, from the operator, as
 * the system: it needs no membership (the operator may have just left a
 * group) and no friendship.
 */
static void
ngx_http_im_stored_note(ngx_str_t *from, ngx_str_t *to, ngx_str_t *conv,
    ngx_int_t content_type, ngx_http_im_buf_t *detail)
{
    ngx_http_im_buf_t   content;
    ngx_http_im_msg_t   m;
    ngx_http_im_send_t  opts;
    char                smid[NGX_HTTP_IM_ID_LEN];

    ngx_http_im_note_msg(&m, from, to, conv, content_type, detail, &content,
                         smid);
    m.max_content = NGX_HTTP_IM_MAX_MSG_JSON / 2;

    ngx_memzero(&opts, sizeof(ngx_http_im_send_t));
    opts.done = ngx_http_im_stored_note_sent;

    if (!content.failed
        && ngx_http_im_msg_send(&m, conv, &opts) != 0)
    {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "im: a notification was refused: %s",
                      ngx_http_im_msg_check(&m) ? ngx_http_im_msg_check(&m)
                                                : "unavailable");
    }

    ngx_http_im_buf_free(&content);
}


/* a group notification (1501..1520), in the group's conversation */
void
ngx_http_im_group_notify(ngx_str_t *from, ngx_str_t *gid,
    ngx_int_t content_type, ngx_http_im_buf_t *detail)
{
    ngx_str_t  conv;
    u_char     buf[NGX_HTTP_IM_UID_MAX + 4];

    conv.data = buf;
    conv.len = ngx_snprintf(buf, sizeof(buf), "sg_%V", gid) - buf;

    ngx_http_im_stored_note(from, NULL, &conv, content_type, detail);
}


/*
 * A friend notification (1201..1210, 1303): in the notification
 * conversation sn_<from>_<to>, so both users' devices get it and pull it
 * like any message.
 */
void
ngx_http_im_friend_notify(ngx_str_t *from, ngx_str_t *to,
    ngx_int_t content_type, ngx_http_im_buf_t *detail)
{
    ngx_str_t  conv;
    u_char     buf[2 * NGX_HTTP_IM_UID_MAX + 8];

    conv.data = buf;
    conv.len = ngx_http_im_conv_notification((char *) from->data, from->len,
                                             (char *) to->data, to->len,
                                             (char *) buf);

    ngx_http_im_stored_note(from, to, &conv, content_type, detail);
}
