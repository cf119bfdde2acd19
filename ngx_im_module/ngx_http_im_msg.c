
/*
 * ngx_im: WebSocket requests (DESIGN.md 1.2) and the send path shared
 * with the REST API.  Each request is one "call": it holds a reference
 * to its session, issues its Redis commands pipelined, and answers when
 * the last reply is in.  Replies on one connection come back in order,
 * so a call appends each section of its answer as it arrives.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_redis.h"
#include "ngx_http_im_id.h"


#define NGX_HTTP_IM_MAX_RANGES   100
#define NGX_HTTP_IM_MAX_SEQS     1000
#define NGX_HTTP_IM_MAX_MSG_JSON (1024 * 1024)
#define NGX_HTTP_IM_CMID_MAX     128

/* room for "im:{c:si_<uid>_<uid>}:cmid:<clientMsgID>" */
#define NGX_HTTP_IM_KEY_MAX                                                 \
    (sizeof("im:{c:si__}:cmid:") + 2 * NGX_HTTP_IM_UID_MAX                  \
     + NGX_HTTP_IM_CMID_MAX)


/* the contentTypes a user may send (MISSION.md, item 9) */
static long long  ngx_http_im_content_types[] = {
    101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 114, 0
};


typedef struct ngx_http_im_call_s  ngx_http_im_call_t;

struct ngx_http_im_call_s {
    ngx_http_im_session_t     *s;
    long long                  req_identifier;
    ngx_str_t                  operation_id;
    ngx_str_t                  msg_incr;
    ngx_uint_t                 pending;
    ngx_uint_t                 sections;
    ngx_int_t                  err;
    const char                *errmsg;
    ngx_http_im_buf_t          body;         /* the data object */
    ngx_str_t                 *convs;        /* conversation per command */
    ngx_uint_t                 nconvs;
};


/* the send path, shared by 1003 and the REST API */
typedef struct {
    void                     (*done)(void *data, ngx_int_t err,
                                     ngx_http_im_buf_t *ack);
    void                      *data;
    ngx_http_im_buf_t          json;         /* MsgData with "seq":0 */
    size_t                     seq_at;
    ngx_str_t                  conv;
    ngx_str_t                  send_id;
    ngx_str_t                  recv_id;
    uint64_t                   sid;          /* sending session, or 0 */
    ngx_uint_t                 kind;         /* for metrics */
} ngx_http_im_store_t;


static ngx_http_im_call_t *ngx_http_im_call_create(ngx_http_im_session_t *s,
    ngx_http_im_req_t *req);
static void ngx_http_im_call_finish(ngx_http_im_call_t *call);
static void ngx_http_im_call_fail(ngx_http_im_call_t *call, ngx_int_t err,
    const char *msg);
static void ngx_http_im_reply(ngx_http_im_session_t *s,
    long long req_identifier, ngx_str_t *operation_id, ngx_str_t *msg_incr,
    ngx_int_t err, const char *msg, ngx_http_im_buf_t *data);
static ngx_int_t ngx_http_im_browser_ping(ngx_http_im_session_t *s,
    u_char *data, size_t len);
static void ngx_http_im_send(ngx_http_im_call_t *call, yajl_val data);
static void ngx_http_im_send_done(void *data, ngx_int_t err,
    ngx_http_im_buf_t *ack);
static void ngx_http_im_store_reply(redisReply *reply, void *data);
static void ngx_http_im_store_publish(ngx_http_im_store_t *st,
    ngx_str_t *uid, u_char *seq, size_t seq_len);
static void ngx_http_im_store_ack(ngx_http_im_store_t *st, long long seq,
    const char *stored, size_t len);
static void ngx_http_im_newest(ngx_http_im_call_t *call);
static void ngx_http_im_newest_reply(redisReply *reply, void *data);
static void ngx_http_im_pull_range(ngx_http_im_call_t *call,
    yajl_val data);
static void ngx_http_im_pull_seqs(ngx_http_im_call_t *call, yajl_val data);
static void ngx_http_im_pull_reply(redisReply *reply, void *data);
static void ngx_http_im_conv_seq(ngx_http_im_call_t *call, yajl_val data);
static void ngx_http_im_conv_seq_reply(redisReply *reply, void *data);
static ngx_int_t ngx_http_im_call_conv(ngx_http_im_call_t *call,
    yajl_val v, const char *field);
static void ngx_http_im_call_started(ngx_http_im_call_t *call,
    ngx_uint_t n);
static size_t ngx_http_im_key(u_char *buf, const char *fmt, ngx_str_t *a);


/*
 * One complete text or binary message from a session.  Every request
 * gets exactly one response frame; none of them closes the connection
 * except 2003 Logout.
 */
void
ngx_http_im_msg_dispatch(ngx_http_im_session_t *s, u_char *data, size_t len,
    ngx_uint_t binary)
{
    char                 err[256];
    ngx_str_t            empty;
    ngx_http_im_req_t    req;
    ngx_http_im_call_t  *call;

    ngx_str_null(&empty);

    if (binary) {
        ngx_http_im_reply(s, 0, &empty, &empty, NGX_HTTP_IM_ERR_ARGS,
                          "binary frames are not supported yet", NULL);
        return;
    }

    if (ngx_http_im_browser_ping(s, data, len) == NGX_OK) {
        return;
    }

    if (ngx_http_im_req_parse(data, len, &req, err, sizeof(err)) != 0) {
        ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                      "im: bad request from \"%V\": %s", &s->uid, err);
        ngx_http_im_reply(s, 0, &empty, &empty, NGX_HTTP_IM_ERR_ARGS, err,
                          NULL);
        ngx_http_im_req_free(&req);
        return;
    }

    call = ngx_http_im_call_create(s, &req);
    if (call == NULL) {
        ngx_http_im_req_free(&req);
        ngx_http_im_ws_close(s, 1011, "out of memory");
        return;
    }

    switch (req.req_identifier) {

    case NGX_HTTP_IM_REQ_NEWEST_SEQ:
        ngx_http_im_newest(call);
        break;

    case NGX_HTTP_IM_REQ_PULL_RANGE:
        ngx_http_im_pull_range(call, req.data);
        break;

    case NGX_HTTP_IM_REQ_SEND:
        ngx_http_im_send(call, req.data);
        break;

    case NGX_HTTP_IM_REQ_PULL_SEQS:
        ngx_http_im_pull_seqs(call, req.data);
        break;

    case NGX_HTTP_IM_REQ_CONV_SEQ:
        ngx_http_im_conv_seq(call, req.data);
        break;

    case NGX_HTTP_IM_REQ_LOGOUT:
        ngx_http_im_call_finish(call);
        ngx_http_im_ws_close(s, 1000, "logout");
        break;

    default:
        ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                      "im: unknown reqIdentifier %L from \"%V\"",
                      req.req_identifier, &s->uid);
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              "unknown reqIdentifier");
    }

    ngx_http_im_req_free(&req);
}


/* {"type":"ping"} from browsers that cannot send ping frames */
static ngx_int_t
ngx_http_im_browser_ping(ngx_http_im_session_t *s, u_char *data, size_t len)
{
    char               err[64];
    u_char             buf[64];
    yajl_val           root;
    ngx_http_im_str_t  type;

    if (len >= sizeof(buf)
        || ngx_strnstr(data, "\"ping\"", len) == NULL)
    {
        return NGX_DECLINED;
    }

    ngx_memcpy(buf, data, len);
    buf[len] = '\0';

    root = yajl_tree_parse((char *) buf, NULL, 0);
    if (root == NULL) {
        return NGX_DECLINED;
    }

    if (ngx_http_im_json_get_str(root, "type", 1, &type, err, sizeof(err))
        || type.len != 4 || ngx_strncmp(type.data, "ping", 4) != 0)
    {
        yajl_tree_free(root);
        return NGX_DECLINED;
    }

    yajl_tree_free(root);

    ngx_http_im_ws_send(s, NGX_HTTP_IM_WS_OP_TEXT,
                        (u_char *) "{\"type\":\"pong\"}", 15);
    return NGX_OK;
}


static ngx_http_im_call_t *
ngx_http_im_call_create(ngx_http_im_session_t *s, ngx_http_im_req_t *req)
{
    u_char              *p;
    ngx_http_im_call_t  *call;

    call = ngx_calloc(sizeof(ngx_http_im_call_t) + req->operation_id.len
                      + req->msg_incr.len, s->c->log);
    if (call == NULL) {
        return NULL;
    }

    p = (u_char *) (call + 1);

    call->operation_id.data = p;
    call->operation_id.len = req->operation_id.len;
    p = ngx_cpymem(p, req->operation_id.data, req->operation_id.len);

    call->msg_incr.data = p;
    call->msg_incr.len = req->msg_incr.len;
    ngx_memcpy(p, req->msg_incr.data, req->msg_incr.len);

    call->s = s;
    call->req_identifier = req->req_identifier;
    ngx_http_im_buf_init(&call->body, s->conf->ws_send_queue);

    ngx_http_im_session_ref(s);
    s->inflight++;

    return call;
}


/* answers with call->body as data (or the error), and frees the call */
static void
ngx_http_im_call_finish(ngx_http_im_call_t *call)
{
    ngx_uint_t              i;
    ngx_http_im_session_t  *s;

    s = call->s;

    if (call->body.failed && call->err == 0) {
        call->err = NGX_HTTP_IM_ERR_ARGS;
        call->errmsg = "response too large: ask for fewer messages";
    }

    if (!s->closed) {
        ngx_http_im_reply(s, call->req_identifier, &call->operation_id,
                          &call->msg_incr, call->err,
                          call->errmsg ? call->errmsg
                                       : ngx_http_im_errmsg(call->err),
                          call->err == 0 ? &call->body : NULL);
    }

    for (i = 0; i < call->nconvs; i++) {
        ngx_free(call->convs[i].data);
    }

    ngx_free(call->convs);
    ngx_http_im_buf_free(&call->body);
    ngx_free(call);

    s->inflight--;
    if (!s->closed) {
        ngx_http_im_ws_resume(s);
    }

    ngx_http_im_session_unref(s);
}


/* msg must outlive the call: a static string or the caller's buffer */
static void
ngx_http_im_call_fail(ngx_http_im_call_t *call, ngx_int_t err,
    const char *msg)
{
    call->err = err;
    call->errmsg = msg;
    ngx_http_im_call_finish(call);
}


static void
ngx_http_im_reply(ngx_http_im_session_t *s, long long req_identifier,
    ngx_str_t *operation_id, ngx_str_t *msg_incr, ngx_int_t err,
    const char *msg, ngx_http_im_buf_t *data)
{
    ngx_http_im_str_t   opid, incr;
    ngx_http_im_buf_t  *b;

    opid.data = (char *) operation_id->data;
    opid.len = operation_id->len;
    incr.data = (char *) msg_incr->data;
    incr.len = msg_incr->len;

    ngx_http_im_metric_ws(err);

    b = &ngx_http_im_worker->scratch;
    ngx_http_im_buf_reset(b);
    ngx_http_im_resp_begin(b, req_identifier, opid, incr, (int) err, msg);

    if (data && data->len) {
        ngx_http_im_buf_add(b, data->data, data->len);

    } else {
        ngx_http_im_buf_str(b, "{}");
    }

    ngx_http_im_resp_end(b);

    if (b->failed) {
        ngx_http_im_ws_close(s, 1011, "response too large");
        return;
    }

    ngx_http_im_ws_send_json(s, b);
}


/* 1003 SendMsg */


static void
ngx_http_im_send(ngx_http_im_call_t *call, yajl_val data)
{
    char                    err[256];
    ngx_int_t               rc;
    ngx_str_t               conv;
    ngx_uint_t              i;
    ngx_http_im_msg_t       m;
    ngx_http_im_session_t  *s;
    u_char                  buf[2 * NGX_HTTP_IM_UID_MAX + 8];

    s = call->s;

    if (data == NULL
        || ngx_http_im_msg_from_json(data, &m, err, sizeof(err)) != 0)
    {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              data ? err : "data is required");
        return;
    }

    if (m.send_id.len == 0) {
        m.send_id.data = (char *) s->uid.data;
        m.send_id.len = s->uid.len;
    }

    if (m.send_id.len != s->uid.len
        || ngx_strncmp(m.send_id.data, s->uid.data, s->uid.len) != 0)
    {
        ngx_http_im_msg_free(&m);
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_PERMISSION,
                              "sendID is not the connection's user");
        return;
    }

    if (m.session_type != 1) {
        ngx_http_im_msg_free(&m);
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              "sessionType must be 1 (single chat); "
                              "groups are not supported yet");
        return;
    }

    if (!ngx_http_im_user_id_valid(m.recv_id.data, m.recv_id.len)) {
        ngx_http_im_msg_free(&m);
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              "field \"recvID\" must be a valid user ID");
        return;
    }

    if (m.content.len == 0 || m.content.len > s->conf->max_content) {
        ngx_http_im_msg_free(&m);
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              "field \"content\" must be a non-empty "
                              "string within the size limit");
        return;
    }

    for (i = 0; ngx_http_im_content_types[i]; i++) {
        if (ngx_http_im_content_types[i] == m.content_type) {
            break;
        }
    }

    if (ngx_http_im_content_types[i] == 0) {
        ngx_http_im_msg_free(&m);
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              "field \"contentType\" is not a known "
                              "message content type");
        return;
    }

    m.msg_from = 100;
    m.sender_platform_id = s->platform;

    conv.data = buf;
    conv.len = ngx_http_im_conv_single(m.send_id.data, m.send_id.len,
                                       m.recv_id.data, m.recv_id.len,
                                       (char *) buf);

    rc = ngx_http_im_msg_store(&m, &conv, s->id, ngx_http_im_send_done,
                               call);
    if (rc != 0) {
        ngx_http_im_msg_free(&m);
        ngx_http_im_call_fail(call, rc, rc == NGX_HTTP_IM_ERR_ARGS
                              ? "field \"clientMsgID\" is over 128 bytes"
                              : NULL);
        return;
    }

    ngx_http_im_msg_free(&m);
}


static void
ngx_http_im_send_done(void *data, ngx_int_t err, ngx_http_im_buf_t *ack)
{
    ngx_http_im_call_t  *call = data;

    call->err = err;

    if (err == 0) {
        ngx_http_im_buf_add(&call->body, ack->data, ack->len);
    }

    ngx_http_im_call_finish(call);
}


/*
 * Stores m in conversation conv and publishes it to both users; done()
 * gets the ack data {serverMsgID, clientMsgID, sendTime, seq}, or an
 * error code.  Fills the fields the server owns.  Returns 0, or an error
 * code when the message cannot be taken (done() is not called then).
 */
ngx_int_t
ngx_http_im_msg_store(ngx_http_im_msg_t *m, ngx_str_t *conv, uint64_t sid,
    void (*done)(void *data, ngx_int_t err, ngx_http_im_buf_t *ack),
    void *data)
{
    u_char               *p;
    char                  smid[NGX_HTTP_IM_ID_LEN], cmid[NGX_HTTP_IM_ID_LEN];
    size_t                n, len[13];
    ngx_uint_t            i;
    const char           *argv[13];
    ngx_http_im_store_t  *st;
    u_char                keys[7][NGX_HTTP_IM_KEY_MAX];
    u_char                now_ms[NGX_INT64_LEN], ttl[NGX_INT64_LEN];

    if (m->client_msg_id.len > NGX_HTTP_IM_CMID_MAX) {
        return NGX_HTTP_IM_ERR_ARGS;
    }

    if (!ngx_http_im_id_make(smid) || !ngx_http_im_id_make(cmid)) {
        return NGX_HTTP_IM_ERR_INTERNAL;
    }

    m->server_msg_id.data = smid;
    m->server_msg_id.len = NGX_HTTP_IM_ID_LEN;

    if (m->client_msg_id.len == 0) {
        m->client_msg_id.data = cmid;
        m->client_msg_id.len = NGX_HTTP_IM_ID_LEN;
    }

    m->send_time = (long long) ngx_time() * 1000
                   + (long long) ngx_timeofday()->msec;
    m->create_time = m->send_time;
    m->status = 2;
    m->seq = 0;

    st = ngx_calloc(sizeof(ngx_http_im_store_t) + conv->len
                    + m->send_id.len + m->recv_id.len, ngx_cycle->log);
    if (st == NULL) {
        return NGX_HTTP_IM_ERR_INTERNAL;
    }

    st->done = done;
    st->data = data;
    st->sid = sid;
    st->kind = m->session_type == 3 ? 1 : m->session_type == 4 ? 2 : 0;

    p = (u_char *) (st + 1);
    st->conv.data = p;
    st->conv.len = conv->len;
    p = ngx_cpymem(p, conv->data, conv->len);
    st->send_id.data = p;
    st->send_id.len = m->send_id.len;
    p = ngx_cpymem(p, m->send_id.data, m->send_id.len);
    st->recv_id.data = p;
    st->recv_id.len = m->recv_id.len;
    ngx_memcpy(p, m->recv_id.data, m->recv_id.len);

    ngx_http_im_buf_init(&st->json, NGX_HTTP_IM_MAX_MSG_JSON);
    ngx_http_im_msg_to_json(m, &st->json, &st->seq_at);

    if (st->json.failed) {
        goto failed;
    }

    n = ngx_http_im_key(keys[0], "im:{c:%V}:seq", conv);
    len[0] = n;
    len[1] = ngx_http_im_key(keys[1], "im:{c:%V}:msgs", conv);
    p = ngx_sprintf(keys[2], "im:{c:%V}:cmid:%*s", conv,
                    m->client_msg_id.len, m->client_msg_id.data);
    len[2] = p - keys[2];
    len[3] = ngx_http_im_key(keys[3], "im:{u:%V}:convs", &st->send_id);
    len[4] = ngx_http_im_key(keys[4], "im:{u:%V}:convs", &st->recv_id);
    len[5] = ngx_http_im_key(keys[5], "im:{u:%V}:read", &st->send_id);
    len[6] = ngx_http_im_key(keys[6], "im:user:%V", &st->recv_id);

    for (i = 0; i < 7; i++) {
        argv[i] = (char *) keys[i];
    }

    argv[7] = (char *) st->json.data;
    len[7] = st->seq_at;
    argv[8] = (char *) st->json.data + st->seq_at + 1;
    len[8] = st->json.len - st->seq_at - 1;
    argv[9] = (char *) now_ms;
    len[9] = ngx_sprintf(now_ms, "%L", m->send_time) - now_ms;
    argv[10] = (char *) st->conv.data;
    len[10] = st->conv.len;
    argv[11] = (char *) ttl;
    len[11] = ngx_sprintf(ttl, "%T", ngx_http_im_worker->imcf->dedup_ttl)
              - ttl;
    argv[12] = "1";
    len[12] = 1;

    if (ngx_http_im_redis_script(NGX_HTTP_IM_LUA_SEND,
                                 ngx_http_im_store_reply, st, 7, 13,
                                 argv, len)
        == NGX_OK)
    {
        return 0;
    }

failed:

    ngx_http_im_buf_free(&st->json);
    ngx_free(st);

    return NGX_HTTP_IM_ERR_UNAVAILABLE;
}


static void
ngx_http_im_store_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_t  *st = data;

    u_char      seq[NGX_INT64_LEN];
    size_t      n;
    redisReply  *e;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        st->done(st->data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        goto done;
    }

    if (reply->type == REDIS_REPLY_INTEGER) {
        st->done(st->data, (ngx_int_t) -reply->integer, NULL);
        goto done;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 2
        || reply->element[1]->type != REDIS_REPLY_INTEGER)
    {
        st->done(st->data, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        goto done;
    }

    if (reply->element[0]->integer == 0 && reply->elements == 3) {
        /* a resend: answer with the first ack, deliver nothing */
        e = reply->element[2];
        ngx_http_im_store_ack(st, reply->element[1]->integer,
                              e->type == REDIS_REPLY_STRING ? e->str : "",
                              e->type == REDIS_REPLY_STRING ? e->len : 0);
        goto done;
    }

    n = ngx_sprintf(seq, "%L", reply->element[1]->integer) - seq;
    ngx_http_im_metric_sent(st->kind);

    ngx_http_im_store_ack(st, reply->element[1]->integer, NULL, 0);

    /* push is best effort: a lost publish costs latency, never the
     * message, which is stored and found by seq */
    ngx_http_im_store_publish(st, &st->recv_id, seq, n);

    if (st->send_id.len != st->recv_id.len
        || ngx_strncmp(st->send_id.data, st->recv_id.data, st->send_id.len))
    {
        ngx_http_im_store_publish(st, &st->send_id, seq, n);
    }

done:

    ngx_http_im_buf_free(&st->json);
    ngx_free(st);
}


static void
ngx_http_im_store_publish(ngx_http_im_store_t *st, ngx_str_t *uid,
    u_char *seq, size_t seq_len)
{
    u_char             *p;
    size_t              len[3];
    const char         *argv[3];
    ngx_http_im_buf_t  *b;
    u_char              head[NGX_HTTP_IM_UID_MAX + 16];
    u_char              line[256 + NGX_INT64_LEN];

    b = &ngx_http_im_worker->scratch;
    ngx_http_im_buf_reset(b);

    p = ngx_snprintf(line, sizeof(line), "m %V %uL %V\n",
                     &ngx_http_im_worker->origin, st->sid, &st->conv);
    ngx_http_im_buf_add(b, line, p - line);
    ngx_http_im_buf_add(b, st->json.data, st->seq_at);
    ngx_http_im_buf_add(b, seq, seq_len);
    ngx_http_im_buf_add(b, st->json.data + st->seq_at + 1,
                        st->json.len - st->seq_at - 1);

    if (b->failed) {
        return;
    }

    argv[0] = "PUBLISH";
    len[0] = 7;
    argv[1] = (char *) head;
    len[1] = ngx_sprintf(head, "im:u:%V", uid) - head;
    argv[2] = (char *) b->data;
    len[2] = b->len;

    (void) ngx_http_im_redis_command(NULL, NULL, 3, argv, len);
}


/* ack data from the new message, or from the stored one on a resend */
static void
ngx_http_im_store_ack(ngx_http_im_store_t *st, long long seq,
    const char *stored, size_t len)
{
    char                err[64];
    u_char             *text;
    yajl_val            root;
    ngx_http_im_msg_t   m;
    ngx_http_im_buf_t   ack;

    root = NULL;
    text = NULL;

    ngx_http_im_buf_init(&ack, 1024);

    if (stored) {
        text = ngx_alloc(len + 1, ngx_cycle->log);
        if (text == NULL) {
            goto failed;
        }

        ngx_memcpy(text, stored, len);
        text[len] = '\0';

        root = yajl_tree_parse((char *) text, NULL, 0);
        if (root == NULL
            || ngx_http_im_msg_from_json(root, &m, err, sizeof(err)) != 0)
        {
            goto failed;
        }

    } else {
        root = yajl_tree_parse((char *) st->json.data, NULL, 0);
        if (root == NULL
            || ngx_http_im_msg_from_json(root, &m, err, sizeof(err)) != 0)
        {
            goto failed;
        }
    }

    ngx_http_im_buf_str(&ack, "{\"serverMsgID\":");
    ngx_http_im_buf_json_str(&ack, m.server_msg_id.data,
                             m.server_msg_id.len);
    ngx_http_im_buf_str(&ack, ",\"clientMsgID\":");
    ngx_http_im_buf_json_str(&ack, m.client_msg_id.data,
                             m.client_msg_id.len);
    ngx_http_im_buf_str(&ack, ",\"sendTime\":");
    ngx_http_im_buf_int(&ack, m.send_time);
    ngx_http_im_buf_str(&ack, ",\"seq\":");
    ngx_http_im_buf_int(&ack, seq);
    ngx_http_im_buf_str(&ack, "}");

    ngx_http_im_msg_free(&m);
    yajl_tree_free(root);
    ngx_free(text);

    st->done(st->data, ack.failed ? NGX_HTTP_IM_ERR_INTERNAL : 0, &ack);
    ngx_http_im_buf_free(&ack);
    return;

failed:

    if (root) {
        yajl_tree_free(root);
    }

    ngx_free(text);
    ngx_http_im_buf_free(&ack);
    st->done(st->data, NGX_HTTP_IM_ERR_INTERNAL, NULL);
}


/* 1001 GetNewestSeq */


static void
ngx_http_im_newest(ngx_http_im_call_t *call)
{
    size_t                  len[3];
    const char             *argv[3];
    ngx_http_im_session_t  *s;
    u_char                  keys[2][NGX_HTTP_IM_UID_MAX + 32];
    u_char                  max[NGX_INT_T_LEN];

    s = call->s;

    len[0] = ngx_http_im_key(keys[0], "im:{u:%V}:convs", &s->uid);
    len[1] = ngx_http_im_key(keys[1], "im:{u:%V}:read", &s->uid);
    len[2] = ngx_sprintf(max, "%ui", ngx_http_im_worker->imcf->max_convs)
             - max;

    argv[0] = (char *) keys[0];
    argv[1] = (char *) keys[1];
    argv[2] = (char *) max;

    if (ngx_http_im_redis_script(NGX_HTTP_IM_LUA_NEWEST,
                                 ngx_http_im_newest_reply, call, 2, 3,
                                 argv, len)
        != NGX_OK)
    {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static void
ngx_http_im_newest_reply(redisReply *reply, void *data)
{
    ngx_http_im_call_t  *call = data;

    size_t              i, part;
    redisReply        **e;
    ngx_http_im_buf_t  *b;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        return;
    }

    b = &call->body;
    e = reply->element;

    /* two maps over the same triples: maxSeqs, then hasReadSeqs */
    for (part = 1; part <= 2; part++) {
        ngx_http_im_buf_str(b, part == 1 ? "{\"maxSeqs\":{"
                                         : "},\"hasReadSeqs\":{");

        for (i = 0; i + 2 < reply->elements; i += 3) {
            if (e[i]->type != REDIS_REPLY_STRING
                || e[i + part]->type != REDIS_REPLY_INTEGER)
            {
                continue;
            }

            if (i) {
                ngx_http_im_buf_str(b, ",");
            }

            ngx_http_im_buf_json_str(b, e[i]->str, e[i]->len);
            ngx_http_im_buf_str(b, ":");
            ngx_http_im_buf_int(b, e[i + part]->integer);
        }
    }

    ngx_http_im_buf_str(b, "}}");
    ngx_http_im_call_finish(call);
}


/* 1002 PullMsgByRange: {seqRanges:[{conversationID, begin, end, num}]} */


static void
ngx_http_im_pull_range(ngx_http_im_call_t *call, yajl_val data)
{
    char                    err[128];
    size_t                  len[5];
    ngx_uint_t              i, n;
    long long               v[3];
    yajl_val                ranges, r;
    const char             *argv[5];
    ngx_http_im_session_t  *s;
    u_char                  keys[2][2 * NGX_HTTP_IM_UID_MAX + 64];
    u_char                  nums[3][NGX_INT64_LEN];

    s = call->s;
    ranges = data ? ngx_http_im_json_get(data, "seqRanges") : NULL;

    if (ranges == NULL || !YAJL_IS_ARRAY(ranges)
        || ranges->u.array.len == 0
        || ranges->u.array.len > NGX_HTTP_IM_MAX_RANGES)
    {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              "field \"seqRanges\" must be an array of "
                              "1..100 ranges");
        return;
    }

    n = ranges->u.array.len;

    /* validate everything before the first command goes out */
    for (i = 0; i < n; i++) {
        r = ranges->u.array.values[i];

        if (ngx_http_im_call_conv(call, r, "seqRanges") != NGX_OK) {
            return;
        }

        v[2] = 0;

        if (ngx_http_im_json_get_int(r, "begin", 1, &v[0], err, sizeof(err))
            || ngx_http_im_json_get_int(r, "end", 1, &v[1], err, sizeof(err))
            || ngx_http_im_json_get_int(r, "num", 0, &v[2], err, sizeof(err)))
        {
            ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                                  "field \"seqRanges\": begin and end must "
                                  "be integers, num an integer");
            return;
        }
    }

    ngx_http_im_buf_str(&call->body, "{\"msgs\":{");

    for (i = 0; i < n; i++) {
        r = ranges->u.array.values[i];
        v[2] = 0;
        (void) ngx_http_im_json_get_int(r, "begin", 1, &v[0], err,
                                        sizeof(err));
        (void) ngx_http_im_json_get_int(r, "end", 1, &v[1], err,
                                        sizeof(err));
        (void) ngx_http_im_json_get_int(r, "num", 0, &v[2], err,
                                        sizeof(err));

        if (v[2] <= 0 || v[2] > (long long) s->conf->pull_max) {
            v[2] = s->conf->pull_max;
        }

        len[0] = ngx_http_im_key(keys[0], "im:{c:%V}:msgs", &call->convs[i]);
        len[1] = ngx_http_im_key(keys[1], "im:{c:%V}:seq", &call->convs[i]);
        len[2] = ngx_sprintf(nums[0], "%L", v[0]) - nums[0];
        len[3] = ngx_sprintf(nums[1], "%L", v[1]) - nums[1];
        len[4] = ngx_sprintf(nums[2], "%L", v[2]) - nums[2];

        argv[0] = (char *) keys[0];
        argv[1] = (char *) keys[1];
        argv[2] = (char *) nums[0];
        argv[3] = (char *) nums[1];
        argv[4] = (char *) nums[2];

        if (ngx_http_im_redis_script(NGX_HTTP_IM_LUA_PULL,
                                     ngx_http_im_pull_reply, call, 2, 5,
                                     argv, len)
            != NGX_OK)
        {
            break;
        }

        call->pending++;
    }

    ngx_http_im_call_started(call, n);
}


/* 1005 PullMsgBySeqList: {conversations:[{conversationID, seqs:[...]}]} */


static void
ngx_http_im_pull_seqs(ngx_http_im_call_t *call, yajl_val data)
{
    size_t                 *len;
    ngx_uint_t              i, j, n, total;
    yajl_val                convs, c, seqs;
    const char            **argv;
    u_char                 *nums, *p;
    u_char                  key[2 * NGX_HTTP_IM_UID_MAX + 64];

    convs = data ? ngx_http_im_json_get(data, "conversations") : NULL;

    if (convs == NULL || !YAJL_IS_ARRAY(convs) || convs->u.array.len == 0
        || convs->u.array.len > NGX_HTTP_IM_MAX_RANGES)
    {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              "field \"conversations\" must be an array "
                              "of 1..100 conversations");
        return;
    }

    n = convs->u.array.len;
    total = 0;

    for (i = 0; i < n; i++) {
        c = convs->u.array.values[i];

        if (ngx_http_im_call_conv(call, c, "conversations") != NGX_OK) {
            return;
        }

        seqs = ngx_http_im_json_get(c, "seqs");

        if (seqs == NULL || !YAJL_IS_ARRAY(seqs)) {
            goto invalid;
        }

        for (j = 0; j < seqs->u.array.len; j++) {
            if (!YAJL_IS_INTEGER(seqs->u.array.values[j])) {
                goto invalid;
            }
        }

        total += seqs->u.array.len;
    }

    if (total > NGX_HTTP_IM_MAX_SEQS) {
        goto invalid;
    }

    argv = ngx_alloc((total + 2) * (sizeof(char *) + sizeof(size_t)
                                    + NGX_INT64_LEN), ngx_cycle->log);
    if (argv == NULL) {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    len = (size_t *) (argv + total + 2);
    nums = (u_char *) (len + total + 2);

    ngx_http_im_buf_str(&call->body, "{\"msgs\":{");

    for (i = 0; i < n; i++) {
        seqs = ngx_http_im_json_get(convs->u.array.values[i], "seqs");

        argv[0] = "HMGET";
        len[0] = 5;
        argv[1] = (char *) key;
        len[1] = ngx_http_im_key(key, "im:{c:%V}:msgs", &call->convs[i]);

        p = nums;
        for (j = 0; j < seqs->u.array.len; j++) {
            argv[j + 2] = (char *) p;
            len[j + 2] = ngx_sprintf(p, "%L",
                                     YAJL_GET_INTEGER(seqs->u.array.values[j]))
                         - p;
            p += len[j + 2];
        }

        if (j == 0) {
            /* HMGET needs a field: ask for one that cannot exist */
            argv[2] = "0";
            len[2] = 1;
            j = 1;
        }

        if (ngx_http_im_redis_command(ngx_http_im_pull_reply, call, j + 2,
                                      argv, len)
            != NGX_OK)
        {
            break;
        }

        call->pending++;
    }

    ngx_free(argv);
    ngx_http_im_call_started(call, n);
    return;

invalid:

    ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                          "field \"conversations\": each needs "
                          "conversationID and seqs, an array of integers; "
                          "at most 1000 seqs in all");
}


/* n commands were wanted, call->pending of them were queued */
static void
ngx_http_im_call_started(ngx_http_im_call_t *call, ngx_uint_t n)
{
    if (call->pending == 0) {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        return;
    }

    if (call->pending < n) {
        /* the queued ones still answer; the call fails when they did */
        call->err = NGX_HTTP_IM_ERR_UNAVAILABLE;
    }
}


/*
 * A reply of 1002 (script: {max, isEnd, JSON...}) or 1005 (HMGET:
 * {JSON...}); appends "<conv>":{"Msgs":[...],"isEnd":bool}.
 */
static void
ngx_http_im_pull_reply(redisReply *reply, void *data)
{
    ngx_http_im_call_t  *call = data;

    size_t              i, first;
    ngx_uint_t          n, is_end, count;
    redisReply        **e;
    ngx_http_im_buf_t  *b;

    b = &call->body;
    n = call->sections++;
    call->pending--;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        call->err = NGX_HTTP_IM_ERR_UNAVAILABLE;
        goto next;
    }

    e = reply->element;
    first = 0;
    is_end = 1;

    if (call->req_identifier == NGX_HTTP_IM_REQ_PULL_RANGE) {
        if (reply->elements < 2) {
            call->err = NGX_HTTP_IM_ERR_INTERNAL;
            goto next;
        }

        is_end = e[1]->integer == 1;
        first = 2;
    }

    if (n) {
        ngx_http_im_buf_str(b, ",");
    }

    ngx_http_im_buf_json_str(b, (char *) call->convs[n].data,
                             call->convs[n].len);
    ngx_http_im_buf_str(b, ":{\"Msgs\":[");

    count = 0;
    for (i = first; i < reply->elements; i++) {
        if (e[i]->type != REDIS_REPLY_STRING) {
            continue;
        }

        if (count++) {
            ngx_http_im_buf_str(b, ",");
        }

        ngx_http_im_buf_add(b, e[i]->str, e[i]->len);
    }

    ngx_http_im_buf_str(b, is_end ? "],\"isEnd\":true}"
                                  : "],\"isEnd\":false}");

next:

    if (call->pending == 0) {
        ngx_http_im_buf_str(b, "}}");
        ngx_http_im_call_finish(call);
    }
}


/* 1006 GetConvMaxReadSeq: {conversationIDs:[...]} */


static void
ngx_http_im_conv_seq(ngx_http_im_call_t *call, yajl_val data)
{
    size_t                 *len;
    ngx_uint_t              i, n;
    yajl_val                ids;
    const char            **argv;
    ngx_http_im_session_t  *s;
    u_char                  keys[2][NGX_HTTP_IM_UID_MAX + 32];

    s = call->s;
    ids = data ? ngx_http_im_json_get(data, "conversationIDs") : NULL;

    if (ids == NULL || !YAJL_IS_ARRAY(ids) || ids->u.array.len == 0
        || ids->u.array.len > NGX_HTTP_IM_MAX_SEQS)
    {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              "field \"conversationIDs\" must be an array "
                              "of 1..1000 conversation IDs");
        return;
    }

    n = ids->u.array.len;

    for (i = 0; i < n; i++) {
        if (ngx_http_im_call_conv(call, ids->u.array.values[i],
                                  "conversationIDs")
            != NGX_OK)
        {
            return;
        }
    }

    argv = ngx_alloc((n + 2) * (sizeof(char *) + sizeof(size_t)),
                     ngx_cycle->log);
    if (argv == NULL) {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    len = (size_t *) (argv + n + 2);

    len[0] = ngx_http_im_key(keys[0], "im:{u:%V}:read", &s->uid);
    len[1] = ngx_http_im_key(keys[1], "im:{u:%V}:convs", &s->uid);
    argv[0] = (char *) keys[0];
    argv[1] = (char *) keys[1];

    for (i = 0; i < n; i++) {
        argv[i + 2] = (char *) call->convs[i].data;
        len[i + 2] = call->convs[i].len;
    }

    if (ngx_http_im_redis_script(NGX_HTTP_IM_LUA_CONV_SEQ,
                                 ngx_http_im_conv_seq_reply, call, 2, n + 2,
                                 argv, len)
        != NGX_OK)
    {
        ngx_free(argv);
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        return;
    }

    ngx_free(argv);
}


static void
ngx_http_im_conv_seq_reply(redisReply *reply, void *data)
{
    ngx_http_im_call_t  *call = data;

    ngx_uint_t          i;
    redisReply        **e;
    ngx_http_im_buf_t  *b;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements != 3 * call->nconvs)
    {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        return;
    }

    b = &call->body;
    e = reply->element;

    ngx_http_im_buf_str(b, "{\"seqs\":{");

    for (i = 0; i < call->nconvs; i++) {
        if (i) {
            ngx_http_im_buf_str(b, ",");
        }

        ngx_http_im_buf_json_str(b, (char *) call->convs[i].data,
                                 call->convs[i].len);
        ngx_http_im_buf_str(b, ":{\"maxSeq\":");
        ngx_http_im_buf_int(b, e[3 * i]->integer);
        ngx_http_im_buf_str(b, ",\"hasReadSeq\":");
        ngx_http_im_buf_int(b, e[3 * i + 1]->integer);
        ngx_http_im_buf_str(b, ",\"maxSeqTime\":");
        ngx_http_im_buf_int(b, e[3 * i + 2]->integer);
        ngx_http_im_buf_str(b, "}");
    }

    ngx_http_im_buf_str(b, "}}");
    ngx_http_im_call_finish(call);
}


/*
 * Takes the conversation ID from v (a string, or an object with
 * "conversationID"), checks that the session's user is a member, and
 * records it in call->convs.  Answers the call and returns NGX_ERROR
 * otherwise.
 */
static ngx_int_t
ngx_http_im_call_conv(ngx_http_im_call_t *call, yajl_val v,
    const char *field)
{
    ngx_str_t              *conv;
    ngx_http_im_str_t       id;
    ngx_http_im_session_t  *s;
    char                    err[128];

    s = call->s;

    if (YAJL_IS_STRING(v)) {
        id.data = YAJL_GET_STRING(v);
        id.len = ngx_strlen(id.data);

    } else if (!YAJL_IS_OBJECT(v)
               || ngx_http_im_json_get_str(v, "conversationID", 1, &id, err,
                                           sizeof(err)) != 0)
    {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              "a conversationID is missing or not a string");
        return NGX_ERROR;
    }

    if (!ngx_http_im_conv_member(id.data, id.len, (char *) s->uid.data,
                                 s->uid.len))
    {
        ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                      "im: \"%V\" may not read conversation \"%*s\"",
                      &s->uid, id.len, id.data);
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_PERMISSION,
                              "not a member of the conversation");
        return NGX_ERROR;
    }

    if (call->convs == NULL) {
        call->convs = ngx_alloc(NGX_HTTP_IM_MAX_SEQS * sizeof(ngx_str_t),
                                ngx_cycle->log);
        if (call->convs == NULL) {
            goto failed;
        }
    }

    conv = &call->convs[call->nconvs];
    conv->data = ngx_alloc(id.len, ngx_cycle->log);
    if (conv->data == NULL) {
        goto failed;
    }

    ngx_memcpy(conv->data, id.data, id.len);
    conv->len = id.len;
    call->nconvs++;

    (void) field;
    return NGX_OK;

failed:

    ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_INTERNAL, NULL);
    return NGX_ERROR;
}


/* a Redis key from a format with one %V; buf must be large enough */
static size_t
ngx_http_im_key(u_char *buf, const char *fmt, ngx_str_t *a)
{
    return ngx_sprintf(buf, fmt, a) - buf;
}
