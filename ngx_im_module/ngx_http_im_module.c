
/*
 * ngx_im: module definition, directives and the worker's lifecycle.
 */


#include "ngx_http_im_module.h"
#include "ngx_http_im_store.h"
#include "ngx_http_im_group.h"
#include "ngx_http_im_redis.h"
#include "ngx_http_im_mongo.h"
#include "ngx_http_im_id.h"
#include "ngx_http_im_pb.h"


#define NGX_HTTP_IM_RECV_SIZE  65536


static ngx_int_t ngx_http_im_init_process(ngx_cycle_t *cycle);
static void ngx_http_im_exit_process(ngx_cycle_t *cycle);
static void *ngx_http_im_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_im_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_im_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_im_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_im_redis_cluster_seeds(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_im_redis_parse(ngx_conf_t *cf, ngx_str_t *value,
    ngx_http_im_redis_addr_t *addr);
static char *ngx_http_im_redis_addr(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_im_location(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_im_admins(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_im_max_convs(ngx_conf_t *cf, void *post, void *data);
static char *ngx_http_im_set_rate(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_im_newest_fits(ngx_conf_t *cf,
    ngx_http_im_main_conf_t *imcf, ngx_http_im_loc_conf_t *conf);
static ngx_int_t ngx_http_im_postconfiguration(ngx_conf_t *cf);


ngx_http_im_worker_t  *ngx_http_im_worker;


static ngx_conf_num_bounds_t  ngx_http_im_inflight_bounds = {
    ngx_conf_check_num_bounds, 1, 10000
};

static ngx_conf_num_bounds_t  ngx_http_im_pull_bounds = {
    ngx_conf_check_num_bounds, 1, NGX_HTTP_IM_PULL_MAX_BOUND
};

static ngx_conf_num_bounds_t  ngx_http_im_batch_bounds = {
    ngx_conf_check_num_bounds, 1, 5000
};

static ngx_conf_num_bounds_t  ngx_http_im_block_bounds = {
    ngx_conf_check_num_bounds, 1, 1000000
};

/* OpenIM's multiLoginPolicy numbers, as the issue numbers 1 and 4 */
static ngx_conf_enum_t  ngx_http_im_login_policies[] = {
    { ngx_string("0"), NGX_HTTP_IM_LOGIN_ANY },
    { ngx_string("1"), NGX_HTTP_IM_LOGIN_PER_CLASS },
    { ngx_string("4"), NGX_HTTP_IM_LOGIN_PER_PLATFORM },
    { ngx_string("5"), NGX_HTTP_IM_LOGIN_PC_AND_OTHER },
    { ngx_null_string, 0 }
};

static ngx_conf_post_t  ngx_http_im_max_convs_post = {
    ngx_http_im_max_convs
};


static ngx_command_t  ngx_http_im_commands[] = {

    { ngx_string("im_ws"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_im_location,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("im_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_im_location,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("im_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_im_location,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("im_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_im_redis_addr,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("im_redis_cluster"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_im_redis_cluster_seeds,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("im_redis_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, redis_connect_timeout),
      NULL },

    { ngx_string("im_redis_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, redis_timeout),
      NULL },

    { ngx_string("im_redis_max_pending"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, redis_max_pending),
      NULL },

    { ngx_string("im_secret"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, secret),
      NULL },

    { ngx_string("im_admin"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_im_admins,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, admins),
      NULL },

    { ngx_string("im_token_expire"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, token_expire),
      NULL },

    { ngx_string("im_dedup_ttl"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, dedup_ttl),
      NULL },

    { ngx_string("im_friend_verify"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, friend_verify),
      NULL },

    { ngx_string("im_max_conversations"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, max_convs),
      &ngx_http_im_max_convs_post },

    { ngx_string("im_push_stream_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, push_stream_max),
      NULL },

    { ngx_string("im_mongo"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, mongo_uri),
      NULL },

    { ngx_string("im_mongo_database"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, mongo_db),
      NULL },

    { ngx_string("im_mongo_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, mongo_pool),
      NULL },

    { ngx_string("im_mongo_clients"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, mongo_clients),
      NULL },

    { ngx_string("im_mongo_max_pending"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, mongo_max_pending),
      NULL },

    { ngx_string("im_persist_batch"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, persist_batch),
      &ngx_http_im_batch_bounds },

    { ngx_string("im_persist_stream_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, persist_stream_max),
      NULL },

    { ngx_string("im_persist_claim"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, persist_claim),
      NULL },

    { ngx_string("im_revoke_window"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, revoke_window),
      NULL },

    { ngx_string("im_multi_login_policy"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, multi_login),
      &ngx_http_im_login_policies },

    { ngx_string("im_hot_window"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, hot_window),
      NULL },

    { ngx_string("im_seq_block"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_im_main_conf_t, seq_block),
      &ngx_http_im_block_bounds },

    { ngx_string("im_ws_max_frame"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_im_loc_conf_t, ws_max_frame),
      NULL },

    { ngx_string("im_ws_max_message"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_im_loc_conf_t, ws_max_message),
      NULL },

    { ngx_string("im_ws_send_queue"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_im_loc_conf_t, ws_send_queue),
      NULL },

    { ngx_string("im_ws_ping_interval"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_im_loc_conf_t, ws_ping_interval),
      NULL },

    { ngx_string("im_ws_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_im_loc_conf_t, ws_timeout),
      NULL },

    { ngx_string("im_ws_max_inflight"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_im_loc_conf_t, ws_max_inflight),
      &ngx_http_im_inflight_bounds },

    { ngx_string("im_ws_rate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_im_set_rate,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_im_loc_conf_t, ws_rate),
      NULL },

    { ngx_string("im_api_rate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE12,
      ngx_http_im_set_rate,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_im_loc_conf_t, api_rate),
      NULL },

    { ngx_string("im_max_content"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_im_loc_conf_t, max_content),
      NULL },

    { ngx_string("im_api_max_body"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_im_loc_conf_t, api_max_body),
      NULL },

    { ngx_string("im_pull_max"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_im_loc_conf_t, pull_max),
      &ngx_http_im_pull_bounds },

    { ngx_string("im_cors_origins"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_im_cors_origins,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_im_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_im_postconfiguration,         /* postconfiguration */

    ngx_http_im_create_main_conf,          /* create main configuration */
    ngx_http_im_init_main_conf,            /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_im_create_loc_conf,           /* create location configuration */
    ngx_http_im_merge_loc_conf             /* merge location configuration */
};


ngx_module_t  ngx_http_im_module = {
    NGX_MODULE_V1,
    &ngx_http_im_module_ctx,               /* module context */
    ngx_http_im_commands,                  /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_im_init_process,              /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_im_exit_process,              /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_im_init_process(ngx_cycle_t *cycle)
{
    u_char                   *p;
    ngx_http_im_worker_t     *w;
    ngx_http_im_main_conf_t  *imcf;

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    ngx_http_im_metrics_worker_start();

    imcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_im_module);
    if (imcf == NULL || imcf->redis_host.len == 0) {
        return NGX_OK;
    }

    w = ngx_pcalloc(cycle->pool, sizeof(ngx_http_im_worker_t));
    if (w == NULL) {
        return NGX_ERROR;
    }

    w->imcf = imcf;
    w->log = cycle->log;
    w->recv_size = NGX_HTTP_IM_RECV_SIZE;
    w->recv_buf = ngx_palloc(cycle->pool, w->recv_size);
    p = ngx_pnalloc(cycle->pool, NGX_MAXHOSTNAMELEN + 64);
    if (w->recv_buf == NULL || p == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&w->users, &w->sentinel, ngx_str_rbtree_insert_value);
    ngx_queue_init(&w->user_list);
    ngx_rbtree_init(&w->groups, &w->group_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&w->group_list);
    ngx_rbtree_init(&w->watched, &w->watched_sentinel,
                    ngx_str_rbtree_insert_value);
    ngx_queue_init(&w->watched_list);
    ngx_queue_init(&w->sessions);
    ngx_queue_init(&w->api_calls);
    ngx_http_im_buf_init(&w->scratch, 16 * 1024 * 1024);

    /* names this worker across hosts and restarts: deliveries carry it to
     * spare the sending session its own message */
    w->origin.data = p;
    w->origin.len = ngx_snprintf(p, NGX_MAXHOSTNAMELEN + 64, "im:w:%V:%P:%M",
                                 &cycle->hostname, ngx_pid,
                                 ngx_current_msec)
                    - p;

    if (!ngx_http_im_id_random(&w->id_prefix)) {
        return NGX_ERROR;
    }

    w->api_buckets = ngx_pcalloc(cycle->pool, NGX_HTTP_IM_API_BUCKETS
                                              * sizeof(ngx_http_im_bucket_t));
    if (w->api_buckets == NULL) {
        return NGX_ERROR;
    }

    ngx_http_im_worker = w;

    w->alive.handler = ngx_http_im_session_alive;
    w->alive.log = cycle->log;
    w->alive.data = w;
    w->alive.cancelable = 1;
    ngx_add_timer(&w->alive, 10000);

    if (imcf->mongo_uri.len) {
        if (ngx_http_im_mongo_init(cycle, imcf) != NGX_OK) {
            return NGX_ERROR;
        }

        ngx_http_im_persist_init(cycle);
    }

    ngx_http_im_group_init(&ngx_http_im_session_users);

    return ngx_http_im_store_init(cycle, &ngx_http_im_session_routes);
}


static void
ngx_http_im_exit_process(ngx_cycle_t *cycle)
{
    if (ngx_http_im_worker == NULL) {
        return;
    }

    if (ngx_http_im_worker->alive.timer_set) {
        ngx_del_timer(&ngx_http_im_worker->alive);
    }

    ngx_http_im_ws_shutdown();
    ngx_http_im_api_shutdown();

    ngx_http_im_store_worker_gone();
    ngx_http_im_persist_exit();
    ngx_http_im_store_exit();
    ngx_http_im_mongo_exit();
    ngx_http_im_buf_free(&ngx_http_im_worker->scratch);
    ngx_http_im_worker = NULL;
}


static void *
ngx_http_im_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_im_main_conf_t  *imcf;

    imcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_im_main_conf_t));
    if (imcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     imcf->secret = { 0, NULL };
     *     imcf->redis_host = { 0, NULL };
     *     imcf->redis_port = 0;
     */

    imcf->admins = NGX_CONF_UNSET_PTR;
    imcf->redis_connect_timeout = NGX_CONF_UNSET_MSEC;
    imcf->redis_timeout = NGX_CONF_UNSET_MSEC;
    imcf->redis_max_pending = NGX_CONF_UNSET_UINT;
    imcf->token_expire = NGX_CONF_UNSET;
    imcf->dedup_ttl = NGX_CONF_UNSET;
    imcf->friend_verify = NGX_CONF_UNSET;
    imcf->max_convs = NGX_CONF_UNSET_UINT;
    imcf->push_stream_max = NGX_CONF_UNSET_UINT;
    imcf->mongo_clients = NGX_CONF_UNSET_UINT;
    imcf->mongo_max_pending = NGX_CONF_UNSET_UINT;
    imcf->persist_batch = NGX_CONF_UNSET_UINT;
    imcf->persist_stream_max = NGX_CONF_UNSET_UINT;
    imcf->hot_window = NGX_CONF_UNSET_UINT;
    imcf->revoke_window = NGX_CONF_UNSET;
    imcf->seq_block = NGX_CONF_UNSET_UINT;
    imcf->multi_login = NGX_CONF_UNSET_UINT;
    imcf->persist_claim = NGX_CONF_UNSET_MSEC;

    return imcf;
}


static char *
ngx_http_im_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_im_main_conf_t  *imcf = conf;

    ngx_conf_init_ptr_value(imcf->admins, NULL);
    ngx_conf_init_msec_value(imcf->redis_connect_timeout, 3000);
    ngx_conf_init_msec_value(imcf->redis_timeout, 5000);
    ngx_conf_init_uint_value(imcf->redis_max_pending, 20000);
    ngx_conf_init_value(imcf->token_expire, 90 * 86400);
    ngx_conf_init_value(imcf->dedup_ttl, 86400);
    ngx_conf_init_value(imcf->friend_verify, 0);
    /* imcf->max_convs: in postconfiguration, once the locations know
     * whether it was set */
    ngx_conf_init_uint_value(imcf->push_stream_max, 100000);
    ngx_conf_init_uint_value(imcf->mongo_clients, 8);
    ngx_conf_init_uint_value(imcf->mongo_max_pending, 1024);
    ngx_conf_init_uint_value(imcf->persist_batch, 500);
    ngx_conf_init_uint_value(imcf->persist_stream_max, 1000000);
    ngx_conf_init_uint_value(imcf->hot_window, 500);
    ngx_conf_init_value(imcf->revoke_window, 0);
    ngx_conf_init_uint_value(imcf->seq_block, 1000);
    ngx_conf_init_uint_value(imcf->multi_login, NGX_HTTP_IM_LOGIN_ANY);
    ngx_conf_init_msec_value(imcf->persist_claim, 60000);

    if (imcf->mongo_db.len == 0) {
        ngx_str_set(&imcf->mongo_db, "im");
    }

    if (imcf->mongo_pool.len == 0) {
        ngx_str_set(&imcf->mongo_pool, "default");
    }

    if (imcf->mongo_uri.len
        && ngx_thread_pool_add(cf, &imcf->mongo_pool) == NULL)
    {
        return NGX_CONF_ERROR;
    }

    if (ngx_http_im_metrics_add_zone(cf, ngx_http_im_api_route_name)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    if (imcf->redis_host.len && imcf->secret.len < 8) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"im_secret\" of at least 8 bytes is required "
                           "with \"im_redis\"");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_im_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_im_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_im_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->kind = NGX_CONF_UNSET_UINT;
    conf->ws_max_frame = NGX_CONF_UNSET_SIZE;
    conf->ws_max_message = NGX_CONF_UNSET_SIZE;
    conf->ws_send_queue = NGX_CONF_UNSET_SIZE;
    conf->ws_ping_interval = NGX_CONF_UNSET_MSEC;
    conf->ws_timeout = NGX_CONF_UNSET_MSEC;
    conf->ws_max_inflight = NGX_CONF_UNSET_UINT;
    conf->max_content = NGX_CONF_UNSET_SIZE;
    conf->api_max_body = NGX_CONF_UNSET_SIZE;
    conf->pull_max = NGX_CONF_UNSET_UINT;
    conf->ws_rate = NGX_CONF_UNSET_UINT;
    conf->ws_burst = NGX_CONF_UNSET_UINT;
    conf->api_rate = NGX_CONF_UNSET_UINT;
    conf->api_burst = NGX_CONF_UNSET_UINT;
    conf->cors = NGX_CONF_UNSET_PTR;

    return conf;
}


static char *
ngx_http_im_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_im_loc_conf_t *prev = parent;
    ngx_http_im_loc_conf_t *conf = child;

    ngx_http_im_main_conf_t   *imcf;
    ngx_http_core_loc_conf_t  *clcf;

    ngx_conf_merge_uint_value(conf->kind, prev->kind, 0);
    ngx_conf_merge_size_value(conf->ws_max_frame, prev->ws_max_frame,
                              NGX_HTTP_IM_WS_MAX_FRAME);
    ngx_conf_merge_size_value(conf->ws_max_message, prev->ws_max_message,
                              NGX_HTTP_IM_WS_MAX_MESSAGE);
    ngx_conf_merge_size_value(conf->ws_send_queue, prev->ws_send_queue,
                              NGX_HTTP_IM_WS_SEND_QUEUE);
    ngx_conf_merge_msec_value(conf->ws_ping_interval, prev->ws_ping_interval,
                              30000);
    ngx_conf_merge_msec_value(conf->ws_timeout, prev->ws_timeout, 10000);
    ngx_conf_merge_uint_value(conf->ws_max_inflight, prev->ws_max_inflight,
                              NGX_HTTP_IM_WS_MAX_INFLIGHT);
    ngx_conf_merge_size_value(conf->max_content, prev->max_content,
                              NGX_HTTP_IM_MAX_CONTENT);
    ngx_conf_merge_size_value(conf->api_max_body, prev->api_max_body,
                              NGX_HTTP_IM_API_MAX_BODY);
    ngx_conf_merge_uint_value(conf->pull_max, prev->pull_max,
                              NGX_HTTP_IM_PULL_MAX);
    ngx_conf_merge_uint_value(conf->ws_rate, prev->ws_rate,
                              NGX_HTTP_IM_WS_RATE);
    ngx_conf_merge_uint_value(conf->ws_burst, prev->ws_burst,
                              NGX_HTTP_IM_WS_BURST);
    ngx_conf_merge_uint_value(conf->api_rate, prev->api_rate,
                              NGX_HTTP_IM_API_RATE);
    ngx_conf_merge_uint_value(conf->api_burst, prev->api_burst,
                              NGX_HTTP_IM_API_BURST);
    ngx_conf_merge_ptr_value(conf->cors, prev->cors, NULL);

    imcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_im_module);

    if ((conf->kind == NGX_HTTP_IM_LOC_WS || conf->kind == NGX_HTTP_IM_LOC_API)
        && imcf->redis_host.len == 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"im_ws\" and \"im_api\" need \"im_redis\"");
        return NGX_CONF_ERROR;
    }

    if (conf->kind == NGX_HTTP_IM_LOC_API) {
        /* REST bodies are parsed from memory, never from a temp file */
        clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

        if (clcf->client_body_buffer_size < conf->api_max_body + 1) {
            clcf->client_body_buffer_size = conf->api_max_body + 1;
        }

        /* bodies over im_api_max_body get a JSON 1001: the API's body
         * filter drops their data, so they never reach disk; nginx's own
         * 413 stays only for absurd sizes */
        if (clcf->client_max_body_size < 64 * (off_t) conf->api_max_body) {
            clcf->client_max_body_size = 64 * (off_t) conf->api_max_body;
        }
    }

    if (conf->ws_send_queue < conf->ws_max_message + 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"im_ws_send_queue\" must exceed "
                           "\"im_ws_max_message\" by at least 1k");
        return NGX_CONF_ERROR;
    }

    if (conf->kind == NGX_HTTP_IM_LOC_WS) {
        return ngx_http_im_newest_fits(cf, imcf, conf);
    }

    return NGX_CONF_OK;
}


/*
 * The largest GetNewestSeq answer must fit the send queue of an im_ws
 * location, or the session would be closed instead of answered: with
 * im_max_conversations set, for that many conversations; by default for
 * one at least, and the answer then holds as many as fit, at most 10000
 * (ngx_http_im_msg.c).
 */
static char *
ngx_http_im_newest_fits(ngx_conf_t *cf, ngx_http_im_main_conf_t *imcf,
    ngx_http_im_loc_conf_t *conf)
{
    size_t      need;
    ngx_uint_t  n;

    n = (imcf->max_convs == NGX_CONF_UNSET_UINT) ? 1 : imcf->max_convs;
    need = NGX_HTTP_IM_PB_NEWEST_SIZE(n, conf->ws_max_message);

    if (conf->ws_send_queue >= need) {
        return NGX_CONF_OK;
    }

    if (imcf->max_convs == NGX_CONF_UNSET_UINT) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"im_ws_send_queue\" must exceed "
                           "\"im_ws_max_message\" by at least 1k and %d "
                           "bytes, one conversation of a GetNewestSeq "
                           "answer", NGX_HTTP_IM_PB_NEWEST_CONV);
        return NGX_CONF_ERROR;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"im_ws_send_queue\" %uz cannot hold a "
                       "GetNewestSeq answer of %ui conversations "
                       "(\"im_max_conversations\"): it needs %uz bytes, "
                       "%d per conversation, \"im_ws_max_message\" and 1k; "
                       "raise \"im_ws_send_queue\" or lower "
                       "\"im_max_conversations\"",
                       conf->ws_send_queue, n, need,
                       NGX_HTTP_IM_PB_NEWEST_CONV);

    return NGX_CONF_ERROR;
}


/*
 * im_max_conversations: a GetNewestSeq answer has an entry per
 * conversation in each of its maps, and the protobuf transcoder takes at
 * most NGX_HTTP_IM_PB_MAX_REPEATED entries in one.
 */
static char *
ngx_http_im_max_convs(ngx_conf_t *cf, void *post, void *data)
{
    ngx_uint_t  *np = data;

    if (*np >= 1 && *np <= NGX_HTTP_IM_PB_MAX_REPEATED) {
        return NGX_CONF_OK;
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"im_max_conversations\" must be 1..%d: a protobuf "
                       "GetNewestSeq answer holds at most %d entries in a "
                       "map (one per conversation)",
                       NGX_HTTP_IM_PB_MAX_REPEATED,
                       NGX_HTTP_IM_PB_MAX_REPEATED);

    return NGX_CONF_ERROR;
}


/* im_redis 127.0.0.1:6379 | unix:/path; resolved here, never at run time */
static char *
ngx_http_im_redis_addr(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_im_main_conf_t *imcf = conf;

    char                      *rv;
    ngx_str_t                 *value;
    ngx_http_im_redis_addr_t   addr;

    if (imcf->redis_host.len) {
        return "is duplicate";
    }

    value = cf->args->elts;

    rv = ngx_http_im_redis_parse(cf, &value[1], &addr);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    imcf->redis_host = addr.host;
    imcf->redis_port = addr.port;

    return NGX_CONF_OK;
}


/*
 * im_redis_cluster 10.0.0.5:7000 10.0.0.6:7000 ...: seeds of a Redis
 * Cluster; the masters are learned from them at run time.  The first
 * seed also fills redis_host, which says "Redis is configured".
 */
static char *
ngx_http_im_redis_cluster_seeds(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_im_main_conf_t *imcf = conf;

    char                      *rv;
    ngx_str_t                 *value;
    ngx_uint_t                 i;
    ngx_http_im_redis_addr_t  *addr;

    if (imcf->redis_host.len) {
        return "is duplicate, or used with \"im_redis\"";
    }

    value = cf->args->elts;

    if (cf->args->nelts - 1 > 16) {
        return "takes at most 16 seeds";
    }

    imcf->redis_cluster = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                           sizeof(ngx_http_im_redis_addr_t));
    if (imcf->redis_cluster == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        addr = ngx_array_push(imcf->redis_cluster);
        if (addr == NULL) {
            return NGX_CONF_ERROR;
        }

        rv = ngx_http_im_redis_parse(cf, &value[i], addr);
        if (rv != NGX_CONF_OK) {
            return rv;
        }

        if (addr->port == 0) {
            return "takes host:port seeds, not unix sockets";
        }
    }

    addr = imcf->redis_cluster->elts;
    imcf->redis_host = addr[0].host;
    imcf->redis_port = addr[0].port;

    return NGX_CONF_OK;
}


static char *
ngx_http_im_redis_parse(ngx_conf_t *cf, ngx_str_t *value,
    ngx_http_im_redis_addr_t *addr)
{
    u_char     *p;
    ngx_url_t   u;

    if (ngx_strncmp(value->data, "unix:", 5) == 0) {
        if (value->len - 5 >= NGX_HTTP_IM_REDIS_HOST_MAX) {
            return "has a socket path that is too long";
        }

        addr->host.data = value->data + 5;
        addr->host.len = value->len - 5;
        addr->port = 0;
        return NGX_CONF_OK;
    }

    ngx_memzero(&u, sizeof(ngx_url_t));
    u.url = *value;
    u.default_port = 6379;

    if (ngx_parse_url(cf->pool, &u) != NGX_OK || u.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "invalid redis address "
                           "\"%V\": %s", value,
                           u.err ? u.err : "no address");
        return NGX_CONF_ERROR;
    }

    p = ngx_pnalloc(cf->pool, NGX_SOCKADDR_STRLEN);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    addr->host.data = p;
    addr->host.len = ngx_sock_ntop(u.addrs[0].sockaddr, u.addrs[0].socklen,
                                   p, NGX_SOCKADDR_STRLEN, 0);
    addr->port = ngx_inet_get_port(u.addrs[0].sockaddr);

    return NGX_CONF_OK;
}


/* im_ws, im_api, im_metrics: the location's content handler */
static char *
ngx_http_im_location(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_im_loc_conf_t *imlcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (imlcf->kind != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (cmd->name.data[3] == 'w') {
        imlcf->kind = NGX_HTTP_IM_LOC_WS;
        clcf->handler = ngx_http_im_ws_handler;

    } else if (cmd->name.data[3] == 'm') {
        imlcf->kind = NGX_HTTP_IM_LOC_METRICS;
        clcf->handler = ngx_http_im_metrics_handler;

    } else {
        imlcf->kind = NGX_HTTP_IM_LOC_API;
        clcf->handler = ngx_http_im_api_handler;
    }

    return NGX_CONF_OK;
}


/* im_admin uid ...: every argument is an admin (may repeat) */
static char *
ngx_http_im_admins(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_im_main_conf_t *imcf = conf;

    ngx_str_t   *value, *a;
    ngx_uint_t   i;

    if (imcf->admins == NGX_CONF_UNSET_PTR) {
        imcf->admins = ngx_array_create(cf->pool, 4, sizeof(ngx_str_t));
        if (imcf->admins == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        a = ngx_array_push(imcf->admins);
        if (a == NULL) {
            return NGX_CONF_ERROR;
        }

        *a = value[i];
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_im_postconfiguration(ngx_conf_t *cf)
{
    ngx_http_im_main_conf_t  *imcf;

    /* the default, after the locations' checks (ngx_http_im_newest_fits) */
    imcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_im_module);
    ngx_conf_init_uint_value(imcf->max_convs, NGX_HTTP_IM_PB_MAX_REPEATED);

    if (ngx_http_im_cors_filter_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_im_api_body_filter_init(cf);
}


/*
 * "im_ws_rate rate [burst];", "im_api_rate rate [burst];": requests per
 * second and the burst above it (default twice the rate); rate 0 turns
 * the limit off.  The burst field follows the rate's in the conf.
 */
static char *
ngx_http_im_set_rate(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_uint_t  *rate, *burst;
    ngx_int_t    n;
    ngx_str_t   *value;

    rate = (ngx_uint_t *) ((u_char *) conf + cmd->offset);
    burst = rate + 1;

    if (*rate != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    n = ngx_atoi(value[1].data, value[1].len);
    if (n == NGX_ERROR || n > 1000000) {
        return "takes a rate of 0..1000000 requests per second";
    }

    *rate = n;
    *burst = 2 * n;

    if (cf->args->nelts == 3) {
        n = ngx_atoi(value[2].data, value[2].len);
        if (n == NGX_ERROR || n > 1000000 || (n == 0 && *rate)) {
            return "takes a burst of 1..1000000";
        }

        *burst = n;
    }

    return NGX_CONF_OK;
}
