
/*
 * ngx_im: the WebSocket endpoint.  Authenticates before upgrading, then
 * owns the connection: frames in through the pure codec in
 * ngx_http_im_ws_frame.c, frames out through a bounded per-session queue.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_store.h"


#define NGX_HTTP_IM_WS_CLOSE_WAIT  5000
#define NGX_HTTP_IM_WS_READS       8
/* output buffers: the smallest, the sizes a worker keeps for reuse
 * (1, 2, 4 and 8 KB), and the bytes it keeps of each size */
#define NGX_HTTP_IM_WS_OUT_MIN     1024
#define NGX_HTTP_IM_WS_OUT_SIZES   4
#define NGX_HTTP_IM_WS_OUT_KEEP    (1024 * 1024)


static ngx_int_t ngx_http_im_ws_check(ngx_http_request_t *r,
    ngx_str_t *key, const char **msg);
static ngx_uint_t ngx_http_im_ws_header_has(ngx_http_request_t *r,
    const char *name, const char *token);
static ngx_uint_t ngx_http_im_ws_list_has(ngx_str_t *value,
    const char *token);
static ngx_int_t ngx_http_im_ws_token(ngx_http_request_t *r,
    ngx_str_t *token, ngx_uint_t *subprotocol);
static ngx_int_t ngx_http_im_ws_arg(ngx_http_request_t *r, const char *name,
    ngx_str_t *value);
static ngx_int_t ngx_http_im_ws_refuse(ngx_http_request_t *r,
    ngx_uint_t status, ngx_int_t code, const char *msg);
static ngx_int_t ngx_http_im_ws_refuse_http(ngx_http_request_t *r,
    ngx_uint_t status, ngx_int_t code, const char *msg);
static ngx_int_t ngx_http_im_ws_refuse_frame(ngx_http_request_t *r,
    ngx_int_t code, const char *msg);
static ngx_http_im_buf_t *ngx_http_im_ws_result(ngx_int_t code,
    const char *msg);
static ngx_uint_t ngx_http_im_ws_arg_is(ngx_http_request_t *r,
    const char *name, const char *value);
static ngx_int_t ngx_http_im_ws_accept(ngx_http_request_t *r,
    ngx_uint_t subprotocol);
static void ngx_http_im_ws_refuse_async(ngx_http_im_session_t *s,
    ngx_uint_t status, ngx_int_t code, const char *msg);
static ngx_int_t ngx_http_im_ws_registry(ngx_http_im_session_t *s);
static void ngx_http_im_ws_auth_done(void *data, ngx_int_t code);
static void ngx_http_im_ws_upgrade(ngx_http_im_session_t *s);
static ngx_int_t ngx_http_im_ws_detach(ngx_http_im_session_t *s);
static void ngx_http_im_ws_read_handler(ngx_event_t *rev);
static void ngx_http_im_ws_write_handler(ngx_event_t *wev);
static void ngx_http_im_ws_feed(ngx_http_im_session_t *s, u_char *buf,
    size_t len);
static void ngx_http_im_ws_control(ngx_http_im_session_t *s,
    ngx_http_im_ws_event_t *ev);
static void ngx_http_im_ws_timer_handler(ngx_event_t *ev);
static void ngx_http_im_ws_heartbeat(ngx_http_im_session_t *s);
static void ngx_http_im_ws_finish(ngx_http_im_session_t *s);
static void ngx_http_im_ws_post_write(ngx_http_im_session_t *s);
static u_char *ngx_http_im_ws_out_alloc(size_t cap, ngx_log_t *log);
static void ngx_http_im_ws_out_release(u_char *p, size_t cap);
static ngx_int_t ngx_http_im_ws_out_size(size_t cap);
static ngx_str_t *ngx_http_im_ws_dup(ngx_str_t *dst, ngx_str_t *src);
static void ngx_http_im_ws_login_done(ngx_http_im_session_t *s,
    ngx_int_t ok);
static void ngx_http_im_ws_seat_done(void *data, ngx_int_t code);
static void ngx_http_im_ws_seated(ngx_http_im_session_t *s);
static void ngx_http_im_ws_registry_refuse(ngx_http_im_session_t *s,
    ngx_int_t code);


/* what the session layer calls to reach a session's connection */
static ngx_http_im_session_io_t  ngx_http_im_ws_io = {
    ngx_http_im_ws_send,
    ngx_http_im_ws_close,
    ngx_http_im_ws_goodbye,
    ngx_http_im_ws_resume,
    ngx_http_im_ws_login_done,
    ngx_http_im_ws_seated
};


/*
 * The content handler of an im_ws location.  Validates the handshake and
 * the token synchronously, then subscribes the user's channel and checks
 * the token registry in Redis; only then does it send 101.
 */
ngx_int_t
ngx_http_im_ws_handler(ngx_http_request_t *r)
{
    ngx_int_t                    rc, platform;
    ngx_uint_t                   subprotocol;
    const char                  *msg;
    ngx_str_t                    key, uid, token, pid, opid;
    ngx_http_im_session_t       *s;
    ngx_http_im_main_conf_t     *imcf;
    ngx_http_im_token_claims_t   claims;

    r->connection->log->action = "checking websocket handshake";

    rc = ngx_http_im_ws_check(r, &key, &msg);

    if (rc == NGX_HTTP_NOT_ALLOWED || (rc != NGX_OK && msg == NULL)) {
        return rc;
    }

    if (rc != NGX_OK) {
        /* not a WebSocket handshake to upgrade: an HTTP answer only */
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_LOGIN_FAILURES);
        return ngx_http_im_ws_refuse_http(r, rc, NGX_HTTP_IM_ERR_CONN_ARGS,
                                          msg);
    }

    if (ngx_http_im_ws_arg(r, "sendID", &uid) != NGX_OK
        || ngx_http_im_ws_arg(r, "platformID", &pid) != NGX_OK
        || !ngx_http_im_user_id_valid((char *) uid.data, uid.len))
    {
        return ngx_http_im_ws_refuse(r, NGX_HTTP_BAD_REQUEST,
                                     NGX_HTTP_IM_ERR_CONN_ARGS,
                                     "sendID and platformID are required");
    }

    platform = ngx_atoi(pid.data, pid.len);
    if (platform < 1 || platform > 11) {
        return ngx_http_im_ws_refuse(r, NGX_HTTP_BAD_REQUEST,
                                     NGX_HTTP_IM_ERR_CONN_ARGS,
                                     "platformID must be 1..11");
    }

    if (ngx_http_im_ws_token(r, &token, &subprotocol) != NGX_OK) {
        return ngx_http_im_ws_refuse(r, NGX_HTTP_UNAUTHORIZED,
                                     NGX_HTTP_IM_ERR_CONN_ARGS,
                                     "token is required");
    }

    if (ngx_http_im_ws_arg(r, "operationID", &opid) != NGX_OK) {
        ngx_str_null(&opid);
    }

    imcf = ngx_http_get_module_main_conf(r, ngx_http_im_module);

    rc = ngx_http_im_token_verify(imcf->secret.data, imcf->secret.len,
                                  (char *) token.data, token.len,
                                  (long long) ngx_time(), &claims);
    if (rc != NGX_HTTP_IM_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "im: websocket token of \"%V\" refused: %i",
                      &uid, rc);
        return ngx_http_im_ws_refuse(r, NGX_HTTP_UNAUTHORIZED, rc,
                                     ngx_http_im_errmsg(rc));
    }

    if (ngx_strlen(claims.user_id) != uid.len
        || ngx_strncmp(claims.user_id, uid.data, uid.len) != 0
        || claims.platform_id != platform)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "im: token does not match sendID \"%V\"", &uid);
        return ngx_http_im_ws_refuse(r, NGX_HTTP_UNAUTHORIZED,
                                     NGX_HTTP_IM_ERR_TOKEN_INVALID,
                                     "token does not match sendID "
                                     "or platformID");
    }

    s = ngx_http_im_session_create(r, &ngx_http_im_ws_io);
    if (s == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_http_set_ctx(r, s, ngx_http_im_module);
    s->subprotocol = subprotocol;

    if (ngx_http_im_ws_dup(&s->uid, &uid) == NULL
        || ngx_http_im_ws_dup(&s->token, &token) == NULL
        || ngx_http_im_ws_dup(&s->operation_id, &opid) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    s->platform = platform;
    s->js = ngx_http_im_ws_arg_is(r, "sdkType", "js");
    s->msg_resp = ngx_http_im_ws_arg_is(r, "isMsgResp", "true");

    /*
     * Join first, check the token registry second: a force_logout that
     * marks the token after the check publishes its kick after the
     * SUBSCRIBE, so this login hears it (see ngx_http_im_session_kick()).
     */
    rc = ngx_http_im_session_join(s);

    if (rc == NGX_OK) {
        rc = ngx_http_im_ws_registry(s);
    }

    if (rc == NGX_ERROR) {
        ngx_http_im_session_leave(s);
        return ngx_http_im_ws_refuse(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                     NGX_HTTP_IM_ERR_UNAVAILABLE,
                                     "redis unavailable");
    }

    /* the login must not wait forever for Redis */
    s->ping.handler = ngx_http_im_ws_timer_handler;
    s->ping.data = s;
    s->ping.log = r->connection->log;
    s->ping.cancelable = 1;
    ngx_add_timer(&s->ping, imcf->redis_timeout + 1000);

    r->connection->log->action = "logging websocket in";
    r->main->count++;

    return NGX_DONE;
}


/*
 * Returns NGX_OK, or the HTTP status to refuse the handshake with and,
 * for a JSON answer, its message in *msg.
 */
static ngx_int_t
ngx_http_im_ws_check(ngx_http_request_t *r, ngx_str_t *key,
    const char **msg)
{
    ngx_table_elt_t  *h;

    *msg = NULL;

    if (r->method != NGX_HTTP_GET) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    /* not every nginx version fills headers_in.upgrade */
    if (r->http_version != NGX_HTTP_VERSION_11
        || !ngx_http_im_ws_header_has(r, "Upgrade", "websocket")
        || !ngx_http_im_ws_header_has(r, "Connection", "upgrade"))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "im: not a websocket upgrade request");
        return NGX_HTTP_BAD_REQUEST;
    }

    h = ngx_http_im_header(r, "Sec-WebSocket-Version", 21);
    if (h == NULL || h->value.len != 2
        || ngx_strncmp(h->value.data, "13", 2) != 0)
    {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Sec-WebSocket-Version");
        ngx_str_set(&h->value, "13");

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "im: unsupported websocket version");
        *msg = "Sec-WebSocket-Version must be 13";
        return 426;
    }

    h = ngx_http_im_header(r, "Sec-WebSocket-Key", 17);
    if (h == NULL || !ngx_http_im_ws_key_valid(h->value.data, h->value.len))
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "im: missing or invalid Sec-WebSocket-Key");
        *msg = "invalid Sec-WebSocket-Key";
        return NGX_HTTP_BAD_REQUEST;
    }

    if (ngx_http_im_cors_ws_origin(r) != NGX_OK) {
        *msg = "origin not allowed";
        return NGX_HTTP_FORBIDDEN;
    }

    *key = h->value;

    return NGX_OK;
}


/*
 * 1 when the headers "name" of r list "token" (RFC 9110, 5.6.1: comma-
 * separated elements with optional whitespace, and several header lines
 * make one list); tokens are compared case-insensitively, as RFC 6455
 * asks for "websocket" and "Upgrade".
 */
static ngx_uint_t
ngx_http_im_ws_header_has(ngx_http_request_t *r, const char *name,
    const char *token)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return 0;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0
            && ngx_http_im_ws_list_has(&h[i].value, token))
        {
            return 1;
        }
    }
}


/* 1 when the list in value has an element equal to token */
static ngx_uint_t
ngx_http_im_ws_list_has(ngx_str_t *value, const char *token)
{
    size_t   len;
    u_char  *p, *last, *start, *end;

    len = ngx_strlen(token);
    p = value->data;
    last = p + value->len;

    while (p < last) {
        start = p;

        while (p < last && *p != ',') {
            p++;
        }

        end = p;

        if (p < last) {
            p++;
        }

        while (start < end && (*start == ' ' || *start == '\t')) {
            start++;
        }

        while (end > start && (end[-1] == ' ' || end[-1] == '\t')) {
            end--;
        }

        if ((size_t) (end - start) == len
            && ngx_strncasecmp(start, (u_char *) token, len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/*
 * The token: the "token" argument, else "Authorization: Bearer <jwt>",
 * else an element "im-token.<jwt>" of Sec-WebSocket-Protocol (the one
 * header a browser can set); the 101 then selects the protocol "im",
 * which the client must offer too.  Tokens in headers stay out of
 * access logs and proxies' URL logs.
 */
static ngx_int_t
ngx_http_im_ws_token(ngx_http_request_t *r, ngx_str_t *token,
    ngx_uint_t *subprotocol)
{
    u_char           *p, *last, *start, *end;
    ngx_table_elt_t  *h;

    *subprotocol = 0;

    if (ngx_http_im_ws_arg(r, "token", token) == NGX_OK) {
        return NGX_OK;
    }

    h = r->headers_in.authorization;

    if (h && h->value.len > 7
        && ngx_strncasecmp(h->value.data, (u_char *) "Bearer ", 7) == 0)
    {
        token->data = h->value.data + 7;
        token->len = h->value.len - 7;

        while (token->len && token->data[0] == ' ') {
            token->data++;
            token->len--;
        }

        return token->len ? NGX_OK : NGX_DECLINED;
    }

    h = ngx_http_im_header(r, "Sec-WebSocket-Protocol", 22);
    if (h == NULL) {
        return NGX_DECLINED;
    }

    p = h->value.data;
    last = p + h->value.len;

    while (p < last) {
        while (p < last && (*p == ' ' || *p == '\t' || *p == ',')) {
            p++;
        }

        start = p;

        while (p < last && *p != ',' && *p != ' ' && *p != '\t') {
            p++;
        }

        end = p;

        if (end - start > 9
            && ngx_strncmp(start, "im-token.", 9) == 0)
        {
            token->data = start + 9;
            token->len = end - start - 9;
            *subprotocol = 1;
            return NGX_OK;
        }
    }

    return NGX_DECLINED;
}


/* a query argument, percent-decoded into the request pool */
static ngx_int_t
ngx_http_im_ws_arg(ngx_http_request_t *r, const char *name, ngx_str_t *value)
{
    u_char     *dst, *src;
    ngx_str_t   raw;

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK
        || raw.len == 0)
    {
        return NGX_DECLINED;
    }

    dst = ngx_pnalloc(r->pool, raw.len);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    value->data = dst;
    src = raw.data;
    ngx_unescape_uri(&dst, &src, raw.len, 0);
    value->len = dst - value->data;

    return value->len ? NGX_OK : NGX_DECLINED;
}


/*
 * A refused login of a valid handshake.  OpenIM's SDKs ask with
 * isMsgResp=true to get it as OpenIM gives it: upgraded, one text frame
 * {"errCode":..,"errMsg":..}, then Close; they tell a bad, expired or
 * kicked token only from that frame, and retry an HTTP error forever.
 */
static ngx_int_t
ngx_http_im_ws_refuse(ngx_http_request_t *r, ngx_uint_t status,
    ngx_int_t code, const char *msg)
{
    ngx_http_im_metric_inc(NGX_HTTP_IM_M_LOGIN_FAILURES);

    if (ngx_http_im_ws_arg_is(r, "isMsgResp", "true")) {
        return ngx_http_im_ws_refuse_frame(r, code, msg);
    }

    return ngx_http_im_ws_refuse_http(r, status, code, msg);
}


static ngx_int_t
ngx_http_im_ws_refuse_http(ngx_http_request_t *r, ngx_uint_t status,
    ngx_int_t code, const char *msg)
{
    ngx_http_im_buf_t  *b;

    b = ngx_http_im_ws_result(code, msg);

    return ngx_http_im_send_json(r, status, b);
}


static ngx_int_t
ngx_http_im_ws_refuse_frame(ngx_http_request_t *r, ngx_int_t code,
    const char *msg)
{
    u_char             *p;
    ngx_int_t           rc;
    ngx_buf_t          *b;
    ngx_chain_t         out;
    ngx_http_im_buf_t  *json;

    json = ngx_http_im_ws_result(code, msg);

    if (json->failed || ngx_http_im_ws_accept(r, 0) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* two frame headers, the text, a Close payload (code, no reason) */
    b = ngx_create_temp_buf(r->pool, 10 + json->len + 10 + 2);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;
    p += ngx_http_im_ws_frame_header(p, NGX_HTTP_IM_WS_OP_TEXT, json->len);
    p = ngx_cpymem(p, json->data, json->len);
    p += ngx_http_im_ws_frame_header(p, NGX_HTTP_IM_WS_OP_CLOSE, 2);
    p += ngx_http_im_ws_close_payload(p, 1008, NULL);
    b->last = p;
    b->last_buf = 1;

    out.buf = b;
    out.next = NULL;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK) {
        return rc;
    }

    return ngx_http_output_filter(r, &out);
}


/* {"errCode":..,"errMsg":..,"errDlt":""} in the worker's scratch buffer */
static ngx_http_im_buf_t *
ngx_http_im_ws_result(ngx_int_t code, const char *msg)
{
    ngx_http_im_buf_t  *b;

    b = &ngx_http_im_worker->scratch;
    ngx_http_im_buf_reset(b);
    ngx_http_im_buf_str(b, "{\"errCode\":");
    ngx_http_im_buf_int(b, code);
    ngx_http_im_buf_str(b, ",\"errMsg\":");
    ngx_http_im_buf_json_str(b, msg, ngx_strlen(msg));
    ngx_http_im_buf_str(b, ",\"errDlt\":\"\"}");

    return b;
}


/* 1 when the query argument "name" is "value" */
static ngx_uint_t
ngx_http_im_ws_arg_is(ngx_http_request_t *r, const char *name,
    const char *value)
{
    ngx_str_t  v;

    return ngx_http_im_ws_arg(r, name, &v) == NGX_OK
           && v.len == ngx_strlen(value)
           && ngx_strncmp(v.data, value, v.len) == 0;
}


static void
ngx_http_im_ws_refuse_async(ngx_http_im_session_t *s, ngx_uint_t status,
    ngx_int_t code, const char *msg)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    r = s->r;
    c = s->c;

    if (s->ping.timer_set) {
        ngx_del_timer(&s->ping);
    }

    ngx_http_im_session_leave(s);
    ngx_http_finalize_request(r, ngx_http_im_ws_refuse(r, status, code, msg));
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_im_ws_auth_done(void *data, ngx_int_t code)
{
    ngx_http_im_session_t  *s = data;

    if (s->closed) {
        goto done;
    }

    if (code != 0) {
        ngx_http_im_ws_registry_refuse(s, code);
        goto done;
    }

    if (s->kicked) {
        ngx_http_im_ws_refuse_async(s, NGX_HTTP_UNAUTHORIZED,
                                    NGX_HTTP_IM_ERR_TOKEN_KICKED,
                                    "token kicked");
        goto done;
    }

    if (s->user == NULL || s->user->state != NGX_HTTP_IM_SUB_DONE) {
        /* the subscriber connection dropped meanwhile: a 101 now would
         * promise deliveries that cannot arrive */
        ngx_http_im_ws_refuse_async(s, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    NGX_HTTP_IM_ERR_UNAVAILABLE,
                                    "redis unavailable");
        goto done;
    }

    ngx_http_im_ws_upgrade(s);

done:

    ngx_http_im_session_unref(s);
}


/*
 * Called once the user's channel is subscribed (ok) or could not be:
 * the login goes on to the token registry, or is refused.
 */
static void
ngx_http_im_ws_login_done(ngx_http_im_session_t *s, ngx_int_t ok)
{
    if (s->registry) {
        /* subscribed earlier; its registry check is in flight */
        return;
    }

    if (!ok || ngx_http_im_ws_registry(s) != NGX_OK) {
        ngx_http_im_ws_refuse_async(s, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    NGX_HTTP_IM_ERR_UNAVAILABLE,
                                    "redis unavailable");
    }
}


/* the registry refused a login (code), or Redis failed (90004) */
static void
ngx_http_im_ws_registry_refuse(ngx_http_im_session_t *s, ngx_int_t code)
{
    if (code == NGX_HTTP_IM_ERR_UNAVAILABLE) {
        ngx_http_im_ws_refuse_async(s, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    NGX_HTTP_IM_ERR_UNAVAILABLE,
                                    "redis unavailable");
        return;
    }

    ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                  "im: token of \"%V\" refused by registry: %i",
                  &s->uid, code);
    ngx_http_im_ws_refuse_async(s, NGX_HTTP_UNAUTHORIZED, code,
                                code == NGX_HTTP_IM_ERR_TOKEN_KICKED
                                ? "token kicked"
                                : code == NGX_HTTP_IM_ERR_USER_ID
                                ? "user not registered"
                                : "token not exist");
}


/*
 * Asks the token registry about a subscribed login.  Under a multi-login
 * policy the same step takes the session's seat (login.lua); the session
 * then goes live when the user's channel brings the seat's line
 * (ngx_http_im_ws_seated()), at the point where older sessions leave.
 */
static ngx_int_t
ngx_http_im_ws_registry(ngx_http_im_session_t *s)
{
    size_t                    n;
    ngx_int_t                 rc;
    ngx_http_im_main_conf_t  *imcf;
    u_char                    seats[NGX_HTTP_IM_PLATFORM_MAX];

    imcf = ngx_http_get_module_main_conf(s->r, ngx_http_im_module);
    n = ngx_http_im_login_seats((int) imcf->multi_login, (char *) seats);

    if (n == 0) {
        rc = ngx_http_im_store_token_check(&s->uid, &s->token, 1,
                                           ngx_http_im_ws_auth_done, s);

    } else {
        rc = ngx_http_im_store_login(&s->uid, &s->token, s->platform, s->id,
                                     seats, n, ngx_http_im_ws_seat_done, s);
    }

    if (rc != NGX_OK) {
        return NGX_ERROR;
    }

    s->registry = 1;
    s->seated = n ? 1 : 0;
    ngx_http_im_session_ref(s);

    return NGX_OK;
}


/* login.lua answered; on success its line on the channel opens the
 * session, before or after this */
static void
ngx_http_im_ws_seat_done(void *data, ngx_int_t code)
{
    ngx_http_im_session_t  *s = data;

    if (!s->closed && !s->upgraded && code != 0) {
        ngx_http_im_ws_registry_refuse(s, code);
    }

    ngx_http_im_session_unref(s);
}


/* the login's seat line came: the session goes live at this point */
static void
ngx_http_im_ws_seated(ngx_http_im_session_t *s)
{
    if (s->closed || s->upgraded || !s->seated) {
        return;
    }

    if (s->kicked) {
        ngx_http_im_ws_refuse_async(s, NGX_HTTP_UNAUTHORIZED,
                                    NGX_HTTP_IM_ERR_TOKEN_KICKED,
                                    "token kicked");
        return;
    }

    ngx_http_im_ws_upgrade(s);
}


/* the 101's status and headers, not sent yet */
static ngx_int_t
ngx_http_im_ws_accept(ngx_http_request_t *r, ngx_uint_t subprotocol)
{
    size_t            n;
    u_char           *accept;
    ngx_table_elt_t  *h, *key;

    key = ngx_http_im_header(r, "Sec-WebSocket-Key", 17);
    accept = ngx_pnalloc(r->pool, 32);
    if (key == NULL || accept == NULL) {
        return NGX_ERROR;
    }

    n = ngx_http_im_ws_accept_key(key->value.data, key->value.len,
                                  (char *) accept);

    r->headers_out.status = NGX_HTTP_SWITCHING_PROTOCOLS;
    r->headers_out.content_length_n = -1;
    r->keepalive = 0;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Upgrade");
    ngx_str_set(&h->value, "websocket");

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    ngx_str_set(&h->key, "Sec-WebSocket-Accept");
    h->value.data = accept;
    h->value.len = n;

    if (subprotocol) {
        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Sec-WebSocket-Protocol");
        ngx_str_set(&h->value, "im");
    }

    return NGX_OK;
}


static void
ngx_http_im_ws_upgrade(ngx_http_im_session_t *s)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    static u_char  ok[] = "{\"errCode\":0,\"errMsg\":\"\",\"errDlt\":\"\"}";

    r = s->r;
    c = s->c;

    if (s->ping.timer_set) {
        ngx_del_timer(&s->ping);
    }

    if (ngx_http_im_ws_accept(r, s->subprotocol) != NGX_OK) {
        goto failed;
    }

    /*
     * Count the session before the 101 leaves: a client that has its 101
     * may ask for metrics or presence at once, and the kernel may run it
     * before this worker gets the CPU back.  A failure from here on goes
     * through the session cleanup, which undoes all three.
     */
    s->upgraded = 1;
    ngx_http_im_metric_inc(NGX_HTTP_IM_M_LOGINS);
    ngx_http_im_metric_inc(NGX_HTTP_IM_M_CONNECTIONS);

    if (!s->seated) {
        /* login.lua recorded a policy login's presence already */
        ngx_http_im_session_presence(s, 1);
    }

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK
        || ngx_http_send_special(r, NGX_HTTP_FLUSH) == NGX_ERROR)
    {
        goto failed;
    }

    if (c->buffered) {
        /* frames bypass the filter chain, so 101 must be out already */
        ngx_log_error(NGX_LOG_INFO, c->log, 0,
                      "im: websocket handshake response not flushed");
        goto failed;
    }

    /* frames are small and latency-bound: do not let Nagle's algorithm
     * hold a push back for the peer's delayed ACK */
    if (ngx_tcp_nodelay(c) != NGX_OK) {
        goto failed;
    }

    s->last_in = ngx_current_msec;
    ngx_http_im_ws_parser_init(&s->parser, s->conf->ws_max_frame,
                               s->conf->ws_max_message);

    if (ngx_http_im_ws_detach(s) != NGX_OK) {
        goto failed;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "im: websocket session of \"%V\" open", &s->uid);

    ngx_add_timer(&s->ping, s->conf->ws_ping_interval);

    if (s->msg_resp) {
        /* what OpenIM's SDKs wait for before they send anything */
        ngx_http_im_ws_send(s, NGX_HTTP_IM_WS_OP_TEXT, ok, sizeof(ok) - 1);
    }

    /* input may have arrived while the login was pending, and bytes that
     * came with the handshake wait in the stash */
    ngx_post_event(c->read, &ngx_posted_events);

    return;

failed:

    ngx_http_im_session_leave(s);
    ngx_http_finalize_request(r, NGX_HTTP_CLOSE);
    ngx_http_run_posted_requests(c);
}


/*
 * After the 101 the HTTP request has nothing left to do, but it would
 * hold its pool (the request, nginx's header lists: ~4.5 KB) and the
 * header buffers (1 KB, or 8 KB for a large handshake) for the
 * connection's life.  The session takes the connection over instead, as
 * nginx's HTTP/2 does: the request is logged (status 101) and freed now.
 * Bytes that came behind the handshake move to the stash first.
 */
static ngx_int_t
ngx_http_im_ws_detach(ngx_http_im_session_t *s)
{
    size_t                  len;
    ngx_buf_t              *b;
    ngx_chain_t            *cl;
    ngx_connection_t       *c;
    ngx_http_request_t     *r;
    ngx_http_connection_t  *hc;

    r = s->r;
    c = s->c;
    b = r->header_in;
    len = b->last - b->pos;

    if (len) {
        s->stash = ngx_alloc(len, c->log);
        if (s->stash == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(s->stash, b->pos, len);
        s->stash_len = len;
    }

    hc = r->http_connection;

    ngx_http_im_session_detach(s);
    ngx_http_free_request(r, 0);

    /* free_request marks the connection for nginx's own close */
    c->destroyed = 0;
    c->data = s;
    c->idle = 1;
    c->log->action = "in websocket session";
    c->read->handler = ngx_http_im_ws_read_handler;
    c->write->handler = ngx_http_im_ws_write_handler;

    if (c->buffer && c->buffer->start
        && ngx_pfree(c->pool, c->buffer->start) == NGX_OK)
    {
        c->buffer->start = NULL;
        c->buffer->pos = c->buffer->last = c->buffer->end = NULL;
    }

    for (cl = hc->busy; cl; cl = cl->next) {
        (void) ngx_pfree(c->pool, cl->buf->start);
    }

    for (cl = hc->free; cl; cl = cl->next) {
        (void) ngx_pfree(c->pool, cl->buf->start);
    }

    hc->busy = NULL;
    hc->free = NULL;
    hc->nbusy = 0;

    return NGX_OK;
}


static void
ngx_http_im_ws_read_handler(ngx_event_t *rev)
{
    ssize_t                 n;
    u_char                 *stash;
    size_t                  len;
    ngx_uint_t              reads;
    ngx_connection_t       *c;
    ngx_http_im_session_t  *s;

    c = rev->data;
    s = c->data;

    if (c->close) {
        /* the worker is exiting: nginx closes its idle connections */
        ngx_http_im_ws_finish(s);
        return;
    }

    ngx_http_im_session_ref(s);

    if (s->stash && s->inflight < s->conf->ws_max_inflight) {
        stash = s->stash;
        len = s->stash_len;
        s->stash = NULL;
        s->stash_len = 0;

        ngx_http_im_ws_feed(s, stash, len);
        ngx_free(stash);
    }

    for (reads = 0; !s->closed && !s->closing && s->stash == NULL; reads++) {

        if (reads == NGX_HTTP_IM_WS_READS) {
            /* a fast sender must not starve the other sessions */
            ngx_post_event(c->read, &ngx_posted_events);
            break;
        }

        n = c->recv(c, ngx_http_im_worker->recv_buf,
                    ngx_http_im_worker->recv_size);

        if (n == NGX_AGAIN) {
            if (ngx_handle_read_event(c->read, 0) != NGX_OK) {
                ngx_http_im_ws_finish(s);
            }
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                           "im: websocket peer closed the connection");
            ngx_http_im_ws_finish(s);
            break;
        }

        s->last_in = ngx_current_msec;
        s->pinged = 0;

        ngx_http_im_ws_feed(s, ngx_http_im_worker->recv_buf, n);
    }

    ngx_http_im_session_unref(s);
}


/*
 * Runs the codec over input.  When too many requests of this session are
 * in flight, the rest of the input waits in s->stash and reading stops:
 * TCP back-pressure instead of an unbounded request queue.
 */
static void
ngx_http_im_ws_feed(ngx_http_im_session_t *s, u_char *buf, size_t len)
{
    int                     rc;
    size_t                  used;
    ngx_http_im_ws_event_t  ev;

    while (len && !s->closed && !s->closing) {

        if (s->inflight >= s->conf->ws_max_inflight) {
            s->stash = ngx_alloc(len, s->c->log);
            if (s->stash == NULL) {
                ngx_http_im_ws_close(s, 1011, "out of memory");
                return;
            }

            ngx_memcpy(s->stash, buf, len);
            s->stash_len = len;
            return;
        }

        rc = ngx_http_im_ws_parse(&s->parser, buf, len, &used, &ev);
        buf += used;
        len -= used;

        switch (rc) {

        case NGX_HTTP_IM_WS_MESSAGE:
            ngx_http_im_metric_inc(NGX_HTTP_IM_M_FRAMES_IN);
            ngx_http_im_msg_dispatch(s, (u_char *) ev.data, ev.len,
                                     ev.opcode == NGX_HTTP_IM_WS_OP_BINARY);
            break;

        case NGX_HTTP_IM_WS_CONTROL:
            ngx_http_im_ws_control(s, &ev);
            break;

        case NGX_HTTP_IM_WS_ERROR:
            ngx_http_im_metric_inc(NGX_HTTP_IM_M_PROTOCOL_ERRORS);
            ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                          "im: websocket protocol error: %s, closing %d",
                          ev.reason, ev.close_code);
            ngx_http_im_ws_close(s, ev.close_code, ev.reason);
            return;

        default: /* NGX_HTTP_IM_WS_AGAIN */
            break;
        }
    }

    if (!s->closed && ngx_http_im_ws_parser_idle(&s->parser)) {
        /* an idle session keeps no message buffer */
        ngx_http_im_ws_parser_release(&s->parser);
    }
}


/* Called when a request of s completed: resume input held back. */
void
ngx_http_im_ws_resume(ngx_http_im_session_t *s)
{
    if (s->stash && !s->closed && !s->c->read->posted
        && s->inflight < s->conf->ws_max_inflight)
    {
        ngx_post_event(s->c->read, &ngx_posted_events);
    }
}


static void
ngx_http_im_ws_control(ngx_http_im_session_t *s, ngx_http_im_ws_event_t *ev)
{
    switch (ev->opcode) {

    case NGX_HTTP_IM_WS_OP_PING:
        ngx_http_im_ws_send(s, NGX_HTTP_IM_WS_OP_PONG,
                            (u_char *) ev->data, ev->len);
        break;

    case NGX_HTTP_IM_WS_OP_CLOSE:
        ngx_log_debug1(NGX_LOG_DEBUG_HTTP, s->c->log, 0,
                       "im: websocket close %d from peer", ev->close_code);
        ngx_http_im_ws_close(s, ev->close_code == 1005 ? 0 : ev->close_code,
                             NULL);
        break;

    default: /* pong */
        break;
    }
}


/*
 * Queues a frame.  A session whose queue would exceed its bound is
 * closed on the next turn of the event loop (it recovers by pulling);
 * never here, because callers may be walking session lists.
 */
void
ngx_http_im_ws_send(ngx_http_im_session_t *s, ngx_uint_t opcode,
    u_char *data, size_t len)
{
    u_char  *p, hdr[10];
    size_t   hlen, pending, need, cap;

    if (s->closed || s->closing || !s->upgraded) {
        return;
    }

    hlen = ngx_http_im_ws_frame_header(hdr, opcode, len);
    pending = s->out_len - s->out_pos;
    need = pending + hlen + len;

    if (need > s->conf->ws_send_queue) {
        ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                      "im: send queue of \"%V\" over %uz bytes, closing",
                      &s->uid, s->conf->ws_send_queue);
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_OVERFLOWS);
        s->closing = 1;
        s->out_pos = s->out_len = 0;
        ngx_post_event(&s->ping, &ngx_posted_events);
        return;
    }

    if (s->out_pos && need > s->out_cap - s->out_pos) {
        ngx_memmove(s->out, s->out + s->out_pos, pending);
        s->out_len = pending;
        s->out_pos = 0;
    }

    if (need > s->out_cap) {
        /* need is within the queue's bound, so this ends */
        for (cap = NGX_HTTP_IM_WS_OUT_MIN; cap < need; cap *= 2) {
            /* void */
        }

        p = ngx_http_im_ws_out_alloc(cap, s->c->log);
        if (p == NULL) {
            s->closing = 1;
            ngx_post_event(&s->ping, &ngx_posted_events);
            return;
        }

        if (s->out) {
            ngx_memcpy(p, s->out + s->out_pos, pending);
            ngx_http_im_ws_out_release(s->out, s->out_cap);
        }

        s->out = p;
        s->out_cap = cap;
        s->out_len = pending;
        s->out_pos = 0;
    }

    ngx_http_im_metric_inc(NGX_HTTP_IM_M_FRAMES_OUT);

    p = ngx_cpymem(s->out + s->out_len, hdr, hlen);

    if (len) {
        /* a ping has no payload, and data may be NULL then */
        ngx_memcpy(p, data, len);
    }

    s->out_len += hlen + len;

    ngx_http_im_ws_post_write(s);
}


/*
 * Output buffers are powers of two from 1 KB, and those up to 8 KB are
 * kept for reuse by the worker: a push to N sessions of a worker takes N
 * of them in one turn (more when sessions fall behind and their buffers
 * grow) and gives them back in the next, far more than malloc's
 * per-thread cache holds (perf: malloc took ~8% of nginx's CPU in a
 * fan-out).  At most NGX_HTTP_IM_WS_OUT_KEEP bytes of each size are
 * kept, 4 MB a worker; a free one holds the link to the next in its
 * first bytes.
 */
static u_char      *ngx_http_im_ws_out_free[NGX_HTTP_IM_WS_OUT_SIZES];
static size_t       ngx_http_im_ws_out_kept[NGX_HTTP_IM_WS_OUT_SIZES];


static ngx_int_t
ngx_http_im_ws_out_size(size_t cap)
{
    ngx_int_t  i;

    for (i = 0; i < NGX_HTTP_IM_WS_OUT_SIZES; i++) {
        if (cap == (size_t) NGX_HTTP_IM_WS_OUT_MIN << i) {
            return i;
        }
    }

    return NGX_ERROR;
}


static u_char *
ngx_http_im_ws_out_alloc(size_t cap, ngx_log_t *log)
{
    u_char     *p;
    ngx_int_t   i;

    i = ngx_http_im_ws_out_size(cap);

    if (i == NGX_ERROR || ngx_http_im_ws_out_free[i] == NULL) {
        return ngx_alloc(cap, log);
    }

    p = ngx_http_im_ws_out_free[i];
    ngx_http_im_ws_out_free[i] = *(u_char **) p;
    ngx_http_im_ws_out_kept[i] -= cap;

    return p;
}


static void
ngx_http_im_ws_out_release(u_char *p, size_t cap)
{
    ngx_int_t  i;

    i = ngx_http_im_ws_out_size(cap);

    if (i == NGX_ERROR
        || ngx_http_im_ws_out_kept[i] + cap > NGX_HTTP_IM_WS_OUT_KEEP)
    {
        ngx_free(p);
        return;
    }

    *(u_char **) p = ngx_http_im_ws_out_free[i];
    ngx_http_im_ws_out_free[i] = p;
    ngx_http_im_ws_out_kept[i] += cap;
}


/* frames queued in one turn of the event loop leave in one write */
static void
ngx_http_im_ws_post_write(ngx_http_im_session_t *s)
{
    if (!s->c->write->posted && s->c->write->ready) {
        ngx_post_event(s->c->write, &ngx_posted_events);
    }
}


static void
ngx_http_im_ws_write_handler(ngx_event_t *wev)
{
    ssize_t                 n;
    ngx_connection_t       *c;
    ngx_http_im_session_t  *s;

    c = wev->data;
    s = c->data;

    while (s->out_pos < s->out_len) {
        n = c->send(c, s->out + s->out_pos, s->out_len - s->out_pos);

        if (n == NGX_AGAIN) {
            if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
                ngx_http_im_ws_finish(s);
            }
            return;
        }

        if (n == NGX_ERROR) {
            ngx_http_im_ws_finish(s);
            return;
        }

        s->out_pos += n;
    }

    /* an idle session keeps no output buffer */
    if (s->out) {
        ngx_http_im_ws_out_release(s->out, s->out_cap);
    }

    s->out = NULL;
    s->out_pos = s->out_len = s->out_cap = 0;

    if (s->closing) {
        ngx_http_im_ws_finish(s);
    }
}


/*
 * Starts the closing handshake: queues a Close frame (code 0: without a
 * code), stops reading, and closes the connection once it is written,
 * or after a grace period.
 */
void
ngx_http_im_ws_close(ngx_http_im_session_t *s, ngx_int_t code,
    const char *reason)
{
    u_char  payload[125];
    size_t  n;

    if (s->closed || s->closing) {
        return;
    }

    n = 0;
    if (code) {
        n = ngx_http_im_ws_close_payload(payload, (int) code, reason);
    }

    ngx_http_im_ws_send(s, NGX_HTTP_IM_WS_OP_CLOSE, payload, n);
    s->closing = 1;

    if (s->ping.timer_set) {
        ngx_del_timer(&s->ping);
    }

    ngx_add_timer(&s->ping, NGX_HTTP_IM_WS_CLOSE_WAIT);

    if (s->out_pos == s->out_len) {
        ngx_post_event(&s->ping, &ngx_posted_events);
    }
}


static void
ngx_http_im_ws_timer_handler(ngx_event_t *ev)
{
    ngx_uint_t              timedout;
    ngx_http_im_session_t  *s;

    s = ev->data;
    timedout = ev->timedout;
    ev->timedout = 0;

    if (s->closed) {
        return;
    }

    if (!s->upgraded) {
        ngx_log_error(NGX_LOG_ERR, s->c->log, 0,
                      "im: login of \"%V\" timed out waiting for redis",
                      &s->uid);
        ngx_http_im_ws_refuse_async(s, NGX_HTTP_SERVICE_UNAVAILABLE,
                                    NGX_HTTP_IM_ERR_UNAVAILABLE,
                                    "redis unavailable");
        return;
    }

    if (s->closing) {
        if (timedout || s->out_pos == s->out_len) {
            ngx_http_im_ws_finish(s);
        }
        return;
    }

    ngx_http_im_ws_heartbeat(s);
}


static void
ngx_http_im_ws_heartbeat(ngx_http_im_session_t *s)
{
    ngx_msec_t  idle, interval;

    interval = s->conf->ws_ping_interval;
    idle = ngx_current_msec - s->last_in;

    if (s->pinged && idle >= interval + s->conf->ws_timeout) {
        ngx_log_error(NGX_LOG_INFO, s->c->log, 0,
                      "im: websocket of \"%V\" silent for %M ms, closing",
                      &s->uid, idle);
        ngx_http_im_ws_close(s, 1001, "timeout");
        return;
    }

    if (idle >= interval) {
        if (!s->pinged) {
            ngx_http_im_ws_send(s, NGX_HTTP_IM_WS_OP_PING, NULL, 0);
            s->pinged = 1;
        }
        ngx_add_timer(&s->ping, interval + s->conf->ws_timeout - idle);
        return;
    }

    ngx_add_timer(&s->ping, interval - idle);
}


/* closes the connection now; the session cleanup does the rest */
static void
ngx_http_im_ws_finish(ngx_http_im_session_t *s)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;

    if (s->closed) {
        return;
    }

    r = s->r;
    c = s->c;

    if (r) {
        /* still logging in: the request owns the connection */
        ngx_http_finalize_request(r, NGX_HTTP_CLOSE);
        ngx_http_run_posted_requests(c);
        return;
    }

    ngx_http_im_session_end(s);
    ngx_http_close_connection(c);
}


/*
 * The worker is exiting: close every connection, so that nothing keeps
 * the old worker alive.  Upgraded sessions say goodbye in their cleanup.
 */
void
ngx_http_im_ws_shutdown(void)
{
    ngx_queue_t            *q;
    ngx_http_im_session_t  *s;

    while (!ngx_queue_empty(&ngx_http_im_worker->sessions)) {
        q = ngx_queue_head(&ngx_http_im_worker->sessions);
        s = ngx_queue_data(q, ngx_http_im_session_t, link);

        ngx_http_im_ws_finish(s);

        if (!ngx_queue_empty(&ngx_http_im_worker->sessions)
            && ngx_queue_head(&ngx_http_im_worker->sessions) == q)
        {
            /* cannot happen: finish closes synchronously */
            ngx_log_error(NGX_LOG_ALERT, ngx_http_im_worker->log, 0,
                          "im: session survived shutdown");
            ngx_queue_remove(q);
            ngx_queue_init(q);
        }
    }
}


/*
 * A session's connection is closing while the worker exits (reload,
 * quit): send Close 1001 where the socket takes it without waiting.
 */
void
ngx_http_im_ws_goodbye(ngx_http_im_session_t *s)
{
    u_char  frame[32];
    size_t  n;

    if (!s->upgraded || s->closing || s->out_pos != s->out_len
        || s->c->buffered || !(ngx_exiting || ngx_terminate))
    {
        return;
    }

    n = ngx_http_im_ws_close_payload(frame + 2, 1001, "going away");
    (void) ngx_http_im_ws_frame_header(frame, NGX_HTTP_IM_WS_OP_CLOSE, n);
    (void) s->c->send(s->c, frame, n + 2);
}


static ngx_str_t *
ngx_http_im_ws_dup(ngx_str_t *dst, ngx_str_t *src)
{
    dst->len = src->len;
    dst->data = ngx_alloc(src->len + 1, ngx_cycle->log);
    if (dst->data == NULL) {
        return NULL;
    }

    ngx_memcpy(dst->data, src->data, src->len);
    dst->data[src->len] = '\0';

    return dst;
}
