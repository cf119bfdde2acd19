
/*
 * ngx_im: Redis Cluster helpers.  Pure C (libc and hiredis, no nginx
 * types), so that they can be unit-tested outside nginx: key hash slots,
 * the slot map from CLUSTER SLOTS, MOVED/ASK redirects, and the RESP2
 * pub/sub pushes of a subscriber connection, including the sharded ones
 * that hiredis 0.14 does not know.
 */


#ifndef _NGX_HTTP_IM_SLOT_H_INCLUDED_
#define _NGX_HTTP_IM_SLOT_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>


#define NGX_HTTP_IM_SLOT_COUNT      16384
#define NGX_HTTP_IM_SLOT_NONE       0xffff
#define NGX_HTTP_IM_SLOT_NODES_MAX  64
#define NGX_HTTP_IM_SLOT_HOST_LEN   256     /* host[] with its '\0' */


typedef enum {
    NGX_HTTP_IM_SLOT_ERR_OTHER = 0,
    NGX_HTTP_IM_SLOT_ERR_MOVED,
    NGX_HTTP_IM_SLOT_ERR_ASK,
    NGX_HTTP_IM_SLOT_ERR_TRYAGAIN,
    NGX_HTTP_IM_SLOT_ERR_CLUSTERDOWN
} ngx_http_im_slot_err_e;


typedef enum {
    NGX_HTTP_IM_SLOT_PUSH_OTHER = 0,
    NGX_HTTP_IM_SLOT_PUSH_MESSAGE,
    NGX_HTTP_IM_SLOT_PUSH_SMESSAGE,
    NGX_HTTP_IM_SLOT_PUSH_SUBSCRIBE,
    NGX_HTTP_IM_SLOT_PUSH_SSUBSCRIBE,
    NGX_HTTP_IM_SLOT_PUSH_UNSUBSCRIBE,
    NGX_HTTP_IM_SLOT_PUSH_SUNSUBSCRIBE,
    NGX_HTTP_IM_SLOT_PUSH_PONG
} ngx_http_im_slot_push_e;


typedef struct {
    char       host[NGX_HTTP_IM_SLOT_HOST_LEN];  /* "": the seed's host */
    int        port;
} ngx_http_im_slot_node_t;


typedef struct {
    /* index into nodes, or NGX_HTTP_IM_SLOT_NONE */
    uint16_t                 owner[NGX_HTTP_IM_SLOT_COUNT];
    ngx_http_im_slot_node_t  nodes[NGX_HTTP_IM_SLOT_NODES_MAX];
    unsigned                 nnodes;
} ngx_http_im_slot_map_t;


/*
 * A pub/sub push; the pointers point into the reply and live as long as
 * it does.  The fields a kind does not have are NULL or 0.
 */
typedef struct {
    int                      kind;          /* ngx_http_im_slot_push_e */
    const char              *channel;       /* NULL: unsubscribed nothing */
    size_t                   channel_len;
    const char              *data;          /* message, or PING argument */
    size_t                   data_len;
    long long                count;         /* subscriptions left */
} ngx_http_im_slot_push_t;


/*
 * The Redis Cluster hash slot of a key, 0..16383: CRC16 (XMODEM) mod
 * 16384 of the hash tag, the bytes between the first '{' and the first
 * '}' after it, if there are any; otherwise of the whole key.
 */
unsigned ngx_http_im_slot(const char *key, size_t len);

/*
 * Fills the map from a CLUSTER SLOTS reply, taking the first node of each
 * range (the master) and listing each host:port once.  An empty or nil
 * host means "the address this reply came from"; it stays "" for the
 * caller to fill in.  Slots of no range are NGX_HTTP_IM_SLOT_NONE.
 * Returns 0; or -1 with a '\0'-terminated message in err (if errlen > 0)
 * when the reply is malformed, and then the map is only partly filled,
 * so parse into a spare map and keep the old one on failure.
 */
int ngx_http_im_slot_map_parse(ngx_http_im_slot_map_t *map,
    const redisReply *reply, char *err, size_t errlen);

/*
 * Parses the text of an error reply "MOVED <slot> <host>:<port>" or
 * "ASK <slot> <host>:<port>"; the last colon ends the host, so IPv6
 * hosts work, and the host may be empty (the caller's seed host).
 * Returns 0 and sets slot, host ('\0'-terminated), port and ask (1 for
 * ASK, 0 for MOVED); or -1, changing nothing, for any other text or a
 * host that does not fit in hostlen bytes with its '\0'.
 */
int ngx_http_im_slot_redirect(const char *str, size_t len, unsigned *slot,
    char *host, size_t hostlen, int *port, int *ask);

/*
 * Classifies the text of an error reply by its first word, exactly as
 * Redis spells it: returns an ngx_http_im_slot_err_e.
 */
int ngx_http_im_slot_error_kind(const char *str, size_t len);

/*
 * Classifies a reply read on a subscriber connection (RESP2): the arrays
 * [message|smessage, channel, data], [(s)(un)subscribe, channel, count],
 * ["pong", data], and the status "PONG"; the kind is matched without
 * regard to case.  Unsubscribes may have a nil channel.  Any other array
 * that starts with a bulk string (pmessage, psubscribe...) is kind OTHER.
 * Returns 0, or -1 for anything malformed: wrong types or element counts.
 */
int ngx_http_im_slot_push(const redisReply *reply,
    ngx_http_im_slot_push_t *out);


#endif /* _NGX_HTTP_IM_SLOT_H_INCLUDED_ */
