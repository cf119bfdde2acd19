
/*
 * ngx_im: the persistence pipeline, Redis stream -> MongoDB.
 *
 * send.lua appends {conversation, seq} of every stored message to the
 * im:persist stream.  Each worker takes batches of it as one consumer of
 * the "persist" group (persist_take.lua: its own unacknowledged entries
 * first, then entries of consumers idle for a minute, then new ones),
 * inserts them from the thread pool, and acknowledges them only after
 * MongoDB accepted them (persist_done.lua), which also lets the Redis hot
 * window shrink.  One batch per worker is in flight at a time.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_redis.h"
#include "ngx_http_im_mongo.h"


#define NGX_HTTP_IM_PERSIST_IDLE     200
#define NGX_HTTP_IM_PERSIST_TIDY     60000
#define NGX_HTTP_IM_PERSIST_GROUP    "persist"
#define NGX_HTTP_IM_BACKOFF_FIRST    1000
#define NGX_HTTP_IM_BACKOFF_LAST     30000


static void ngx_http_im_persist_handler(ngx_event_t *ev);
static void ngx_http_im_persist_taken(redisReply *reply, void *data);
static void ngx_http_im_persist_inserted(ngx_http_im_mongo_task_t *t);
static void ngx_http_im_persist_acked(redisReply *reply, void *data);
static void ngx_http_im_persist_next(ngx_msec_t delay);


static ngx_event_t  ngx_http_im_persist_ev;
static ngx_uint_t   ngx_http_im_persist_busy;
static ngx_msec_t   ngx_http_im_persist_backoff;
static ngx_msec_t   ngx_http_im_persist_tidied;


void
ngx_http_im_persist_init(ngx_cycle_t *cycle)
{
    ngx_http_im_persist_busy = 0;
    ngx_http_im_persist_backoff = 0;

    ngx_memzero(&ngx_http_im_persist_ev, sizeof(ngx_event_t));
    ngx_http_im_persist_ev.handler = ngx_http_im_persist_handler;
    ngx_http_im_persist_ev.log = cycle->log;
    ngx_http_im_persist_ev.cancelable = 1;

    ngx_http_im_persist_next(NGX_HTTP_IM_PERSIST_IDLE);
}


void
ngx_http_im_persist_exit(void)
{
    if (ngx_http_im_persist_ev.timer_set) {
        ngx_del_timer(&ngx_http_im_persist_ev);
    }
}


static void
ngx_http_im_persist_next(ngx_msec_t delay)
{
    if (ngx_exiting || ngx_terminate) {
        return;
    }

    if (ngx_http_im_persist_ev.timer_set) {
        ngx_del_timer(&ngx_http_im_persist_ev);
    }

    ngx_add_timer(&ngx_http_im_persist_ev, delay ? delay : 1);
}


static void
ngx_http_im_persist_handler(ngx_event_t *ev)
{
    size_t                    len[6];
    const char               *argv[6];
    ngx_http_im_main_conf_t  *imcf;
    u_char                    count[NGX_INT_T_LEN];
    u_char                    claim[NGX_INT_T_LEN];

    if (ngx_http_im_persist_busy) {
        return;
    }

    imcf = ngx_http_im_worker->imcf;

    argv[0] = "im:persist";
    len[0] = 10;
    argv[1] = NGX_HTTP_IM_PERSIST_GROUP;
    len[1] = sizeof(NGX_HTTP_IM_PERSIST_GROUP) - 1;
    argv[2] = (char *) ngx_http_im_worker->origin.data;
    len[2] = ngx_http_im_worker->origin.len;
    argv[3] = (char *) count;
    len[3] = ngx_sprintf(count, "%ui", imcf->persist_batch) - count;
    argv[4] = (char *) claim;
    len[4] = ngx_sprintf(claim, "%M", imcf->persist_claim) - claim;

    /* now and then, forget consumers (old workers) with nothing pending */
    argv[5] = "0";
    len[5] = 1;

    if (ngx_current_msec - ngx_http_im_persist_tidied
        > NGX_HTTP_IM_PERSIST_TIDY)
    {
        ngx_http_im_persist_tidied = ngx_current_msec;
        argv[5] = "1";
    }

    if (ngx_http_im_redis_script(NGX_HTTP_IM_LUA_PERSIST_TAKE,
                                 ngx_http_im_persist_taken, NULL, 1, 6,
                                 argv, len)
        != NGX_OK)
    {
        ngx_http_im_persist_next(NGX_HTTP_IM_BACKOFF_FIRST);
        return;
    }

    ngx_http_im_persist_busy = 1;
}


/* {id, conversation, seq, JSON, ...} from persist_take.lua */
static void
ngx_http_im_persist_taken(redisReply *reply, void *data)
{
    size_t                     i, n;
    redisReply               **e;
    ngx_http_im_mongo_task_t  *t;
    ngx_http_im_mongo_item_t  *it;

    ngx_http_im_persist_busy = 0;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        ngx_http_im_persist_next(NGX_HTTP_IM_BACKOFF_FIRST);
        return;
    }

    n = reply->elements / 4;
    if (n == 0) {
        ngx_http_im_persist_next(NGX_HTTP_IM_PERSIST_IDLE);
        return;
    }

    t = ngx_http_im_mongo_task(NGX_HTTP_IM_MONGO_INSERT, n);
    if (t == NULL) {
        ngx_http_im_persist_next(NGX_HTTP_IM_BACKOFF_FIRST);
        return;
    }

    t->done = ngx_http_im_persist_inserted;
    e = reply->element;

    for (i = 0; i < n; i++, e += 4) {
        if (e[0]->type != REDIS_REPLY_STRING
            || e[1]->type != REDIS_REPLY_STRING
            || e[2]->type != REDIS_REPLY_STRING
            || e[3]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        it = &t->items[t->n++];

        it->id_off = t->in.len;
        it->id_len = e[0]->len;
        ngx_http_im_buf_add(&t->in, e[0]->str, e[0]->len);
        it->conv_off = t->in.len;
        it->conv_len = e[1]->len;
        ngx_http_im_buf_add(&t->in, e[1]->str, e[1]->len);
        it->seq = ngx_atoof((u_char *) e[2]->str, e[2]->len);
        it->off = t->in.len;
        it->len = e[3]->len;    /* 0: gone from Redis; acknowledged only */
        ngx_http_im_buf_add(&t->in, e[3]->str, e[3]->len);
    }

    if (t->in.failed || ngx_http_im_mongo_post(t) != NGX_OK) {
        ngx_http_im_mongo_task_free(t);
        ngx_http_im_persist_next(NGX_HTTP_IM_BACKOFF_FIRST);
        return;
    }

    ngx_http_im_persist_busy = 1;
}


static void
ngx_http_im_persist_inserted(ngx_http_im_mongo_task_t *t)
{
    size_t                     *len;
    ngx_uint_t                  i, argc;
    const char                **argv;
    u_char                     *nums, *p;
    ngx_http_im_mongo_item_t   *it;

    ngx_http_im_persist_busy = 0;

    if (t->rc != NGX_OK) {
        /* the entries stay pending for this consumer; retry them later */
        ngx_http_im_metric_inc(NGX_HTTP_IM_M_PERSIST_ERRORS);

        ngx_http_im_persist_backoff = ngx_http_im_persist_backoff
                                      ? ngx_http_im_persist_backoff * 2
                                      : NGX_HTTP_IM_BACKOFF_FIRST;
        if (ngx_http_im_persist_backoff > NGX_HTTP_IM_BACKOFF_LAST) {
            ngx_http_im_persist_backoff = NGX_HTTP_IM_BACKOFF_LAST;
        }

        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im: persisting %ui messages failed, retrying in "
                      "%M ms", t->n, ngx_http_im_persist_backoff);

        ngx_http_im_mongo_task_free(t);
        ngx_http_im_persist_next(ngx_http_im_persist_backoff);
        return;
    }

    ngx_http_im_persist_backoff = 0;

    for (i = 0; i < t->n; i++) {
        if (!t->items[i].failed && t->items[i].len) {
            ngx_http_im_metric_inc(NGX_HTTP_IM_M_PERSISTED);
        }
    }

    argc = 3 + 3 * t->n;
    argv = ngx_alloc(argc * (sizeof(char *) + sizeof(size_t))
                     + (t->n + 1) * NGX_INT64_LEN, ngx_cycle->log);
    if (argv == NULL) {
        ngx_http_im_mongo_task_free(t);
        ngx_http_im_persist_next(NGX_HTTP_IM_BACKOFF_FIRST);
        return;
    }

    len = (size_t *) (argv + argc);
    nums = (u_char *) (len + argc);

    argv[0] = "im:persist";
    len[0] = 10;
    argv[1] = NGX_HTTP_IM_PERSIST_GROUP;
    len[1] = sizeof(NGX_HTTP_IM_PERSIST_GROUP) - 1;
    argv[2] = (char *) nums;
    len[2] = ngx_sprintf(nums, "%ui", ngx_http_im_worker->imcf->hot_window)
             - nums;
    p = nums + NGX_INT64_LEN;

    for (i = 0; i < t->n; i++) {
        it = &t->items[i];

        argv[3 + 3 * i] = (char *) t->in.data + it->id_off;
        len[3 + 3 * i] = it->id_len;
        argv[4 + 3 * i] = (char *) t->in.data + it->conv_off;
        len[4 + 3 * i] = it->conv_len;

        if (it->collision) {
            /* cannot happen: seqs only move forward */
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "im: seq %L of \"%*s\" is stored in MongoDB "
                          "as another message", (long long) it->seq,
                          it->conv_len, t->in.data + it->conv_off);
        }

        if (it->failed) {
            /* acknowledged, but kept in Redis for good: never trimmed */
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "im: MongoDB refused message %L of \"%*s\"; it "
                          "stays in Redis only", (long long) it->seq,
                          it->conv_len, t->in.data + it->conv_off);
            ngx_http_im_metric_inc(NGX_HTTP_IM_M_PERSIST_ERRORS);
            len[4 + 3 * i] = 0;
        }
        argv[5 + 3 * i] = (char *) p;
        len[5 + 3 * i] = ngx_sprintf(p, "%L", (long long) it->seq) - p;
        p += NGX_INT64_LEN;
    }

    if (ngx_http_im_redis_script(NGX_HTTP_IM_LUA_PERSIST_DONE,
                                 ngx_http_im_persist_acked, NULL, 1,
                                 (int) argc, argv, len)
        == NGX_OK)
    {
        ngx_http_im_persist_busy = 1;

    } else {
        /* the batch is in MongoDB; a retry finds the duplicates stored */
        ngx_http_im_persist_next(NGX_HTTP_IM_BACKOFF_FIRST);
    }

    ngx_free(argv);
    ngx_http_im_mongo_task_free(t);
}


static void
ngx_http_im_persist_acked(redisReply *reply, void *data)
{
    ngx_http_im_persist_busy = 0;

    /* a full batch suggests more is waiting: go on at once */
    ngx_http_im_persist_next(reply && reply->type != REDIS_REPLY_ERROR
                             ? 0 : NGX_HTTP_IM_BACKOFF_FIRST);
}
