
/*
 * ngx_im: the persistence pipeline, Redis stream -> MongoDB.
 *
 * Every stored message is queued for MongoDB by the store.  Each worker
 * takes batches of the queue (its own unacknowledged entries first, then
 * entries of workers idle for im_persist_claim, then new ones), inserts
 * them from the thread pool, and acknowledges them only after MongoDB
 * accepted them, which also lets the Redis hot window shrink.  One batch
 * per worker is in flight at a time.  A Redis Cluster has several queues
 * (one slot each): the worker takes from one until it is empty, then the
 * next, and rests only after a round of empty ones.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_store.h"
#include "ngx_http_im_mongo.h"


#define NGX_HTTP_IM_PERSIST_IDLE     200
#define NGX_HTTP_IM_PERSIST_TIDY     60000
#define NGX_HTTP_IM_PERSIST_QUEUES   64      /* >= the store's queues */
#define NGX_HTTP_IM_BACKOFF_FIRST    1000
#define NGX_HTTP_IM_BACKOFF_LAST     30000


static void ngx_http_im_persist_handler(ngx_event_t *ev);
static void ngx_http_im_persist_taken(void *data, ngx_int_t err,
    ngx_http_im_store_entry_t *e, ngx_uint_t n);
static void ngx_http_im_persist_inserted(ngx_http_im_mongo_task_t *t);
static void ngx_http_im_persist_acked(void *data, ngx_int_t err);
static void ngx_http_im_persist_next(ngx_msec_t delay);


static ngx_event_t  ngx_http_im_persist_ev;
static ngx_uint_t   ngx_http_im_persist_busy;
static ngx_msec_t   ngx_http_im_persist_backoff;
static ngx_msec_t   ngx_http_im_persist_tidied[NGX_HTTP_IM_PERSIST_QUEUES];
static ngx_uint_t   ngx_http_im_persist_queue;
static ngx_uint_t   ngx_http_im_persist_empty;


void
ngx_http_im_persist_init(ngx_cycle_t *cycle)
{
    ngx_http_im_persist_busy = 0;
    ngx_http_im_persist_backoff = 0;
    ngx_http_im_persist_queue = 0;
    ngx_http_im_persist_empty = 0;

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
    ngx_uint_t                q, tidy;
    ngx_http_im_main_conf_t  *imcf;

    if (ngx_http_im_persist_busy) {
        return;
    }

    imcf = ngx_http_im_worker->imcf;

    /* now and then, forget consumers (old workers) with nothing pending */
    tidy = 0;

    q = ngx_http_im_persist_queue;

    if (ngx_current_msec - ngx_http_im_persist_tidied[q]
        > NGX_HTTP_IM_PERSIST_TIDY)
    {
        ngx_http_im_persist_tidied[q] = ngx_current_msec;
        tidy = 1;
    }

    if (ngx_http_im_store_persist_take(q, imcf->persist_batch,
                                       imcf->persist_claim, tidy,
                                       ngx_http_im_persist_taken, NULL)
        != NGX_OK)
    {
        ngx_http_im_persist_next(NGX_HTTP_IM_BACKOFF_FIRST);
        return;
    }

    ngx_http_im_persist_busy = 1;
}


static void
ngx_http_im_persist_taken(void *data, ngx_int_t err,
    ngx_http_im_store_entry_t *e, ngx_uint_t n)
{
    ngx_uint_t                 i;
    ngx_http_im_mongo_task_t  *t;
    ngx_http_im_mongo_item_t  *it;

    ngx_http_im_persist_busy = 0;

    if (err) {
        ngx_http_im_persist_next(NGX_HTTP_IM_BACKOFF_FIRST);
        return;
    }

    if (n == 0) {
        /* this queue is empty: the next one now, or a rest after a round
         * of empty queues */
        ngx_http_im_persist_queue = (ngx_http_im_persist_queue + 1)
                                    % ngx_http_im_store_persist_queues();

        if (++ngx_http_im_persist_empty
            < ngx_http_im_store_persist_queues())
        {
            ngx_http_im_persist_next(0);
            return;
        }

        ngx_http_im_persist_empty = 0;
        ngx_http_im_persist_next(NGX_HTTP_IM_PERSIST_IDLE);
        return;
    }

    ngx_http_im_persist_empty = 0;

    t = ngx_http_im_mongo_task(NGX_HTTP_IM_MONGO_INSERT, n);
    if (t == NULL) {
        ngx_http_im_persist_next(NGX_HTTP_IM_BACKOFF_FIRST);
        return;
    }

    t->done = ngx_http_im_persist_inserted;

    for (i = 0; i < n; i++) {
        it = &t->items[t->n++];

        it->id_off = t->in.len;
        it->id_len = e[i].id.len;
        ngx_http_im_buf_add(&t->in, e[i].id.data, e[i].id.len);
        it->conv_off = t->in.len;
        it->conv_len = e[i].conv.len;
        ngx_http_im_buf_add(&t->in, e[i].conv.data, e[i].conv.len);
        it->seq = e[i].seq;
        it->off = t->in.len;
        it->len = e[i].json.len;   /* 0: gone from Redis; acked only */
        ngx_http_im_buf_add(&t->in, e[i].json.data, e[i].json.len);
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
    ngx_uint_t                  i;
    ngx_http_im_mongo_item_t   *it;
    ngx_http_im_store_entry_t  *e;

    ngx_http_im_persist_busy = 0;

    if (t->rc == NGX_DECLINED) {
        /* skipped, the worker exits: the entries stay pending, and another
         * worker takes them over after im_persist_claim */
        ngx_http_im_mongo_task_free(t);
        return;
    }

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

    e = ngx_alloc(t->n * sizeof(ngx_http_im_store_entry_t), ngx_cycle->log);
    if (e == NULL) {
        ngx_http_im_mongo_task_free(t);
        ngx_http_im_persist_next(NGX_HTTP_IM_BACKOFF_FIRST);
        return;
    }

    for (i = 0; i < t->n; i++) {
        it = &t->items[i];

        e[i].id.data = t->in.data + it->id_off;
        e[i].id.len = it->id_len;
        e[i].conv.data = t->in.data + it->conv_off;
        e[i].conv.len = it->conv_len;
        e[i].seq = (long long) it->seq;
        e[i].failed = it->failed;

        if (!it->failed && it->len) {
            ngx_http_im_metric_inc(NGX_HTTP_IM_M_PERSISTED);
        }

        if (it->collision) {
            /* cannot happen: seqs only move forward */
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                          "im: seq %L of \"%V\" is stored in MongoDB "
                          "as another message", e[i].seq, &e[i].conv);
        }

        if (it->failed) {
            /* acknowledged, but kept in Redis for good: never trimmed */
            ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                          "im: MongoDB refused message %L of \"%V\"; it "
                          "stays in Redis only", e[i].seq, &e[i].conv);
            ngx_http_im_metric_inc(NGX_HTTP_IM_M_PERSIST_ERRORS);
        }
    }

    if (ngx_http_im_store_persist_done(ngx_http_im_persist_queue, e, t->n,
                                       ngx_http_im_persist_acked, NULL)
        == NGX_OK)
    {
        ngx_http_im_persist_busy = 1;

    } else {
        /* the batch is in MongoDB; a retry finds the duplicates stored */
        ngx_http_im_persist_next(NGX_HTTP_IM_BACKOFF_FIRST);
    }

    ngx_free(e);
    ngx_http_im_mongo_task_free(t);
}


static void
ngx_http_im_persist_acked(void *data, ngx_int_t err)
{
    ngx_http_im_persist_busy = 0;

    /* a full batch suggests more is waiting: go on at once */
    ngx_http_im_persist_next(err ? NGX_HTTP_IM_BACKOFF_FIRST : 0);
}
