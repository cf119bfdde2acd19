
/*
 * ngx_im: MongoDB tasks on an nginx thread pool.
 *
 * A task's done() runs on the event loop with t->rc NGX_OK, NGX_ERROR
 * (t->err says why) or NGX_DECLINED: it was skipped, because its caller
 * gave up (ngx_http_im_mongo_cancel()) or the worker is exiting, before
 * or between its MongoDB operations.
 */


#ifndef _NGX_HTTP_IM_MONGO_H_INCLUDED_
#define _NGX_HTTP_IM_MONGO_H_INCLUDED_


#include "ngx_http_im_module.h"


#define NGX_HTTP_IM_MONGO_INSERT        1
#define NGX_HTTP_IM_MONGO_FIND          2
#define NGX_HTTP_IM_MONGO_RESERVE       3
#define NGX_HTTP_IM_MONGO_RESEED        4
#define NGX_HTTP_IM_MONGO_CONV_SAVE     5
#define NGX_HTTP_IM_MONGO_CONV_LOAD     6
#define NGX_HTTP_IM_MONGO_MSG_REPLACE   7
#define NGX_HTTP_IM_MONGO_MSG_PURGE     8
#define NGX_HTTP_IM_MONGO_GROUP_SAVE    9
#define NGX_HTTP_IM_MONGO_GROUP_LOAD    10
#define NGX_HTTP_IM_MONGO_USER_SAVE     11
#define NGX_HTTP_IM_MONGO_USER_LOAD     12
#define NGX_HTTP_IM_MONGO_USER_LIST     13
#define NGX_HTTP_IM_MONGO_USER_INSERT   14

#define NGX_HTTP_IM_MONGO_ID_MAX        (2 * NGX_HTTP_IM_UID_MAX + 64)


/*
 * Strings of an item live in task->in, at offsets.  Each op's comment in
 * ngx_http_im_mongo.c says what it reads and writes.
 */
typedef struct {
    size_t                     conv_off;
    size_t                     conv_len;
    int64_t                    seq;
    size_t                     off;        /* INSERT, MSG_REPLACE, */
    size_t                     len;        /* CONV_SAVE: JSON in "in"; */
                                           /* FIND: result in "out" */
    size_t                     id_off;     /* stream entry ID, to ack */
    size_t                     id_len;
    ngx_uint_t                 failed;     /* refused for good */
    ngx_uint_t                 duplicate;  /* INSERT: the _id exists; */
                                           /* CONV_SAVE: a rev as new */
    ngx_uint_t                 collision;  /* ... as another message */
} ngx_http_im_mongo_item_t;


typedef struct ngx_http_im_mongo_task_s  ngx_http_im_mongo_task_t;

struct ngx_http_im_mongo_task_s {
    ngx_uint_t                 op;
    void                     (*done)(ngx_http_im_mongo_task_t *t);
    void                      *data;
    ngx_int_t                  rc;
    char                       err[256];
    int64_t                    value;      /* RESERVE, CONV_LOAD in; */
                                           /* RESEED out; MSG_PURGE */
                                           /* in and out */
    int64_t                    stored;     /* RESEED out: highest msg */
    ngx_uint_t                 n;
    ngx_http_im_mongo_item_t  *items;
    ngx_http_im_buf_t          in;
    ngx_http_im_buf_t          out;

    /* set by ngx_http_im_mongo_post() */
    ngx_thread_task_t         *thread_task;
    void                      *pool;
    const char                *db;

    /* set on the event loop, read by the pool thread */
    ngx_atomic_t               cancelled;
};


ngx_int_t ngx_http_im_mongo_init(ngx_cycle_t *cycle,
    ngx_http_im_main_conf_t *imcf);
void ngx_http_im_mongo_exit(void);
ngx_int_t ngx_http_im_mongo_enabled(void);
ngx_http_im_mongo_task_t *ngx_http_im_mongo_task(ngx_uint_t op, ngx_uint_t n);
void ngx_http_im_mongo_task_free(ngx_http_im_mongo_task_t *t);
ngx_int_t ngx_http_im_mongo_post(ngx_http_im_mongo_task_t *t);
void ngx_http_im_mongo_cancel(ngx_http_im_mongo_task_t *t);


#endif /* _NGX_HTTP_IM_MONGO_H_INCLUDED_ */
