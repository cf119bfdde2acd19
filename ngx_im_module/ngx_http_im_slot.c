
/*
 * ngx_im: Redis Cluster helpers.  Pure C, no nginx types.
 */


#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ngx_http_im_slot.h"


typedef struct {
    const char  *word;
    int          kind;
} ngx_http_im_slot_word_t;


static uint16_t ngx_http_im_slot_crc16(const unsigned char *p, size_t len);
static int ngx_http_im_slot_fail(char *err, size_t errlen,
    const char *fmt, ...);
static int ngx_http_im_slot_map_node(ngx_http_im_slot_map_t *map,
    const redisReply *r, size_t i, char *err, size_t errlen);
static const char *ngx_http_im_slot_number(const char *p, const char *end,
    unsigned long max, unsigned long *n);
static int ngx_http_im_slot_word(const char *s, size_t len,
    const ngx_http_im_slot_word_t *words, size_t n, int nocase);
static int ngx_http_im_slot_push_kind(const char *s, size_t len);
static int ngx_http_im_slot_push_check(const redisReply *reply,
    ngx_http_im_slot_push_t *out);


static const ngx_http_im_slot_word_t  ngx_http_im_slot_errors[] = {
    { "MOVED", NGX_HTTP_IM_SLOT_ERR_MOVED },
    { "ASK", NGX_HTTP_IM_SLOT_ERR_ASK },
    { "TRYAGAIN", NGX_HTTP_IM_SLOT_ERR_TRYAGAIN },
    { "CLUSTERDOWN", NGX_HTTP_IM_SLOT_ERR_CLUSTERDOWN }
};


/* lowercase: matched against the lowered push kind */
static const ngx_http_im_slot_word_t  ngx_http_im_slot_pushes[] = {
    { "message", NGX_HTTP_IM_SLOT_PUSH_MESSAGE },
    { "smessage", NGX_HTTP_IM_SLOT_PUSH_SMESSAGE },
    { "subscribe", NGX_HTTP_IM_SLOT_PUSH_SUBSCRIBE },
    { "ssubscribe", NGX_HTTP_IM_SLOT_PUSH_SSUBSCRIBE },
    { "unsubscribe", NGX_HTTP_IM_SLOT_PUSH_UNSUBSCRIBE },
    { "sunsubscribe", NGX_HTTP_IM_SLOT_PUSH_SUNSUBSCRIBE },
    { "pong", NGX_HTTP_IM_SLOT_PUSH_PONG }
};


#define ngx_http_im_slot_is(r, t)  ((r) != NULL && (r)->type == (t))

#define ngx_http_im_slot_n(a)  (sizeof(a) / sizeof((a)[0]))


unsigned
ngx_http_im_slot(const char *key, size_t len)
{
    const char  *open, *close;

    open = memchr(key, '{', len);

    if (open != NULL) {
        open++;
        close = memchr(open, '}', key + len - open);

        /* "{}" is no tag: the spec hashes the whole key, not "" */
        if (close != NULL && close > open) {
            key = open;
            len = close - open;
        }
    }

    return ngx_http_im_slot_crc16((const unsigned char *) key, len)
           & (NGX_HTTP_IM_SLOT_COUNT - 1);
}


/* CRC16-CCITT as XMODEM computes it: polynomial 0x1021, zero start */

static uint16_t
ngx_http_im_slot_crc16(const unsigned char *p, size_t len)
{
    size_t    i;
    unsigned  bit, crc;

    /* bitwise: keys are short, and a table is 256 more lines to trust */

    crc = 0;

    for (i = 0; i < len; i++) {
        crc ^= (unsigned) p[i] << 8;

        for (bit = 0; bit < 8; bit++) {
            crc = (crc & 0x8000) ? (crc << 1) ^ 0x1021 : crc << 1;
        }

        crc &= 0xffff;
    }

    return (uint16_t) crc;
}


int
ngx_http_im_slot_map_parse(ngx_http_im_slot_map_t *map,
    const redisReply *reply, char *err, size_t errlen)
{
    int                node;
    size_t             i, s;
    long long          start, end;
    const redisReply  *range;

    for (s = 0; s < NGX_HTTP_IM_SLOT_COUNT; s++) {
        map->owner[s] = NGX_HTTP_IM_SLOT_NONE;
    }

    map->nnodes = 0;

    if (!ngx_http_im_slot_is(reply, REDIS_REPLY_ARRAY)) {
        return ngx_http_im_slot_fail(err, errlen,
                                     "CLUSTER SLOTS reply is not an array");
    }

    for (i = 0; i < reply->elements; i++) {
        range = reply->element[i];

        if (!ngx_http_im_slot_is(range, REDIS_REPLY_ARRAY)
            || range->elements < 3
            || !ngx_http_im_slot_is(range->element[0], REDIS_REPLY_INTEGER)
            || !ngx_http_im_slot_is(range->element[1], REDIS_REPLY_INTEGER))
        {
            return ngx_http_im_slot_fail(err, errlen,
                                         "range %zu is not "
                                         "[start, end, master, ...]", i);
        }

        start = range->element[0]->integer;
        end = range->element[1]->integer;

        if (start < 0 || start > end || end >= NGX_HTTP_IM_SLOT_COUNT) {
            return ngx_http_im_slot_fail(err, errlen,
                                         "range %zu has bad slots %lld-%lld",
                                         i, start, end);
        }

        node = ngx_http_im_slot_map_node(map, range->element[2], i, err,
                                         errlen);
        if (node < 0) {
            return -1;
        }

        for (s = (size_t) start; s <= (size_t) end; s++) {
            map->owner[s] = (uint16_t) node;
        }
    }

    return 0;
}


/*
 * The index in map->nodes of the master [host, port, ...] of range i,
 * added if new; -1 if it is malformed or there is no room.
 */

static int
ngx_http_im_slot_map_node(ngx_http_im_slot_map_t *map, const redisReply *r,
    size_t i, char *err, size_t errlen)
{
    size_t                    len;
    unsigned                  n;
    long long                 port;
    const char               *host;
    ngx_http_im_slot_node_t  *nd;

    if (!ngx_http_im_slot_is(r, REDIS_REPLY_ARRAY) || r->elements < 2
        || !ngx_http_im_slot_is(r->element[1], REDIS_REPLY_INTEGER))
    {
        return ngx_http_im_slot_fail(err, errlen, "range %zu: master is "
                                     "not [host, port, ...]", i);
    }

    /* Redis 7 sends nil, older ones "", for "where you asked" */

    if (ngx_http_im_slot_is(r->element[0], REDIS_REPLY_NIL)) {
        host = "";
        len = 0;

    } else if (ngx_http_im_slot_is(r->element[0], REDIS_REPLY_STRING)) {
        host = r->element[0]->str;
        len = r->element[0]->len;

    } else {
        return ngx_http_im_slot_fail(err, errlen,
                                     "range %zu: host is not a string", i);
    }

    /* a '\0' inside would make two hosts compare equal */
    if (len >= NGX_HTTP_IM_SLOT_HOST_LEN || memchr(host, '\0', len)) {
        return ngx_http_im_slot_fail(err, errlen,
                                     "range %zu: bad host of %zu bytes",
                                     i, len);
    }

    port = r->element[1]->integer;

    if (port < 1 || port > 65535) {
        return ngx_http_im_slot_fail(err, errlen,
                                     "range %zu: bad port %lld", i, port);
    }

    for (n = 0; n < map->nnodes; n++) {
        nd = &map->nodes[n];

        if (nd->port == port && strlen(nd->host) == len
            && memcmp(nd->host, host, len) == 0)
        {
            return (int) n;
        }
    }

    if (map->nnodes == NGX_HTTP_IM_SLOT_NODES_MAX) {
        return ngx_http_im_slot_fail(err, errlen, "more than %d masters",
                                     NGX_HTTP_IM_SLOT_NODES_MAX);
    }

    nd = &map->nodes[map->nnodes];
    memcpy(nd->host, host, len);
    nd->host[len] = '\0';
    nd->port = (int) port;

    return (int) map->nnodes++;
}


/* writes the message into err; returns -1 for the caller to return */

static int
ngx_http_im_slot_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list  args;

    if (errlen > 0) {
        va_start(args, fmt);
        vsnprintf(err, errlen, fmt, args);
        va_end(args);
    }

    return -1;
}


int
ngx_http_im_slot_redirect(const char *str, size_t len, unsigned *slot,
    char *host, size_t hostlen, int *port, int *ask)
{
    int            is_ask;
    const char    *p, *end, *colon;
    unsigned long  s, n;

    end = str + len;

    if (len > 6 && memcmp(str, "MOVED ", 6) == 0) {
        p = str + 6;
        is_ask = 0;

    } else if (len > 4 && memcmp(str, "ASK ", 4) == 0) {
        p = str + 4;
        is_ask = 1;

    } else {
        return -1;
    }

    p = ngx_http_im_slot_number(p, end, NGX_HTTP_IM_SLOT_COUNT - 1, &s);
    if (p == NULL || p == end || *p++ != ' ') {
        return -1;
    }

    /* the port follows the last colon: an IPv6 host has colons too */

    for (colon = end - 1; colon >= p && *colon != ':'; colon--) {
        /* void */
    }

    if (colon < p || memchr(p, ' ', colon - p) != NULL
        || memchr(p, '\0', colon - p) != NULL
        || (size_t) (colon - p) >= hostlen)
    {
        return -1;
    }

    if (ngx_http_im_slot_number(colon + 1, end, 65535, &n) != end
        || n == 0)
    {
        return -1;
    }

    memcpy(host, p, colon - p);
    host[colon - p] = '\0';
    *slot = (unsigned) s;
    *port = (int) n;
    *ask = is_ask;

    return 0;
}


/*
 * The decimal number at p, of at most max: returns the end of its digits,
 * or NULL if there are none or it is too big.
 */

static const char *
ngx_http_im_slot_number(const char *p, const char *end, unsigned long max,
    unsigned long *n)
{
    const char    *start;
    unsigned long  v;

    start = p;
    v = 0;
    *n = 0;

    for ( /* void */ ; p < end && *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (*p - '0');

        /* max is far below ULONG_MAX / 10, so this check stops overflow */
        if (v > max) {
            return NULL;
        }
    }

    if (p == start) {
        return NULL;
    }

    *n = v;

    return p;
}


int
ngx_http_im_slot_error_kind(const char *str, size_t len)
{
    const char  *space;

    space = memchr(str, ' ', len);
    if (space != NULL) {
        len = space - str;
    }

    return ngx_http_im_slot_word(str, len, ngx_http_im_slot_errors,
                                 ngx_http_im_slot_n(ngx_http_im_slot_errors),
                                 0);
}


/* the kind of the word s in the table; 0 (OTHER) if it is not there */

static int
ngx_http_im_slot_word(const char *s, size_t len,
    const ngx_http_im_slot_word_t *words, size_t n, int nocase)
{
    size_t       i, k;
    const char  *w;

    for (i = 0; i < n; i++) {
        w = words[i].word;

        /* stops at the word's '\0' first: never reads past either */
        for (k = 0; k < len && w[k] != '\0'; k++) {
            if (s[k] != w[k]
                && !(nocase && s[k] >= 'A' && s[k] <= 'Z'
                     && s[k] - 'A' + 'a' == w[k]))
            {
                break;
            }
        }

        if (k == len && w[k] == '\0') {
            return words[i].kind;
        }
    }

    return 0;
}


int
ngx_http_im_slot_push(const redisReply *reply, ngx_http_im_slot_push_t *out)
{
    const redisReply  *k;

    memset(out, 0, sizeof(ngx_http_im_slot_push_t));
    out->kind = NGX_HTTP_IM_SLOT_PUSH_OTHER;

    /* outside subscribed mode PING answers a plain status */

    if (ngx_http_im_slot_is(reply, REDIS_REPLY_STATUS)) {
        if (ngx_http_im_slot_push_kind(reply->str, reply->len)
            != NGX_HTTP_IM_SLOT_PUSH_PONG)
        {
            return -1;
        }

        out->kind = NGX_HTTP_IM_SLOT_PUSH_PONG;
        return 0;
    }

    if (!ngx_http_im_slot_is(reply, REDIS_REPLY_ARRAY)
        || reply->elements == 0
        || !ngx_http_im_slot_is(reply->element[0], REDIS_REPLY_STRING))
    {
        return -1;
    }

    k = reply->element[0];
    out->kind = ngx_http_im_slot_push_kind(k->str, k->len);

    if (ngx_http_im_slot_push_check(reply, out) != 0) {
        memset(out, 0, sizeof(ngx_http_im_slot_push_t));
        return -1;
    }

    return 0;
}


static int
ngx_http_im_slot_push_kind(const char *s, size_t len)
{
    return ngx_http_im_slot_word(s, len, ngx_http_im_slot_pushes,
                                 ngx_http_im_slot_n(ngx_http_im_slot_pushes),
                                 1);
}


/* checks the elements after the kind, and fills out from them */

static int
ngx_http_im_slot_push_check(const redisReply *reply,
    ngx_http_im_slot_push_t *out)
{
    const redisReply  *a, *b;

    if (out->kind == NGX_HTTP_IM_SLOT_PUSH_OTHER) {
        /* pmessage, psubscribe...: well-formed, just not ours */
        return 0;
    }

    if (out->kind == NGX_HTTP_IM_SLOT_PUSH_PONG) {
        if (reply->elements != 2
            || !ngx_http_im_slot_is(reply->element[1], REDIS_REPLY_STRING))
        {
            return -1;
        }

        a = reply->element[1];
        out->data = a->str;
        out->data_len = a->len;
        return 0;
    }

    if (reply->elements != 3) {
        return -1;
    }

    a = reply->element[1];
    b = reply->element[2];

    if (out->kind == NGX_HTTP_IM_SLOT_PUSH_MESSAGE
        || out->kind == NGX_HTTP_IM_SLOT_PUSH_SMESSAGE)
    {
        if (!ngx_http_im_slot_is(b, REDIS_REPLY_STRING)) {
            return -1;
        }

        out->data = b->str;
        out->data_len = b->len;

    } else {
        /* (s)(un)subscribe */
        if (!ngx_http_im_slot_is(b, REDIS_REPLY_INTEGER) || b->integer < 0) {
            return -1;
        }

        out->count = b->integer;

        /* after unsubscribing from nothing Redis names no channel */
        if ((out->kind == NGX_HTTP_IM_SLOT_PUSH_UNSUBSCRIBE
             || out->kind == NGX_HTTP_IM_SLOT_PUSH_SUNSUBSCRIBE)
            && ngx_http_im_slot_is(a, REDIS_REPLY_NIL))
        {
            return 0;
        }
    }

    if (!ngx_http_im_slot_is(a, REDIS_REPLY_STRING)) {
        return -1;
    }

    out->channel = a->str;
    out->channel_len = a->len;

    return 0;
}
