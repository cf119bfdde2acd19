
/*
 * ngx_im: what the REST files share (api.c: routes, calls, answers;
 * api_conv.c: conversations and read state).
 */


#ifndef _NGX_HTTP_IM_API_H_INCLUDED_
#define _NGX_HTTP_IM_API_H_INCLUDED_


#include "ngx_http_im_module.h"
#include "ngx_http_im_store.h"
#include "ngx_http_im_pb.h"


#define NGX_HTTP_IM_ACCESS_SECRET  0      /* no token: get_admin_token */
#define NGX_HTTP_IM_ACCESS_USER    1      /* any valid token */
#define NGX_HTTP_IM_ACCESS_ADMIN   2

#define NGX_HTTP_IM_PLATFORM_ADMIN 10
#define NGX_HTTP_IM_MAX_REGISTER   NGX_HTTP_IM_MAX_LIST
#define NGX_HTTP_IM_MAX_BATCH      NGX_HTTP_IM_MAX_LIST

/* top-level fields of a request body: OpenIM's largest has about 30 */
#define NGX_HTTP_IM_API_MAX_FIELDS 64


typedef struct ngx_http_im_api_s  ngx_http_im_api_t;


/* a send of a batch: its answer names its recipient, whatever the order
 * the answers come back in (a cluster answers from several nodes) */
typedef struct {
    ngx_http_im_api_t           *api;
    ngx_uint_t                   index;       /* in recvIDs */
} ngx_http_im_batch_item_t;


/* the request's module context while its body is read */
typedef struct {
    off_t                        size;
    off_t                        max;
    ngx_uint_t                   too_large;
} ngx_http_im_api_body_t;

typedef void (*ngx_http_im_route_pt)(ngx_http_im_api_t *api);

typedef struct {
    ngx_str_t                    path;
    ngx_uint_t                   access;
    ngx_http_im_route_pt         handler;
    /* a protobuf body of this message, read as its JSON (api_jssdk.c) */
    const ProtobufCMessageDescriptor  *pb;
} ngx_http_im_route_t;


/* a REST call; on the heap, so a Redis reply can outlive its request */
struct ngx_http_im_api_s {
    ngx_http_request_t          *r;
    ngx_http_im_route_t         *route;
    ngx_http_im_main_conf_t     *imcf;
    yajl_val                     root;
    ngx_str_t                    token;
    ngx_http_im_token_claims_t   claims;
    ngx_http_im_buf_t            data;
    ngx_pool_cleanup_t          *cln;
    ngx_queue_t                  link;         /* in worker->api_calls */
    ngx_uint_t                   cancelled;
    ngx_int_t                    platform;     /* of the token issued */
    time_t                       expire;
    ngx_str_t                   *users;        /* the userIDs asked for */
    ngx_http_im_buf_t            content;      /* a message's content */
    ngx_http_im_buf_t            failed;       /* batch: failedUserIDs */
    ngx_uint_t                   nusers;
    yajl_val                     recv_ids;     /* batch: recvIDs */
    ngx_http_im_batch_item_t    *items;        /* batch: one per send */
    ngx_uint_t                   issuing;
    ngx_uint_t                   issued;
    ngx_uint_t                   answered;
    ngx_uint_t                   results;
    void                        *conv;         /* api_conv.c's state */
    /* run instead of answering when a route succeeds: a call made of
     * routes (api_jssdk.c), with the route's answer in api->data */
    ngx_http_im_route_pt         then;
    void                        *jssdk;        /* api_jssdk.c's state */
    ngx_http_im_route_pt         cleanup;      /* frees it with the call */
    ngx_str_t                    body;         /* the JSON text, in r->pool */
    char                         token_out[512];
};


void ngx_http_im_api_answer(ngx_http_im_api_t *api, ngx_int_t code,
    const char *msg);
void ngx_http_im_api_finish(ngx_http_im_api_t *api, ngx_int_t code,
    const char *msg);

/* the body's "userIDs" (1..1000 valid IDs) in api->users; answers the
 * call itself on bad input and returns NULL */
ngx_str_t *ngx_http_im_api_user_ids(ngx_http_im_api_t *api);
ngx_str_t *ngx_http_im_api_user_ids_of(ngx_http_im_api_t *api, yajl_val ids,
    const char *name);

/* a string value of a parsed JSON, "" for anything else */
ngx_str_t ngx_http_im_api_str(yajl_val v);

/* a user's profile as OpenIM's userInfo */
void ngx_http_im_user_json(ngx_http_im_buf_t *b,
    ngx_http_im_store_user_t *u);

/* api_conv.c: the conversation routes and the read state of msg */
extern ngx_http_im_route_t  ngx_http_im_conv_routes[];

/* api_group.c: the group routes */
extern ngx_http_im_route_t  ngx_http_im_group_routes[];

/* api_friend.c: the friend, blacklist and profile routes */
extern ngx_http_im_route_t  ngx_http_im_friend_routes[];

/* api_user.c: the user lists */
extern ngx_http_im_route_t  ngx_http_im_user_routes[];

/* api_jssdk.c: the JS SDK's protobuf routes */
extern ngx_http_im_route_t  ngx_http_im_jssdk_routes[];

/* the route of a path ("/group/get_groups_info"), or NULL */
ngx_http_im_route_t *ngx_http_im_api_route_find(const char *path);

void ngx_http_im_conv_sorted(ngx_http_im_api_t *api);
void ngx_http_im_conv_all(ngx_http_im_api_t *api);
void ngx_http_im_conv_get(ngx_http_im_api_t *api);
void ngx_http_im_conv_get_many(ngx_http_im_api_t *api);
void ngx_http_im_conv_active(ngx_http_im_api_t *api);
void ngx_http_im_conv_owner(ngx_http_im_api_t *api);
void ngx_http_im_conv_set(ngx_http_im_api_t *api);
void ngx_http_im_conv_full_ids(ngx_http_im_api_t *api);
void ngx_http_im_conv_incremental(ngx_http_im_api_t *api);
void ngx_http_im_conv_not_notify(ngx_http_im_api_t *api);
void ngx_http_im_conv_pinned(ngx_http_im_api_t *api);
void ngx_http_im_conv_delete(ngx_http_im_api_t *api);
void ngx_http_im_conv_mark_read(ngx_http_im_api_t *api);
void ngx_http_im_conv_mark_msgs(ngx_http_im_api_t *api);
void ngx_http_im_conv_set_read(ngx_http_im_api_t *api);
void ngx_http_im_conv_seqs(ngx_http_im_api_t *api);
void ngx_http_im_conv_delete_msgs(ngx_http_im_api_t *api);
void ngx_http_im_conv_clear(ngx_http_im_api_t *api);
void ngx_http_im_conv_clear_all(ngx_http_im_api_t *api);
void ngx_http_im_msg_revoke(ngx_http_im_api_t *api);
void ngx_http_im_msg_purge(ngx_http_im_api_t *api);


#endif /* _NGX_HTTP_IM_API_H_INCLUDED_ */
