
/*
 * ngx_im: counters in shared memory, summed over all workers, served in
 * Prometheus text format.  The zone survives reloads, so counters only
 * reset when nginx restarts.
 */


#include "ngx_http_im_module.h"


typedef struct {
    const char                *name;
    const char                *type;
    const char                *help;
} ngx_http_im_metric_info_t;


static ngx_http_im_metric_info_t  ngx_http_im_metric_info[] = {
    { "im_connections", "gauge", "WebSocket sessions open now" },
    { "im_logins_total", "counter", "WebSocket logins completed" },
    { "im_login_failures_total", "counter",
      "WebSocket handshakes refused" },
    { "im_frames_in_total", "counter", "WebSocket data frames received" },
    { "im_frames_out_total", "counter", "WebSocket frames queued to clients" },
    { "im_pushes_total", "counter", "2001 pushes queued to sessions" },
    { "im_kicks_total", "counter", "sessions kicked offline (2002)" },
    { "im_offline_push_jobs_total", "counter",
      "jobs added to the offline-push stream" },
    { "im_redis_reconnects_total", "counter",
      "Redis connections established after the first" },
    { "im_redis_errors_total", "counter",
      "Redis commands failed: error reply, disconnect or timeout" },
    { "im_redis_busy_total", "counter",
      "requests refused because Redis was down or at its pending bound" },
    { "im_send_queue_overflows_total", "counter",
      "sessions closed because their send queue was full" },
    { "im_protocol_errors_total", "counter",
      "sessions closed for a WebSocket protocol error" },
    { "im_persisted_total", "counter", "messages written to MongoDB" },
    { "im_persist_errors_total", "counter",
      "persistence batches MongoDB refused or failed" },
    { "im_persist_full_total", "counter",
      "messages refused because the persistence backlog was full" },
    { "im_mongo_reads_total", "counter",
      "pulls that needed messages from MongoDB" },
    { "im_redis_moved_total", "counter",
      "Redis Cluster MOVED redirects followed" },
    { "im_redis_ask_total", "counter",
      "Redis Cluster ASK redirects followed" },
    { "im_redis_slot_refreshes_total", "counter",
      "Redis Cluster slot maps loaded (CLUSTER SLOTS)" },
    { "im_redis_resubscribes_total", "counter",
      "sharded subscriptions moved to their slot's new master" },
    { "im_offline_push_dropped_total", "counter",
      "group messages whose offline-push jobs were dropped (queue full)" }
};


static const char  *ngx_http_im_session_names[] = {
    "single", "group", "notification", "online_only"
};


typedef struct {
    ngx_atomic_t               plain[NGX_HTTP_IM_M_N];
    ngx_atomic_t               sent[NGX_HTTP_IM_SESSION_N];
    ngx_atomic_t               rest[NGX_HTTP_IM_ROUTES_MAX]
                                   [NGX_HTTP_IM_CODES_MAX];
    ngx_atomic_t               ws[NGX_HTTP_IM_CODES_MAX];
    /* im_connections per process slot: a worker that crashed leaves its
     * count behind, and the worker that takes its slot starts it again */
    ngx_atomic_t               conns[NGX_MAX_PROCESSES];
} ngx_http_im_counters_t;


static ngx_int_t ngx_http_im_metrics_zone_init(ngx_shm_zone_t *zone,
    void *data);


static ngx_http_im_counters_t     *ngx_http_im_counters;
static ngx_http_im_route_name_pt   ngx_http_im_route_name;


/* at configuration time: the zone every worker adds to, and the names
 * of the REST routes that the page shows */
ngx_int_t
ngx_http_im_metrics_add_zone(ngx_conf_t *cf,
    ngx_http_im_route_name_pt route_name)
{
    ngx_str_t        name = ngx_string("ngx_http_im_metrics");
    ngx_shm_zone_t  *zone;

    /* the counters have a column per error code, and a row per route */
    if (ngx_http_im_errors_n > NGX_HTTP_IM_CODES_MAX
        || route_name(NGX_HTTP_IM_ROUTES_MAX) != NULL)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "im: more error codes or "
                           "REST routes than the metrics hold");
        return NGX_ERROR;
    }

    zone = ngx_shared_memory_add(cf, &name,
                                 ngx_align(sizeof(ngx_http_im_counters_t),
                                           ngx_pagesize) + 8 * ngx_pagesize,
                                 &ngx_http_im_module);
    if (zone == NULL) {
        return NGX_ERROR;
    }

    zone->init = ngx_http_im_metrics_zone_init;
    ngx_http_im_route_name = route_name;

    return NGX_OK;
}


static ngx_int_t
ngx_http_im_metrics_zone_init(ngx_shm_zone_t *zone, void *data)
{
    ngx_slab_pool_t  *shpool;

    if (data) {
        /* a reload: keep counting where the old cycle stopped */
        zone->data = data;
        ngx_http_im_counters = data;
        return NGX_OK;
    }

    shpool = (ngx_slab_pool_t *) zone->shm.addr;

    ngx_http_im_counters = ngx_slab_calloc(shpool,
                                           sizeof(ngx_http_im_counters_t));
    if (ngx_http_im_counters == NULL) {
        return NGX_ERROR;
    }

    zone->data = ngx_http_im_counters;

    return NGX_OK;
}


void
ngx_http_im_metric_add(ngx_uint_t metric, ngx_atomic_int_t n)
{
    if (ngx_http_im_counters == NULL) {
        return;
    }

    if (metric == NGX_HTTP_IM_M_CONNECTIONS
        && ngx_process_slot >= 0 && ngx_process_slot < NGX_MAX_PROCESSES)
    {
        (void) ngx_atomic_fetch_add(
                   &ngx_http_im_counters->conns[ngx_process_slot], n);
        return;
    }

    (void) ngx_atomic_fetch_add(&ngx_http_im_counters->plain[metric], n);
}


/* a worker starts: its slot's sessions are those of a worker gone */
void
ngx_http_im_metrics_worker_start(void)
{
    if (ngx_http_im_counters
        && ngx_process_slot >= 0 && ngx_process_slot < NGX_MAX_PROCESSES)
    {
        ngx_http_im_counters->conns[ngx_process_slot] = 0;
    }
}


static long long
ngx_http_im_metrics_conns(ngx_http_im_counters_t *m)
{
    long long   n;
    ngx_uint_t  i;

    n = 0;

    for (i = 0; i < NGX_MAX_PROCESSES; i++) {
        n += (ngx_atomic_int_t) m->conns[i];
    }

    return n;
}


void
ngx_http_im_metric_sent(ngx_uint_t session)
{
    if (ngx_http_im_counters && session < NGX_HTTP_IM_SESSION_N) {
        (void) ngx_atomic_fetch_add(&ngx_http_im_counters->sent[session], 1);
    }
}


/* a REST answer: route index in the route table, errCode */
void
ngx_http_im_metric_rest(ngx_uint_t route, ngx_int_t code)
{
    if (ngx_http_im_counters && route < NGX_HTTP_IM_ROUTES_MAX) {
        (void) ngx_atomic_fetch_add(
                 &ngx_http_im_counters->rest[route]
                                            [ngx_http_im_error_index(code)],
                 1);
    }
}


/* a WebSocket answer's errCode */
void
ngx_http_im_metric_ws(ngx_int_t code)
{
    if (ngx_http_im_counters) {
        (void) ngx_atomic_fetch_add(
                 &ngx_http_im_counters->ws[ngx_http_im_error_index(code)],
                 1);
    }
}


/* GET /im/metrics */
ngx_int_t
ngx_http_im_metrics_handler(ngx_http_request_t *r)
{
    ngx_int_t               rc;
    ngx_uint_t              i, j;
    ngx_atomic_uint_t       v;
    ngx_http_im_buf_t       b;
    ngx_http_im_counters_t *m;

    if (r->method != NGX_HTTP_GET && r->method != NGX_HTTP_HEAD) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    m = ngx_http_im_counters;
    if (m == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ngx_http_im_buf_init(&b, 1024 * 1024);

    for (i = 0; i < NGX_HTTP_IM_M_N; i++) {
        ngx_http_im_buf_str(&b, "# HELP ");
        ngx_http_im_buf_str(&b, ngx_http_im_metric_info[i].name);
        ngx_http_im_buf_str(&b, " ");
        ngx_http_im_buf_str(&b, ngx_http_im_metric_info[i].help);
        ngx_http_im_buf_str(&b, "\n# TYPE ");
        ngx_http_im_buf_str(&b, ngx_http_im_metric_info[i].name);
        ngx_http_im_buf_str(&b, " ");
        ngx_http_im_buf_str(&b, ngx_http_im_metric_info[i].type);
        ngx_http_im_buf_str(&b, "\n");
        ngx_http_im_buf_str(&b, ngx_http_im_metric_info[i].name);
        ngx_http_im_buf_str(&b, " ");
        ngx_http_im_buf_int(&b, i == NGX_HTTP_IM_M_CONNECTIONS
                                ? ngx_http_im_metrics_conns(m)
                                : (long long) m->plain[i]);
        ngx_http_im_buf_str(&b, "\n");
    }

    ngx_http_im_buf_str(&b, "# HELP im_messages_sent_total messages "
                        "accepted, by kind\n"
                        "# TYPE im_messages_sent_total counter\n");

    for (i = 0; i < NGX_HTTP_IM_SESSION_N; i++) {
        ngx_http_im_buf_str(&b, "im_messages_sent_total{kind=\"");
        ngx_http_im_buf_str(&b, ngx_http_im_session_names[i]);
        ngx_http_im_buf_str(&b, "\"} ");
        ngx_http_im_buf_int(&b, (long long) m->sent[i]);
        ngx_http_im_buf_str(&b, "\n");
    }

    ngx_http_im_buf_str(&b, "# HELP im_ws_responses_total WebSocket "
                        "responses, by errCode\n"
                        "# TYPE im_ws_responses_total counter\n");

    for (i = 0; i < ngx_http_im_errors_n; i++) {
        v = m->ws[i];
        if (v == 0) {
            continue;
        }

        ngx_http_im_buf_str(&b, "im_ws_responses_total{code=\"");
        ngx_http_im_buf_str(&b, ngx_http_im_errors[i].metric);
        ngx_http_im_buf_str(&b, "\"} ");
        ngx_http_im_buf_int(&b, (long long) v);
        ngx_http_im_buf_str(&b, "\n");
    }

    ngx_http_im_buf_str(&b, "# HELP im_rest_requests_total REST requests, "
                        "by path and errCode\n"
                        "# TYPE im_rest_requests_total counter\n");

    for (i = 0; i < NGX_HTTP_IM_ROUTES_MAX; i++) {
        for (j = 0; j < ngx_http_im_errors_n; j++) {
            v = m->rest[i][j];
            if (v == 0 || ngx_http_im_route_name(i) == NULL) {
                continue;
            }

            ngx_http_im_buf_str(&b, "im_rest_requests_total{path=\"");
            ngx_http_im_buf_str(&b, ngx_http_im_route_name(i));
            ngx_http_im_buf_str(&b, "\",code=\"");
            ngx_http_im_buf_str(&b, ngx_http_im_errors[j].metric);
            ngx_http_im_buf_str(&b, "\"} ");
            ngx_http_im_buf_int(&b, (long long) v);
            ngx_http_im_buf_str(&b, "\n");
        }
    }

    if (b.failed) {
        ngx_http_im_buf_free(&b);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_im_send_body(r, NGX_HTTP_OK, "text/plain; version=0.0.4",
                               &b);
    ngx_http_im_buf_free(&b);

    return rc;
}
