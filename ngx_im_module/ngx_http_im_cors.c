
/*
 * ngx_im: cross-origin use of the REST API and the WebSocket by browser
 * pages (im_cors_origins; docs/api.md, CORS).  The allowed origins are
 * parsed into canonical form at configuration time; a request's Origin
 * is canonicalized once and compared whole, never by substring.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_origin.h"


/* origins one im_cors_origins may list: each request compares them all */
#define NGX_HTTP_IM_CORS_MAX          64


static ngx_table_elt_t *ngx_http_im_cors_allowed(ngx_http_request_t *r,
    ngx_http_im_loc_conf_t *conf);
static ngx_int_t ngx_http_im_cors_same_origin(ngx_http_request_t *r,
    ngx_str_t *origin);
static ngx_int_t ngx_http_im_cors_add(ngx_http_request_t *r,
    const char *key, ngx_str_t *value);
static ngx_int_t ngx_http_im_cors_header_filter(ngx_http_request_t *r);


static ngx_http_output_header_filter_pt  ngx_http_im_next_header_filter;


/*
 * im_cors_origins origin ... | *: the origins (scheme://host[:port])
 * whose pages may call the REST API and open the WebSocket; "*" alone
 * allows any.  Refuses anything that is not a serialized origin.
 */
char *
ngx_http_im_cors_origins(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_im_loc_conf_t *imlcf = conf;

    int                  n;
    u_char               buf[NGX_HTTP_IM_ORIGIN_MAX];
    ngx_str_t           *value, *o;
    ngx_uint_t           i;
    ngx_http_im_cors_t  *cors;

    if (imlcf->cors != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    if (cf->args->nelts - 1 > NGX_HTTP_IM_CORS_MAX) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"im_cors_origins\" "
                           "takes at most %d origins", NGX_HTTP_IM_CORS_MAX);
        return NGX_CONF_ERROR;
    }

    cors = ngx_pcalloc(cf->pool, sizeof(ngx_http_im_cors_t));
    if (cors == NULL
        || ngx_array_init(&cors->origins, cf->pool, cf->args->nelts,
                          sizeof(ngx_str_t))
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (value[i].len == 1 && value[i].data[0] == '*') {
            if (cf->args->nelts != 2) {
                return "takes \"*\" only alone";
            }

            cors->any = 1;
            continue;
        }

        n = ngx_http_im_origin_canon((char *) value[i].data, value[i].len,
                                     (char *) buf);
        if (n < 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid origin \"%V\" "
                               "in \"im_cors_origins\": an origin is "
                               "scheme://host[:port], with no path, no "
                               "trailing slash and no wildcard", &value[i]);
            return NGX_CONF_ERROR;
        }

        o = ngx_array_push(&cors->origins);
        if (o == NULL) {
            return NGX_CONF_ERROR;
        }

        o->len = n;
        o->data = ngx_pnalloc(cf->pool, n);
        if (o->data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(o->data, buf, n);
    }

    imlcf->cors = cors;

    return NGX_CONF_OK;
}


/*
 * An OPTIONS request to an im_api location.  A CORS preflight (Origin
 * and Access-Control-Request-Method present) is answered 204 with the
 * CORS headers when im_cors_origins allows its origin, 403 without them
 * otherwise.  Returns what the handler returns, or NGX_DECLINED when the
 * request is no preflight.
 */
ngx_int_t
ngx_http_im_cors_preflight(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_str_t                methods, headers, age;
    ngx_http_im_loc_conf_t  *conf;

    if (r->method != NGX_HTTP_OPTIONS
        || ngx_http_im_header(r, "Origin", 6) == NULL
        || ngx_http_im_header(r, "Access-Control-Request-Method", 29)
           == NULL)
    {
        return NGX_DECLINED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    conf = ngx_http_get_module_loc_conf(r, ngx_http_im_module);

    if (ngx_http_im_cors_allowed(r, conf) == NULL) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "im api: CORS preflight from an origin that "
                      "\"im_cors_origins\" does not allow");
        return NGX_HTTP_FORBIDDEN;
    }

    ngx_str_set(&methods, "POST, GET, OPTIONS");
    ngx_str_set(&headers, "token, operationID, reqFuncName, Content-Type, "
                          "Authorization");
    ngx_str_set(&age, "7200");

    if (ngx_http_im_cors_add(r, "Access-Control-Allow-Methods", &methods)
        != NGX_OK
        || ngx_http_im_cors_add(r, "Access-Control-Allow-Headers", &headers)
           != NGX_OK
        || ngx_http_im_cors_add(r, "Access-Control-Max-Age", &age) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* the header filter adds Access-Control-Allow-Origin and Vary */
    r->headers_out.status = NGX_HTTP_NO_CONTENT;
    r->header_only = 1;

    return ngx_http_send_header(r);
}


/*
 * The Origin of a WebSocket handshake.  NGX_OK when there is none (a
 * native client), when it is the request's own origin, or when
 * im_cors_origins allows it; NGX_DECLINED otherwise.
 */
ngx_int_t
ngx_http_im_cors_ws_origin(ngx_http_request_t *r)
{
    ngx_table_elt_t         *h;
    ngx_http_im_loc_conf_t  *conf;

    h = ngx_http_im_header(r, "Origin", 6);
    if (h == NULL) {
        return NGX_OK;
    }

    conf = ngx_http_get_module_loc_conf(r, ngx_http_im_module);

    if (ngx_http_im_cors_allowed(r, conf)
        || ngx_http_im_cors_same_origin(r, &h->value))
    {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "im: websocket handshake from an origin that is neither "
                  "the server's own nor in \"im_cors_origins\"");

    return NGX_DECLINED;
}


ngx_int_t
ngx_http_im_cors_filter_init(ngx_conf_t *cf)
{
    ngx_http_im_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_im_cors_header_filter;

    return NGX_OK;
}


/*
 * Every answer of an im_api location to an allowed origin, errors and
 * nginx's own 4xx/5xx pages included, says so; others get nothing.
 */
static ngx_int_t
ngx_http_im_cors_header_filter(ngx_http_request_t *r)
{
    ngx_str_t                vary;
    ngx_table_elt_t         *h;
    ngx_http_im_loc_conf_t  *conf;

    conf = ngx_http_get_module_loc_conf(r, ngx_http_im_module);

    if (r != r->main || conf->kind != NGX_HTTP_IM_LOC_API) {
        return ngx_http_im_next_header_filter(r);
    }

    h = ngx_http_im_cors_allowed(r, conf);
    if (h == NULL) {
        return ngx_http_im_next_header_filter(r);
    }

    ngx_str_set(&vary, "Origin");

    if (ngx_http_im_cors_add(r, "Access-Control-Allow-Origin", &h->value)
        != NGX_OK
        || ngx_http_im_cors_add(r, "Vary", &vary) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_im_next_header_filter(r);
}


/*
 * The Origin header of r when im_cors_origins allows it, else NULL.
 * Under "*", any well-formed origin and "null" are allowed: the header
 * is echoed, so it must be one.
 */
static ngx_table_elt_t *
ngx_http_im_cors_allowed(ngx_http_request_t *r, ngx_http_im_loc_conf_t *conf)
{
    int               n;
    u_char            buf[NGX_HTTP_IM_ORIGIN_MAX];
    ngx_str_t        *o;
    ngx_uint_t        i;
    ngx_table_elt_t  *h;

    if (conf->cors == NULL) {
        return NULL;
    }

    h = ngx_http_im_header(r, "Origin", 6);
    if (h == NULL) {
        return NULL;
    }

    n = ngx_http_im_origin_canon((char *) h->value.data, h->value.len,
                                 (char *) buf);
    if (n < 0) {
        return (conf->cors->any && h->value.len == 4
                && ngx_strncmp(h->value.data, "null", 4) == 0) ? h : NULL;
    }

    if (conf->cors->any) {
        return h;
    }

    o = conf->cors->origins.elts;

    for (i = 0; i < conf->cors->origins.nelts; i++) {
        if (o[i].len == (size_t) n && ngx_memcmp(o[i].data, buf, n) == 0) {
            return h;
        }
    }

    return NULL;
}


/* 1 when origin is the scheme and Host the request came with */
static ngx_int_t
ngx_http_im_cors_same_origin(ngx_http_request_t *r, ngx_str_t *origin)
{
    int          n, m;
    u_char       a[NGX_HTTP_IM_ORIGIN_MAX], b[NGX_HTTP_IM_ORIGIN_MAX];
    const char  *scheme;

    if (r->headers_in.host == NULL) {
        return 0;
    }

    scheme = "http";

#if (NGX_HTTP_SSL)
    if (r->connection->ssl) {
        scheme = "https";
    }
#endif

    n = ngx_http_im_origin_canon((char *) origin->data, origin->len,
                                 (char *) a);
    m = ngx_http_im_origin_of_host(scheme,
                                   (char *) r->headers_in.host->value.data,
                                   r->headers_in.host->value.len,
                                   (char *) b);

    return n >= 0 && n == m && ngx_memcmp(a, b, n) == 0;
}


static ngx_int_t
ngx_http_im_cors_add(ngx_http_request_t *r, const char *key,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value = *value;

    return NGX_OK;
}
