
/*
 * ngx_im: what the store layer's files share, and nobody else sees.
 */


#ifndef _NGX_HTTP_IM_STORE_INT_H_INCLUDED_
#define _NGX_HTTP_IM_STORE_INT_H_INCLUDED_


#include "ngx_http_im_store.h"
#include "ngx_http_im_redis.h"
#include "ngx_http_im_mongo.h"


/* a user's or conversation's key ("im:{c:<conv>}:reserved") */
#define NGX_HTTP_IM_STORE_KEY_LEN      (2 * NGX_HTTP_IM_UID_MAX + 64)
#define NGX_HTTP_IM_STORE_CHANNEL_LEN  (NGX_HTTP_IM_UID_MAX + 16)


#define NGX_HTTP_IM_STORE_ARGS         32
#define NGX_HTTP_IM_STORE_QUEUES       16   /* persistence, in a cluster */
#define NGX_HTTP_IM_STORE_ROOM         4096


/*
 * The argv of one command or script, built in order: keys, channels and
 * numbers are formatted into room; other strings are referenced.  A
 * script's KEYS come first, as its header lists them.
 */
typedef struct {
    const char                *argv[NGX_HTTP_IM_STORE_ARGS];
    size_t                     len[NGX_HTTP_IM_STORE_ARGS];
    ngx_uint_t                 n;
    ngx_uint_t                 failed;      /* out of room or slots */
    u_char                    *pos;
    u_char                     room[NGX_HTTP_IM_STORE_ROOM];
} ngx_http_im_store_args_t;


typedef struct ngx_http_im_store_op_s  ngx_http_im_store_op_t;

/* one operation in flight; handler is the caller's typed callback */
struct ngx_http_im_store_op_s {
    void                      *handler;
    void                      *data;
    ngx_http_im_store_op_t    *next;        /* in the free list */
    ngx_str_t                 *uids;
    ngx_uint_t                 n;
    ngx_uint_t                 failed;
    ngx_uint_t                 known;
    void                      *hold;        /* memory of a multi-step op */
};


/* a growing buffer of protocol-encoded strings (store_batch.c) */
typedef struct {
    u_char                    *data;
    size_t                     len;
    size_t                     size;
} ngx_http_im_store_buf_t;

/*
 * The calls of one script made in one event-loop turn, sent as one call
 * (store_batch.c).  Set: script, nkeys and nargs of one item (its keys
 * first), max items (the script's bound), max_bytes, handler (called for
 * each item's op with its reply, NULL when the batch failed), event
 * (handler ngx_http_im_store_batch_flush_handler, data the batch, log)
 * and fail_event (ngx_http_im_store_batch_failed_handler, likewise).
 */
typedef struct {
    ngx_uint_t                 script;
    ngx_uint_t                 nkeys;
    ngx_uint_t                 nargs;
    ngx_uint_t                 max;
    size_t                     max_bytes;
    ngx_http_im_redis_pt       handler;
    ngx_event_t                event;
    ngx_event_t                fail_event;

    ngx_uint_t                 n;
    ngx_http_im_store_op_t    *first;
    ngx_http_im_store_op_t    *last;
    ngx_http_im_store_buf_t    keys;
    ngx_http_im_store_buf_t    args;
    size_t                     keys_mark;
    size_t                     args_mark;
    ngx_http_im_store_op_t    *failed;      /* not sent, to be answered */
} ngx_http_im_store_batch_t;


/* the gathering of per-user replies in a cluster */
typedef struct {
    ngx_http_im_store_op_t    *op;
    ngx_http_im_redis_pt       handler;
    redisReply                *all;
    ngx_uint_t                 pending;
    ngx_uint_t                 failed;
    ngx_uint_t                 unwrap;      /* take each reply's [0] */
} ngx_http_im_store_gather_t;

typedef struct {
    ngx_http_im_store_gather_t  *g;
    ngx_uint_t                   i;
} ngx_http_im_store_part_t;


ngx_http_im_store_op_t *ngx_http_im_store_op(void *handler, void *data);
void ngx_http_im_store_op_free(ngx_http_im_store_op_t *op);
ngx_int_t ngx_http_im_store_script(ngx_uint_t script,
    ngx_http_im_redis_pt handler, ngx_http_im_store_op_t *op, int nkeys,
    int argc, const char **argv, const size_t *len);
ngx_int_t ngx_http_im_store_command(ngx_http_im_redis_pt handler,
    ngx_http_im_store_op_t *op, int argc, const char **argv,
    const size_t *len);
size_t ngx_http_im_store_key(u_char *buf, size_t size, const char *fmt,
    ngx_str_t *a);
void ngx_http_im_store_args(ngx_http_im_store_args_t *a);
void ngx_http_im_store_arg(ngx_http_im_store_args_t *a, const void *data,
    size_t len);
void ngx_http_im_store_arg_key(ngx_http_im_store_args_t *a,
    const char *fmt, ngx_str_t *v);
void ngx_http_im_store_arg_int(ngx_http_im_store_args_t *a, long long v);
void ngx_http_im_store_arg_channel(ngx_http_im_store_args_t *a,
    ngx_str_t *uid);
ngx_int_t ngx_http_im_store_run(ngx_uint_t script,
    ngx_http_im_redis_pt handler, ngx_http_im_store_op_t *op, int nkeys,
    ngx_http_im_store_args_t *a);
ngx_int_t ngx_http_im_store_call(ngx_uint_t script,
    ngx_http_im_redis_pt handler, void *data, int nkeys,
    ngx_http_im_store_args_t *a);
ngx_int_t ngx_http_im_store_send(ngx_http_im_redis_pt handler,
    ngx_http_im_store_op_t *op, ngx_http_im_store_args_t *a);
size_t ngx_http_im_store_channel(u_char *buf, ngx_str_t *uid);
size_t ngx_http_im_store_group_channel(u_char *buf, ngx_str_t *gid);
ngx_int_t ngx_http_im_store_channel_gid(ngx_str_t *channel, ngx_str_t *gid);
const char *ngx_http_im_store_publish_cmd(size_t *len);
void ngx_http_im_store_str(redisReply *e, ngx_str_t *s);
long long ngx_http_im_store_int(redisReply *e);
ngx_int_t ngx_http_im_store_gather(ngx_uint_t n, ngx_uint_t unwrap,
    ngx_http_im_redis_pt handler, ngx_http_im_store_op_t *op,
    ngx_http_im_store_part_t **parts);
void ngx_http_im_store_part_reply(redisReply *reply, void *data);
void ngx_http_im_store_part_queued(ngx_http_im_store_part_t *part,
    ngx_int_t rc);
void ngx_http_im_store_gathered(ngx_http_im_store_gather_t *g);
redisReply *ngx_http_im_store_copy(redisReply *r);

/* the result of a conv.lua or group.lua reply: {-1, code, errMsg} gives
 * the message; {0, answer, ...} the answer, and extra at its index */
void ngx_http_im_store_script_res(redisReply *reply, ngx_int_t err,
    ngx_uint_t extra, ngx_http_im_store_conv_res_t *r);

/* the indexes of users without MongoDB (users_list.lua), in one slot */
#define NGX_HTTP_IM_STORE_USERS_ALL    "im:{users}:all"
#define NGX_HTTP_IM_STORE_USERS_NICKS  "im:{users}:nicks"

/* store.c: users in Redis alone (store_user.c adds MongoDB) */
ngx_int_t ngx_http_im_store_users_register_redis(
    ngx_http_im_store_user_t *users, ngx_uint_t n, long long now_ms,
    ngx_http_im_store_done_pt done, void *data);
ngx_int_t ngx_http_im_store_users_profiles(ngx_str_t *uids, ngx_uint_t n,
    ngx_http_im_store_users_pt done, void *data);

/* store_conv.c: MongoDB tasks of the store */
ngx_int_t ngx_http_im_store_mongo_post(ngx_http_im_mongo_task_t *t,
    void (*done)(ngx_http_im_mongo_task_t *t), void *data);
ngx_int_t ngx_http_im_store_docs_save(ngx_uint_t op, redisReply *docs,
    void (*done)(ngx_http_im_mongo_task_t *t), void *data);


ngx_int_t ngx_http_im_store_batch_add(ngx_http_im_store_batch_t *b,
    ngx_http_im_store_op_t *op, const char **argv, const size_t *len);
void ngx_http_im_store_batch_flush(ngx_http_im_store_batch_t *b);
void ngx_http_im_store_batch_flush_handler(ngx_event_t *ev);
void ngx_http_im_store_batch_failed_handler(ngx_event_t *ev);


#endif /* _NGX_HTTP_IM_STORE_INT_H_INCLUDED_ */
