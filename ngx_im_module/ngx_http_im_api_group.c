
/*
 * ngx_im: REST group routes (docs/api.md, "Groups").  Each route is a row:
 * which group.lua op runs, for which groups.  The request body is the
 * op's arguments (group.lua checks and bounds every field); the caller is
 * the token's user, with an app admin's rights for an admin token.
 *
 * An op that changes membership answers with its effects, carried out
 * here before the call answers: each user who joined or left gets its
 * side in its own slot (conv.lua gjoin/gleave: the joined-groups list,
 * the seqs it may see, the conversation), a joined user's workers
 * subscribe to the group, and the notification goes out: stored in the
 * group (sessionType 3), or only to the users it concerns (seq 0).
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_api.h"
#include "ngx_http_im_store.h"
#include "ngx_http_im_id.h"


#define NGX_HTTP_IM_GR_ONE       0     /* body.groupID (or groupInfo's) */
#define NGX_HTTP_IM_GR_CREATE    1     /* the same, made when empty */
#define NGX_HTTP_IM_GR_LIST      2     /* body.groupIDs */
#define NGX_HTTP_IM_GR_USER      3     /* the groups a conv.lua op lists */
#define NGX_HTTP_IM_GR_MEMBERS   4     /* body.members[], one run each */
#define NGX_HTTP_IM_GR_BATCH     5     /* body.reqList[], one run each */

/* a batch names at most the groups a user's lists hold (conv.lua) */
#define NGX_HTTP_IM_GR_MAX_BATCH 2000

#define NGX_HTTP_IM_GR_EFFECTS   3     /* join, leave, applied */


typedef struct {
    const char                  *op;          /* of group.lua */
    ngx_uint_t                   kind;
    const char                  *user_op;     /* GR_USER: of conv.lua */
    const char                  *owner;       /* GR_USER: the user field */
    const char                  *key;         /* the answers' array */
    const char                  *users;       /* lists to check registered */
} ngx_http_im_group_route_t;


typedef struct {
    ngx_http_im_api_t                *api;
    const ngx_http_im_group_route_t  *route;
    ngx_str_t                         caller;
    ngx_uint_t                        admin;
    ngx_str_t                         gid;
    u_char                            gidbuf[NGX_HTTP_IM_UID_MAX + 1];
    ngx_http_im_buf_t                 args;
    ngx_str_t                         owner;      /* GR_USER */

    /* the runs of the op: gids (GR_LIST, GR_USER) or entries */
    yajl_val                          list;       /* GR_USER's answer */
    yajl_val                          ids;
    ngx_uint_t                        nruns;
    ngx_uint_t                        run;
    ngx_uint_t                        nout;

    /* the effects of a run */
    yajl_val                          effects;
    ngx_uint_t                        stage;
    ngx_uint_t                        item;
    long long                         seq;
} ngx_http_im_group_call_t;


static void ngx_http_im_group_call(ngx_http_im_api_t *api,
    const ngx_http_im_group_route_t *route);
static ngx_int_t ngx_http_im_group_target(ngx_http_im_group_call_t *gc);
static ngx_int_t ngx_http_im_group_runs(ngx_http_im_group_call_t *gc,
    const char *key, ngx_uint_t min, ngx_uint_t max, const char *msg);
static ngx_int_t ngx_http_im_group_set_gid(ngx_http_im_group_call_t *gc,
    const char *id);
static ngx_int_t ngx_http_im_group_check_users(ngx_http_im_group_call_t *gc);
static void ngx_http_im_group_checked(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n);
static ngx_int_t ngx_http_im_group_user_list(ngx_http_im_group_call_t *gc);
static void ngx_http_im_group_listed(void *data,
    ngx_http_im_store_conv_res_t *r);
static void ngx_http_im_group_next(ngx_http_im_group_call_t *gc);
static void ngx_http_im_group_ran(void *data,
    ngx_http_im_store_conv_res_t *r);
static void ngx_http_im_group_collect(ngx_http_im_group_call_t *gc,
    ngx_str_t *answer);
static ngx_int_t ngx_http_im_group_batch_args(ngx_http_im_group_call_t *gc,
    yajl_val entry, ngx_http_im_buf_t *args);
static void ngx_http_im_group_collect_batch(ngx_http_im_group_call_t *gc,
    ngx_str_t *answer);
static void ngx_http_im_group_effects(ngx_http_im_group_call_t *gc);
static void ngx_http_im_group_effect_done(void *data,
    ngx_http_im_store_conv_res_t *r);
static void ngx_http_im_group_note(ngx_http_im_group_call_t *gc);
static void ngx_http_im_group_wrap(ngx_http_im_group_call_t *gc);
static void ngx_http_im_group_end(ngx_http_im_group_call_t *gc,
    ngx_int_t code, const char *msg);


#define ngx_http_im_group_route(name, op, kind, user_op, owner, key, users)  \
    static const ngx_http_im_group_route_t  ngx_http_im_group_##name = {     \
        op, kind, user_op, owner, key, users                                 \
    };                                                                       \
                                                                             \
    static void                                                              \
    ngx_http_im_group_##name##_handler(ngx_http_im_api_t *api)               \
    {                                                                        \
        ngx_http_im_group_call(api, &ngx_http_im_group_##name);              \
    }

ngx_http_im_group_route(create, "create", NGX_HTTP_IM_GR_CREATE, NULL,
                        NULL, NULL, "memberUserIDs")
ngx_http_im_group_route(set_info, "set_info", NGX_HTTP_IM_GR_ONE, NULL, NULL,
                        NULL, NULL)
ngx_http_im_group_route(invite, "invite", NGX_HTTP_IM_GR_ONE, NULL, NULL,
                        NULL, "invitedUserIDs")
ngx_http_im_group_route(join, "join", NGX_HTTP_IM_GR_ONE, NULL, NULL, NULL,
                        NULL)
ngx_http_im_group_route(respond, "respond", NGX_HTTP_IM_GR_ONE, NULL, NULL,
                        NULL, NULL)
ngx_http_im_group_route(quit, "quit", NGX_HTTP_IM_GR_ONE, NULL, NULL, NULL,
                        NULL)
ngx_http_im_group_route(kick, "kick", NGX_HTTP_IM_GR_ONE, NULL, NULL, NULL,
                        NULL)
ngx_http_im_group_route(dismiss, "dismiss", NGX_HTTP_IM_GR_ONE, NULL, NULL,
                        NULL, NULL)
ngx_http_im_group_route(transfer, "transfer", NGX_HTTP_IM_GR_ONE, NULL, NULL,
                        NULL, NULL)
ngx_http_im_group_route(set_member, "set_member", NGX_HTTP_IM_GR_MEMBERS,
                        NULL, NULL, NULL, NULL)
ngx_http_im_group_route(mute, "mute", NGX_HTTP_IM_GR_ONE, NULL, NULL, NULL,
                        NULL)
ngx_http_im_group_route(cancel_mute, "cancel_mute", NGX_HTTP_IM_GR_ONE, NULL,
                        NULL, NULL, NULL)
ngx_http_im_group_route(mute_member, "mute_member", NGX_HTTP_IM_GR_ONE, NULL,
                        NULL, NULL, NULL)
ngx_http_im_group_route(cancel_mute_member, "cancel_mute_member",
                        NGX_HTTP_IM_GR_ONE, NULL, NULL, NULL, NULL)
ngx_http_im_group_route(infos, "info", NGX_HTTP_IM_GR_LIST, NULL, NULL,
                        "groupInfos", NULL)
ngx_http_im_group_route(members, "members", NGX_HTTP_IM_GR_ONE, NULL, NULL,
                        NULL, NULL)
ngx_http_im_group_route(members_info, "members_info", NGX_HTTP_IM_GR_ONE,
                        NULL, NULL, NULL, NULL)
ngx_http_im_group_route(member_ids, "member_ids", NGX_HTTP_IM_GR_ONE, NULL,
                        NULL, NULL, NULL)
ngx_http_im_group_route(members_incr, "members_incr", NGX_HTTP_IM_GR_ONE,
                        NULL, NULL, NULL, NULL)
ngx_http_im_group_route(members_incr_batch, "members_incr",
                        NGX_HTTP_IM_GR_BATCH, NULL, NULL, "respList", NULL)
ngx_http_im_group_route(group_apps, "apps_one", NGX_HTTP_IM_GR_ONE, NULL,
                        NULL, NULL, NULL)
ngx_http_im_group_route(joined, "info", NGX_HTTP_IM_GR_USER, "groups",
                        "fromUserID", "groups", NULL)
ngx_http_im_group_route(joined_ids, NULL, NGX_HTTP_IM_GR_USER, "groups",
                        "userID", NULL, NULL)
ngx_http_im_group_route(joined_incr, "info", NGX_HTTP_IM_GR_USER, "gincr",
                        "userID", "insert", NULL)
ngx_http_im_group_route(recv_apps, "apps", NGX_HTTP_IM_GR_USER, "groups",
                        "fromUserID", "groupRequests", NULL)
ngx_http_im_group_route(own_apps, "apps", NGX_HTTP_IM_GR_USER, "gapplied",
                        "userID", "groupRequests", NULL)


static void
ngx_http_im_group_call(ngx_http_im_api_t *api,
    const ngx_http_im_group_route_t *route)
{
    ngx_http_im_group_call_t  *gc;

    gc = ngx_calloc(sizeof(ngx_http_im_group_call_t), ngx_cycle->log);
    if (gc == NULL) {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    gc->api = api;
    gc->route = route;
    gc->admin = api->claims.platform_id == NGX_HTTP_IM_PLATFORM_ADMIN;
    gc->caller.data = (u_char *) api->claims.user_id;
    gc->caller.len = ngx_strlen(api->claims.user_id);
    api->conv = gc;

    /* the body outlives the request in this copy; the op reads it */
    ngx_http_im_buf_init(&gc->args, NGX_HTTP_IM_API_MAX_BODY + 64);
    ngx_http_im_buf_add(&gc->args, api->body.data, api->body.len);

    if (gc->args.failed) {
        ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    if (route->kind == NGX_HTTP_IM_GR_USER) {
        if (ngx_http_im_group_user_list(gc) != NGX_OK) {
            ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        }
        return;
    }

    if (ngx_http_im_group_target(gc) != NGX_OK) {
        return;
    }

    if (route->users) {
        if (ngx_http_im_group_check_users(gc) != NGX_OK) {
            ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        }
        return;
    }

    ngx_http_im_group_next(gc);
}


/*
 * The groups the call runs for.  An admin token acts for body.userID
 * where one is named (joining or quitting for a user).
 */
static ngx_int_t
ngx_http_im_group_target(ngx_http_im_group_call_t *gc)
{
    char                 err[128];
    yajl_val             root, info;
    ngx_uint_t           i;
    ngx_http_im_str_t    id;

    root = gc->api->root;

    if (gc->admin
        && ngx_http_im_json_get_str(root, "userID", 0, &id, err,
                                    sizeof(err)) == 0
        && ngx_http_im_user_id_valid(id.data, id.len))
    {
        gc->caller.data = (u_char *) id.data;
        gc->caller.len = id.len;
    }

    switch (gc->route->kind) {

    case NGX_HTTP_IM_GR_LIST:
        if (ngx_http_im_json_get_array(root, "groupIDs", 1, &gc->ids, err,
                                       sizeof(err)) != 0
            || gc->ids->u.array.len == 0
            || gc->ids->u.array.len > NGX_HTTP_IM_MAX_LIST)
        {
            goto invalid_list;
        }

        for (i = 0; i < gc->ids->u.array.len; i++) {
            if (!YAJL_IS_STRING(gc->ids->u.array.values[i])) {
                goto invalid_list;
            }
        }

        gc->nruns = gc->ids->u.array.len;
        return NGX_OK;

    case NGX_HTTP_IM_GR_MEMBERS:
        return ngx_http_im_group_runs(gc, "members", 1, NGX_HTTP_IM_MAX_LIST,
                                      "field \"members\" must be an array "
                                      "of 1..1000 members");

    case NGX_HTTP_IM_GR_BATCH:
        return ngx_http_im_group_runs(gc, "reqList", 0,
                                      NGX_HTTP_IM_GR_MAX_BATCH,
                                      "field \"reqList\" must be an array "
                                      "of at most 2000 {groupID, version, "
                                      "versionID}");

    default:
        break;
    }

    gc->nruns = 1;

    if (ngx_http_im_json_get_str(root, "groupID", 0, &id, err, sizeof(err))
        != 0)
    {
        ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_ARGS, err);
        return NGX_ERROR;
    }

    if (id.len == 0
        && ngx_http_im_json_get_object(root, "groupInfo", 0, &info, err,
                                       sizeof(err)) == 0
        && info
        && ngx_http_im_json_get_str(info, "groupID", 0, &id, err,
                                    sizeof(err)) != 0)
    {
        ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_ARGS, err);
        return NGX_ERROR;
    }

    if (id.len == 0 && gc->route->kind == NGX_HTTP_IM_GR_CREATE) {
        ngx_http_im_id_format(ngx_http_im_worker->id_prefix,
                              ++ngx_http_im_worker->id_counter,
                              (char *) gc->gidbuf);
        gc->gid.data = gc->gidbuf;
        gc->gid.len = NGX_HTTP_IM_ID_LEN;
        return NGX_OK;
    }

    return ngx_http_im_group_set_gid(gc, id.data);

invalid_list:

    ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_ARGS, "field \"groupIDs\" "
                          "must be an array of 1..1000 group IDs");
    return NGX_ERROR;
}


/* one run for each element of the body's array "key" (min..max long) */
static ngx_int_t
ngx_http_im_group_runs(ngx_http_im_group_call_t *gc, const char *key,
    ngx_uint_t min, ngx_uint_t max, const char *msg)
{
    char  err[128];

    if (ngx_http_im_json_get_array(gc->api->root, key, 1, &gc->ids, err,
                                   sizeof(err)) != 0
        || gc->ids->u.array.len < min
        || gc->ids->u.array.len > max)
    {
        ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_ARGS, msg);
        return NGX_ERROR;
    }

    gc->nruns = gc->ids->u.array.len;
    return NGX_OK;
}


static ngx_int_t
ngx_http_im_group_set_gid(ngx_http_im_group_call_t *gc, const char *id)
{
    size_t  len;

    len = id ? ngx_strlen(id) : 0;

    if (!ngx_http_im_user_id_valid(id, len)) {
        ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_ARGS, "field \"groupID\" "
                              "must be a valid group ID");
        return NGX_ERROR;
    }

    ngx_memcpy(gc->gidbuf, id, len);
    gc->gid.data = gc->gidbuf;
    gc->gid.len = len;

    return NGX_OK;
}


/* the users a create or invite names must be registered (1101) */
static ngx_int_t
ngx_http_im_group_check_users(ngx_http_im_group_call_t *gc)
{
    char               err[64];
    yajl_val           list[2];
    ngx_uint_t         i, k, n[2];
    ngx_str_t         *users;
    ngx_http_im_str_t  owner;

    list[0] = ngx_http_im_json_get(gc->api->root, gc->route->users);
    list[1] = gc->route->kind == NGX_HTTP_IM_GR_CREATE
              ? ngx_http_im_json_get(gc->api->root, "adminUserIDs") : NULL;

    for (k = 0; k < 2; k++) {
        n[k] = list[k] && YAJL_IS_ARRAY(list[k]) ? list[k]->u.array.len : 0;

        if (n[k] > NGX_HTTP_IM_MAX_LIST) {
            /* group.lua refuses it */
            ngx_http_im_group_next(gc);
            return NGX_OK;
        }
    }

    users = ngx_alloc((n[0] + n[1] + 1) * sizeof(ngx_str_t), ngx_cycle->log);
    if (users == NULL) {
        return NGX_ERROR;
    }

    gc->api->users = users;
    gc->api->nusers = 0;

    for (k = 0; k < 2; k++) {
    for (i = 0; i < n[k]; i++) {
        users[gc->api->nusers] =
            ngx_http_im_api_str(list[k]->u.array.values[i]);

        if (users[gc->api->nusers].len) {
            gc->api->nusers++;
        }
    }
    }

    if (gc->route->kind == NGX_HTTP_IM_GR_CREATE
        && ngx_http_im_json_get_str(gc->api->root, "ownerUserID", 0, &owner,
                                    err, sizeof(err)) == 0
        && owner.len)
    {
        users[gc->api->nusers].data = (u_char *) owner.data;
        users[gc->api->nusers++].len = owner.len;
    }

    if (gc->api->nusers == 0) {
        ngx_http_im_group_next(gc);
        return NGX_OK;
    }

    return ngx_http_im_store_users_info(users, gc->api->nusers,
                                        ngx_http_im_group_checked, gc);
}


static void
ngx_http_im_group_checked(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n)
{
    ngx_http_im_group_call_t  *gc = data;

    u_char      msg[NGX_HTTP_IM_UID_MAX + 32];
    ngx_uint_t  i;

    if (err) {
        ngx_http_im_group_end(gc, err, NULL);
        return;
    }

    for (i = 0; i < n; i++) {
        if (!users[i].found) {
            ngx_snprintf(msg, sizeof(msg), "user not found: %V%Z",
                         &users[i].user_id);
            ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_USER_ID,
                                  (char *) msg);
            return;
        }
    }

    ngx_http_im_group_next(gc);
}


/* GR_USER: the user's groups first (a user token names itself only) */
static ngx_int_t
ngx_http_im_group_user_list(ngx_http_im_group_call_t *gc)
{
    char               err[128];
    ngx_str_t          args;
    ngx_http_im_str_t  id;
    ngx_http_im_buf_t  b;
    ngx_int_t          rc;
    long long          v;

    if (ngx_http_im_json_get_str(gc->api->root, gc->route->owner, 0, &id,
                                 err, sizeof(err)) != 0)
    {
        ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_ARGS, err);
        return NGX_OK;
    }

    if (id.len == 0) {
        id.data = (char *) gc->caller.data;
        id.len = gc->caller.len;
    }

    if (!ngx_http_im_user_id_valid(id.data, id.len)) {
        ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_ARGS, "a valid user ID "
                              "is required");
        return NGX_OK;
    }

    if (!gc->admin && (id.len != gc->caller.len
                       || ngx_strncmp(id.data, gc->caller.data, id.len) != 0))
    {
        ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_PERMISSION, "a user token "
                              "may act for its own user only");
        return NGX_OK;
    }

    gc->owner.data = (u_char *) id.data;
    gc->owner.len = id.len;

    /* the per-group runs read as this user */
    gc->caller = gc->owner;
    gc->admin = 0;

    ngx_http_im_buf_init(&b, 1024);
    ngx_http_im_buf_str(&b, "{\"v\":");
    v = 0;
    (void) ngx_http_im_json_get_int(gc->api->root, "version", 0, &v, err,
                                    sizeof(err));
    ngx_http_im_buf_int(&b, v);
    ngx_http_im_buf_str(&b, ",\"id\":");

    if (ngx_http_im_json_get_str(gc->api->root, "versionID", 0, &id, err,
                                 sizeof(err)) != 0)
    {
        id.data = "";
        id.len = 0;
    }

    ngx_http_im_buf_json_str(&b, id.data, ngx_min(id.len, 128));
    ngx_http_im_buf_str(&b, "}");

    args.data = b.data;
    args.len = b.len;

    rc = b.failed ? NGX_DECLINED
                  : ngx_http_im_store_conv(&gc->owner, gc->route->user_op,
                                           &args, ngx_http_im_group_listed,
                                           gc);
    ngx_http_im_buf_free(&b);

    return rc;
}


static void
ngx_http_im_group_listed(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_group_call_t  *gc = data;

    char  err[64];

    if (r->err) {
        ngx_http_im_group_end(gc, r->err, NULL);
        return;
    }

    if (gc->route->op == NULL) {
        /* the list is the answer */
        ngx_http_im_buf_add(&gc->api->data, r->answer.data, r->answer.len);
        ngx_http_im_group_end(gc, 0, NULL);
        return;
    }

    gc->list = ngx_http_im_json_parse(r->answer.data, r->answer.len, err,
                                      sizeof(err));
    gc->ids = gc->list ? ngx_http_im_json_get(gc->list, "groupIDs") : NULL;

    if (gc->ids == NULL || !YAJL_IS_ARRAY(gc->ids)) {
        ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    gc->nruns = ngx_min(gc->ids->u.array.len, NGX_HTTP_IM_USER_MAX_GROUPS);
    ngx_http_im_buf_str(&gc->args, "");
    gc->args.len = 0;
    ngx_http_im_buf_str(&gc->args, "{}");

    ngx_http_im_group_next(gc);
}


/* the next run of the op, or the answer */
static void
ngx_http_im_group_next(ngx_http_im_group_call_t *gc)
{
    ngx_str_t   args;
    ngx_int_t   rc;
    yajl_val    v;
    u_char     *p;

    if (gc->run == gc->nruns) {
        ngx_http_im_group_wrap(gc);
        return;
    }

    args.data = gc->args.data;
    args.len = gc->args.len;

    if (gc->ids) {
        v = gc->ids->u.array.values[gc->run];

        if (gc->route->kind == NGX_HTTP_IM_GR_MEMBERS) {
            if (!YAJL_IS_OBJECT(v)
                || ngx_http_im_group_set_gid(gc, (char *)
                       ngx_http_im_api_str(ngx_http_im_json_get(v,
                                                        "groupID")).data)
                   != NGX_OK)
            {
                if (YAJL_IS_OBJECT(v)) {
                    return;
                }

                ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_ARGS, "field "
                                      "\"members\" must hold objects");
                return;
            }

            /* {"index": k, "body": the body}: group.lua takes entry k */
            p = ngx_alloc(gc->args.len + 64, ngx_cycle->log);
            if (p == NULL) {
                ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_INTERNAL, NULL);
                return;
            }

            args.data = p;
            args.len = ngx_sprintf(p, "{\"index\":%ui,\"body\":%*s}",
                                   gc->run, gc->args.len, gc->args.data)
                       - p;
            gc->run++;

            rc = ngx_http_im_store_group(&gc->gid, gc->route->op,
                                         &gc->caller, gc->admin, &args,
                                         ngx_http_im_group_ran, gc);
            ngx_free(p);
            goto sent;
        }

        if (gc->route->kind == NGX_HTTP_IM_GR_BATCH) {
            v = YAJL_IS_OBJECT(v) ? ngx_http_im_json_get(v, "groupID")
                                  : NULL;
        }

        gc->gid = ngx_http_im_api_str(v);

        if (!ngx_http_im_user_id_valid((char *) gc->gid.data, gc->gid.len))
        {
            /* no such group: left out of a list */
            gc->run++;
            ngx_http_im_group_next(gc);
            return;
        }
    }

    gc->run++;

    if (gc->route->kind == NGX_HTTP_IM_GR_BATCH) {
        /* the entry's own version is the op's body */
        ngx_http_im_buf_t  b;

        if (ngx_http_im_group_batch_args(gc, gc->ids->u.array.values[
                                             gc->run - 1], &b) != NGX_OK)
        {
            return;
        }

        args.data = b.data;
        args.len = b.len;
        rc = ngx_http_im_store_group(&gc->gid, gc->route->op, &gc->caller,
                                     gc->admin, &args, ngx_http_im_group_ran,
                                     gc);
        ngx_http_im_buf_free(&b);
        goto sent;
    }

    rc = ngx_http_im_store_group(&gc->gid, gc->route->op, &gc->caller,
                                 gc->admin, &args, ngx_http_im_group_ran, gc);

sent:

    if (rc != NGX_OK) {
        ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


static void
ngx_http_im_group_ran(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_group_call_t  *gc = data;

    char  err[64];

    if (gc->route->kind == NGX_HTTP_IM_GR_LIST
        || gc->route->kind == NGX_HTTP_IM_GR_USER
        || gc->route->kind == NGX_HTTP_IM_GR_BATCH)
    {
        /* a group gone meanwhile, or not readable: left out */
        if (r->err == 0 && gc->route->kind == NGX_HTTP_IM_GR_BATCH) {
            ngx_http_im_group_collect_batch(gc, &r->answer);

        } else if (r->err == 0) {
            ngx_http_im_group_collect(gc, &r->answer);

        } else if (r->err == NGX_HTTP_IM_ERR_UNAVAILABLE
                   || r->err == NGX_HTTP_IM_ERR_INTERNAL)
        {
            ngx_http_im_group_end(gc, r->err, NULL);
            return;
        }

        ngx_http_im_group_next(gc);
        return;
    }

    if (r->err) {
        ngx_http_im_group_end(gc, r->err,
                              r->msg.len ? (char *) r->msg.data : NULL);
        return;
    }

    if (gc->route->kind != NGX_HTTP_IM_GR_MEMBERS) {
        ngx_http_im_buf_add(&gc->api->data, r->answer.data, r->answer.len);
    }

    gc->effects = ngx_http_im_json_parse(r->extra.data, r->extra.len, err,
                                         sizeof(err));
    gc->stage = 0;
    gc->item = 0;

    if (gc->effects) {
        (void) ngx_http_im_json_get_int(gc->effects, "seq", 0, &gc->seq,
                                        err, sizeof(err));
    }

    ngx_http_im_group_effects(gc);
}


/* one answer of a list: an object, or an array's elements ("null" and
 * "[]" add nothing) */
static void
ngx_http_im_group_collect(ngx_http_im_group_call_t *gc, ngx_str_t *answer)
{
    char       err[64];
    yajl_val   v;
    ngx_str_t  a;

    a = *answer;

    if (a.len == 0 || (a.len == 4 && ngx_strncmp(a.data, "null", 4) == 0)
        || (a.len == 2 && ngx_strncmp(a.data, "[]", 2) == 0))
    {
        return;
    }

    if (a.data[0] == '[') {
        v = ngx_http_im_json_parse(a.data, a.len, err, sizeof(err));
        gc->nout += v && YAJL_IS_ARRAY(v) ? v->u.array.len : 0;

        if (v) {
            yajl_tree_free(v);
        }

        a.data++;
        a.len -= 2;

    } else {
        gc->nout++;
    }

    ngx_http_im_buf_str(&gc->api->data, gc->api->data.len ? "," : "");
    ngx_http_im_buf_add(&gc->api->data, a.data, a.len);
}


/* {"groupID","version","versionID"} of a batch's entry, in a new buffer;
 * a malformed entry ends the call with 1001 */
static ngx_int_t
ngx_http_im_group_batch_args(ngx_http_im_group_call_t *gc, yajl_val entry,
    ngx_http_im_buf_t *args)
{
    char                err[128];
    long long           version;
    ngx_http_im_str_t   vid;

    version = 0;
    vid.data = "";
    vid.len = 0;

    if (ngx_http_im_json_get_int(entry, "version", 0, &version, err,
                                 sizeof(err)) != 0
        || ngx_http_im_json_get_str(entry, "versionID", 0, &vid, err,
                                    sizeof(err)) != 0)
    {
        ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_ARGS, "field \"reqList\" "
                              "entries need an integer version and a string "
                              "versionID");
        return NGX_ERROR;
    }

    ngx_http_im_buf_init(args, NGX_HTTP_IM_API_MAX_BODY);
    ngx_http_im_buf_str(args, "{\"groupID\":");
    ngx_http_im_buf_json_str(args, (char *) gc->gid.data, gc->gid.len);
    ngx_http_im_buf_str(args, ",\"version\":");
    ngx_http_im_buf_int(args, version);
    ngx_http_im_buf_str(args, ",\"versionID\":");
    ngx_http_im_buf_json_str(args, vid.data, vid.len);
    ngx_http_im_buf_str(args, "}");

    if (args->failed) {
        ngx_http_im_buf_free(args);
        ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* one group's answer of a batch, as "groupID":answer; past the budget
 * the group is left out (the client asks for it again at its next sync) */
static void
ngx_http_im_group_collect_batch(ngx_http_im_group_call_t *gc,
    ngx_str_t *answer)
{
    ngx_http_im_buf_t  *b;

    b = &gc->api->data;

    if (answer->len == 0
        || b->len + answer->len + gc->gid.len + 8 > NGX_HTTP_IM_CONV_BUDGET)
    {
        return;
    }

    ngx_http_im_buf_str(b, b->len ? "," : "");
    ngx_http_im_buf_json_str(b, (char *) gc->gid.data, gc->gid.len);
    ngx_http_im_buf_str(b, ":");
    ngx_http_im_buf_add(b, answer->data, answer->len);
}


/*
 * The effects, one user at a time: stage 0 the users who joined
 * ({uid: first visible seq}), 1 those who left ({uid: last visible
 * seq}), 2 those who applied ([uid]); then the notification.
 */
static void
ngx_http_im_group_effects(ngx_http_im_group_call_t *gc)
{
    static const char  *names[] = { "join", "leave", "applied" };
    static const char  *ops[] = { "gjoin", "gleave", "gapply" };

    ngx_str_t           uid, args;
    yajl_val            set, v;
    ngx_uint_t          n;
    ngx_http_im_buf_t   b;
    ngx_int_t           rc;

    for ( /* void */ ; gc->effects && gc->stage < NGX_HTTP_IM_GR_EFFECTS;
         gc->stage++, gc->item = 0)
    {
        set = ngx_http_im_json_get(gc->effects, names[gc->stage]);

        n = set == NULL ? 0
            : YAJL_IS_OBJECT(set) ? set->u.object.len
            : YAJL_IS_ARRAY(set) ? set->u.array.len : 0;

        if (gc->item >= n) {
            continue;
        }

        if (YAJL_IS_OBJECT(set)) {
            uid.data = (u_char *) set->u.object.keys[gc->item];
            v = set->u.object.values[gc->item];

        } else {
            uid = ngx_http_im_api_str(set->u.array.values[gc->item]);
            v = NULL;
        }

        if (v) {
            uid.len = ngx_strlen(uid.data);
        }
        gc->item++;

        if (!ngx_http_im_user_id_valid((char *) uid.data, uid.len)) {
            ngx_http_im_group_effects(gc);
            return;
        }

        ngx_http_im_buf_init(&b, 1024);
        ngx_http_im_buf_str(&b, "{\"g\":");
        ngx_http_im_buf_json_str(&b, (char *) gc->gid.data, gc->gid.len);
        ngx_http_im_buf_str(&b, gc->stage == 1 ? ",\"to\":" : ",\"from\":");
        ngx_http_im_buf_int(&b, v && YAJL_IS_INTEGER(v) ? YAJL_GET_INTEGER(v)
                                                        : 1);
        ngx_http_im_buf_str(&b, ",\"s\":");
        ngx_http_im_buf_int(&b, gc->seq);
        ngx_http_im_buf_str(&b, "}");

        args.data = b.data;
        args.len = b.len;

        if (gc->stage == 0) {
            /* its workers subscribe to the group (a login loading its
             * groups meanwhile finds it in the list as well) */
            ngx_http_im_store_group_joined(&uid, &gc->gid);
        }

        rc = b.failed ? NGX_DECLINED
                      : ngx_http_im_store_conv(&uid, ops[gc->stage], &args,
                                               ngx_http_im_group_effect_done,
                                               gc);
        ngx_http_im_buf_free(&b);

        if (rc != NGX_OK) {
            ngx_http_im_group_end(gc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        }

        return;
    }

    ngx_http_im_group_note(gc);

    if (gc->effects) {
        yajl_tree_free(gc->effects);
        gc->effects = NULL;
    }

    if (gc->route->kind == NGX_HTTP_IM_GR_MEMBERS && gc->run < gc->nruns) {
        ngx_http_im_group_next(gc);
        return;
    }

    ngx_http_im_group_wrap(gc);
}


static void
ngx_http_im_group_effect_done(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_group_call_t  *gc = data;

    if (r->err) {
        /*
         * The group's side is done; a user's side failed (Redis went
         * away).  The caller retries the op; a join retried finds the
         * member and answers 1001, so say what happened.
         */
        ngx_http_im_group_end(gc, r->err, "the group changed, but a "
                              "member's side failed: retry");
        return;
    }

    ngx_http_im_group_effects(gc);
}


/* the effects' notification: stored in the group, and/or told to users */
static void
ngx_http_im_group_note(ngx_http_im_group_call_t *gc)
{
    char               err[64];
    ngx_str_t          uid, conv;
    yajl_val           tell, v;
    ngx_uint_t         i;
    long long          type;
    ngx_http_im_str_t  tips;
    ngx_http_im_buf_t  detail;
    int                only;
    u_char             cbuf[NGX_HTTP_IM_UID_MAX + 4];

    if (gc->effects == NULL
        || ngx_http_im_json_get_int(gc->effects, "note", 1, &type, err,
                                    sizeof(err)) != 0
        || ngx_http_im_json_get_str(gc->effects, "tips", 1, &tips, err,
                                    sizeof(err)) != 0)
    {
        return;
    }

    only = 0;
    (void) ngx_http_im_json_get_bool(gc->effects, "only", 0, &only, err,
                                     sizeof(err));

    ngx_http_im_buf_init(&detail, 0);
    ngx_http_im_buf_add(&detail, tips.data, tips.len);

    if (!only) {
        ngx_http_im_group_notify(&gc->caller, &gc->gid, type, &detail);
    }

    conv.data = cbuf;
    conv.len = ngx_sprintf(cbuf, "sg_%V", &gc->gid) - cbuf;

    tell = ngx_http_im_json_get(gc->effects, "tell");

    for (i = 0; tell && YAJL_IS_ARRAY(tell) && i < tell->u.array.len
                && i < NGX_HTTP_IM_MAX_LIST; i++)
    {
        v = tell->u.array.values[i];

        uid = ngx_http_im_api_str(v);

        if (uid.len) {
            ngx_http_im_notify(&gc->caller, &uid, &conv, type, &detail);
        }
    }

    ngx_http_im_buf_free(&detail);
}


/* the answer of a list: {"<key>": [...]} with its total */
static void
ngx_http_im_group_wrap(ngx_http_im_group_call_t *gc)
{
    yajl_val           v;
    ngx_str_t          id;
    ngx_uint_t         i;
    ngx_http_im_buf_t  b;

    if (gc->route->key == NULL) {
        ngx_http_im_group_end(gc, 0, NULL);
        return;
    }

    ngx_http_im_buf_init(&b, NGX_HTTP_IM_CONV_BUDGET + 4096);
    ngx_http_im_buf_str(&b, "{");

    if (gc->route->kind == NGX_HTTP_IM_GR_BATCH) {
        /* {"respList":{"<groupID>":{version, versionID, full, ...}}} */
        ngx_http_im_buf_str(&b, "\"respList\":{");
        ngx_http_im_buf_add(&b, gc->api->data.data, gc->api->data.len);
        ngx_http_im_buf_str(&b, "}}");
        goto done;
    }

    if (gc->list && ngx_strcmp(gc->route->user_op, "gincr") == 0) {
        /* the version log's head, from conv.lua's answer */
        ngx_http_im_buf_str(&b, "\"version\":");
        v = ngx_http_im_json_get(gc->list, "version");
        ngx_http_im_buf_int(&b, v && YAJL_IS_INTEGER(v)
                                ? YAJL_GET_INTEGER(v) : 0);
        ngx_http_im_buf_str(&b, ",\"versionID\":");
        id = ngx_http_im_api_str(ngx_http_im_json_get(gc->list,
                                                        "versionID"));
        ngx_http_im_buf_json_str(&b, (char *) id.data, id.len);
        v = ngx_http_im_json_get(gc->list, "full");
        ngx_http_im_buf_str(&b, YAJL_IS_TRUE(v) ? ",\"full\":true"
                                                : ",\"full\":false");
        ngx_http_im_buf_str(&b, ",\"update\":[],\"delete\":[");
        v = ngx_http_im_json_get(gc->list, "delete");

        for (i = 0; v && YAJL_IS_ARRAY(v) && i < v->u.array.len; i++) {
            id = ngx_http_im_api_str(v->u.array.values[i]);
            ngx_http_im_buf_str(&b, i ? "," : "");
            ngx_http_im_buf_json_str(&b, (char *) id.data, id.len);
        }

        ngx_http_im_buf_str(&b, "],");

    } else {
        ngx_http_im_buf_str(&b, "\"total\":");
        ngx_http_im_buf_int(&b, gc->nout);
        ngx_http_im_buf_str(&b, ",");
    }

    ngx_http_im_buf_str(&b, "\"");
    ngx_http_im_buf_str(&b, gc->route->key);
    ngx_http_im_buf_str(&b, "\":[");
    ngx_http_im_buf_add(&b, gc->api->data.data, gc->api->data.len);
    ngx_http_im_buf_str(&b, "]}");

done:

    gc->api->data.len = 0;
    ngx_http_im_buf_add(&gc->api->data, b.data, b.len);
    ngx_http_im_group_end(gc, b.failed ? NGX_HTTP_IM_ERR_INTERNAL : 0,
                          b.failed ? "the answer is too large" : NULL);
    ngx_http_im_buf_free(&b);
}



/* answers (code 0: with api->data) unless the request is gone, frees */
static void
ngx_http_im_group_end(ngx_http_im_group_call_t *gc, ngx_int_t code,
    const char *msg)
{
    ngx_http_im_api_t  *api;

    api = gc->api;
    api->conv = NULL;

    if (gc->list) {
        yajl_tree_free(gc->list);
    }

    if (gc->effects) {
        yajl_tree_free(gc->effects);
    }

    ngx_http_im_buf_free(&gc->args);
    ngx_free(gc);

    ngx_http_im_api_answer(api, code, msg);
}


ngx_http_im_route_t  ngx_http_im_group_routes[] = {

    { ngx_string("/group/create_group"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_create_handler, NULL },
    { ngx_string("/group/set_group_info"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_set_info_handler, NULL },
    { ngx_string("/group/set_group_info_ex"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_set_info_handler, NULL },
    { ngx_string("/group/invite_user_to_group"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_invite_handler, NULL },
    { ngx_string("/group/join_group"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_join_handler, NULL },
    { ngx_string("/group/group_application_response"),
      NGX_HTTP_IM_ACCESS_USER, ngx_http_im_group_respond_handler, NULL },
    { ngx_string("/group/quit_group"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_quit_handler, NULL },
    { ngx_string("/group/kick_group"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_kick_handler, NULL },
    { ngx_string("/group/dismiss_group"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_dismiss_handler, NULL },
    { ngx_string("/group/transfer_group"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_transfer_handler, NULL },
    { ngx_string("/group/set_group_member_info"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_set_member_handler, NULL },
    { ngx_string("/group/mute_group"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_mute_handler, NULL },
    { ngx_string("/group/cancel_mute_group"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_cancel_mute_handler, NULL },
    { ngx_string("/group/mute_group_member"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_mute_member_handler, NULL },
    { ngx_string("/group/cancel_mute_group_member"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_cancel_mute_member_handler, NULL },
    { ngx_string("/group/get_groups_info"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_infos_handler, NULL },
    { ngx_string("/group/get_group_member_list"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_members_handler, NULL },
    { ngx_string("/group/get_group_members_info"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_members_info_handler, NULL },
    { ngx_string("/group/get_full_group_member_user_ids"),
      NGX_HTTP_IM_ACCESS_USER, ngx_http_im_group_member_ids_handler, NULL },
    { ngx_string("/group/get_incremental_group_members"),
      NGX_HTTP_IM_ACCESS_USER, ngx_http_im_group_members_incr_handler, NULL },
    { ngx_string("/group/get_incremental_group_members_batch"),
      NGX_HTTP_IM_ACCESS_USER, ngx_http_im_group_members_incr_batch_handler,
      NULL },
    { ngx_string("/group/get_group_users_req_application_list"),
      NGX_HTTP_IM_ACCESS_USER, ngx_http_im_group_group_apps_handler, NULL },
    { ngx_string("/group/get_specified_user_group_request_info"),
      NGX_HTTP_IM_ACCESS_USER, ngx_http_im_group_group_apps_handler, NULL },
    { ngx_string("/group/get_joined_group_list"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_joined_handler, NULL },
    { ngx_string("/group/get_full_join_group_ids"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_group_joined_ids_handler, NULL },
    { ngx_string("/group/get_incremental_join_groups"),
      NGX_HTTP_IM_ACCESS_USER, ngx_http_im_group_joined_incr_handler, NULL },
    { ngx_string("/group/get_recv_group_applicationList"),
      NGX_HTTP_IM_ACCESS_USER, ngx_http_im_group_recv_apps_handler, NULL },
    { ngx_string("/group/get_user_req_group_applicationList"),
      NGX_HTTP_IM_ACCESS_USER, ngx_http_im_group_own_apps_handler, NULL },

    { ngx_null_string, 0, NULL, NULL }
};
