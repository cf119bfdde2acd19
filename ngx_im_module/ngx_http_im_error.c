
/*
 * ngx_im: the error table (see ngx_http_im_error.h).
 */


#include "ngx_http_im_error.h"


const ngx_http_im_error_t  ngx_http_im_errors[] = {
    { NGX_HTTP_IM_OK, "", "0" },
    { NGX_HTTP_IM_ERR_INTERNAL, "internal error", "500" },
    { NGX_HTTP_IM_ERR_ARGS, "invalid arguments", "1001" },
    { NGX_HTTP_IM_ERR_PERMISSION, "no permission", "1002" },
    { NGX_HTTP_IM_ERR_NOT_FOUND, "record not found", "1004" },
    { NGX_HTTP_IM_ERR_RATE, "too many requests", "1010" },
    { NGX_HTTP_IM_ERR_USER_ID, "user not registered", "1101" },
    { NGX_HTTP_IM_ERR_REGISTERED, "user already registered", "1102" },
    { NGX_HTTP_IM_ERR_GROUP_ID, "group not found", "1201" },
    { NGX_HTTP_IM_ERR_NOT_IN_GROUP, "not in group", "1203" },
    { NGX_HTTP_IM_ERR_ADD_SELF, "cannot add yourself", "1301" },
    { NGX_HTTP_IM_ERR_BLOCKED, "blocked by peer", "1302" },
    { NGX_HTTP_IM_ERR_NOT_FRIEND, "not peer's friend", "1303" },
    { NGX_HTTP_IM_ERR_RELATION, "relationship already exists", "1304" },
    { NGX_HTTP_IM_ERR_HANDLED, "friend request already handled", "1305" },
    { NGX_HTTP_IM_ERR_TOKEN_EXPIRED, "token expired", "1501" },
    { NGX_HTTP_IM_ERR_TOKEN_INVALID, "token invalid", "1502" },
    { NGX_HTTP_IM_ERR_TOKEN_MALFORMED, "token malformed", "1503" },
    { NGX_HTTP_IM_ERR_TOKEN_NOT_YET, "token not active yet", "1504" },
    { NGX_HTTP_IM_ERR_TOKEN_KICKED, "token kicked", "1506" },
    { NGX_HTTP_IM_ERR_TOKEN_NONE, "token not exist", "1507" },
    { NGX_HTTP_IM_ERR_CONN_LIMIT, "too many connections", "1601" },
    { NGX_HTTP_IM_ERR_CONN_ARGS, "connection arguments invalid", "1602" },
    { NGX_HTTP_IM_ERR_UNAVAILABLE, "storage unavailable", "90004" },
    { -1, "internal error", "other" }
};

const unsigned  ngx_http_im_errors_n =
    sizeof(ngx_http_im_errors) / sizeof(ngx_http_im_errors[0]);


unsigned
ngx_http_im_error_index(int code)
{
    unsigned  i;

    for (i = 0; i < ngx_http_im_errors_n - 1; i++) {
        if (ngx_http_im_errors[i].code == code) {
            return i;
        }
    }

    return ngx_http_im_errors_n - 1;
}


const char *
ngx_http_im_errmsg(int code)
{
    return ngx_http_im_errors[ngx_http_im_error_index(code)].msg;
}
