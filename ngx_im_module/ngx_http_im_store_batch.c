
/*
 * ngx_im: the calls of one script made in one event-loop turn go to
 * Redis as one call of it (send.lua takes a list of messages).
 *
 * Redis spends a good part of a small script's cost on the call itself:
 * reading the request, finding the script, setting up Lua, writing the
 * reply, wrapping the effects for the AOF.  Under load many sends reach
 * a worker in one turn (several connections' frames in one epoll_wait);
 * they share one EVALSHA, and each gets its own reply in order, as if it
 * had been called alone.  A lone send waits for nothing: the batch goes
 * out in the same turn, from the posted-events queue.
 *
 * Each item's keys and arguments are copied in the protocol's own form
 * ("$<len>\r\n<data>\r\n") into two buffers, keys apart from arguments,
 * because the script's KEYS come before its ARGV.  A batch is bounded in
 * items (the script's own bound) and in bytes; a full one goes out at
 * once and the next item starts another.
 *
 * Only with one Redis: in a cluster the items' keys are in different
 * slots, and a send is three steps anyway (store_msg.c).
 */


#include "ngx_http_im_store_int.h"


static ngx_int_t ngx_http_im_store_batch_put(ngx_http_im_store_buf_t *b,
    const char *data, size_t len);
static void ngx_http_im_store_batch_post(ngx_event_t *ev);
static void ngx_http_im_store_batch_reply(redisReply *reply, void *data);
static void ngx_http_im_store_batch_answer(ngx_http_im_store_batch_t *b,
    ngx_http_im_store_op_t *op, redisReply *reply);


/*
 * Adds one call (argv: its keys, then its arguments) for op.  Returns
 * NGX_OK, after which b->handler is called once for op, never before this
 * returns (with its own reply, or NULL when the batch could not be sent);
 * or NGX_DECLINED, when op is freed and the handler is not called.
 */
ngx_int_t
ngx_http_im_store_batch_add(ngx_http_im_store_batch_t *b,
    ngx_http_im_store_op_t *op, const char **argv, const size_t *len)
{
    size_t      size;
    ngx_uint_t  i;

    size = 0;
    for (i = 0; i < b->nargs; i++) {
        size += len[i] + NGX_SIZE_T_LEN + 5;
    }

    if (b->n && b->keys.len + b->args.len + size > b->max_bytes) {
        ngx_http_im_store_batch_flush(b);
    }

    for (i = 0; i < b->nargs; i++) {
        if (ngx_http_im_store_batch_put(i < b->nkeys ? &b->keys : &b->args,
                                        argv[i], len[i])
            != NGX_OK)
        {
            /* the items before this one are whole: drop this one's part */
            b->keys.len = b->keys_mark;
            b->args.len = b->args_mark;
            ngx_http_im_store_op_free(op);
            return NGX_DECLINED;
        }
    }

    b->keys_mark = b->keys.len;
    b->args_mark = b->args.len;

    op->next = NULL;
    op->hold = b;
    if (b->n++ == 0) {
        b->first = op;
        ngx_http_im_store_batch_post(&b->event);

    } else {
        b->last->next = op;
    }

    b->last = op;

    if (b->n == b->max) {
        ngx_http_im_store_batch_flush(b);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_im_store_batch_put(ngx_http_im_store_buf_t *b, const char *data,
    size_t len)
{
    u_char  *p;
    size_t   need, size;

    need = b->len + len + NGX_SIZE_T_LEN + 5;

    if (need > b->size) {
        size = ngx_max(need, 2 * b->size);
        size = ngx_max(size, 4096);

        p = ngx_alloc(size, ngx_cycle->log);
        if (p == NULL) {
            return NGX_ERROR;
        }

        if (b->len) {
            ngx_memcpy(p, b->data, b->len);
        }

        if (b->data) {
            ngx_free(b->data);
        }

        b->data = p;
        b->size = size;
    }

    p = ngx_sprintf(b->data + b->len, "$%uz\r\n", len);
    p = ngx_cpymem(p, data, len);
    *p++ = '\r';
    *p++ = '\n';
    b->len = p - b->data;

    return NGX_OK;
}


/* the batch goes out at the end of this turn (posted events run last) */
static void
ngx_http_im_store_batch_post(ngx_event_t *ev)
{
    if (!ev->posted) {
        ngx_post_event(ev, &ngx_posted_events);
    }
}


void
ngx_http_im_store_batch_flush_handler(ngx_event_t *ev)
{
    ngx_http_im_store_batch_flush(ev->data);
}


void
ngx_http_im_store_batch_flush(ngx_http_im_store_batch_t *b)
{
    ngx_int_t                rc;
    ngx_str_t                keys, args;
    ngx_http_im_store_op_t  *first, *last;

    if (b->event.posted) {
        ngx_delete_posted_event(&b->event);
    }

    if (b->n == 0) {
        return;
    }

    keys.data = b->keys.data;
    keys.len = b->keys.len;
    args.data = b->args.data;
    args.len = b->args.len;

    rc = ngx_http_im_redis_script_raw(b->script,
                                      ngx_http_im_store_batch_reply,
                                      b->first, b->nkeys * b->n,
                                      b->nargs * b->n, &keys, &args);

    first = b->first;
    last = b->last;
    b->n = 0;
    b->first = NULL;
    b->last = NULL;
    b->keys.len = b->keys_mark = 0;
    b->args.len = b->args_mark = 0;

    /* what one busy turn grew is given back */
    if (b->keys.size > b->max_bytes || b->args.size > b->max_bytes) {
        ngx_free(b->keys.data);
        ngx_free(b->args.data);
        ngx_memzero(&b->keys, sizeof(ngx_http_im_store_buf_t));
        ngx_memzero(&b->args, sizeof(ngx_http_im_store_buf_t));
    }

    if (rc != NGX_OK) {
        /*
         * Answered later in this turn, not here: a full batch is flushed
         * inside ngx_http_im_store_batch_add(), and its caller (a REST
         * call looping over recipients) must not see its sends answered
         * before the add returns.
         */
        last->next = b->failed;
        b->failed = first;
        ngx_http_im_store_batch_post(&b->fail_event);
    }
}


void
ngx_http_im_store_batch_failed_handler(ngx_event_t *ev)
{
    ngx_http_im_store_batch_t  *b = ev->data;

    ngx_http_im_store_op_t  *op;

    op = b->failed;
    b->failed = NULL;

    ngx_http_im_store_batch_answer(b, op, NULL);
}


/* the reply of a batch: each item gets its element, in order */
static void
ngx_http_im_store_batch_reply(redisReply *reply, void *data)
{
    ngx_http_im_store_op_t  *op = data;

    if (reply && reply->type == REDIS_REPLY_ERROR) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "im store: a batch failed: %*s",
                      (size_t) reply->len, reply->str);
    }

    ngx_http_im_store_batch_answer(op->hold, op,
                                   reply && reply->type == REDIS_REPLY_ARRAY
                                   ? reply : NULL);
}


/*
 * Calls the handler for each op of the chain, with its element of reply,
 * or NULL for all when there is no reply.  The handler frees its op, and
 * may start the next batch.
 */
static void
ngx_http_im_store_batch_answer(ngx_http_im_store_batch_t *b,
    ngx_http_im_store_op_t *op, redisReply *reply)
{
    ngx_uint_t               i;
    ngx_http_im_store_op_t  *next;

    for (i = 0; op; i++) {
        next = op->next;
        b->handler(reply && i < reply->elements ? reply->element[i] : NULL,
                   op);
        op = next;
    }
}
