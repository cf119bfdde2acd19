
/*
 * ngx_im: the send path, shared by WebSocket 1003 and the REST API.
 *
 * A stored message costs one script round trip (send.lua): it stores the
 * message and publishes it to both users, and its reply is the ack.  When
 * the recipient has no subscribed worker anywhere (the PUBLISH reached
 * nobody), an offline-push job goes to the im:push stream.  An online-only message is
 * not stored: it is published, and the answer says whether anyone got it.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_redis.h"
#include "ngx_http_im_id.h"
#include "ngx_http_im_mongo.h"


#define NGX_HTTP_IM_MAX_MSG_JSON  (1024 * 1024)
#define NGX_HTTP_IM_CMID_MAX      128
#define NGX_HTTP_IM_SEQ_RETRIES   8
#define NGX_HTTP_IM_SEQ_WAIT      1000
#define NGX_HTTP_IM_RESEED_WAIT   5000

/* what becomes of sends that waited for MongoDB */
#define NGX_HTTP_IM_SEQ_RETRY     0
#define NGX_HTTP_IM_SEQ_FORCE     1      /* without a new reservation */
#define NGX_HTTP_IM_SEQ_REFUSE    2      /* 90004: no re-seed possible */

/* room for "im:{c:si_<uid>_<uid>}:cmid:<clientMsgID>" */
#define NGX_HTTP_IM_KEY_MAX                                                 \
    (sizeof("im:{c:si__}:cmid:") + 2 * NGX_HTTP_IM_UID_MAX                  \
     + NGX_HTTP_IM_CMID_MAX)


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
    ngx_uint_t                 recv_known;
    ngx_uint_t                 failed;
    ngx_uint_t                 force;        /* MongoDB could not reserve */
    ngx_uint_t                 retries;
    ngx_queue_t                wait;         /* in a seq wait */
} ngx_http_im_send_ctx_t;


/* sends of one conversation waiting for MongoDB to reserve its seqs */
typedef struct {
    ngx_queue_t                link;
    ngx_queue_t                sends;
    ngx_str_t                  conv;
    ngx_event_t                timer;        /* MongoDB is too slow */
    ngx_uint_t                 abandoned;
    ngx_uint_t                 reseed;
} ngx_http_im_seq_wait_t;


/* this worker's seq waits; few at a time, so a list */
static ngx_queue_t  ngx_http_im_send_waits;


static ngx_http_im_send_ctx_t *ngx_http_im_send_ctx(ngx_http_im_msg_t *m,
    ngx_str_t *conv, ngx_http_im_send_t *opts);
static void ngx_http_im_send_free(ngx_http_im_send_ctx_t *ctx);
static ngx_int_t ngx_http_im_send_stored(ngx_http_im_send_ctx_t *ctx);
static void ngx_http_im_send_stored_reply(redisReply *reply, void *data);
static ngx_int_t ngx_http_im_send_publish(ngx_http_im_send_ctx_t *ctx,
    ngx_str_t *uid, long long seq, ngx_http_im_redis_pt handler);
static void ngx_http_im_send_push_job(ngx_http_im_send_ctx_t *ctx);
static ngx_int_t ngx_http_im_send_online(ngx_http_im_send_ctx_t *ctx);
static void ngx_http_im_send_exists_reply(redisReply *reply, void *data);
static void ngx_http_im_send_online_reply(redisReply *reply, void *data);
static void ngx_http_im_send_ack(ngx_http_im_send_ctx_t *ctx,
    long long seq, ngx_int_t online);
static void ngx_http_im_send_seq(ngx_http_im_send_ctx_t *ctx,
    ngx_uint_t op, long long cur);
static void ngx_http_im_send_seq_done(ngx_http_im_mongo_task_t *t);
static void ngx_http_im_send_seeded(redisReply *reply, void *data);
static void ngx_http_im_send_retry(ngx_http_im_send_ctx_t *ctx);
static void ngx_http_im_send_force(ngx_http_im_send_ctx_t *ctx);
static void ngx_http_im_send_resume(ngx_http_im_seq_wait_t *w,
    ngx_uint_t how);
static void ngx_http_im_send_seq_late(ngx_event_t *ev);
static void ngx_http_im_send_cannot(ngx_http_im_send_ctx_t *ctx,
    ngx_uint_t op);


/*
 * Sends m in conversation conv.  Fills the fields the server owns
 * (serverMsgID, sendTime, createTime, status; clientMsgID when missing).
 * opts->done gets the ack data {serverMsgID, clientMsgID, sendTime, seq}
 * (plus "online" for online-only messages), or an error code.  Returns 0,
 * or an error code when the message cannot be taken; done() is not called
 * then.
 */
ngx_int_t
ngx_http_im_msg_send(ngx_http_im_msg_t *m, ngx_str_t *conv,
    ngx_http_im_send_t *opts)
{
    ngx_int_t                rc;
    ngx_http_im_send_ctx_t  *ctx;

    if (ngx_http_im_msg_check(m) != NULL) {
        return NGX_HTTP_IM_ERR_ARGS;
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
 * What the send path needs of a message beyond its JSON shape: NULL, or
 * the error.  Options keys become MongoDB field names, where "", "$..."
 * and "a.b" are refused: one such message would stop persistence.
 */
const char *
ngx_http_im_msg_check(ngx_http_im_msg_t *m)
{
    size_t      j;
    ngx_uint_t  i;
    u_char      c;

    if (m->client_msg_id.len > NGX_HTTP_IM_CMID_MAX) {
        return "field \"clientMsgID\" is over 128 bytes";
    }

    for (i = 0; i < m->noptions; i++) {
        if (m->options[i].key.len == 0 || m->options[i].key.len > 64) {
            return "field \"options\": keys must be 1..64 letters, digits "
                   "or _";
        }

        for (j = 0; j < m->options[i].key.len; j++) {
            c = m->options[i].key.data[j];

            if (!(c == '_' || (c >= '0' && c <= '9')
                  || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')))
            {
                return "field \"options\": keys must be 1..64 letters, "
                       "digits or _";
            }
        }
    }

    return NULL;
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
           + m->offline_push_info.desc.len + m->offline_push_info.ex.len;

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

    p = (u_char *) (ctx + 1);

#define ngx_http_im_send_copy(dst, src, n)                                  \
    (dst).data = p; (dst).len = (n); p = ngx_cpymem(p, src, n)

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


static void
ngx_http_im_send_free(ngx_http_im_send_ctx_t *ctx)
{
    ngx_http_im_buf_free(&ctx->json);
    ngx_free(ctx);
}


static ngx_int_t
ngx_http_im_send_stored(ngx_http_im_send_ctx_t *ctx)
{
    u_char                   *p;
    size_t                    len[25];
    ngx_uint_t                i;
    const char               *argv[25];
    ngx_http_im_main_conf_t  *imcf;
    u_char                    keys[11][NGX_HTTP_IM_KEY_MAX];
    u_char                    now_ms[NGX_INT64_LEN], ttl[NGX_INT64_LEN];
    u_char                    nums[2][NGX_INT64_LEN];
    u_char                    chans[2][NGX_HTTP_IM_UID_MAX + 16];
    u_char                    head[NGX_MAXHOSTNAMELEN + 256];

    imcf = ngx_http_im_worker->imcf;

    len[0] = ngx_sprintf(keys[0], "im:{c:%V}:seq", &ctx->conv) - keys[0];
    len[1] = ngx_sprintf(keys[1], "im:{c:%V}:msgs", &ctx->conv) - keys[1];
    p = ngx_sprintf(keys[2], "im:{c:%V}:cmid:%V", &ctx->conv,
                    &ctx->client_msg_id);
    len[2] = p - keys[2];
    len[3] = ngx_sprintf(keys[3], "im:{u:%V}:convs", &ctx->send_id)
             - keys[3];
    len[4] = ngx_sprintf(keys[4], "im:{u:%V}:convs", &ctx->recv_id)
             - keys[4];
    len[5] = ngx_sprintf(keys[5], "im:{u:%V}:read", &ctx->send_id) - keys[5];
    len[6] = ngx_sprintf(keys[6], "im:user:%V", &ctx->recv_id) - keys[6];
    len[7] = ngx_sprintf(keys[7], "im:persist") - keys[7];
    len[8] = ngx_sprintf(keys[8], "im:{c:%V}:reserved", &ctx->conv)
             - keys[8];
    len[9] = ngx_sprintf(keys[9], "im:{c:%V}:done", &ctx->conv) - keys[9];
    len[10] = ngx_sprintf(keys[10], "im:{u:%V}:online", &ctx->recv_id)
              - keys[10];

    for (i = 0; i < 11; i++) {
        argv[i] = (char *) keys[i];
    }

    /* the script puts the seq between these two halves */
    argv[11] = (char *) ctx->json.data;
    len[11] = ctx->seq_at;
    argv[12] = (char *) ctx->json.data + ctx->seq_at + 1;
    len[12] = ctx->json.len - ctx->seq_at - 1;
    argv[13] = (char *) now_ms;
    len[13] = ngx_sprintf(now_ms, "%L", ctx->send_time) - now_ms;
    argv[14] = (char *) ctx->conv.data;
    len[14] = ctx->conv.len;
    argv[15] = (char *) ttl;
    len[15] = ngx_sprintf(ttl, "%T", imcf->dedup_ttl) - ttl;
    argv[16] = "1";
    len[16] = 1;
    argv[17] = ngx_http_im_mongo_enabled() ? "1" : "0";
    len[17] = 1;
    argv[18] = (char *) nums[0];
    len[18] = ngx_sprintf(nums[0], "%ui", imcf->hot_window) - nums[0];
    argv[19] = (char *) nums[1];
    len[19] = ngx_sprintf(nums[1], "%ui", imcf->persist_stream_max)
              - nums[1];
    argv[20] = ctx->force ? "1" : "0";
    len[20] = 1;
    argv[21] = (char *) ctx->server_msg_id.data;
    len[21] = ctx->server_msg_id.len;

    /* the deliveries, published by the script (see session.c) */
    argv[22] = (char *) head;
    len[22] = ngx_snprintf(head, sizeof(head), "m %V %uL %V\n",
                           &ngx_http_im_worker->origin, ctx->opts.sid,
                           &ctx->conv)
              - head;
    argv[23] = (char *) chans[0];
    len[23] = ngx_sprintf(chans[0], "im:u:%V", &ctx->recv_id) - chans[0];
    argv[24] = (char *) chans[1];
    len[24] = 0;

    if (ctx->send_id.len != ctx->recv_id.len
        || ngx_strncmp(ctx->send_id.data, ctx->recv_id.data,
                       ctx->send_id.len) != 0)
    {
        len[24] = ngx_sprintf(chans[1], "im:u:%V", &ctx->send_id) - chans[1];
    }

    return ngx_http_im_redis_script(NGX_HTTP_IM_LUA_SEND,
                                    ngx_http_im_send_stored_reply, ctx, 11,
                                    25, argv, len);
}


static void
ngx_http_im_send_stored_reply(redisReply *reply, void *data)
{
    ngx_http_im_send_ctx_t  *ctx = data;

    redisReply  *e;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        ctx->opts.done(ctx->opts.data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        goto done;
    }

    if (reply->type == REDIS_REPLY_INTEGER) {
        if (reply->integer == -NGX_HTTP_IM_ERR_UNAVAILABLE) {
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "im: persistence backlog reached "
                          "im_persist_stream_max, refusing messages "
                          "until MongoDB catches up");
            ngx_http_im_metric_inc(NGX_HTTP_IM_M_PERSIST_FULL);
        }

        ctx->opts.done(ctx->opts.data, (ngx_int_t) -reply->integer, NULL);
        goto done;
    }

    if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1
        && reply->element[0]->type == REDIS_REPLY_INTEGER
        && (reply->element[0]->integer == -2
            || reply->element[0]->integer == -3))
    {
        /* MongoDB first: seed a lost seq, or reserve the next block */
        ngx_http_im_send_seq(ctx, reply->element[0]->integer == -2
                                  ? NGX_HTTP_IM_MONGO_RESEED
                                  : NGX_HTTP_IM_MONGO_RESERVE,
                             reply->elements > 1
                             ? reply->element[1]->integer : 0);
        return;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2
        || reply->element[1]->type != REDIS_REPLY_INTEGER)
    {
        ctx->opts.done(ctx->opts.data, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        goto done;
    }

    if (reply->element[0]->integer == 0 && reply->elements == 4
        && reply->element[2]->type == REDIS_REPLY_INTEGER
        && reply->element[3]->type == REDIS_REPLY_STRING)
    {
        /* a resend: answer with the first ack, deliver nothing */
        e = reply->element[3];
        ctx->send_time = reply->element[2]->integer;
        ctx->server_msg_id.len = ngx_min(e->len, NGX_HTTP_IM_ID_LEN);
        ngx_memcpy(ctx->server_msg_id.data, e->str, ctx->server_msg_id.len);
        ngx_http_im_send_ack(ctx, reply->element[1]->integer, -1);
        goto done;
    }

    ctx->seq = reply->element[1]->integer;
    ngx_http_im_metric_sent(ctx->kind);

    /*
     * No worker anywhere subscribed to the recipient: offline.  The job
     * goes out before the ack, so that whoever holds the ack also sees
     * the job counted.
     */
    if (ctx->opts.offline_push && reply->elements > 2
        && reply->element[2]->type == REDIS_REPLY_INTEGER
        && reply->element[2]->integer == 0)
    {
        ngx_http_im_send_push_job(ctx);
    }

    ngx_http_im_send_ack(ctx, ctx->seq, -1);

done:

    ngx_http_im_send_free(ctx);
}


/* a delivery is "m <origin> <session id> <conversation>\n<MsgData>" */
static ngx_int_t
ngx_http_im_send_publish(ngx_http_im_send_ctx_t *ctx, ngx_str_t *uid,
    long long seq, ngx_http_im_redis_pt handler)
{
    u_char             *p;
    size_t              len[3];
    const char         *argv[3];
    ngx_http_im_buf_t  *b;
    u_char              chan[NGX_HTTP_IM_UID_MAX + 16];
    u_char              line[NGX_MAXHOSTNAMELEN + 256];

    b = &ngx_http_im_worker->scratch;
    ngx_http_im_buf_reset(b);

    p = ngx_snprintf(line, sizeof(line), "m %V %uL %V\n",
                     &ngx_http_im_worker->origin, ctx->opts.sid, &ctx->conv);
    ngx_http_im_buf_add(b, line, p - line);
    ngx_http_im_buf_add(b, ctx->json.data, ctx->seq_at);
    ngx_http_im_buf_int(b, seq);
    ngx_http_im_buf_add(b, ctx->json.data + ctx->seq_at + 1,
                        ctx->json.len - ctx->seq_at - 1);

    if (b->failed) {
        return NGX_ERROR;
    }

    argv[0] = "PUBLISH";
    len[0] = 7;
    argv[1] = (char *) chan;
    len[1] = ngx_sprintf(chan, "im:u:%V", uid) - chan;
    argv[2] = (char *) b->data;
    len[2] = b->len;

    return ngx_http_im_redis_command(handler, ctx, 3, argv, len);
}


/*
 * The recipient is offline: leave a job for the push gateway on the
 * im:push stream (fields in docs/api.md).  push_job.lua adds the
 * recipient's device tokens.
 */
static void
ngx_http_im_send_push_job(ngx_http_im_send_ctx_t *ctx)
{
    size_t       len[25];
    const char  *argv[25];
    u_char       key[NGX_HTTP_IM_UID_MAX + 32];
    u_char       nums[4][NGX_INT64_LEN];

    argv[0] = (char *) key;
    len[0] = ngx_sprintf(key, "im:{u:%V}:push", &ctx->recv_id) - key;
    argv[1] = "im:push";
    len[1] = 7;
    argv[2] = (char *) nums[0];
    len[2] = ngx_sprintf(nums[0], "%ui",
                         ngx_http_im_worker->imcf->push_stream_max)
             - nums[0];

#define ngx_http_im_job_field(i, name, val, n)                              \
    argv[i] = name; len[i] = sizeof(name) - 1;                              \
    argv[i + 1] = (char *) (val); len[i + 1] = (n)

    ngx_http_im_job_field(3, "recvID", ctx->recv_id.data, ctx->recv_id.len);
    ngx_http_im_job_field(5, "sendID", ctx->send_id.data, ctx->send_id.len);
    ngx_http_im_job_field(7, "conversationID", ctx->conv.data,
                          ctx->conv.len);
    ngx_http_im_job_field(9, "seq", nums[1],
                          ngx_sprintf(nums[1], "%L", ctx->seq) - nums[1]);
    ngx_http_im_job_field(11, "serverMsgID", ctx->server_msg_id.data,
                          ctx->server_msg_id.len);
    ngx_http_im_job_field(13, "contentType", nums[2],
                          ngx_sprintf(nums[2], "%L", ctx->content_type)
                          - nums[2]);
    ngx_http_im_job_field(15, "sessionType", nums[3],
                          ngx_sprintf(nums[3], "%L", ctx->session_type)
                          - nums[3]);
    ngx_http_im_job_field(17, "class", ctx->opts.push_class.data,
                          ctx->opts.push_class.len);
    ngx_http_im_job_field(19, "title", ctx->title.data, ctx->title.len);
    ngx_http_im_job_field(21, "desc", ctx->desc.data, ctx->desc.len);
    ngx_http_im_job_field(23, "ex", ctx->ex.data, ctx->ex.len);

#undef ngx_http_im_job_field

    if (ngx_http_im_redis_script(NGX_HTTP_IM_LUA_PUSH_JOB, NULL, NULL, 2, 25,
                                 argv, len)
        == NGX_OK)
    {
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_PUSH_JOBS);
    }
}


/* online-only: EXISTS the recipient, then PUBLISH, pipelined */
static ngx_int_t
ngx_http_im_send_online(ngx_http_im_send_ctx_t *ctx)
{
    size_t       len[2];
    const char  *argv[2];
    u_char       key[NGX_HTTP_IM_UID_MAX + 16];

    argv[0] = "EXISTS";
    len[0] = 6;
    argv[1] = (char *) key;
    len[1] = ngx_sprintf(key, "im:user:%V", &ctx->recv_id) - key;

    if (ngx_http_im_redis_command(ngx_http_im_send_exists_reply, ctx, 2,
                                  argv, len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_im_send_publish(ctx, &ctx->recv_id, 0,
                                 ngx_http_im_send_online_reply)
        != NGX_OK)
    {
        /* the EXISTS reply will find this and answer 90004 */
        ctx->failed = 1;
    }

    return NGX_OK;
}


static void
ngx_http_im_send_exists_reply(redisReply *reply, void *data)
{
    ngx_http_im_send_ctx_t  *ctx = data;

    if (ctx->failed) {
        ctx->opts.done(ctx->opts.data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        ngx_http_im_send_free(ctx);
        return;
    }

    ctx->recv_known = reply && reply->type == REDIS_REPLY_INTEGER
                      && reply->integer == 1;
}


static void
ngx_http_im_send_online_reply(redisReply *reply, void *data)
{
    ngx_http_im_send_ctx_t  *ctx = data;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        ctx->opts.done(ctx->opts.data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);

    } else if (!ctx->recv_known) {
        ctx->opts.done(ctx->opts.data, NGX_HTTP_IM_ERR_USER_ID, NULL);

    } else {
        ngx_http_im_metric_sent(ctx->kind);
        ngx_http_im_send_ack(ctx, 0, reply->integer > 0);
    }

    ngx_http_im_send_free(ctx);
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
 * wait stays until its task completes.
 */
static void
ngx_http_im_send_seq_late(ngx_event_t *ev)
{
    ngx_http_im_seq_wait_t  *w = ev->data;

    ngx_queue_remove(&w->link);
    w->abandoned = 1;
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

    size_t       len[4];
    const char  *argv[4];
    u_char       keys[2][NGX_HTTP_IM_KEY_MAX];
    u_char       nums[2][NGX_INT64_LEN];

    if (w->timer.timer_set) {
        ngx_del_timer(&w->timer);
    }

    if (!w->abandoned) {
        ngx_queue_remove(&w->link);
    }

    if (t->rc != NGX_OK) {
        ngx_http_im_send_resume(w, t->op == NGX_HTTP_IM_MONGO_RESEED
                                   ? NGX_HTTP_IM_SEQ_REFUSE
                                   : NGX_HTTP_IM_SEQ_FORCE);
        ngx_http_im_mongo_task_free(t);
        ngx_free(w);
        return;
    }

    len[0] = ngx_sprintf(keys[0], "im:{c:%V}:seq", &w->conv) - keys[0];
    len[1] = ngx_sprintf(keys[1], "im:{c:%V}:reserved", &w->conv) - keys[1];
    argv[0] = (char *) keys[0];
    argv[1] = (char *) keys[1];

    if (t->op == NGX_HTTP_IM_MONGO_RESEED) {
        /* the seq moves to the mark, and the reservation with it: the next
         * send then reserves a fresh block before using it */
        argv[2] = (char *) nums[0];
        len[2] = ngx_sprintf(nums[0], "%L", (long long) t->value) - nums[0];
        argv[3] = (char *) nums[0];
        len[3] = len[2];

    } else {
        argv[2] = "";
        len[2] = 0;
        argv[3] = (char *) nums[1];
        len[3] = ngx_sprintf(nums[1], "%L", (long long) t->value) - nums[1];
    }

    ngx_http_im_mongo_task_free(t);

    /* an abandoned wait still records its reservation, for later sends */
    if (ngx_http_im_redis_script(NGX_HTTP_IM_LUA_SEQ_SEED,
                                 ngx_http_im_send_seeded, w, 2, 4,
                                 argv, len)
        != NGX_OK)
    {
        ngx_http_im_send_resume(w, NGX_HTTP_IM_SEQ_RETRY);
        ngx_free(w);
    }
}


static void
ngx_http_im_send_seeded(redisReply *reply, void *data)
{
    ngx_http_im_seq_wait_t  *w = data;

    ngx_http_im_send_resume(w, NGX_HTTP_IM_SEQ_RETRY);
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
