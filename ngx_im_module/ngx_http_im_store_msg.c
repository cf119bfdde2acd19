
/*
 * ngx_im: the store layer for messages: sends, seqs, pulls, the users'
 * conversation seqs, offline-push jobs and the persistence queue (see
 * ngx_http_im_store.h).
 *
 * Keys of a conversation (one hash slot, by the tag):
 *   im:{c:<conv>}:seq       max seq        im:{c:<conv>}:msgs   seq -> JSON
 *   im:{c:<conv>}:cmid:<sendID>:<id> dedup im:{c:<conv>}:reserved  MongoDB
 *   im:{c:<conv>}:done      persisted seqs still hot
 * of a user: im:{u:<uid>}:convs (conv -> last ms), im:{u:<uid>}:read
 * (conv -> hasReadSeq); streams im:persist and im:push.
 *
 * The positions of each script's KEYS and ARGV and its reply codes are
 * named next to its call; the script's header says the same.
 *
 * In a Redis Cluster a send is three steps, each in one slot: the
 * conversation goes into both users' indexes (conv_index.lua, checking
 * that the recipient is registered), then the message is stored in the
 * conversation's slot (send_conv.lua), then each user's max seq, the
 * sender's read seq and the deliveries (deliver.lua).  The ack follows
 * the last step.  A send that stops halfway was not acked; its resend
 * (same clientMsgID) runs every step again, and each is idempotent, so
 * an acked message is always in both users' sync.
 */


#include "ngx_http_im_store_int.h"
#include "ngx_http_im_mongo.h"


/* room for "im:{c:si_<uid>_<uid>}:cmid:<sendID>:<clientMsgID>" */
#define NGX_HTTP_IM_STORE_CMID_KEY                                          \
    (sizeof("im:{c:si__}:cmid::") + 3 * NGX_HTTP_IM_UID_MAX                 \
     + NGX_HTTP_IM_CMID_MAX)

/* the dedup key of a sender's clientMsgID: conv, sendID, clientMsgID */
#define NGX_HTTP_IM_STORE_CMID_FMT  "im:{c:%V}:cmid:%V:%V"

#define NGX_HTTP_IM_STORE_HEAD_LEN  (NGX_MAXHOSTNAMELEN + 256)

/* an offline-push job: the recipient, the bound, 11 fields; in XADD with
 * the badge, platforms and tokens */
#define NGX_HTTP_IM_JOB_FIELDS      24
#define NGX_HTTP_IM_JOB_ARGS        34


/* a send in a cluster, step by step */
typedef struct ngx_http_im_store_csend_s  ngx_http_im_store_csend_t;

struct ngx_http_im_store_csend_s {
    ngx_http_im_store_msg_t    msg;
    ngx_http_im_store_sent_pt  done;
    void                      *data;
    ngx_uint_t                 step;
    ngx_uint_t                 pending;
    ngx_http_im_store_sent_t   r;
    ngx_str_t                  server_msg_id;    /* a resend's */
    u_char                     smid[64];
    size_t                     hole_len;         /* the conversation's */
    u_char                     hole[48];
};


/* send.lua */
enum {
    NGX_HTTP_IM_SEND_K_SEQ = 0,
    NGX_HTTP_IM_SEND_K_MSGS,
    NGX_HTTP_IM_SEND_K_CMID,
    NGX_HTTP_IM_SEND_K_SENDER_CONVS,
    NGX_HTTP_IM_SEND_K_RECV_CONVS,
    NGX_HTTP_IM_SEND_K_SENDER_READ,
    NGX_HTTP_IM_SEND_K_RECV_USER,
    NGX_HTTP_IM_SEND_K_PERSIST,
    NGX_HTTP_IM_SEND_K_RESERVED,
    NGX_HTTP_IM_SEND_K_DONE,
    NGX_HTTP_IM_SEND_K_RECV_ONLINE,
    NGX_HTTP_IM_SEND_NKEYS,
    NGX_HTTP_IM_SEND_A_HEAD = NGX_HTTP_IM_SEND_NKEYS,
    NGX_HTTP_IM_SEND_A_TAIL,
    NGX_HTTP_IM_SEND_A_NOW,
    NGX_HTTP_IM_SEND_A_CONV,
    NGX_HTTP_IM_SEND_A_DEDUP_TTL,
    NGX_HTTP_IM_SEND_A_CHECK_RECV,
    NGX_HTTP_IM_SEND_A_MONGO,
    NGX_HTTP_IM_SEND_A_HOT_WINDOW,
    NGX_HTTP_IM_SEND_A_BACKLOG_MAX,
    NGX_HTTP_IM_SEND_A_FORCE,
    NGX_HTTP_IM_SEND_A_SERVER_MSG_ID,
    NGX_HTTP_IM_SEND_A_DELIVERY,
    NGX_HTTP_IM_SEND_A_RECV_CHANNEL,
    NGX_HTTP_IM_SEND_A_SENDER_CHANNEL,
    NGX_HTTP_IM_SEND_A_SENDER_PREFIX,
    NGX_HTTP_IM_SEND_A_RECV_PREFIX,
    NGX_HTTP_IM_SEND_A_RULES,
    NGX_HTTP_IM_SEND_A_LOAD_RECV,
    NGX_HTTP_IM_SEND_N
};

/* send.lua's replies: {code, ...} or -error */
#define NGX_HTTP_IM_SEND_R_RESENT   0
#define NGX_HTTP_IM_SEND_R_SENT     1
#define NGX_HTTP_IM_SEND_R_RESEED   -2
#define NGX_HTTP_IM_SEND_R_RESERVE  -3
#define NGX_HTTP_IM_SEND_R_REFUSED  -1    /* send_conv.lua: by the group */
#define NGX_HTTP_IM_SEND_R_LOAD     -4    /* send_conv.lua: load the group */
#define NGX_HTTP_IM_SEND_R_LOAD_USER  -5  /* load the recipient's relations */




static ngx_http_im_store_batch_t *ngx_http_im_store_sends(void);
static void ngx_http_im_store_sent_reply(redisReply *reply, void *data);
static void ngx_http_im_store_sent_new(ngx_http_im_store_sent_t *r,
    redisReply *reply);
static void ngx_http_im_store_exists_reply(redisReply *reply, void *data);
static void ngx_http_im_store_published(redisReply *reply, void *data);
static void ngx_http_im_store_seeded(redisReply *reply, void *data);
static void ngx_http_im_store_msgs_reply(redisReply *reply, void *data);
static void ngx_http_im_store_item(ngx_http_im_store_item_t *it,
    redisReply *e);
static void ngx_http_im_store_convs_reply(redisReply *reply, void *data);
static void ngx_http_im_store_taken(redisReply *reply, void *data);
static void ngx_http_im_store_fetch(redisReply *reply,
    ngx_http_im_store_op_t *op);
static void ngx_http_im_store_fetched(redisReply *all, void *data);
static void ngx_http_im_store_entries(redisReply *reply, redisReply *json,
    ngx_http_im_store_op_t *op);
static void ngx_http_im_store_arg_msgs(ngx_http_im_store_args_t *a,
    redisReply *conv);
static void ngx_http_im_store_trim(ngx_http_im_store_entry_t *e);
static size_t ngx_http_im_store_delivery_head(u_char *buf,
    ngx_http_im_store_msg_t *m);
static ngx_int_t ngx_http_im_store_cluster_send(ngx_http_im_store_msg_t *m,
    ngx_http_im_store_sent_pt done, void *data);
static ngx_int_t ngx_http_im_store_index(ngx_http_im_store_csend_t *cs,
    ngx_str_t *uid, ngx_uint_t check);
static void ngx_http_im_store_indexed(redisReply *reply, void *data);
static void ngx_http_im_store_conv_stored(redisReply *reply, void *data);
static ngx_int_t ngx_http_im_store_deliver(ngx_http_im_store_csend_t *cs,
    ngx_str_t *uid, ngx_uint_t sender, ngx_uint_t publish);
static void ngx_http_im_store_delivered(redisReply *reply, void *data);
static void ngx_http_im_store_reached(redisReply *reply, void *data);
static void ngx_http_im_store_csend_step(ngx_http_im_store_csend_t *cs);
static void ngx_http_im_store_csend_store(ngx_http_im_store_csend_t *cs);
static ngx_int_t ngx_http_im_store_enqueue(ngx_http_im_store_csend_t *cs);
static void ngx_http_im_store_enqueued(redisReply *reply, void *data);
static void ngx_http_im_store_arg_cmid(ngx_http_im_store_args_t *a,
    ngx_http_im_store_msg_t *m);
static void ngx_http_im_store_arg_queue(ngx_http_im_store_args_t *a,
    ngx_uint_t k);
static ngx_uint_t ngx_http_im_store_queue_of(ngx_str_t *conv);
static void ngx_http_im_store_group_args(ngx_http_im_store_args_t *a,
    ngx_http_im_store_msg_t *m, u_char *head);
static void ngx_http_im_store_at(ngx_http_im_store_csend_t *cs);
static ngx_int_t ngx_http_im_store_queue_len(ngx_http_im_store_csend_t *cs);
static void ngx_http_im_store_queued(redisReply *reply, void *data);
static void ngx_http_im_store_backlog_full(void);
static void ngx_http_im_store_job_badge(void *data,
    ngx_http_im_store_conv_res_t *r);
static void ngx_http_im_store_job_tokens(redisReply *reply, void *data);


/* ----------------------------------------------------------------------
 * sends
 */


ngx_int_t
ngx_http_im_store_msg_save(ngx_http_im_store_msg_t *m,
    ngx_http_im_store_sent_pt done, void *data)
{
    u_char                   *p;
    size_t                    len[NGX_HTTP_IM_SEND_N];
    ngx_uint_t                i;
    const char               *argv[NGX_HTTP_IM_SEND_N];
    ngx_http_im_store_op_t   *op;
    ngx_http_im_main_conf_t  *imcf;
    u_char                    keys[NGX_HTTP_IM_SEND_NKEYS]
                                  [NGX_HTTP_IM_STORE_CMID_KEY];
    u_char                    now_ms[NGX_INT64_LEN], ttl[NGX_INT64_LEN];
    u_char                    nums[2][NGX_INT64_LEN];
    u_char                    chans[2][NGX_HTTP_IM_STORE_CHANNEL_LEN];
    u_char                    head[NGX_HTTP_IM_STORE_HEAD_LEN];
    u_char                    prefix[2][NGX_HTTP_IM_STORE_KEY_LEN];

    imcf = ngx_http_im_worker->imcf;

    if (ngx_http_im_redis_cluster() || m->group.len) {
        return ngx_http_im_store_cluster_send(m, done, data);
    }

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

#define ngx_http_im_send_key(k, fmt, a)                                     \
    len[k] = ngx_http_im_store_key(keys[k], sizeof(keys[k]), fmt, a)

    ngx_http_im_send_key(NGX_HTTP_IM_SEND_K_SEQ, "im:{c:%V}:seq", &m->conv);
    ngx_http_im_send_key(NGX_HTTP_IM_SEND_K_MSGS, "im:{c:%V}:msgs",
                         &m->conv);
    p = ngx_snprintf(keys[NGX_HTTP_IM_SEND_K_CMID], sizeof(keys[0]),
                     NGX_HTTP_IM_STORE_CMID_FMT, &m->conv, &m->send_id,
                     &m->client_msg_id);
    len[NGX_HTTP_IM_SEND_K_CMID] = p - keys[NGX_HTTP_IM_SEND_K_CMID];
    ngx_http_im_send_key(NGX_HTTP_IM_SEND_K_SENDER_CONVS, "im:{u:%V}:convs",
                         &m->send_id);
    ngx_http_im_send_key(NGX_HTTP_IM_SEND_K_RECV_CONVS, "im:{u:%V}:convs",
                         &m->recv_id);
    ngx_http_im_send_key(NGX_HTTP_IM_SEND_K_SENDER_READ, "im:{u:%V}:read",
                         &m->send_id);
    ngx_http_im_send_key(NGX_HTTP_IM_SEND_K_RECV_USER, "im:{u:%V}:profile",
                         &m->recv_id);
    len[NGX_HTTP_IM_SEND_K_PERSIST] =
        ngx_cpymem(keys[NGX_HTTP_IM_SEND_K_PERSIST], "im:persist", 10)
        - keys[NGX_HTTP_IM_SEND_K_PERSIST];
    ngx_http_im_send_key(NGX_HTTP_IM_SEND_K_RESERVED, "im:{c:%V}:reserved",
                         &m->conv);
    ngx_http_im_send_key(NGX_HTTP_IM_SEND_K_DONE, "im:{c:%V}:done",
                         &m->conv);
    ngx_http_im_send_key(NGX_HTTP_IM_SEND_K_RECV_ONLINE, "im:{u:%V}:online",
                         &m->recv_id);

#undef ngx_http_im_send_key

    for (i = 0; i < NGX_HTTP_IM_SEND_NKEYS; i++) {
        argv[i] = (char *) keys[i];
    }

#define ngx_http_im_send_arg(a, v, n)                                       \
    argv[a] = (char *) (v); len[a] = (n)

    /* the script puts the seq between these two halves */
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_HEAD, m->json.data, m->seq_at);
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_TAIL,
                         m->json.data + m->seq_at + 1,
                         m->json.len - m->seq_at - 1);
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_NOW, now_ms,
                         ngx_sprintf(now_ms, "%L", m->send_time) - now_ms);
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_CONV, m->conv.data, m->conv.len);
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_DEDUP_TTL, ttl,
                         ngx_sprintf(ttl, "%T", imcf->dedup_ttl) - ttl);
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_CHECK_RECV, "1", 1);
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_MONGO,
                         ngx_http_im_mongo_enabled() ? "1" : "0", 1);
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_HOT_WINDOW, nums[0],
                         ngx_sprintf(nums[0], "%ui", imcf->hot_window)
                         - nums[0]);
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_BACKLOG_MAX, nums[1],
                         ngx_sprintf(nums[1], "%ui",
                                     imcf->persist_stream_max) - nums[1]);
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_FORCE, m->force ? "1" : "0", 1);
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_SERVER_MSG_ID,
                         m->server_msg_id.data, m->server_msg_id.len);

    /* the deliveries, published by the script */
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_DELIVERY, head,
                         ngx_http_im_store_delivery_head(head, m));
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_RECV_CHANNEL, chans[0],
                         ngx_http_im_store_channel(chans[0], &m->recv_id));
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_SENDER_CHANNEL, chans[1], 0);

    if (m->send_id.len != m->recv_id.len
        || ngx_strncmp(m->send_id.data, m->recv_id.data, m->send_id.len)
           != 0)
    {
        len[NGX_HTTP_IM_SEND_A_SENDER_CHANNEL] =
            ngx_http_im_store_channel(chans[1], &m->send_id);
    }

    /* each user's view of the conversation: keys named by the script */
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_SENDER_PREFIX, prefix[0],
                         ngx_http_im_store_key(prefix[0], sizeof(prefix[0]),
                                               "im:{u:%V}:", &m->send_id));
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_RECV_PREFIX, prefix[1],
                         ngx_http_im_store_key(prefix[1], sizeof(prefix[1]),
                                               "im:{u:%V}:", &m->recv_id));

    /* the recipient's blacklist and friends (docs/api.md, "Friends") */
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_RULES, &"012"[m->rules], 1);
    ngx_http_im_send_arg(NGX_HTTP_IM_SEND_A_LOAD_RECV,
                         m->load_recv ? "1" : "0", 1);

#undef ngx_http_im_send_arg

    return ngx_http_im_store_batch_add(ngx_http_im_store_sends(), op, argv,
                                       len);
}


/* the sends of this turn (store_batch.c); send.lua takes <= 64 */
static ngx_http_im_store_batch_t *
ngx_http_im_store_sends(void)
{
    static ngx_http_im_store_batch_t  b;

    if (b.handler == NULL) {
        b.script = NGX_HTTP_IM_LUA_SEND;
        b.nkeys = NGX_HTTP_IM_SEND_NKEYS;
        b.nargs = NGX_HTTP_IM_SEND_N;
        b.max = NGX_HTTP_IM_SEND_BATCH;
        b.max_bytes = NGX_HTTP_IM_SEND_BATCH_BYTES;
        b.handler = ngx_http_im_store_sent_reply;
        b.event.handler = ngx_http_im_store_batch_flush_handler;
        b.event.data = &b;
        b.event.log = ngx_cycle->log;
        b.fail_event.handler = ngx_http_im_store_batch_failed_handler;
        b.fail_event.data = &b;
        b.fail_event.log = ngx_cycle->log;
    }

    return &b;
}


static void
ngx_http_im_store_sent_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    redisReply                 **e;
    ngx_http_im_store_sent_t     r;
    ngx_http_im_store_sent_pt    done;

    ngx_memzero(&r, sizeof(ngx_http_im_store_sent_t));
    r.err = NGX_HTTP_IM_ERR_UNAVAILABLE;
    done = (ngx_http_im_store_sent_pt) op->handler;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        goto done;
    }

    if (reply->type == REDIS_REPLY_INTEGER) {
        r.err = (ngx_int_t) -reply->integer;

        if (r.err == NGX_HTTP_IM_ERR_UNAVAILABLE) {
            ngx_http_im_store_backlog_full();
        }

        goto done;
    }

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
        || reply->element[0]->type != REDIS_REPLY_INTEGER)
    {
        r.err = NGX_HTTP_IM_ERR_INTERNAL;
        goto done;
    }

    e = reply->element;
    r.err = 0;

    switch (e[0]->integer) {

    case NGX_HTTP_IM_SEND_R_RESEED:
        r.status = NGX_HTTP_IM_STORE_RESEED;
        break;

    case NGX_HTTP_IM_SEND_R_RESERVE:
        r.status = NGX_HTTP_IM_STORE_RESERVE;
        r.seq = reply->elements > 1 ? ngx_http_im_store_int(e[1]) : 0;
        break;

    case NGX_HTTP_IM_SEND_R_LOAD_USER:
        r.status = NGX_HTTP_IM_STORE_LOAD_USER;
        break;

    case NGX_HTTP_IM_SEND_R_RESENT:
        if (reply->elements != 4 || e[3]->type != REDIS_REPLY_STRING) {
            r.err = NGX_HTTP_IM_ERR_INTERNAL;
            break;
        }

        /* a resend: the first ack, from the dedup key alone */
        r.status = NGX_HTTP_IM_STORE_RESENT;
        r.seq = ngx_http_im_store_int(e[1]);
        r.send_time = ngx_http_im_store_int(e[2]);
        ngx_http_im_store_str(e[3], &r.server_msg_id);
        break;

    case NGX_HTTP_IM_SEND_R_SENT:
        ngx_http_im_store_sent_new(&r, reply);
        break;

    default:
        r.err = NGX_HTTP_IM_ERR_INTERNAL;
    }

done:

    done(op->data, &r);
    ngx_http_im_store_op_free(op);
}


/* {1, seq, workers reached (0: the recipient is offline)} */
static void
ngx_http_im_store_sent_new(ngx_http_im_store_sent_t *r, redisReply *reply)
{
    if (reply->elements < 3 || reply->element[1]->type != REDIS_REPLY_INTEGER)
    {
        r->err = NGX_HTTP_IM_ERR_INTERNAL;
        return;
    }

    r->status = NGX_HTTP_IM_STORE_SENT;
    r->seq = reply->element[1]->integer;
    r->online = ngx_http_im_store_int(reply->element[2]) != 0;
}


/* "m <origin> <session id> <conversation>\n" (see session.c) */
static size_t
ngx_http_im_store_delivery_head(u_char *buf, ngx_http_im_store_msg_t *m)
{
    return ngx_snprintf(buf, NGX_HTTP_IM_STORE_HEAD_LEN, "m %V %uL %V\n",
                        &ngx_http_im_worker->origin, m->sid, &m->conv)
           - buf;
}


/* ----------------------------------------------------------------------
 * a send in a cluster
 */


static ngx_int_t
ngx_http_im_store_cluster_send(ngx_http_im_store_msg_t *m,
    ngx_http_im_store_sent_pt done, void *data)
{
    ngx_http_im_store_csend_t  *cs;

    cs = ngx_calloc(sizeof(ngx_http_im_store_csend_t), ngx_cycle->log);
    if (cs == NULL) {
        return NGX_DECLINED;
    }

    cs->msg = *m;
    cs->done = done;
    cs->data = data;

    /* step 1: the conversation in both users' indexes (a group's is the
     * sender's alone: members read the group's seq) */
    if (m->group.len == 0) {
        if (ngx_http_im_store_index(cs, &m->recv_id, 1) != NGX_OK) {
            ngx_free(cs);
            return NGX_DECLINED;
        }

        cs->pending++;

    } else if (ngx_http_im_store_index(cs, &m->send_id, 0) != NGX_OK) {
        ngx_free(cs);
        return NGX_DECLINED;

    } else {
        cs->pending++;
    }

    if (m->group.len) {
        /* indexed above */

    } else if (ngx_http_im_store_index(cs, &m->send_id, 0) == NGX_OK) {
        cs->pending++;

    } else {
        cs->r.err = NGX_HTTP_IM_ERR_UNAVAILABLE;
    }

    if (ngx_http_im_mongo_enabled()) {
        /* and the backlog of the conversation's persistence queue */
        if (ngx_http_im_store_queue_len(cs) == NGX_OK) {
            cs->pending++;

        } else {
            cs->r.err = NGX_HTTP_IM_ERR_UNAVAILABLE;
        }
    }

    return NGX_OK;
}


/* the queues of messages for MongoDB: one, or in a cluster one per
 * group of conversations (each in a slot of its own) */
ngx_uint_t
ngx_http_im_store_persist_queues(void)
{
    return ngx_http_im_redis_cluster() ? NGX_HTTP_IM_STORE_QUEUES : 1;
}


static void
ngx_http_im_store_arg_queue(ngx_http_im_store_args_t *a, ngx_uint_t k)
{
    ngx_str_t  n;
    u_char     num[NGX_INT_T_LEN];

    if (!ngx_http_im_redis_cluster()) {
        ngx_http_im_store_arg(a, "im:persist", 10);
        return;
    }

    n.data = num;
    n.len = ngx_sprintf(num, "%ui", k) - num;
    ngx_http_im_store_arg_key(a, "im:{q:%V}:persist", &n);
}


static ngx_uint_t
ngx_http_im_store_queue_of(ngx_str_t *conv)
{
    return ngx_crc32_short(conv->data, conv->len) % NGX_HTTP_IM_STORE_QUEUES;
}


static ngx_int_t
ngx_http_im_store_queue_len(ngx_http_im_store_csend_t *cs)
{
    ngx_http_im_store_args_t  a;

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg(&a, "XLEN", 4);
    ngx_http_im_store_arg_queue(&a,
                                ngx_http_im_store_queue_of(&cs->msg.conv));

    return a.failed ? NGX_DECLINED
                    : ngx_http_im_redis_command(ngx_http_im_store_queued,
                                                cs, a.n, a.argv, a.len);
}


/* the queue's length against its share of im_persist_stream_max */
static void
ngx_http_im_store_queued(redisReply *reply, void *data)
{
    ngx_http_im_store_csend_t  *cs = data;

    ngx_uint_t  max;

    max = ngx_http_im_worker->imcf->persist_stream_max
          / NGX_HTTP_IM_STORE_QUEUES;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        cs->r.err = NGX_HTTP_IM_ERR_UNAVAILABLE;

    } else if ((ngx_uint_t) reply->integer >= max && cs->r.err == 0) {
        ngx_http_im_store_backlog_full();
        cs->r.err = NGX_HTTP_IM_ERR_UNAVAILABLE;
    }

    ngx_http_im_store_csend_step(cs);
}


static void
ngx_http_im_store_backlog_full(void)
{
    ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                  "im: persistence backlog reached im_persist_stream_max, "
                  "refusing messages until MongoDB catches up");
    ngx_http_im_metric_inc(NGX_HTTP_IM_M_PERSIST_FULL);
}


/* conv_index.lua: KEYS profile, conversation index; ARGV must be
 * registered, now, conv, key prefix, the sender's rules, load first,
 * the sender */
static ngx_int_t
ngx_http_im_store_index(ngx_http_im_store_csend_t *cs, ngx_str_t *uid,
    ngx_uint_t check)
{
    ngx_http_im_store_args_t  a;

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:profile", uid);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:convs", uid);
    ngx_http_im_store_arg(&a, check ? "1" : "0", 1);
    ngx_http_im_store_arg_int(&a, cs->msg.send_time);
    ngx_http_im_store_arg(&a, cs->msg.conv.data, cs->msg.conv.len);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:", uid);
    ngx_http_im_store_arg(&a, &"012"[check ? cs->msg.rules : 0], 1);
    ngx_http_im_store_arg(&a, check && cs->msg.load_recv ? "1" : "0", 1);
    ngx_http_im_store_arg(&a, cs->msg.send_id.data, cs->msg.send_id.len);

    return ngx_http_im_store_call(NGX_HTTP_IM_LUA_CONV_INDEX,
                                  ngx_http_im_store_indexed, cs, 2, &a);
}


static void
ngx_http_im_store_indexed(redisReply *reply, void *data)
{
    ngx_http_im_store_csend_t  *cs = data;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        cs->r.err = NGX_HTTP_IM_ERR_UNAVAILABLE;

    } else if (reply->integer == NGX_HTTP_IM_SEND_R_LOAD_USER) {
        cs->r.status = NGX_HTTP_IM_STORE_LOAD_USER;

    } else if (reply->integer && cs->r.err == 0) {
        cs->r.err = (ngx_int_t) -reply->integer;
    }

    ngx_http_im_store_csend_step(cs);
}


/* one reply less; after a step's last reply, the next step */
static void
ngx_http_im_store_csend_step(ngx_http_im_store_csend_t *cs)
{
    if (--cs->pending) {
        return;
    }

    if (cs->r.err || cs->step == 2
        || cs->r.status == NGX_HTTP_IM_STORE_LOAD_USER)
    {
        cs->done(cs->data, &cs->r);
        ngx_free(cs);
        return;
    }

    if (cs->step++ == 0) {
        ngx_http_im_store_csend_store(cs);
        return;
    }

    /* step 3: each user's side, the deliveries (a resend delivers nothing
     * again) and the persistence queue (again for a resend: inserts are
     * idempotent, and the first one may not have happened); a group's
     * delivery went out with step 2 */
    if (cs->msg.group.len) {
        ngx_http_im_store_at(cs);
        cs->r.online = 1;

    } else if (ngx_http_im_store_deliver(cs, &cs->msg.recv_id, 0,
                                         cs->r.status
                                         == NGX_HTTP_IM_STORE_SENT)
               == NGX_OK)
    {
        cs->pending++;
    }

    /* (a group's members, the sender's other devices too, got it from
     * the group's channel) */
    if (ngx_http_im_store_deliver(cs, &cs->msg.send_id, 1,
                                  cs->r.status == NGX_HTTP_IM_STORE_SENT
                                  && cs->msg.group.len == 0)
        == NGX_OK)
    {
        cs->pending++;
    }

    if (ngx_http_im_mongo_enabled()
        && ngx_http_im_store_enqueue(cs) == NGX_OK)
    {
        cs->pending++;
    }

    if (cs->pending < (cs->msg.group.len ? 1 : 2)
                      + (ngx_uint_t) ngx_http_im_mongo_enabled())
    {
        cs->r.err = NGX_HTTP_IM_ERR_UNAVAILABLE;
    }

    if (cs->pending == 0) {
        cs->pending = 1;
        ngx_http_im_store_csend_step(cs);
    }
}


/* step 2: send_conv.lua: KEYS seq, msgs, dedup, reserved, done, hole; ARGV
 * JSON head and tail, now, dedup TTL, serverMsgID, MongoDB, hot window,
 * force */
static void
ngx_http_im_store_csend_store(ngx_http_im_store_csend_t *cs)
{
    ngx_http_im_store_msg_t   *m;
    ngx_http_im_store_args_t   a;
    u_char                     head[NGX_HTTP_IM_STORE_HEAD_LEN];

    m = &cs->msg;

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:seq", &m->conv);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:msgs", &m->conv);
    ngx_http_im_store_arg_cmid(&a, m);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:reserved", &m->conv);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:done", &m->conv);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:hole", &m->conv);

    if (m->group.len) {
        ngx_http_im_store_arg_key(&a, "im:{c:sg_%V}:g", &m->group);
        ngx_http_im_store_arg_key(&a, "im:{c:sg_%V}:gm", &m->group);
    }

    ngx_http_im_store_arg(&a, m->json.data, m->seq_at);
    ngx_http_im_store_arg(&a, m->json.data + m->seq_at + 1,
                          m->json.len - m->seq_at - 1);
    ngx_http_im_store_arg_int(&a, m->send_time);
    ngx_http_im_store_arg_int(&a, ngx_http_im_worker->imcf->dedup_ttl);
    ngx_http_im_store_arg(&a, m->server_msg_id.data, m->server_msg_id.len);
    ngx_http_im_store_arg(&a, ngx_http_im_mongo_enabled() ? "1" : "0", 1);
    ngx_http_im_store_arg_int(&a, ngx_http_im_worker->imcf->hot_window);
    ngx_http_im_store_arg(&a, m->force ? "1" : "0", 1);

    if (m->group.len) {
        ngx_http_im_store_group_args(&a, m, head);
    }

    cs->pending = 1;

    if (ngx_http_im_store_call(NGX_HTTP_IM_LUA_SEND_CONV,
                               ngx_http_im_store_conv_stored, cs,
                               m->group.len ? 8 : 6, &a)
        != NGX_OK)
    {
        cs->step = 2;
        cs->r.err = NGX_HTTP_IM_ERR_UNAVAILABLE;
        ngx_http_im_store_csend_step(cs);
    }
}


/* the message's entry in its conversation's persistence queue */
static ngx_int_t
ngx_http_im_store_enqueue(ngx_http_im_store_csend_t *cs)
{
    ngx_http_im_store_args_t  a;

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg(&a, "XADD", 4);
    ngx_http_im_store_arg_queue(&a,
                                ngx_http_im_store_queue_of(&cs->msg.conv));
    ngx_http_im_store_arg(&a, "*", 1);
    ngx_http_im_store_arg(&a, "c", 1);
    ngx_http_im_store_arg(&a, cs->msg.conv.data, cs->msg.conv.len);
    ngx_http_im_store_arg(&a, "s", 1);
    ngx_http_im_store_arg_int(&a, cs->r.seq);

    return a.failed ? NGX_DECLINED
                    : ngx_http_im_redis_command(ngx_http_im_store_enqueued,
                                                cs, a.n, a.argv, a.len);
}


static void
ngx_http_im_store_enqueued(redisReply *reply, void *data)
{
    ngx_http_im_store_csend_t  *cs = data;

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        cs->r.err = NGX_HTTP_IM_ERR_UNAVAILABLE;
    }

    ngx_http_im_store_csend_step(cs);
}


/* the dedup key of a sender's clientMsgID in a conversation */
static void
ngx_http_im_store_arg_cmid(ngx_http_im_store_args_t *a,
    ngx_http_im_store_msg_t *m)
{
    u_char  *last;

    last = ngx_snprintf(a->pos, a->room + NGX_HTTP_IM_STORE_ROOM - a->pos,
                        NGX_HTTP_IM_STORE_CMID_FMT, &m->conv, &m->send_id,
                        &m->client_msg_id);

    if (last == a->room + NGX_HTTP_IM_STORE_ROOM) {
        a->failed = 1;
    }

    ngx_http_im_store_arg(a, a->pos, last - a->pos);
    a->pos = last;
}


/* {1, seq} for a new message, {0, seq, sendTime, serverMsgID} */
static void
ngx_http_im_store_conv_stored(redisReply *reply, void *data)
{
    ngx_http_im_store_csend_t  *cs = data;

    redisReply  **e;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 1
        && (ngx_http_im_store_int(reply->element[0])
            == NGX_HTTP_IM_SEND_R_RESEED
            || ngx_http_im_store_int(reply->element[0])
               == NGX_HTTP_IM_SEND_R_LOAD))
    {
        cs->r.status = ngx_http_im_store_int(reply->element[0])
                       == NGX_HTTP_IM_SEND_R_RESEED
                       ? NGX_HTTP_IM_STORE_RESEED
                       : NGX_HTTP_IM_STORE_LOAD;
        cs->step = 2;
        ngx_http_im_store_csend_step(cs);
        return;
    }

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < 2)
    {
        cs->r.err = NGX_HTTP_IM_ERR_UNAVAILABLE;
        cs->step = 2;
        ngx_http_im_store_csend_step(cs);
        return;
    }

    e = reply->element;
    cs->r.seq = ngx_http_im_store_int(e[1]);

    if (ngx_http_im_store_int(e[0]) == NGX_HTTP_IM_SEND_R_REFUSED) {
        /* the group refused the sender: the code is in place of a seq */
        cs->r.err = (ngx_int_t) cs->r.seq;
        cs->step = 2;

    } else if (ngx_http_im_store_int(e[0]) == NGX_HTTP_IM_SEND_R_SENT) {
        cs->r.status = NGX_HTTP_IM_STORE_SENT;

        if (reply->elements > 2 && e[2]->type == REDIS_REPLY_STRING
            && e[2]->len <= sizeof(cs->hole))
        {
            cs->hole_len = e[2]->len;
            ngx_memcpy(cs->hole, e[2]->str, e[2]->len);
        }

    } else if (ngx_http_im_store_int(e[0]) == NGX_HTTP_IM_SEND_R_RESERVE) {
        /* MongoDB first; the caller sends again, and step 1 is harmless
         * twice */
        cs->r.status = NGX_HTTP_IM_STORE_RESERVE;
        cs->step = 2;

    } else if (reply->elements == 4 && e[3]->type == REDIS_REPLY_STRING) {
        /* the reply is gone when the ack is written: keep the ID */
        cs->r.status = NGX_HTTP_IM_STORE_RESENT;
        cs->r.send_time = ngx_http_im_store_int(e[2]);
        cs->r.server_msg_id.data = cs->smid;
        cs->r.server_msg_id.len = ngx_min(e[3]->len, sizeof(cs->smid));
        ngx_memcpy(cs->smid, e[3]->str, cs->r.server_msg_id.len);

    } else {
        cs->r.err = NGX_HTTP_IM_ERR_INTERNAL;
        cs->step = 2;
    }

    ngx_http_im_store_csend_step(cs);
}


/* deliver.lua: KEYS index, max seqs, read seqs, presence, latest
 * messages, recvMsgOpts, holes; ARGV conv, now, seq, sender, channel,
 * delivery header, MsgData, hole */
static ngx_int_t
ngx_http_im_store_deliver(ngx_http_im_store_csend_t *cs, ngx_str_t *uid,
    ngx_uint_t sender, ngx_uint_t publish)
{
    ngx_http_im_buf_t         *b;
    ngx_http_im_store_msg_t   *m;
    ngx_http_im_store_args_t   a;
    u_char                     head[NGX_HTTP_IM_STORE_HEAD_LEN];

    m = &cs->msg;

    if (sender && m->send_id.len == m->recv_id.len
        && ngx_strncmp(m->send_id.data, m->recv_id.data, m->send_id.len)
           == 0)
    {
        /* a message to oneself is delivered once */
        publish = 0;
    }

    b = &ngx_http_im_worker->scratch;
    ngx_http_im_buf_reset(b);
    ngx_http_im_buf_add(b, m->json.data, m->seq_at);
    ngx_http_im_buf_int(b, cs->r.seq);
    ngx_http_im_buf_add(b, m->json.data + m->seq_at + 1,
                        m->json.len - m->seq_at - 1);

    if (b->failed) {
        return NGX_DECLINED;
    }

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:convs", uid);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:max", uid);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:read", uid);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:online", uid);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:last", uid);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:ropt", uid);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:holes", uid);
    ngx_http_im_store_arg(&a, m->conv.data, m->conv.len);
    ngx_http_im_store_arg_int(&a, m->send_time);
    ngx_http_im_store_arg_int(&a, cs->r.seq);
    ngx_http_im_store_arg(&a, sender ? "1" : "0", 1);
    ngx_http_im_store_arg_channel(&a, uid);
    ngx_http_im_store_arg(&a, head,
                          publish ? ngx_http_im_store_delivery_head(head, m)
                                  : 0);
    ngx_http_im_store_arg(&a, b->data, b->len);
    ngx_http_im_store_arg(&a, cs->hole, cs->hole_len);

    return ngx_http_im_store_call(NGX_HTTP_IM_LUA_DELIVER,
                                  sender ? ngx_http_im_store_delivered
                                         : ngx_http_im_store_reached,
                                  cs, 7, &a);
}


/* the recipient's answer: the workers its delivery reached */
static void
ngx_http_im_store_reached(redisReply *reply, void *data)
{
    ngx_http_im_store_csend_t  *cs = data;

    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        cs->r.online = reply->integer != 0;
    }

    ngx_http_im_store_delivered(reply, data);
}


static void
ngx_http_im_store_delivered(redisReply *reply, void *data)
{
    ngx_http_im_store_csend_t  *cs = data;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        cs->r.err = NGX_HTTP_IM_ERR_UNAVAILABLE;
    }

    ngx_http_im_store_csend_step(cs);
}


/* send_conv.lua's group ARGV: sender, system, channel, publish command,
 * delivery header, @all */
static void
ngx_http_im_store_group_args(ngx_http_im_store_args_t *a,
    ngx_http_im_store_msg_t *m, u_char *head)
{
    size_t       len;
    const char  *cmd;

    cmd = ngx_http_im_store_publish_cmd(&len);

    ngx_http_im_store_arg(a, m->send_id.data, m->send_id.len);
    ngx_http_im_store_arg(a, m->system ? "1" : "0", 1);

    if ((size_t) (a->room + NGX_HTTP_IM_STORE_ROOM - a->pos)
        <= NGX_HTTP_IM_STORE_CHANNEL_LEN)
    {
        a->failed = 1;
        return;
    }

    len = ngx_http_im_store_group_channel(a->pos, &m->group);
    ngx_http_im_store_arg(a, a->pos, len);
    a->pos += len;

    ngx_http_im_store_arg(a, cmd, ngx_strlen(cmd));
    ngx_http_im_store_arg(a, head, ngx_http_im_store_delivery_head(head, m));
    ngx_http_im_store_arg(a, m->at_all ? "1" : "0", 1);
}


/* the users @ in a group message: their conversation shows it until they
 * read past it (conv.lua at_type()); one write per user named */
static void
ngx_http_im_store_at(ngx_http_im_store_csend_t *cs)
{
    ngx_uint_t                 i;
    ngx_http_im_store_args_t   a;

    if (cs->r.status != NGX_HTTP_IM_STORE_SENT) {
        return;
    }

    for (i = 0; i < cs->msg.nat; i++) {
        ngx_http_im_store_args(&a);
        ngx_http_im_store_arg(&a, "HSET", 4);
        ngx_http_im_store_arg_key(&a, "im:{u:%V}:atme", &cs->msg.at[i]);
        ngx_http_im_store_arg(&a, cs->msg.conv.data, cs->msg.conv.len);
        ngx_http_im_store_arg_int(&a, cs->r.seq);
        (void) ngx_http_im_store_send(NULL, NULL, &a);
    }
}


ngx_int_t
ngx_http_im_store_seq_seed(ngx_str_t *conv, long long seq,
    long long reserved, long long stored, ngx_http_im_store_done_pt done,
    void *data)
{
    ngx_http_im_store_op_t    *op;
    ngx_http_im_store_args_t   a;

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    /* seq_seed.lua: KEYS seq, reserved, hole; ARGV mark ("": keep the
     * seq), reservation, highest stored seq */
    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:seq", conv);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:reserved", conv);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:hole", conv);

    if (seq < 0) {
        ngx_http_im_store_arg(&a, "", 0);

    } else {
        ngx_http_im_store_arg_int(&a, seq);
    }

    ngx_http_im_store_arg_int(&a, reserved);
    ngx_http_im_store_arg_int(&a, stored);

    return ngx_http_im_store_run(NGX_HTTP_IM_LUA_SEQ_SEED,
                                 ngx_http_im_store_seeded, op, 3, &a);
}


static void
ngx_http_im_store_seeded(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    ngx_http_im_store_done_pt  done;

    done = (ngx_http_im_store_done_pt) op->handler;
    done(op->data, reply && reply->type != REDIS_REPLY_ERROR
                   ? 0 : NGX_HTTP_IM_ERR_UNAVAILABLE);
    ngx_http_im_store_op_free(op);
}


/*
 * Online-only: EXISTS the recipient, then PUBLISH, pipelined; one op
 * sees both replies, in order.
 */
ngx_int_t
ngx_http_im_store_msg_online(ngx_http_im_store_msg_t *m,
    ngx_http_im_store_count_pt done, void *data)
{
    size_t                   len[3];
    const char              *argv[3];
    ngx_http_im_buf_t       *b;
    ngx_http_im_store_op_t  *op;
    u_char                   key[NGX_HTTP_IM_STORE_KEY_LEN];
    u_char                   chan[NGX_HTTP_IM_STORE_CHANNEL_LEN];
    u_char                   head[NGX_HTTP_IM_STORE_HEAD_LEN];

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    b = &ngx_http_im_worker->scratch;
    ngx_http_im_buf_reset(b);
    ngx_http_im_buf_add(b, head, ngx_http_im_store_delivery_head(head, m));
    ngx_http_im_buf_add(b, m->json.data, m->seq_at);
    ngx_http_im_buf_str(b, "0");
    ngx_http_im_buf_add(b, m->json.data + m->seq_at + 1,
                        m->json.len - m->seq_at - 1);

    if (b->failed) {
        ngx_http_im_store_op_free(op);
        return NGX_DECLINED;
    }

    argv[0] = "EXISTS";
    len[0] = 6;
    argv[1] = (char *) key;
    len[1] = ngx_http_im_store_key(key, sizeof(key), "im:{u:%V}:profile",
                                   &m->recv_id);

    if (ngx_http_im_store_command(ngx_http_im_store_exists_reply, op, 2,
                                  argv, len)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    argv[0] = ngx_http_im_store_publish_cmd(&len[0]);
    argv[1] = (char *) chan;
    len[1] = ngx_http_im_store_channel(chan, &m->recv_id);
    argv[2] = (char *) b->data;
    len[2] = b->len;

    if (ngx_http_im_redis_command(ngx_http_im_store_published, op, 3, argv,
                                  len)
        != NGX_OK)
    {
        /* the EXISTS reply finds this and answers 90004 */
        op->failed = 1;
    }

    return NGX_OK;
}


static void
ngx_http_im_store_exists_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    ngx_http_im_store_count_pt  done;

    if (op->failed) {
        done = (ngx_http_im_store_count_pt) op->handler;
        done(op->data, NGX_HTTP_IM_ERR_UNAVAILABLE, 0);
        ngx_http_im_store_op_free(op);
        return;
    }

    op->known = reply && reply->type == REDIS_REPLY_INTEGER
                && reply->integer == 1;
}


static void
ngx_http_im_store_published(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    ngx_http_im_store_count_pt  done;

    done = (ngx_http_im_store_count_pt) op->handler;

    if (reply == NULL || reply->type != REDIS_REPLY_INTEGER) {
        done(op->data, NGX_HTTP_IM_ERR_UNAVAILABLE, 0);

    } else if (!op->known) {
        done(op->data, NGX_HTTP_IM_ERR_USER_ID, 0);

    } else {
        done(op->data, 0, (ngx_int_t) reply->integer);
    }

    ngx_http_im_store_op_free(op);
}


/*
 * An offline-push job, in three steps: the recipient's total unread
 * count (the badge, conv.lua), its device tokens, then XADD to im:push
 * (in a cluster the stream is in a slot of its own).  The fields are
 * copied first: the send that made the job is gone by then.
 */
ngx_int_t
ngx_http_im_store_push_job(ngx_http_im_store_job_t *job)
{
    size_t              len[NGX_HTTP_IM_JOB_FIELDS];
    ngx_str_t           args;
    ngx_uint_t          i;
    const char         *argv[NGX_HTTP_IM_JOB_FIELDS];
    ngx_http_im_buf_t  *b;
    u_char              nums[4][NGX_INT64_LEN];
    u_char              maxc[NGX_HTTP_IM_STORE_KEY_LEN + 64];

    argv[0] = (char *) job->recv_id.data;
    len[0] = job->recv_id.len;
    argv[1] = (char *) nums[0];
    len[1] = ngx_sprintf(nums[0], "%ui",
                         ngx_http_im_worker->imcf->push_stream_max)
             - nums[0];

#define ngx_http_im_job_field(i, name, val, n)                              \
    argv[i] = name; len[i] = sizeof(name) - 1;                              \
    argv[i + 1] = (char *) (val); len[i + 1] = (n)

    ngx_http_im_job_field(2, "recvID", job->recv_id.data, job->recv_id.len);
    ngx_http_im_job_field(4, "sendID", job->send_id.data, job->send_id.len);
    ngx_http_im_job_field(6, "conversationID", job->conv.data,
                          job->conv.len);
    ngx_http_im_job_field(8, "seq", nums[1],
                          ngx_sprintf(nums[1], "%L", job->seq) - nums[1]);
    ngx_http_im_job_field(10, "serverMsgID", job->server_msg_id.data,
                          job->server_msg_id.len);
    ngx_http_im_job_field(12, "contentType", nums[2],
                          ngx_sprintf(nums[2], "%L", job->content_type)
                          - nums[2]);
    ngx_http_im_job_field(14, "sessionType", nums[3],
                          ngx_sprintf(nums[3], "%L", job->session_type)
                          - nums[3]);
    ngx_http_im_job_field(16, "class", job->push_class.data,
                          job->push_class.len);
    ngx_http_im_job_field(18, "title", job->title.data, job->title.len);
    ngx_http_im_job_field(20, "desc", job->desc.data, job->desc.len);
    ngx_http_im_job_field(22, "ex", job->ex.data, job->ex.len);

#undef ngx_http_im_job_field

    b = ngx_alloc(sizeof(ngx_http_im_buf_t), ngx_cycle->log);
    if (b == NULL) {
        return NGX_DECLINED;
    }

    ngx_http_im_buf_init(b, 256 * 1024);

    /* as <len><bytes>: the recipient, the stream's bound, the fields */
    for (i = 0; i < 24; i++) {
        ngx_http_im_buf_add(b, &len[i], sizeof(size_t));
        ngx_http_im_buf_add(b, argv[i], len[i]);
    }

    args.data = maxc;
    args.len = ngx_snprintf(maxc, sizeof(maxc), "{\"maxc\":%ui,\"c\":\"%V\"}",
                            ngx_http_im_worker->imcf->max_convs, &job->conv)
               - maxc;

    if (b->failed
        || ngx_http_im_store_conv(&job->recv_id, "badge", &args,
                                  ngx_http_im_store_job_badge, b)
           != NGX_OK)
    {
        ngx_http_im_buf_free(b);
        ngx_free(b);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* the badge joins the fields; then the recipient's push tokens */
static void
ngx_http_im_store_job_badge(void *data, ngx_http_im_store_conv_res_t *r)
{
    ngx_http_im_buf_t  *b = data;

    size_t       n;
    ngx_str_t    uid;
    const char  *av[2];
    size_t       avlen[2];
    u_char       key[NGX_HTTP_IM_STORE_KEY_LEN];

    n = 5;
    ngx_http_im_buf_add(b, &n, sizeof(size_t));
    ngx_http_im_buf_add(b, "badge", 5);
    ngx_http_im_buf_add(b, &r->answer.len, sizeof(size_t));
    ngx_http_im_buf_add(b, r->answer.data, r->answer.len);

    ngx_memcpy(&uid.len, b->data, sizeof(size_t));
    uid.data = b->data + sizeof(size_t);

    if (r->err == 0 && r->answer.len == 2
        && ngx_strncmp(r->answer.data, "-1", 2) == 0)
    {
        /* the user's recvMsgOpt wants no offline push here */
        ngx_http_im_buf_free(b);
        ngx_free(b);
        return;
    }

    av[0] = "HGETALL";
    avlen[0] = 7;
    av[1] = (char *) key;
    avlen[1] = ngx_http_im_store_key(key, sizeof(key), "im:{u:%V}:push",
                                     &uid);

    if (r->err || b->failed
        || ngx_http_im_redis_command(ngx_http_im_store_job_tokens, b, 2, av,
                                     avlen)
           != NGX_OK)
    {
        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                      "im: an offline-push job for \"%V\" was dropped: "
                      "Redis failed", &uid);
        ngx_http_im_buf_free(b);
        ngx_free(b);
    }
}


/* the recipient's push tokens: the job goes out with them */
static void
ngx_http_im_store_job_tokens(redisReply *reply, void *data)
{
    ngx_http_im_buf_t  *b = data;

    u_char             *p;
    size_t              len[NGX_HTTP_IM_JOB_ARGS];
    ngx_uint_t          i, k, n;
    const char         *argv[NGX_HTTP_IM_JOB_ARGS];
    ngx_http_im_buf_t   tokens, platforms;

    ngx_http_im_buf_init(&tokens, 64 * 1024);
    ngx_http_im_buf_init(&platforms, 1024);
    ngx_http_im_buf_str(&tokens, "{");

    n = reply && reply->type == REDIS_REPLY_ARRAY ? reply->elements / 2 : 0;

    for (i = 0; i < n && i < 32; i++) {
        ngx_http_im_buf_str(&platforms, i ? "," : "");
        ngx_http_im_buf_add(&platforms, reply->element[2 * i]->str,
                            reply->element[2 * i]->len);
        ngx_http_im_buf_str(&tokens, i ? "," : "");
        ngx_http_im_buf_json_str(&tokens, reply->element[2 * i]->str,
                                 reply->element[2 * i]->len);
        ngx_http_im_buf_str(&tokens, ":");
        ngx_http_im_buf_json_str(&tokens, reply->element[2 * i + 1]->str,
                                 reply->element[2 * i + 1]->len);
    }

    ngx_http_im_buf_str(&tokens, "}");

    /* XADD im:push MAXLEN ~ <bound> * <fields> platforms .. tokens .. */
    argv[0] = "XADD";
    argv[1] = "im:push";
    argv[2] = "MAXLEN";
    argv[3] = "~";
    len[0] = 4;
    len[1] = 7;
    len[2] = 6;
    len[3] = 1;

    argv[5] = "*";
    len[5] = 1;
    p = b->data;

    /* the recipient (skipped), the bound, then (after the ID) the 24
     * field names and values, the badge's among them */
    for (i = 0; i < 26; i++) {
        k = i == 0 ? 0 : i == 1 ? 4 : i + 4;
        ngx_memcpy(&len[k], p, sizeof(size_t));
        argv[k] = (char *) p + sizeof(size_t);
        p += sizeof(size_t) + len[k];
    }

    argv[0] = "XADD";
    len[0] = 4;

    argv[30] = "platforms";
    len[30] = 9;
    argv[31] = (char *) platforms.data;
    len[31] = platforms.len;
    argv[32] = "tokens";
    len[32] = 6;
    argv[33] = (char *) tokens.data;
    len[33] = tokens.len;

    if (reply && !tokens.failed && !platforms.failed) {
        (void) ngx_http_im_redis_command(NULL, NULL, NGX_HTTP_IM_JOB_ARGS,
                                         argv, len);
    }

    ngx_http_im_buf_free(&tokens);
    ngx_http_im_buf_free(&platforms);
    ngx_http_im_buf_free(b);
    ngx_free(b);
}


/* ----------------------------------------------------------------------
 * pulls
 */


ngx_int_t
ngx_http_im_store_pull_range(ngx_str_t *conv, long long begin,
    long long end, long long num, size_t budget,
    ngx_http_im_store_msgs_pt done, void *data)
{
    ngx_http_im_store_op_t    *op;
    ngx_http_im_store_args_t   a;

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    op->known = 1;      /* a range: {max, isEnd, first, JSON...} */

    /* pull.lua: KEYS msgs, seq; ARGV begin, end, num, MongoDB, budget */
    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:msgs", conv);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:seq", conv);
    ngx_http_im_store_arg_int(&a, begin);
    ngx_http_im_store_arg_int(&a, end);
    ngx_http_im_store_arg_int(&a, num);
    ngx_http_im_store_arg(&a, ngx_http_im_mongo_enabled() ? "1" : "0", 1);
    ngx_http_im_store_arg_int(&a, (long long) budget);

    return ngx_http_im_store_run(NGX_HTTP_IM_LUA_PULL,
                                 ngx_http_im_store_msgs_reply, op, 2, &a);
}


/* pull_seqs.lua: KEYS msgs; ARGV budget, then the seqs */
ngx_int_t
ngx_http_im_store_pull_seqs(ngx_str_t *conv, long long *seqs,
    ngx_uint_t n, size_t budget, ngx_http_im_store_msgs_pt done,
    void *data)
{
    u_char                  *p, *nums;
    size_t                  *len;
    ngx_int_t                rc;
    ngx_uint_t               i;
    const char             **argv;
    ngx_http_im_store_op_t  *op;
    u_char                   key[NGX_HTTP_IM_STORE_KEY_LEN];

    argv = ngx_alloc((n + 2) * (sizeof(char *) + sizeof(size_t)
                                + NGX_INT64_LEN), ngx_cycle->log);
    if (argv == NULL) {
        return NGX_DECLINED;
    }

    len = (size_t *) (argv + n + 2);
    nums = (u_char *) (len + n + 2);

    argv[0] = (char *) key;
    len[0] = ngx_http_im_store_key(key, sizeof(key), "im:{c:%V}:msgs", conv);

    p = nums;
    argv[1] = (char *) p;
    len[1] = ngx_sprintf(p, "%uz", budget) - p;
    p += len[1];

    for (i = 0; i < n; i++) {
        argv[i + 2] = (char *) p;
        len[i + 2] = ngx_sprintf(p, "%L", seqs[i]) - p;
        p += len[i + 2];
    }

    rc = NGX_DECLINED;
    op = ngx_http_im_store_op(done, data);

    if (op) {
        rc = ngx_http_im_store_script(NGX_HTTP_IM_LUA_PULL_SEQS,
                                      ngx_http_im_store_msgs_reply, op, 1,
                                      n + 2, argv, len);
    }

    ngx_free(argv);

    return rc;
}


/* pull.lua's {max, isEnd, first seq, JSON...}, pull_seqs.lua's {JSON...} */
static void
ngx_http_im_store_msgs_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    size_t                      i, skip;
    ngx_http_im_store_msgs_t    r;
    ngx_http_im_store_msgs_pt   done;

    ngx_memzero(&r, sizeof(ngx_http_im_store_msgs_t));
    r.err = NGX_HTTP_IM_ERR_UNAVAILABLE;
    r.is_end = 1;
    done = (ngx_http_im_store_msgs_pt) op->handler;
    skip = op->known ? 3 : 0;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY
        || reply->elements < skip)
    {
        goto done;
    }

    if (op->known) {
        r.max = ngx_http_im_store_int(reply->element[0]);
        r.is_end = ngx_http_im_store_int(reply->element[1]) == 1;
        r.first = ngx_http_im_store_int(reply->element[2]);
    }

    r.n = reply->elements - skip;

    if (r.n) {
        r.items = ngx_alloc(r.n * sizeof(ngx_http_im_store_item_t),
                            ngx_cycle->log);
        if (r.items == NULL) {
            r.n = 0;
            goto done;
        }
    }

    for (i = 0; i < r.n; i++) {
        ngx_http_im_store_item(&r.items[i], reply->element[i + skip]);
    }

    r.err = 0;

done:

    done(op->data, &r);
    ngx_free(r.items);
    ngx_http_im_store_op_free(op);
}


/* a nil element is outside the hot window; an integer was left out */
static void
ngx_http_im_store_item(ngx_http_im_store_item_t *it, redisReply *e)
{
    it->json.len = 0;
    it->json.data = NULL;

    switch (e->type) {

    case REDIS_REPLY_STRING:
        it->state = NGX_HTTP_IM_ITEM_FOUND;
        it->json.data = (u_char *) e->str;
        it->json.len = e->len;
        break;

    case REDIS_REPLY_INTEGER:
        it->state = NGX_HTTP_IM_ITEM_SKIPPED;
        break;

    default:
        it->state = NGX_HTTP_IM_ITEM_MISSING;
    }
}


/* ----------------------------------------------------------------------
 * conversations of a user
 */


/* newest.lua: KEYS conversation index, read seqs, max seqs; ARGV max,
 * cluster */
ngx_int_t
ngx_http_im_store_newest(ngx_str_t *uid, ngx_uint_t max,
    ngx_http_im_store_convs_pt done, void *data)
{
    ngx_http_im_store_op_t    *op;
    ngx_http_im_store_args_t   a;

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:convs", uid);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:read", uid);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:max", uid);
    ngx_http_im_store_arg_int(&a, max);
    ngx_http_im_store_arg(&a, ngx_http_im_redis_cluster() ? "1" : "0", 1);

    return ngx_http_im_store_run(NGX_HTTP_IM_LUA_NEWEST,
                                 ngx_http_im_store_convs_reply, op, 3, &a);
}


/* conv_seq.lua: KEYS read seqs, conversation index, max seqs; ARGV
 * cluster, then the convs */
ngx_int_t
ngx_http_im_store_conv_seqs(ngx_str_t *uid, ngx_str_t *convs, ngx_uint_t n,
    ngx_http_im_store_convs_pt done, void *data)
{
    size_t                  *len;
    ngx_int_t                rc;
    ngx_uint_t               i;
    const char             **argv;
    ngx_http_im_store_op_t  *op;
    u_char                   keys[3][NGX_HTTP_IM_STORE_KEY_LEN];

    argv = ngx_alloc((n + 4) * (sizeof(char *) + sizeof(size_t)),
                     ngx_cycle->log);
    if (argv == NULL) {
        return NGX_DECLINED;
    }

    len = (size_t *) (argv + n + 4);

    argv[0] = (char *) keys[0];
    len[0] = ngx_http_im_store_key(keys[0], sizeof(keys[0]),
                                   "im:{u:%V}:read", uid);
    argv[1] = (char *) keys[1];
    len[1] = ngx_http_im_store_key(keys[1], sizeof(keys[1]),
                                   "im:{u:%V}:convs", uid);
    argv[2] = (char *) keys[2];
    len[2] = ngx_http_im_store_key(keys[2], sizeof(keys[2]),
                                   "im:{u:%V}:max", uid);
    argv[3] = ngx_http_im_redis_cluster() ? "1" : "0";
    len[3] = 1;

    for (i = 0; i < n; i++) {
        argv[i + 4] = (char *) convs[i].data;
        len[i + 4] = convs[i].len;
    }

    rc = NGX_DECLINED;
    op = ngx_http_im_store_op(done, data);

    if (op) {
        op->uids = convs;
        op->n = n;
        rc = ngx_http_im_store_script(NGX_HTTP_IM_LUA_CONV_SEQ,
                                      ngx_http_im_store_convs_reply, op, 3,
                                      n + 4, argv, len);
    }

    ngx_free(argv);

    return rc;
}


/*
 * newest.lua answers triples {conv, max, read}; conv_seq.lua triples
 * {max, read, time} in the order asked (op->uids holds the convs).
 */
static void
ngx_http_im_store_convs_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    ngx_uint_t                   i, n;
    redisReply                 **e;
    ngx_http_im_store_conv_t    *convs;
    ngx_http_im_store_convs_pt   done;

    done = (ngx_http_im_store_convs_pt) op->handler;
    convs = NULL;
    n = 0;

    if (reply && reply->type == REDIS_REPLY_ARRAY
        && (op->uids == NULL || reply->elements == 3 * op->n))
    {
        n = reply->elements / 3;
        convs = ngx_calloc((n ? n : 1) * sizeof(ngx_http_im_store_conv_t),
                           ngx_cycle->log);
    }

    if (convs == NULL) {
        done(op->data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL, 0);
        ngx_http_im_store_op_free(op);
        return;
    }

    for (i = 0; i < n; i++) {
        e = &reply->element[3 * i];

        if (op->uids) {
            convs[i].conv = op->uids[i];
            convs[i].max_seq = ngx_http_im_store_int(e[0]);
            convs[i].read_seq = ngx_http_im_store_int(e[1]);
            convs[i].time = ngx_http_im_store_int(e[2]);
            continue;
        }

        ngx_http_im_store_str(e[0], &convs[i].conv);
        convs[i].max_seq = ngx_http_im_store_int(e[1]);
        convs[i].read_seq = ngx_http_im_store_int(e[2]);
    }

    done(op->data, 0, convs, n);
    ngx_free(convs);
    ngx_http_im_store_op_free(op);
}


/* ----------------------------------------------------------------------
 * persistence queue
 */


#define NGX_HTTP_IM_PERSIST_GROUP  "persist"


/* persist_take.lua: KEYS the queue; ARGV group, consumer, count, claim
 * ms, tidy, cluster */
ngx_int_t
ngx_http_im_store_persist_take(ngx_uint_t queue, ngx_uint_t count,
    ngx_msec_t claim, ngx_uint_t tidy, ngx_http_im_store_entries_pt done,
    void *data)
{
    ngx_http_im_store_op_t    *op;
    ngx_http_im_store_args_t   a;

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_queue(&a, queue);
    ngx_http_im_store_arg(&a, NGX_HTTP_IM_PERSIST_GROUP,
                          sizeof(NGX_HTTP_IM_PERSIST_GROUP) - 1);
    ngx_http_im_store_arg(&a, ngx_http_im_worker->origin.data,
                          ngx_http_im_worker->origin.len);
    ngx_http_im_store_arg_int(&a, count);
    ngx_http_im_store_arg_int(&a, claim);
    ngx_http_im_store_arg(&a, tidy ? "1" : "0", 1);
    ngx_http_im_store_arg(&a, ngx_http_im_redis_cluster() ? "1" : "0", 1);

    return ngx_http_im_store_run(NGX_HTTP_IM_LUA_PERSIST_TAKE,
                                 ngx_http_im_store_taken, op, 1, &a);
}


/*
 * {id, conversation, seq, JSON, ...}.  In a cluster the JSON is read
 * next, from each message's slot, before the batch is handed on.
 */
static void
ngx_http_im_store_taken(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    ngx_http_im_store_entries_pt  done;

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 4
        && ngx_http_im_redis_cluster())
    {
        ngx_http_im_store_fetch(reply, op);
        return;
    }

    done = (ngx_http_im_store_entries_pt) op->handler;

    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
        done(op->data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL, 0);
        ngx_http_im_store_op_free(op);
        return;
    }

    ngx_http_im_store_entries(reply, NULL, op);
}


/* the messages of a cluster's batch, one HGET each */
static void
ngx_http_im_store_fetch(redisReply *reply, ngx_http_im_store_op_t *op)
{
    ngx_uint_t                  i, n;
    redisReply                **e;
    ngx_http_im_store_args_t    a;
    ngx_http_im_store_part_t   *parts;
    ngx_http_im_store_entries_pt  done;

    n = reply->elements / 4;
    op->hold = ngx_http_im_store_copy(reply);

    if (op->hold == NULL
        || ngx_http_im_store_gather(n, 0, ngx_http_im_store_fetched, op,
                                    &parts)
           != NGX_OK)
    {
        freeReplyObject(op->hold);
        done = (ngx_http_im_store_entries_pt) op->handler;
        done(op->data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL, 0);
        ngx_http_im_store_op_free(op);
        return;
    }

    for (i = 0; i < n; i++) {
        e = &reply->element[4 * i];

        ngx_http_im_store_args(&a);
        ngx_http_im_store_arg(&a, "HGET", 4);
        ngx_http_im_store_arg_msgs(&a, e[1]);
        ngx_http_im_store_arg(&a, e[2]->str, e[2]->len);

        ngx_http_im_store_part_queued(&parts[i],
            e[1]->type != REDIS_REPLY_STRING
            || e[2]->type != REDIS_REPLY_STRING || a.failed
            ? NGX_DECLINED
            : ngx_http_im_redis_command(ngx_http_im_store_part_reply,
                                        &parts[i], a.n, a.argv, a.len));
    }

    ngx_http_im_store_gathered(parts[0].g);
}


static void
ngx_http_im_store_fetched(redisReply *all, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    redisReply                    *take;
    ngx_http_im_store_entries_pt   done;

    take = op->hold;
    op->hold = NULL;

    if (all == NULL) {
        done = (ngx_http_im_store_entries_pt) op->handler;
        done(op->data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL, 0);
        ngx_http_im_store_op_free(op);

    } else {
        ngx_http_im_store_entries(take, all, op);
    }

    freeReplyObject(take);
}


/* hands the batch on: JSON from the take reply, or from json[] */
static void
ngx_http_im_store_entries(redisReply *reply, redisReply *json,
    ngx_http_im_store_op_t *op)
{
    ngx_uint_t                     i, n, k;
    redisReply                   **e;
    ngx_http_im_store_entry_t     *entries;
    ngx_http_im_store_entries_pt   done;

    done = (ngx_http_im_store_entries_pt) op->handler;
    n = reply->elements / 4;
    k = 0;

    entries = ngx_calloc((n ? n : 1) * sizeof(ngx_http_im_store_entry_t),
                         ngx_cycle->log);
    if (entries == NULL) {
        done(op->data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL, 0);
        ngx_http_im_store_op_free(op);
        return;
    }

    for (i = 0; i < n; i++) {
        e = &reply->element[4 * i];

        if (e[0]->type != REDIS_REPLY_STRING
            || e[1]->type != REDIS_REPLY_STRING
            || e[2]->type != REDIS_REPLY_STRING
            || e[3]->type != REDIS_REPLY_STRING)
        {
            continue;
        }

        ngx_http_im_store_str(e[0], &entries[k].id);
        ngx_http_im_store_str(e[1], &entries[k].conv);
        entries[k].seq = ngx_http_im_store_int(e[2]);
        /* a nil JSON: the message left Redis; acknowledged only */
        ngx_http_im_store_str(json ? json->element[i] : e[3],
                              &entries[k].json);
        k++;
    }

    done(op->data, 0, entries, k);
    ngx_free(entries);
    ngx_http_im_store_op_free(op);
}


/* "im:{c:<conv>}:msgs" of a reply's conversation */
static void
ngx_http_im_store_arg_msgs(ngx_http_im_store_args_t *a, redisReply *conv)
{
    ngx_str_t  c;

    c.data = (u_char *) conv->str;
    c.len = conv->type == REDIS_REPLY_STRING ? conv->len : 0;

    ngx_http_im_store_arg_key(a, "im:{c:%V}:msgs", &c);
}


/* persist_done.lua: KEYS the queue; ARGV group, hot window (-1 in a
 * cluster: persist_trim.lua per message there), then triples: entry ID,
 * conversation ("" when refused), seq */
ngx_int_t
ngx_http_im_store_persist_done(ngx_uint_t queue,
    ngx_http_im_store_entry_t *e, ngx_uint_t n,
    ngx_http_im_store_done_pt done, void *data)
{
    u_char                  *nums, *p;
    size_t                  *len;
    ngx_int_t                rc;
    ngx_uint_t               i, argc;
    const char             **argv;
    ngx_http_im_store_op_t  *op;
    ngx_http_im_store_args_t q;

    argc = 3 + 3 * n;
    argv = ngx_alloc(argc * (sizeof(char *) + sizeof(size_t))
                     + (n + 1) * NGX_INT64_LEN, ngx_cycle->log);
    if (argv == NULL) {
        return NGX_DECLINED;
    }

    len = (size_t *) (argv + argc);
    nums = (u_char *) (len + argc);

    ngx_http_im_store_args(&q);
    ngx_http_im_store_arg_queue(&q, queue);

    argv[0] = q.argv[0];
    len[0] = q.len[0];
    argv[1] = NGX_HTTP_IM_PERSIST_GROUP;
    len[1] = sizeof(NGX_HTTP_IM_PERSIST_GROUP) - 1;
    argv[2] = (char *) nums;
    len[2] = ngx_sprintf(nums, "%i", ngx_http_im_redis_cluster()
                                     ? (ngx_int_t) -1
                                     : (ngx_int_t)
                                       ngx_http_im_worker->imcf->hot_window)
             - nums;
    p = nums + NGX_INT64_LEN;

    for (i = 0; i < n; i++) {
        argv[3 + 3 * i] = (char *) e[i].id.data;
        len[3 + 3 * i] = e[i].id.len;
        /* a refused message is acknowledged but kept in Redis for good */
        argv[4 + 3 * i] = (char *) e[i].conv.data;
        len[4 + 3 * i] = e[i].failed ? 0 : e[i].conv.len;
        argv[5 + 3 * i] = (char *) p;
        len[5 + 3 * i] = ngx_sprintf(p, "%L", e[i].seq) - p;
        p += NGX_INT64_LEN;

        if (ngx_http_im_redis_cluster() && !e[i].failed) {
            ngx_http_im_store_trim(&e[i]);
        }
    }

    rc = NGX_DECLINED;
    op = ngx_http_im_store_op(done, data);

    if (op) {
        rc = ngx_http_im_store_script(NGX_HTTP_IM_LUA_PERSIST_DONE,
                                      ngx_http_im_store_seeded, op, 1,
                                      (int) argc, argv, len);
    }

    ngx_free(argv);

    return rc;
}


/* persist_trim.lua: KEYS seq, msgs, done; ARGV seq, hot window.  Best
 * effort: a message it misses stays in Redis, that is all. */
static void
ngx_http_im_store_trim(ngx_http_im_store_entry_t *e)
{
    ngx_http_im_store_args_t  a;

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:seq", &e->conv);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:msgs", &e->conv);
    ngx_http_im_store_arg_key(&a, "im:{c:%V}:done", &e->conv);
    ngx_http_im_store_arg_int(&a, e->seq);
    ngx_http_im_store_arg_int(&a, ngx_http_im_worker->imcf->hot_window);

    (void) ngx_http_im_store_run(NGX_HTTP_IM_LUA_PERSIST_TRIM, NULL, NULL,
                                 3, &a);
}
