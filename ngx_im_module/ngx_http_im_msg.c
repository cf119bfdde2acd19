
/*
 * ngx_im: WebSocket requests (DESIGN.md 1.2) and the send path shared
 * with the REST API.  Each request is one "call": it holds a reference
 * to its session, issues its Redis commands pipelined, and answers when
 * the last reply is in.  Replies on one connection come back in order,
 * so a call appends each section of its answer as it arrives.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_store.h"
#include "ngx_http_im_id.h"
#include "ngx_http_im_mongo.h"
#include "ngx_http_im_pb.h"
#include "ngx_http_im_presence.h"


#define NGX_HTTP_IM_MAX_RANGES   100

/* the largest seq a pull may name: Lua numbers are exact below 2^53 */
#define NGX_HTTP_IM_SEQ_MAX      9007199254740991LL

/*
 * Pulls of one connection in flight at once: each weighs this share of
 * im_ws_max_inflight, so a client cannot pipeline many large answers.
 */
#define NGX_HTTP_IM_PULLS        4

/* ms between a JS SDK's send answer and its echo */
#define NGX_HTTP_IM_ECHO_DELAY   20

/*
 * The messages of one pull answer take at most half of im_ws_send_queue,
 * and at most NGX_HTTP_IM_PULL_BUDGET (ngx_http_im_limits.h): the queue
 * is sized for GetNewestSeq's answer, and a pull of more than this would
 * only delay the frames queued behind it.
 */





typedef struct ngx_http_im_call_s  ngx_http_im_call_t;


/*
 * A message of a pull: JSON at off in call->store; len 0 while missing,
 * or for good when it was left out to keep the answer within its budget.
 */
typedef struct {
    ngx_uint_t                 section;      /* index in call->convs */
    long long                  seq;
    size_t                     off;
    size_t                     len;
    unsigned                   skipped:1;
} ngx_http_im_pulled_t;

/* what an answer echoes, and its encoding */
typedef struct {
    long long                  req_identifier;
    ngx_str_t                  operation_id;
    ngx_str_t                  msg_incr;
    ngx_uint_t                 encoding;     /* NGX_HTTP_IM_ENC_* */
} ngx_http_im_env_t;


/* a JS SDK's echo of its own message, waiting (ngx_http_im_echo()) */
typedef struct {
    ngx_event_t                timer;
    ngx_http_im_session_t     *s;
    ngx_http_im_env_t          env;
    ngx_http_im_buf_t          data;
} ngx_http_im_echo_t;


struct ngx_http_im_call_s {
    ngx_http_im_session_t     *s;
    ngx_http_im_env_t          env;
    long long                  req_identifier;
    ngx_uint_t                 pending;
    ngx_uint_t                 sections;
    ngx_uint_t                 weight;       /* in s->inflight */
    ngx_int_t                  err;
    const char                *errmsg;
    ngx_http_im_buf_t          body;         /* the data object */
    ngx_http_im_buf_t          echo;         /* a JS SDK's 2001 of its
                                              * own message */
    ngx_str_t                 *convs;        /* conversation per command */
    ngx_uint_t                 nconvs;

    /* pulls */
    ngx_http_im_pulled_t      *items;
    ngx_uint_t                 nitems;
    ngx_uint_t                 missing;
    u_char                    *is_end;       /* per conversation */
    ngx_http_im_buf_t          store;        /* the items' JSON */
    size_t                     budget;       /* most bytes in store */
    ngx_http_im_buf_t          view;         /* what the user deleted */
};




static ngx_http_im_call_t *ngx_http_im_call_create(ngx_http_im_session_t *s,
    ngx_http_im_env_t *env);
static void ngx_http_im_dispatch_binary(ngx_http_im_session_t *s,
    u_char *data, size_t len);
static void ngx_http_im_env(ngx_http_im_env_t *env,
    long long req_identifier, ngx_http_im_str_t *operation_id,
    ngx_http_im_str_t *msg_incr, ngx_uint_t encoding);
static void ngx_http_im_handle(ngx_http_im_session_t *s,
    ngx_http_im_env_t *env, yajl_val data);
static void ngx_http_im_call_finish(ngx_http_im_call_t *call);
static ngx_uint_t ngx_http_im_rate_ok(ngx_http_im_session_t *s);
static void ngx_http_im_echo(ngx_http_im_call_t *call);
static void ngx_http_im_echo_handler(ngx_event_t *ev);
static void ngx_http_im_call_fail(ngx_http_im_call_t *call, ngx_int_t err,
    const char *msg);
static void ngx_http_im_reply(ngx_http_im_session_t *s,
    ngx_http_im_env_t *env, ngx_int_t err, const char *msg,
    ngx_http_im_buf_t *data);
static void ngx_http_im_frame(ngx_http_im_session_t *s,
    ngx_http_im_env_t *env, ngx_int_t err, const char *msg,
    ngx_http_im_buf_t *data);
static ngx_int_t ngx_http_im_browser_ping(ngx_http_im_session_t *s,
    u_char *data, size_t len);
static void ngx_http_im_send_request(ngx_http_im_call_t *call,
    yajl_val data);
static void ngx_http_im_send_done(void *data, ngx_int_t err,
    ngx_http_im_buf_t *ack);
static void ngx_http_im_newest(ngx_http_im_call_t *call);
static ngx_uint_t ngx_http_im_newest_max(ngx_http_im_session_t *s);
static void ngx_http_im_newest_reply(void *data, ngx_int_t err,
    ngx_http_im_store_conv_t *convs, ngx_uint_t n);
static void ngx_http_im_pull_range(ngx_http_im_call_t *call,
    yajl_val data);
static void ngx_http_im_pull_seqs(ngx_http_im_call_t *call, yajl_val data);
static void ngx_http_im_pull_reply(void *data,
    ngx_http_im_store_msgs_t *r);
static void ngx_http_im_conv_seq(ngx_http_im_call_t *call, yajl_val data);
static void ngx_http_im_conv_seq_all(void *data,
    ngx_http_im_store_conv_res_t *r);
static ngx_int_t ngx_http_im_pull_view(ngx_http_im_call_t *call,
    long long *lo, long long *hi);
static void ngx_http_im_pull_viewed(void *data,
    ngx_http_im_store_conv_res_t *r);
static void ngx_http_im_pull_hide(ngx_http_im_call_t *call);
static ngx_uint_t ngx_http_im_pull_hidden(yajl_val list, long long seq);
static void ngx_http_im_sub_status(ngx_http_im_call_t *call,
    yajl_val data);
static ngx_int_t ngx_http_im_sub_list(ngx_http_im_call_t *call,
    yajl_val data, const char *key, yajl_val *list);
static ngx_int_t ngx_http_im_sub_apply(ngx_http_im_call_t *call,
    yajl_val sub, yajl_val unsub);
static ngx_uint_t ngx_http_im_sub_listed(ngx_http_im_call_t *call,
    ngx_str_t *id);
static ngx_int_t ngx_http_im_sub_answer(ngx_http_im_call_t *call,
    ngx_str_t *id);
static void ngx_http_im_sub_status_reply(void *data, ngx_int_t err,
    ngx_http_im_store_online_t *users, ngx_uint_t n);
static void ngx_http_im_conv_seq_reply(void *data, ngx_int_t err,
    ngx_http_im_store_conv_t *convs, ngx_uint_t n);
static ngx_int_t ngx_http_im_call_conv(ngx_http_im_call_t *call,
    yajl_val v);
static ngx_int_t ngx_http_im_pull_alloc(ngx_http_im_call_t *call,
    ngx_uint_t n);
static void ngx_http_im_pull_item(ngx_http_im_call_t *call,
    ngx_http_im_pulled_t *it, ngx_http_im_store_item_t *e);
static void ngx_http_im_pull_mongo(ngx_http_im_call_t *call);
static void ngx_http_im_pull_found(ngx_http_im_mongo_task_t *t);
static void ngx_http_im_pull_finish(ngx_http_im_call_t *call);
static ngx_http_im_mongo_item_t *ngx_http_im_pull_twin(
    ngx_http_im_mongo_task_t *t, ngx_http_im_mongo_item_t *mi);
static void ngx_http_im_call_started(ngx_http_im_call_t *call,
    ngx_uint_t n);
static void ngx_http_im_background(ngx_http_im_call_t *call, yajl_val data);
static void ngx_http_im_background_reply(void *data, ngx_int_t err);


/*
 * One complete text or binary message from a session.  Every request
 * gets exactly one response frame, in the request's encoding; none of
 * them closes the connection except 2003 Logout.
 */
void
ngx_http_im_msg_dispatch(ngx_http_im_session_t *s, u_char *data, size_t len,
    ngx_uint_t binary)
{
    char                err[256];
    ngx_http_im_env_t   env;
    ngx_http_im_req_t   req;

    if (binary) {
        ngx_http_im_dispatch_binary(s, data, len);
        return;
    }

    if (ngx_http_im_browser_ping(s, data, len) == NGX_OK) {
        return;
    }

    /* on an error, what of the envelope could be read is still echoed,
     * so the client can match the answer to its request */
    if (ngx_http_im_req_parse(data, len, &req, err, sizeof(err)) != 0) {
        ngx_http_im_env(&env, req.req_identifier, &req.operation_id,
                        &req.msg_incr, NGX_HTTP_IM_ENC_JSON);
        ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                      "im: bad request from \"%V\": %s", &s->uid, err);
        ngx_http_im_reply(s, &env, NGX_HTTP_IM_ERR_ARGS, err, NULL);
        ngx_http_im_req_free(&req);
        return;
    }

    ngx_http_im_env(&env, req.req_identifier, &req.operation_id,
                    &req.msg_incr, NGX_HTTP_IM_ENC_JSON);
    ngx_http_im_handle(s, &env, req.data);
    ngx_http_im_req_free(&req);
}


/*
 * A protobuf Req, or the JS SDK's JSON envelope of base64 protobuf: its
 * data becomes the same JSON a text frame carries.
 */
static void
ngx_http_im_dispatch_binary(ngx_http_im_session_t *s, u_char *data,
    size_t len)
{
    int                   rc;
    char                  err[256];
    yajl_val              root;
    ngx_uint_t            encoding;
    ngx_http_im_env_t     env;
    ngx_http_im_pb_req_t  req;

    if (s->js) {
        encoding = NGX_HTTP_IM_ENC_JS;
        rc = ngx_http_im_pb_js_req_decode(data, len, &req, err, sizeof(err));

    } else {
        s->binary = 1;
        encoding = NGX_HTTP_IM_ENC_PB;
        rc = ngx_http_im_pb_req_decode(data, len, &req, err, sizeof(err));
    }

    ngx_http_im_env(&env, req.req_identifier, &req.operation_id,
                    &req.msg_incr, encoding);

    if (rc != 0) {
        ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                      "im: bad binary request from \"%V\": %s", &s->uid,
                      err);
        ngx_http_im_reply(s, &env, NGX_HTTP_IM_ERR_ARGS, err, NULL);
        ngx_http_im_pb_req_free(&req);
        return;
    }

    root = ngx_http_im_json_parse(req.data.data, req.data.len, err,
                                  sizeof(err));
    if (root == NULL) {
        ngx_http_im_reply(s, &env, NGX_HTTP_IM_ERR_ARGS, err, NULL);
        ngx_http_im_pb_req_free(&req);
        return;
    }

    ngx_http_im_handle(s, &env, root);

    yajl_tree_free(root);
    ngx_http_im_pb_req_free(&req);
}


static void
ngx_http_im_env(ngx_http_im_env_t *env, long long req_identifier,
    ngx_http_im_str_t *operation_id, ngx_http_im_str_t *msg_incr,
    ngx_uint_t encoding)
{
    env->req_identifier = req_identifier;
    env->operation_id.data = (u_char *) operation_id->data;
    env->operation_id.len = operation_id->data ? operation_id->len : 0;
    env->msg_incr.data = (u_char *) msg_incr->data;
    env->msg_incr.len = msg_incr->data ? msg_incr->len : 0;
    env->encoding = encoding;
}


static void
ngx_http_im_handle(ngx_http_im_session_t *s, ngx_http_im_env_t *env,
    yajl_val data)
{
    ngx_http_im_call_t  *call;

    /* a logout ends the session's load: it must work when over the rate */
    if (env->req_identifier != NGX_HTTP_IM_REQ_LOGOUT
        && !ngx_http_im_rate_ok(s))
    {
        ngx_http_im_reply(s, env, NGX_HTTP_IM_ERR_RATE,
                          "too many requests: slow down", NULL);
        return;
    }

    call = ngx_http_im_call_create(s, env);
    if (call == NULL) {
        s->io->close(s, 1011, "out of memory");
        return;
    }

    switch (env->req_identifier) {

    case NGX_HTTP_IM_REQ_NEWEST_SEQ:
        ngx_http_im_newest(call);
        break;

    case NGX_HTTP_IM_REQ_PULL_RANGE:
        ngx_http_im_pull_range(call, data);
        break;

    case NGX_HTTP_IM_REQ_SEND:
        ngx_http_im_send_request(call, data);
        break;

    case NGX_HTTP_IM_REQ_PULL_SEQS:
        ngx_http_im_pull_seqs(call, data);
        break;

    case NGX_HTTP_IM_REQ_CONV_SEQ:
        ngx_http_im_conv_seq(call, data);
        break;

    case NGX_HTTP_IM_REQ_LOGOUT:
        ngx_http_im_call_finish(call);
        s->io->close(s, 1000, "logout");
        break;

    case NGX_HTTP_IM_REQ_BACKGROUND:
        ngx_http_im_background(call, data);
        break;

    case NGX_HTTP_IM_REQ_PRESENCE:
        ngx_http_im_sub_status(call, data);
        break;

    default:
        ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                      "im: unknown reqIdentifier %L from \"%V\"",
                      env->req_identifier, &s->uid);
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              "unknown reqIdentifier");
    }
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

    s->io->send(s, NGX_HTTP_IM_WS_OP_TEXT,
                        (u_char *) "{\"type\":\"pong\"}", 15);
    return NGX_OK;
}


static ngx_http_im_call_t *
ngx_http_im_call_create(ngx_http_im_session_t *s, ngx_http_im_env_t *env)
{
    u_char              *p;
    ngx_http_im_call_t  *call;

    call = ngx_calloc(sizeof(ngx_http_im_call_t) + env->operation_id.len
                      + env->msg_incr.len, s->c->log);
    if (call == NULL) {
        return NULL;
    }

    call->env = *env;

    p = (u_char *) (call + 1);
    call->env.operation_id.data = p;
    p = ngx_cpymem(p, env->operation_id.data, env->operation_id.len);
    call->env.msg_incr.data = p;
    ngx_memcpy(p, env->msg_incr.data, env->msg_incr.len);

    call->s = s;
    call->req_identifier = env->req_identifier;
    ngx_http_im_buf_init(&call->body, s->conf->ws_send_queue);
    ngx_http_im_buf_init(&call->echo, s->conf->ws_send_queue);

    call->weight = 1;
    if (call->req_identifier == NGX_HTTP_IM_REQ_PULL_RANGE
        || call->req_identifier == NGX_HTTP_IM_REQ_PULL_SEQS)
    {
        call->weight = ngx_max(1, s->conf->ws_max_inflight
                                  / NGX_HTTP_IM_PULLS);
    }

    ngx_http_im_session_ref(s);
    s->inflight += call->weight;

    return call;
}


/*
 * im_ws_rate: the session's bucket, and its user's on this worker (its
 * devices share NGX_HTTP_IM_USER_RATE times as much), so a client cannot
 * take more than its share of Redis and the worker.
 */
static ngx_uint_t
ngx_http_im_rate_ok(ngx_http_im_session_t *s)
{
    uint64_t                 now;
    ngx_http_im_loc_conf_t  *conf;

    now = (uint64_t) ngx_current_msec;
    conf = s->conf;

    if (ngx_http_im_bucket_take(&s->bucket, now, conf->ws_rate,
                                conf->ws_burst)
        && (s->user == NULL
            || ngx_http_im_bucket_take(&s->user->bucket, now,
                                       conf->ws_rate * NGX_HTTP_IM_USER_RATE,
                                       conf->ws_burst
                                       * NGX_HTTP_IM_USER_RATE)))
    {
        return 1;
    }

    ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                  "im: \"%V\" is over im_ws_rate", &s->uid);

    return 0;
}


/* answers with call->body as data (or the error), and frees the call */
static void
ngx_http_im_call_finish(ngx_http_im_call_t *call)
{
    ngx_uint_t              i, weight;
    ngx_http_im_session_t  *s;

    s = call->s;
    weight = call->weight;

    if (call->body.failed && call->err == 0) {
        call->err = NGX_HTTP_IM_ERR_ARGS;
        call->errmsg = "response too large: ask for fewer messages";
    }

    if (!s->closed) {
        ngx_http_im_reply(s, &call->env, call->err,
                          call->errmsg ? call->errmsg
                                       : ngx_http_im_errmsg(call->err),
                          call->err == 0 ? &call->body : NULL);
    }

    if (!s->closed && call->err == 0 && call->echo.len) {
        ngx_http_im_echo(call);
    }

    for (i = 0; i < call->nconvs; i++) {
        ngx_free(call->convs[i].data);
    }

    ngx_free(call->convs);
    ngx_free(call->items);
    ngx_http_im_buf_free(&call->body);
    ngx_http_im_buf_free(&call->echo);
    ngx_http_im_buf_free(&call->store);
    ngx_http_im_buf_free(&call->view);
    ngx_free(call);

    s->inflight -= weight;
    if (!s->closed) {
        s->io->resume(s);
    }

    ngx_http_im_session_unref(s);
}


/*
 * The JS SDK learns a sent message's seq from a 2001 of it on the sending
 * connection, carrying the send's operationID (its other sessions get the
 * usual push).  It must come after the SDK has digested the ack, some
 * promise steps later: an echo it meets first reads as a new message from
 * someone else (OnRecvNewMessages, unread + 1).  OpenIM's echo takes the
 * trip through its push service; ours waits NGX_HTTP_IM_ECHO_DELAY.
 */
static void
ngx_http_im_echo(ngx_http_im_call_t *call)
{
    ngx_http_im_echo_t  *e;

    e = ngx_calloc(sizeof(ngx_http_im_echo_t) + call->env.operation_id.len,
                   call->s->c->log);
    if (e == NULL) {
        return;
    }

    e->s = call->s;
    e->env = call->env;
    e->env.req_identifier = NGX_HTTP_IM_REQ_PUSH;
    e->env.msg_incr.len = 0;
    e->env.operation_id.data = (u_char *) (e + 1);
    ngx_memcpy(e->env.operation_id.data, call->env.operation_id.data,
               call->env.operation_id.len);

    /* the buffer moves to e */
    e->data = call->echo;
    ngx_http_im_buf_init(&call->echo, 0);

    e->timer.handler = ngx_http_im_echo_handler;
    e->timer.data = e;
    e->timer.log = ngx_cycle->log;
    e->timer.cancelable = 1;
    ngx_add_timer(&e->timer, NGX_HTTP_IM_ECHO_DELAY);

    ngx_http_im_session_ref(e->s);
}


static void
ngx_http_im_echo_handler(ngx_event_t *ev)
{
    ngx_http_im_echo_t  *e = ev->data;

    ngx_http_im_session_t  *s;

    s = e->s;

    if (!s->closed && !s->closing) {
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_PUSHES);
        ngx_http_im_frame(s, &e->env, 0, "", &e->data);
    }

    ngx_http_im_buf_free(&e->data);
    ngx_free(e);
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
ngx_http_im_reply(ngx_http_im_session_t *s, ngx_http_im_env_t *env,
    ngx_int_t err, const char *msg, ngx_http_im_buf_t *data)
{
    ngx_http_im_metric_ws(err);
    ngx_http_im_frame(s, env, err, msg, data);
}


/* a frame in env's encoding */
static void
ngx_http_im_frame(ngx_http_im_session_t *s, ngx_http_im_env_t *env,
    ngx_int_t err, const char *msg, ngx_http_im_buf_t *data)
{
    char                            pberr[NGX_HTTP_IM_PB_ERRLEN];
    ngx_http_im_str_t               opid, incr;
    ngx_http_im_buf_t              *b;
    ngx_http_im_pb_resp_encode_pt   encode;

    opid.data = (char *) env->operation_id.data;
    opid.len = env->operation_id.len;
    incr.data = (char *) env->msg_incr.data;
    incr.len = env->msg_incr.len;

    b = &ngx_http_im_worker->scratch;
    ngx_http_im_buf_reset(b);

    if (env->encoding != NGX_HTTP_IM_ENC_JSON) {
        encode = (env->encoding == NGX_HTTP_IM_ENC_PB)
                 ? ngx_http_im_pb_resp_encode : ngx_http_im_pb_js_resp_encode;

        if (encode(env->req_identifier, opid, incr, (int) err, msg,
                   data && data->len ? data->data : (u_char *) "{}",
                   data && data->len ? data->len : 2,
                   b, pberr, sizeof(pberr))
            != 0)
        {
            ngx_log_error(NGX_LOG_ALERT, s->c->log, 0,
                          "im: cannot encode a protobuf answer: %s", pberr);
            s->io->close(s, 1011, "internal error");
            return;
        }

        s->io->send(s, NGX_HTTP_IM_WS_OP_BINARY, b->data, b->len);
        return;
    }

    ngx_http_im_resp_begin(b, env->req_identifier, opid, incr, (int) err,
                           msg);

    if (data && data->len) {
        ngx_http_im_buf_add(b, data->data, data->len);

    } else {
        ngx_http_im_buf_str(b, "{}");
    }

    ngx_http_im_resp_end(b);

    if (b->failed) {
        s->io->close(s, 1011, "response too large");
        return;
    }

    s->io->send(s, NGX_HTTP_IM_WS_OP_TEXT, b->data, b->len);
}


/* 1003 SendMsg */


static void
ngx_http_im_send_request(ngx_http_im_call_t *call, yajl_val data)
{
    char                    err[256];
    ngx_int_t               rc;
    const char             *errmsg;
    ngx_http_im_msg_t       m;
    ngx_http_im_send_t      opts;
    ngx_http_im_session_t  *s;

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

    /* the server's fields; ngx_http_im_msg_send() checks the rest */
    m.msg_from = 100;
    m.sender_platform_id = s->platform;
    m.max_content = s->conf->max_content;

    ngx_memzero(&opts, sizeof(ngx_http_im_send_t));
    opts.sid = s->id;
    opts.offline_push = ngx_http_im_msg_option(&m, "offlinePush");
    ngx_str_set(&opts.push_class, "im");
    opts.done = ngx_http_im_send_done;
    opts.data = call;
    opts.echo = s->js ? &call->echo : NULL;

    rc = ngx_http_im_msg_send(&m, NULL, &opts);

    errmsg = (rc == NGX_HTTP_IM_ERR_ARGS) ? ngx_http_im_msg_check(&m) : NULL;

    ngx_http_im_msg_free(&m);

    if (rc != 0) {
        ngx_http_im_call_fail(call, rc, errmsg);
    }
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
 * 1001 GetNewestSeq: the max and read seqs of the user's most recent
 * conversations, all in one answer (docs/protocol.md): as many as the
 * session's send queue always holds, at most im_max_conversations.  The
 * configuration makes sure the queue holds im_max_conversations when it
 * is set.
 */


static void
ngx_http_im_newest(ngx_http_im_call_t *call)
{
    if (ngx_http_im_store_newest(&call->s->uid,
                                 ngx_http_im_newest_max(call->s),
                                 ngx_http_im_newest_reply, call)
        != NGX_OK)
    {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static ngx_uint_t
ngx_http_im_newest_max(ngx_http_im_session_t *s)
{
    size_t  room;

    /* at least one fits: ngx_http_im_newest_fits() */
    room = s->conf->ws_send_queue
           - NGX_HTTP_IM_PB_NEWEST_SIZE(0, s->conf->ws_max_message);

    return ngx_min(ngx_http_im_worker->imcf->max_convs,
                   room / NGX_HTTP_IM_PB_NEWEST_CONV);
}


static void
ngx_http_im_newest_reply(void *data, ngx_int_t err,
    ngx_http_im_store_conv_t *convs, ngx_uint_t n)
{
    ngx_http_im_call_t  *call = data;

    ngx_uint_t          i, part;
    ngx_http_im_buf_t  *b;

    if (err) {
        ngx_http_im_call_fail(call, err, NULL);
        return;
    }

    b = &call->body;

    /* two maps over the same conversations: maxSeqs, then hasReadSeqs */
    for (part = 1; part <= 2; part++) {
        ngx_http_im_buf_str(b, part == 1 ? "{\"maxSeqs\":{"
                                         : "},\"hasReadSeqs\":{");

        for (i = 0; i < n; i++) {
            if (i) {
                ngx_http_im_buf_str(b, ",");
            }

            ngx_http_im_buf_json_str(b, (char *) convs[i].conv.data,
                                     convs[i].conv.len);
            ngx_http_im_buf_str(b, ":");
            ngx_http_im_buf_int(b, part == 1 ? convs[i].max_seq
                                             : convs[i].read_seq);
        }
    }

    ngx_http_im_buf_str(b, "}}");
    ngx_http_im_call_finish(call);
}


/*
 * Pulls (1002, 1005).  Each conversation is one command; its reply turns
 * into items, one per seq, in seq order.  Messages the Redis hot window no
 * longer holds are fetched from MongoDB in one task for the whole call,
 * then the answer is written:
 * {"msgs":{"<conv>":{"Msgs":[...],"isEnd":bool},...}}.
 */


/* 1002 PullMsgByRange: {seqRanges:[{conversationID, begin, end, num}]} */


static void
ngx_http_im_pull_range(ngx_http_im_call_t *call, yajl_val data)
{
    char                    err[128];
    ngx_uint_t              i, n, share;
    long long               v[3];
    long long               lo[NGX_HTTP_IM_MAX_RANGES];
    long long               hi[NGX_HTTP_IM_MAX_RANGES];
    yajl_val                ranges, r;
    ngx_http_im_session_t  *s;

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

        if (ngx_http_im_call_conv(call, r) != NGX_OK) {
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

    /* every range gets a fair share of the messages and bytes of a call */
    share = ngx_min(s->conf->pull_max, NGX_HTTP_IM_MAX_SEQS / n);

    if (ngx_http_im_pull_alloc(call, n * share) != NGX_OK) {
        return;
    }

    for (i = 0; i < n; i++) {
        r = ranges->u.array.values[i];
        (void) ngx_http_im_json_get_int(r, "begin", 1, &lo[i], err,
                                        sizeof(err));
        (void) ngx_http_im_json_get_int(r, "end", 1, &hi[i], err,
                                        sizeof(err));
    }

    if (ngx_http_im_pull_view(call, lo, hi) != NGX_OK) {
        return;
    }

    for (i = 0; i < n; i++) {
        r = ranges->u.array.values[i];
        v[2] = 0;
        (void) ngx_http_im_json_get_int(r, "begin", 1, &v[0], err,
                                        sizeof(err));
        (void) ngx_http_im_json_get_int(r, "end", 1, &v[1], err,
                                        sizeof(err));
        (void) ngx_http_im_json_get_int(r, "num", 0, &v[2], err,
                                        sizeof(err));

        if (v[2] <= 0 || v[2] > (long long) share) {
            v[2] = share;
        }

        v[0] = ngx_max(v[0], 1);
        v[1] = ngx_min(v[1], NGX_HTTP_IM_SEQ_MAX);

        if (ngx_http_im_store_pull_range(&call->convs[i], v[0], v[1], v[2],
                                         call->budget / n,
                                         ngx_http_im_pull_reply, call)
            != NGX_OK)
        {
            break;
        }

        call->pending++;
    }

    ngx_http_im_call_started(call, n + 1);
}


/* 1005 PullMsgBySeqList: {conversations:[{conversationID, seqs:[...]}]} */


static void
ngx_http_im_pull_seqs(ngx_http_im_call_t *call, yajl_val data)
{
    long long              *list, seq;
    long long               lo[NGX_HTTP_IM_MAX_RANGES];
    long long               hi[NGX_HTTP_IM_MAX_RANGES];
    ngx_uint_t              i, j, k, n, total;
    yajl_val                convs, c, seqs;
    ngx_http_im_pulled_t   *it;

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

        if (ngx_http_im_call_conv(call, c) != NGX_OK) {
            return;
        }

        seqs = ngx_http_im_json_get(c, "seqs");

        if (seqs == NULL || !YAJL_IS_ARRAY(seqs)) {
            goto invalid;
        }

        lo[i] = NGX_HTTP_IM_SEQ_MAX;
        hi[i] = 0;

        for (j = 0; j < seqs->u.array.len; j++) {
            if (!YAJL_IS_INTEGER(seqs->u.array.values[j])
                || YAJL_GET_INTEGER(seqs->u.array.values[j])
                   > NGX_HTTP_IM_SEQ_MAX)
            {
                goto invalid;
            }

            /* no message has a seq <= 0, and OpenIM skips them: the JS
             * SDK asks for the seqs from its hasReadSeq, 0 for a new
             * conversation, -1 when a typing message (seq 0) made the
             * conversation known to it */
            seq = YAJL_GET_INTEGER(seqs->u.array.values[j]);
            if (seq <= 0) {
                continue;
            }

            lo[i] = ngx_min(lo[i], seq);
            hi[i] = ngx_max(hi[i], seq);
            total++;
        }
    }

    if (total > NGX_HTTP_IM_MAX_SEQS) {
        goto invalid;
    }

    if (ngx_http_im_pull_alloc(call, total) != NGX_OK
        || ngx_http_im_pull_view(call, lo, hi) != NGX_OK)
    {
        return;
    }

    list = ngx_alloc((total + 1) * sizeof(long long), ngx_cycle->log);
    if (list == NULL) {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    for (i = 0; i < n; i++) {
        seqs = ngx_http_im_json_get(convs->u.array.values[i], "seqs");

        for (j = 0, k = 0; j < seqs->u.array.len; j++) {
            if (YAJL_GET_INTEGER(seqs->u.array.values[j]) <= 0) {
                continue;
            }

            it = &call->items[call->nitems++];
            it->section = i;
            it->seq = YAJL_GET_INTEGER(seqs->u.array.values[j]);
            it->len = 0;
            it->skipped = 0;
            list[k++] = it->seq;
        }

        if (ngx_http_im_store_pull_seqs(&call->convs[i], list, k,
                                        call->budget / n,
                                        ngx_http_im_pull_reply, call)
            != NGX_OK)
        {
            break;
        }

        call->pending++;
    }

    ngx_free(list);
    ngx_http_im_call_started(call, n + 1);
    return;

invalid:

    ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                          "field \"conversations\": each needs "
                          "conversationID and seqs, an array of "
                          "integers; at most 1000 seqs in all");
}


/* room for n items and the end flags of the call's conversations */
static ngx_int_t
ngx_http_im_pull_alloc(ngx_http_im_call_t *call, ngx_uint_t n)
{
    call->items = ngx_alloc(n * sizeof(ngx_http_im_pulled_t)
                            + call->nconvs, ngx_cycle->log);
    if (call->items == NULL) {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return NGX_ERROR;
    }

    call->is_end = (u_char *) (call->items + n);
    ngx_memset(call->is_end, 1, call->nconvs);
    /* the answer must fit the send queue anyway */
    ngx_http_im_buf_init(&call->store, call->s->conf->ws_send_queue);
    /* half of it for the messages: the envelope and the encoding's
     * overhead take the rest */
    call->budget = ngx_min(call->s->conf->ws_send_queue / 2,
                           NGX_HTTP_IM_PULL_BUDGET);

    return NGX_OK;
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


/* the reply for one conversation: its items, in seq order */
static void
ngx_http_im_pull_reply(void *data, ngx_http_im_store_msgs_t *r)
{
    ngx_http_im_call_t  *call = data;

    ngx_uint_t             i, k, section;
    long long              seq;
    ngx_http_im_pulled_t  *it;

    section = call->sections++;
    call->pending--;

    if (r->err) {
        call->err = NGX_HTTP_IM_ERR_UNAVAILABLE;
        goto next;
    }

    if (call->req_identifier == NGX_HTTP_IM_REQ_PULL_RANGE) {
        call->is_end[section] = r->is_end;
        seq = r->first;

        for (i = 0; i < r->n; i++) {
            it = &call->items[call->nitems++];
            it->section = section;
            it->seq = seq++;
            it->skipped = 0;
            ngx_http_im_pull_item(call, it, &r->items[i]);
        }

        goto next;
    }

    /* 1005: the items exist already, in the order asked */
    k = 0;
    for (i = 0; i < call->nitems && k < r->n; i++) {
        if (call->items[i].section == section) {
            ngx_http_im_pull_item(call, &call->items[i], &r->items[k++]);
        }
    }

next:

    if (call->pending == 0) {
        ngx_http_im_pull_mongo(call);
    }
}


static void
ngx_http_im_pull_item(ngx_http_im_call_t *call, ngx_http_im_pulled_t *it,
    ngx_http_im_store_item_t *e)
{
    it->len = 0;

    if (e->state == NGX_HTTP_IM_ITEM_SKIPPED
        || (e->state == NGX_HTTP_IM_ITEM_FOUND
            && call->store.len + e->json.len > call->budget))
    {
        /* the store left it out, or the call's whole budget is spent */
        it->skipped = 1;
        call->is_end[it->section] = 0;
        return;
    }

    if (e->state == NGX_HTTP_IM_ITEM_MISSING) {
        call->missing++;
        return;
    }

    it->off = call->store.len;
    it->len = e->json.len;
    ngx_http_im_buf_add(&call->store, e->json.data, e->json.len);
}


/* fetches the items Redis no longer holds, if any and if it can */
static void
ngx_http_im_pull_mongo(ngx_http_im_call_t *call)
{
    ngx_uint_t                 i, k;
    ngx_str_t                 *conv;
    ngx_http_im_pulled_t      *it;
    ngx_http_im_mongo_task_t  *t;

    if (call->missing == 0 || call->err || !ngx_http_im_mongo_enabled()) {
        ngx_http_im_pull_finish(call);
        return;
    }

    t = ngx_http_im_mongo_task(NGX_HTTP_IM_MONGO_FIND, call->missing);
    if (t == NULL) {
        goto failed;
    }

    t->done = ngx_http_im_pull_found;
    t->data = call;

    for (i = 0; i < call->nitems; i++) {
        it = &call->items[i];
        if (it->len || it->skipped) {
            continue;
        }

        conv = &call->convs[it->section];
        k = t->n++;
        t->items[k].conv_off = t->in.len;
        t->items[k].conv_len = conv->len;
        t->items[k].seq = it->seq;
        ngx_http_im_buf_add(&t->in, conv->data, conv->len);
    }

    if (!t->in.failed && ngx_http_im_mongo_post(t) == NGX_OK) {
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_MONGO_READS);
        return;
    }

    ngx_http_im_mongo_task_free(t);

failed:

    call->err = NGX_HTTP_IM_ERR_UNAVAILABLE;
    ngx_http_im_pull_finish(call);
}


static void
ngx_http_im_pull_found(ngx_http_im_mongo_task_t *t)
{
    ngx_http_im_call_t  *call = t->data;

    ngx_uint_t                 i, k;
    ngx_http_im_pulled_t      *it;
    ngx_http_im_mongo_item_t  *mi;

    if (t->rc != NGX_OK) {
        call->err = NGX_HTTP_IM_ERR_UNAVAILABLE;
    }

    /* the task's items follow the missing items in order */
    k = 0;
    for (i = 0; t->rc == NGX_OK && i < call->nitems && k < t->n; i++) {
        it = &call->items[i];
        if (it->len || it->skipped) {
            continue;
        }

        mi = &t->items[k++];
        if (mi->len == 0) {
            /* a repeated seq is found once: take the twin's answer */
            mi = ngx_http_im_pull_twin(t, mi);
        }

        if (mi && call->store.len + mi->len > call->budget) {
            it->skipped = 1;
            call->is_end[it->section] = 0;
            continue;
        }

        if (mi && mi->len) {
            it->off = call->store.len;
            it->len = mi->len;
            ngx_http_im_buf_add(&call->store, t->out.data + mi->off,
                                mi->len);
        }
    }

    ngx_http_im_mongo_task_free(t);
    ngx_http_im_pull_finish(call);
}


static ngx_http_im_mongo_item_t *
ngx_http_im_pull_twin(ngx_http_im_mongo_task_t *t,
    ngx_http_im_mongo_item_t *mi)
{
    ngx_uint_t  j;

    for (j = 0; j < t->n; j++) {
        if (t->items[j].len && t->items[j].seq == mi->seq
            && t->items[j].conv_len == mi->conv_len
            && ngx_memcmp(t->in.data + t->items[j].conv_off,
                          t->in.data + mi->conv_off, mi->conv_len) == 0)
        {
            return &t->items[j];
        }
    }

    return NULL;
}


/* writes the answer from the items, in conversation and seq order */
static void
ngx_http_im_pull_finish(ngx_http_im_call_t *call)
{
    ngx_uint_t             i, j, count;
    ngx_http_im_buf_t     *b;
    ngx_http_im_pulled_t  *it;

    ngx_http_im_pull_hide(call);

    b = &call->body;
    ngx_http_im_buf_str(b, "{\"msgs\":{");

    for (i = 0; i < call->nconvs; i++) {
        if (i) {
            ngx_http_im_buf_str(b, ",");
        }

        ngx_http_im_buf_json_str(b, (char *) call->convs[i].data,
                                 call->convs[i].len);
        ngx_http_im_buf_str(b, ":{\"Msgs\":[");

        count = 0;
        for (j = 0; j < call->nitems; j++) {
            it = &call->items[j];
            if (it->section != i || it->len == 0) {
                continue;
            }

            if (count++) {
                ngx_http_im_buf_str(b, ",");
            }

            ngx_http_im_buf_add(b, call->store.data + it->off, it->len);
        }

        ngx_http_im_buf_str(b, call->is_end[i] ? "],\"isEnd\":true}"
                                               : "],\"isEnd\":false}");
    }

    ngx_http_im_buf_str(b, "}}");

    if (call->store.failed && call->err == 0) {
        call->err = NGX_HTTP_IM_ERR_ARGS;
        call->errmsg = "response too large: ask for fewer messages";
    }

    ngx_http_im_call_finish(call);
}


/* 1006 GetConvMaxReadSeq: {conversationIDs:[...]} */


static void
ngx_http_im_conv_seq(ngx_http_im_call_t *call, yajl_val data)
{
    ngx_uint_t  i, n;
    yajl_val    ids;

    ids = data ? ngx_http_im_json_get(data, "conversationIDs") : NULL;

    /* none: all of the user's conversations (what OpenIM's SDK asks at
     * login) */
    if (ids == NULL || YAJL_IS_NULL(ids)
        || (YAJL_IS_ARRAY(ids) && ids->u.array.len == 0))
    {
        ngx_str_t  args;
        u_char     buf[64];

        args.data = buf;
        args.len = ngx_snprintf(buf, sizeof(buf), "{\"maxc\":%ui}",
                                ngx_http_im_newest_max(call->s))
                   - buf;

        if (ngx_http_im_store_conv(&call->s->uid, "seqs", &args,
                                   ngx_http_im_conv_seq_all, call)
            != NGX_OK)
        {
            ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        }

        return;
    }

    if (!YAJL_IS_ARRAY(ids) || ids->u.array.len > NGX_HTTP_IM_MAX_SEQS) {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              "field \"conversationIDs\" must be an array "
                              "of at most 1000 conversation IDs");
        return;
    }

    n = ids->u.array.len;

    for (i = 0; i < n; i++) {
        if (ngx_http_im_call_conv(call, ids->u.array.values[i]) != NGX_OK)
        {
            return;
        }
    }

    if (ngx_http_im_store_conv_seqs(&call->s->uid, call->convs, n,
                                    ngx_http_im_conv_seq_reply, call)
        != NGX_OK)
    {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static void
ngx_http_im_conv_seq_reply(void *data, ngx_int_t err,
    ngx_http_im_store_conv_t *convs, ngx_uint_t n)
{
    ngx_http_im_call_t  *call = data;

    ngx_uint_t          i;
    ngx_http_im_buf_t  *b;

    if (err) {
        ngx_http_im_call_fail(call, err, NULL);
        return;
    }

    b = &call->body;
    ngx_http_im_buf_str(b, "{\"seqs\":{");

    for (i = 0; i < n; i++) {
        if (i) {
            ngx_http_im_buf_str(b, ",");
        }

        ngx_http_im_buf_json_str(b, (char *) convs[i].conv.data,
                                 convs[i].conv.len);
        ngx_http_im_buf_str(b, ":{\"maxSeq\":");
        ngx_http_im_buf_int(b, convs[i].max_seq);
        ngx_http_im_buf_str(b, ",\"hasReadSeq\":");
        ngx_http_im_buf_int(b, convs[i].read_seq);
        ngx_http_im_buf_str(b, ",\"maxSeqTime\":");
        ngx_http_im_buf_int(b, convs[i].time);
        ngx_http_im_buf_str(b, "}");
    }

    ngx_http_im_buf_str(b, "}}");
    ngx_http_im_call_finish(call);
}


static void
ngx_http_im_conv_seq_all(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_call_t  *call = data;

    if (r->err) {
        ngx_http_im_call_fail(call, r->err, NULL);
        return;
    }

    ngx_http_im_buf_add(&call->body, r->answer.data, r->answer.len);
    ngx_http_im_call_finish(call);
}


/*
 * A pull asks, with its messages, what this user deleted in their seq
 * ranges (conv.lua "view": {conv: [minSeq, hidden seqs...]}); the
 * answer leaves those out.  It counts as one more reply of the call.
 */
static ngx_int_t
ngx_http_im_pull_view(ngx_http_im_call_t *call, long long *lo,
    long long *hi)
{
    ngx_str_t           args;
    ngx_uint_t          i;
    ngx_http_im_buf_t   b;
    ngx_int_t           rc;

    ngx_http_im_buf_init(&b, 256 * 1024);
    ngx_http_im_buf_str(&b, "{\"ids\":[");

    for (i = 0; i < call->nconvs; i++) {
        ngx_http_im_buf_str(&b, i ? "," : "");
        ngx_http_im_buf_json_str(&b, (char *) call->convs[i].data,
                                 call->convs[i].len);
    }

    ngx_http_im_buf_str(&b, "],\"lo\":[");

    for (i = 0; i < call->nconvs; i++) {
        ngx_http_im_buf_str(&b, i ? "," : "");
        ngx_http_im_buf_int(&b, ngx_max(lo[i], 0));
    }

    ngx_http_im_buf_str(&b, "],\"hi\":[");

    for (i = 0; i < call->nconvs; i++) {
        ngx_http_im_buf_str(&b, i ? "," : "");
        ngx_http_im_buf_int(&b, ngx_min(ngx_max(hi[i], 0),
                                        NGX_HTTP_IM_SEQ_MAX));
    }

    ngx_http_im_buf_str(&b, "]}");

    args.data = b.data;
    args.len = b.len;

    rc = b.failed ? NGX_DECLINED
                  : ngx_http_im_store_conv(&call->s->uid, "view", &args,
                                           ngx_http_im_pull_viewed, call);
    ngx_http_im_buf_free(&b);

    if (rc != NGX_OK) {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        return NGX_ERROR;
    }

    call->pending++;

    return NGX_OK;
}


static void
ngx_http_im_pull_viewed(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_call_t  *call = data;

    call->pending--;

    if (r->err) {
        call->err = NGX_HTTP_IM_ERR_UNAVAILABLE;

    } else if (ngx_strlcasestrn(r->answer.data,
                                r->answer.data + r->answer.len,
                                (u_char *) ":false", 6 - 1)
               != NULL)
    {
        /* a group this user was never in */
        call->err = NGX_HTTP_IM_ERR_NOT_IN_GROUP;

    } else {
        ngx_http_im_buf_init(&call->view, r->answer.len + 1);
        ngx_http_im_buf_add(&call->view, r->answer.data, r->answer.len);
    }

    if (call->pending == 0) {
        ngx_http_im_pull_mongo(call);
    }
}


/* drops the items at or below the user's minSeq, or deleted by it */
static void
ngx_http_im_pull_hide(ngx_http_im_call_t *call)
{
    char                   err[128];
    yajl_val               view, list;
    ngx_uint_t             i;
    ngx_http_im_pulled_t  *it;

    if (call->view.len == 0) {
        return;
    }

    view = ngx_http_im_json_parse(call->view.data, call->view.len, err,
                                  sizeof(err));
    if (view == NULL) {
        return;
    }

    /* its members are the call's conversations, in order */
    if (!YAJL_IS_OBJECT(view) || view->u.object.len != call->nconvs) {
        yajl_tree_free(view);
        return;
    }

    for (i = 0; i < call->nitems; i++) {
        it = &call->items[i];
        list = view->u.object.values[it->section];

        if (it->len && YAJL_IS_ARRAY(list)
            && ngx_http_im_pull_hidden(list, it->seq))
        {
            it->len = 0;
        }
    }

    yajl_tree_free(view);
}


/*
 * list: [minSeq, the last seq a former group member may see (0: none),
 * hidden seqs in order]; a binary search of the seqs
 */
static ngx_uint_t
ngx_http_im_pull_hidden(yajl_val list, long long seq)
{
    size_t     lo, hi, mid;
    long long  v;

    if (list->u.array.len < 2
        || !YAJL_IS_INTEGER(list->u.array.values[0])
        || !YAJL_IS_INTEGER(list->u.array.values[1]))
    {
        return 0;
    }

    if (seq <= YAJL_GET_INTEGER(list->u.array.values[0])) {
        return 1;
    }

    v = YAJL_GET_INTEGER(list->u.array.values[1]);

    if (v > 0 && seq > v) {
        return 1;
    }

    lo = 2;
    hi = list->u.array.len;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;
        v = YAJL_GET_INTEGER(list->u.array.values[mid]);

        if (v == seq) {
            return 1;
        }

        if (v < seq) {
            lo = mid + 1;

        } else {
            hi = mid;
        }
    }

    return 0;
}


/*
 * Takes the conversation ID from v (a string, or an object with
 * "conversationID"), checks that the session's user is a member, and
 * records it in call->convs.  Answers the call and returns NGX_ERROR
 * otherwise.
 */
static ngx_int_t
ngx_http_im_call_conv(ngx_http_im_call_t *call, yajl_val v)
{
    ngx_uint_t              i;
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

    /* a group's membership is checked by the pull's view (1203) */
    if (!ngx_http_im_conv_member(id.data, id.len, (char *) s->uid.data,
                                 s->uid.len)
        && !ngx_http_im_conv_group(id.data, id.len))
    {
        ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                      "im: \"%V\" may not read conversation \"%*s\"",
                      &s->uid, id.len, id.data);
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_PERMISSION,
                              "not a member of the conversation");
        return NGX_ERROR;
    }

    /*
     * A conversation named twice would be read twice for one answer (whose
     * keys are the IDs anyway): n <= 1000, so the scan stays cheap.
     */
    for (i = 0; i < call->nconvs; i++) {
        if (call->convs[i].len == id.len
            && ngx_memcmp(call->convs[i].data, id.data, id.len) == 0)
        {
            ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                                  "a conversationID is listed twice");
            return NGX_ERROR;
        }
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

    return NGX_OK;

failed:

    ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_INTERNAL, NULL);
    return NGX_ERROR;
}


/*
 * 2004 SetBackgroundStatus {userID, isBackground}: while every session of
 * a user is in the background, messages to it also make offline-push
 * jobs.  Pushes still go to the sessions.  proto3 leaves a false
 * isBackground out, so a missing one means foreground.
 */
static void
ngx_http_im_background(ngx_http_im_call_t *call, yajl_val data)
{
    int                     background;
    char                    err[128];
    ngx_http_im_str_t       uid;
    ngx_http_im_session_t  *s;

    s = call->s;
    background = 0;
    uid.len = 0;

    if (data == NULL || !YAJL_IS_OBJECT(data)
        || ngx_http_im_json_get_str(data, "userID", 0, &uid, err,
                                    sizeof(err)) != 0
        || ngx_http_im_json_get_bool(data, "isBackground", 0, &background,
                                     err, sizeof(err)) != 0)
    {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              data == NULL || !YAJL_IS_OBJECT(data)
                              ? "data must be an object" : err);
        return;
    }

    if (uid.len && (uid.len != s->uid.len
                    || ngx_strncmp(uid.data, s->uid.data, uid.len) != 0))
    {
        ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                      "im: \"%V\" asked to set another user's "
                      "background status", &s->uid);
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_PERMISSION,
                              "userID is not this session's user");
        return;
    }

    s->background = background ? 1 : 0;

    /* answered once Redis has it: a message sent after the answer sees
     * the new state */
    if (ngx_http_im_store_presence(&s->uid, s->platform, s->id,
                                   &s->token, 1, s->background,
                                   ngx_http_im_background_reply, call)
        != NGX_OK)
    {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static void
ngx_http_im_background_reply(void *data, ngx_int_t err)
{
    ngx_http_im_call_t  *call = data;

    if (err) {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        return;
    }

    ngx_http_im_call_finish(call);
}


/*
 * 2005 SubUserOnlineStatus {subscribeUserID, unsubscribeUserID} ->
 * {subscribers: [{userID, onlinePlatformIDs}]}: this connection starts
 * or stops watching users' presence (at most NGX_HTTP_IM_MAX_WATCH at
 * once).  The answer holds the platforms each user of subscribeUserID is
 * online on now; every later change comes as a 2005 push (presence.c).
 * Bad input changes nothing.
 */
static void
ngx_http_im_sub_status(ngx_http_im_call_t *call, yajl_val data)
{
    yajl_val  sub, unsub;

    if (data == NULL || !YAJL_IS_OBJECT(data)) {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              "data must be an object");
        return;
    }

    if (ngx_http_im_sub_list(call, data, "subscribeUserID", &sub) != NGX_OK
        || ngx_http_im_sub_list(call, data, "unsubscribeUserID", &unsub)
           != NGX_OK
        || ngx_http_im_sub_apply(call, sub, unsub) != NGX_OK)
    {
        return;
    }

    if (call->nconvs == 0) {
        ngx_http_im_buf_str(&call->body, "{\"subscribers\":[]}");
        ngx_http_im_call_finish(call);
        return;
    }

    if (ngx_http_im_store_users_online(call->convs, call->nconvs,
                                       ngx_http_im_sub_status_reply, call)
        != NGX_OK)
    {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


/* an optional list of at most NGX_HTTP_IM_MAX_WATCH valid user IDs */
static ngx_int_t
ngx_http_im_sub_list(ngx_http_im_call_t *call, yajl_val data,
    const char *key, yajl_val *list)
{
    char        err[128];
    yajl_val    v;
    ngx_uint_t  i;

    *list = NULL;

    if (ngx_http_im_json_get_array(data, key, 0, list, err, sizeof(err))
        != 0)
    {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              key[0] == 's'
                              ? "field \"subscribeUserID\" must be an "
                                "array of user IDs"
                              : "field \"unsubscribeUserID\" must be an "
                                "array of user IDs");
        return NGX_ERROR;
    }

    if (*list == NULL) {
        return NGX_OK;
    }

    if ((*list)->u.array.len > NGX_HTTP_IM_MAX_WATCH) {
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              "at most 1000 user IDs in each list");
        return NGX_ERROR;
    }

    for (i = 0; i < (*list)->u.array.len; i++) {
        v = (*list)->u.array.values[i];

        if (!YAJL_IS_STRING(v) || v->u.string == NULL
            || !ngx_http_im_user_id_valid(v->u.string,
                                          ngx_strlen(v->u.string)))
        {
            ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                                  "a user ID in the lists is not valid");
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/*
 * Unsubscribes, then subscribes, once the bound is known to hold; the
 * users subscribed to (each once) go to call->convs for the answer.
 */
static ngx_int_t
ngx_http_im_sub_apply(ngx_http_im_call_t *call, yajl_val sub,
    yajl_val unsub)
{
    ngx_str_t               id;
    ngx_uint_t              i, nsub, nunsub, after;
    ngx_http_im_session_t  *s;

    s = call->s;
    nsub = sub ? sub->u.array.len : 0;
    nunsub = unsub ? unsub->u.array.len : 0;
    after = s->nwatches;

    for (i = 0; i < nunsub; i++) {
        id.data = (u_char *) unsub->u.array.values[i]->u.string;
        id.len = ngx_strlen(id.data);
        if (after && ngx_http_im_presence_watching(s, &id)) {
            after--;
        }
    }

    for (i = 0; i < nsub; i++) {
        id.data = (u_char *) sub->u.array.values[i]->u.string;
        id.len = ngx_strlen(id.data);
        after += !ngx_http_im_presence_watching(s, &id);
    }

    if (after > NGX_HTTP_IM_MAX_WATCH) {
        ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                      "im: \"%V\" would watch %ui users", &s->uid, after);
        ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_ARGS,
                              "a connection watches at most 1000 users");
        return NGX_ERROR;
    }

    for (i = 0; i < nunsub; i++) {
        id.data = (u_char *) unsub->u.array.values[i]->u.string;
        id.len = ngx_strlen(id.data);
        (void) ngx_http_im_presence_watch(s, &id, 0);
    }

    for (i = 0; i < nsub; i++) {
        id.data = (u_char *) sub->u.array.values[i]->u.string;
        id.len = ngx_strlen(id.data);

        switch (ngx_http_im_presence_watch(s, &id, 1)) {

        case NGX_OK:
            break;

        case NGX_DECLINED:
            /* watched already, or listed twice: answered once */
            if (ngx_http_im_sub_listed(call, &id)) {
                continue;
            }
            break;

        default:
            ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_INTERNAL, NULL);
            return NGX_ERROR;
        }

        if (ngx_http_im_sub_answer(call, &id) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* 1 when call->convs holds id already */
static ngx_uint_t
ngx_http_im_sub_listed(ngx_http_im_call_t *call, ngx_str_t *id)
{
    ngx_uint_t  i;

    for (i = 0; i < call->nconvs; i++) {
        if (call->convs[i].len == id->len
            && ngx_memcmp(call->convs[i].data, id->data, id->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* keeps a copy of id in call->convs (at most NGX_HTTP_IM_MAX_WATCH) */
static ngx_int_t
ngx_http_im_sub_answer(ngx_http_im_call_t *call, ngx_str_t *id)
{
    ngx_str_t  *copy;

    if (call->convs == NULL) {
        call->convs = ngx_alloc(NGX_HTTP_IM_MAX_WATCH * sizeof(ngx_str_t),
                                ngx_cycle->log);
        if (call->convs == NULL) {
            goto failed;
        }
    }

    copy = &call->convs[call->nconvs];
    copy->data = ngx_alloc(id->len, ngx_cycle->log);
    if (copy->data == NULL) {
        goto failed;
    }

    ngx_memcpy(copy->data, id->data, id->len);
    copy->len = id->len;
    call->nconvs++;

    return NGX_OK;

failed:

    ngx_http_im_call_fail(call, NGX_HTTP_IM_ERR_INTERNAL, NULL);
    return NGX_ERROR;
}


static void
ngx_http_im_sub_status_reply(void *data, ngx_int_t err,
    ngx_http_im_store_online_t *users, ngx_uint_t n)
{
    ngx_http_im_call_t  *call = data;

    ngx_uint_t  i;

    if (err) {
        ngx_http_im_call_fail(call, err, NULL);
        return;
    }

    ngx_http_im_buf_str(&call->body, "{\"subscribers\":[");

    for (i = 0; i < n; i++) {
        if (i) {
            ngx_http_im_buf_str(&call->body, ",");
        }

        ngx_http_im_presence_entry(&call->body, &users[i].user_id,
                                   users[i].platforms, users[i].nplatforms);
        ngx_http_im_presence_seen(&users[i].user_id, users[i].platforms,
                                  users[i].nplatforms);
    }

    ngx_http_im_buf_str(&call->body, "]}");
    ngx_http_im_call_finish(call);
}
