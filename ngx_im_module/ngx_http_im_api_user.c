
/*
 * ngx_im: REST user lists (docs/api.md, "Users"): get_users,
 * get_all_users_uid and account_check.  The store answers from MongoDB's
 * profiles when it is configured, else from Redis's indexes.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_api.h"
#include "ngx_http_im_store.h"


#define NGX_HTTP_IM_USERS_PAGE     100     /* showNumber's default */
#define NGX_HTTP_IM_USERS_SKIP_MAX 1000000 /* a page deeper: 1001 */


static ngx_int_t ngx_http_im_users_page(ngx_http_im_api_t *api,
    ngx_uint_t *skip, ngx_uint_t *limit);
static void ngx_http_im_users_paged(void *data, ngx_int_t err,
    long long total, ngx_http_im_store_user_t *users, ngx_uint_t n);
static void ngx_http_im_users_checked(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n);


/* /user/get_users {userID?, nickName?, pagination} (admin) */
static void
ngx_http_im_users_get(ngx_http_im_api_t *api)
{
    char               err[128];
    ngx_str_t          what;
    ngx_uint_t         how, skip, limit;
    ngx_http_im_str_t  id, nick;

    if (ngx_http_im_users_page(api, &skip, &limit) != NGX_OK) {
        return;
    }

    if (ngx_http_im_json_get_str(api->root, "userID", 0, &id, err,
                                 sizeof(err)) != 0
        || ngx_http_im_json_get_str(api->root, "nickName", 0, &nick, err,
                                    sizeof(err)) != 0)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, err);
        return;
    }

    how = NGX_HTTP_IM_STORE_LIST_ALL;
    ngx_str_set(&what, "");

    if (id.len) {
        if (!ngx_http_im_user_id_valid(id.data, id.len)) {
            ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, "field "
                                   "\"userID\" is not a valid user ID");
            return;
        }

        how = NGX_HTTP_IM_STORE_LIST_ID;
        what.data = (u_char *) id.data;
        what.len = id.len;

    } else if (nick.len) {
        if (nick.len > 256) {
            ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, "field "
                                   "\"nickName\" must be at most 256 bytes");
            return;
        }

        how = NGX_HTTP_IM_STORE_LIST_NICK;
        what.data = (u_char *) nick.data;
        what.len = nick.len;
    }

    if (ngx_http_im_store_users_list(how, &what, skip, limit,
                                     ngx_http_im_users_paged, api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


/* /user/get_all_users_uid {pagination} (admin) */
static void
ngx_http_im_users_all_ids(ngx_http_im_api_t *api)
{
    ngx_str_t   none;
    ngx_uint_t  skip, limit;

    if (ngx_http_im_users_page(api, &skip, &limit) != NGX_OK) {
        return;
    }

    ngx_str_set(&none, "");

    /* api->nusers marks the IDs-only answer */
    api->nusers = 1;

    if (ngx_http_im_store_users_list(NGX_HTTP_IM_STORE_LIST_ALL, &none, skip,
                                     limit, ngx_http_im_users_paged, api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


/* pagination {pageNumber >= 1, showNumber 1..1000} (each optional) */
static ngx_int_t
ngx_http_im_users_page(ngx_http_im_api_t *api, ngx_uint_t *skip,
    ngx_uint_t *limit)
{
    char       err[128];
    yajl_val   page;
    long long  number, show;

    number = 1;
    show = NGX_HTTP_IM_USERS_PAGE;

    if (ngx_http_im_json_get_object(api->root, "pagination", 1, &page, err,
                                    sizeof(err)) != 0
        || (page
            && (ngx_http_im_json_get_int(page, "pageNumber", 0, &number, err,
                                         sizeof(err)) != 0
                || ngx_http_im_json_get_int(page, "showNumber", 0, &show,
                                            err, sizeof(err)) != 0)))
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, err);
        return NGX_ERROR;
    }

    if (number < 1 || show < 1 || show > NGX_HTTP_IM_MAX_LIST
        || (number - 1) * show > NGX_HTTP_IM_USERS_SKIP_MAX)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_ARGS, "\"pagination\" "
                               "needs pageNumber >= 1 and showNumber "
                               "1..1000, within the first 1,000,000 users");
        return NGX_ERROR;
    }

    *skip = (ngx_uint_t) ((number - 1) * show);
    *limit = (ngx_uint_t) show;

    return NGX_OK;
}


/* {total, users: [userInfo]} or, for get_all_users_uid, {total, userIDs} */
static void
ngx_http_im_users_paged(void *data, ngx_int_t err, long long total,
    ngx_http_im_store_user_t *users, ngx_uint_t n)
{
    ngx_http_im_api_t  *api = data;

    ngx_uint_t          i, k;
    ngx_http_im_buf_t  *b;

    if (err) {
        ngx_http_im_api_answer(api, err, NULL);
        return;
    }

    b = &api->data;
    ngx_http_im_buf_str(b, "{\"total\":");
    ngx_http_im_buf_int(b, total);
    ngx_http_im_buf_str(b, api->nusers ? ",\"userIDs\":[" : ",\"users\":[");

    for (i = 0, k = 0; i < n; i++) {
        if (!users[i].found) {
            continue;
        }

        ngx_http_im_buf_str(b, k++ ? "," : "");

        if (api->nusers) {
            ngx_http_im_buf_json_str(b, (char *) users[i].user_id.data,
                                     users[i].user_id.len);
            continue;
        }

        ngx_http_im_user_json(b, &users[i]);
    }

    ngx_http_im_buf_str(b, "]}");
    ngx_http_im_api_answer(api, b->failed ? NGX_HTTP_IM_ERR_INTERNAL : 0,
                           NULL);
}


/* /user/account_check {checkUserIDs} (admin) */
static void
ngx_http_im_users_check(ngx_http_im_api_t *api)
{
    if (ngx_http_im_api_user_ids_of(api,
                                    ngx_http_im_json_get(api->root,
                                                         "checkUserIDs"),
                                    "checkUserIDs")
        == NULL)
    {
        return;
    }

    if (ngx_http_im_store_users_info(api->users, api->nusers,
                                     ngx_http_im_users_checked, api)
        != NGX_OK)
    {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static void
ngx_http_im_users_checked(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n)
{
    ngx_http_im_api_t  *api = data;

    ngx_uint_t          i;
    ngx_http_im_buf_t  *b;

    if (err) {
        ngx_http_im_api_answer(api, err, NULL);
        return;
    }

    b = &api->data;
    ngx_http_im_buf_str(b, "{\"results\":[");

    for (i = 0; i < n; i++) {
        ngx_http_im_buf_str(b, i ? ",{\"userID\":" : "{\"userID\":");
        ngx_http_im_buf_json_str(b, (char *) users[i].user_id.data,
                                 users[i].user_id.len);
        ngx_http_im_buf_str(b, users[i].found
                               ? ",\"accountStatus\":\"registered\"}"
                               : ",\"accountStatus\":\"unregistered\"}");
    }

    ngx_http_im_buf_str(b, "]}");
    ngx_http_im_api_answer(api, b->failed ? NGX_HTTP_IM_ERR_INTERNAL : 0,
                           NULL);
}


ngx_http_im_route_t  ngx_http_im_user_routes[] = {

    { ngx_string("/user/get_users"), NGX_HTTP_IM_ACCESS_ADMIN,
      ngx_http_im_users_get, NULL },
    { ngx_string("/user/get_all_users_uid"), NGX_HTTP_IM_ACCESS_ADMIN,
      ngx_http_im_users_all_ids, NULL },
    { ngx_string("/user/account_check"), NGX_HTTP_IM_ACCESS_ADMIN,
      ngx_http_im_users_check, NULL },

    { ngx_null_string, 0, NULL, NULL }
};
