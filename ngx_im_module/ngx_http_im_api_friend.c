
/*
 * ngx_im: REST friend, blacklist and profile routes (docs/api.md,
 * "Friends").  Each route is a row: which friend.lua op runs, in which
 * user's slot (the owner), and which body field names the user who acts.
 * The request body is the op's arguments (friend.lua checks and bounds
 * every field).
 *
 * An op answers with its effects, carried out here before the call
 * answers: ops in other users' slots (a friend application is kept by
 * both sides), then notifications: stored in the notification
 * conversation of the two users (sn_, so they are pulled like any
 * message), or pushed to many users unstored (a profile change to the
 * user's friends).  Answers that name users get their profiles filled.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_api.h"
#include "ngx_http_im_store.h"
#include "ngx_http_im_id.h"


#define NGX_HTTP_IM_FR_ADMIN     1     /* an admin token only */
#define NGX_HTTP_IM_FR_PAIR      2     /* "has" in both users' slots */

/* peers an op names, notes it sends: friend.lua's lists are bounded by
 * the ID lists it takes */
#define NGX_HTTP_IM_FR_MAX_EFFECTS  NGX_HTTP_IM_MAX_LIST


typedef struct {
    const char                  *op;          /* of friend.lua */
    const char                  *owner;       /* body field: whose slot */
    const char                  *actor;       /* body field: who acts */
    const char                  *users;       /* must be registered */
    ngx_uint_t                   flags;
} ngx_http_im_friend_route_t;


typedef struct {
    ngx_http_im_api_t                 *api;
    const ngx_http_im_friend_route_t  *route;
    ngx_str_t                          owner;
    ngx_str_t                          caller;
    ngx_uint_t                         admin;
    ngx_str_t                          args;
    yajl_val                           effects;
    ngx_uint_t                         item;
    yajl_val                           answer;    /* being filled */
    ngx_uint_t                         pair;      /* PAIR: runs done */
    ngx_http_im_buf_t                  out;
} ngx_http_im_friend_call_t;


static void ngx_http_im_friend_call(ngx_http_im_api_t *api,
    const ngx_http_im_friend_route_t *route);
static ngx_int_t ngx_http_im_friend_who(ngx_http_im_friend_call_t *fc);
static ngx_str_t ngx_http_im_friend_field(yajl_val root, const char *path);
static ngx_int_t ngx_http_im_friend_check_users(
    ngx_http_im_friend_call_t *fc);
static void ngx_http_im_friend_checked(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n);
static void ngx_http_im_friend_run(ngx_http_im_friend_call_t *fc);
static void ngx_http_im_friend_ran(void *data,
    ngx_http_im_store_conv_res_t *r);
static void ngx_http_im_friend_pair_ran(void *data,
    ngx_http_im_store_conv_res_t *r);
static void ngx_http_im_friend_peers(ngx_http_im_friend_call_t *fc);
static void ngx_http_im_friend_peer_done(void *data,
    ngx_http_im_store_conv_res_t *r);
static void ngx_http_im_friend_notes(ngx_http_im_friend_call_t *fc);
static void ngx_http_im_friend_tell(ngx_http_im_friend_call_t *fc);
static void ngx_http_im_friend_renamed(ngx_http_im_friend_call_t *fc);
static void ngx_http_im_friend_fill(ngx_http_im_friend_call_t *fc,
    ngx_str_t *answer);
static ngx_uint_t ngx_http_im_friend_names(yajl_val v, ngx_uint_t depth,
    ngx_str_t *ids, ngx_uint_t n, ngx_uint_t max,
    ngx_http_im_store_user_t *users);
static void ngx_http_im_friend_filled(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n);
static void ngx_http_im_friend_end(ngx_http_im_friend_call_t *fc,
    ngx_int_t code, const char *msg);


#define ngx_http_im_friend_route(name, op, owner, actor, users, flags)       \
    static const ngx_http_im_friend_route_t  ngx_http_im_friend_##name = {   \
        op, owner, actor, users, flags                                       \
    };                                                                       \
                                                                             \
    static void                                                              \
    ngx_http_im_friend_##name##_handler(ngx_http_im_api_t *api)              \
    {                                                                        \
        ngx_http_im_friend_call(api, &ngx_http_im_friend_##name);            \
    }

/* an application is kept by both: it runs in the slot of its target */
ngx_http_im_friend_route(add, "add", "toUserID", "fromUserID", "toUserID", 0)
ngx_http_im_friend_route(respond, "respond", "toUserID", NULL, NULL, 0)
ngx_http_im_friend_route(apps_in, "apps_in", "userID", NULL, NULL, 0)
ngx_http_im_friend_route(apps_out, "apps_out", "userID", NULL, NULL, 0)
ngx_http_im_friend_route(app_one, "app_one", "toUserID", "fromUserID", NULL,
                         0)
ngx_http_im_friend_route(unhandled, "unhandled", "userID", NULL, NULL, 0)
ngx_http_im_friend_route(delete, "delete", "ownerUserID", NULL, NULL, 0)
ngx_http_im_friend_route(list, "list", "userID", NULL, NULL, 0)
ngx_http_im_friend_route(designated, "designated", "ownerUserID", NULL,
                         NULL, 0)
ngx_http_im_friend_route(specified, "specified", "ownerUserID", NULL, NULL,
                         0)
ngx_http_im_friend_route(remark, "remark", "ownerUserID", NULL, NULL, 0)
ngx_http_im_friend_route(update, "update", "ownerUserID", NULL, NULL, 0)
ngx_http_im_friend_route(is_friend, "has", "userID1", "userID2", NULL,
                         NGX_HTTP_IM_FR_PAIR)
ngx_http_im_friend_route(ids, "ids", "userID", NULL, NULL, 0)
ngx_http_im_friend_route(import, "import", "ownerUserID", NULL,
                         "friendUserIDs", NGX_HTTP_IM_FR_ADMIN)
ngx_http_im_friend_route(incr, "incr", "userID", NULL, NULL, 0)
ngx_http_im_friend_route(full_ids, "full_ids", "userID", NULL, NULL, 0)
ngx_http_im_friend_route(black_add, "black_add", "ownerUserID", NULL,
                         "blackUserID", 0)
ngx_http_im_friend_route(black_remove, "black_remove", "ownerUserID", NULL,
                         NULL, 0)
ngx_http_im_friend_route(blacks, "blacks", "userID", NULL, NULL, 0)
ngx_http_im_friend_route(blacks_of, "blacks_of", "userID", NULL, NULL, 0)
ngx_http_im_friend_route(blacks_incr, "blacks_incr", "userID", NULL, NULL, 0)
ngx_http_im_friend_route(set_profile, "set_profile", "userInfo/userID", NULL,
                         NULL, 0)
ngx_http_im_friend_route(set_recv_opt, "set_recv_opt", "userID", NULL, NULL,
                         0)


static void
ngx_http_im_friend_call(ngx_http_im_api_t *api,
    const ngx_http_im_friend_route_t *route)
{
    ngx_http_im_friend_call_t  *fc;

    fc = ngx_calloc(sizeof(ngx_http_im_friend_call_t), ngx_cycle->log);
    if (fc == NULL) {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    fc->api = api;
    fc->route = route;
    fc->admin = api->claims.platform_id == NGX_HTTP_IM_PLATFORM_ADMIN;
    fc->args = api->body;
    api->conv = fc;

    if ((route->flags & NGX_HTTP_IM_FR_ADMIN) && !fc->admin) {
        ngx_http_im_friend_end(fc, NGX_HTTP_IM_ERR_PERMISSION, "an admin "
                               "token is required");
        return;
    }

    if (ngx_http_im_friend_who(fc) != NGX_OK) {
        return;
    }

    if (route->users) {
        if (ngx_http_im_friend_check_users(fc) != NGX_OK) {
            ngx_http_im_friend_end(fc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        }
        return;
    }

    ngx_http_im_friend_run(fc);
}


/*
 * The owner (whose slot) and the caller.  A user token acts for itself:
 * as the owner, or as the route's actor (an applicant).  An admin token
 * acts for the actor, else the owner.
 */
static ngx_int_t
ngx_http_im_friend_who(ngx_http_im_friend_call_t *fc)
{
    u_char      msg[64];
    ngx_str_t   me, actor;

    me.data = (u_char *) fc->api->claims.user_id;
    me.len = ngx_strlen(me.data);

    fc->owner = ngx_http_im_friend_field(fc->api->root, fc->route->owner);
    actor = fc->route->actor
            ? ngx_http_im_friend_field(fc->api->root, fc->route->actor)
            : fc->owner;

    if (fc->owner.len == 0) {
        ngx_snprintf(msg, sizeof(msg), "field \"%s\" is required%Z",
                     fc->route->owner);
        ngx_http_im_friend_end(fc, NGX_HTTP_IM_ERR_ARGS, (char *) msg);
        return NGX_ERROR;
    }

    if (!ngx_http_im_user_id_valid((char *) fc->owner.data, fc->owner.len)
        || (fc->route->actor && actor.len
            && !ngx_http_im_user_id_valid((char *) actor.data, actor.len)))
    {
        ngx_http_im_friend_end(fc, NGX_HTTP_IM_ERR_ARGS, "valid user IDs "
                               "are required");
        return NGX_ERROR;
    }

    if (fc->admin) {
        fc->caller = actor.len ? actor : fc->owner;
        return NGX_OK;
    }

    fc->caller = me;

    /* a pair's or an application's reader may be either of the two */
    if ((fc->owner.len == me.len
         && ngx_strncmp(fc->owner.data, me.data, me.len) == 0)
        || (fc->route->actor && actor.len == me.len
            && ngx_strncmp(actor.data, me.data, me.len) == 0))
    {
        return NGX_OK;
    }

    ngx_http_im_friend_end(fc, NGX_HTTP_IM_ERR_PERMISSION, "a user token "
                           "may act for its own user only");
    return NGX_ERROR;
}



/* a string field of the body, "a/b" in an object; "" when absent */
static ngx_str_t
ngx_http_im_friend_field(yajl_val root, const char *path)
{
    char        name[32];
    yajl_val    v;
    ngx_str_t   s;
    const char *slash;

    ngx_str_set(&s, "");

    if (root == NULL || !YAJL_IS_OBJECT(root)) {
        return s;
    }

    slash = ngx_strchr(path, '/');

    if (slash) {
        ngx_cpystrn((u_char *) name, (u_char *) path,
                    ngx_min((size_t) (slash - path) + 1, sizeof(name)));
        root = ngx_http_im_json_get(root, name);
        path = slash + 1;

        if (root == NULL || !YAJL_IS_OBJECT(root)) {
            return s;
        }
    }

    v = ngx_http_im_json_get(root, path);

    return ngx_http_im_api_str(v);
}


/* the users a call names (one ID or a list) must be registered (1101) */
static ngx_int_t
ngx_http_im_friend_check_users(ngx_http_im_friend_call_t *fc)
{
    yajl_val     v, *list;
    ngx_uint_t   i, n;
    ngx_str_t   *users, one;

    v = ngx_http_im_json_get(fc->api->root, fc->route->users);
    list = v && YAJL_IS_ARRAY(v) ? v->u.array.values : &v;
    n = v && YAJL_IS_ARRAY(v) ? v->u.array.len : 1;

    if (v == NULL || n == 0 || n > NGX_HTTP_IM_MAX_LIST) {
        /* friend.lua refuses it */
        ngx_http_im_friend_run(fc);
        return NGX_OK;
    }

    users = ngx_alloc(n * sizeof(ngx_str_t), ngx_cycle->log);
    if (users == NULL) {
        return NGX_ERROR;
    }

    fc->api->users = users;
    fc->api->nusers = 0;

    for (i = 0; i < n; i++) {
        one = ngx_http_im_api_str(list[i]);

        if (ngx_http_im_user_id_valid((char *) one.data, one.len)) {
            users[fc->api->nusers++] = one;
        }
    }

    if (fc->api->nusers == 0) {
        ngx_http_im_friend_run(fc);
        return NGX_OK;
    }

    return ngx_http_im_store_users_info(users, fc->api->nusers,
                                        ngx_http_im_friend_checked, fc);
}


static void
ngx_http_im_friend_checked(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n)
{
    ngx_http_im_friend_call_t  *fc = data;

    u_char      msg[NGX_HTTP_IM_UID_MAX + 32];
    ngx_uint_t  i;

    if (err) {
        ngx_http_im_friend_end(fc, err, NULL);
        return;
    }

    for (i = 0; i < n; i++) {
        if (!users[i].found) {
            ngx_snprintf(msg, sizeof(msg), "user not found: %V%Z",
                         &users[i].user_id);
            ngx_http_im_friend_end(fc, NGX_HTTP_IM_ERR_USER_ID,
                                   (char *) msg);
            return;
        }
    }

    ngx_http_im_friend_run(fc);
}


static void
ngx_http_im_friend_run(ngx_http_im_friend_call_t *fc)
{
    u_char     *p;
    ngx_int_t   rc;
    ngx_str_t   args, other;

    if (!(fc->route->flags & NGX_HTTP_IM_FR_PAIR)) {
        rc = ngx_http_im_store_friend(&fc->owner, fc->route->op,
                                      &fc->caller, fc->admin, &fc->args,
                                      ngx_http_im_friend_ran, fc);
        goto sent;
    }

    /* is_friend: {"id": the other} in each user's slot */
    other = ngx_http_im_friend_field(fc->api->root, fc->route->actor);

    if (!ngx_http_im_user_id_valid((char *) other.data, other.len)) {
        ngx_http_im_friend_end(fc, NGX_HTTP_IM_ERR_ARGS, "valid user IDs "
                               "are required");
        return;
    }

    p = ngx_alloc(2 * NGX_HTTP_IM_UID_MAX + 32, ngx_cycle->log);
    if (p == NULL) {
        ngx_http_im_friend_end(fc, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    args.data = p;
    args.len = ngx_sprintf(p, "{\"id\":\"%V\"}",
                           fc->pair ? &fc->owner : &other) - p;

    rc = ngx_http_im_store_friend(fc->pair ? &other : &fc->owner, "has",
                                  &fc->caller, 1, &args,
                                  ngx_http_im_friend_pair_ran, fc);
    ngx_free(p);

sent:

    if (rc != NGX_OK) {
        ngx_http_im_friend_end(fc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
    }
}


/* is_friend: {"inUser1Friends": bool, "inUser2Friends": bool} */
static void
ngx_http_im_friend_pair_ran(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_friend_call_t  *fc = data;

    char      err[64];
    yajl_val  v;
    int       in;

    if (r->err) {
        ngx_http_im_friend_end(fc, r->err, NULL);
        return;
    }

    v = ngx_http_im_json_parse(r->answer.data, r->answer.len, err,
                               sizeof(err));
    in = v && YAJL_IS_TRUE(ngx_http_im_json_get(v, "friend"));

    if (v) {
        yajl_tree_free(v);
    }

    ngx_http_im_buf_str(&fc->api->data, fc->pair ? ",\"inUser2Friends\":"
                                                 : "{\"inUser1Friends\":");
    ngx_http_im_buf_str(&fc->api->data, in ? "true" : "false");

    if (fc->pair++ == 0) {
        ngx_http_im_friend_run(fc);
        return;
    }

    ngx_http_im_buf_str(&fc->api->data, "}");
    ngx_http_im_friend_end(fc, 0, NULL);
}


static void
ngx_http_im_friend_ran(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_friend_call_t  *fc = data;

    char  err[64];

    if (r->err) {
        ngx_http_im_friend_end(fc, r->err,
                               r->msg.len ? (char *) r->msg.data : NULL);
        return;
    }

    if (r->extra.len > 2) {
        fc->effects = ngx_http_im_json_parse(r->extra.data, r->extra.len,
                                             err, sizeof(err));
    }

    ngx_http_im_friend_fill(fc, &r->answer);
}


/*
 * Profiles for the answer: the users it names get their nickname,
 * faceURL and ex (friend.lua leaves them empty: they live in the users'
 * own slots).  Then the effects.
 */
static void
ngx_http_im_friend_fill(ngx_http_im_friend_call_t *fc, ngx_str_t *answer)
{
    char                       err[64];
    ngx_str_t                 *ids;
    ngx_uint_t                 n, max;

    ngx_http_im_buf_init(&fc->out, NGX_HTTP_IM_CONV_BUDGET + 4096);
    ngx_http_im_buf_add(&fc->out, answer->data, answer->len);

    fc->answer = ngx_http_im_json_parse(answer->data, answer->len, err,
                                        sizeof(err));

    /* a friends page holds 1000 entries, a requests page names 2000 */
    max = 2 * NGX_HTTP_IM_MAX_LIST;
    ids = fc->answer ? ngx_alloc(max * sizeof(ngx_str_t), ngx_cycle->log)
                     : NULL;

    n = ids ? ngx_http_im_friend_names(fc->answer, 0, ids, 0, max, NULL)
            : 0;

    if (n == 0) {
        if (ids) {
            ngx_free(ids);
        }

        ngx_http_im_friend_filled(fc, 0, NULL, 0);
        return;
    }

    /* a registration check's list is done with */
    ngx_free(fc->api->users);
    fc->api->users = ids;
    fc->api->nusers = n;

    if (ngx_http_im_store_users_info(ids, n, ngx_http_im_friend_filled, fc)
        != NGX_OK)
    {
        ngx_http_im_friend_filled(fc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL, 0);
    }
}


/* the profile fields of an answer, by the user ID beside them */
static const char  *ngx_http_im_friend_user_keys[][4] = {
    /* in an object: the ID, then where its nickname, faceURL, ex go */
    { "userID", "nickname", "faceURL", "ex" },
    { "fromUserID", "fromNickname", "fromFaceURL", NULL },
    { "toUserID", "toNickname", "toFaceURL", NULL },
};


static ngx_int_t
ngx_http_im_friend_set(yajl_val obj, const char *key, ngx_str_t *value)
{
    yajl_val   v;
    char      *s;

    v = key ? ngx_http_im_json_get(obj, key) : NULL;

    if (v == NULL || !YAJL_IS_STRING(v) || value == NULL) {
        return NGX_DECLINED;
    }

    s = malloc(value->len + 1);
    if (s == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(s, value->data, value->len);
    s[value->len] = '\0';

    /* the tree was built with malloc (yajl's default allocator) */
    free(v->u.string);
    v->u.string = s;

    return NGX_OK;
}


/*
 * Walks the answer (depth <= 4: data -> list -> entry -> friendUser):
 * without users, collects the IDs to look up (n so far, at most max);
 * with them (in the order collected: the walk is the same), writes their
 * profiles in.  Returns the count so far.
 */
static ngx_uint_t
ngx_http_im_friend_names(yajl_val v, ngx_uint_t depth, ngx_str_t *ids,
    ngx_uint_t n, ngx_uint_t max, ngx_http_im_store_user_t *users)
{
    yajl_val                   id;
    ngx_uint_t                 i, k;
    ngx_http_im_store_user_t  *u;

    if (v == NULL || depth > 4) {
        return n;
    }

    if (YAJL_IS_ARRAY(v)) {
        for (i = 0; i < v->u.array.len; i++) {
            n = ngx_http_im_friend_names(v->u.array.values[i], depth + 1,
                                         ids, n, max, users);
        }
        return n;
    }

    if (!YAJL_IS_OBJECT(v)) {
        return n;
    }

    for (k = 0; k < sizeof(ngx_http_im_friend_user_keys)
                    / sizeof(ngx_http_im_friend_user_keys[0]); k++)
    {
        id = ngx_http_im_json_get(v, ngx_http_im_friend_user_keys[k][0]);

        if (n == max || id == NULL || !YAJL_IS_STRING(id)
            || id->u.string == NULL
            || ngx_http_im_json_get(v, ngx_http_im_friend_user_keys[k][1])
               == NULL
            || !ngx_http_im_user_id_valid(id->u.string,
                                          ngx_strlen(id->u.string)))
        {
            continue;
        }

        if (users == NULL) {
            ids[n].data = (u_char *) id->u.string;
            ids[n++].len = ngx_strlen(id->u.string);
            continue;
        }

        u = &users[n++];

        if (!u->found) {
            continue;
        }

        (void) ngx_http_im_friend_set(v, ngx_http_im_friend_user_keys[k][1],
                                      &u->nickname);
        (void) ngx_http_im_friend_set(v, ngx_http_im_friend_user_keys[k][2],
                                      &u->face_url);
        (void) ngx_http_im_friend_set(v, ngx_http_im_friend_user_keys[k][3],
                                      &u->ex);
    }

    for (i = 0; i < v->u.object.len; i++) {
        n = ngx_http_im_friend_names(v->u.object.values[i], depth + 1, ids,
                                     n, max, users);
    }

    return n;
}


static void
ngx_http_im_friend_filled(void *data, ngx_int_t err,
    ngx_http_im_store_user_t *users, ngx_uint_t n)
{
    ngx_http_im_friend_call_t  *fc = data;

    if (err == 0 && users && fc->answer) {
        (void) ngx_http_im_friend_names(fc->answer, 0, NULL, 0, n, users);
        fc->out.len = 0;
        ngx_http_im_buf_json_val(&fc->out, fc->answer);
    }

    /* without the profiles, the answer still holds the IDs */
    ngx_http_im_buf_add(&fc->api->data, fc->out.data, fc->out.len);

    fc->item = 0;
    ngx_http_im_friend_peers(fc);
}


/* effects.peer: [{uid, op, args}], one at a time, in order */
static void
ngx_http_im_friend_peers(ngx_http_im_friend_call_t *fc)
{
    char               err[64];
    yajl_val           peers, p;
    ngx_str_t          uid, args;
    ngx_int_t          rc;
    ngx_http_im_str_t  op;
    ngx_http_im_buf_t  b;

    peers = fc->effects ? ngx_http_im_json_get(fc->effects, "peer") : NULL;

    for ( /* void */ ; peers && YAJL_IS_ARRAY(peers)
                      && fc->item < peers->u.array.len
                      && fc->item < NGX_HTTP_IM_FR_MAX_EFFECTS; fc->item++)
    {
        p = peers->u.array.values[fc->item];
        uid = ngx_http_im_friend_field(p, "uid");

        if (!ngx_http_im_user_id_valid((char *) uid.data, uid.len)
            || ngx_http_im_json_get_str(p, "op", 1, &op, err, sizeof(err))
               != 0)
        {
            continue;
        }

        ngx_http_im_buf_init(&b, 0);
        ngx_http_im_buf_json_val(&b, ngx_http_im_json_get(p, "args"));

        if (b.len == 0 || b.data[0] != '{') {
            ngx_http_im_buf_free(&b);
            continue;
        }

        args.data = b.data;
        args.len = b.len;
        fc->item++;

        rc = b.failed ? NGX_DECLINED
                      : ngx_http_im_store_friend(&uid, op.data, &fc->owner,
                                                 1, &args,
                                                 ngx_http_im_friend_peer_done,
                                                 fc);
        ngx_http_im_buf_free(&b);

        if (rc != NGX_OK) {
            ngx_http_im_friend_end(fc, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL);
        }

        return;
    }

    ngx_http_im_friend_notes(fc);
    ngx_http_im_friend_tell(fc);
    ngx_http_im_friend_renamed(fc);
    ngx_http_im_friend_end(fc, 0, NULL);
}


/* effects.nick {old, new}: a new nickname, for the lists' index */
static void
ngx_http_im_friend_renamed(ngx_http_im_friend_call_t *fc)
{
    yajl_val   nick;
    ngx_str_t  old, new;

    nick = fc->effects ? ngx_http_im_json_get(fc->effects, "nick") : NULL;

    if (nick == NULL || !YAJL_IS_OBJECT(nick)) {
        return;
    }

    old = ngx_http_im_friend_field(nick, "old");
    new = ngx_http_im_friend_field(nick, "new");

    ngx_http_im_store_users_index(&fc->owner, &new, &old, 0);
}


static void
ngx_http_im_friend_peer_done(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_friend_call_t  *fc = data;

    if (r->err) {
        /*
         * The owner's side is done, the other's failed (Redis or MongoDB
         * went away).  Each op is idempotent on retry: say so.
         */
        ngx_http_im_friend_end(fc, r->err, "the change was made on one "
                               "side only: retry");
        return;
    }

    ngx_http_im_friend_peers(fc);
}


/* effects.notes: [{type, from, to, tips}], stored in sn_<from>_<to> */
static void
ngx_http_im_friend_notes(ngx_http_im_friend_call_t *fc)
{
    char               err[64];
    yajl_val           notes, n;
    ngx_str_t          from, to;
    ngx_uint_t         i;
    long long          type;
    ngx_http_im_buf_t  tips;

    notes = fc->effects ? ngx_http_im_json_get(fc->effects, "notes") : NULL;

    for (i = 0; notes && YAJL_IS_ARRAY(notes) && i < notes->u.array.len
                && i < NGX_HTTP_IM_FR_MAX_EFFECTS; i++)
    {
        n = notes->u.array.values[i];
        from = ngx_http_im_friend_field(n, "from");
        to = ngx_http_im_friend_field(n, "to");

        if (ngx_http_im_json_get_int(n, "type", 1, &type, err, sizeof(err))
            != 0
            || !ngx_http_im_user_id_valid((char *) from.data, from.len)
            || !ngx_http_im_user_id_valid((char *) to.data, to.len))
        {
            continue;
        }

        ngx_http_im_buf_init(&tips, 0);
        ngx_http_im_buf_json_val(&tips, ngx_http_im_json_get(n, "tips"));

        if (!tips.failed) {
            ngx_http_im_friend_notify(&from, &to, type, &tips);
        }

        ngx_http_im_buf_free(&tips);
    }
}


/* effects.tell: {type, users, tips}, pushed unstored to each user */
static void
ngx_http_im_friend_tell(ngx_http_im_friend_call_t *fc)
{
    char               err[64];
    yajl_val           tell, users;
    ngx_str_t          uid;
    ngx_uint_t         i;
    long long          type;
    ngx_http_im_buf_t  tips;

    tell = fc->effects ? ngx_http_im_json_get(fc->effects, "tell") : NULL;
    users = tell ? ngx_http_im_json_get(tell, "users") : NULL;

    if (users == NULL || !YAJL_IS_ARRAY(users)
        || ngx_http_im_json_get_int(tell, "type", 1, &type, err, sizeof(err))
           != 0)
    {
        return;
    }

    ngx_http_im_buf_init(&tips, 0);
    ngx_http_im_buf_json_val(&tips, ngx_http_im_json_get(tell, "tips"));

    for (i = 0; !tips.failed && i < users->u.array.len
                && i < NGX_HTTP_IM_MAX_FRIENDS; i++)
    {
        uid = ngx_http_im_api_str(users->u.array.values[i]);

        if (ngx_http_im_user_id_valid((char *) uid.data, uid.len)) {
            ngx_http_im_notify(&fc->owner, &uid, NULL, type, &tips);
        }
    }

    ngx_http_im_buf_free(&tips);
}


/* answers (code 0: with api->data) unless the request is gone, frees */
static void
ngx_http_im_friend_end(ngx_http_im_friend_call_t *fc, ngx_int_t code,
    const char *msg)
{
    ngx_http_im_api_t  *api;

    api = fc->api;
    api->conv = NULL;

    if (fc->effects) {
        yajl_tree_free(fc->effects);
    }

    if (fc->answer) {
        yajl_tree_free(fc->answer);
    }

    ngx_http_im_buf_free(&fc->out);
    ngx_free(fc);

    ngx_http_im_api_answer(api, code, msg);
}


ngx_http_im_route_t  ngx_http_im_friend_routes[] = {

    { ngx_string("/friend/add_friend"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_add_handler, NULL },
    { ngx_string("/friend/add_friend_response"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_respond_handler, NULL },
    { ngx_string("/friend/get_friend_apply_list"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_apps_in_handler, NULL },
    { ngx_string("/friend/get_self_friend_apply_list"),
      NGX_HTTP_IM_ACCESS_USER, ngx_http_im_friend_apps_out_handler, NULL },
    { ngx_string("/friend/get_designated_friend_apply"),
      NGX_HTTP_IM_ACCESS_USER, ngx_http_im_friend_app_one_handler, NULL },
    { ngx_string("/friend/get_self_unhandled_apply_count"),
      NGX_HTTP_IM_ACCESS_USER, ngx_http_im_friend_unhandled_handler, NULL },
    { ngx_string("/friend/delete_friend"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_delete_handler, NULL },
    { ngx_string("/friend/get_friend_list"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_list_handler, NULL },
    { ngx_string("/friend/get_designated_friends"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_designated_handler, NULL },
    { ngx_string("/friend/get_specified_friends_info"),
      NGX_HTTP_IM_ACCESS_USER, ngx_http_im_friend_specified_handler, NULL },
    { ngx_string("/friend/set_friend_remark"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_remark_handler, NULL },
    { ngx_string("/friend/update_friends"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_update_handler, NULL },
    { ngx_string("/friend/is_friend"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_is_friend_handler, NULL },
    { ngx_string("/friend/get_friend_id"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_ids_handler, NULL },
    { ngx_string("/friend/import_friend"), NGX_HTTP_IM_ACCESS_ADMIN,
      ngx_http_im_friend_import_handler, NULL },
    { ngx_string("/friend/get_incremental_friends"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_incr_handler, NULL },
    { ngx_string("/friend/get_full_friend_user_ids"),
      NGX_HTTP_IM_ACCESS_USER, ngx_http_im_friend_full_ids_handler, NULL },
    { ngx_string("/friend/add_black"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_black_add_handler, NULL },
    { ngx_string("/friend/remove_black"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_black_remove_handler, NULL },
    { ngx_string("/friend/get_black_list"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_blacks_handler, NULL },
    { ngx_string("/friend/get_specified_blacks"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_blacks_of_handler, NULL },
    { ngx_string("/friend/get_incremental_blacks"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_blacks_incr_handler, NULL },
    { ngx_string("/user/update_user_info"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_set_profile_handler, NULL },
    { ngx_string("/user/update_user_info_ex"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_set_profile_handler, NULL },
    { ngx_string("/user/set_global_msg_recv_opt"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_friend_set_recv_opt_handler, NULL },
    { ngx_null_string, 0, NULL, NULL }
};
