
/*
 * ngx_im: REST conversation routes and the read state of msg (docs/api.md,
 * "Conversations").  Each route is a row of what it reads from the body;
 * the body is checked and bounded here, turned into the arguments of one
 * conv.lua op, and run for the user (and, where the call says so, for
 * other users after it).  Devices learn of a change by notifications:
 * messages with seq 0, never stored.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_api.h"
#include "ngx_http_im_store.h"
#include "ngx_http_im_id.h"


/* what a route reads from the body */
#define NGX_HTTP_IM_CF_CONV      0x0001   /* conversationID */
#define NGX_HTTP_IM_CF_IDS       0x0002   /* conversationIDs, 0..1000 */
#define NGX_HTTP_IM_CF_IDS_REQ   0x0004   /* ... 1..1000 */
#define NGX_HTTP_IM_CF_PAGE      0x0008   /* pagination */
#define NGX_HTTP_IM_CF_SEQS      0x0010   /* seqs, 1..1000 */
#define NGX_HTTP_IM_CF_SEQS_OPT  0x0020   /* seqs, 0..1000 */
#define NGX_HTTP_IM_CF_READ      0x0040   /* hasReadSeq */
#define NGX_HTTP_IM_CF_READ_OPT  0x0080
#define NGX_HTTP_IM_CF_VERSION   0x0100   /* version, versionID */
#define NGX_HTTP_IM_CF_SETTINGS  0x0200   /* conversation {...} */
#define NGX_HTTP_IM_CF_SYNC      0x0400   /* deleteSyncOpt */
#define NGX_HTTP_IM_CF_USERS     0x0800   /* userIDs instead of one user */
#define NGX_HTTP_IM_CF_COUNT     0x1000   /* count: the first page's size */

#define NGX_HTTP_IM_CONV_MAX_IDS     NGX_HTTP_IM_MAX_LIST
#define NGX_HTTP_IM_CONV_MAX_STR     4096
#define NGX_HTTP_IM_CONV_MAX_SHOW    100
#define NGX_HTTP_IM_CONV_MAX_COUNT   1000   /* conv.lua's page cap */
#define NGX_HTTP_IM_CONV_COUNT       100    /* OpenIM's default */
#define NGX_HTTP_IM_SEQ_MAX          9007199254740991LL   /* 2^53 - 1 */

/* the notifications of docs/api.md */
#define NGX_HTTP_IM_NOTE_NONE          0
#define NGX_HTTP_IM_NOTE_CHANGE        1300
#define NGX_HTTP_IM_NOTE_CLEAR         1703
#define NGX_HTTP_IM_NOTE_DELETE_MSGS   2102
#define NGX_HTTP_IM_NOTE_READ          2200


typedef struct {
    const char                  *op;          /* of conv.lua */
    const char                  *owner;       /* the field naming the user */
    ngx_uint_t                   fields;
    const char                  *more;        /* added to the arguments */
    ngx_uint_t                   note;
} ngx_http_im_conv_route_t;


/* one call: runs of the op for one user each, one after the other */
typedef struct {
    ngx_http_im_api_t               *api;
    const ngx_http_im_conv_route_t  *route;
    ngx_str_t                        owner;
    ngx_str_t                        conv;
    yajl_val                         ids;
    yajl_val                         seqs;
    ngx_http_im_buf_t                args;
    ngx_str_t                       *users;       /* of the runs */
    ngx_int_t                       *only;        /* -1, or ids[k] alone */
    ngx_uint_t                       nruns;
    ngx_uint_t                       run;
    char                             peers[NGX_HTTP_IM_CONV_MAX_IDS]
                                          [NGX_HTTP_IM_UID_MAX + 1];
} ngx_http_im_conv_call_t;


/* a settable field of the record, its type and range */
typedef struct {
    const char                  *name;
    ngx_uint_t                   type;        /* 0 int, 1 bool, 2 string */
    long long                    max;
} ngx_http_im_conv_setting_t;


static void ngx_http_im_conv_call(ngx_http_im_api_t *api,
    const ngx_http_im_conv_route_t *route);
static ngx_int_t ngx_http_im_conv_owner_of(ngx_http_im_conv_call_t *cc);
static ngx_int_t ngx_http_im_conv_users(ngx_http_im_conv_call_t *cc);
static ngx_int_t ngx_http_im_conv_args(ngx_http_im_conv_call_t *cc);
static ngx_int_t ngx_http_im_conv_arg_ids(ngx_http_im_conv_call_t *cc,
    ngx_http_im_buf_t *b, const char **err);
static ngx_int_t ngx_http_im_conv_arg_page(ngx_http_im_conv_call_t *cc,
    ngx_http_im_buf_t *b, const char **err);
static ngx_int_t ngx_http_im_conv_arg_count(ngx_http_im_conv_call_t *cc,
    ngx_http_im_buf_t *b, const char **err);
static ngx_int_t ngx_http_im_conv_arg_seqs(ngx_http_im_conv_call_t *cc,
    ngx_http_im_buf_t *b, const char **err);
static ngx_int_t ngx_http_im_conv_arg_ints(ngx_http_im_conv_call_t *cc,
    ngx_http_im_buf_t *b, const char **err);
static ngx_int_t ngx_http_im_conv_arg_settings(ngx_http_im_conv_call_t *cc,
    ngx_http_im_buf_t *b, const char **err);
static ngx_int_t ngx_http_im_conv_member_of(ngx_http_im_conv_call_t *cc,
    const char *conv, size_t len);
static ngx_int_t ngx_http_im_conv_peers(ngx_http_im_conv_call_t *cc);
static ngx_int_t ngx_http_im_conv_next(ngx_http_im_conv_call_t *cc);
static void ngx_http_im_conv_done(void *data,
    ngx_http_im_store_conv_res_t *r);
static void ngx_http_im_conv_notes(ngx_http_im_conv_call_t *cc,
    ngx_str_t *uid, ngx_str_t *extra);
static void ngx_http_im_conv_end(ngx_http_im_conv_call_t *cc,
    ngx_int_t code, const char *msg);
static void ngx_http_im_conv_free(ngx_http_im_conv_call_t *cc);
static yajl_val ngx_http_im_conv_unwrap(yajl_val v);


static const ngx_http_im_conv_setting_t  ngx_http_im_conv_settings[] = {
    { "recvMsgOpt", 0, 2 },
    { "isPinned", 1, 0 },
    { "isPrivateChat", 1, 0 },
    { "burnDuration", 0, 2147483647LL },
    { "groupAtType", 0, 3 },
    { "attachedInfo", 2, NGX_HTTP_IM_CONV_MAX_STR },
    { "ex", 2, NGX_HTTP_IM_CONV_MAX_STR },
    { NULL, 0, 0 }
};


static const ngx_http_im_conv_route_t  ngx_http_im_conv_sorted_route = {
    "list", "userID", NGX_HTTP_IM_CF_IDS|NGX_HTTP_IM_CF_PAGE, NULL,
    NGX_HTTP_IM_NOTE_NONE
};

/* the JS SDK's active conversations: the sorted list's first page */
static const ngx_http_im_conv_route_t  ngx_http_im_conv_active_route = {
    "list", "ownerUserID", NGX_HTTP_IM_CF_COUNT, NULL, NGX_HTTP_IM_NOTE_NONE
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_all_route = {
    "all", "ownerUserID", 0, NULL, NGX_HTTP_IM_NOTE_NONE
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_get_route = {
    "get", "ownerUserID", NGX_HTTP_IM_CF_CONV, "\"one\":true",
    NGX_HTTP_IM_NOTE_NONE
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_get_many_route = {
    "get", "ownerUserID", NGX_HTTP_IM_CF_IDS_REQ, NULL, NGX_HTTP_IM_NOTE_NONE
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_owner_route = {
    "owner", "userID", NGX_HTTP_IM_CF_PAGE, NULL, NGX_HTTP_IM_NOTE_NONE
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_set_route = {
    "set", "userIDs", NGX_HTTP_IM_CF_USERS|NGX_HTTP_IM_CF_SETTINGS, NULL,
    NGX_HTTP_IM_NOTE_CHANGE
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_ids_route = {
    "ids", "userID", 0, NULL, NGX_HTTP_IM_NOTE_NONE
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_incr_route = {
    "incr", "userID", NGX_HTTP_IM_CF_VERSION, NULL, NGX_HTTP_IM_NOTE_NONE
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_not_notify_route = {
    "notnotify", "userID", 0, NULL, NGX_HTTP_IM_NOTE_NONE
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_pinned_route = {
    "pinned", "userID", 0, NULL, NGX_HTTP_IM_NOTE_NONE
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_delete_route = {
    "delete", "ownerUserID", NGX_HTTP_IM_CF_IDS_REQ, NULL,
    NGX_HTTP_IM_NOTE_NONE
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_mark_read_route = {
    "read", "userID",
    NGX_HTTP_IM_CF_CONV|NGX_HTTP_IM_CF_READ_OPT|NGX_HTTP_IM_CF_SEQS_OPT, NULL,
    NGX_HTTP_IM_NOTE_READ
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_mark_msgs_route = {
    "read", "userID", NGX_HTTP_IM_CF_CONV|NGX_HTTP_IM_CF_SEQS, NULL,
    NGX_HTTP_IM_NOTE_READ
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_set_read_route = {
    "read", "userID", NGX_HTTP_IM_CF_CONV|NGX_HTTP_IM_CF_READ, NULL,
    NGX_HTTP_IM_NOTE_READ
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_seqs_route = {
    "seqs", "userID", NGX_HTTP_IM_CF_IDS, NULL, NGX_HTTP_IM_NOTE_NONE
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_hide_route = {
    "hide", "userID",
    NGX_HTTP_IM_CF_CONV|NGX_HTTP_IM_CF_SEQS|NGX_HTTP_IM_CF_SYNC, NULL,
    NGX_HTTP_IM_NOTE_DELETE_MSGS
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_clear_route = {
    "clear", "userID", NGX_HTTP_IM_CF_IDS_REQ|NGX_HTTP_IM_CF_SYNC, NULL,
    NGX_HTTP_IM_NOTE_CLEAR
};

static const ngx_http_im_conv_route_t  ngx_http_im_conv_clear_all_route = {
    "clear", "userID", 0, "\"all\":true", NGX_HTTP_IM_NOTE_CLEAR
};


void
ngx_http_im_conv_sorted(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_sorted_route);
}


void
ngx_http_im_conv_active(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_active_route);
}


void
ngx_http_im_conv_all(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_all_route);
}


void
ngx_http_im_conv_get(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_get_route);
}


void
ngx_http_im_conv_get_many(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_get_many_route);
}


void
ngx_http_im_conv_owner(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_owner_route);
}


void
ngx_http_im_conv_set(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_set_route);
}


void
ngx_http_im_conv_full_ids(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_ids_route);
}


void
ngx_http_im_conv_incremental(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_incr_route);
}


void
ngx_http_im_conv_not_notify(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_not_notify_route);
}


void
ngx_http_im_conv_pinned(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_pinned_route);
}


void
ngx_http_im_conv_delete(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_delete_route);
}


void
ngx_http_im_conv_mark_read(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_mark_read_route);
}


void
ngx_http_im_conv_mark_msgs(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_mark_msgs_route);
}


void
ngx_http_im_conv_set_read(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_set_read_route);
}


void
ngx_http_im_conv_seqs(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_seqs_route);
}


void
ngx_http_im_conv_delete_msgs(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_hide_route);
}


void
ngx_http_im_conv_clear(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_clear_route);
}


void
ngx_http_im_conv_clear_all(ngx_http_im_api_t *api)
{
    ngx_http_im_conv_call(api, &ngx_http_im_conv_clear_all_route);
}


static void
ngx_http_im_conv_call(ngx_http_im_api_t *api,
    const ngx_http_im_conv_route_t *route)
{
    ngx_http_im_conv_call_t  *cc;

    cc = ngx_calloc(sizeof(ngx_http_im_conv_call_t), ngx_cycle->log);
    if (cc == NULL) {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    cc->api = api;
    cc->route = route;
    api->conv = cc;
    ngx_http_im_buf_init(&cc->args, 256 * 1024);

    if (((route->fields & NGX_HTTP_IM_CF_USERS)
         ? ngx_http_im_conv_users(cc) : ngx_http_im_conv_owner_of(cc))
        != NGX_OK
        || ngx_http_im_conv_args(cc) != NGX_OK
        || ngx_http_im_conv_peers(cc) != NGX_OK)
    {
        return;
    }

    if (ngx_http_im_conv_next(cc) != NGX_OK) {
        ngx_http_im_conv_end(cc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


/*
 * The user the call is for: named by route->owner, which a user token
 * may leave out (itself) but not set to another user (1002); an admin
 * token must name one.
 */
static ngx_int_t
ngx_http_im_conv_owner_of(ngx_http_im_conv_call_t *cc)
{
    char                err[128];
    ngx_uint_t          admin;
    ngx_http_im_str_t   id;
    ngx_http_im_api_t  *api;

    api = cc->api;
    admin = api->claims.platform_id == NGX_HTTP_IM_PLATFORM_ADMIN;

    if (ngx_http_im_json_get_str(api->root, cc->route->owner, 0, &id, err,
                                 sizeof(err)) != 0)
    {
        ngx_http_im_conv_end(cc, NGX_HTTP_IM_ERR_ARGS, err);
        return NGX_ERROR;
    }

    if (id.len == 0 && !admin) {
        id.data = api->claims.user_id;
        id.len = ngx_strlen(api->claims.user_id);
    }

    if (!ngx_http_im_user_id_valid(id.data, id.len)) {
        ngx_snprintf((u_char *) err, sizeof(err), "field \"%s\" must be a "
                     "user ID%Z", cc->route->owner);
        ngx_http_im_conv_end(cc, NGX_HTTP_IM_ERR_ARGS, err);
        return NGX_ERROR;
    }

    if (!admin && (id.len != ngx_strlen(api->claims.user_id)
                   || ngx_strncmp(id.data, api->claims.user_id, id.len)
                      != 0))
    {
        ngx_http_im_conv_end(cc, NGX_HTTP_IM_ERR_PERMISSION,
                             "a user token may act for its own user only");
        return NGX_ERROR;
    }

    cc->owner.data = (u_char *) id.data;
    cc->owner.len = id.len;

    return NGX_OK;
}


/* set_conversations: "userIDs", each a run; a user token names itself */
static ngx_int_t
ngx_http_im_conv_users(ngx_http_im_conv_call_t *cc)
{
    ngx_uint_t          i;
    ngx_str_t          *users;
    ngx_http_im_api_t  *api;

    api = cc->api;

    /* answers the call itself on bad input */
    users = ngx_http_im_api_user_ids(api);
    if (users == NULL) {
        api->conv = NULL;
        ngx_http_im_conv_free(cc);
        return NGX_ERROR;
    }

    if (api->claims.platform_id != NGX_HTTP_IM_PLATFORM_ADMIN) {
        for (i = 0; i < api->nusers; i++) {
            if (users[i].len != ngx_strlen(api->claims.user_id)
                || ngx_strncmp(users[i].data, api->claims.user_id,
                               users[i].len) != 0)
            {
                ngx_http_im_conv_end(cc, NGX_HTTP_IM_ERR_PERMISSION,
                                     "a user token may act for its own "
                                     "user only");
                return NGX_ERROR;
            }
        }
    }

    cc->owner = users[0];
    cc->users = users;
    cc->nruns = api->nusers;

    return NGX_OK;
}


/* the op's arguments, {"maxc":N,...}, from the route's fields */
static ngx_int_t
ngx_http_im_conv_args(ngx_http_im_conv_call_t *cc)
{
    const char         *err;
    ngx_http_im_buf_t  *b;

    b = &cc->args;
    err = NULL;

    ngx_http_im_buf_str(b, "{\"maxc\":");
    ngx_http_im_buf_int(b, cc->api->imcf->max_convs);

    if (cc->route->more) {
        ngx_http_im_buf_str(b, ",");
        ngx_http_im_buf_str(b, cc->route->more);
    }

    if (ngx_http_im_conv_arg_ids(cc, b, &err) != NGX_OK
        || ngx_http_im_conv_arg_page(cc, b, &err) != NGX_OK
        || ngx_http_im_conv_arg_seqs(cc, b, &err) != NGX_OK
        || ngx_http_im_conv_arg_ints(cc, b, &err) != NGX_OK
        || ngx_http_im_conv_arg_settings(cc, b, &err) != NGX_OK)
    {
        if (err) {
            ngx_http_im_conv_end(cc, NGX_HTTP_IM_ERR_ARGS, err);
        }

        return NGX_ERROR;
    }

    ngx_http_im_buf_str(b, "}");

    if (b->failed) {
        ngx_http_im_conv_end(cc, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* conversationID and conversationIDs: each one the user's */
static ngx_int_t
ngx_http_im_conv_arg_ids(ngx_http_im_conv_call_t *cc, ngx_http_im_buf_t *b,
    const char **err)
{
    char               text[128];
    ngx_uint_t         i, fields;
    yajl_val           ids, v;
    ngx_http_im_str_t  id;

    fields = cc->route->fields;

    if (fields & NGX_HTTP_IM_CF_CONV) {
        if (ngx_http_im_json_get_str(cc->api->root, "conversationID", 1, &id,
                                     text, sizeof(text)) != 0
            || id.len == 0)
        {
            *err = "field \"conversationID\" is required";
            return NGX_ERROR;
        }

        if (ngx_http_im_conv_member_of(cc, id.data, id.len) != NGX_OK) {
            return NGX_ERROR;
        }

        cc->conv.data = (u_char *) id.data;
        cc->conv.len = id.len;
        ngx_http_im_buf_str(b, ",\"c\":");
        ngx_http_im_buf_json_str(b, id.data, id.len);
    }

    if (!(fields & (NGX_HTTP_IM_CF_IDS|NGX_HTTP_IM_CF_IDS_REQ))) {
        return NGX_OK;
    }

    ids = ngx_http_im_json_get(cc->api->root, "conversationIDs");

    if ((ids == NULL || YAJL_IS_NULL(ids)) && (fields & NGX_HTTP_IM_CF_IDS))
    {
        return NGX_OK;
    }

    if (ids == NULL || !YAJL_IS_ARRAY(ids)
        || ids->u.array.len > NGX_HTTP_IM_CONV_MAX_IDS
        || (ids->u.array.len == 0 && (fields & NGX_HTTP_IM_CF_IDS_REQ)))
    {
        *err = (fields & NGX_HTTP_IM_CF_IDS_REQ)
               ? "field \"conversationIDs\" must be an array of 1..1000 "
                 "conversation IDs"
               : "field \"conversationIDs\" must be an array of at most "
                 "1000 conversation IDs";
        return NGX_ERROR;
    }

    ngx_http_im_buf_str(b, ",\"ids\":[");

    for (i = 0; i < ids->u.array.len; i++) {
        v = ids->u.array.values[i];

        if (!YAJL_IS_STRING(v) || v->u.string == NULL) {
            *err = "field \"conversationIDs\" holds a non-string";
            return NGX_ERROR;
        }

        if (ngx_http_im_conv_member_of(cc, v->u.string,
                                       ngx_strlen(v->u.string))
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        ngx_http_im_buf_str(b, i ? "," : "");
        ngx_http_im_buf_json_str(b, v->u.string, ngx_strlen(v->u.string));
    }

    ngx_http_im_buf_str(b, "]");
    cc->ids = ids;

    return NGX_OK;
}


/* a conversation the owner may touch, or 1002 answered */
static ngx_int_t
ngx_http_im_conv_member_of(ngx_http_im_conv_call_t *cc, const char *conv,
    size_t len)
{
    /* a group's: conv.lua knows whether the user was ever in it */
    if (ngx_http_im_conv_member(conv, len, (char *) cc->owner.data,
                                cc->owner.len)
        || ngx_http_im_conv_group(conv, len))
    {
        return NGX_OK;
    }

    ngx_log_error(NGX_LOG_INFO, cc->api->r->connection->log, 0,
                  "im api: \"%V\" is not a member of conversation \"%*s\"",
                  &cc->owner, ngx_min(len, 256), conv);
    ngx_http_im_conv_end(cc, NGX_HTTP_IM_ERR_PERMISSION,
                         "not a member of the conversation");

    return NGX_ERROR;
}


/* pagination {pageNumber >= 1, showNumber 1..100} */
static ngx_int_t
ngx_http_im_conv_arg_page(ngx_http_im_conv_call_t *cc, ngx_http_im_buf_t *b,
    const char **err)
{
    char       text[128];
    yajl_val   page;
    long long  number, show;

    if (cc->route->fields & NGX_HTTP_IM_CF_COUNT) {
        return ngx_http_im_conv_arg_count(cc, b, err);
    }

    if (!(cc->route->fields & NGX_HTTP_IM_CF_PAGE)) {
        return NGX_OK;
    }

    number = 1;
    show = 20;
    page = ngx_http_im_json_get(cc->api->root, "pagination");

    if (page && !YAJL_IS_NULL(page)
        && (!YAJL_IS_OBJECT(page)
            || ngx_http_im_json_get_int(page, "pageNumber", 0, &number, text,
                                        sizeof(text)) != 0
            || ngx_http_im_json_get_int(page, "showNumber", 0, &show, text,
                                        sizeof(text)) != 0))
    {
        *err = "field \"pagination\" must be {pageNumber, showNumber}";
        return NGX_ERROR;
    }

    number = number ? number : 1;
    show = show ? show : 20;

    if (number < 1 || number > 1000000 || show < 1
        || show > NGX_HTTP_IM_CONV_MAX_SHOW)
    {
        *err = "pagination: pageNumber must be >= 1 and showNumber "
               "1..100";
        return NGX_ERROR;
    }

    ngx_http_im_buf_str(b, ",\"page\":");
    ngx_http_im_buf_int(b, number);
    ngx_http_im_buf_str(b, ",\"show\":");
    ngx_http_im_buf_int(b, show);

    return NGX_OK;
}


/* count: 0 (OpenIM's default, 100) .. 1000, the first page */
static ngx_int_t
ngx_http_im_conv_arg_count(ngx_http_im_conv_call_t *cc, ngx_http_im_buf_t *b,
    const char **err)
{
    char       text[128];
    long long  count;

    count = 0;

    if (ngx_http_im_json_get_int(cc->api->root, "count", 0, &count, text,
                                 sizeof(text)) != 0
        || count < 0 || count > NGX_HTTP_IM_CONV_MAX_COUNT)
    {
        *err = "field \"count\" must be 0..1000 (0: 100)";
        return NGX_ERROR;
    }

    ngx_http_im_buf_str(b, ",\"page\":1,\"show\":");
    ngx_http_im_buf_int(b, count ? count : NGX_HTTP_IM_CONV_COUNT);

    return NGX_OK;
}


/* seqs: 0..2^53 each, at most 1000 */
static ngx_int_t
ngx_http_im_conv_arg_seqs(ngx_http_im_conv_call_t *cc, ngx_http_im_buf_t *b,
    const char **err)
{
    ngx_uint_t  i, fields;
    yajl_val    seqs, v;
    long long   seq;

    fields = cc->route->fields;

    if (!(fields & (NGX_HTTP_IM_CF_SEQS|NGX_HTTP_IM_CF_SEQS_OPT))) {
        return NGX_OK;
    }

    seqs = ngx_http_im_json_get(cc->api->root, "seqs");

    if ((seqs == NULL || YAJL_IS_NULL(seqs))
        && (fields & NGX_HTTP_IM_CF_SEQS_OPT))
    {
        return NGX_OK;
    }

    if (seqs == NULL || !YAJL_IS_ARRAY(seqs)
        || seqs->u.array.len > NGX_HTTP_IM_CONV_MAX_IDS
        || (seqs->u.array.len == 0 && (fields & NGX_HTTP_IM_CF_SEQS)))
    {
        *err = "field \"seqs\" must be an array of 1..1000 seqs";
        return NGX_ERROR;
    }

    ngx_http_im_buf_str(b, ",\"seqs\":[");

    for (i = 0; i < seqs->u.array.len; i++) {
        v = seqs->u.array.values[i];

        if (!YAJL_IS_INTEGER(v)) {
            *err = "field \"seqs\" holds a non-integer";
            return NGX_ERROR;
        }

        seq = YAJL_GET_INTEGER(v);

        if (seq < 1 || seq > NGX_HTTP_IM_SEQ_MAX) {
            *err = "field \"seqs\" holds a seq out of range (1..2^53)";
            return NGX_ERROR;
        }

        ngx_http_im_buf_str(b, i ? "," : "");
        ngx_http_im_buf_int(b, seq);
    }

    ngx_http_im_buf_str(b, "]");
    cc->seqs = seqs;

    return NGX_OK;
}


/* hasReadSeq; version and versionID */
static ngx_int_t
ngx_http_im_conv_arg_ints(ngx_http_im_conv_call_t *cc, ngx_http_im_buf_t *b,
    const char **err)
{
    char               text[128];
    long long          v;
    ngx_uint_t         fields;
    ngx_http_im_str_t  id;

    fields = cc->route->fields;

    if (fields & (NGX_HTTP_IM_CF_READ|NGX_HTTP_IM_CF_READ_OPT)) {
        v = -1;

        if (ngx_http_im_json_get(cc->api->root, "hasReadSeq") == NULL
            && (fields & NGX_HTTP_IM_CF_READ))
        {
            *err = "field \"hasReadSeq\" is required";
            return NGX_ERROR;
        }

        if (ngx_http_im_json_get_int(cc->api->root, "hasReadSeq", 0, &v,
                                     text, sizeof(text)) != 0
            || v < -1 || v > NGX_HTTP_IM_SEQ_MAX
            || (v < 0 && ngx_http_im_json_get(cc->api->root, "hasReadSeq")))
        {
            *err = "field \"hasReadSeq\" must be a seq (0..2^53)";
            return NGX_ERROR;
        }

        ngx_http_im_buf_str(b, ",\"r\":");
        ngx_http_im_buf_int(b, v);
    }

    if (fields & NGX_HTTP_IM_CF_VERSION) {
        v = 0;
        id.len = 0;

        if (ngx_http_im_json_get_int(cc->api->root, "version", 0, &v, text,
                                     sizeof(text)) != 0
            || v < 0 || v > NGX_HTTP_IM_SEQ_MAX
            || ngx_http_im_json_get_str(cc->api->root, "versionID", 0, &id,
                                        text, sizeof(text)) != 0
            || id.len > 64)
        {
            *err = "fields \"version\" (>= 0) and \"versionID\" (a string) "
                   "are required";
            return NGX_ERROR;
        }

        ngx_http_im_buf_str(b, ",\"v\":");
        ngx_http_im_buf_int(b, v);
        ngx_http_im_buf_str(b, ",\"id\":");
        ngx_http_im_buf_json_str(b, id.len ? id.data : "", id.len);
    }

    return NGX_OK;
}


/* "conversation": {conversationID, the settable fields, bare or wrapped} */
static ngx_int_t
ngx_http_im_conv_arg_settings(ngx_http_im_conv_call_t *cc,
    ngx_http_im_buf_t *b, const char **err)
{
    static char                        text[160];
    ngx_uint_t                         n;
    yajl_val                           conv, v, id;
    const ngx_http_im_conv_setting_t  *s;

    if (!(cc->route->fields & NGX_HTTP_IM_CF_SETTINGS)) {
        return NGX_OK;
    }

    conv = ngx_http_im_json_get(cc->api->root, "conversation");
    id = conv ? ngx_http_im_json_get(conv, "conversationID") : NULL;

    if (conv == NULL || !YAJL_IS_OBJECT(conv) || id == NULL
        || !YAJL_IS_STRING(id) || id->u.string == NULL)
    {
        *err = "field \"conversation\" must be an object with a "
               "conversationID";
        return NGX_ERROR;
    }

    /* for every user of the call (an admin's userIDs) */
    for (n = 0; n < cc->nruns; n++) {
        cc->owner = cc->users[n];

        if (ngx_http_im_conv_member_of(cc, id->u.string,
                                       ngx_strlen(id->u.string))
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    cc->owner = cc->users[0];
    cc->conv.data = (u_char *) id->u.string;
    cc->conv.len = ngx_strlen(id->u.string);

    ngx_http_im_buf_str(b, ",\"c\":");
    ngx_http_im_buf_json_str(b, id->u.string, cc->conv.len);
    ngx_http_im_buf_str(b, ",\"f\":{");
    n = 0;

    for (s = ngx_http_im_conv_settings; s->name; s++) {
        v = ngx_http_im_conv_unwrap(ngx_http_im_json_get(conv, s->name));

        if (v == NULL || YAJL_IS_NULL(v)) {
            continue;
        }

        if ((s->type == 0 && (!YAJL_IS_INTEGER(v) || YAJL_GET_INTEGER(v) < 0
                              || YAJL_GET_INTEGER(v) > s->max))
            || (s->type == 1 && !YAJL_IS_TRUE(v) && !YAJL_IS_FALSE(v))
            || (s->type == 2 && (!YAJL_IS_STRING(v) || v->u.string == NULL
                                 || ngx_strlen(v->u.string)
                                    > (size_t) s->max)))
        {
            ngx_snprintf((u_char *) text, sizeof(text),
                         "field \"conversation.%s\" must be %s%Z", s->name,
                         s->type == 0 ? "an integer in its range"
                         : s->type == 1 ? "a boolean"
                         : "a string of at most 4096 bytes");
            *err = text;
            return NGX_ERROR;
        }

        ngx_http_im_buf_str(b, n++ ? ",\"" : "\"");
        ngx_http_im_buf_str(b, s->name);
        ngx_http_im_buf_str(b, "\":");
        ngx_http_im_buf_json_val(b, v);
    }

    ngx_http_im_buf_str(b, "}");

    return NGX_OK;
}


/* OpenIM's protobuf wrappers: {"value": x} stands for x */
static yajl_val
ngx_http_im_conv_unwrap(yajl_val v)
{
    if (v && YAJL_IS_OBJECT(v)) {
        return ngx_http_im_json_get(v, "value");
    }

    return v;
}


/*
 * The runs: the owner, then with deleteSyncOpt.isSyncOther the peer of
 * each single conversation, for that conversation alone.
 */
static ngx_int_t
ngx_http_im_conv_peers(ngx_http_im_conv_call_t *cc)
{
    int                 other;
    char                err[128];
    size_t              n;
    yajl_val            opt;
    ngx_uint_t          i, count;
    const char         *id;

    if (cc->users) {
        return NGX_OK;
    }

    count = cc->ids ? cc->ids->u.array.len : 1;

    cc->users = ngx_alloc((count + 1) * (sizeof(ngx_str_t)
                                         + sizeof(ngx_int_t)),
                          ngx_cycle->log);
    if (cc->users == NULL) {
        ngx_http_im_conv_end(cc, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return NGX_ERROR;
    }

    cc->only = (ngx_int_t *) (cc->users + count + 1);
    cc->users[0] = cc->owner;
    cc->only[0] = -1;
    cc->nruns = 1;

    other = 0;
    opt = ngx_http_im_json_get(cc->api->root, "deleteSyncOpt");

    if ((cc->route->fields & NGX_HTTP_IM_CF_SYNC) && opt
        && YAJL_IS_OBJECT(opt)
        && ngx_http_im_json_get_bool(opt, "isSyncOther", 0, &other, err,
                                     sizeof(err)) != 0)
    {
        ngx_http_im_conv_end(cc, NGX_HTTP_IM_ERR_ARGS, err);
        return NGX_ERROR;
    }

    if (!other) {
        return NGX_OK;
    }

    for (i = 0; i < count; i++) {
        id = cc->ids ? cc->ids->u.array.values[i]->u.string
                     : (char *) cc->conv.data;
        n = cc->ids ? ngx_strlen(id) : cc->conv.len;

        /* si_<a>_<b>: the one that is not the owner */
        if (n < 4 || ngx_strncmp(id, "si_", 3) != 0) {
            continue;
        }

        n = ngx_http_im_conv_peer(id, n, (char *) cc->owner.data,
                                  cc->owner.len, cc->peers[i]);
        if (n == 0) {
            continue;
        }

        cc->users[cc->nruns].data = (u_char *) cc->peers[i];
        cc->users[cc->nruns].len = n;
        cc->only[cc->nruns] = cc->ids ? (ngx_int_t) i : -1;
        cc->nruns++;
    }

    return NGX_OK;
}


/* the next run: the call's arguments, or those of one conversation */
static ngx_int_t
ngx_http_im_conv_next(ngx_http_im_conv_call_t *cc)
{
    ngx_str_t           args;
    ngx_int_t           k, rc;
    yajl_val            v;
    ngx_http_im_buf_t   one;

    k = cc->only ? cc->only[cc->run] : -1;

    if (k < 0) {
        args.data = cc->args.data;
        args.len = cc->args.len;

        return ngx_http_im_store_conv(&cc->users[cc->run], cc->route->op,
                                      &args, ngx_http_im_conv_done, cc);
    }

    v = cc->ids->u.array.values[k];

    ngx_http_im_buf_init(&one, 64 * 1024);
    ngx_http_im_buf_str(&one, "{\"ids\":[");
    ngx_http_im_buf_json_str(&one, v->u.string, ngx_strlen(v->u.string));
    ngx_http_im_buf_str(&one, "]}");

    args.data = one.data;
    args.len = one.len;

    rc = one.failed ? NGX_DECLINED
                    : ngx_http_im_store_conv(&cc->users[cc->run],
                                             cc->route->op, &args,
                                             ngx_http_im_conv_done, cc);
    ngx_http_im_buf_free(&one);

    return rc;
}


static void
ngx_http_im_conv_done(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_conv_call_t  *cc = data;

    u_char  msg[256];

    if (cc->api->cancelled) {
        ngx_http_im_conv_end(cc, 0, NULL);
        return;
    }

    if (r->err) {
        ngx_cpystrn(msg, r->msg.len ? r->msg.data : (u_char *) "",
                    ngx_min(r->msg.len + 1, sizeof(msg)));
        ngx_http_im_conv_end(cc, r->err, r->msg.len ? (char *) msg : NULL);
        return;
    }

    /* the first run's answer is the call's */
    if (cc->run == 0) {
        ngx_http_im_buf_add(&cc->api->data, r->answer.data, r->answer.len);
    }

    ngx_http_im_conv_notes(cc, &cc->users[cc->run], &r->extra);

    if (++cc->run < cc->nruns) {
        if (ngx_http_im_conv_next(cc) != NGX_OK) {
            ngx_http_im_conv_end(cc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        }

        return;
    }

    ngx_http_im_conv_end(cc, cc->api->data.failed
                             ? NGX_HTTP_IM_ERR_INTERNAL : 0, NULL);
}


/*
 * The devices' notification of a run for uid (docs/api.md): the read
 * receipt also goes to the peer of a single conversation.
 */
static void
ngx_http_im_conv_notes(ngx_http_im_conv_call_t *cc, ngx_str_t *uid,
    ngx_str_t *extra)
{
    size_t              n;
    ngx_uint_t          i;
    ngx_str_t           peer;
    ngx_http_im_buf_t   detail;
    char                buf[NGX_HTTP_IM_UID_MAX + 1];

    if (cc->route->note == NGX_HTTP_IM_NOTE_NONE
        || ((cc->route->note == NGX_HTTP_IM_NOTE_READ
             || cc->route->note == NGX_HTTP_IM_NOTE_CLEAR)
            && extra->len == 0))
    {
        return;
    }

    ngx_http_im_buf_init(&detail, 256 * 1024);

    switch (cc->route->note) {

    case NGX_HTTP_IM_NOTE_READ:
        ngx_http_im_buf_str(&detail, "{\"markAsReadUserID\":");
        ngx_http_im_buf_json_str(&detail, (char *) uid->data, uid->len);
        ngx_http_im_buf_str(&detail, ",\"conversationID\":");
        ngx_http_im_buf_json_str(&detail, (char *) cc->conv.data,
                                 cc->conv.len);
        ngx_http_im_buf_str(&detail, ",\"seqs\":[");

        for (i = 0; cc->seqs && i < cc->seqs->u.array.len; i++) {
            ngx_http_im_buf_str(&detail, i ? "," : "");
            ngx_http_im_buf_int(&detail,
                         YAJL_GET_INTEGER(cc->seqs->u.array.values[i]));
        }

        ngx_http_im_buf_str(&detail, "],\"hasReadSeq\":");
        ngx_http_im_buf_add(&detail, extra->data, extra->len);
        ngx_http_im_buf_str(&detail, "}");
        break;

    case NGX_HTTP_IM_NOTE_CLEAR:
        ngx_http_im_buf_str(&detail, "{\"conversationIDs\":");
        ngx_http_im_buf_add(&detail, extra->data, extra->len);
        ngx_http_im_buf_str(&detail, "}");
        break;

    case NGX_HTTP_IM_NOTE_DELETE_MSGS:
        ngx_http_im_buf_str(&detail, "{\"conversationID\":");
        ngx_http_im_buf_json_str(&detail, (char *) cc->conv.data,
                                 cc->conv.len);
        ngx_http_im_buf_str(&detail, ",\"seqs\":[");

        for (i = 0; cc->seqs && i < cc->seqs->u.array.len; i++) {
            ngx_http_im_buf_str(&detail, i ? "," : "");
            ngx_http_im_buf_int(&detail,
                         YAJL_GET_INTEGER(cc->seqs->u.array.values[i]));
        }

        ngx_http_im_buf_str(&detail, "]}");
        break;

    default: /* NGX_HTTP_IM_NOTE_CHANGE */
        ngx_http_im_buf_str(&detail, "{\"userID\":");
        ngx_http_im_buf_json_str(&detail, (char *) uid->data, uid->len);
        ngx_http_im_buf_str(&detail, ",\"conversationIDList\":[");
        ngx_http_im_buf_json_str(&detail, (char *) cc->conv.data,
                                 cc->conv.len);
        ngx_http_im_buf_str(&detail, "]}");
    }

    ngx_http_im_conv_notify(uid, uid, cc->conv.len ? &cc->conv : NULL,
                            cc->route->note, &detail);

    if (cc->route->note == NGX_HTTP_IM_NOTE_READ && cc->conv.len > 3
        && ngx_strncmp(cc->conv.data, "si_", 3) == 0)
    {
        n = ngx_http_im_conv_peer((char *) cc->conv.data, cc->conv.len,
                                  (char *) uid->data, uid->len, buf);
        if (n) {
            peer.data = (u_char *) buf;
            peer.len = n;
            ngx_http_im_conv_notify(uid, &peer, &cc->conv, cc->route->note,
                                    &detail);
        }
    }

    ngx_http_im_buf_free(&detail);
}


/* answers (code 0: with api->data) unless the request is gone, frees */
static void
ngx_http_im_conv_end(ngx_http_im_conv_call_t *cc, ngx_int_t code,
    const char *msg)
{
    ngx_http_im_api_t  *api;

    api = cc->api;
    api->conv = NULL;
    ngx_http_im_conv_free(cc);
    ngx_http_im_api_answer(api, code, msg);
}


static void
ngx_http_im_conv_free(ngx_http_im_conv_call_t *cc)
{
    ngx_http_im_buf_free(&cc->args);

    /* set_conversations' users are the call's (api->users) */
    if (cc->only) {
        ngx_free(cc->users);
    }

    ngx_free(cc);
}


/* the routes of this file and revoke.c, after api.c's own */
ngx_http_im_route_t  ngx_http_im_conv_routes[] = {

    { ngx_string("/conversation/get_sorted_conversation_list"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_sorted, NULL },

    { ngx_string("/conversation/get_all_conversations"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_all, NULL },

    { ngx_string("/conversation/get_conversation"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_get, NULL },

    { ngx_string("/conversation/get_conversations"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_get_many, NULL },

    { ngx_string("/conversation/get_owner_conversation"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_owner, NULL },

    { ngx_string("/conversation/set_conversations"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_set, NULL },

    { ngx_string("/conversation/get_full_conversation_ids"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_full_ids, NULL },

    { ngx_string("/conversation/get_incremental_conversations"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_incremental, NULL },

    { ngx_string("/conversation/get_not_notify_conversation_ids"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_not_notify, NULL },

    { ngx_string("/conversation/get_pinned_conversation_ids"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_pinned, NULL },

    { ngx_string("/conversation/delete_conversations"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_delete, NULL },

    { ngx_string("/msg/mark_conversation_as_read"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_mark_read, NULL },

    { ngx_string("/msg/mark_msgs_as_read"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_mark_msgs, NULL },

    { ngx_string("/msg/set_conversation_has_read_seq"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_set_read, NULL },

    { ngx_string("/msg/get_conversations_has_read_and_max_seq"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_seqs, NULL },

    { ngx_string("/msg/delete_msgs"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_delete_msgs, NULL },

    { ngx_string("/msg/clear_conversation_msg"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_clear, NULL },

    { ngx_string("/msg/user_clear_all_msg"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_conv_clear_all, NULL },

    { ngx_string("/msg/revoke_msg"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_msg_revoke, NULL },

    { ngx_string("/msg/delete_msg_physical"), NGX_HTTP_IM_ACCESS_ADMIN,
      ngx_http_im_msg_purge, NULL },

    { ngx_null_string, 0, NULL, NULL }
};
