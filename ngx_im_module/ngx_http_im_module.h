
/*
 * ngx_im: an instant-messaging server inside nginx.
 * Shared types of the module's nginx-facing parts.
 */


#ifndef _NGX_HTTP_IM_MODULE_H_INCLUDED_
#define _NGX_HTTP_IM_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_thread_pool.h>

#include "ngx_http_im_error.h"
#include "ngx_http_im_rate.h"
#include "ngx_http_im_limits.h"
#include "ngx_http_im_ws_frame.h"
#include "ngx_http_im_json.h"
#include "ngx_http_im_token.h"
#include "ngx_http_im_content.h"


/* request identifiers (DESIGN.md, 1.2) */
#define NGX_HTTP_IM_REQ_NEWEST_SEQ    1001
#define NGX_HTTP_IM_REQ_PULL_RANGE    1002
#define NGX_HTTP_IM_REQ_SEND          1003
#define NGX_HTTP_IM_REQ_PULL_SEQS     1005
#define NGX_HTTP_IM_REQ_CONV_SEQ      1006
#define NGX_HTTP_IM_REQ_PUSH          2001
#define NGX_HTTP_IM_REQ_KICK          2002
#define NGX_HTTP_IM_REQ_LOGOUT        2003
#define NGX_HTTP_IM_REQ_BACKGROUND    2004
#define NGX_HTTP_IM_REQ_PRESENCE      2005


/* longest clientMsgID */
#define NGX_HTTP_IM_CMID_MAX          128


/* contentTypes from here on are system notifications, not for users */
#define NGX_HTTP_IM_CONTENT_SYSTEM    1000


#define NGX_HTTP_IM_LOC_WS            1
#define NGX_HTTP_IM_LOC_API           2
#define NGX_HTTP_IM_LOC_METRICS       3


/* counters, in ngx_http_im_metrics.c's order */
enum {
    NGX_HTTP_IM_M_CONNECTIONS = 0,
    NGX_HTTP_IM_M_LOGINS,
    NGX_HTTP_IM_M_LOGIN_FAILURES,
    NGX_HTTP_IM_M_FRAMES_IN,
    NGX_HTTP_IM_M_FRAMES_OUT,
    NGX_HTTP_IM_M_PUSHES,
    NGX_HTTP_IM_M_KICKS,
    NGX_HTTP_IM_M_PUSH_JOBS,
    NGX_HTTP_IM_M_REDIS_RECONNECTS,
    NGX_HTTP_IM_M_REDIS_ERRORS,
    NGX_HTTP_IM_M_REDIS_BUSY,
    NGX_HTTP_IM_M_OVERFLOWS,
    NGX_HTTP_IM_M_PROTOCOL_ERRORS,
    NGX_HTTP_IM_M_PERSISTED,
    NGX_HTTP_IM_M_PERSIST_ERRORS,
    NGX_HTTP_IM_M_PERSIST_FULL,
    NGX_HTTP_IM_M_MONGO_READS,
    NGX_HTTP_IM_M_REDIS_MOVED,
    NGX_HTTP_IM_M_REDIS_ASK,
    NGX_HTTP_IM_M_REDIS_REFRESHES,
    NGX_HTTP_IM_M_REDIS_RESUBSCRIBES,
    NGX_HTTP_IM_M_PUSH_DROPPED,
    NGX_HTTP_IM_M_N
};

/* im_messages_sent_total{kind}: sessionType 1, 3, 4, and online-only */
#define NGX_HTTP_IM_SESSION_N         4
#define NGX_HTTP_IM_ROUTES_MAX        128
#define NGX_HTTP_IM_CODES_MAX         32    /* >= ngx_http_im_errors_n */


#if (NGX_DEBUG)
#define ngx_http_im_assert(log, cond)                                       \
    if (!(cond)) {                                                          \
        ngx_log_error(NGX_LOG_ALERT, log, 0, "im assertion failed: " #cond);\
        ngx_debug_point();                                                  \
    }
#else
#define ngx_http_im_assert(log, cond)
#endif


typedef struct {
    ngx_str_t                  secret;
    ngx_array_t               *admins;          /* of ngx_str_t */
    ngx_str_t                  redis_host;      /* IP text or unix path */
    ngx_int_t                  redis_port;      /* 0 for a unix socket */
    ngx_array_t               *redis_cluster;   /* seeds, of redis_addr */
    ngx_msec_t                 redis_connect_timeout;
    ngx_msec_t                 redis_timeout;
    ngx_uint_t                 redis_max_pending;
    time_t                     token_expire;
    time_t                     dedup_ttl;
    ngx_flag_t                 friend_verify;   /* 1:1 needs friendship */
    ngx_uint_t                 max_convs;
    ngx_uint_t                 push_stream_max;

    ngx_str_t                  mongo_uri;       /* empty: Redis only */
    ngx_str_t                  mongo_db;
    ngx_str_t                  mongo_pool;      /* thread pool name */
    ngx_uint_t                 mongo_clients;
    ngx_uint_t                 mongo_max_pending;
    ngx_uint_t                 persist_batch;
    ngx_uint_t                 persist_stream_max;
    ngx_uint_t                 hot_window;
    ngx_uint_t                 seq_block;
    ngx_msec_t                 persist_claim;
    time_t                     revoke_window;   /* 0: no limit */
    ngx_uint_t                 multi_login;     /* NGX_HTTP_IM_LOGIN_* */
} ngx_http_im_main_conf_t;


/* im_cors_origins */
typedef struct {
    ngx_array_t                origins;        /* canonical, of ngx_str_t */
    ngx_uint_t                 any;            /* "*" */
} ngx_http_im_cors_t;


typedef struct {
    ngx_uint_t                 kind;
    size_t                     ws_max_frame;
    size_t                     ws_max_message;
    size_t                     ws_send_queue;
    ngx_msec_t                 ws_ping_interval;
    ngx_msec_t                 ws_timeout;
    ngx_uint_t                 ws_max_inflight;
    size_t                     max_content;
    size_t                     api_max_body;
    ngx_uint_t                 pull_max;
    ngx_uint_t                 ws_rate;        /* requests per second, */
    ngx_uint_t                 ws_burst;       /* each burst right after */
    ngx_uint_t                 api_rate;
    ngx_uint_t                 api_burst;
    ngx_http_im_cors_t        *cors;           /* NULL: same origin only */
} ngx_http_im_loc_conf_t;


typedef struct ngx_http_im_user_s     ngx_http_im_user_t;
typedef struct ngx_http_im_session_s  ngx_http_im_session_t;


/* REST rate buckets per worker, by a hash of the user ID */
#define NGX_HTTP_IM_API_BUCKETS       4096

/* a user's sessions on one worker share this many times a session's
 * rate */
#define NGX_HTTP_IM_USER_RATE         4


#define NGX_HTTP_IM_SUB_NONE          0
#define NGX_HTTP_IM_SUB_PENDING       1
#define NGX_HTTP_IM_SUB_DONE          2
#define NGX_HTTP_IM_SUB_LEAVING       3


/*
 * What a session's connection does for the layers below the WebSocket
 * surface: ws.c fills it in, so session.c and msg.c never call ws.c.
 */
typedef struct {
    void  (*send)(ngx_http_im_session_t *s, ngx_uint_t opcode,
                  u_char *data, size_t len);
    void  (*close)(ngx_http_im_session_t *s, ngx_int_t code,
                   const char *reason);
    void  (*goodbye)(ngx_http_im_session_t *s);
    void  (*resume)(ngx_http_im_session_t *s);
    void  (*login_done)(ngx_http_im_session_t *s, ngx_int_t ok);
    /* a policy login's seat is taken (its line came): it goes live */
    void  (*seated)(ngx_http_im_session_t *s);
} ngx_http_im_session_io_t;


/* one per user id with sessions on this worker */
struct ngx_http_im_user_s {
    ngx_str_node_t             sn;
    ngx_http_im_bucket_t       bucket;         /* its sessions' requests */
    ngx_queue_t                link;           /* in worker->user_list */
    ngx_queue_t                sessions;
    ngx_uint_t                 state;
    ngx_uint_t                 busy;
    ngx_queue_t                groups;         /* group.c's memberships */
    ngx_uint_t                 gwait;          /* group subscriptions */
    uint64_t                   gload;          /* its groups' load */
};


struct ngx_http_im_session_s {
    ngx_http_im_session_io_t  *io;
    ngx_http_request_t        *r;
    ngx_connection_t          *c;
    ngx_http_im_loc_conf_t    *conf;
    ngx_http_im_user_t        *user;
    ngx_queue_t                user_link;
    ngx_queue_t                link;
    uint64_t                   id;
    ngx_uint_t                 refs;
    ngx_int_t                  platform;
    ngx_str_t                  uid;
    ngx_str_t                  token;
    ngx_str_t                  operation_id;

    ngx_http_im_ws_parser_t    parser;

    u_char                    *out;            /* pending outbound bytes */
    size_t                     out_pos;
    size_t                     out_len;
    size_t                     out_cap;

    u_char                    *stash;          /* input held back while */
    size_t                     stash_len;      /* too many are in flight */

    ngx_event_t                ping;
    ngx_uint_t                 inflight;
    ngx_msec_t                 last_in;
    ngx_http_im_bucket_t       bucket;         /* its requests */

    unsigned                   upgraded:1;
    unsigned                   closed:1;
    unsigned                   closing:1;
    unsigned                   pinged:1;
    unsigned                   queued:1;       /* in user->sessions */
    unsigned                   binary:1;       /* pushes as protobuf */
    unsigned                   js:1;           /* sdkType=js */
    unsigned                   msg_resp:1;     /* isMsgResp=true */
    unsigned                   kicked:1;       /* while logging in */
    unsigned                   registry:1;     /* registry check sent */
    unsigned                   background:1;   /* app in background */
    unsigned                   subprotocol:1;  /* token in a protocol */
    unsigned                   seated:1;       /* login.lua sent: it may
                                                * be in the presence */

    ngx_queue_t                watches;        /* presence.c's */
    ngx_uint_t                 nwatches;
};


typedef struct {
    ngx_http_im_main_conf_t   *imcf;
    ngx_log_t                 *log;
    ngx_rbtree_t               users;
    ngx_rbtree_node_t          sentinel;
    ngx_queue_t                user_list;
    ngx_rbtree_t               groups;         /* group.c's */
    ngx_rbtree_node_t          group_sentinel;
    ngx_queue_t                group_list;
    ngx_rbtree_t               watched;        /* presence.c's */
    ngx_rbtree_node_t          watched_sentinel;
    ngx_queue_t                watched_list;
    ngx_queue_t                sessions;
    ngx_queue_t                api_calls;      /* REST calls in progress */
    ngx_str_t                  origin;         /* unique per worker */
    uint64_t                   next_id;
    u_char                    *recv_buf;
    size_t                     recv_size;
    ngx_http_im_buf_t          scratch;
    ngx_event_t                alive;
    uint64_t                   id_prefix;      /* message IDs */
    uint64_t                   id_counter;
    ngx_http_im_bucket_t      *api_buckets;    /* REST, per user */
} ngx_http_im_worker_t;


extern ngx_module_t            ngx_http_im_module;
extern ngx_http_im_worker_t   *ngx_http_im_worker;


/* http.c */
ngx_int_t ngx_http_im_is_admin(ngx_http_im_main_conf_t *imcf, ngx_str_t *uid);
ngx_table_elt_t *ngx_http_im_header(ngx_http_request_t *r, const char *name,
    size_t len);
ngx_int_t ngx_http_im_send_body(ngx_http_request_t *r, ngx_uint_t status,
    const char *type, ngx_http_im_buf_t *b);
#define ngx_http_im_send_json(r, status, b)                                 \
    ngx_http_im_send_body(r, status, "application/json", b)

/* cors.c */
char *ngx_http_im_cors_origins(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
ngx_int_t ngx_http_im_cors_preflight(ngx_http_request_t *r);
ngx_int_t ngx_http_im_cors_ws_origin(ngx_http_request_t *r);
ngx_int_t ngx_http_im_cors_filter_init(ngx_conf_t *cf);

/* metrics.c */
typedef const char *(*ngx_http_im_route_name_pt)(ngx_uint_t i);

ngx_int_t ngx_http_im_metrics_add_zone(ngx_conf_t *cf,
    ngx_http_im_route_name_pt route_name);
ngx_int_t ngx_http_im_metrics_handler(ngx_http_request_t *r);
void ngx_http_im_metric_add(ngx_uint_t metric, ngx_atomic_int_t n);
void ngx_http_im_metric_sent(ngx_uint_t session);
void ngx_http_im_metric_rest(ngx_uint_t route, ngx_int_t code);
void ngx_http_im_metric_ws(ngx_int_t code);
void ngx_http_im_metrics_worker_start(void);
#define ngx_http_im_metric_inc(metric)  ngx_http_im_metric_add(metric, 1)

/* ws.c */
ngx_int_t ngx_http_im_ws_handler(ngx_http_request_t *r);
void ngx_http_im_ws_send(ngx_http_im_session_t *s, ngx_uint_t opcode,
    u_char *data, size_t len);
void ngx_http_im_ws_close(ngx_http_im_session_t *s, ngx_int_t code,
    const char *reason);
void ngx_http_im_ws_shutdown(void);
void ngx_http_im_ws_goodbye(ngx_http_im_session_t *s);
void ngx_http_im_ws_resume(ngx_http_im_session_t *s);

/* session.c */

/* how a session's client speaks: docs/protocol.md "Encodings" */
#define NGX_HTTP_IM_ENC_JSON          0       /* text frames of JSON */
#define NGX_HTTP_IM_ENC_PB            1       /* binary frames of im.Req */
#define NGX_HTTP_IM_ENC_JS            2       /* the JS SDK's: JSON with
                                               * base64 protobuf data */

#define ngx_http_im_session_encoding(s)                                     \
    ((s)->js ? NGX_HTTP_IM_ENC_JS                                           \
             : (s)->binary ? NGX_HTTP_IM_ENC_PB : NGX_HTTP_IM_ENC_JSON)


ngx_http_im_session_t *ngx_http_im_session_create(ngx_http_request_t *r,
    ngx_http_im_session_io_t *io);
void ngx_http_im_session_ref(ngx_http_im_session_t *s);
void ngx_http_im_session_unref(ngx_http_im_session_t *s);
void ngx_http_im_session_detach(ngx_http_im_session_t *s);
void ngx_http_im_session_end(ngx_http_im_session_t *s);
ngx_int_t ngx_http_im_session_join(ngx_http_im_session_t *s);
void ngx_http_im_session_leave(ngx_http_im_session_t *s);
void ngx_http_im_session_subscribed(ngx_str_t *uid, ngx_int_t ok);
void ngx_http_im_session_delivery(ngx_str_t *uid, u_char *data,
    size_t len);
void ngx_http_im_session_resubscribe(void);
void ngx_http_im_session_presence(ngx_http_im_session_t *s, ngx_uint_t on);
void ngx_http_im_session_alive(ngx_event_t *ev);

/* frames.c: a server frame (2001, 2002, 2005) for many sessions */
typedef struct {
    long long                  req_identifier;
    ngx_uint_t                 built;
    size_t                     head;        /* where "data" starts */
    ngx_http_im_buf_t          json;
    ngx_http_im_buf_t          pb;
    ngx_http_im_buf_t          js;
    unsigned                   pb_failed:1;
    unsigned                   js_failed:1;
} ngx_http_im_frames_t;

void ngx_http_im_frames_begin(ngx_http_im_frames_t *f,
    long long req_identifier);
#define ngx_http_im_frames_end(f)  ngx_http_im_resp_end(&(f)->json)
void ngx_http_im_frames_send(ngx_http_im_session_t *s,
    ngx_http_im_frames_t *f);
void ngx_http_im_frames_free(ngx_http_im_frames_t *f);

/* msg.c */
void ngx_http_im_msg_dispatch(ngx_http_im_session_t *s, u_char *data,
    size_t len, ngx_uint_t binary);

/* send.c */
typedef void (*ngx_http_im_send_pt)(void *data, ngx_int_t err,
    ngx_http_im_buf_t *ack);

typedef struct {
    uint64_t                   sid;          /* sending session, or 0 */
    ngx_uint_t                 online_only;
    ngx_uint_t                 offline_push;
    ngx_str_t                  push_class;
    ngx_http_im_send_pt        done;
    void                      *data;
    /* gets, before done(), the 2001 data of the stored message, for a
     * JS SDK client that learns its seq from it */
    ngx_http_im_buf_t         *echo;
} ngx_http_im_send_t;

ngx_int_t ngx_http_im_msg_send(ngx_http_im_msg_t *m, ngx_str_t *conv,
    ngx_http_im_send_t *opts);
ngx_int_t ngx_http_im_msg_option(ngx_http_im_msg_t *m, const char *key);
void ngx_http_im_notify(ngx_str_t *from, ngx_str_t *to, ngx_str_t *conv,
    ngx_int_t content_type, ngx_http_im_buf_t *detail);
void ngx_http_im_conv_notify(ngx_str_t *from, ngx_str_t *to,
    ngx_str_t *conv, ngx_int_t content_type, ngx_http_im_buf_t *detail);
void ngx_http_im_group_notify(ngx_str_t *from, ngx_str_t *gid,
    ngx_int_t content_type, ngx_http_im_buf_t *detail);
void ngx_http_im_friend_notify(ngx_str_t *from, ngx_str_t *to,
    ngx_int_t content_type, ngx_http_im_buf_t *detail);
const char *ngx_http_im_msg_check(ngx_http_im_msg_t *m);

/* persist.c */
void ngx_http_im_persist_init(ngx_cycle_t *cycle);
void ngx_http_im_persist_exit(void);

/* api.c */
ngx_int_t ngx_http_im_api_handler(ngx_http_request_t *r);
const char *ngx_http_im_api_route_name(ngx_uint_t i);
ngx_int_t ngx_http_im_api_body_filter_init(ngx_conf_t *cf);
void ngx_http_im_api_shutdown(void);


#endif /* _NGX_HTTP_IM_MODULE_H_INCLUDED_ */
