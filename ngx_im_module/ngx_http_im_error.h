
/*
 * ngx_im: the error codes of the external contract (DESIGN.md 1.1, as
 * OpenIM's), each with its default errMsg and its metrics label, in one
 * table.  Pure C: no nginx types.
 */


#ifndef _NGX_HTTP_IM_ERROR_H_INCLUDED_
#define _NGX_HTTP_IM_ERROR_H_INCLUDED_


enum {
    NGX_HTTP_IM_OK                  = 0,
    NGX_HTTP_IM_ERR_INTERNAL        = 500,
    NGX_HTTP_IM_ERR_ARGS            = 1001,
    NGX_HTTP_IM_ERR_PERMISSION      = 1002,
    NGX_HTTP_IM_ERR_NOT_FOUND       = 1004,
    NGX_HTTP_IM_ERR_RATE            = 1010,  /* ours: over a rate limit */
    NGX_HTTP_IM_ERR_USER_ID         = 1101,
    NGX_HTTP_IM_ERR_REGISTERED      = 1102,
    NGX_HTTP_IM_ERR_GROUP_ID        = 1201,
    NGX_HTTP_IM_ERR_NOT_IN_GROUP    = 1203,
    NGX_HTTP_IM_ERR_ADD_SELF        = 1301,
    NGX_HTTP_IM_ERR_BLOCKED         = 1302,
    NGX_HTTP_IM_ERR_NOT_FRIEND      = 1303,
    NGX_HTTP_IM_ERR_RELATION        = 1304,
    NGX_HTTP_IM_ERR_HANDLED         = 1305,
    NGX_HTTP_IM_ERR_TOKEN_EXPIRED   = 1501,
    NGX_HTTP_IM_ERR_TOKEN_INVALID   = 1502,  /* signature, alg, secret */
    NGX_HTTP_IM_ERR_TOKEN_MALFORMED = 1503,  /* shape, JSON, claims */
    NGX_HTTP_IM_ERR_TOKEN_NOT_YET   = 1504,  /* nbf in the future */
    NGX_HTTP_IM_ERR_TOKEN_KICKED    = 1506,
    NGX_HTTP_IM_ERR_TOKEN_NONE      = 1507,
    NGX_HTTP_IM_ERR_CONN_LIMIT      = 1601,
    NGX_HTTP_IM_ERR_CONN_ARGS       = 1602,
    NGX_HTTP_IM_ERR_UNAVAILABLE     = 90004
};


typedef struct {
    int                        code;
    const char                *msg;       /* the default errMsg */
    const char                *metric;    /* the code="" label */
} ngx_http_im_error_t;


/* the table; its last entry stands for every code not listed */
extern const ngx_http_im_error_t  ngx_http_im_errors[];
extern const unsigned             ngx_http_im_errors_n;

/* the index of code in ngx_http_im_errors[]: the last one if unknown */
unsigned ngx_http_im_error_index(int code);

/* the default errMsg of code ("internal error" if unknown) */
const char *ngx_http_im_errmsg(int code);


#endif /* _NGX_HTTP_IM_ERROR_H_INCLUDED_ */
