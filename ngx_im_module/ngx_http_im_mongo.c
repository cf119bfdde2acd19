
/*
 * ngx_im: MongoDB through mongo-c-driver, on an nginx thread pool only.
 *
 * A task is posted with ngx_http_im_mongo_post(); its operation runs in a
 * pool thread with a client popped from the worker's mongoc_client_pool_t,
 * and its done() handler runs back on the event loop.  No mongoc call is
 * made on the event-loop thread (checked in debug builds).
 *
 * Documents (database im_mongo_database):
 *   msg:          {_id: "<conv>:<seq>", conversationID, seq, msg}
 *   seq_block:    {_id: "<conv>:<end>", conversationID, end}
 *   conversation: {_id, ownerUserID, conversationID, rev, ...}, built by
 *                 the caller; rev orders the versions of one record
 * _id lookups are the fast path on every MongoDB-compatible server; the
 * (conversationID, seq) index serves range queries on a real MongoDB.
 *
 * Bounds.  Every operation has mongoc timeouts (the URI's, or ours:
 * NGX_HTTP_IM_MONGO_SELECT, _CONNECT, _SOCKET), so a hung server fails a
 * task within about two socket timeouts (an operation and mongoc's one
 * retry).  A task skips its work, or the rest of it, once its caller gave
 * up (ngx_http_im_mongo_cancel()) or the worker is exiting: nginx's thread
 * pool runs every queued task before a worker may exit, and they must not
 * each wait for MongoDB.  While tasks are in flight a timer that is not
 * cancelable holds a graceful exit, so the worker waits for the running
 * ones in its event loop (idle) rather than in the pool's teardown (which
 * spins in sched_yield()), and NGX_HTTP_IM_MONGO_EXIT_WAIT at most.  Last,
 * the client pool is destroyed, which stops mongoc's monitor threads
 * (within NGX_HTTP_IM_MONGO_CONNECT while a check hangs).
 */


#include <mongoc/mongoc.h>
#include <pthread.h>

#include "ngx_http_im_mongo.h"
#include "ngx_http_im_id.h"


/*
 * The selector and the replacement of an item, for
 * ngx_http_im_mongo_replace(); NGX_ERROR when the item has none (its
 * JSON does not parse or lacks a field).
 */
typedef ngx_int_t (*ngx_http_im_mongo_pair_pt)(ngx_http_im_mongo_task_t *t,
    ngx_http_im_mongo_item_t *it, bson_t **sel, bson_t **doc);


static void ngx_http_im_mongo_thread(void *data, ngx_log_t *log);
static void ngx_http_im_mongo_event(ngx_event_t *ev);
static ngx_int_t ngx_http_im_mongo_insert(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client);
static ngx_int_t ngx_http_im_mongo_find(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client);
static ngx_int_t ngx_http_im_mongo_reserve(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client);
static ngx_int_t ngx_http_im_mongo_reseed(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client);
static ngx_int_t ngx_http_im_mongo_conv_save(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client);
static ngx_int_t ngx_http_im_mongo_conv_load(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client);
static ngx_int_t ngx_http_im_mongo_group_save(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client);
static ngx_int_t ngx_http_im_mongo_docs_load(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client, const char *name, const char *field);
static ngx_int_t ngx_http_im_mongo_user_list(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client);
static ngx_int_t ngx_http_im_mongo_user_insert(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client);
static ngx_int_t ngx_http_im_mongo_insert_each(ngx_http_im_mongo_task_t *t,
    mongoc_collection_t *coll, bson_t **docs, ngx_uint_t *map,
    ngx_uint_t n);
static bson_t *ngx_http_im_mongo_user_filter(ngx_http_im_mongo_task_t *t);
static ngx_int_t ngx_http_im_mongo_msg_replace(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client);
static ngx_int_t ngx_http_im_mongo_msg_purge(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client);
static ngx_int_t ngx_http_im_mongo_indexes(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client);
static bool ngx_http_im_mongo_index(mongoc_database_t *db, bson_t *cmd,
    bson_error_t *error);
static void ngx_http_im_mongo_uri_defaults(mongoc_uri_t *uri);
static ngx_uint_t ngx_http_im_mongo_skip(ngx_http_im_mongo_task_t *t);
static ngx_int_t ngx_http_im_mongo_run(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client);
static void ngx_http_im_mongo_hold(ngx_event_t *ev);
static int64_t ngx_http_im_mongo_max(mongoc_collection_t *coll,
    const char *conv, size_t len, const char *field,
    ngx_http_im_mongo_task_t *t);
static void ngx_http_im_mongo_error(ngx_http_im_mongo_task_t *t,
    const char *what, bson_error_t *error);
static int ngx_http_im_mongo_same_conv(ngx_http_im_mongo_task_t *t,
    ngx_http_im_mongo_item_t *it, const bson_t *doc);
static ngx_int_t ngx_http_im_mongo_conv_created(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client);
static int ngx_http_im_mongo_write_errors(ngx_http_im_mongo_task_t *t,
    bson_t *reply, ngx_uint_t *map, ngx_uint_t n);
static void ngx_http_im_mongo_id(char *id, ngx_http_im_mongo_task_t *t,
    ngx_http_im_mongo_item_t *it, int64_t n);
static ngx_int_t ngx_http_im_mongo_same_msgs(ngx_http_im_mongo_task_t *t,
    mongoc_collection_t *coll, bson_t **docs, ngx_uint_t *map,
    ngx_uint_t n);
static const char *ngx_http_im_mongo_smid(const bson_t *doc,
    const char *path);
static bson_t *ngx_http_im_mongo_msg_doc(ngx_http_im_mongo_task_t *t,
    ngx_http_im_mongo_item_t *it);
static ngx_int_t ngx_http_im_mongo_msg_pair(ngx_http_im_mongo_task_t *t,
    ngx_http_im_mongo_item_t *it, bson_t **sel, bson_t **doc);
static ngx_int_t ngx_http_im_mongo_conv_pair(ngx_http_im_mongo_task_t *t,
    ngx_http_im_mongo_item_t *it, bson_t **sel, bson_t **doc);
static ngx_int_t ngx_http_im_mongo_replace(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client, const char *name,
    ngx_http_im_mongo_pair_pt pair);
static ngx_int_t ngx_http_im_mongo_bulk(ngx_http_im_mongo_task_t *t,
    mongoc_bulk_operation_t *bulk, ngx_uint_t *map, ngx_uint_t n);
static ngx_uint_t ngx_http_im_mongo_doc_errors(const bson_t *reply);
static ngx_uint_t ngx_http_im_mongo_accounted(const bson_t *reply,
    ngx_uint_t n);
static ngx_int_t ngx_http_im_mongo_replace_again(ngx_http_im_mongo_task_t *t,
    mongoc_collection_t *coll, bson_t **sels, bson_t **docs,
    ngx_uint_t *map, ngx_uint_t n);
static ngx_int_t ngx_http_im_mongo_replace_each(ngx_http_im_mongo_task_t *t,
    mongoc_collection_t *coll, bson_t **sels, bson_t **docs,
    ngx_uint_t *map, ngx_uint_t n);
static ngx_int_t ngx_http_im_mongo_doc_error(ngx_http_im_mongo_task_t *t,
    ngx_http_im_mongo_item_t *it, const char *what, const bson_t *reply,
    bson_error_t *error);
static ngx_int_t ngx_http_im_mongo_conv_out(ngx_http_im_mongo_task_t *t,
    mongoc_collection_t *msgs, const bson_t *conv, ngx_uint_t *first);
static ngx_int_t ngx_http_im_mongo_last(ngx_http_im_mongo_task_t *t,
    mongoc_collection_t *msgs, const bson_t *conv, bson_t *out);


#define NGX_HTTP_IM_MONGO_DOWN       5000

/* mongoc timeouts (ms) where the URI sets none */
#define NGX_HTTP_IM_MONGO_SELECT     2000
#define NGX_HTTP_IM_MONGO_CONNECT    2000
#define NGX_HTTP_IM_MONGO_SOCKET     3000

/* a graceful exit waits for running tasks this long at most (ms) */
#define NGX_HTTP_IM_MONGO_EXIT_WAIT  10000
#define NGX_HTTP_IM_MONGO_TICK       1000


static mongoc_client_pool_t  *ngx_http_im_mongo_pool;
static ngx_thread_pool_t     *ngx_http_im_mongo_tp;
static pthread_t              ngx_http_im_mongo_loop;
static ngx_uint_t             ngx_http_im_mongo_pending;
static ngx_uint_t             ngx_http_im_mongo_indexed;
static ngx_msec_t             ngx_http_im_mongo_down_until;
static ngx_event_t            ngx_http_im_mongo_hold_ev;
static ngx_msec_t             ngx_http_im_mongo_exit_by;

/* pool threads in mongoc right now */
static ngx_atomic_t           ngx_http_im_mongo_busy;


/* In a worker: the client pool, sized to the thread pool. */
ngx_int_t
ngx_http_im_mongo_init(ngx_cycle_t *cycle, ngx_http_im_main_conf_t *imcf)
{
    char           *uri_text;
    bson_error_t    error;
    mongoc_uri_t   *uri;

    ngx_http_im_mongo_loop = pthread_self();
    ngx_http_im_mongo_down_until = ngx_current_msec;
    ngx_http_im_mongo_pending = 0;
    ngx_http_im_mongo_indexed = 0;
    ngx_http_im_mongo_exit_by = 0;
    ngx_http_im_mongo_busy = 0;

    /* not cancelable: holds a graceful exit while tasks are in flight */
    ngx_memzero(&ngx_http_im_mongo_hold_ev, sizeof(ngx_event_t));
    ngx_http_im_mongo_hold_ev.handler = ngx_http_im_mongo_hold;
    ngx_http_im_mongo_hold_ev.log = cycle->log;

    ngx_http_im_mongo_tp = ngx_thread_pool_get(cycle, &imcf->mongo_pool);
    if (ngx_http_im_mongo_tp == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im: thread pool \"%V\" not found",
                      &imcf->mongo_pool);
        return NGX_ERROR;
    }

    mongoc_init();

    uri_text = (char *) imcf->mongo_uri.data;
    uri = mongoc_uri_new_with_error(uri_text, &error);
    if (uri == NULL) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "im: invalid MongoDB URI: %s", error.message);
        return NGX_ERROR;
    }

    ngx_http_im_mongo_uri_defaults(uri);

    ngx_http_im_mongo_pool = mongoc_client_pool_new(uri);
    mongoc_uri_destroy(uri);

    if (ngx_http_im_mongo_pool == NULL) {
        return NGX_ERROR;
    }

    mongoc_client_pool_set_error_api(ngx_http_im_mongo_pool,
                                     MONGOC_ERROR_API_VERSION_2);
    mongoc_client_pool_max_size(ngx_http_im_mongo_pool,
                                (uint32_t) imcf->mongo_clients);

    return NGX_OK;
}


/*
 * A hung or unreachable server must fail a task in seconds, not in
 * mongoc's defaults (30 s to select a server, 5 minutes to read): sends
 * wait on reservations, pulls on reads, and a worker's exit on all of
 * them.  Timeouts the URI sets are kept.
 */
static void
ngx_http_im_mongo_uri_defaults(mongoc_uri_t *uri)
{
    if (!mongoc_uri_has_option(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS)) {
        mongoc_uri_set_option_as_int32(uri,
                                       MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
                                       NGX_HTTP_IM_MONGO_SELECT);
    }

    if (!mongoc_uri_has_option(uri, MONGOC_URI_CONNECTTIMEOUTMS)) {
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS,
                                       NGX_HTTP_IM_MONGO_CONNECT);
    }

    if (!mongoc_uri_has_option(uri, MONGOC_URI_SOCKETTIMEOUTMS)) {
        mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS,
                                       NGX_HTTP_IM_MONGO_SOCKET);
    }
}


/*
 * At worker exit, after nginx tore its thread pools down: queued tasks
 * were skipped (ngx_http_im_mongo_skip()), running ones finished.  The
 * client pool is destroyed, which stops mongoc's monitor threads: nginx
 * unloads this module (and with it libmongoc) next, and a thread still in
 * its code would crash the exiting worker.
 */
void
ngx_http_im_mongo_exit(void)
{
    if (ngx_http_im_mongo_hold_ev.timer_set) {
        ngx_del_timer(&ngx_http_im_mongo_hold_ev);
    }

    if (ngx_http_im_mongo_pool == NULL) {
        return;
    }

    if (ngx_http_im_mongo_busy == 0) {
        mongoc_client_pool_destroy(ngx_http_im_mongo_pool);
        mongoc_cleanup();

    } else {
        /* cannot happen: nginx waits for its pool threads */
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "im mongo: %uA pool threads still in MongoDB at exit",
                      ngx_http_im_mongo_busy);
    }

    ngx_http_im_mongo_pool = NULL;
}


ngx_int_t
ngx_http_im_mongo_enabled(void)
{
    return ngx_http_im_mongo_pool != NULL;
}


/* allocates a task with room for n items */
ngx_http_im_mongo_task_t *
ngx_http_im_mongo_task(ngx_uint_t op, ngx_uint_t n)
{
    ngx_http_im_mongo_task_t  *t;

    t = ngx_calloc(sizeof(ngx_http_im_mongo_task_t)
                   + n * sizeof(ngx_http_im_mongo_item_t), ngx_cycle->log);
    if (t == NULL) {
        return NULL;
    }

    t->op = op;
    t->items = (ngx_http_im_mongo_item_t *) (t + 1);
    ngx_http_im_buf_init(&t->in, 64 * 1024 * 1024);
    ngx_http_im_buf_init(&t->out, 64 * 1024 * 1024);

    return t;
}


void
ngx_http_im_mongo_task_free(ngx_http_im_mongo_task_t *t)
{
    ngx_http_im_buf_free(&t->in);
    ngx_http_im_buf_free(&t->out);
    ngx_free(t->thread_task);
    ngx_free(t);
}


/*
 * Runs t in the thread pool; t->done() is called on the event loop.
 * Returns NGX_DECLINED when MongoDB is not configured, the bound of
 * tasks in flight is reached or the worker is exiting; t is not consumed
 * then.
 */
ngx_int_t
ngx_http_im_mongo_post(ngx_http_im_mongo_task_t *t)
{
    ngx_thread_task_t  *task;

    if (ngx_http_im_mongo_pool == NULL || ngx_exiting || ngx_terminate
        || ngx_http_im_mongo_pending
           >= ngx_http_im_worker->imcf->mongo_max_pending)
    {
        return NGX_DECLINED;
    }

    /* after a failure, requests that someone waits for fail at once for a
     * while; persistence keeps trying on its own schedule */
    if (t->op != NGX_HTTP_IM_MONGO_INSERT
        && (ngx_msec_int_t) (ngx_http_im_mongo_down_until - ngx_current_msec)
           > 0)
    {
        return NGX_DECLINED;
    }

    task = ngx_calloc(sizeof(ngx_thread_task_t), ngx_cycle->log);
    if (task == NULL) {
        return NGX_DECLINED;
    }

    task->ctx = t;
    task->handler = ngx_http_im_mongo_thread;
    task->event.handler = ngx_http_im_mongo_event;
    task->event.data = t;
    task->event.log = ngx_cycle->log;

    t->thread_task = task;
    t->pool = ngx_http_im_mongo_pool;
    t->db = (char *) ngx_http_im_worker->imcf->mongo_db.data;

    if (ngx_thread_task_post(ngx_http_im_mongo_tp, task) != NGX_OK) {
        t->thread_task = NULL;
        ngx_free(task);
        return NGX_DECLINED;
    }

    ngx_http_im_mongo_pending++;

    if (!ngx_http_im_mongo_hold_ev.timer_set) {
        ngx_add_timer(&ngx_http_im_mongo_hold_ev, NGX_HTTP_IM_MONGO_TICK);
    }

    return NGX_OK;
}


/*
 * The caller of a posted task gave up on it: if it has not started, it
 * is skipped (its done() still runs, with t->rc NGX_DECLINED); if it
 * runs, it stops at its next operation.
 */
void
ngx_http_im_mongo_cancel(ngx_http_im_mongo_task_t *t)
{
    t->cancelled = 1;
}


static void
ngx_http_im_mongo_event(ngx_event_t *ev)
{
    ngx_http_im_mongo_task_t  *t;

    t = ev->data;
    ngx_http_im_mongo_pending--;

    if (ngx_http_im_mongo_pending == 0
        && ngx_http_im_mongo_hold_ev.timer_set)
    {
        ngx_del_timer(&ngx_http_im_mongo_hold_ev);
    }

    if (t->rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ev->log, 0, "im mongo: %s", t->err);
        ngx_http_im_mongo_down_until = ngx_current_msec
                                       + NGX_HTTP_IM_MONGO_DOWN;

    } else if (t->rc == NGX_OK) {
        ngx_http_im_mongo_down_until = ngx_current_msec;
    }

    t->done(t);
}


/*
 * Tasks are in flight.  Normally nothing to do; in a graceful exit this
 * timer keeps the worker's event loop running (idle) until they are
 * done, NGX_HTTP_IM_MONGO_EXIT_WAIT at most; then nginx's pool teardown
 * waits for what still runs, which the mongoc timeouts bound.
 */
static void
ngx_http_im_mongo_hold(ngx_event_t *ev)
{
    if (!ngx_exiting) {
        ngx_add_timer(ev, NGX_HTTP_IM_MONGO_TICK);
        return;
    }

    if (ngx_http_im_mongo_exit_by == 0) {
        ngx_http_im_mongo_exit_by = ngx_current_msec
                                    + NGX_HTTP_IM_MONGO_EXIT_WAIT;
    }

    if ((ngx_msec_int_t) (ngx_http_im_mongo_exit_by - ngx_current_msec) > 0)
    {
        ngx_add_timer(ev, NGX_HTTP_IM_MONGO_TICK);
        return;
    }

    ngx_log_error(NGX_LOG_WARN, ev->log, 0,
                  "im mongo: %ui tasks still running at exit, "
                  "not waiting for them any longer",
                  ngx_http_im_mongo_pending);
}


/*
 * In a pool thread: t should not (go on to) talk to MongoDB, because its
 * caller gave up or the worker is exiting.  nginx's flags are read
 * without a lock: they only go from 0 to 1 (ngx_quit back to 0 once
 * ngx_exiting is 1), and a stale read costs one more operation.
 */
static ngx_uint_t
ngx_http_im_mongo_skip(ngx_http_im_mongo_task_t *t)
{
    return t->cancelled || ngx_quit || ngx_exiting || ngx_terminate;
}


/* in a pool thread: blocking is fine here, and only here */
static void
ngx_http_im_mongo_thread(void *data, ngx_log_t *log)
{
    ngx_http_im_mongo_task_t *t = data;

    mongoc_client_t  *client;

    if (pthread_equal(pthread_self(), ngx_http_im_mongo_loop)) {
        /* cannot happen: this runs in a pool thread */
        ngx_log_error(NGX_LOG_ALERT, log, 0,
                      "im mongo: called on the event-loop thread");
        t->rc = NGX_ERROR;
        return;
    }

    /* a task that waited in the queue: is anyone still waiting for it? */
    if (ngx_http_im_mongo_skip(t)) {
        t->rc = NGX_DECLINED;
        return;
    }

    (void) ngx_atomic_fetch_add(&ngx_http_im_mongo_busy, 1);

    client = mongoc_client_pool_pop((mongoc_client_pool_t *) t->pool);

    if (client == NULL) {
        ngx_cpystrn((u_char *) t->err, (u_char *) "no client", sizeof(t->err));
        t->rc = NGX_ERROR;

    } else {
        t->rc = ngx_http_im_mongo_run(t, client);
        mongoc_client_pool_push((mongoc_client_pool_t *) t->pool, client);
    }

    (void) ngx_atomic_fetch_add(&ngx_http_im_mongo_busy, -1);
}


static ngx_int_t
ngx_http_im_mongo_run(ngx_http_im_mongo_task_t *t, mongoc_client_t *client)
{
    ngx_int_t  rc;

    /*
     * The ops that store, or query by the indexed fields, make sure the
     * indexes exist; after the first success in a worker this is free.
     */
    if (t->op == NGX_HTTP_IM_MONGO_INSERT
        || t->op == NGX_HTTP_IM_MONGO_CONV_SAVE
        || t->op == NGX_HTTP_IM_MONGO_CONV_LOAD
        || t->op == NGX_HTTP_IM_MONGO_MSG_REPLACE
        || t->op == NGX_HTTP_IM_MONGO_MSG_PURGE
        || t->op == NGX_HTTP_IM_MONGO_GROUP_SAVE
        || t->op == NGX_HTTP_IM_MONGO_GROUP_LOAD
        || t->op == NGX_HTTP_IM_MONGO_USER_SAVE
        || t->op == NGX_HTTP_IM_MONGO_USER_LOAD
        || t->op == NGX_HTTP_IM_MONGO_USER_LIST
        || t->op == NGX_HTTP_IM_MONGO_USER_INSERT)
    {
        rc = ngx_http_im_mongo_indexes(t, client);
        if (rc != NGX_OK) {
            return rc;
        }

        if (ngx_http_im_mongo_skip(t)) {
            return NGX_DECLINED;
        }
    }

    switch (t->op) {

    case NGX_HTTP_IM_MONGO_INSERT:
        return ngx_http_im_mongo_insert(t, client);

    case NGX_HTTP_IM_MONGO_FIND:
        return ngx_http_im_mongo_find(t, client);

    case NGX_HTTP_IM_MONGO_RESERVE:
        return ngx_http_im_mongo_reserve(t, client);

    case NGX_HTTP_IM_MONGO_RESEED:
        return ngx_http_im_mongo_reseed(t, client);

    case NGX_HTTP_IM_MONGO_CONV_SAVE:
        return ngx_http_im_mongo_conv_save(t, client);

    case NGX_HTTP_IM_MONGO_CONV_LOAD:
        return ngx_http_im_mongo_conv_load(t, client);

    case NGX_HTTP_IM_MONGO_MSG_REPLACE:
        return ngx_http_im_mongo_msg_replace(t, client);

    case NGX_HTTP_IM_MONGO_MSG_PURGE:
        return ngx_http_im_mongo_msg_purge(t, client);

    case NGX_HTTP_IM_MONGO_GROUP_SAVE:
        return ngx_http_im_mongo_group_save(t, client);

    case NGX_HTTP_IM_MONGO_GROUP_LOAD:
        return ngx_http_im_mongo_docs_load(t, client, "group", "groupID");

    case NGX_HTTP_IM_MONGO_USER_SAVE:
        return ngx_http_im_mongo_replace(t, client, "user",
                                         ngx_http_im_mongo_conv_pair);

    case NGX_HTTP_IM_MONGO_USER_LOAD:
        return ngx_http_im_mongo_docs_load(t, client, "user", "ownerUserID");

    case NGX_HTTP_IM_MONGO_USER_LIST:
        return ngx_http_im_mongo_user_list(t, client);

    case NGX_HTTP_IM_MONGO_USER_INSERT:
        return ngx_http_im_mongo_user_insert(t, client);

    default:
        ngx_cpystrn((u_char *) t->err, (u_char *) "unknown op",
                    sizeof(t->err));
        return NGX_ERROR;
    }
}


/* the indexes, once per worker */
static ngx_int_t
ngx_http_im_mongo_indexes(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client)
{
    bool                ok;
    bson_t             *cmd;
    bson_error_t        error;
    mongoc_database_t  *db;

    if (ngx_http_im_mongo_indexed) {
        return NGX_OK;
    }

    db = mongoc_client_get_database(client, t->db);

    /* a conversation's messages by seq: ranges, the newest, purges */
    cmd = BCON_NEW("createIndexes", BCON_UTF8("msg"),
                   "indexes", "[", "{",
                       "key", "{", "conversationID", BCON_INT32(1),
                                   "seq", BCON_INT32(1), "}",
                       "name", BCON_UTF8("conversation_seq"),
                   "}", "]");

    ok = ngx_http_im_mongo_index(db, cmd, &error);

    if (ok) {
        /* the re-seed's "largest end of a conversation" */
        cmd = BCON_NEW("createIndexes", BCON_UTF8("seq_block"),
                       "indexes", "[", "{",
                           "key", "{", "conversationID", BCON_INT32(1),
                                       "end", BCON_INT32(-1), "}",
                           "name", BCON_UTF8("conversation_end"),
                       "}", "]");

        ok = ngx_http_im_mongo_index(db, cmd, &error);
    }

    if (ok) {
        /* a user's conversation records, loaded all at once */
        cmd = BCON_NEW("createIndexes", BCON_UTF8("conversation"),
                       "indexes", "[", "{",
                           "key", "{", "ownerUserID", BCON_INT32(1), "}",
                           "name", BCON_UTF8("owner"),
                       "}", "]");

        ok = ngx_http_im_mongo_index(db, cmd, &error);
    }

    if (ok) {
        /* a group's documents, loaded all at once */
        cmd = BCON_NEW("createIndexes", BCON_UTF8("group"),
                       "indexes", "[", "{",
                           "key", "{", "groupID", BCON_INT32(1), "}",
                           "name", BCON_UTF8("group"),
                       "}", "]");

        ok = ngx_http_im_mongo_index(db, cmd, &error);
    }

    if (ok) {
        /* a user's profile, friends, blacks and applications, at once */
        cmd = BCON_NEW("createIndexes", BCON_UTF8("user"),
                       "indexes", "[", "{",
                           "key", "{", "ownerUserID", BCON_INT32(1), "}",
                           "name", BCON_UTF8("owner"),
                       "}", "]");

        ok = ngx_http_im_mongo_index(db, cmd, &error);
    }

    mongoc_database_destroy(db);

    if (!ok) {
        ngx_http_im_mongo_error(t, "createIndexes", &error);
        return NGX_ERROR;
    }

    /* a benign race between pool threads: createIndexes is idempotent */
    ngx_http_im_mongo_indexed = 1;

    return NGX_OK;
}


/* runs a createIndexes command, and frees it */
static bool
ngx_http_im_mongo_index(mongoc_database_t *db, bson_t *cmd,
    bson_error_t *error)
{
    bool    ok;
    bson_t  reply;

    ok = mongoc_database_write_command_with_opts(db, cmd, NULL, &reply,
                                                 error);
    bson_destroy(&reply);
    bson_destroy(cmd);

    return ok;
}


/*
 * items: conv, seq, json (the MsgData).  Unordered, so one bad document
 * does not stop the rest.  When the server answered with per-document
 * errors, duplicate keys mean "stored by an earlier try", and any other
 * error marks that item failed: the batch is done either way, so one
 * message MongoDB refuses can never halt persistence.  Without such an
 * answer (no connection, timeout) the batch fails and is retried.
 */
static ngx_int_t
ngx_http_im_mongo_insert(ngx_http_im_mongo_task_t *t, mongoc_client_t *client)
{
    bool                       ok;
    bson_t                   **docs, reply, opts;
    ngx_int_t                  rc;
    ngx_uint_t                 i, n, *map;
    bson_error_t               error;
    mongoc_collection_t       *coll;
    ngx_http_im_mongo_item_t  *it;

    docs = calloc(t->n, sizeof(bson_t *) + sizeof(ngx_uint_t));
    if (docs == NULL) {
        ngx_cpystrn((u_char *) t->err, (u_char *) "out of memory",
                    sizeof(t->err));
        return NGX_ERROR;
    }

    map = (ngx_uint_t *) (docs + t->n);

    n = 0;
    for (i = 0; i < t->n; i++) {
        it = &t->items[i];

        if (it->len == 0) {
            /* gone from Redis (flushed): nothing to store */
            continue;
        }

        docs[n] = ngx_http_im_mongo_msg_doc(t, it);
        if (docs[n] == NULL) {
            it->failed = 1;
            continue;
        }

        map[n++] = i;
    }

    bson_init(&opts);
    BSON_APPEND_BOOL(&opts, "ordered", false);
    bson_init(&reply);

    coll = mongoc_client_get_collection(client, t->db, "msg");
    ok = n == 0 || mongoc_collection_insert_many(coll, (const bson_t **) docs,
                                                 n, &opts, &reply, &error);
    rc = NGX_OK;

    if (!ok && ngx_http_im_mongo_write_errors(t, &reply, map, n)) {
        rc = ngx_http_im_mongo_same_msgs(t, coll, docs, map, n);

    } else if (!ok) {
        ngx_http_im_mongo_error(t, "insert", &error);
        rc = NGX_ERROR;
    }

    bson_destroy(&reply);
    bson_destroy(&opts);
    mongoc_collection_destroy(coll);

    for (i = 0; i < n; i++) {
        bson_destroy(docs[i]);
    }

    free(docs);

    return rc == NGX_OK ? ngx_http_im_mongo_conv_created(t, client) : rc;
}


/*
 * A single or notification conversation begins at seq 1: both users get
 * their conversation record (rev 0: an existing one, or a newer save,
 * wins), so the conversation list survives a Redis loss even for users
 * who never touched its settings or read state.  Few items have seq 1,
 * and FerretDB stops an unordered batch at its first duplicate, so one
 * insert each.
 */
static ngx_int_t
ngx_http_im_mongo_conv_created(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client)
{
    int                        side;
    bool                       ok;
    char                       id[NGX_HTTP_IM_MONGO_ID_MAX];
    char                       uid[2][NGX_HTTP_IM_UID_MAX + 1];
    size_t                     n, len;
    bson_t                    *doc;
    ngx_uint_t                 i;
    const char                *conv;
    bson_error_t               error;
    mongoc_collection_t       *coll;
    ngx_http_im_mongo_item_t  *it;

    coll = NULL;

    for (i = 0; i < t->n; i++) {
        it = &t->items[i];
        conv = (const char *) t->in.data + it->conv_off;
        len = it->conv_len;

        if (it->seq != 1 || it->failed || it->len == 0 || len < 4
            || len > NGX_HTTP_IM_MONGO_ID_MAX - NGX_HTTP_IM_UID_MAX - 2
            || (ngx_strncmp(conv, "si_", 3) != 0
                && ngx_strncmp(conv, "sn_", 3) != 0))
        {
            continue;
        }

        /* the two users: the first, then the other of it */
        n = (const char *) ngx_strlchr((u_char *) conv + 3,
                                       (u_char *) conv + len, '_')
            - conv - 3;
        if (n == 0 || n > NGX_HTTP_IM_UID_MAX
            || ngx_http_im_conv_peer(conv, len, conv + 3, n, uid[1]) == 0)
        {
            continue;
        }

        ngx_memcpy(uid[0], conv + 3, n);
        uid[0][n] = '\0';

        if (coll == NULL) {
            coll = mongoc_client_get_collection(client, t->db,
                                                "conversation");
        }

        for (side = 0; side < 2; side++) {
            snprintf(id, sizeof(id), "%s:%.*s", uid[side], (int) len, conv);

            /* "<uid>:<conv>", NUL-terminated: its tail is the ID */
            doc = BCON_NEW("_id", BCON_UTF8(id),
                           "ownerUserID", BCON_UTF8(uid[side]),
                           "conversationID",
                           BCON_UTF8(id + ngx_strlen(uid[side]) + 1),
                           "conversationType",
                           BCON_INT32(conv[1] == 'i' ? 1 : 4),
                           "userID", BCON_UTF8(uid[1 - side]),
                           "groupID", BCON_UTF8(""),
                           "hasReadSeq", BCON_INT64(0),
                           "minSeq", BCON_INT64(0),
                           "deleted", BCON_BOOL(false),
                           "rev", BCON_INT64(0));

            ok = mongoc_collection_insert_one(coll, doc, NULL, NULL, &error);
            bson_destroy(doc);

            if (!ok && error.code != 11000) {
                ngx_http_im_mongo_error(t, "insert conversation", &error);
                mongoc_collection_destroy(coll);
                return NGX_ERROR;
            }
        }
    }

    if (coll) {
        mongoc_collection_destroy(coll);
    }

    return NGX_OK;
}


/*
 * The per-document errors of an insert_many reply: marks the items of
 * errors other than a duplicate key failed.  Returns 0 when the reply has
 * no such list (the insert as a whole failed).
 */
static int
ngx_http_im_mongo_write_errors(ngx_http_im_mongo_task_t *t, bson_t *reply,
    ngx_uint_t *map, ngx_uint_t n)
{
    int64_t      index, code;
    bson_iter_t  iter, list, e;

    if (!bson_iter_init_find(&iter, reply, "writeErrors")
        || !BSON_ITER_HOLDS_ARRAY(&iter)
        || !bson_iter_recurse(&iter, &list)
        || bson_iter_init_find(&e, reply, "writeConcernErrors"))
    {
        return 0;
    }

    while (bson_iter_next(&list)) {
        if (!BSON_ITER_HOLDS_DOCUMENT(&list) || !bson_iter_recurse(&list, &e))
        {
            return 0;
        }

        index = -1;
        code = 0;

        while (bson_iter_next(&e)) {
            if (strcmp(bson_iter_key(&e), "index") == 0) {
                index = bson_iter_as_int64(&e);

            } else if (strcmp(bson_iter_key(&e), "code") == 0) {
                code = bson_iter_as_int64(&e);
            }
        }

        if (index < 0 || (ngx_uint_t) index >= n) {
            return 0;
        }

        if (code != 11000) {
            t->items[map[index]].failed = 1;

        } else {
            t->items[map[index]].duplicate = 1;
        }
    }

    return 1;
}


/*
 * A duplicate key is "stored by an earlier try" only if the stored
 * document is the same message: a different serverMsgID under the same
 * seq means the seq was used twice (Redis lost data), and that message is
 * marked failed, so it stays in Redis.  Returns NGX_ERROR when the check
 * itself failed, NGX_DECLINED when it stopped (ngx_http_im_mongo_skip()):
 * the batch is retried.
 */
static ngx_int_t
ngx_http_im_mongo_same_msgs(ngx_http_im_mongo_task_t *t,
    mongoc_collection_t *coll, bson_t **docs, ngx_uint_t *map, ngx_uint_t n)
{
    bool                       ok;
    bson_t                    *filter, *opts;
    ngx_uint_t                 i;
    const char                *mine, *stored;
    bson_iter_t                iter;
    const bson_t              *doc;
    bson_error_t               error;
    mongoc_cursor_t           *cursor;
    ngx_http_im_mongo_item_t  *it;

    ok = true;

    for (i = 0; ok && i < n; i++) {
        it = &t->items[map[i]];
        if (!it->duplicate) {
            continue;
        }

        if (!bson_iter_init_find(&iter, docs[i], "_id")) {
            continue;
        }

        if (ngx_http_im_mongo_skip(t)) {
            return NGX_DECLINED;
        }

        filter = BCON_NEW("_id", BCON_UTF8(bson_iter_utf8(&iter, NULL)));
        opts = BCON_NEW("projection", "{", "msg.serverMsgID", BCON_INT32(1),
                        "}");
        cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);

        mine = ngx_http_im_mongo_smid(docs[i], "msg.serverMsgID");
        stored = NULL;

        if (mongoc_cursor_next(cursor, &doc)) {
            stored = ngx_http_im_mongo_smid(doc, "msg.serverMsgID");
        }

        if (mongoc_cursor_error(cursor, &error)) {
            ngx_http_im_mongo_error(t, "duplicate check", &error);
            ok = false;

        } else if (mine == NULL || stored == NULL
                   || strcmp(mine, stored) != 0)
        {
            it->failed = 1;
            it->collision = 1;
        }

        mongoc_cursor_destroy(cursor);
        bson_destroy(filter);
        bson_destroy(opts);
    }

    return ok ? NGX_OK : NGX_ERROR;
}


/*
 * The stored form of an item's message, as INSERT and MSG_REPLACE write
 * it: {_id: "<conv>:<seq>", conversationID, seq, msg: <MsgData>}.  NULL
 * when its MsgData JSON does not parse.
 */
static bson_t *
ngx_http_im_mongo_msg_doc(ngx_http_im_mongo_task_t *t,
    ngx_http_im_mongo_item_t *it)
{
    char           id[NGX_HTTP_IM_MONGO_ID_MAX];
    bson_t        *doc, *msg;
    bson_error_t   error;

    msg = bson_new_from_json(t->in.data + it->off, it->len, &error);
    if (msg == NULL) {
        return NULL;
    }

    ngx_http_im_mongo_id(id, t, it, it->seq);

    doc = bson_new();
    BSON_APPEND_UTF8(doc, "_id", id);
    bson_append_utf8(doc, "conversationID", -1,
                     (char *) t->in.data + it->conv_off, (int) it->conv_len);
    BSON_APPEND_INT64(doc, "seq", it->seq);
    BSON_APPEND_DOCUMENT(doc, "msg", msg);
    bson_destroy(msg);

    return doc;
}


static const char *
ngx_http_im_mongo_smid(const bson_t *doc, const char *path)
{
    bson_iter_t  iter, field;

    if (!bson_iter_init(&iter, doc)
        || !bson_iter_find_descendant(&iter, path, &field)
        || !BSON_ITER_HOLDS_UTF8(&field))
    {
        return NULL;
    }

    return bson_iter_utf8(&field, NULL);
}


static void
ngx_http_im_mongo_id(char *id, ngx_http_im_mongo_task_t *t,
    ngx_http_im_mongo_item_t *it, int64_t n)
{
    u_char  *p;

    p = ngx_snprintf((u_char *) id, NGX_HTTP_IM_MONGO_ID_MAX - 1, "%*s:%L",
                     it->conv_len, t->in.data + it->conv_off, (long long) n);
    *p = '\0';
}


/*
 * items: conv, seq in; out gets each found message's MsgData JSON, and
 * the item its offset and length (len 0: not found).
 */
static ngx_int_t
ngx_http_im_mongo_find(ngx_http_im_mongo_task_t *t, mongoc_client_t *client)
{
    char                       id[NGX_HTTP_IM_MONGO_ID_MAX];
    char                      *json;
    size_t                     jlen;
    bson_t                    *filter, *opts, ids, msg;
    uint32_t                   dlen;
    int64_t                    seq;
    ngx_uint_t                 i, j;
    const bson_t              *doc;
    const uint8_t             *data;
    bson_iter_t                iter;
    bson_error_t               error;
    mongoc_cursor_t           *cursor;
    mongoc_collection_t       *coll;
    ngx_http_im_mongo_item_t  *it;

    filter = bson_new();
    bson_append_document_begin(filter, "_id", -1, &msg);
    bson_append_array_begin(&msg, "$in", -1, &ids);

    for (i = 0; i < t->n; i++) {
        char  key[16];

        it = &t->items[i];
        ngx_http_im_mongo_id(id, t, it, it->seq);
        snprintf(key, sizeof(key), "%u", (unsigned) i);
        BSON_APPEND_UTF8(&ids, key, id);
    }

    bson_append_array_end(&msg, &ids);
    bson_append_document_end(filter, &msg);

    opts = BCON_NEW("projection", "{", "conversationID", BCON_INT32(1),
                    "seq", BCON_INT32(1), "msg", BCON_INT32(1), "}");

    coll = mongoc_client_get_collection(client, t->db, "msg");
    cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);

    while (mongoc_cursor_next(cursor, &doc)) {
        if (!bson_iter_init_find(&iter, doc, "seq")) {
            continue;
        }

        seq = bson_iter_as_int64(&iter);

        if (!bson_iter_init_find(&iter, doc, "msg")
            || !BSON_ITER_HOLDS_DOCUMENT(&iter))
        {
            continue;
        }

        bson_iter_document(&iter, &dlen, &data);
        if (!bson_init_static(&msg, data, dlen)) {
            continue;
        }

        json = bson_as_relaxed_extended_json(&msg, &jlen);
        if (json == NULL) {
            continue;
        }

        /* match the document to its item; conversations repeat rarely */
        for (j = 0; j < t->n; j++) {
            it = &t->items[j];
            if (it->seq == seq && it->len == 0
                && ngx_http_im_mongo_same_conv(t, it, doc))
            {
                it->off = t->out.len;
                it->len = jlen;
                ngx_http_im_buf_add(&t->out, json, jlen);
                break;
            }
        }

        bson_free(json);
    }

    if (mongoc_cursor_error(cursor, &error)) {
        ngx_http_im_mongo_error(t, "find", &error);
        mongoc_cursor_destroy(cursor);
        mongoc_collection_destroy(coll);
        bson_destroy(filter);
        bson_destroy(opts);
        return NGX_ERROR;
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    bson_destroy(filter);
    bson_destroy(opts);

    return t->out.failed ? NGX_ERROR : NGX_OK;
}


static int
ngx_http_im_mongo_same_conv(ngx_http_im_mongo_task_t *t,
    ngx_http_im_mongo_item_t *it, const bson_t *doc)
{
    uint32_t      len;
    const char   *conv;
    bson_iter_t   iter;

    if (!bson_iter_init_find(&iter, doc, "conversationID")
        || !BSON_ITER_HOLDS_UTF8(&iter))
    {
        return 0;
    }

    conv = bson_iter_utf8(&iter, &len);

    return len == it->conv_len
           && memcmp(conv, t->in.data + it->conv_off, len) == 0;
}


/*
 * Records that conv may use seqs up to t->value.  An insert, never an
 * update: inserts are safe under concurrency on every MongoDB-compatible
 * server, and the mark is the largest "end" of the conversation.
 */
static ngx_int_t
ngx_http_im_mongo_reserve(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client)
{
    bool                       ok;
    char                       id[NGX_HTTP_IM_MONGO_ID_MAX];
    bson_t                    *doc;
    bson_error_t               error;
    mongoc_collection_t       *coll;
    ngx_http_im_mongo_item_t  *it;

    it = &t->items[0];
    ngx_http_im_mongo_id(id, t, it, t->value);

    doc = bson_new();
    BSON_APPEND_UTF8(doc, "_id", id);
    bson_append_utf8(doc, "conversationID", -1,
                     (char *) t->in.data + it->conv_off, (int) it->conv_len);
    BSON_APPEND_INT64(doc, "end", t->value);

    coll = mongoc_client_get_collection(client, t->db, "seq_block");
    ok = mongoc_collection_insert_one(coll, doc, NULL, NULL, &error);

    if (!ok && error.code == 11000) {
        ok = true;
    }

    if (!ok) {
        ngx_http_im_mongo_error(t, "reserve", &error);
    }

    mongoc_collection_destroy(coll);
    bson_destroy(doc);

    return ok ? NGX_OK : NGX_ERROR;
}


/* the highest seq conv ever reserved or stored: t->value */
static ngx_int_t
ngx_http_im_mongo_reseed(ngx_http_im_mongo_task_t *t, mongoc_client_t *client)
{
    int64_t                    a, b;
    const char                *conv;
    mongoc_collection_t       *coll;
    ngx_http_im_mongo_item_t  *it;

    it = &t->items[0];
    conv = (char *) t->in.data + it->conv_off;

    coll = mongoc_client_get_collection(client, t->db, "seq_block");
    a = ngx_http_im_mongo_max(coll, conv, it->conv_len, "end", t);
    mongoc_collection_destroy(coll);

    if (a < 0) {
        return NGX_ERROR;
    }

    if (ngx_http_im_mongo_skip(t)) {
        return NGX_DECLINED;
    }

    coll = mongoc_client_get_collection(client, t->db, "msg");
    b = ngx_http_im_mongo_max(coll, conv, it->conv_len, "seq", t);
    mongoc_collection_destroy(coll);

    if (b < 0) {
        return NGX_ERROR;
    }

    t->value = a > b ? a : b;
    t->stored = b;

    return NGX_OK;
}


/* max of field over conv's documents; -1 on error */
static int64_t
ngx_http_im_mongo_max(mongoc_collection_t *coll, const char *conv,
    size_t len, const char *field, ngx_http_im_mongo_task_t *t)
{
    int64_t           max;
    bson_t           *filter, *opts;
    const bson_t     *doc;
    bson_iter_t       iter;
    bson_error_t      error;
    mongoc_cursor_t  *cursor;

    filter = bson_new();
    bson_append_utf8(filter, "conversationID", -1, conv, (int) len);
    opts = BCON_NEW("sort", "{", field, BCON_INT32(-1), "}",
                    "limit", BCON_INT64(1));

    cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);

    max = 0;
    while (mongoc_cursor_next(cursor, &doc)) {
        if (bson_iter_init_find(&iter, doc, field)) {
            max = bson_iter_as_int64(&iter);
        }
    }

    if (mongoc_cursor_error(cursor, &error)) {
        ngx_http_im_mongo_error(t, "reseed", &error);
        max = -1;
    }

    mongoc_cursor_destroy(cursor);
    bson_destroy(filter);
    bson_destroy(opts);

    return max;
}


/*
 * CONV_SAVE.  In: items' off/len, a conversation record's JSON in "in",
 * with a string _id and an integer rev.  Each is stored unless its _id
 * is stored with a rev as new or newer: replaceOne({_id, rev: {$lt:
 * rev}}, record, {upsert: true}), whose upsert then collides with the
 * stored _id (11000).  Out: such an item gets it->duplicate, which is
 * success too; one whose JSON does not parse or lacks either field, or
 * that MongoDB refuses, gets it->failed (logging is the caller's).
 * NGX_ERROR: the server did not answer for the records (no connection,
 * timeout).
 */
static ngx_int_t
ngx_http_im_mongo_conv_save(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client)
{
    return ngx_http_im_mongo_replace(t, client, "conversation",
                                     ngx_http_im_mongo_conv_pair);
}


/*
 * GROUP_SAVE.  As CONV_SAVE, into collection "group": a group's record,
 * members and applications (docs/architecture.md, "Groups"), each a
 * document with a string _id, an integer rev and its groupID.  USER_SAVE
 * is the same into collection "user" (a user's profile, friends, blacks
 * and applications, each with its ownerUserID).
 */
static ngx_int_t
ngx_http_im_mongo_group_save(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client)
{
    return ngx_http_im_mongo_replace(t, client, "group",
                                     ngx_http_im_mongo_conv_pair);
}


static ngx_int_t
ngx_http_im_mongo_conv_pair(ngx_http_im_mongo_task_t *t,
    ngx_http_im_mongo_item_t *it, bson_t **sel, bson_t **doc)
{
    bson_t        lt;
    bson_iter_t   id, rev;
    bson_error_t  error;

    *doc = bson_new_from_json(t->in.data + it->off, it->len, &error);
    if (*doc == NULL) {
        return NGX_ERROR;
    }

    if (!bson_iter_init_find(&id, *doc, "_id")
        || !BSON_ITER_HOLDS_UTF8(&id)
        || !bson_iter_init_find(&rev, *doc, "rev")
        || !(BSON_ITER_HOLDS_INT32(&rev) || BSON_ITER_HOLDS_INT64(&rev)))
    {
        bson_destroy(*doc);
        return NGX_ERROR;
    }

    *sel = bson_new();
    BSON_APPEND_VALUE(*sel, "_id", bson_iter_value(&id));
    BSON_APPEND_DOCUMENT_BEGIN(*sel, "rev", &lt);
    BSON_APPEND_VALUE(&lt, "$lt", bson_iter_value(&rev));
    bson_append_document_end(*sel, &lt);

    return NGX_OK;
}


/*
 * MSG_REPLACE.  In: items as INSERT's (conv, seq, off/len: the MsgData
 * JSON in "in").  Each message's document, as INSERT writes it, replaces
 * the one stored under its _id, or is inserted: a revoke rewrites the
 * stored text.  Out: it->failed for a MsgData that does not parse or a
 * document MongoDB refuses, and for a duplicate key (it->duplicate too):
 * only a concurrent upsert of the same _id causes one, and then this
 * replacement was not applied.  NGX_ERROR as CONV_SAVE's.
 */
static ngx_int_t
ngx_http_im_mongo_msg_replace(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client)
{
    ngx_int_t   rc;
    ngx_uint_t  i;

    rc = ngx_http_im_mongo_replace(t, client, "msg",
                                   ngx_http_im_mongo_msg_pair);

    for (i = 0; i < t->n; i++) {
        if (t->items[i].duplicate) {
            t->items[i].failed = 1;
        }
    }

    return rc;
}


static ngx_int_t
ngx_http_im_mongo_msg_pair(ngx_http_im_mongo_task_t *t,
    ngx_http_im_mongo_item_t *it, bson_t **sel, bson_t **doc)
{
    char  id[NGX_HTTP_IM_MONGO_ID_MAX];

    *doc = ngx_http_im_mongo_msg_doc(t, it);
    if (*doc == NULL) {
        return NGX_ERROR;
    }

    ngx_http_im_mongo_id(id, t, it, it->seq);
    *sel = BCON_NEW("_id", BCON_UTF8(id));

    return NGX_OK;
}


/*
 * Stores the items' documents from pair() in collection "name", each
 * with replaceOne(selector, document, {upsert: true}), in one unordered
 * bulk operation: one round trip, and one bad document does not stop
 * the rest.  An item without a pair, or whose document the driver
 * refuses ("$" or "." keys), is failed.
 */
static ngx_int_t
ngx_http_im_mongo_replace(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client, const char *name,
    ngx_http_im_mongo_pair_pt pair)
{
    bson_t                   **sels, **docs, *opts, *upsert;
    ngx_int_t                  rc;
    ngx_uint_t                 i, n, *map;
    bson_error_t               error;
    mongoc_collection_t       *coll;
    mongoc_bulk_operation_t   *bulk;
    ngx_http_im_mongo_item_t  *it;

    if (t->n == 0) {
        return NGX_OK;
    }

    sels = calloc(t->n, 2 * sizeof(bson_t *) + sizeof(ngx_uint_t));
    if (sels == NULL) {
        ngx_cpystrn((u_char *) t->err, (u_char *) "out of memory",
                    sizeof(t->err));
        return NGX_ERROR;
    }

    docs = sels + t->n;
    map = (ngx_uint_t *) (docs + t->n);

    opts = BCON_NEW("ordered", BCON_BOOL(false));
    upsert = BCON_NEW("upsert", BCON_BOOL(true));
    coll = mongoc_client_get_collection(client, t->db, name);
    bulk = mongoc_collection_create_bulk_operation_with_opts(coll, opts);

    n = 0;
    for (i = 0; i < t->n; i++) {
        it = &t->items[i];

        if (pair(t, it, &sels[n], &docs[n]) != NGX_OK) {
            it->failed = 1;
            continue;
        }

        if (!mongoc_bulk_operation_replace_one_with_opts(bulk, sels[n],
                                                         docs[n], upsert,
                                                         &error))
        {
            it->failed = 1;
            bson_destroy(sels[n]);
            bson_destroy(docs[n]);
            continue;
        }

        map[n++] = i;
    }

    rc = n ? ngx_http_im_mongo_bulk(t, bulk, map, n) : NGX_OK;

    if (rc == NGX_AGAIN) {
        rc = ngx_http_im_mongo_replace_each(t, coll, sels, docs, map, n);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_im_mongo_replace_again(t, coll, sels, docs, map, n);
    }

    mongoc_bulk_operation_destroy(bulk);
    mongoc_collection_destroy(coll);
    bson_destroy(upsert);
    bson_destroy(opts);

    for (i = 0; i < n; i++) {
        bson_destroy(sels[i]);
        bson_destroy(docs[i]);
    }

    free(sels);

    return rc;
}


/*
 * Runs the bulk operation of the items map[0 .. n-1].  MongoDB answers
 * for every operation: matched, upserted, or a write error at its index
 * (ngx_http_im_mongo_write_errors() marks those items).  FerretDB 1.24
 * ignores "ordered": it stops at the first error and reports it at index
 * 0, with no counts.  So an answer with per-document errors that does
 * not account for every operation returns NGX_AGAIN: they are redone one
 * by one, which is safe because replacing is idempotent (a CONV_SAVE
 * done already gets 11000: a rev as new is stored).  NGX_ERROR: no
 * per-document answer (no connection, timeout).
 */
static ngx_int_t
ngx_http_im_mongo_bulk(ngx_http_im_mongo_task_t *t,
    mongoc_bulk_operation_t *bulk, ngx_uint_t *map, ngx_uint_t n)
{
    bson_t        reply;
    ngx_int_t     rc;
    bson_error_t  error;

    if (mongoc_bulk_operation_execute(bulk, &reply, &error) != 0) {
        bson_destroy(&reply);
        return NGX_OK;
    }

    if (ngx_http_im_mongo_accounted(&reply, n)
        && ngx_http_im_mongo_write_errors(t, &reply, map, n))
    {
        rc = NGX_OK;

    } else if (ngx_http_im_mongo_doc_errors(&reply)) {
        rc = NGX_AGAIN;

    } else {
        ngx_http_im_mongo_error(t, "replace", &error);
        rc = NGX_ERROR;
    }

    bson_destroy(&reply);

    return rc;
}


/* the answer of a bulk operation of n replacements counts each of them */
static ngx_uint_t
ngx_http_im_mongo_accounted(const bson_t *reply, ngx_uint_t n)
{
    int64_t      done;
    bson_iter_t  iter;

    done = (int64_t) ngx_http_im_mongo_doc_errors(reply);

    if (bson_iter_init_find(&iter, reply, "nMatched")) {
        done += bson_iter_as_int64(&iter);
    }

    if (bson_iter_init_find(&iter, reply, "nUpserted")) {
        done += bson_iter_as_int64(&iter);
    }

    return done == (int64_t) n;
}


/* how many per-document errors the answer to a write lists */
static ngx_uint_t
ngx_http_im_mongo_doc_errors(const bson_t *reply)
{
    ngx_uint_t   n;
    bson_iter_t  iter, list;

    if (!bson_iter_init_find(&iter, reply, "writeErrors")
        || !BSON_ITER_HOLDS_ARRAY(&iter)
        || !bson_iter_recurse(&iter, &list))
    {
        return 0;
    }

    n = 0;
    while (bson_iter_next(&list)) {
        n++;
    }

    return n;
}


/*
 * A duplicate key on an upsert means the filter missed a document with
 * that _id: a newer revision, or one inserted at that very moment by
 * another thread (a new conversation's rev-0 record, inserted as its
 * first message is persisted).  One more try tells them apart: the
 * filter now matches an older revision, and a newer one fails again.
 * Items are compacted to the front of sels, docs and map.
 */
static ngx_int_t
ngx_http_im_mongo_replace_again(ngx_http_im_mongo_task_t *t,
    mongoc_collection_t *coll, bson_t **sels, bson_t **docs,
    ngx_uint_t *map, ngx_uint_t n)
{
    bson_t      *s, *d;
    ngx_uint_t   i, k, m;

    k = 0;
    for (i = 0; i < n; i++) {
        if (!t->items[map[i]].duplicate) {
            continue;
        }

        s = sels[k];
        d = docs[k];
        m = map[k];
        sels[k] = sels[i];
        docs[k] = docs[i];
        map[k] = map[i];
        sels[i] = s;
        docs[i] = d;
        map[i] = m;
        k++;
    }

    return k ? ngx_http_im_mongo_replace_each(t, coll, sels, docs, map, k)
             : NGX_OK;
}


/* the items map[0 .. n-1] with one insertOne each */
static ngx_int_t
ngx_http_im_mongo_insert_each(ngx_http_im_mongo_task_t *t,
    mongoc_collection_t *coll, bson_t **docs, ngx_uint_t *map, ngx_uint_t n)
{
    bson_t                     reply;
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    bson_error_t               error;
    ngx_http_im_mongo_item_t  *it;

    rc = NGX_OK;

    for (i = 0; rc == NGX_OK && i < n; i++) {
        if (ngx_http_im_mongo_skip(t)) {
            rc = NGX_DECLINED;
            break;
        }

        it = &t->items[map[i]];
        it->failed = 0;
        it->duplicate = 0;

        if (!mongoc_collection_insert_one(coll, docs[i], NULL, &reply,
                                          &error))
        {
            rc = ngx_http_im_mongo_doc_error(t, it, "insert", &reply,
                                             &error);
        }

        bson_destroy(&reply);
    }

    return rc;
}


/* the items map[0 .. n-1] with one replaceOne each */
static ngx_int_t
ngx_http_im_mongo_replace_each(ngx_http_im_mongo_task_t *t,
    mongoc_collection_t *coll, bson_t **sels, bson_t **docs,
    ngx_uint_t *map, ngx_uint_t n)
{
    bson_t                    *opts, reply;
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    bson_error_t               error;
    ngx_http_im_mongo_item_t  *it;

    opts = BCON_NEW("upsert", BCON_BOOL(true));
    rc = NGX_OK;

    for (i = 0; rc == NGX_OK && i < n; i++) {
        if (ngx_http_im_mongo_skip(t)) {
            rc = NGX_DECLINED;
            break;
        }

        /* what a partly read bulk answer may have marked */
        it = &t->items[map[i]];
        it->failed = 0;
        it->duplicate = 0;

        if (!mongoc_collection_replace_one(coll, sels[i], docs[i], opts,
                                           &reply, &error))
        {
            rc = ngx_http_im_mongo_doc_error(t, it, "replace", &reply,
                                             &error);
        }

        bson_destroy(&reply);
    }

    bson_destroy(opts);

    return rc;
}


/*
 * A write of one item failed.  Per-document errors in the answer mark it
 * (a duplicate key it->duplicate, others it->failed); without them the
 * server did not answer for it (no connection, timeout): NGX_ERROR.
 */
static ngx_int_t
ngx_http_im_mongo_doc_error(ngx_http_im_mongo_task_t *t,
    ngx_http_im_mongo_item_t *it, const char *what, const bson_t *reply,
    bson_error_t *error)
{
    if (ngx_http_im_mongo_doc_errors(reply) == 0) {
        ngx_http_im_mongo_error(t, what, error);
        return NGX_ERROR;
    }

    if (error->code == 11000) {
        it->duplicate = 1;

    } else {
        it->failed = 1;
    }

    return NGX_OK;
}


/*
 * CONV_LOAD.  In: "in", a user ID (all of it); t->value, at most this
 * many records (none if below 1).  Out: "out", a JSON array of the
 * user's conversation records ({ownerUserID: uid}, in no set order), as
 * relaxed extended JSON (int64 are plain numbers), each with two keys
 * added: "maxSeq", the seq of the conversation's newest stored message
 * (0: none), and "last", that message's MsgData (null: none).  Items are
 * not used.  One query per record finds its newest message (the
 * conversation_seq index serves it on a real MongoDB).
 */
static ngx_int_t
ngx_http_im_mongo_conv_load(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client)
{
    bson_t               *filter, *opts;
    ngx_int_t             rc;
    ngx_uint_t            first;
    const bson_t         *doc;
    bson_error_t          error;
    mongoc_cursor_t      *cursor;
    mongoc_collection_t  *convs, *msgs;

    if (t->value < 1 || t->in.len == 0) {
        ngx_http_im_buf_add(&t->out, "[]", 2);
        return t->out.failed ? NGX_ERROR : NGX_OK;
    }

    filter = bson_new();
    bson_append_utf8(filter, "ownerUserID", -1, (char *) t->in.data,
                     (int) t->in.len);
    opts = BCON_NEW("limit", BCON_INT64(t->value));

    convs = mongoc_client_get_collection(client, t->db, "conversation");
    msgs = mongoc_client_get_collection(client, t->db, "msg");
    cursor = mongoc_collection_find_with_opts(convs, filter, opts, NULL);

    ngx_http_im_buf_add(&t->out, "[", 1);

    rc = NGX_OK;
    first = 1;

    while (rc == NGX_OK && mongoc_cursor_next(cursor, &doc)) {
        rc = ngx_http_im_mongo_skip(t)
             ? NGX_DECLINED
             : ngx_http_im_mongo_conv_out(t, msgs, doc, &first);
    }

    if (rc == NGX_OK && mongoc_cursor_error(cursor, &error)) {
        ngx_http_im_mongo_error(t, "conversation load", &error);
        rc = NGX_ERROR;
    }

    ngx_http_im_buf_add(&t->out, "]", 1);

    if (rc == NGX_OK && t->out.failed) {
        ngx_cpystrn((u_char *) t->err,
                    (u_char *) "conversation load: out of memory",
                    sizeof(t->err));
        rc = NGX_ERROR;
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(msgs);
    mongoc_collection_destroy(convs);
    bson_destroy(opts);
    bson_destroy(filter);

    return rc;
}


/*
 * GROUP_LOAD and USER_LOAD.  In: "in", a group or user ID (all of it);
 * t->value, at most this many documents.  Out: "out", a JSON array of
 * the documents whose "field" is that ID, from collection "name" ("group"
 * by groupID, "user" by ownerUserID), in no set order, as relaxed
 * extended JSON.  Items are not used.
 */
static ngx_int_t
ngx_http_im_mongo_docs_load(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client, const char *name, const char *field)
{
    char                 *json;
    size_t                len;
    bson_t               *filter, *opts;
    ngx_int_t             rc;
    ngx_uint_t            first;
    const bson_t         *doc;
    bson_error_t          error;
    mongoc_cursor_t      *cursor;
    mongoc_collection_t  *coll;

    filter = bson_new();
    bson_append_utf8(filter, field, -1, (char *) t->in.data,
                     (int) t->in.len);
    opts = BCON_NEW("limit", BCON_INT64(t->value));

    coll = mongoc_client_get_collection(client, t->db, name);
    cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);

    ngx_http_im_buf_add(&t->out, "[", 1);

    rc = NGX_OK;
    first = 1;

    while (rc == NGX_OK && mongoc_cursor_next(cursor, &doc)) {
        if (ngx_http_im_mongo_skip(t)) {
            rc = NGX_DECLINED;
            break;
        }

        /* NULL: not valid UTF-8; such a document is left out */
        json = bson_as_relaxed_extended_json(doc, &len);

        if (json != NULL) {
            ngx_http_im_buf_add(&t->out, first ? "" : ",", first ? 0 : 1);
            ngx_http_im_buf_add(&t->out, json, len);
            bson_free(json);
            first = 0;
        }
    }

    if (rc == NGX_OK && mongoc_cursor_error(cursor, &error)) {
        ngx_http_im_mongo_error(t, "documents load", &error);
        rc = NGX_ERROR;
    }

    ngx_http_im_buf_add(&t->out, "]", 1);

    if (rc == NGX_OK && t->out.failed) {
        ngx_cpystrn((u_char *) t->err, (u_char *) "documents load: out of memory",
                    sizeof(t->err));
        rc = NGX_ERROR;
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    bson_destroy(opts);
    bson_destroy(filter);

    return rc;
}


/*
 * USER_INSERT.  In: items' off/len, new documents' JSON in "in" (a
 * registration's profiles).  One unordered insert_many into "user": fast
 * where replacing by revision is not, and a document whose _id exists
 * gets it->duplicate (the user is registered).  Out: it->failed for JSON
 * that does not parse or a document MongoDB refuses otherwise.
 * NGX_ERROR as CONV_SAVE's.
 */
static ngx_int_t
ngx_http_im_mongo_user_insert(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client)
{
    bool                   ok;
    bson_t               **docs, reply, opts;
    ngx_int_t              rc;
    ngx_uint_t             i, n, *map;
    bson_error_t           error;
    mongoc_collection_t   *coll;

    docs = calloc(t->n + 1, sizeof(bson_t *) + sizeof(ngx_uint_t));
    if (docs == NULL) {
        ngx_cpystrn((u_char *) t->err, (u_char *) "out of memory",
                    sizeof(t->err));
        return NGX_ERROR;
    }

    map = (ngx_uint_t *) (docs + t->n + 1);

    for (n = 0, i = 0; i < t->n; i++) {
        docs[n] = bson_new_from_json(t->in.data + t->items[i].off,
                                     t->items[i].len, &error);
        if (docs[n] == NULL) {
            t->items[i].failed = 1;
            continue;
        }

        map[n++] = i;
    }

    bson_init(&opts);
    BSON_APPEND_BOOL(&opts, "ordered", false);
    bson_init(&reply);

    coll = mongoc_client_get_collection(client, t->db, "user");
    ok = n == 0 || mongoc_collection_insert_many(coll, (const bson_t **) docs,
                                                 n, &opts, &reply, &error);
    rc = NGX_OK;

    if (!ok && !ngx_http_im_mongo_write_errors(t, &reply, map, n)) {
        if (ngx_http_im_mongo_doc_errors(&reply) == 0) {
            ngx_http_im_mongo_error(t, "user insert", &error);
            rc = NGX_ERROR;

        } else {
            /* an answer that names no documents (FerretDB's, with a
             * duplicate amid the batch): each alone then */
            rc = ngx_http_im_mongo_insert_each(t, coll, docs, map, n);
        }
    }

    bson_destroy(&reply);
    bson_destroy(&opts);
    mongoc_collection_destroy(coll);

    for (i = 0; i < n; i++) {
        bson_destroy(docs[i]);
    }

    free(docs);

    return rc;
}


/*
 * USER_LIST.  In: "in", "<how>\n<what>": how "id" (that user), "nick"
 * (nicknames containing what, case-insensitive) or "" (everyone);
 * t->value skip, t->stored at most this many.  Out: "out",
 * {"total": n, "users": [the profiles' documents]} in user ID order.
 */
static ngx_int_t
ngx_http_im_mongo_user_list(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client)
{
    char                 *json;
    size_t                len;
    bson_t               *filter, *opts;
    int64_t               total;
    ngx_int_t             rc;
    ngx_uint_t            first;
    const bson_t         *doc;
    bson_error_t          error;
    mongoc_cursor_t      *cursor;
    mongoc_collection_t  *coll;

    filter = ngx_http_im_mongo_user_filter(t);
    coll = mongoc_client_get_collection(client, t->db, "user");

    total = mongoc_collection_count_documents(coll, filter, NULL, NULL, NULL,
                                              &error);
    if (total < 0) {
        ngx_http_im_mongo_error(t, "user count", &error);
        mongoc_collection_destroy(coll);
        bson_destroy(filter);
        return NGX_ERROR;
    }

    opts = BCON_NEW("sort", "{", "_id", BCON_INT32(1), "}",
                    "skip", BCON_INT64(t->value),
                    "limit", BCON_INT64(t->stored));
    cursor = mongoc_collection_find_with_opts(coll, filter, opts, NULL);

    len = (size_t) snprintf(t->err, sizeof(t->err),
                            "{\"total\":%lld,\"users\":[",
                            (long long) total);
    ngx_http_im_buf_add(&t->out, t->err, len);
    t->err[0] = '\0';

    rc = NGX_OK;
    first = 1;

    while (mongoc_cursor_next(cursor, &doc)) {
        json = bson_as_relaxed_extended_json(doc, &len);

        if (json != NULL) {
            ngx_http_im_buf_add(&t->out, ",", first ? 0 : 1);
            ngx_http_im_buf_add(&t->out, json, len);
            bson_free(json);
            first = 0;
        }
    }

    if (mongoc_cursor_error(cursor, &error)) {
        ngx_http_im_mongo_error(t, "user list", &error);
        rc = NGX_ERROR;
    }

    ngx_http_im_buf_add(&t->out, "]}", 2);

    if (rc == NGX_OK && t->out.failed) {
        ngx_cpystrn((u_char *) t->err, (u_char *) "user list: out of memory",
                    sizeof(t->err));
        rc = NGX_ERROR;
    }

    mongoc_cursor_destroy(cursor);
    mongoc_collection_destroy(coll);
    bson_destroy(opts);
    bson_destroy(filter);

    return rc;
}


/* the profiles USER_LIST asks for; a nickname is matched as a literal */
static bson_t *
ngx_http_im_mongo_user_filter(ngx_http_im_mongo_task_t *t)
{
    u_char   *nl, *p, *q, *end;
    bson_t   *filter;
    u_char    buf[4 * NGX_HTTP_IM_MONGO_ID_MAX];

    filter = BCON_NEW("kind", BCON_UTF8("p"), "deleted", BCON_BOOL(false));

    nl = ngx_strlchr(t->in.data, t->in.data + t->in.len, '\n');
    if (nl == NULL || nl + 1 == t->in.data + t->in.len) {
        return filter;
    }

    p = nl + 1;
    end = t->in.data + t->in.len;

    if (nl - t->in.data == 2 && ngx_strncmp(t->in.data, "id", 2) == 0) {
        bson_append_utf8(filter, "ownerUserID", -1, (char *) p,
                         (int) (end - p));
        return filter;
    }

    /* regular expression characters escaped: a search is for the text */
    q = buf;

    for ( /* void */ ; p < end && q + 3 < buf + sizeof(buf); p++) {
        if (ngx_strchr("\\^$.|?*+()[]{}", *p) != NULL) {
            *q++ = '\\';
        }
        *q++ = *p;
    }

    *q = '\0';
    bson_append_regex(filter, "doc.nickname", -1, (char *) buf, "i");

    return filter;
}


/* appends record conv, with "maxSeq" and "last", to the array in "out" */
static ngx_int_t
ngx_http_im_mongo_conv_out(ngx_http_im_mongo_task_t *t,
    mongoc_collection_t *msgs, const bson_t *conv, ngx_uint_t *first)
{
    char       *json;
    size_t      len;
    bson_t      out;
    ngx_int_t   rc;

    /* the keys added replace any the record has */
    bson_init(&out);
    bson_copy_to_excluding_noinit(conv, &out, "maxSeq", "last", NULL);

    rc = ngx_http_im_mongo_last(t, msgs, conv, &out);

    /* NULL: not valid UTF-8; such a record is left out */
    json = rc == NGX_OK ? bson_as_relaxed_extended_json(&out, &len) : NULL;

    if (json != NULL) {
        if (!*first) {
            ngx_http_im_buf_add(&t->out, ",", 1);
        }

        ngx_http_im_buf_add(&t->out, json, len);
        bson_free(json);
        *first = 0;
    }

    bson_destroy(&out);

    return rc;
}


/* appends "maxSeq" and "last" of record conv's newest message to "out" */
static ngx_int_t
ngx_http_im_mongo_last(ngx_http_im_mongo_task_t *t,
    mongoc_collection_t *msgs, const bson_t *conv, bson_t *out)
{
    bson_t           *filter, *opts, msg;
    int64_t           seq;
    uint32_t          len;
    ngx_int_t         rc;
    const char       *id;
    const bson_t     *doc;
    const uint8_t    *data;
    bson_iter_t       iter;
    bson_error_t      error;
    mongoc_cursor_t  *cursor;

    seq = 0;
    data = NULL;
    len = 0;

    if (!bson_iter_init_find(&iter, conv, "conversationID")
        || !BSON_ITER_HOLDS_UTF8(&iter))
    {
        BSON_APPEND_INT64(out, "maxSeq", seq);
        BSON_APPEND_NULL(out, "last");
        return NGX_OK;
    }

    id = bson_iter_utf8(&iter, &len);

    filter = bson_new();
    bson_append_utf8(filter, "conversationID", -1, id, (int) len);
    opts = BCON_NEW("sort", "{", "seq", BCON_INT32(-1), "}",
                    "limit", BCON_INT64(1),
                    "projection", "{", "seq", BCON_INT32(1),
                                       "msg", BCON_INT32(1), "}");

    cursor = mongoc_collection_find_with_opts(msgs, filter, opts, NULL);

    /* the document is the cursor's: used before the cursor is freed */
    if (mongoc_cursor_next(cursor, &doc)) {
        if (bson_iter_init_find(&iter, doc, "seq")) {
            seq = bson_iter_as_int64(&iter);
        }

        if (bson_iter_init_find(&iter, doc, "msg")
            && BSON_ITER_HOLDS_DOCUMENT(&iter))
        {
            bson_iter_document(&iter, &len, &data);
        }
    }

    rc = NGX_OK;

    if (mongoc_cursor_error(cursor, &error)) {
        ngx_http_im_mongo_error(t, "newest message", &error);
        rc = NGX_ERROR;

    } else {
        BSON_APPEND_INT64(out, "maxSeq", seq);

        if (data != NULL && bson_init_static(&msg, data, len)) {
            BSON_APPEND_DOCUMENT(out, "last", &msg);

        } else {
            BSON_APPEND_NULL(out, "last");
        }
    }

    mongoc_cursor_destroy(cursor);
    bson_destroy(filter);
    bson_destroy(opts);

    return rc;
}


/*
 * MSG_PURGE.  In: items' conv; t->value, a time in ms.  Deletes each
 * conversation's messages sent before that time: deleteMany({
 * conversationID, "msg.sendTime": {$lt: value}}).  Out: t->value, the
 * number deleted, when the task succeeds; it->failed for a conversation
 * whose delete MongoDB refused.  NGX_ERROR: no answer (no connection,
 * timeout); deleting again is harmless.
 */
static ngx_int_t
ngx_http_im_mongo_msg_purge(ngx_http_im_mongo_task_t *t,
    mongoc_client_t *client)
{
    bool                       ok;
    bson_t                    *filter, reply, lt;
    int64_t                    deleted;
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    bson_iter_t                iter;
    bson_error_t               error;
    mongoc_collection_t       *coll;
    ngx_http_im_mongo_item_t  *it;

    coll = mongoc_client_get_collection(client, t->db, "msg");
    deleted = 0;
    rc = NGX_OK;

    for (i = 0; rc == NGX_OK && i < t->n; i++) {
        if (ngx_http_im_mongo_skip(t)) {
            rc = NGX_DECLINED;
            break;
        }

        it = &t->items[i];

        filter = bson_new();
        bson_append_utf8(filter, "conversationID", -1,
                         (char *) t->in.data + it->conv_off,
                         (int) it->conv_len);
        BSON_APPEND_DOCUMENT_BEGIN(filter, "msg.sendTime", &lt);
        BSON_APPEND_INT64(&lt, "$lt", t->value);
        bson_append_document_end(filter, &lt);

        ok = mongoc_collection_delete_many(coll, filter, NULL, &reply,
                                           &error);

        if (!ok) {
            rc = ngx_http_im_mongo_doc_error(t, it, "purge", &reply, &error);

        } else if (bson_iter_init_find(&iter, &reply, "deletedCount")) {
            deleted += bson_iter_as_int64(&iter);
        }

        bson_destroy(&reply);
        bson_destroy(filter);
    }

    mongoc_collection_destroy(coll);

    if (rc == NGX_OK) {
        t->value = deleted;
    }

    return rc;
}


static void
ngx_http_im_mongo_error(ngx_http_im_mongo_task_t *t, const char *what,
    bson_error_t *error)
{
    u_char  *p;

    p = ngx_snprintf((u_char *) t->err, sizeof(t->err) - 1,
                     "%s failed: %s (%uD.%uD)", what, error->message,
                     error->domain, error->code);
    *p = '\0';
}
