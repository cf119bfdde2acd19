
/*
 * ngx_im: the REST API (DESIGN.md 1.1).  One table of routes; every
 * answer is HTTP 200 with {"errCode","errMsg","errDlt","data"}.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_api.h"
#include "ngx_http_im_store.h"
#include "ngx_http_im_id.h"


static void ngx_http_im_api_body(ngx_http_request_t *r);
static void ngx_http_im_api_cleanup(void *data);
static void ngx_http_im_api_free_parts(ngx_http_im_api_t *api);
static void ngx_http_im_api_authorized(void *data, ngx_int_t err);
static ngx_uint_t ngx_http_im_api_rate_ok(ngx_http_im_api_t *api);
static ngx_int_t ngx_http_im_api_reply(ngx_http_request_t *r,
    ngx_int_t code, const char *msg, ngx_http_im_buf_t *data);
static ngx_http_im_route_t *ngx_http_im_api_route(ngx_http_request_t *r);
static ngx_http_im_route_t *ngx_http_im_api_route_at(ngx_uint_t i);

static ngx_uint_t ngx_http_im_api_route_index(ngx_http_im_route_t *rt);
static u_char *ngx_http_im_api_pb_body(ngx_http_im_api_t *api, u_char *pb,
    size_t *size, char *err, size_t len);
static ngx_int_t ngx_http_im_api_parse(ngx_http_im_api_t *api,
    char *err, size_t len);
static void ngx_http_im_admin_token(ngx_http_im_api_t *api);
static void ngx_http_im_user_token(ngx_http_im_api_t *api);
static void ngx_http_im_issue_token(ngx_http_im_api_t *api, ngx_str_t *uid,
    ngx_int_t platform, ngx_uint_t registered);
static void ngx_http_im_token_issued(void *data, ngx_int_t err);
static void ngx_http_im_user_register(ngx_http_im_api_t *api);
static void ngx_http_im_user_registered(void *data, ngx_int_t err);
static void ngx_http_im_parse_token(ngx_http_im_api_t *api);
static void ngx_http_im_token_parsed(void *data, ngx_int_t err);
static void ngx_http_im_force_logout(ngx_http_im_api_t *api);
static void ngx_http_im_users_info(ngx_http_im_api_t *api);
static void ngx_http_im_user_token_loaded(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n);
static void ngx_http_im_users_info_reply(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n);
static void ngx_http_im_online_status(ngx_http_im_api_t *api);
static void ngx_http_im_online_status_reply(void *data, ngx_int_t err,
    ngx_http_im_store_online_t *users, ngx_uint_t n);
static void ngx_http_im_users_status(ngx_http_im_api_t *api);
static void ngx_http_im_users_status_reply(void *data, ngx_int_t err,
    ngx_http_im_store_online_t *users, ngx_uint_t n);
static void ngx_http_im_subscribe_status(ngx_http_im_api_t *api);
static void ngx_http_im_online_tokens(ngx_http_im_api_t *api);
static void ngx_http_im_online_tokens_reply(void *data, ngx_int_t err,
    ngx_http_im_store_devices_t *users, ngx_uint_t n);
static void ngx_http_im_online_tokens_user(ngx_http_im_buf_t *b,
    ngx_http_im_store_devices_t *u);
static void ngx_http_im_push_token(ngx_http_im_api_t *api);
static void ngx_http_im_done_reply(void *data, ngx_int_t err);
static void ngx_http_im_send_msg(ngx_http_im_api_t *api);
static void ngx_http_im_send_msg_done(void *data, ngx_int_t err,
    ngx_http_im_buf_t *ack);
static void ngx_http_im_batch_send_msg(ngx_http_im_api_t *api);
static void ngx_http_im_batch_done(void *data, ngx_int_t err,
    ngx_http_im_buf_t *ack);
static void ngx_http_im_batch_finish(ngx_http_im_api_t *api);
static ngx_int_t ngx_http_im_api_msg(ngx_http_im_api_t *api,
    ngx_http_im_msg_t *m, ngx_http_im_send_t *opts, char *err,
    size_t errlen);
static ngx_int_t ngx_http_im_batch_issue(ngx_http_im_api_t *api,
    ngx_http_im_msg_t *m, ngx_http_im_send_t *opts);
static ngx_int_t ngx_http_im_api_push_class(ngx_http_im_msg_t *m,
    ngx_http_im_str_t *cls, ngx_http_im_send_t *opts);


static ngx_http_request_body_filter_pt  ngx_http_im_next_body_filter;


static ngx_http_im_route_t  ngx_http_im_routes[] = {

    { ngx_string("/auth/get_admin_token"), NGX_HTTP_IM_ACCESS_SECRET,
      ngx_http_im_admin_token, NULL },

    { ngx_string("/auth/get_user_token"), NGX_HTTP_IM_ACCESS_ADMIN,
      ngx_http_im_user_token, NULL },

    { ngx_string("/user/user_register"), NGX_HTTP_IM_ACCESS_ADMIN,
      ngx_http_im_user_register, NULL },

    { ngx_string("/auth/parse_token"), NGX_HTTP_IM_ACCESS_ADMIN,
      ngx_http_im_parse_token, NULL },

    { ngx_string("/auth/force_logout"), NGX_HTTP_IM_ACCESS_ADMIN,
      ngx_http_im_force_logout, NULL },

    { ngx_string("/user/get_users_info"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_users_info, NULL },

    { ngx_string("/user/get_users_online_status"), NGX_HTTP_IM_ACCESS_ADMIN,
      ngx_http_im_online_status, NULL },

    { ngx_string("/user/get_users_status"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_users_status, NULL },

    { ngx_string("/user/subscribe_users_status"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_subscribe_status, NULL },

    { ngx_string("/user/get_users_online_token_detail"),
      NGX_HTTP_IM_ACCESS_ADMIN, ngx_http_im_online_tokens, NULL },

    { ngx_string("/third/update_push_token"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_push_token, NULL },

    { ngx_string("/msg/send_msg"), NGX_HTTP_IM_ACCESS_ADMIN,
      ngx_http_im_send_msg, NULL },

    { ngx_string("/msg/batch_send_msg"), NGX_HTTP_IM_ACCESS_ADMIN,
      ngx_http_im_batch_send_msg, NULL },

    { ngx_string("/manager/send_msg"), NGX_HTTP_IM_ACCESS_ADMIN,
      ngx_http_im_send_msg, NULL },

    { ngx_null_string, 0, NULL, NULL }
};


/* every REST file's routes, in the order metrics count them */
static ngx_http_im_route_t  *ngx_http_im_route_tables[] = {
    ngx_http_im_routes, ngx_http_im_conv_routes, ngx_http_im_group_routes,
    ngx_http_im_friend_routes, ngx_http_im_user_routes,
    ngx_http_im_jssdk_routes, NULL
};


/* the content handler of an im_api location */
ngx_int_t
ngx_http_im_api_handler(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_http_im_loc_conf_t  *conf;
    ngx_http_im_api_body_t  *body;

    if (ngx_http_im_api_route(r) == NULL) {
        return NGX_HTTP_NOT_FOUND;
    }

    if (r->method != NGX_HTTP_POST) {
        rc = ngx_http_im_cors_preflight(r);
        return (rc == NGX_DECLINED) ? NGX_HTTP_NOT_ALLOWED : rc;
    }

    conf = ngx_http_get_module_loc_conf(r, ngx_http_im_module);

    if (r->headers_in.content_length_n > (off_t) conf->api_max_body) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "im api: body of %O bytes is over the %uz limit",
                      r->headers_in.content_length_n, conf->api_max_body);

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        return ngx_http_im_api_reply(r, NGX_HTTP_IM_ERR_ARGS,
                                     "request body too large", NULL);
    }

    body = ngx_pcalloc(r->pool, sizeof(ngx_http_im_api_body_t));
    if (body == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body->max = conf->api_max_body;
    ngx_http_set_ctx(r, body, ngx_http_im_module);

    r->request_body_in_single_buf = 1;

    rc = ngx_http_read_client_request_body(r, ngx_http_im_api_body);
    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static ngx_http_im_route_t *
ngx_http_im_api_route(ngx_http_request_t *r)
{
    u_char                    *p;
    size_t                     len;
    ngx_http_im_route_t       *rt;
    ngx_uint_t                 i;
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    if (r->uri.len < clcf->name.len) {
        return NULL;
    }

    /* the path after the location prefix, with or without its slash */
    p = r->uri.data + clcf->name.len;
    len = r->uri.len - clcf->name.len;

    if (len && p[0] != '/') {
        p--;
        len++;
    }

    for (i = 0; (rt = ngx_http_im_api_route_at(i)); i++) {
        if (rt->path.len == len && ngx_strncmp(rt->path.data, p, len) == 0) {
            return rt;
        }
    }

    return NULL;
}


/*
 * Route i of all tables: this file's, then those of the other REST files
 * (api_conv.c), so metrics count every route by one index.  NULL past
 * the last.
 */
static ngx_http_im_route_t *
ngx_http_im_api_route_at(ngx_uint_t i)
{
    ngx_uint_t            k, n;
    ngx_http_im_route_t  *t;

    for (k = 0; (t = ngx_http_im_route_tables[k]); k++) {
        for (n = 0; t[n].handler; n++) { /* void */ }

        if (i < n) {
            return &t[i];
        }

        i -= n;
    }

    return NULL;
}


/* the route of a path, for calls made of routes */
ngx_http_im_route_t *
ngx_http_im_api_route_find(const char *path)
{
    size_t                len;
    ngx_uint_t            i;
    ngx_http_im_route_t  *rt;

    len = ngx_strlen(path);

    for (i = 0; (rt = ngx_http_im_api_route_at(i)); i++) {
        if (rt->path.len == len
            && ngx_strncmp(rt->path.data, path, len) == 0)
        {
            return rt;
        }
    }

    return NULL;
}


static ngx_uint_t
ngx_http_im_api_route_index(ngx_http_im_route_t *rt)
{
    ngx_uint_t            k, n, base;
    ngx_http_im_route_t  *t;

    base = 0;

    for (k = 0; (t = ngx_http_im_route_tables[k]); k++) {
        for (n = 0; t[n].handler; n++) { /* void */ }

        if (rt >= t && rt < t + n) {
            return base + (rt - t);
        }

        base += n;
    }

    return 0;
}


static void
ngx_http_im_api_body(ngx_http_request_t *r)
{
    char                     err[256];
    ngx_int_t                rc;
    ngx_str_t                uid;
    ngx_pool_cleanup_t      *cln;
    ngx_http_im_api_t       *api;
    ngx_http_im_api_body_t  *body;

    if (ngx_http_im_worker == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_SERVICE_UNAVAILABLE);
        return;
    }

    body = ngx_http_get_module_ctx(r, ngx_http_im_module);
    if (body && body->too_large) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "im api: chunked body over the %O bytes limit",
                      body->max);
        ngx_http_finalize_request(r, ngx_http_im_api_reply(r,
                                  NGX_HTTP_IM_ERR_ARGS,
                                  "request body too large", NULL));
        return;
    }

    api = ngx_calloc(sizeof(ngx_http_im_api_t), r->connection->log);
    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (api == NULL || cln == NULL) {
        ngx_free(api);
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    cln->handler = ngx_http_im_api_cleanup;
    cln->data = api;
    api->cln = cln;
    ngx_queue_insert_tail(&ngx_http_im_worker->api_calls, &api->link);

    api->r = r;
    api->route = ngx_http_im_api_route(r);
    api->imcf = ngx_http_get_module_main_conf(r, ngx_http_im_module);
    ngx_http_im_buf_init(&api->data, 16 * 1024 * 1024);
    ngx_http_im_buf_init(&api->content, 1024 * 1024);
    ngx_http_im_buf_init(&api->failed, 1024 * 1024);

    rc = ngx_http_im_api_parse(api, err, sizeof(err));
    if (rc != NGX_OK) {
        ngx_http_im_api_finish(api, rc, err);
        return;
    }

    if (api->route->access == NGX_HTTP_IM_ACCESS_SECRET) {
        api->route->handler(api);
        return;
    }

    /* the token's signature is good: is it still in the registry? */
    uid.data = (u_char *) api->claims.user_id;
    uid.len = ngx_strlen(api->claims.user_id);

    if (ngx_http_im_store_token_check(&uid, &api->token,
                                      api->claims.platform_id
                                      != NGX_HTTP_IM_PLATFORM_ADMIN,
                                      ngx_http_im_api_authorized, api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


/*
 * Checks the headers and the token's signature and role, and parses the
 * body.  Returns NGX_OK or an error code, with err describing it.
 */
static ngx_int_t
ngx_http_im_api_parse(ngx_http_im_api_t *api, char *err, size_t len)
{
    u_char              *text, *p;
    size_t               size;
    ngx_int_t            rc;
    ngx_str_t            uid;
    ngx_table_elt_t     *h;
    ngx_chain_t         *cl;
    ngx_http_request_t  *r;

    r = api->r;

    h = ngx_http_im_header(r, "operationID", 11);
    if (h == NULL || h->value.len == 0) {
        ngx_cpystrn((u_char *) err, (u_char *) "header \"operationID\" is "
                    "required", len);
        return NGX_HTTP_IM_ERR_ARGS;
    }

    if (api->route->access != NGX_HTTP_IM_ACCESS_SECRET) {
        h = ngx_http_im_header(r, "token", 5);
        if (h == NULL || h->value.len == 0) {
            ngx_cpystrn((u_char *) err, (u_char *) "header \"token\" is "
                        "required", len);
            return NGX_HTTP_IM_ERR_TOKEN_NONE;
        }

        api->token = h->value;

        rc = ngx_http_im_token_verify(api->imcf->secret.data,
                                      api->imcf->secret.len,
                                      (char *) api->token.data,
                                      api->token.len, (long long) ngx_time(),
                                      &api->claims);
        if (rc != NGX_HTTP_IM_OK) {
            ngx_cpystrn((u_char *) err, (u_char *) ngx_http_im_errmsg(rc),
                        len);
            return rc;
        }

        uid.data = (u_char *) api->claims.user_id;
        uid.len = ngx_strlen(api->claims.user_id);

        if (api->route->access == NGX_HTTP_IM_ACCESS_ADMIN
            && (api->claims.platform_id != NGX_HTTP_IM_PLATFORM_ADMIN
                || !ngx_http_im_is_admin(api->imcf, &uid)))
        {
            ngx_cpystrn((u_char *) err, (u_char *) "an admin token is "
                        "required", len);
            return NGX_HTTP_IM_ERR_PERMISSION;
        }
    }

    if ((r->request_body == NULL || r->request_body->bufs == NULL)
        && api->route->pb == NULL)
    {
        ngx_cpystrn((u_char *) err, (u_char *) "a JSON object body is "
                    "required", len);
        return NGX_HTTP_IM_ERR_ARGS;
    }

    /* the body is in memory: the location's client_body_buffer_size is
     * raised to im_api_max_body at configuration time */
    size = 0;
    for (cl = r->request_body ? r->request_body->bufs : NULL; cl;
         cl = cl->next)
    {
        if (cl->buf->in_file) {
            ngx_cpystrn((u_char *) err, (u_char *) "request body too large",
                        len);
            return NGX_HTTP_IM_ERR_ARGS;
        }

        size += cl->buf->last - cl->buf->pos;
    }

    text = ngx_pnalloc(r->pool, size + 1);
    if (text == NULL) {
        return NGX_HTTP_IM_ERR_INTERNAL;
    }

    p = text;
    for (cl = r->request_body ? r->request_body->bufs : NULL; cl;
         cl = cl->next)
    {
        /* nginx ends a body with an empty buffer whose pos is NULL */
        if (cl->buf->last != cl->buf->pos) {
            p = ngx_cpymem(p, cl->buf->pos, cl->buf->last - cl->buf->pos);
        }
    }

    *p = '\0';

    if (api->route->pb) {
        text = ngx_http_im_api_pb_body(api, text, &size, err, len);
        if (text == NULL) {
            return NGX_HTTP_IM_ERR_ARGS;
        }
    }

    api->body.data = text;
    api->body.len = size;
    api->root = ngx_http_im_json_parse(text, size, err, len);
    if (api->root == NULL || !YAJL_IS_OBJECT(api->root)) {
        if (api->root) {
            ngx_cpystrn((u_char *) err, (u_char *) "the body must be a JSON "
                        "object", len);
        }

        p = (u_char *) ngx_strchr(err, '\n');
        if (p) {
            *p = '\0';
        }

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "im api: invalid JSON body: %s", err);
        return NGX_HTTP_IM_ERR_ARGS;
    }

    if (ngx_http_im_json_members_unique(api->root,
                                        NGX_HTTP_IM_API_MAX_FIELDS, err, len)
        != 0)
    {
        return NGX_HTTP_IM_ERR_ARGS;
    }

    return NGX_OK;
}


/*
 * A protobuf body of the route's message as the JSON text its handler
 * reads (in r->pool), or NULL with err ("invalid protobuf: ...").
 */
static u_char *
ngx_http_im_api_pb_body(ngx_http_im_api_t *api, u_char *pb, size_t *size,
    char *err, size_t len)
{
    u_char             *text;
    ngx_http_im_buf_t   json;

    ngx_http_im_buf_init(&json, NGX_HTTP_IM_API_MAX_BODY * 8 + 1024);

    if (ngx_http_im_pb_to_json(api->route->pb, pb, *size, &json, err, len)
        != 0)
    {
        ngx_log_error(NGX_LOG_INFO, api->r->connection->log, 0,
                      "im api: invalid protobuf body: %s", err);
        ngx_http_im_buf_free(&json);
        return NULL;
    }

    text = json.failed ? NULL : ngx_pnalloc(api->r->pool, json.len + 1);
    if (text == NULL) {
        ngx_cpystrn((u_char *) err, (u_char *) "request body too large",
                    len);
        ngx_http_im_buf_free(&json);
        return NULL;
    }

    ngx_memcpy(text, json.data, json.len);
    text[json.len] = '\0';
    *size = json.len;
    ngx_http_im_buf_free(&json);

    return text;
}


static void
ngx_http_im_api_authorized(void *data, ngx_int_t err)
{
    ngx_http_im_api_t  *api = data;

    ngx_connection_t  *c;

    if (api->cancelled) {
        ngx_http_im_api_answer(api, 0, NULL);
        return;
    }

    if (err) {
        ngx_http_im_api_answer(api, err, NULL);
        return;
    }

    if (!ngx_http_im_api_rate_ok(api)) {
        ngx_http_im_api_answer(api, NGX_HTTP_IM_ERR_RATE,
                               "too many requests: slow down");
        return;
    }

    c = api->r->connection;
    api->route->handler(api);
    ngx_http_run_posted_requests(c);
}


/*
 * im_api_rate, per user token on this worker (admin tokens are the
 * operator's own systems: not limited).  The buckets are a fixed table
 * by a hash of the user ID; a user that takes over another's slot starts
 * with a full bucket, which errs on the side of the client.
 */
static ngx_uint_t
ngx_http_im_api_rate_ok(ngx_http_im_api_t *api)
{
    size_t                   len;
    uint32_t                 key;
    ngx_http_im_bucket_t    *b;
    ngx_http_im_loc_conf_t  *conf;

    if (api->route->access == NGX_HTTP_IM_ACCESS_SECRET
        || api->claims.platform_id == NGX_HTTP_IM_PLATFORM_ADMIN)
    {
        return 1;
    }

    conf = ngx_http_get_module_loc_conf(api->r, ngx_http_im_module);
    len = ngx_strlen(api->claims.user_id);
    key = ngx_crc32_short((u_char *) api->claims.user_id, len);
    b = &ngx_http_im_worker->api_buckets[key % NGX_HTTP_IM_API_BUCKETS];

    if (b->used && b->key != key) {
        b->used = 0;
    }

    b->key = key;

    if (ngx_http_im_bucket_take(b, (uint64_t) ngx_current_msec,
                                conf->api_rate, conf->api_burst))
    {
        return 1;
    }

    ngx_log_error(NGX_LOG_INFO, api->r->connection->log, 0,
                  "im api: \"%s\" is over im_api_rate",
                  api->claims.user_id);

    return 0;
}


/* the request is gone; a pending reply frees the call */
static void
ngx_http_im_api_cleanup(void *data)
{
    ngx_http_im_api_t  *api = data;

    api->cancelled = 1;
}


static void
ngx_http_im_api_free_parts(ngx_http_im_api_t *api)
{
    ngx_queue_remove(&api->link);

    if (api->root) {
        yajl_tree_free(api->root);
    }

    ngx_http_im_buf_free(&api->data);
    ngx_http_im_buf_free(&api->content);
    ngx_http_im_buf_free(&api->failed);
    ngx_free(api->items);
    ngx_free(api->users);

    if (api->cleanup) {
        api->cleanup(api);
    }
}


/* answers from a Redis callback, then runs what the answer posted */
void
ngx_http_im_api_answer(ngx_http_im_api_t *api, ngx_int_t code,
    const char *msg)
{
    ngx_connection_t  *c;

    if (api->cancelled) {
        ngx_http_im_api_free_parts(api);
        ngx_free(api);
        return;
    }

    c = api->r->connection;
    ngx_http_im_api_finish(api, code, msg);
    ngx_http_run_posted_requests(c);
}


/* sends the answer (code 0: with api->data) and frees the call */
void
ngx_http_im_api_finish(ngx_http_im_api_t *api, ngx_int_t code,
    const char *msg)
{
    ngx_int_t              rc;
    ngx_http_request_t    *r;
    ngx_http_im_route_pt   then;

    r = api->r;

    /* a step of a call made of routes succeeded: the call goes on */
    if (code == 0 && api->then) {
        then = api->then;
        api->then = NULL;
        then(api);
        return;
    }

    api->then = NULL;

    if (code) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "im api: %V answered %i: %s", &r->uri, code,
                      msg ? msg : ngx_http_im_errmsg(code));
    }

    ngx_http_im_metric_rest(ngx_http_im_api_route_index(api->route), code);

    rc = ngx_http_im_api_reply(r, code, msg ? msg : ngx_http_im_errmsg(code),
                               code ? NULL : &api->data);

    ngx_http_im_api_free_parts(api);

    /* the pool cleanup must not touch the call any more */
    api->cln->handler = NULL;
    ngx_free(api);

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_http_im_api_reply(ngx_http_request_t *r, ngx_int_t code,
    const char *msg, ngx_http_im_buf_t *data)
{
    ngx_http_im_buf_t  *b;

    b = &ngx_http_im_worker->scratch;
    ngx_http_im_buf_reset(b);

    ngx_http_im_buf_str(b, "{\"errCode\":");
    ngx_http_im_buf_int(b, code);
    ngx_http_im_buf_str(b, ",\"errMsg\":");
    ngx_http_im_buf_json_str(b, msg, ngx_strlen(msg));
    ngx_http_im_buf_str(b, ",\"errDlt\":\"\",\"data\":");

    if (data && data->len) {
        ngx_http_im_buf_add(b, data->data, data->len);

    } else {
        ngx_http_im_buf_str(b, "{}");
    }

    ngx_http_im_buf_str(b, "}");

    return ngx_http_im_send_json(r, NGX_HTTP_OK, b);
}


/* /auth/get_admin_token {secret, userID} */
static void
ngx_http_im_admin_token(ngx_http_im_api_t *api)
{
    char               err[128];
    ngx_str_t          uid;
    ngx_http_im_str_t  secret, id;

    if (ngx_http_im_json_get_str(api->root, "secret", 1, &secret, err,
                                 sizeof(err)) != 0
        || ngx_http_im_json_get_str(api->root, "userID", 1, &id, err,
                                    sizeof(err)) != 0)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, err);
        return;
    }

    uid.data = (u_char *) id.data;
    uid.len = id.len;

    if (secret.len != api->imcf->secret.len
        || CRYPTO_memcmp(secret.data, api->imcf->secret.data, secret.len)
        || !ngx_http_im_is_admin(api->imcf, &uid))
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_PERMISSION,
                               "wrong secret or not an admin userID");
        return;
    }

    ngx_http_im_issue_token(api, &uid, NGX_HTTP_IM_PLATFORM_ADMIN, 0);
}


/* /auth/get_user_token {userID, platformID} */
static void
ngx_http_im_user_token(ngx_http_im_api_t *api)
{
    char               err[128];
    long long          platform;
    ngx_str_t          uid;
    ngx_http_im_str_t  id;

    if (ngx_http_im_json_get_str(api->root, "userID", 1, &id, err,
                                 sizeof(err)) != 0
        || ngx_http_im_json_get_int(api->root, "platformID", 1, &platform,
                                    err, sizeof(err)) != 0)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, err);
        return;
    }

    if (!ngx_http_im_user_id_valid(id.data, id.len)) {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS,
                               "field \"userID\" is not a valid user ID");
        return;
    }

    if (platform < 1 || platform > 11
        || platform == NGX_HTTP_IM_PLATFORM_ADMIN)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS,
                               "field \"platformID\" must be 1..11, not 10");
        return;
    }

    uid.data = (u_char *) id.data;
    uid.len = id.len;
    api->platform = (ngx_int_t) platform;

    /* the user first: one this Redis lost is loaded from MongoDB */
    api->users = ngx_alloc(sizeof(ngx_str_t), ngx_cycle->log);
    if (api->users == NULL) {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    api->users[0] = uid;
    api->nusers = 1;

    if (ngx_http_im_store_users_info(api->users, 1,
                                     ngx_http_im_user_token_loaded, api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static void
ngx_http_im_user_token_loaded(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n)
{
    ngx_http_im_api_t  *api = data;

    if (api->cancelled) {
        ngx_http_im_api_answer(api, 0, NULL);
        return;
    }

    if (err || n != 1 || !users[0].found) {
        ngx_http_im_api_answer(api, err ? err : NGX_HTTP_IM_ERR_USER_ID,
                               NULL);
        return;
    }

    /* answered through ngx_http_im_token_issued(), or finished here */
    ngx_http_im_issue_token(api, &api->users[0], api->platform, 1);
}


static void
ngx_http_im_issue_token(ngx_http_im_api_t *api, ngx_str_t *uid,
    ngx_int_t platform, ngx_uint_t registered)
{
    size_t     n;
    time_t     now;
    ngx_str_t  token;

    now = ngx_time();
    api->platform = platform;
    api->expire = api->imcf->token_expire;

    n = ngx_http_im_token_issue(api->imcf->secret.data,
                                api->imcf->secret.len, (char *) uid->data,
                                uid->len, (int) platform, (long long) now,
                                (long long) api->expire, api->token_out,
                                sizeof(api->token_out));
    if (n == 0) {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    token.data = (u_char *) api->token_out;
    token.len = n;

    if (ngx_http_im_store_token_save(uid, &token, platform, now,
                                     api->expire, registered,
                                     ngx_http_im_token_issued, api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static void
ngx_http_im_token_issued(void *data, ngx_int_t err)
{
    ngx_http_im_api_t  *api = data;

    if (err) {
        ngx_http_im_api_answer(api, err, NULL);
        return;
    }

    ngx_http_im_buf_str(&api->data, "{\"token\":");
    ngx_http_im_buf_json_str(&api->data, api->token_out,
                             ngx_strlen(api->token_out));
    ngx_http_im_buf_str(&api->data, ",\"expireTimeSeconds\":");
    ngx_http_im_buf_int(&api->data, api->expire);
    ngx_http_im_buf_str(&api->data, "}");

    ngx_http_im_api_answer(api, 0, NULL);
}


/* /user/user_register {users:[{userID, nickname, faceURL, ex}]} */
static void
ngx_http_im_user_register(ngx_http_im_api_t *api)
{
    char                       err[128];
    ngx_uint_t                 i, j, k, n;
    yajl_val                   users, u;
    ngx_http_im_str_t          f[4];
    ngx_http_im_store_user_t  *list;

    users = ngx_http_im_json_get(api->root, "users");

    if (users == NULL || !YAJL_IS_ARRAY(users) || users->u.array.len == 0
        || users->u.array.len > NGX_HTTP_IM_MAX_REGISTER)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS,
                               "field \"users\" must be an array of "
                               "1..1000 users");
        return;
    }

    n = users->u.array.len;

    list = ngx_alloc(n * sizeof(ngx_http_im_store_user_t), ngx_cycle->log);
    if (list == NULL) {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    for (i = 0; i < n; i++) {
        u = users->u.array.values[i];

        if (!YAJL_IS_OBJECT(u)
            || ngx_http_im_json_get_str(u, "userID", 1, &f[0], err,
                                        sizeof(err)) != 0
            || ngx_http_im_json_get_str(u, "nickname", 0, &f[1], err,
                                        sizeof(err)) != 0
            || ngx_http_im_json_get_str(u, "faceURL", 0, &f[2], err,
                                        sizeof(err)) != 0
            || ngx_http_im_json_get_str(u, "ex", 0, &f[3], err,
                                        sizeof(err)) != 0)
        {
            ngx_free(list);
            ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS,
                                   YAJL_IS_OBJECT(u) ? err
                                   : "field \"users\" must hold objects");
            return;
        }

        if (!ngx_http_im_user_id_valid(f[0].data, f[0].len)) {
            ngx_free(list);
            ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS,
                                   "field \"userID\" must be 1..64 of "
                                   "A-Z a-z 0-9 . @ + -");
            return;
        }

        for (j = 0; j < i; j++) {
            if (list[j].user_id.len == f[0].len
                && ngx_strncmp(list[j].user_id.data, f[0].data, f[0].len)
                   == 0)
            {
                ngx_free(list);
                ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS,
                                       "a userID appears twice in "
                                       "\"users\"");
                return;
            }
        }

        for (k = 0; k < 4; k++) {
            if (f[k].data == NULL) {
                f[k].data = "";
                f[k].len = 0;
            }
        }

        list[i].user_id.data = (u_char *) f[0].data;
        list[i].user_id.len = f[0].len;
        list[i].nickname.data = (u_char *) f[1].data;
        list[i].nickname.len = f[1].len;
        list[i].face_url.data = (u_char *) f[2].data;
        list[i].face_url.len = f[2].len;
        list[i].ex.data = (u_char *) f[3].data;
        list[i].ex.len = f[3].len;
    }

    if (ngx_http_im_store_users_register(list, n,
                                         (long long) ngx_time() * 1000,
                                         ngx_http_im_user_registered, api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }

    ngx_free(list);
}


static void
ngx_http_im_user_registered(void *data, ngx_int_t err)
{
    ngx_http_im_api_t  *api = data;

    if (err && err != NGX_HTTP_IM_ERR_REGISTERED) {
        ngx_http_im_api_answer(api, err, NULL);
        return;
    }

    if (err) {
        ngx_http_im_api_answer(api, NGX_HTTP_IM_ERR_REGISTERED,
                               "a userID is already registered");
        return;
    }

    ngx_http_im_api_answer(api, 0, NULL);
}



/* /auth/parse_token {token} */
static void
ngx_http_im_parse_token(ngx_http_im_api_t *api)
{
    char                err[128];
    ngx_int_t           rc;
    ngx_str_t           t, uid;
    ngx_http_im_str_t   token;

    if (ngx_http_im_json_get_str(api->root, "token", 1, &token, err,
                                 sizeof(err)) != 0)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, err);
        return;
    }

    rc = ngx_http_im_token_verify(api->imcf->secret.data,
                                  api->imcf->secret.len, token.data,
                                  token.len, (long long) ngx_time(),
                                  &api->claims);
    if (rc != NGX_HTTP_IM_OK) {
        ngx_http_im_api_finish(api, rc, NULL);
        return;
    }

    t.data = (u_char *) token.data;
    t.len = token.len;
    uid.data = (u_char *) api->claims.user_id;
    uid.len = ngx_strlen(api->claims.user_id);

    if (ngx_http_im_store_token_check(&uid, &t,
                                      api->claims.platform_id
                                      != NGX_HTTP_IM_PLATFORM_ADMIN,
                                      ngx_http_im_token_parsed, api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static void
ngx_http_im_token_parsed(void *data, ngx_int_t err)
{
    ngx_http_im_api_t  *api = data;

    ngx_http_im_buf_t  *b;

    if (err) {
        ngx_http_im_api_answer(api, err, NULL);
        return;
    }

    b = &api->data;
    ngx_http_im_buf_str(b, "{\"userID\":");
    ngx_http_im_buf_json_str(b, api->claims.user_id,
                             ngx_strlen(api->claims.user_id));
    ngx_http_im_buf_str(b, ",\"platformID\":");
    ngx_http_im_buf_int(b, api->claims.platform_id);
    ngx_http_im_buf_str(b, ",\"expireTimeSeconds\":");
    ngx_http_im_buf_int(b, api->claims.exp);
    ngx_http_im_buf_str(b, "}");

    ngx_http_im_api_answer(api, 0, NULL);
}


/*
 * /auth/force_logout {userID, platformID}: the platform's tokens are
 * marked kicked, then every host closes that platform's sessions with
 * 2002 (a "k" delivery on the user's channel, queued right behind).
 */
static void
ngx_http_im_force_logout(ngx_http_im_api_t *api)
{
    char               err[128];
    long long          platform;
    ngx_str_t          uid;
    ngx_http_im_str_t  id;

    if (ngx_http_im_json_get_str(api->root, "userID", 1, &id, err,
                                 sizeof(err)) != 0
        || ngx_http_im_json_get_int(api->root, "platformID", 1, &platform,
                                    err, sizeof(err)) != 0)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, err);
        return;
    }

    if (!ngx_http_im_user_id_valid(id.data, id.len)
        || platform < 1 || platform > 11)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS,
                               "a valid userID and platformID 1..11 "
                               "are required");
        return;
    }

    uid.data = (u_char *) id.data;
    uid.len = id.len;

    if (ngx_http_im_store_token_kick(&uid, (ngx_int_t) platform,
                                     ngx_http_im_done_reply, api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


/* a reply that only says "done" */
static void
ngx_http_im_done_reply(void *data, ngx_int_t err)
{
    ngx_http_im_api_t  *api = data;

    ngx_http_im_api_answer(api, err, NULL);
}


/*
 * The body's "userIDs" (1..1000 valid IDs) in api->users.  Answers the
 * call itself on bad input and returns NULL.
 */
ngx_str_t *
ngx_http_im_api_user_ids(ngx_http_im_api_t *api)
{
    return ngx_http_im_api_user_ids_of(api,
                                       ngx_http_im_json_get(api->root,
                                                            "userIDs"),
                                       "userIDs");
}


/* the same for the list ids, the body's field "name" */
ngx_str_t *
ngx_http_im_api_user_ids_of(ngx_http_im_api_t *api, yajl_val ids,
    const char *name)
{
    u_char       msg[128];
    ngx_uint_t   i, n;
    yajl_val     v;

    if (ids == NULL || !YAJL_IS_ARRAY(ids) || ids->u.array.len == 0
        || ids->u.array.len > NGX_HTTP_IM_MAX_REGISTER)
    {
        ngx_snprintf(msg, sizeof(msg), "field \"%s\" must be an array of "
                     "1..1000 user IDs%Z", name);
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, (char *) msg);
        return NULL;
    }

    n = ids->u.array.len;

    api->users = ngx_alloc(n * sizeof(ngx_str_t), ngx_cycle->log);
    if (api->users == NULL) {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return NULL;
    }

    for (i = 0; i < n; i++) {
        v = ids->u.array.values[i];

        if (!YAJL_IS_STRING(v) || v->u.string == NULL
            || !ngx_http_im_user_id_valid(v->u.string,
                                          ngx_strlen(v->u.string)))
        {
            ngx_snprintf(msg, sizeof(msg), "field \"%s\" holds an invalid "
                         "user ID%Z", name);
            ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, (char *) msg);
            return NULL;
        }

        api->users[i].data = (u_char *) v->u.string;
        api->users[i].len = ngx_strlen(v->u.string);
    }

    api->nusers = n;

    return api->users;
}


/* /user/get_users_info {userIDs} */
static void
ngx_http_im_users_info(ngx_http_im_api_t *api)
{
    if (ngx_http_im_api_user_ids(api) == NULL) {
        return;
    }

    if (ngx_http_im_store_users_info(api->users, api->nusers,
                                     ngx_http_im_users_info_reply, api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static void
ngx_http_im_users_info_reply(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n)
{
    ngx_http_im_api_t  *api = data;

    ngx_uint_t          i, count;
    ngx_http_im_buf_t  *b;

    if (err || api->cancelled) {
        ngx_http_im_api_answer(api, err, NULL);
        return;
    }

    b = &api->data;
    ngx_http_im_buf_str(b, "{\"usersInfo\":[");

    count = 0;
    for (i = 0; i < n; i++) {
        if (!users[i].found) {
            continue;
        }

        ngx_http_im_buf_str(b, count++ ? "," : "");
        ngx_http_im_user_json(b, &users[i]);
    }

    ngx_http_im_buf_str(b, "]}");
    ngx_http_im_api_answer(api, 0, NULL);
}


ngx_str_t
ngx_http_im_api_str(yajl_val v)
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


/* a user's profile as OpenIM's userInfo */
void
ngx_http_im_user_json(ngx_http_im_buf_t *b, ngx_http_im_store_user_t *u)
{
    ngx_http_im_buf_str(b, "{\"userID\":");
    ngx_http_im_buf_json_str(b, (char *) u->user_id.data, u->user_id.len);
    ngx_http_im_buf_str(b, ",\"nickname\":");
    ngx_http_im_buf_json_str(b, (char *) u->nickname.data, u->nickname.len);
    ngx_http_im_buf_str(b, ",\"faceURL\":");
    ngx_http_im_buf_json_str(b, (char *) u->face_url.data, u->face_url.len);
    ngx_http_im_buf_str(b, ",\"ex\":");
    ngx_http_im_buf_json_str(b, (char *) u->ex.data, u->ex.len);
    ngx_http_im_buf_str(b, ",\"createTime\":");
    ngx_http_im_buf_int(b, u->create_time);
    ngx_http_im_buf_str(b, "}");
}


/* /user/get_users_online_status {userIDs} */
static void
ngx_http_im_online_status(ngx_http_im_api_t *api)
{
    if (ngx_http_im_api_user_ids(api) == NULL) {
        return;
    }

    if (ngx_http_im_store_users_online(api->users, api->nusers,
                                       ngx_http_im_online_status_reply, api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static void
ngx_http_im_online_status_reply(void *data, ngx_int_t err,
    ngx_http_im_store_online_t *users, ngx_uint_t n)
{
    ngx_http_im_api_t  *api = data;

    ngx_uint_t          i, j;
    ngx_http_im_buf_t  *b;

    if (err || api->cancelled) {
        ngx_http_im_api_answer(api, err, NULL);
        return;
    }

    b = &api->data;
    ngx_http_im_buf_str(b, "{\"statusList\":[");

    for (i = 0; i < n; i++) {
        ngx_http_im_buf_str(b, i ? ",{\"userID\":" : "{\"userID\":");
        ngx_http_im_buf_json_str(b, (char *) users[i].user_id.data,
                                 users[i].user_id.len);
        ngx_http_im_buf_str(b, users[i].nplatforms
                               ? ",\"status\":\"online\""
                               : ",\"status\":\"offline\"");
        ngx_http_im_buf_str(b, ",\"detailPlatformStatus\":[");

        for (j = 0; j < users[i].nplatforms; j++) {
            ngx_http_im_buf_str(b, j ? ",{\"platformID\":"
                                     : "{\"platformID\":");
            ngx_http_im_buf_int(b, users[i].platforms[j]);
            ngx_http_im_buf_str(b, ",\"status\":\"online\"}");
        }

        ngx_http_im_buf_str(b, "]}");
    }

    ngx_http_im_buf_str(b, "]}");
    ngx_http_im_api_answer(api, 0, NULL);
}


/*
 * /user/get_users_status {userID, userIDs} ->
 * {statusList: [{userID, status: 0|1, platformIDs}]} (OpenIM's shape;
 * userID, the asker, is not needed)
 */
static void
ngx_http_im_users_status(ngx_http_im_api_t *api)
{
    char               err[128];
    ngx_http_im_str_t  id;

    if (ngx_http_im_json_get_str(api->root, "userID", 0, &id, err,
                                 sizeof(err)) != 0)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, err);
        return;
    }

    if (ngx_http_im_api_user_ids(api) == NULL) {
        return;
    }

    if (ngx_http_im_store_users_online(api->users, api->nusers,
                                       ngx_http_im_users_status_reply, api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static void
ngx_http_im_users_status_reply(void *data, ngx_int_t err,
    ngx_http_im_store_online_t *users, ngx_uint_t n)
{
    ngx_http_im_api_t  *api = data;

    ngx_uint_t          i, j;
    ngx_http_im_buf_t  *b;

    if (err || api->cancelled) {
        ngx_http_im_api_answer(api, err, NULL);
        return;
    }

    b = &api->data;
    ngx_http_im_buf_str(b, "{\"statusList\":[");

    for (i = 0; i < n; i++) {
        ngx_http_im_buf_str(b, i ? ",{\"userID\":" : "{\"userID\":");
        ngx_http_im_buf_json_str(b, (char *) users[i].user_id.data,
                                 users[i].user_id.len);
        ngx_http_im_buf_str(b, users[i].nplatforms ? ",\"status\":1"
                                                   : ",\"status\":0");
        ngx_http_im_buf_str(b, ",\"platformIDs\":[");

        for (j = 0; j < users[i].nplatforms; j++) {
            if (j) {
                ngx_http_im_buf_str(b, ",");
            }
            ngx_http_im_buf_int(b, users[i].platforms[j]);
        }

        ngx_http_im_buf_str(b, "]}");
    }

    ngx_http_im_buf_str(b, "]}");
    ngx_http_im_api_answer(api, 0, NULL);
}


/*
 * /user/subscribe_users_status {userID, userIDs, genre}: genre 1 makes
 * every open WebSocket session of userID, on every host, watch userIDs
 * (as 2005 would), 2 stops it.  A user token acts for its own user only.
 */
static void
ngx_http_im_subscribe_status(ngx_http_im_api_t *api)
{
    char               err[128];
    long long          genre;
    ngx_str_t          uid;
    ngx_http_im_str_t  id;

    if (ngx_http_im_json_get_str(api->root, "userID", 1, &id, err,
                                 sizeof(err)) != 0
        || ngx_http_im_json_get_int(api->root, "genre", 1, &genre, err,
                                    sizeof(err)) != 0)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, err);
        return;
    }

    if (!ngx_http_im_user_id_valid(id.data, id.len)
        || (genre != 1 && genre != 2))
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS,
                               "a valid userID and genre 1 (subscribe) "
                               "or 2 (unsubscribe) are required");
        return;
    }

    if (api->claims.platform_id != NGX_HTTP_IM_PLATFORM_ADMIN
        && (id.len != ngx_strlen(api->claims.user_id)
            || ngx_strncmp(id.data, api->claims.user_id, id.len) != 0))
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_PERMISSION,
                               "a user token may act for its own user "
                               "only");
        return;
    }

    if (ngx_http_im_api_user_ids(api) == NULL) {
        return;
    }

    uid.data = (u_char *) id.data;
    uid.len = id.len;

    if (ngx_http_im_store_watch_line(&uid, genre == 1, api->users,
                                     api->nusers, ngx_http_im_done_reply,
                                     api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


/*
 * /user/get_users_online_token_detail {userIDs} ->
 * {users: [{userID, platforms: [{platformID, total, tokens}]}]}: the
 * tokens of each user's open sessions, by platform: one per session
 * (two tabs sharing a token list it twice), total their count.
 */
static void
ngx_http_im_online_tokens(ngx_http_im_api_t *api)
{
    if (ngx_http_im_api_user_ids(api) == NULL) {
        return;
    }

    if (ngx_http_im_store_users_devices(api->users, api->nusers,
                                        ngx_http_im_online_tokens_reply,
                                        api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static void
ngx_http_im_online_tokens_reply(void *data, ngx_int_t err,
    ngx_http_im_store_devices_t *users, ngx_uint_t n)
{
    ngx_http_im_api_t  *api = data;

    ngx_uint_t          i;
    ngx_http_im_buf_t  *b;

    if (err || api->cancelled) {
        ngx_http_im_api_answer(api, err, NULL);
        return;
    }

    b = &api->data;
    ngx_http_im_buf_str(b, "{\"users\":[");

    for (i = 0; i < n; i++) {
        ngx_http_im_buf_str(b, i ? ",{\"userID\":" : "{\"userID\":");
        ngx_http_im_buf_json_str(b, (char *) users[i].user_id.data,
                                 users[i].user_id.len);
        ngx_http_im_buf_str(b, ",\"platforms\":[");
        ngx_http_im_online_tokens_user(b, &users[i]);
        ngx_http_im_buf_str(b, "]}");
    }

    ngx_http_im_buf_str(b, "]}");
    ngx_http_im_api_answer(api, 0, NULL);
}


/* a user's platforms in ID order, each with its sessions' tokens */
static void
ngx_http_im_online_tokens_user(ngx_http_im_buf_t *b,
    ngx_http_im_store_devices_t *u)
{
    ngx_int_t                    p;
    ngx_uint_t                   i, total, out;
    ngx_http_im_store_device_t  *d;

    out = 0;

    for (p = NGX_HTTP_IM_PLATFORM_MIN; p <= NGX_HTTP_IM_PLATFORM_MAX; p++) {
        total = 0;

        for (i = 0; i < u->ndevices; i++) {
            d = &u->devices[i];
            if (d->platform != p) {
                continue;
            }

            if (total++ == 0) {
                ngx_http_im_buf_str(b, out++ ? ",{\"platformID\":"
                                             : "{\"platformID\":");
                ngx_http_im_buf_int(b, p);
                ngx_http_im_buf_str(b, ",\"tokens\":[");

            } else {
                ngx_http_im_buf_str(b, ",");
            }

            ngx_http_im_buf_json_str(b, (char *) d->token.data,
                                     d->token.len);
        }

        if (total) {
            ngx_http_im_buf_str(b, "],\"total\":");
            ngx_http_im_buf_int(b, total);
            ngx_http_im_buf_str(b, "}");
        }
    }
}


/*
 * /third/update_push_token {platformID, token}: the device token a push
 * gateway uses to reach this user on that platform; offline-push jobs
 * carry it.
 */
static void
ngx_http_im_push_token(ngx_http_im_api_t *api)
{
    char               err[128];
    long long          platform;
    ngx_str_t          uid, t;
    ngx_http_im_str_t  token;

    if (ngx_http_im_json_get_int(api->root, "platformID", 1, &platform, err,
                                 sizeof(err)) != 0
        || ngx_http_im_json_get_str(api->root, "token", 1, &token, err,
                                    sizeof(err)) != 0)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, err);
        return;
    }

    if (platform < 1 || platform > 11 || token.len == 0 || token.len > 4096)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS,
                               "platformID must be 1..11 and token "
                               "1..4096 bytes");
        return;
    }

    uid.data = (u_char *) api->claims.user_id;
    uid.len = ngx_strlen(api->claims.user_id);
    t.data = (u_char *) token.data;
    t.len = token.len;

    if (ngx_http_im_store_push_token(&uid, (ngx_int_t) platform, &t,
                                     ngx_http_im_done_reply, api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}



/*
 * Reads a message in OpenIM v3's REST shape (also the seed's
 * /manager/send_msg shape) into m and opts: "content" is an object there,
 * turned into the string MsgData carries.  ngx_http_im_msg_send() checks
 * the message, as it checks one from a WebSocket.  Returns 0 or an error
 * code with err.
 */
static ngx_int_t
ngx_http_im_api_msg(ngx_http_im_api_t *api, ngx_http_im_msg_t *m,
    ngx_http_im_send_t *opts, char *err, size_t errlen)
{
    int                      online, no_push;
    long long                type;
    yajl_val                 content, *slot;
    ngx_uint_t               i;
    ngx_http_im_str_t        cls;
    struct yajl_val_s        text;
    ngx_http_im_loc_conf_t  *conf;

    if (ngx_http_im_json_get_int(api->root, "contentType", 1, &type, err,
                                 errlen) != 0
        || ngx_http_im_json_get_object(api->root, "content", 1, &content,
                                       err, errlen) != 0
        || ngx_http_im_json_get_bool(api->root, "isOnlineOnly", 0, &online,
                                     err, errlen) != 0
        || ngx_http_im_json_get_bool(api->root, "notOfflinePush", 0,
                                     &no_push, err, errlen) != 0
        || ngx_http_im_json_get_str(api->root, "pushClass", 0, &cls, err,
                                    errlen) != 0)
    {
        return NGX_HTTP_IM_ERR_ARGS;
    }

    ngx_http_im_buf_reset(&api->content);
    ngx_http_im_buf_json_val(&api->content, content);
    ngx_http_im_buf_add(&api->content, "", 1);

    if (api->content.failed) {
        ngx_cpystrn((u_char *) err, (u_char *) "field \"content\" is over "
                    "the size limit (im_max_content)", errlen);
        return NGX_HTTP_IM_ERR_ARGS;
    }

    /* MsgData carries content as a string: let the MsgData reader see the
     * serialized object in its place */
    text.type = yajl_t_string;
    text.u.string = (char *) api->content.data;
    slot = NULL;

    for (i = 0; i < api->root->u.object.len; i++) {
        if (ngx_strcmp(api->root->u.object.keys[i], "content") == 0) {
            slot = &api->root->u.object.values[i];
            break;
        }
    }

    *slot = &text;
    i = ngx_http_im_msg_from_json(api->root, m, err, errlen);
    *slot = content;

    if (i != 0) {
        return NGX_HTTP_IM_ERR_ARGS;
    }

    if (type == 1400) {
        /* OA notifications gather in the notification conversation */
        m->session_type = 4;
    }

    if (ngx_http_im_api_push_class(m, &cls, opts) != NGX_OK) {
        ngx_http_im_msg_free(m);
        ngx_cpystrn((u_char *) err, (u_char *) "field \"pushClass\" must be "
                    "im, notification, order or marketing", errlen);
        return NGX_HTTP_IM_ERR_ARGS;
    }

    conf = ngx_http_get_module_loc_conf(api->r, ngx_http_im_module);

    m->msg_from = 200;
    m->max_content = conf->max_content;

    opts->online_only = online;
    opts->offline_push = !no_push && !online
                         && ngx_http_im_msg_option(m, "offlinePush");

    return 0;
}


/* "pushClass": one of four, by default after the sessionType */
static ngx_int_t
ngx_http_im_api_push_class(ngx_http_im_msg_t *m, ngx_http_im_str_t *cls,
    ngx_http_im_send_t *opts)
{
    if (cls->len == 0) {
        if (m->session_type == 4) {
            ngx_str_set(&opts->push_class, "notification");

        } else {
            ngx_str_set(&opts->push_class, "im");
        }

        return NGX_OK;
    }

    if ((cls->len == 2 && ngx_strncmp(cls->data, "im", 2) == 0)
        || (cls->len == 12
            && ngx_strncmp(cls->data, "notification", 12) == 0)
        || (cls->len == 5 && ngx_strncmp(cls->data, "order", 5) == 0)
        || (cls->len == 9 && ngx_strncmp(cls->data, "marketing", 9) == 0))
    {
        opts->push_class.data = (u_char *) cls->data;
        opts->push_class.len = cls->len;
        return NGX_OK;
    }

    return NGX_ERROR;
}


/* /msg/send_msg (OpenIM v3) and /manager/send_msg (the seed format) */
static void
ngx_http_im_send_msg(ngx_http_im_api_t *api)
{
    char                 err[256];
    ngx_int_t            rc;
    const char          *errmsg;
    ngx_http_im_msg_t    m;
    ngx_http_im_send_t   opts;

    ngx_memzero(&opts, sizeof(ngx_http_im_send_t));

    rc = ngx_http_im_api_msg(api, &m, &opts, err, sizeof(err));
    if (rc != 0) {
        ngx_http_im_api_finish(api, rc, err);
        return;
    }

    opts.done = ngx_http_im_send_msg_done;
    opts.data = api;

    rc = ngx_http_im_msg_send(&m, NULL, &opts);

    errmsg = (rc == NGX_HTTP_IM_ERR_ARGS) ? ngx_http_im_msg_check(&m) : NULL;

    ngx_http_im_msg_free(&m);

    if (rc != 0) {
        ngx_http_im_api_finish(api, rc, errmsg);
    }
}


static void
ngx_http_im_send_msg_done(void *data, ngx_int_t err, ngx_http_im_buf_t *ack)
{
    ngx_http_im_api_t  *api = data;

    if (err == 0) {
        ngx_http_im_buf_add(&api->data, ack->data, ack->len);
    }

    ngx_http_im_api_answer(api, err, NULL);
}


/*
 * /msg/batch_send_msg: the v3 message plus "recvIDs"; one message per
 * recipient, each in its own conversation, all pipelined.  Replies come
 * back in the order the sends went out, which api->order records.
 */
static void
ngx_http_im_batch_send_msg(ngx_http_im_api_t *api)
{
    char                 err[256];
    ngx_int_t            rc;
    ngx_http_im_msg_t    m;
    ngx_http_im_send_t   opts;

    ngx_memzero(&opts, sizeof(ngx_http_im_send_t));

    if (ngx_http_im_json_get_array(api->root, "recvIDs", 1, &api->recv_ids,
                                   err, sizeof(err)) != 0
        || api->recv_ids->u.array.len == 0
        || api->recv_ids->u.array.len > NGX_HTTP_IM_MAX_BATCH)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS,
                               "field \"recvIDs\" must be an array of "
                               "1..1000 user IDs");
        return;
    }

    rc = ngx_http_im_api_msg(api, &m, &opts, err, sizeof(err));
    if (rc != 0) {
        ngx_http_im_api_finish(api, rc, err);
        return;
    }

    api->items = ngx_alloc(api->recv_ids->u.array.len
                           * sizeof(ngx_http_im_batch_item_t),
                           ngx_cycle->log);
    if (api->items == NULL) {
        ngx_http_im_msg_free(&m);
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    opts.done = ngx_http_im_batch_done;

    ngx_http_im_buf_str(&api->data, "{\"results\":[");
    ngx_http_im_buf_str(&api->failed, "],\"failedUserIDs\":[");

    /* no answer finishes the call before every send is issued */
    api->issuing = 1;
    rc = ngx_http_im_batch_issue(api, &m, &opts);
    api->issuing = 0;

    if (rc != NGX_OK) {
        /* the message itself is refused, for every recipient alike; it
         * is refused before any send goes out */
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS,
                               ngx_http_im_msg_check(&m));
        ngx_http_im_msg_free(&m);
        return;
    }

    ngx_http_im_msg_free(&m);

    if (api->answered == api->issued) {
        ngx_http_im_batch_finish(api);
    }
}


/*
 * Sends m to each of api->recv_ids; a recipient that is no user ID, or
 * whose send cannot go out, is listed as failed.  Returns NGX_DECLINED
 * when ngx_http_im_msg_send() refuses the message itself (1001).
 */
static ngx_int_t
ngx_http_im_batch_issue(ngx_http_im_api_t *api, ngx_http_im_msg_t *m,
    ngx_http_im_send_t *opts)
{
    char        *uid;
    ngx_int_t    rc;
    ngx_uint_t   i;

    for (i = 0; i < api->recv_ids->u.array.len; i++) {
        uid = YAJL_IS_STRING(api->recv_ids->u.array.values[i])
              ? api->recv_ids->u.array.values[i]->u.string : NULL;

        m->recv_id.data = uid ? uid : "";
        m->recv_id.len = uid ? ngx_strlen(uid) : 0;
        m->client_msg_id.len = 0;

        if (m->session_type == 3) {
            /* a group's batch: recvIDs name the groups */
            m->group_id = m->recv_id;
        }

        rc = NGX_HTTP_IM_ERR_ARGS;

        if (ngx_http_im_user_id_valid(m->recv_id.data, m->recv_id.len)) {
            api->items[i].api = api;
            api->items[i].index = i;
            opts->data = &api->items[i];

            rc = ngx_http_im_msg_send(m, NULL, opts);

            if (rc == NGX_HTTP_IM_ERR_ARGS) {
                ngx_http_im_assert(ngx_cycle->log, api->issued == 0);
                return NGX_DECLINED;
            }
        }

        if (rc == 0) {
            api->issued++;
            continue;
        }

        ngx_http_im_buf_str(&api->failed, api->failed.len > 19 ? "," : "");
        ngx_http_im_buf_json_str(&api->failed, m->recv_id.data,
                                 m->recv_id.len);
    }

    return NGX_OK;
}


static void
ngx_http_im_batch_done(void *data, ngx_int_t err, ngx_http_im_buf_t *ack)
{
    ngx_http_im_batch_item_t  *item = data;

    char               *uid;
    ngx_http_im_api_t  *api;

    api = item->api;
    api->answered++;
    uid = api->recv_ids->u.array.values[item->index]->u.string;

    if (err == 0 && !api->cancelled) {
        /* the ack object, with the recipient added */
        ngx_http_im_buf_str(&api->data, api->results++ ? "," : "");
        ngx_http_im_buf_add(&api->data, ack->data, ack->len - 1);
        ngx_http_im_buf_str(&api->data, ",\"recvID\":");
        ngx_http_im_buf_json_str(&api->data, uid, ngx_strlen(uid));
        ngx_http_im_buf_str(&api->data, "}");

    } else if (!api->cancelled) {
        ngx_http_im_buf_str(&api->failed, api->failed.len > 19 ? "," : "");
        ngx_http_im_buf_json_str(&api->failed, uid, ngx_strlen(uid));
    }

    if (!api->issuing && api->answered == api->issued) {
        ngx_http_im_batch_finish(api);
    }
}


static void
ngx_http_im_batch_finish(ngx_http_im_api_t *api)
{
    ngx_http_im_buf_add(&api->data, api->failed.data, api->failed.len);
    ngx_http_im_buf_str(&api->data, "]}");

    ngx_http_im_api_answer(api, api->data.failed
                                ? NGX_HTTP_IM_ERR_INTERNAL : 0, NULL);
}


/*
 * The worker is exiting: a call still waiting (on MongoDB, whose thread
 * pool is gone) would keep its socket open; close them all.
 */
void
ngx_http_im_api_shutdown(void)
{
    ngx_queue_t         *q, *next;
    ngx_connection_t    *c;
    ngx_http_im_api_t   *api;

    for (q = ngx_queue_head(&ngx_http_im_worker->api_calls);
         q != ngx_queue_sentinel(&ngx_http_im_worker->api_calls);
         q = next)
    {
        next = ngx_queue_next(q);
        api = ngx_queue_data(q, ngx_http_im_api_t, link);

        if (api->cancelled) {
            continue;
        }

        c = api->r->connection;
        ngx_http_finalize_request(api->r, NGX_HTTP_CLOSE);
        ngx_http_run_posted_requests(c);
    }
}


/* the path of route i, for metrics; NULL past the table */
const char *
ngx_http_im_api_route_name(ngx_uint_t i)
{
    ngx_http_im_route_t  *rt;

    rt = ngx_http_im_api_route_at(i);

    return rt ? (const char *) rt->path.data : NULL;
}


/* counts an API request's body; past the limit its data is dropped */
static ngx_int_t
ngx_http_im_api_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_buf_t               *last;
    ngx_chain_t             *cl;
    ngx_http_request_body_t *rb;
    ngx_http_im_api_body_t  *body;
    ngx_http_im_loc_conf_t  *conf;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_im_module);

    if (conf->kind != NGX_HTTP_IM_LOC_API) {
        return ngx_http_im_next_body_filter(r, in);
    }

    body = ngx_http_get_module_ctx(r, ngx_http_im_module);
    if (body == NULL) {
        return ngx_http_im_next_body_filter(r, in);
    }

    for (cl = in; cl; cl = cl->next) {
        body->size += ngx_buf_size(cl->buf);
    }

    rb = r->request_body;

    /* a full read buffer with more to come would spill to a temp file:
     * chunk framing counts toward the limit too */
    if (body->size <= body->max && !body->too_large
        && !(rb->rest > 0 && rb->buf && rb->buf->last == rb->buf->end))
    {
        return ngx_http_im_next_body_filter(r, in);
    }

    body->too_large = 1;

    /*
     * Drop what arrives and what was kept so far: kept buffers would be
     * busy when the read buffer fills, or be written to a temp file.
     * Only the end-of-body mark goes on, emptied.
     */
    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
    }

    r->request_body->bufs = NULL;
    last = NULL;

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;

        if (cl->buf->last_buf) {
            last = cl->buf;
        }
    }

    if (last == NULL) {
        return NGX_OK;
    }

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cl->buf = last;
    cl->next = NULL;

    return ngx_http_im_next_body_filter(r, cl);
}


ngx_int_t
ngx_http_im_api_body_filter_init(ngx_conf_t *cf)
{
    ngx_http_im_next_body_filter = ngx_http_top_request_body_filter;
    ngx_http_top_request_body_filter = ngx_http_im_api_body_filter;

    return NGX_OK;
}
