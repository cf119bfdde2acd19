
/*
 * ngx_im: the store layer's common part, users, tokens, presence and
 * routing (see ngx_http_im_store.h).  Messages are in
 * ngx_http_im_store_msg.c.
 *
 * Key and channel names (docs/architecture.md lists them all):
 *   im:{u:<uid>}:tok      token registry    im:{u:<uid>}:profile  profile
 *   im:{u:<uid>}:online   presence          im:{u:<uid>}:push     tokens
 *   im:w:<...>            a worker's liveness
 *   im:u:<uid>            a user's deliveries (im:{u:<uid>}:ch, sharded,
 *                         in a Redis Cluster)
 *   im:p:<uid>            a user's presence changes (im:{u:<uid>}:p)
 *
 * Every operation holds a small "op" from a per-worker free list: the
 * caller's callback and data, and what the reply parser needs.
 *
 * In a Redis Cluster every script touches the keys of one slot: a script
 * over many users' keys runs once per user, and the replies are gathered
 * into the array the single script would have answered.
 */


#include "ngx_http_im_store.h"
#include "ngx_http_im_store_int.h"


#define NGX_HTTP_IM_STORE_FREE_MAX  4096
#define NGX_HTTP_IM_CHANNEL         "im:u:"
#define NGX_HTTP_IM_CHANNEL_SHARD   "im:{u:"
#define NGX_HTTP_IM_CHANNEL_TAIL    "}:ch"
#define NGX_HTTP_IM_PRESENCE_CHANNEL        "im:p:"
#define NGX_HTTP_IM_PRESENCE_CHANNEL_SHARD  "im:{u:"
#define NGX_HTTP_IM_PRESENCE_CHANNEL_TAIL   "}:p"
#define NGX_HTTP_IM_GROUP_CHANNEL        "im:g:"
#define NGX_HTTP_IM_GROUP_CHANNEL_SHARD  "im:{c:sg_"
#define NGX_HTTP_IM_GROUP_CHANNEL_TAIL   "}:g"




static void ngx_http_im_store_message(ngx_str_t *channel, u_char *data,
    size_t len);
static void ngx_http_im_store_subscribed(ngx_str_t *channel, ngx_int_t ok);
static void ngx_http_im_store_up(ngx_uint_t subscriber);
static ngx_int_t ngx_http_im_store_channel_uid(ngx_str_t *channel,
    ngx_str_t *uid);
static ngx_int_t ngx_http_im_store_channel_pid(ngx_str_t *channel,
    ngx_str_t *uid);
static size_t ngx_http_im_store_presence_channel(u_char *buf,
    ngx_str_t *uid);
static ngx_int_t ngx_http_im_store_sub(ngx_str_t *uid, ngx_uint_t on);
static void ngx_http_im_store_code_reply(redisReply *reply, void *data);
static void ngx_http_im_store_done_reply(redisReply *reply, void *data);
static void ngx_http_im_store_info_reply(redisReply *reply, void *data);
static void ngx_http_im_store_online_reply(redisReply *reply, void *data);
static void ngx_http_im_store_devices_reply(redisReply *reply, void *data);
static size_t ngx_http_im_store_presence_field(u_char *buf,
    ngx_int_t platform, uint64_t sid);
static size_t ngx_http_im_store_presence_value(u_char *buf,
    ngx_str_t *token, ngx_uint_t background);
static void ngx_http_im_store_register_reply(redisReply *reply,
    void *data);
static ngx_int_t ngx_http_im_store_register_each(const char **argv,
    size_t *len, ngx_uint_t n, ngx_http_im_store_op_t *op);
static ngx_int_t ngx_http_im_store_users(ngx_uint_t script,
    const char *fmt, ngx_str_t *uids, ngx_uint_t n,
    ngx_http_im_redis_pt handler, void *done, void *data);

static void ngx_http_im_store_registered_all(redisReply *reply,
    void *data);
static void ngx_http_im_store_register_checked(redisReply *reply,
    void *data);


static ngx_http_im_store_routes_t  *ngx_http_im_store_up_routes;
static ngx_http_im_store_op_t      *ngx_http_im_store_free;
static ngx_uint_t                   ngx_http_im_store_nfree;


/* ----------------------------------------------------------------------
 * ops
 */


ngx_http_im_store_op_t *
ngx_http_im_store_op(void *handler, void *data)
{
    ngx_http_im_store_op_t  *op;

    op = ngx_http_im_store_free;

    if (op) {
        ngx_http_im_store_free = op->next;
        ngx_http_im_store_nfree--;

    } else {
        op = ngx_alloc(sizeof(ngx_http_im_store_op_t), ngx_cycle->log);
        if (op == NULL) {
            return NULL;
        }
    }

    ngx_memzero(op, sizeof(ngx_http_im_store_op_t));
    op->handler = handler;
    op->data = data;

    return op;
}


void
ngx_http_im_store_op_free(ngx_http_im_store_op_t *op)
{
    if (ngx_http_im_store_nfree >= NGX_HTTP_IM_STORE_FREE_MAX) {
        ngx_free(op);
        return;
    }

    op->next = ngx_http_im_store_free;
    ngx_http_im_store_free = op;
    ngx_http_im_store_nfree++;
}


/* queues a script for op; frees op when it cannot */
ngx_int_t
ngx_http_im_store_script(ngx_uint_t script, ngx_http_im_redis_pt handler,
    ngx_http_im_store_op_t *op, int nkeys, int argc, const char **argv,
    const size_t *len)
{
    if (ngx_http_im_redis_script(script, handler, op, nkeys, argc, argv,
                                 len)
        != NGX_OK)
    {
        ngx_http_im_store_op_free(op);
        return NGX_DECLINED;
    }

    return NGX_OK;
}


/* like ngx_http_im_store_script(), for a plain command */
ngx_int_t
ngx_http_im_store_command(ngx_http_im_redis_pt handler,
    ngx_http_im_store_op_t *op, int argc, const char **argv,
    const size_t *len)
{
    if (ngx_http_im_redis_command(handler, op, argc, argv, len) != NGX_OK) {
        if (op) {
            ngx_http_im_store_op_free(op);
        }
        return NGX_DECLINED;
    }

    return NGX_OK;
}


void
ngx_http_im_store_args(ngx_http_im_store_args_t *a)
{
    a->n = 0;
    a->failed = 0;
    a->pos = a->room;
}


void
ngx_http_im_store_arg(ngx_http_im_store_args_t *a, const void *data,
    size_t len)
{
    if (a->n == NGX_HTTP_IM_STORE_ARGS) {
        a->failed = 1;
        return;
    }

    a->argv[a->n] = data ? data : "";
    a->len[a->n++] = len;
}


/* copies what was formatted at a->pos up to last into the argv */
static void
ngx_http_im_store_arg_room(ngx_http_im_store_args_t *a, u_char *last)
{
    if (last == a->room + NGX_HTTP_IM_STORE_ROOM) {
        /* ngx_snprintf() stopped at the end: it may have cut */
        a->failed = 1;
    }

    ngx_http_im_store_arg(a, a->pos, last - a->pos);
    a->pos = last;
}


void
ngx_http_im_store_arg_key(ngx_http_im_store_args_t *a, const char *fmt,
    ngx_str_t *v)
{
    ngx_http_im_store_arg_room(a, ngx_snprintf(a->pos,
                                   a->room + NGX_HTTP_IM_STORE_ROOM - a->pos,
                                   fmt, v));
}


void
ngx_http_im_store_arg_int(ngx_http_im_store_args_t *a, long long v)
{
    ngx_http_im_store_arg_room(a, ngx_snprintf(a->pos,
                                   a->room + NGX_HTTP_IM_STORE_ROOM - a->pos,
                                   "%L", v));
}


void
ngx_http_im_store_arg_channel(ngx_http_im_store_args_t *a, ngx_str_t *uid)
{
    if ((size_t) (a->room + NGX_HTTP_IM_STORE_ROOM - a->pos)
        <= NGX_HTTP_IM_STORE_CHANNEL_LEN)
    {
        a->failed = 1;
        return;
    }

    ngx_http_im_store_arg_room(a, a->pos
                                  + ngx_http_im_store_channel(a->pos, uid));
}


void
ngx_http_im_store_script_res(redisReply *reply, ngx_int_t err,
    ngx_uint_t extra, ngx_http_im_store_conv_res_t *r)
{
    ngx_memzero(r, sizeof(ngx_http_im_store_conv_res_t));
    r->err = err;

    if (reply && err && reply->elements == 3) {
        ngx_http_im_store_str(reply->element[2], &r->msg);

    } else if (reply && err == 0 && reply->elements > extra) {
        ngx_http_im_store_str(reply->element[1], &r->answer);
        ngx_http_im_store_str(reply->element[extra], &r->extra);
    }
}


/* runs a script on the arguments built; frees op when it cannot */
ngx_int_t
ngx_http_im_store_run(ngx_uint_t script, ngx_http_im_redis_pt handler,
    ngx_http_im_store_op_t *op, int nkeys, ngx_http_im_store_args_t *a)
{
    if (a->failed) {
        if (op) {
            ngx_http_im_store_op_free(op);
        }
        return NGX_DECLINED;
    }

    if (op == NULL) {
        return ngx_http_im_redis_script(script, NULL, NULL, nkeys, a->n,
                                        a->argv, a->len);
    }

    return ngx_http_im_store_script(script, handler, op, nkeys, a->n,
                                    a->argv, a->len);
}


/* runs a script for data that is not an op (a step of a longer call) */
ngx_int_t
ngx_http_im_store_call(ngx_uint_t script, ngx_http_im_redis_pt handler,
    void *data, int nkeys, ngx_http_im_store_args_t *a)
{
    if (a->failed) {
        return NGX_DECLINED;
    }

    return ngx_http_im_redis_script(script, handler, data, nkeys, a->n,
                                    a->argv, a->len);
}


/* sends the command built (its name is the first argument) */
ngx_int_t
ngx_http_im_store_send(ngx_http_im_redis_pt handler,
    ngx_http_im_store_op_t *op, ngx_http_im_store_args_t *a)
{
    if (a->failed) {
        if (op) {
            ngx_http_im_store_op_free(op);
        }
        return NGX_DECLINED;
    }

    return ngx_http_im_store_command(op ? handler : NULL, op, a->n, a->argv,
                                     a->len);
}


/* a key from a format with one %V, never longer than the buffer */
size_t
ngx_http_im_store_key(u_char *buf, size_t size, const char *fmt,
    ngx_str_t *a)
{
    return ngx_snprintf(buf, size, fmt, a) - buf;
}


/* ----------------------------------------------------------------------
 * life cycle and routing
 */


ngx_int_t
ngx_http_im_store_init(ngx_cycle_t *cycle,
    ngx_http_im_store_routes_t *routes)
{
    static ngx_http_im_redis_handlers_t  handlers = {
        ngx_http_im_store_message,
        ngx_http_im_store_subscribed,
        ngx_http_im_store_up
    };

    ngx_http_im_store_up_routes = routes;

    return ngx_http_im_redis_init(cycle, &handlers);
}


void
ngx_http_im_store_exit(void)
{
    ngx_http_im_store_op_t  *op;

    ngx_http_im_redis_exit();

    while (ngx_http_im_store_free) {
        op = ngx_http_im_store_free;
        ngx_http_im_store_free = op->next;
        ngx_free(op);
    }

    ngx_http_im_store_nfree = 0;
}


ngx_int_t
ngx_http_im_store_ready(void)
{
    return ngx_http_im_redis_ready();
}


ngx_int_t
ngx_http_im_store_routing_ready(void)
{
    return ngx_http_im_redis_sub_ready();
}


static void
ngx_http_im_store_message(ngx_str_t *channel, u_char *data, size_t len)
{
    ngx_str_t  uid;

    if (ngx_http_im_store_channel_gid(channel, &uid) == NGX_OK) {
        ngx_http_im_store_up_routes->group_delivery(&uid, data, len);

    } else if (ngx_http_im_store_channel_pid(channel, &uid) == NGX_OK) {
        ngx_http_im_store_up_routes->presence(&uid, data, len);

    } else if (ngx_http_im_store_channel_uid(channel, &uid) == NGX_OK) {
        ngx_http_im_store_up_routes->delivery(&uid, data, len);
    }

    /* messages on the worker channel carry nothing yet */
}


static void
ngx_http_im_store_subscribed(ngx_str_t *channel, ngx_int_t ok)
{
    ngx_str_t  uid;

    if (ngx_http_im_store_channel_gid(channel, &uid) == NGX_OK) {
        ngx_http_im_store_up_routes->group_subscribed(&uid, ok);

    } else if (ngx_http_im_store_channel_pid(channel, &uid) == NGX_OK) {
        ngx_http_im_store_up_routes->presence_subscribed(&uid, ok);

    } else if (ngx_http_im_store_channel_uid(channel, &uid) == NGX_OK) {
        ngx_http_im_store_up_routes->subscribed(&uid, ok);
    }
}


static void
ngx_http_im_store_up(ngx_uint_t subscriber)
{
    if (subscriber) {
        ngx_http_im_store_up_routes->resubscribe();
        return;
    }

    ngx_http_im_store_worker_alive();
}


/*
 * The ID in a channel's name: "<plain><id>", or "<shard><id><tail>" for
 * a sharded one.  NGX_DECLINED: neither.
 */
static ngx_int_t
ngx_http_im_store_channel_id(ngx_str_t *channel, const char *plain,
    const char *shard, const char *tail, ngx_str_t *id)
{
    size_t  n, t;

    n = ngx_strlen(plain);

    if (channel->len > n && ngx_strncmp(channel->data, plain, n) == 0) {
        id->data = channel->data + n;
        id->len = channel->len - n;
        return NGX_OK;
    }

    n = ngx_strlen(shard);
    t = ngx_strlen(tail);

    if (channel->len > n + t
        && ngx_strncmp(channel->data, shard, n) == 0
        && ngx_strncmp(channel->data + channel->len - t, tail, t) == 0)
    {
        id->data = channel->data + n;
        id->len = channel->len - n - t;
        return NGX_OK;
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_im_store_channel_uid(ngx_str_t *channel, ngx_str_t *uid)
{
    return ngx_http_im_store_channel_id(channel, NGX_HTTP_IM_CHANNEL,
                                        NGX_HTTP_IM_CHANNEL_SHARD,
                                        NGX_HTTP_IM_CHANNEL_TAIL, uid);
}


static ngx_int_t
ngx_http_im_store_channel_pid(ngx_str_t *channel, ngx_str_t *uid)
{
    return ngx_http_im_store_channel_id(channel,
                                        NGX_HTTP_IM_PRESENCE_CHANNEL,
                                        NGX_HTTP_IM_PRESENCE_CHANNEL_SHARD,
                                        NGX_HTTP_IM_PRESENCE_CHANNEL_TAIL,
                                        uid);
}


/* a user's presence channel, in the slot of its keys as its channel */
static size_t
ngx_http_im_store_presence_channel(u_char *buf, ngx_str_t *uid)
{
    if (ngx_http_im_redis_cluster()) {
        return ngx_http_im_store_key(buf, NGX_HTTP_IM_STORE_CHANNEL_LEN,
                                     NGX_HTTP_IM_PRESENCE_CHANNEL_SHARD "%V"
                                     NGX_HTTP_IM_PRESENCE_CHANNEL_TAIL,
                                     uid);
    }

    return ngx_http_im_store_key(buf, NGX_HTTP_IM_STORE_CHANNEL_LEN,
                                 NGX_HTTP_IM_PRESENCE_CHANNEL "%V", uid);
}


ngx_int_t
ngx_http_im_store_watch(ngx_str_t *uid, ngx_uint_t on)
{
    ngx_str_t  channel;
    u_char     buf[NGX_HTTP_IM_STORE_CHANNEL_LEN];

    channel.data = buf;
    channel.len = ngx_http_im_store_presence_channel(buf, uid);

    return on ? ngx_http_im_redis_subscribe(&channel)
              : ngx_http_im_redis_unsubscribe(&channel);
}


ngx_int_t
ngx_http_im_store_watch_line(ngx_str_t *uid, ngx_uint_t on, ngx_str_t *ids,
    ngx_uint_t n, ngx_http_im_store_done_pt done, void *data)
{
    size_t                     cmd_len;
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    const char                *cmd;
    ngx_http_im_buf_t          line;
    ngx_http_im_store_op_t    *op;
    ngx_http_im_store_args_t   a;

    if (n == 0 || n > NGX_HTTP_IM_MAX_LIST) {
        return NGX_DECLINED;
    }

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    ngx_http_im_buf_init(&line, NGX_HTTP_IM_MAX_LIST
                                * (NGX_HTTP_IM_UID_MAX + 1) + 8);
    ngx_http_im_buf_str(&line, on ? "w +" : "w -");

    for (i = 0; i < n; i++) {
        if (i) {
            ngx_http_im_buf_str(&line, " ");
        }
        ngx_http_im_buf_add(&line, ids[i].data, ids[i].len);
    }

    cmd = ngx_http_im_store_publish_cmd(&cmd_len);

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg(&a, cmd, cmd_len);
    ngx_http_im_store_arg_channel(&a, uid);
    ngx_http_im_store_arg(&a, line.data, line.len);

    if (line.failed) {
        a.failed = 1;
    }

    /* hiredis formats the command now: the line may go right after */
    rc = ngx_http_im_store_send(ngx_http_im_store_done_reply, op, &a);
    ngx_http_im_buf_free(&line);

    return rc;
}


/*
 * A user's channel name into buf (NGX_HTTP_IM_STORE_CHANNEL_LEN).  In a
 * cluster it is sharded, in the slot of the user's keys, so that a
 * script of that slot may publish on it.
 */
size_t
ngx_http_im_store_channel(u_char *buf, ngx_str_t *uid)
{
    if (ngx_http_im_redis_cluster()) {
        return ngx_http_im_store_key(buf, NGX_HTTP_IM_STORE_CHANNEL_LEN,
                                     NGX_HTTP_IM_CHANNEL_SHARD "%V"
                                     NGX_HTTP_IM_CHANNEL_TAIL, uid);
    }

    return ngx_http_im_store_key(buf, NGX_HTTP_IM_STORE_CHANNEL_LEN,
                                 NGX_HTTP_IM_CHANNEL "%V", uid);
}


/* the group's channel: sharded in a cluster, in its conversation's slot */
size_t
ngx_http_im_store_group_channel(u_char *buf, ngx_str_t *gid)
{
    if (ngx_http_im_redis_cluster()) {
        return ngx_http_im_store_key(buf, NGX_HTTP_IM_STORE_CHANNEL_LEN,
                                     NGX_HTTP_IM_GROUP_CHANNEL_SHARD "%V"
                                     NGX_HTTP_IM_GROUP_CHANNEL_TAIL, gid);
    }

    return ngx_http_im_store_key(buf, NGX_HTTP_IM_STORE_CHANNEL_LEN,
                                 NGX_HTTP_IM_GROUP_CHANNEL "%V", gid);
}


/* NGX_OK and the group's ID when channel is a group's */
ngx_int_t
ngx_http_im_store_channel_gid(ngx_str_t *channel, ngx_str_t *gid)
{
    return ngx_http_im_store_channel_id(channel, NGX_HTTP_IM_GROUP_CHANNEL,
                                        NGX_HTTP_IM_GROUP_CHANNEL_SHARD,
                                        NGX_HTTP_IM_GROUP_CHANNEL_TAIL, gid);
}


/* PUBLISH, or SPUBLISH for a sharded channel */
const char *
ngx_http_im_store_publish_cmd(size_t *len)
{
    *len = ngx_http_im_redis_cluster() ? 8 : 7;
    return ngx_http_im_redis_cluster() ? "SPUBLISH" : "PUBLISH";
}


ngx_int_t
ngx_http_im_store_subscribe(ngx_str_t *uid)
{
    return ngx_http_im_store_sub(uid, 1);
}


ngx_int_t
ngx_http_im_store_unsubscribe(ngx_str_t *uid)
{
    return ngx_http_im_store_sub(uid, 0);
}


static ngx_int_t
ngx_http_im_store_sub(ngx_str_t *uid, ngx_uint_t on)
{
    ngx_str_t  channel;
    u_char     buf[NGX_HTTP_IM_STORE_CHANNEL_LEN];

    channel.data = buf;
    channel.len = ngx_http_im_store_channel(buf, uid);

    return on ? ngx_http_im_redis_subscribe(&channel)
              : ngx_http_im_redis_unsubscribe(&channel);
}


/* keeps this worker's liveness key, which presence entries rely on */
void
ngx_http_im_store_worker_alive(void)
{
    const char  *argv[5];
    size_t       len[5];

    argv[0] = "SET";
    len[0] = 3;
    argv[1] = (char *) ngx_http_im_worker->origin.data;
    len[1] = ngx_http_im_worker->origin.len;
    argv[2] = "1";
    len[2] = 1;
    argv[3] = "EX";
    len[3] = 2;
    argv[4] = "30";
    len[4] = 2;

    (void) ngx_http_im_redis_command(NULL, NULL, 5, argv, len);
}


/* this worker's presence entries die with it */
void
ngx_http_im_store_worker_gone(void)
{
    size_t       len[2];
    const char  *argv[2];

    argv[0] = "DEL";
    len[0] = 3;
    argv[1] = (char *) ngx_http_im_worker->origin.data;
    len[1] = ngx_http_im_worker->origin.len;

    (void) ngx_http_im_redis_command(NULL, NULL, 2, argv, len);
}


/*
 * Deliveries are "m <origin> <session id> <conversation>\n<MsgData>"
 * (written by send.lua and ngx_http_im_store_msg_online()),
 * "k <platform>" (a kick), "g <line>" (groups) and "l <seats>" (a login
 * that took seats, written by login.lua; ngx_http_im_store_seat()).
 */
ngx_int_t
ngx_http_im_store_delivery_parse(u_char *data, size_t len,
    ngx_http_im_delivery_t *d)
{
    u_char      *p, *last, *f[4];
    ngx_uint_t   n;

    ngx_memzero(d, sizeof(ngx_http_im_delivery_t));

    if (len >= 3 && data[0] == 'g' && data[1] == ' ') {
        d->kind = NGX_HTTP_IM_DELIVERY_GROUP;
        d->json.data = data + 2;
        d->json.len = len - 2;
        return NGX_OK;
    }

    if (len >= 4 && data[0] == 'w' && data[1] == ' ') {
        d->kind = NGX_HTTP_IM_DELIVERY_WATCH;
        d->json.data = data + 2;
        d->json.len = len - 2;
        return NGX_OK;
    }

    if (len >= 3 && data[0] == 'l' && data[1] == ' ') {
        d->kind = NGX_HTTP_IM_DELIVERY_LOGIN;
        d->json.data = data + 2;
        d->json.len = len - 2;
        return NGX_OK;
    }

    if (len >= 2 && data[0] == 'k' && data[1] == ' ') {
        d->kind = NGX_HTTP_IM_DELIVERY_KICK;
        d->platform = ngx_atoi(data + 2, len - 2);
        return d->platform == NGX_ERROR ? NGX_ERROR : NGX_OK;
    }

    last = data + len;
    p = data;

    for (n = 0; n < 4 && p < last; n++) {
        f[n] = p;
        while (p < last && *p != ' ' && *p != '\n') {
            p++;
        }
        if (p == last || (n < 3 && *p != ' ') || (n == 3 && *p != '\n')) {
            break;
        }
        p++;
    }

    if (n != 4 || f[0][0] != 'm') {
        return NGX_ERROR;
    }

    d->kind = NGX_HTTP_IM_DELIVERY_MSG;
    d->self = (size_t) (f[2] - f[1] - 1) == ngx_http_im_worker->origin.len
              && ngx_strncmp(f[1], ngx_http_im_worker->origin.data,
                             ngx_http_im_worker->origin.len) == 0;
    d->sid = (uint64_t) ngx_atoof(f[2], f[3] - f[2] - 1);
    d->conv.data = f[3];
    d->conv.len = p - 1 - f[3];
    d->json.data = p;
    d->json.len = last - p;

    return NGX_OK;
}


/*
 * A login delivery's list is lines "<what><platform>:<worker>:<sid>",
 * what being one of NGX_HTTP_IM_SEAT_*; the worker is a session's origin.
 */
ngx_int_t
ngx_http_im_store_seat(ngx_str_t *list, ngx_http_im_seat_t *seat)
{
    u_char  *p, *end, *colon, *last;
    off_t    sid;

    if (list->len == 0) {
        return NGX_DONE;
    }

    end = ngx_strlchr(list->data, list->data + list->len, '\n');
    if (end == NULL) {
        end = list->data + list->len;
    }

    p = list->data;
    last = end;

    list->len -= end - list->data;
    list->data = end;
    if (list->len) {
        list->data++;
        list->len--;
    }

    /* "<what><platform>:" then the origin, then ":<sid>" */
    colon = ngx_strlchr(p, last, ':');

    for (end = last; end > p && end[-1] != ':'; end--) {
        /* void */
    }

    if (last - p < 2 || colon == NULL || end <= colon + 1) {
        return NGX_ERROR;
    }

    sid = ngx_atoof(end, last - end);
    if (sid == NGX_ERROR) {
        return NGX_ERROR;
    }

    seat->what = p[0];
    seat->sid = (uint64_t) sid;
    seat->self = (size_t) (end - 1 - (colon + 1))
                 == ngx_http_im_worker->origin.len
                 && ngx_strncmp(colon + 1, ngx_http_im_worker->origin.data,
                                ngx_http_im_worker->origin.len) == 0;

    return NGX_OK;
}


/* ----------------------------------------------------------------------
 * tokens
 */


ngx_int_t
ngx_http_im_store_token_save(ngx_str_t *uid, ngx_str_t *token,
    ngx_int_t platform, time_t now, time_t expire, ngx_uint_t registered,
    ngx_http_im_store_done_pt done, void *data)
{
    ngx_http_im_store_op_t    *op;
    ngx_http_im_store_args_t   a;

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    /* token.lua: KEYS registry, profile; ARGV token, expiry, platform,
     * now, must be registered */
    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:tok", uid);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:profile", uid);
    ngx_http_im_store_arg(&a, token->data, token->len);
    ngx_http_im_store_arg_int(&a, now + expire);
    ngx_http_im_store_arg_int(&a, platform);
    ngx_http_im_store_arg_int(&a, now);
    ngx_http_im_store_arg(&a, registered ? "1" : "0", 1);

    return ngx_http_im_store_run(NGX_HTTP_IM_LUA_TOKEN,
                                 ngx_http_im_store_code_reply, op, 2, &a);
}


ngx_int_t
ngx_http_im_store_token_check(ngx_str_t *uid, ngx_str_t *token,
    ngx_uint_t check_user, ngx_http_im_store_done_pt done, void *data)
{
    ngx_http_im_store_op_t    *op;
    ngx_http_im_store_args_t   a;

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    /* auth.lua: KEYS registry, profile; ARGV token, must be registered */
    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:tok", uid);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:profile", uid);
    ngx_http_im_store_arg(&a, token->data, token->len);
    ngx_http_im_store_arg(&a, check_user ? "1" : "0", 1);

    return ngx_http_im_store_run(NGX_HTTP_IM_LUA_AUTH,
                                 ngx_http_im_store_code_reply, op, 2, &a);
}


ngx_int_t
ngx_http_im_store_login(ngx_str_t *uid, ngx_str_t *token,
    ngx_int_t platform, uint64_t sid, u_char *seats, size_t nseats,
    ngx_http_im_store_done_pt done, void *data)
{
    ngx_http_im_store_op_t    *op;
    ngx_http_im_store_args_t   a;
    u_char                     field[NGX_MAXHOSTNAMELEN + 128];
    u_char                     value[NGX_INT64_LEN + 2
                                     + NGX_HTTP_IM_TOKEN_MAX_LEN];
    u_char                     pchannel[NGX_HTTP_IM_STORE_CHANNEL_LEN];

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    /* login.lua: KEYS registry, profile, presence; ARGV token, must be
     * registered, field, value, seats, cluster, channel, presence
     * channel */
    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:tok", uid);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:profile", uid);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:online", uid);
    ngx_http_im_store_arg(&a, token->data, token->len);
    ngx_http_im_store_arg(&a, "1", 1);
    ngx_http_im_store_arg(&a, field,
                          ngx_http_im_store_presence_field(field, platform,
                                                           sid));
    ngx_http_im_store_arg(&a, value,
                          ngx_http_im_store_presence_value(value, token, 0));
    ngx_http_im_store_arg(&a, seats, nseats);
    ngx_http_im_store_arg(&a, ngx_http_im_redis_cluster() ? "1" : "0", 1);
    ngx_http_im_store_arg_channel(&a, uid);
    ngx_http_im_store_arg(&a, pchannel,
                          ngx_http_im_store_presence_channel(pchannel, uid));

    return ngx_http_im_store_run(NGX_HTTP_IM_LUA_LOGIN,
                                 ngx_http_im_store_code_reply, op, 3, &a);
}


/*
 * The platform's tokens are marked kicked, then every host closes that
 * platform's sessions (a "k" delivery on the user's channel, queued right
 * behind, so a login that checks its token after the mark hears it).
 */
ngx_int_t
ngx_http_im_store_token_kick(ngx_str_t *uid, ngx_int_t platform,
    ngx_http_im_store_done_pt done, void *data)
{
    size_t                     n;
    const char                *cmd;
    ngx_http_im_store_op_t    *op;
    ngx_http_im_store_args_t   a;
    u_char                     kick[NGX_INT64_LEN + 2];

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    /* kick.lua: KEYS registry; ARGV platform */
    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:tok", uid);
    ngx_http_im_store_arg_int(&a, platform);

    if (ngx_http_im_store_run(NGX_HTTP_IM_LUA_KICK,
                              ngx_http_im_store_done_reply, op, 1, &a)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    cmd = ngx_http_im_store_publish_cmd(&n);

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg(&a, cmd, n);
    ngx_http_im_store_arg_channel(&a, uid);
    ngx_http_im_store_arg(&a, kick, ngx_sprintf(kick, "k %i", platform)
                                    - kick);

    (void) ngx_http_im_store_send(NULL, NULL, &a);

    return NGX_OK;
}


/* a script that answers 0 or an error code */
static void
ngx_http_im_store_code_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    ngx_int_t                   err;
    ngx_http_im_store_done_pt   done;

    err = NGX_HTTP_IM_ERR_UNAVAILABLE;

    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        err = (ngx_int_t) reply->integer;
    }

    done = (ngx_http_im_store_done_pt) op->handler;
    done(op->data, err);
    ngx_http_im_store_op_free(op);
}


/* a command whose reply only says "done" */
static void
ngx_http_im_store_done_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    ngx_http_im_store_done_pt  done;

    done = (ngx_http_im_store_done_pt) op->handler;

    if (done) {
        done(op->data, reply == NULL || reply->type == REDIS_REPLY_ERROR
                       ? NGX_HTTP_IM_ERR_UNAVAILABLE : 0);
    }

    ngx_http_im_store_op_free(op);
}


/* ----------------------------------------------------------------------
 * users
 */


ngx_int_t
ngx_http_im_store_users_register_redis(ngx_http_im_store_user_t *users,
    ngx_uint_t n, long long now_ms, ngx_http_im_store_done_pt done,
    void *data)
{
    u_char                  *p, *keys, *now;
    size_t                  *len;
    ngx_int_t                rc;
    ngx_uint_t               i, argc;
    const char             **argv;
    ngx_http_im_store_op_t  *op;

    /* register.lua: KEYS the profiles; ARGV nickname, faceURL, ex per
     * user, then the time */
    argc = 4 * n + 1;

    argv = ngx_alloc(argc * (sizeof(char *) + sizeof(size_t))
                     + n * NGX_HTTP_IM_STORE_KEY_LEN + NGX_INT64_LEN,
                     ngx_cycle->log);
    if (argv == NULL) {
        return NGX_DECLINED;
    }

    len = (size_t *) (argv + argc);
    keys = (u_char *) (len + argc);
    now = keys + n * NGX_HTTP_IM_STORE_KEY_LEN;

    for (i = 0; i < n; i++) {
        p = keys + i * NGX_HTTP_IM_STORE_KEY_LEN;
        argv[i] = (char *) p;
        len[i] = ngx_http_im_store_key(p, NGX_HTTP_IM_STORE_KEY_LEN,
                                       "im:{u:%V}:profile", &users[i].user_id);

        argv[n + 3 * i] = (char *) users[i].nickname.data;
        len[n + 3 * i] = users[i].nickname.len;
        argv[n + 3 * i + 1] = (char *) users[i].face_url.data;
        len[n + 3 * i + 1] = users[i].face_url.len;
        argv[n + 3 * i + 2] = (char *) users[i].ex.data;
        len[n + 3 * i + 2] = users[i].ex.len;
    }

    argv[argc - 1] = (char *) now;
    len[argc - 1] = ngx_sprintf(now, "%L", now_ms) - now;

    op = ngx_http_im_store_op(done, data);
    rc = NGX_DECLINED;

    if (op && !ngx_http_im_redis_cluster()) {
        rc = ngx_http_im_store_script(NGX_HTTP_IM_LUA_REGISTER,
                                      ngx_http_im_store_register_reply, op,
                                      n, argc, argv, len);

    } else if (op) {
        /* argv stays with op until the last step */
        return ngx_http_im_store_register_each(argv, len, n, op);
    }

    ngx_free(argv);

    return rc;
}


/*
 * A cluster registers each user apart (their keys are in different
 * slots): first every profile is looked for, and only when none exists
 * are they written, each by register.lua.  A duplicate still answers 1102
 * with nothing written; only two calls racing for the same new IDs can
 * each register a part (on one Redis the script is all or none).  argv
 * (and the keys after it) belongs to op from here on.
 */
static ngx_int_t
ngx_http_im_store_register_each(const char **argv, size_t *len,
    ngx_uint_t n, ngx_http_im_store_op_t *op)
{
    ngx_uint_t                 i;
    const char                *av[2];
    size_t                     avlen[2];
    ngx_http_im_store_part_t  *parts;

    op->hold = argv;
    op->n = n;

    if (ngx_http_im_store_gather(n, 0, ngx_http_im_store_register_checked,
                                 op, &parts)
        != NGX_OK)
    {
        ngx_free(argv);
        ngx_http_im_store_op_free(op);
        return NGX_DECLINED;
    }

    for (i = 0; i < n; i++) {
        av[0] = "EXISTS";
        avlen[0] = 6;
        av[1] = argv[i];
        avlen[1] = len[i];

        ngx_http_im_store_part_queued(&parts[i],
            ngx_http_im_redis_command(ngx_http_im_store_part_reply,
                                      &parts[i], 2, av, avlen));
    }

    ngx_http_im_store_gathered(parts[0].g);

    return NGX_OK;
}


/* the profiles were looked for: 1102 if one exists, else write them */
static void
ngx_http_im_store_register_checked(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    size_t                    *len;
    ngx_uint_t                 i, j, n;
    const char               **argv, *av[5];
    size_t                     avlen[5];
    ngx_http_im_store_part_t  *parts;

    for (i = 0; reply && i < reply->elements; i++) {
        if (reply->element[i]->type != REDIS_REPLY_INTEGER
            || reply->element[i]->integer)
        {
            break;
        }
    }

    if (reply == NULL || i < reply->elements) {
        ngx_http_im_store_registered_all(reply, op);
        return;
    }

    n = op->n;
    argv = op->hold;
    len = (size_t *) (argv + 4 * n + 1);

    if (ngx_http_im_store_gather(n, 0, ngx_http_im_store_registered_all,
                                 op, &parts)
        != NGX_OK)
    {
        ngx_http_im_store_registered_all(NULL, op);
        return;
    }

    for (i = 0; i < n; i++) {
        av[0] = argv[i];
        avlen[0] = len[i];

        for (j = 0; j < 3; j++) {
            av[j + 1] = argv[n + 3 * i + j];
            avlen[j + 1] = len[n + 3 * i + j];
        }

        av[4] = argv[4 * n];
        avlen[4] = len[4 * n];

        ngx_http_im_store_part_queued(&parts[i],
            ngx_http_im_redis_script(NGX_HTTP_IM_LUA_REGISTER,
                                     ngx_http_im_store_part_reply,
                                     &parts[i], 1, 5, av, avlen));
    }

    ngx_http_im_store_gathered(parts[0].g);
}


static void
ngx_http_im_store_registered_all(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    ngx_int_t                   err;
    ngx_uint_t                  i;
    ngx_http_im_store_done_pt   done;

    err = reply ? 0 : NGX_HTTP_IM_ERR_UNAVAILABLE;

    for (i = 0; reply && i < reply->elements; i++) {
        if (reply->element[i]->type != REDIS_REPLY_INTEGER) {
            err = NGX_HTTP_IM_ERR_UNAVAILABLE;
            break;
        }

        if (reply->element[i]->integer) {
            err = NGX_HTTP_IM_ERR_REGISTERED;
        }
    }

    ngx_free(op->hold);
    op->hold = NULL;

    done = (ngx_http_im_store_done_pt) op->handler;
    done(op->data, err);
    ngx_http_im_store_op_free(op);
}


/* register.lua answers 0, or the index of a user that exists */
static void
ngx_http_im_store_register_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    ngx_int_t                   err;
    ngx_http_im_store_done_pt   done;

    err = NGX_HTTP_IM_ERR_UNAVAILABLE;

    if (reply && reply->type == REDIS_REPLY_INTEGER) {
        err = reply->integer ? NGX_HTTP_IM_ERR_REGISTERED : 0;
    }

    done = (ngx_http_im_store_done_pt) op->handler;
    done(op->data, err);
    ngx_http_im_store_op_free(op);
}


ngx_int_t
ngx_http_im_store_users_profiles(ngx_str_t *uids, ngx_uint_t n,
    ngx_http_im_store_users_pt done, void *data)
{
    /* users_info.lua: KEYS the profiles */
    return ngx_http_im_store_users(NGX_HTTP_IM_LUA_USERS_INFO,
                                   "im:{u:%V}:profile", uids, n,
                                   ngx_http_im_store_info_reply, done, data);
}


ngx_int_t
ngx_http_im_store_users_online(ngx_str_t *uids, ngx_uint_t n,
    ngx_http_im_store_online_pt done, void *data)
{
    /* online.lua: KEYS the presence hashes; ARGV "1" in a cluster */
    return ngx_http_im_store_users(NGX_HTTP_IM_LUA_ONLINE,
                                   "im:{u:%V}:online", uids, n,
                                   ngx_http_im_store_online_reply, done,
                                   data);
}


ngx_int_t
ngx_http_im_store_users_devices(ngx_str_t *uids, ngx_uint_t n,
    ngx_http_im_store_devices_pt done, void *data)
{
    /* online_tokens.lua: KEYS the presence hashes; ARGV "1" in a
     * cluster */
    return ngx_http_im_store_users(NGX_HTTP_IM_LUA_ONLINE_TOKENS,
                                   "im:{u:%V}:online", uids, n,
                                   ngx_http_im_store_devices_reply, done,
                                   data);
}


/*
 * Runs script with one key per user, made from fmt, and one argument:
 * "1" in a cluster, where it runs once per user.  handler parses the
 * reply for done(data, ...).
 */
static ngx_int_t
ngx_http_im_store_users(ngx_uint_t script, const char *fmt,
    ngx_str_t *uids, ngx_uint_t n, ngx_http_im_redis_pt handler,
    void *done, void *data)
{
    u_char                    *p, *keys;
    size_t                    *len;
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    const char               **argv;
    ngx_http_im_store_op_t    *op;
    ngx_http_im_store_part_t  *parts;

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    op->uids = uids;
    op->n = n;

    argv = ngx_alloc((n + 1) * (sizeof(char *) + sizeof(size_t)
                                + NGX_HTTP_IM_STORE_KEY_LEN),
                     ngx_cycle->log);
    if (argv == NULL) {
        ngx_http_im_store_op_free(op);
        return NGX_DECLINED;
    }

    len = (size_t *) (argv + n + 1);
    keys = (u_char *) (len + n + 1);

    for (i = 0; i < n; i++) {
        p = keys + i * NGX_HTTP_IM_STORE_KEY_LEN;
        argv[i] = (char *) p;
        len[i] = ngx_http_im_store_key(p, NGX_HTTP_IM_STORE_KEY_LEN, fmt,
                                       &uids[i]);
    }

    argv[n] = ngx_http_im_redis_cluster() ? "1" : "0";
    len[n] = 1;

    if (!ngx_http_im_redis_cluster()) {
        rc = ngx_http_im_store_script(script, handler, op, n, n + 1, argv,
                                      len);
        ngx_free(argv);
        return rc;
    }

    rc = ngx_http_im_store_gather(n, 1, handler, op, &parts);
    if (rc != NGX_OK) {
        ngx_http_im_store_op_free(op);
    }

    for (i = 0; rc == NGX_OK && i < n; i++) {
        const char  *av[2];
        size_t       avlen[2];

        av[0] = argv[i];
        avlen[0] = len[i];
        av[1] = "1";
        avlen[1] = 1;

        ngx_http_im_store_part_queued(&parts[i],
            ngx_http_im_redis_script(script, ngx_http_im_store_part_reply,
                                     &parts[i], 1, 2, av, avlen));
    }

    if (rc == NGX_OK) {
        ngx_http_im_store_gathered(parts[0].g);
    }

    ngx_free(argv);

    return rc;
}


/*
 * Room to gather n replies for handler(all, op).  The caller counts
 * g->pending per call queued, then calls ngx_http_im_store_gathered()
 * once, so the handler runs after the last reply (or at once, when none
 * was queued).
 */
ngx_int_t
ngx_http_im_store_gather(ngx_uint_t n, ngx_uint_t unwrap,
    ngx_http_im_redis_pt handler, ngx_http_im_store_op_t *op,
    ngx_http_im_store_part_t **parts)
{
    ngx_uint_t                   i;
    ngx_http_im_store_gather_t  *g;
    ngx_http_im_store_part_t    *p;

    g = ngx_calloc(sizeof(ngx_http_im_store_gather_t)
                   + n * sizeof(ngx_http_im_store_part_t), ngx_cycle->log);
    if (g == NULL) {
        return NGX_DECLINED;
    }

    /* freeReplyObject() frees it: malloc'ed like hiredis's own */
    g->all = calloc(1, sizeof(redisReply));
    if (g->all) {
        g->all->element = calloc(n ? n : 1, sizeof(redisReply *));
    }

    if (g->all == NULL || g->all->element == NULL) {
        free(g->all);
        ngx_free(g);
        return NGX_DECLINED;
    }

    g->all->type = REDIS_REPLY_ARRAY;
    g->all->elements = n;
    g->op = op;
    g->handler = handler;
    g->unwrap = unwrap;
    g->pending = 1;         /* the caller's, until it is done queueing */

    p = (ngx_http_im_store_part_t *) (g + 1);

    for (i = 0; i < n; i++) {
        p[i].g = g;
        p[i].i = i;
    }

    *parts = p;

    return NGX_OK;
}


void
ngx_http_im_store_part_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_part_t  *part = data;

    redisReply                  *r;
    ngx_http_im_store_gather_t  *g;

    g = part->g;
    r = reply;

    if (r && g->unwrap && r->type == REDIS_REPLY_ARRAY && r->elements == 1)
    {
        r = r->element[0];
    }

    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        g->failed = 1;

    } else {
        g->all->element[part->i] = ngx_http_im_store_copy(r);
        if (g->all->element[part->i] == NULL) {
            g->failed = 1;
        }
    }

    ngx_http_im_store_gathered(g);
}


/* a part's call was queued (one more reply to wait for), or failed */
void
ngx_http_im_store_part_queued(ngx_http_im_store_part_t *part,
    ngx_int_t rc)
{
    if (rc == NGX_OK) {
        part->g->pending++;

    } else {
        part->g->failed = 1;
    }
}


/* one reply less to wait for; the last one runs the handler */
void
ngx_http_im_store_gathered(ngx_http_im_store_gather_t *g)
{
    ngx_uint_t  i;

    if (--g->pending) {
        return;
    }

    for (i = 0; !g->failed && i < g->all->elements; i++) {
        if (g->all->element[i] == NULL) {
            g->failed = 1;
        }
    }

    g->handler(g->failed ? NULL : g->all, g->op);

    freeReplyObject(g->all);
    ngx_free(g);
}


/* a deep copy of a reply (strings, integers, arrays of them) */
redisReply *
ngx_http_im_store_copy(redisReply *r)
{
    size_t       i;
    redisReply  *c;

    c = calloc(1, sizeof(redisReply));
    if (c == NULL) {
        return NULL;
    }

    c->type = r->type;
    c->integer = r->integer;

    if (r->str) {
        c->str = malloc(r->len + 1);
        if (c->str == NULL) {
            freeReplyObject(c);
            return NULL;
        }

        ngx_memcpy(c->str, r->str, r->len);
        c->str[r->len] = '\0';
        c->len = r->len;
    }

    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) {
        return c;
    }

    c->element = calloc(r->elements, sizeof(redisReply *));
    if (c->element == NULL) {
        freeReplyObject(c);
        return NULL;
    }

    c->elements = r->elements;

    for (i = 0; i < r->elements; i++) {
        c->element[i] = ngx_http_im_store_copy(r->element[i]);
        if (c->element[i] == NULL) {
            freeReplyObject(c);
            return NULL;
        }
    }

    return c;
}


/* users_info.lua: per user {} or {nickname, faceURL, ex, createTime} */
static void
ngx_http_im_store_info_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    ngx_uint_t                   i;
    redisReply                  *u;
    ngx_http_im_store_user_t    *users;
    ngx_http_im_store_users_pt   done;

    done = (ngx_http_im_store_users_pt) op->handler;

    users = NULL;
    if (reply && reply->type == REDIS_REPLY_ARRAY
        && reply->elements == op->n)
    {
        users = ngx_calloc(op->n * sizeof(ngx_http_im_store_user_t),
                           ngx_cycle->log);
    }

    if (users == NULL) {
        done(op->data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL, 0);
        ngx_http_im_store_op_free(op);
        return;
    }

    for (i = 0; i < op->n; i++) {
        u = reply->element[i];
        users[i].user_id = op->uids[i];

        if (u->type == REDIS_REPLY_ARRAY && u->elements == 1) {
            /* {"load"}: never loaded into this Redis */
            users[i].load = 1;
            continue;
        }

        if (u->type != REDIS_REPLY_ARRAY || u->elements != 4) {
            continue;
        }

        users[i].found = 1;
        ngx_http_im_store_str(u->element[0], &users[i].nickname);
        ngx_http_im_store_str(u->element[1], &users[i].face_url);
        ngx_http_im_store_str(u->element[2], &users[i].ex);
        users[i].create_time = ngx_http_im_store_int(u->element[3]);
    }

    done(op->data, 0, users, op->n);
    ngx_free(users);
    ngx_http_im_store_op_free(op);
}


/* online.lua: per user an array of platform IDs */
static void
ngx_http_im_store_online_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    ngx_int_t                    *platforms;
    ngx_uint_t                    i, j, total;
    redisReply                   *u;
    ngx_http_im_store_online_t   *users;
    ngx_http_im_store_online_pt   done;

    done = (ngx_http_im_store_online_pt) op->handler;
    users = NULL;

    if (reply && reply->type == REDIS_REPLY_ARRAY
        && reply->elements == op->n)
    {
        total = 0;
        for (i = 0; i < op->n; i++) {
            u = reply->element[i];
            total += u->type == REDIS_REPLY_ARRAY ? u->elements : 0;
        }

        users = ngx_calloc(op->n * sizeof(ngx_http_im_store_online_t)
                           + total * sizeof(ngx_int_t), ngx_cycle->log);
    }

    if (users == NULL) {
        done(op->data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL, 0);
        ngx_http_im_store_op_free(op);
        return;
    }

    platforms = (ngx_int_t *) (users + op->n);

    for (i = 0; i < op->n; i++) {
        u = reply->element[i];
        users[i].user_id = op->uids[i];
        users[i].platforms = platforms;

        for (j = 0; u->type == REDIS_REPLY_ARRAY && j < u->elements; j++) {
            platforms[users[i].nplatforms++] =
                (ngx_int_t) ngx_http_im_store_int(u->element[j]);
        }

        platforms += users[i].nplatforms;
    }

    done(op->data, 0, users, op->n);
    ngx_free(users);
    ngx_http_im_store_op_free(op);
}


/* online_tokens.lua: per user a flat array platform, token, ... */
static void
ngx_http_im_store_devices_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    ngx_uint_t                     i, j, total;
    redisReply                    *u;
    ngx_http_im_store_device_t    *dev;
    ngx_http_im_store_devices_t   *users;
    ngx_http_im_store_devices_pt   done;

    done = (ngx_http_im_store_devices_pt) op->handler;
    users = NULL;

    if (reply && reply->type == REDIS_REPLY_ARRAY
        && reply->elements == op->n)
    {
        total = 0;
        for (i = 0; i < op->n; i++) {
            u = reply->element[i];
            total += u->type == REDIS_REPLY_ARRAY ? u->elements / 2 : 0;
        }

        users = ngx_calloc(op->n * sizeof(ngx_http_im_store_devices_t)
                           + total * sizeof(ngx_http_im_store_device_t),
                           ngx_cycle->log);
    }

    if (users == NULL) {
        done(op->data, NGX_HTTP_IM_ERR_UNAVAILABLE, NULL, 0);
        ngx_http_im_store_op_free(op);
        return;
    }

    dev = (ngx_http_im_store_device_t *) (users + op->n);

    for (i = 0; i < op->n; i++) {
        u = reply->element[i];
        users[i].user_id = op->uids[i];
        users[i].devices = dev;

        for (j = 0;
             u->type == REDIS_REPLY_ARRAY && j + 1 < u->elements;
             j += 2)
        {
            dev->platform = (ngx_int_t) ngx_http_im_store_int(u->element[j]);
            ngx_http_im_store_str(u->element[j + 1], &dev->token);
            dev++;
            users[i].ndevices++;
        }
    }

    done(op->data, 0, users, op->n);
    ngx_free(users);
    ngx_http_im_store_op_free(op);
}


ngx_int_t
ngx_http_im_store_push_token(ngx_str_t *uid, ngx_int_t platform,
    ngx_str_t *token, ngx_http_im_store_done_pt done, void *data)
{
    ngx_http_im_store_op_t    *op;
    ngx_http_im_store_args_t   a;

    op = ngx_http_im_store_op(done, data);
    if (op == NULL) {
        return NGX_DECLINED;
    }

    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg(&a, "HSET", 4);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:push", uid);
    ngx_http_im_store_arg_int(&a, platform);
    ngx_http_im_store_arg(&a, token->data, token->len);

    return ngx_http_im_store_send(ngx_http_im_store_done_reply, op, &a);
}


/*
 * The field names the worker, whose liveness key lets readers drop
 * entries of crashed workers; the value is "<time> <token>", the time
 * prefixed with "b" while the app is in the background (send.lua reads
 * that), the token for login.lua's kicks.  presence.lua publishes the
 * user's platforms on its presence channel when they change.
 */
ngx_int_t
ngx_http_im_store_presence(ngx_str_t *uid, ngx_int_t platform,
    uint64_t sid, ngx_str_t *token, ngx_uint_t on, ngx_uint_t background,
    ngx_http_im_store_done_pt done, void *data)
{
    ngx_http_im_store_op_t    *op;
    ngx_http_im_store_args_t   a;
    u_char                     pchannel[NGX_HTTP_IM_STORE_CHANNEL_LEN];
    u_char                     field[NGX_MAXHOSTNAMELEN + 128];
    u_char                     value[NGX_INT64_LEN + 2
                                     + NGX_HTTP_IM_TOKEN_MAX_LEN];

    op = NULL;

    if (done) {
        op = ngx_http_im_store_op(done, data);
        if (op == NULL) {
            return NGX_DECLINED;
        }
    }

    /* presence.lua: KEYS presence; ARGV record, field, value, presence
     * channel, cluster */
    ngx_http_im_store_args(&a);
    ngx_http_im_store_arg_key(&a, "im:{u:%V}:online", uid);
    ngx_http_im_store_arg(&a, on ? "1" : "0", 1);
    ngx_http_im_store_arg(&a, field,
                          ngx_http_im_store_presence_field(field, platform,
                                                           sid));
    ngx_http_im_store_arg(&a, value,
                          on ? ngx_http_im_store_presence_value(value, token,
                                                                background)
                             : 0);
    ngx_http_im_store_arg(&a, pchannel,
                          ngx_http_im_store_presence_channel(pchannel, uid));
    ngx_http_im_store_arg(&a, ngx_http_im_redis_cluster() ? "1" : "0", 1);

    return ngx_http_im_store_run(NGX_HTTP_IM_LUA_PRESENCE,
                                 ngx_http_im_store_done_reply, op, 1, &a);
}


/* "<platform>:<origin>:<sid>", into NGX_MAXHOSTNAMELEN + 128 bytes */
static size_t
ngx_http_im_store_presence_field(u_char *buf, ngx_int_t platform,
    uint64_t sid)
{
    return ngx_snprintf(buf, NGX_MAXHOSTNAMELEN + 128, "%i:%V:%uL",
                        platform, &ngx_http_im_worker->origin, sid)
           - buf;
}


/* "[b]<time> <token>", into NGX_INT64_LEN + 2 + the longest token */
static size_t
ngx_http_im_store_presence_value(u_char *buf, ngx_str_t *token,
    ngx_uint_t background)
{
    ngx_str_t  t;

    t = *token;
    t.len = ngx_min(t.len, NGX_HTTP_IM_TOKEN_MAX_LEN);

    return ngx_snprintf(buf, NGX_INT64_LEN + 2 + NGX_HTTP_IM_TOKEN_MAX_LEN,
                        background ? "b%T %V" : "%T %V", ngx_time(), &t)
           - buf;
}


/* ----------------------------------------------------------------------
 * reply helpers
 */


void
ngx_http_im_store_str(redisReply *e, ngx_str_t *s)
{
    if (e->type == REDIS_REPLY_STRING) {
        s->data = (u_char *) e->str;
        s->len = e->len;

    } else {
        s->data = (u_char *) "";
        s->len = 0;
    }
}


long long
ngx_http_im_store_int(redisReply *e)
{
    off_t  n;

    switch (e->type) {

    case REDIS_REPLY_INTEGER:
        return e->integer;

    case REDIS_REPLY_STRING:
        n = ngx_atoof((u_char *) e->str, e->len);
        return n == NGX_ERROR ? 0 : n;

    default:
        return 0;
    }
}
