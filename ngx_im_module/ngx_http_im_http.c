
/*
 * ngx_im: small HTTP helpers shared by the REST API, the WebSocket
 * handshake and the metrics page.
 */


#include "ngx_http_im_module.h"


/* 1 when uid is listed in im_admin */
ngx_int_t
ngx_http_im_is_admin(ngx_http_im_main_conf_t *imcf, ngx_str_t *uid)
{
    ngx_str_t   *a;
    ngx_uint_t   i;

    if (imcf->admins == NULL) {
        return 0;
    }

    a = imcf->admins->elts;

    for (i = 0; i < imcf->admins->nelts; i++) {
        if (a[i].len == uid->len
            && ngx_strncmp(a[i].data, uid->data, uid->len) == 0)
        {
            return 1;
        }
    }

    return 0;
}


/* a request header by name (case-insensitive); NULL when absent */
ngx_table_elt_t *
ngx_http_im_header(ngx_http_request_t *r, const char *name, size_t len)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


/*
 * Sends b as the whole body of r with the given status and content type.
 * Returns what the output filter returned, for
 * ngx_http_finalize_request().
 */
ngx_int_t
ngx_http_im_send_body(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, ngx_http_im_buf_t *b)
{
    ngx_int_t     rc;
    ngx_buf_t    *out;
    ngx_chain_t   cl;

    if (b->failed) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    out = ngx_create_temp_buf(r->pool, b->len);
    if (out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    out->last = ngx_cpymem(out->pos, b->data, b->len);
    out->last_buf = (r == r->main) ? 1 : 0;
    out->last_in_chain = 1;

    r->headers_out.status = status;
    r->headers_out.content_length_n = b->len;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    cl.buf = out;
    cl.next = NULL;

    return ngx_http_output_filter(r, &cl);
}
