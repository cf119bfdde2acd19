
/*
 * ngx_im: the OpenIM JS SDK's protobuf routes (docs/api.md, "JS SDK"):
 * /jssdk/get_active_conversations and /jssdk/get_conversations.  The
 * body is a protobuf request, read as its JSON by api.c (the route's
 * "pb"); the answer's "data" is a JSON string, base64 of the protobuf
 * response.
 *
 * A call is made of existing routes run one after the other (api->then):
 * the conversation records with their latest message, maxSeq and
 * hasReadSeq (conv.lua "list" or "get", which also check the owner and
 * the IDs), the peers' profiles and friend records
 * (/friend/get_specified_friends_info), the groups' records
 * (/group/get_groups_info); then each conversation becomes a
 * ConversationMsg.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_api.h"
#include "im.pb-c.h"


typedef struct {
    ngx_uint_t                   active;
    yajl_val                     convs;       /* the records' answer */
    yajl_val                     list;        /* its array of records */
    yajl_val                     friends;     /* infos, or NULL */
    yajl_val                     groups;      /* groupInfos, or NULL */
    long long                    unread;
} ngx_http_im_jssdk_t;


static void ngx_http_im_jssdk_free(ngx_http_im_api_t *api);
static void ngx_http_im_jssdk_active(ngx_http_im_api_t *api);
static void ngx_http_im_jssdk_get(ngx_http_im_api_t *api);
static void ngx_http_im_jssdk_start(ngx_http_im_api_t *api,
    ngx_uint_t active);
static void ngx_http_im_jssdk_convs(ngx_http_im_api_t *api);
static void ngx_http_im_jssdk_friends(ngx_http_im_api_t *api);
static void ngx_http_im_jssdk_groups(ngx_http_im_api_t *api);
static yajl_val ngx_http_im_jssdk_answer(ngx_http_im_api_t *api,
    const char *key);
static ngx_uint_t ngx_http_im_jssdk_ids(ngx_http_im_jssdk_t *js,
    long long type, const char *field, ngx_http_im_buf_t *b);
static void ngx_http_im_jssdk_step(ngx_http_im_api_t *api, const char *path,
    ngx_http_im_buf_t *body, ngx_http_im_route_pt then);
static void ngx_http_im_jssdk_conv_msg(ngx_http_im_jssdk_t *js,
    yajl_val rec, ngx_http_im_buf_t *b);
static yajl_val ngx_http_im_jssdk_find(yajl_val list, const char *inner,
    const char *key, yajl_val id);
static void ngx_http_im_jssdk_encode(ngx_http_im_api_t *api,
    ngx_http_im_buf_t *json);


/* api->jssdk: freed with the call (api->cleanup) */
static void
ngx_http_im_jssdk_free(ngx_http_im_api_t *api)
{
    ngx_http_im_jssdk_t  *js;

    js = api->jssdk;
    if (js == NULL) {
        return;
    }

    api->jssdk = NULL;

    if (js->convs) {
        yajl_tree_free(js->convs);
    }

    if (js->friends) {
        yajl_tree_free(js->friends);
    }

    if (js->groups) {
        yajl_tree_free(js->groups);
    }

    ngx_free(js);
}


/* {ownerUserID, count}: the first page of the sorted conversation list */
static void
ngx_http_im_jssdk_active(ngx_http_im_api_t *api)
{
    ngx_http_im_jssdk_start(api, 1);
}


/* {ownerUserID, conversationIDs}: those records, in the order asked */
static void
ngx_http_im_jssdk_get(ngx_http_im_api_t *api)
{
    ngx_http_im_jssdk_start(api, 0);
}


static void
ngx_http_im_jssdk_start(ngx_http_im_api_t *api, ngx_uint_t active)
{
    ngx_http_im_jssdk_t  *js;

    js = ngx_calloc(sizeof(ngx_http_im_jssdk_t), ngx_cycle->log);
    if (js == NULL) {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    js->active = active;
    api->jssdk = js;
    api->cleanup = ngx_http_im_jssdk_free;
    api->then = ngx_http_im_jssdk_convs;

    /* the routes of api_conv.c check the owner and the IDs (1001, 1002) */
    if (active) {
        ngx_http_im_conv_active(api);

    } else {
        ngx_http_im_conv_get_many(api);
    }
}


/* the records are in: the peers' profiles and friend records next */
static void
ngx_http_im_jssdk_convs(ngx_http_im_api_t *api)
{
    yajl_val              v, owner;
    ngx_str_t             id;
    ngx_uint_t            i;
    ngx_http_im_buf_t     b;
    ngx_http_im_jssdk_t  *js;

    js = api->jssdk;
    js->convs = ngx_http_im_jssdk_answer(api, js->active
                                              ? "conversationElems"
                                              : "conversations");
    if (js->convs == NULL) {
        return;
    }

    js->list = ngx_http_im_json_get(js->convs, js->active
                                               ? "conversationElems"
                                               : "conversations");

    /* OpenIM: the unread count of all (active) or of those asked for */
    if (js->active) {
        v = ngx_http_im_json_get(js->convs, "unreadTotal");
        js->unread = v && YAJL_IS_INTEGER(v) ? YAJL_GET_INTEGER(v) : 0;

    } else {
        for (i = 0; i < js->list->u.array.len; i++) {
            v = ngx_http_im_json_get(js->list->u.array.values[i],
                                     "unreadCount");
            js->unread += v && YAJL_IS_INTEGER(v) ? YAJL_GET_INTEGER(v) : 0;
        }
    }

    if (js->list->u.array.len == 0) {
        ngx_http_im_jssdk_groups(api);
        return;
    }

    owner = ngx_http_im_json_get(js->list->u.array.values[0], "ownerUserID");
    id = ngx_http_im_api_str(owner);

    ngx_http_im_buf_init(&b, NGX_HTTP_IM_API_MAX_BODY);
    ngx_http_im_buf_str(&b, "{\"ownerUserID\":");
    ngx_http_im_buf_json_str(&b, (char *) id.data, id.len);
    ngx_http_im_buf_str(&b, ",\"userIDs\":[");

    if (ngx_http_im_jssdk_ids(js, 1, "userID", &b) == 0) {
        ngx_http_im_buf_free(&b);
        ngx_http_im_jssdk_friends(api);
        return;
    }

    ngx_http_im_buf_str(&b, "]}");
    ngx_http_im_jssdk_step(api, "/friend/get_specified_friends_info", &b,
                           ngx_http_im_jssdk_friends);
    ngx_http_im_buf_free(&b);
}


/* the friend records are in (or none were asked): the groups next */
static void
ngx_http_im_jssdk_friends(ngx_http_im_api_t *api)
{
    ngx_http_im_buf_t     b;
    ngx_http_im_jssdk_t  *js;

    js = api->jssdk;

    if (api->data.len) {
        js->friends = ngx_http_im_jssdk_answer(api, "infos");
        if (js->friends == NULL) {
            return;
        }
    }

    ngx_http_im_buf_init(&b, NGX_HTTP_IM_API_MAX_BODY);
    ngx_http_im_buf_str(&b, "{\"groupIDs\":[");

    if (ngx_http_im_jssdk_ids(js, 3, "groupID", &b) == 0) {
        ngx_http_im_buf_free(&b);
        ngx_http_im_jssdk_groups(api);
        return;
    }

    ngx_http_im_buf_str(&b, "]}");
    ngx_http_im_jssdk_step(api, "/group/get_groups_info", &b,
                           ngx_http_im_jssdk_groups);
    ngx_http_im_buf_free(&b);
}


/* everything is in: the protobuf answer */
static void
ngx_http_im_jssdk_groups(ngx_http_im_api_t *api)
{
    ngx_uint_t            i;
    ngx_http_im_buf_t     b;
    ngx_http_im_jssdk_t  *js;

    js = api->jssdk;

    if (api->data.len) {
        js->groups = ngx_http_im_jssdk_answer(api, "groupInfos");
        if (js->groups == NULL) {
            return;
        }
    }

    /* the records (4 MiB at most) and what they name, twice at most */
    ngx_http_im_buf_init(&b, 3 * NGX_HTTP_IM_CONV_BUDGET);
    ngx_http_im_buf_str(&b, "{\"unreadCount\":");
    ngx_http_im_buf_int(&b, js->unread);
    ngx_http_im_buf_str(&b, ",\"conversations\":[");

    for (i = 0; js->list && i < js->list->u.array.len; i++) {
        ngx_http_im_buf_str(&b, i ? "," : "");
        ngx_http_im_jssdk_conv_msg(js, js->list->u.array.values[i], &b);
    }

    ngx_http_im_buf_str(&b, "]}");
    ngx_http_im_jssdk_encode(api, &b);
    ngx_http_im_buf_free(&b);
}


/*
 * The answer of a step in api->data, parsed, with an array "key"; the
 * data is emptied for the next step.  NULL: the call answered 500.
 */
static yajl_val
ngx_http_im_jssdk_answer(ngx_http_im_api_t *api, const char *key)
{
    char      err[128];
    yajl_val  v, a;

    v = ngx_http_im_json_parse(api->data.data, api->data.len, err,
                               sizeof(err));
    api->data.len = 0;

    a = v ? ngx_http_im_json_get(v, key) : NULL;

    if (a == NULL || !YAJL_IS_ARRAY(a)) {
        ngx_log_error(NGX_LOG_ALERT, api->r->connection->log, 0,
                      "im api: jssdk: a step answered without \"%s\"", key);

        if (v) {
            yajl_tree_free(v);
        }

        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return NULL;
    }

    return v;
}


/* appends the "field" of the records of a conversationType; the count */
static ngx_uint_t
ngx_http_im_jssdk_ids(ngx_http_im_jssdk_t *js, long long type,
    const char *field, ngx_http_im_buf_t *b)
{
    yajl_val    rec, t;
    ngx_str_t   id;
    ngx_uint_t  i, n;

    n = 0;

    for (i = 0; i < js->list->u.array.len; i++) {
        rec = js->list->u.array.values[i];
        t = ngx_http_im_json_get(rec, "conversationType");
        id = ngx_http_im_api_str(ngx_http_im_json_get(rec, field));

        if (t == NULL || !YAJL_IS_INTEGER(t) || YAJL_GET_INTEGER(t) != type
            || id.len == 0)
        {
            continue;
        }

        ngx_http_im_buf_str(b, n++ ? "," : "");
        ngx_http_im_buf_json_str(b, (char *) id.data, id.len);
    }

    return n;
}


/* runs route "path" with "body" as the request's, then "then" */
static void
ngx_http_im_jssdk_step(ngx_http_im_api_t *api, const char *path,
    ngx_http_im_buf_t *body, ngx_http_im_route_pt then)
{
    char                  err[128];
    u_char               *text;
    yajl_val              root;
    ngx_http_im_route_t  *rt;

    rt = ngx_http_im_api_route_find(path);
    text = body->failed ? NULL : ngx_pnalloc(api->r->pool, body->len + 1);
    root = text ? ngx_http_im_json_parse(body->data, body->len, err,
                                         sizeof(err))
                : NULL;

    if (rt == NULL || root == NULL) {
        ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_INTERNAL, NULL);
        return;
    }

    ngx_memcpy(text, body->data, body->len);
    text[body->len] = '\0';

    if (api->root) {
        yajl_tree_free(api->root);
    }

    api->root = root;
    api->body.data = text;
    api->body.len = body->len;
    api->then = then;

    rt->handler(api);
}


/*
 * One ConversationMsg as JSON: the record (without its latestMsg) as
 * conversation, latestMsg as lastMsg, maxSeq, hasReadSeq as readSeq; the
 * peer's profile and friend record, the group's record.
 */
static void
ngx_http_im_jssdk_conv_msg(ngx_http_im_jssdk_t *js, yajl_val rec,
    ngx_http_im_buf_t *b)
{
    yajl_val    v, info;
    ngx_uint_t  i, n;

    ngx_http_im_buf_str(b, "{\"conversation\":{");

    for (i = 0, n = 0; YAJL_IS_OBJECT(rec) && i < rec->u.object.len; i++) {
        if (ngx_strcmp(rec->u.object.keys[i], "latestMsg") == 0) {
            continue;
        }

        ngx_http_im_buf_str(b, n++ ? "," : "");
        ngx_http_im_buf_json_str(b, rec->u.object.keys[i],
                                 ngx_strlen(rec->u.object.keys[i]));
        ngx_http_im_buf_str(b, ":");
        ngx_http_im_buf_json_val(b, rec->u.object.values[i]);
    }

    ngx_http_im_buf_str(b, "},\"lastMsg\":");
    v = ngx_http_im_json_get(rec, "latestMsg");
    if (v) {
        ngx_http_im_buf_json_val(b, v);

    } else {
        ngx_http_im_buf_str(b, "null");
    }

    ngx_http_im_buf_str(b, ",\"maxSeq\":");
    v = ngx_http_im_json_get(rec, "maxSeq");
    ngx_http_im_buf_int(b, v && YAJL_IS_INTEGER(v) ? YAJL_GET_INTEGER(v) : 0);
    ngx_http_im_buf_str(b, ",\"readSeq\":");
    v = ngx_http_im_json_get(rec, "hasReadSeq");
    ngx_http_im_buf_int(b, v && YAJL_IS_INTEGER(v) ? YAJL_GET_INTEGER(v) : 0);

    info = ngx_http_im_jssdk_find(js->friends, "userInfo", "userID",
                                  ngx_http_im_json_get(rec, "userID"));
    v = info ? ngx_http_im_json_get(info, "userInfo") : NULL;

    if (v && YAJL_IS_OBJECT(v)) {
        ngx_http_im_buf_str(b, ",\"user\":");
        ngx_http_im_buf_json_val(b, v);
    }

    v = info ? ngx_http_im_json_get(info, "friendInfo") : NULL;

    /* OpenIM's FriendInfoOnly names the friend by friendUserID */
    if (v && YAJL_IS_OBJECT(v)) {
        ngx_http_im_buf_str(b, ",\"friend\":{\"friendUserID\":");
        ngx_http_im_buf_json_val(b, ngx_http_im_json_get(rec, "userID"));

        for (i = 0; i < v->u.object.len; i++) {
            ngx_http_im_buf_str(b, ",");
            ngx_http_im_buf_json_str(b, v->u.object.keys[i],
                                     ngx_strlen(v->u.object.keys[i]));
            ngx_http_im_buf_str(b, ":");
            ngx_http_im_buf_json_val(b, v->u.object.values[i]);
        }

        ngx_http_im_buf_str(b, "}");
    }

    v = ngx_http_im_jssdk_find(js->groups, NULL, "groupID",
                               ngx_http_im_json_get(rec, "groupID"));
    if (v && YAJL_IS_OBJECT(v)) {
        ngx_http_im_buf_str(b, ",\"group\":");
        ngx_http_im_buf_json_val(b, v);
    }

    ngx_http_im_buf_str(b, "}");
}


/*
 * The element of the answer "list" (an object holding an array) whose
 * key (inside member "inner" when given) equals the string id.  A scan:
 * both lists hold at most 1000.
 */
static yajl_val
ngx_http_im_jssdk_find(yajl_val list, const char *inner, const char *key,
    yajl_val id)
{
    yajl_val    a, e, o;
    ngx_str_t   want, got;
    ngx_uint_t  i;

    want = ngx_http_im_api_str(id);

    if (list == NULL || want.len == 0) {
        return NULL;
    }

    a = ngx_http_im_json_get(list, inner ? "infos" : "groupInfos");

    for (i = 0; a && YAJL_IS_ARRAY(a) && i < a->u.array.len; i++) {
        e = a->u.array.values[i];
        o = inner ? ngx_http_im_json_get(e, inner) : e;
        got = ngx_http_im_api_str(o ? ngx_http_im_json_get(o, key) : NULL);

        if (got.len == want.len
            && ngx_strncmp(got.data, want.data, want.len) == 0)
        {
            return e;
        }
    }

    return NULL;
}


/* the JSON answer as the route's protobuf response, base64 in "data" */
static void
ngx_http_im_jssdk_encode(ngx_http_im_api_t *api, ngx_http_im_buf_t *json)
{
    char                               err[NGX_HTTP_IM_PB_ERRLEN];
    yajl_val                           root;
    ngx_str_t                          src, dst;
    ngx_http_im_buf_t                  pb;
    const ProtobufCMessageDescriptor  *d;

    d = ((ngx_http_im_jssdk_t *) api->jssdk)->active
        ? &im__get_active_conversations_resp__descriptor
        : &im__get_conversations_resp__descriptor;

    ngx_http_im_buf_init(&pb, NGX_HTTP_IM_PB_MAX_JSON);
    root = json->failed ? NULL : ngx_http_im_json_parse(json->data,
                                                        json->len, err,
                                                        sizeof(err));

    if (root == NULL
        || ngx_http_im_json_to_pb(d, root, &pb, err, sizeof(err)) != 0)
    {
        ngx_log_error(NGX_LOG_ALERT, api->r->connection->log, 0,
                      "im api: jssdk: the answer does not encode: %s",
                      root ? err : "too large");
        goto failed;
    }

    src.data = pb.data;
    src.len = pb.len;
    dst.data = ngx_alloc(ngx_base64_encoded_length(pb.len) + 1,
                         ngx_cycle->log);
    if (dst.data == NULL) {
        goto failed;
    }

    ngx_encode_base64(&dst, &src);

    api->data.len = 0;
    ngx_http_im_buf_str(&api->data, "\"");
    ngx_http_im_buf_add(&api->data, dst.data, dst.len);
    ngx_http_im_buf_str(&api->data, "\"");
    ngx_free(dst.data);

    yajl_tree_free(root);
    ngx_http_im_buf_free(&pb);

    ngx_http_im_api_finish(api, api->data.failed
                                ? NGX_HTTP_IM_ERR_INTERNAL : 0, NULL);
    return;

failed:

    if (root) {
        yajl_tree_free(root);
    }

    ngx_http_im_buf_free(&pb);
    ngx_http_im_api_finish(api, NGX_HTTP_IM_ERR_INTERNAL, NULL);
}



ngx_http_im_route_t  ngx_http_im_jssdk_routes[] = {

    { ngx_string("/jssdk/get_active_conversations"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_jssdk_active,
      &im__get_active_conversations_req__descriptor },

    { ngx_string("/jssdk/get_conversations"), NGX_HTTP_IM_ACCESS_USER,
      ngx_http_im_jssdk_get, &im__get_conversations_req__descriptor },

    { ngx_null_string, 0, NULL, NULL }
};
