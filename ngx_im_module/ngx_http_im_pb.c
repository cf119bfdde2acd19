
/*
 * ngx_im: the protobuf codec, a transcoder between our JSON and the
 * protobuf-c messages of im.proto.
 *
 * pb -> JSON: a scan of the wire bytes checks the encoding, the nesting,
 * the repeated counts and the text of strings; protobuf-c then unpacks the
 * message with an allocator on a budget, and a walk over the descriptor
 * writes the JSON.
 *
 * JSON -> pb: a walk over the descriptor builds the message in a pool
 * (strings point into the yajl tree), protobuf-c packs it into the output
 * buffer, and the pool is freed at once.
 */


#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ngx_http_im_pb.h"
#include "im.pb-c.h"


#define NGX_HTTP_IM_PB_PATH_LEN     128
#define NGX_HTTP_IM_PB_KEY_LEN      32
#define NGX_HTTP_IM_PB_MAX_FIELDS   64

/* the pool of a message being built, and its bound */
#define NGX_HTTP_IM_PB_BLOCK        8192
#define NGX_HTTP_IM_PB_ALIGN        16
#define NGX_HTTP_IM_PB_MAX_MEM      (64 * 1024 * 1024)

/* what protobuf-c may allocate to unpack n bytes: MEM_MIN + n * MEM_RATIO */
#define NGX_HTTP_IM_PB_MEM_MIN      (1024 * 1024)
#define NGX_HTTP_IM_PB_MEM_RATIO    32

#define ngx_http_im_pb_align(n)                                               \
    (((n) + NGX_HTTP_IM_PB_ALIGN - 1) & ~((size_t) NGX_HTTP_IM_PB_ALIGN - 1))


typedef struct ngx_http_im_pb_block_s  ngx_http_im_pb_block_t;

struct ngx_http_im_pb_block_s {
    ngx_http_im_pb_block_t    *next;
    size_t                     size;
    size_t                     used;
};


typedef struct {
    ngx_http_im_pb_block_t    *blocks;
    size_t                     total;
} ngx_http_im_pb_pool_t;


/* protobuf-c's allocator for unpacking, with a budget */
typedef struct {
    ProtobufCAllocator         allocator;
    size_t                     used;
    size_t                     max;
    int                        exhausted;
} ngx_http_im_pb_budget_t;


/* protobuf-c's output, appending to our buffer */
typedef struct {
    ProtobufCBuffer            base;
    ngx_http_im_buf_t         *out;
} ngx_http_im_pb_sink_t;


typedef struct {
    char                      *err;
    size_t                     errlen;
    ngx_http_im_buf_t         *out;
    ngx_http_im_pb_pool_t      pool;
    int                        bytes_text;
    size_t                     path_len;
    char                       path[NGX_HTTP_IM_PB_PATH_LEN];
} ngx_http_im_pb_ctx_t;


typedef struct {
    long long                          req_identifier;
    const ProtobufCMessageDescriptor  *desc[3];
} ngx_http_im_pb_route_t;


/*
 * A message field written in JSON as one of the message's repeated fields
 * ("list") alone.
 */
typedef struct {
    const ProtobufCMessageDescriptor  *parent;
    const char                        *field;
    const char                        *list;
} ngx_http_im_pb_short_t;


static int ngx_http_im_pb_js_str(yajl_val root, const char *key,
    ngx_http_im_str_t *out, char *err, size_t errlen);
static int ngx_http_im_pb_base64_decode(const char *src, size_t len,
    unsigned char **out, size_t *n);
static int ngx_http_im_pb_data_encode(long long req_identifier,
    const unsigned char *data_json, size_t data_json_len,
    ngx_http_im_buf_t *out, char *err, size_t errlen);
static void ngx_http_im_pb_req_init(ngx_http_im_pb_req_t *req);
static void ngx_http_im_pb_ctx_init(ngx_http_im_pb_ctx_t *ctx, char *err,
    size_t errlen);
static int ngx_http_im_pb_error(ngx_http_im_pb_ctx_t *ctx, const char *what);
static int ngx_http_im_pb_wire_error(ngx_http_im_pb_ctx_t *ctx,
    const char *what);
static int ngx_http_im_pb_too_many(ngx_http_im_pb_ctx_t *ctx,
    const char *what);
static size_t ngx_http_im_pb_path_add(ngx_http_im_pb_ctx_t *ctx,
    const char *s, size_t n, int dot);
static size_t ngx_http_im_pb_path_index(ngx_http_im_pb_ctx_t *ctx,
    size_t i);
static void ngx_http_im_pb_path_pop(ngx_http_im_pb_ctx_t *ctx, size_t len);

static size_t ngx_http_im_pb_utf8_seq(const unsigned char *p, size_t n);
static int ngx_http_im_pb_text_check(ngx_http_im_pb_ctx_t *ctx,
    const unsigned char *p, size_t n);
static char *ngx_http_im_pb_text_dup(const char *s, size_t n);

static int ngx_http_im_pb_is_map(const ProtobufCFieldDescriptor *f);
static const ProtobufCFieldDescriptor *ngx_http_im_pb_short_list(
    const ProtobufCMessageDescriptor *parent,
    const ProtobufCFieldDescriptor *f);
static size_t ngx_http_im_pb_type_size(ProtobufCType type);

static int ngx_http_im_pb_varint(const unsigned char **pp,
    const unsigned char *last, uint64_t *v);
static int ngx_http_im_pb_wire_type(ProtobufCType type);
static int ngx_http_im_pb_packed_count(int wt, const unsigned char *p,
    size_t n, size_t *count);
static int ngx_http_im_pb_scan(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, const unsigned char *p, size_t len,
    unsigned depth);
static int ngx_http_im_pb_scan_field(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCFieldDescriptor *f, const unsigned char *p, size_t len,
    unsigned depth);
static ProtobufCMessage *ngx_http_im_pb_unpack(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, const unsigned char *pb,
    size_t len);
static void *ngx_http_im_pb_budget_alloc(void *data, size_t size);
static void ngx_http_im_pb_budget_free(void *data, void *p);

static int ngx_http_im_pb_write_msg(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, const ProtobufCMessage *m,
    unsigned depth);
static int ngx_http_im_pb_write_field(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f,
    const ProtobufCMessage *m, unsigned depth);
static int ngx_http_im_pb_write_map(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCFieldDescriptor *f, ProtobufCMessage *const *entries,
    size_t n, unsigned depth);
static int ngx_http_im_pb_write_key(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCFieldDescriptor *f, const void *p);
static int ngx_http_im_pb_write_value(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f,
    const void *p, unsigned depth);
static void ngx_http_im_pb_write_uint(ngx_http_im_buf_t *b,
    unsigned long long v);

static void *ngx_http_im_pb_palloc(ngx_http_im_pb_ctx_t *ctx, size_t size);
static void ngx_http_im_pb_pool_free(ngx_http_im_pb_pool_t *pool);
static int ngx_http_im_pb_read_msg(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, yajl_val obj, unsigned depth,
    ProtobufCMessage **out);
static int ngx_http_im_pb_read_field(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f,
    ProtobufCMessage *m, yajl_val v, unsigned depth);
static int ngx_http_im_pb_read_map(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCFieldDescriptor *f, ProtobufCMessage *m, yajl_val v,
    unsigned depth);
static int ngx_http_im_pb_read_key(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCFieldDescriptor *f, const char *key, void *dst);
static int ngx_http_im_pb_read_value(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f,
    yajl_val v, void *dst, unsigned depth);
static void ngx_http_im_pb_drop_empty(ProtobufCMessage **mp);
static int ngx_http_im_pb_read_int(ngx_http_im_pb_ctx_t *ctx, yajl_val v,
    long long min, long long max, long long *out);
static int ngx_http_im_pb_read_uint(ngx_http_im_pb_ctx_t *ctx, yajl_val v,
    unsigned long long max, unsigned long long *out);
static int ngx_http_im_pb_digits(const char *s, int sign);
static int ngx_http_im_pb_pack(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessage *m, ngx_http_im_buf_t *out);
static void ngx_http_im_pb_sink_append(ProtobufCBuffer *buffer, size_t len,
    const uint8_t *data);


static const ngx_http_im_pb_route_t  ngx_http_im_pb_routes[] = {

    { 1001, { &im__get_max_seq_req__descriptor,
              &im__get_max_seq_resp__descriptor, NULL } },

    { 1002, { &im__pull_message_by_seqs_req__descriptor,
              &im__pull_message_by_seqs_resp__descriptor, NULL } },

    { 1003, { &im__msg_data__descriptor,
              &im__send_msg_resp__descriptor, NULL } },

    { 1005, { &im__get_seq_message_req__descriptor,
              &im__get_seq_message_resp__descriptor, NULL } },

    { 1006, { &im__get_conversations_has_read_and_max_seq_req__descriptor,
              &im__get_conversations_has_read_and_max_seq_resp__descriptor,
              NULL } },

    { 2001, { NULL, NULL, &im__push_messages__descriptor } },

    { 2002, { NULL, NULL, &im__kick_online_msg__descriptor } },

    { 2003, { &im__del_user_push_token_req__descriptor,
              &im__del_user_push_token_resp__descriptor, NULL } },

    { 2004, { &im__set_app_background_status_req__descriptor,
              &im__set_app_background_status_resp__descriptor, NULL } },

    { 2005, { &im__sub_user_online_status__descriptor,
              &im__sub_user_online_status_tips__descriptor,
              &im__sub_user_online_status_tips__descriptor } },

    { 0, { NULL, NULL, NULL } }
};


static const ngx_http_im_pb_short_t  ngx_http_im_pb_shorts[] = {
    { &im__push_messages__msgs_entry__descriptor, "value", "Msgs" },
    { &im__push_messages__notification_msgs_entry__descriptor, "value",
      "Msgs" },
    { NULL, NULL, NULL }
};


static const unsigned char  ngx_http_im_pb_empty[1];


const ProtobufCMessageDescriptor *
ngx_http_im_pb_descriptor(long long req_identifier, int dir)
{
    const ngx_http_im_pb_route_t  *r;

    if (dir < NGX_HTTP_IM_PB_REQUEST || dir > NGX_HTTP_IM_PB_PUSH) {
        return NULL;
    }

    for (r = ngx_http_im_pb_routes; r->req_identifier; r++) {
        if (r->req_identifier == req_identifier) {
            return r->desc[dir];
        }
    }

    return NULL;
}


int
ngx_http_im_pb_to_json(const ProtobufCMessageDescriptor *d,
    const unsigned char *pb, size_t len, ngx_http_im_buf_t *out, char *err,
    size_t errlen)
{
    int                    rc, failed;
    size_t                 start;
    ProtobufCMessage      *m;
    ngx_http_im_pb_ctx_t   ctx;

    ngx_http_im_pb_ctx_init(&ctx, err, errlen);
    ctx.out = out;
    ctx.bytes_text = 1;

    if (len > NGX_HTTP_IM_PB_MAX_INPUT) {
        return ngx_http_im_pb_wire_error(&ctx, "message too large");
    }

    if (pb == NULL) {
        pb = ngx_http_im_pb_empty;
        len = 0;
    }

    if (ngx_http_im_pb_scan(&ctx, d, pb, len, 0) != 0) {
        return -1;
    }

    m = ngx_http_im_pb_unpack(&ctx, d, pb, len);
    if (m == NULL) {
        return -1;
    }

    start = out->len;
    failed = out->failed;

    rc = ngx_http_im_pb_write_msg(&ctx, d, m, 0);

    protobuf_c_message_free_unpacked(m, NULL);

    if (rc == 0 && out->failed) {
        rc = ngx_http_im_pb_error(&ctx, "JSON too large");
    }

    if (rc != 0) {
        out->len = start;
        out->failed = failed;
    }

    return rc;
}


int
ngx_http_im_json_to_pb(const ProtobufCMessageDescriptor *d, yajl_val json,
    ngx_http_im_buf_t *out, char *err, size_t errlen)
{
    int                    rc;
    ProtobufCMessage      *m;
    ngx_http_im_pb_ctx_t   ctx;

    ngx_http_im_pb_ctx_init(&ctx, err, errlen);

    if (json == NULL || YAJL_IS_NULL(json)) {
        m = ngx_http_im_pb_palloc(&ctx, d->sizeof_message);
        if (m == NULL) {
            return -1;
        }

        protobuf_c_message_init(d, m);
        rc = 0;

    } else if (!YAJL_IS_OBJECT(json)) {
        ngx_http_im_pb_path_add(&ctx, "data", 4, 0);
        rc = ngx_http_im_pb_error(&ctx, "must be an object");

    } else {
        rc = ngx_http_im_pb_read_msg(&ctx, d, json, 0, &m);
    }

    if (rc == 0) {
        rc = ngx_http_im_pb_pack(&ctx, m, out);
    }

    ngx_http_im_pb_pool_free(&ctx.pool);

    return rc;
}


int
ngx_http_im_pb_req_decode(const unsigned char *frame, size_t len,
    ngx_http_im_pb_req_t *req, char *err, size_t errlen)
{
    Im__Req                           *env;
    ngx_http_im_pb_ctx_t               ctx;
    const ProtobufCMessageDescriptor  *d;

    ngx_http_im_pb_req_init(req);
    ngx_http_im_pb_ctx_init(&ctx, err, errlen);

    if (len > NGX_HTTP_IM_PB_MAX_INPUT) {
        return ngx_http_im_pb_wire_error(&ctx, "message too large");
    }

    if (frame == NULL) {
        frame = ngx_http_im_pb_empty;
        len = 0;
    }

    /* the envelope's "data" is protobuf, not text: bytes_text stays 0 */

    if (ngx_http_im_pb_scan(&ctx, &im__req__descriptor, frame, len, 0)
        != 0)
    {
        return -1;
    }

    env = (Im__Req *) ngx_http_im_pb_unpack(&ctx, &im__req__descriptor,
                                            frame, len);
    if (env == NULL) {
        return -1;
    }

    req->env = &env->base;
    req->req_identifier = env->reqidentifier;
    req->operation_id.data = env->operationid;
    req->operation_id.len = strlen(env->operationid);
    req->msg_incr.data = env->msgincr;
    req->msg_incr.len = strlen(env->msgincr);
    req->send_id.data = env->sendid;
    req->send_id.len = strlen(env->sendid);
    req->token.data = env->token;
    req->token.len = strlen(env->token);

    d = ngx_http_im_pb_descriptor(env->reqidentifier,
                                  NGX_HTTP_IM_PB_REQUEST);
    if (d == NULL) {
        ngx_http_im_buf_str(&req->data, "{}");
        return 0;
    }

    return ngx_http_im_pb_to_json(d, env->data.data, env->data.len,
                                  &req->data, err, errlen);
}


void
ngx_http_im_pb_req_free(ngx_http_im_pb_req_t *req)
{
    if (req->env) {
        protobuf_c_message_free_unpacked(req->env, NULL);
        req->env = NULL;
    }

    if (req->root) {
        yajl_tree_free(req->root);
        req->root = NULL;
    }

    req->operation_id.data = "";
    req->operation_id.len = 0;
    req->msg_incr = req->operation_id;
    req->send_id = req->operation_id;
    req->token = req->operation_id;

    ngx_http_im_buf_free(&req->data);
}


int
ngx_http_im_pb_resp_encode(long long req_identifier,
    ngx_http_im_str_t operation_id, ngx_http_im_str_t msg_incr,
    int err_code, const char *err_msg, const unsigned char *data_json,
    size_t data_json_len, ngx_http_im_buf_t *out, char *err, size_t errlen)
{
    int                                rc;
    Im__Resp                           resp = IM__RESP__INIT;
    ngx_http_im_buf_t                  data;
    ngx_http_im_pb_ctx_t               ctx;

    /* copied first: "err_msg" may be "err" */

    resp.operationid = ngx_http_im_pb_text_dup(operation_id.data,
                                               operation_id.len);
    resp.msgincr = ngx_http_im_pb_text_dup(msg_incr.data, msg_incr.len);
    resp.errmsg = ngx_http_im_pb_text_dup(err_msg,
                                          err_msg ? strlen(err_msg) : 0);

    ngx_http_im_pb_ctx_init(&ctx, err, errlen);
    ngx_http_im_buf_init(&data, NGX_HTTP_IM_PB_MAX_JSON);

    if (resp.operationid == NULL || resp.msgincr == NULL
        || resp.errmsg == NULL)
    {
        rc = ngx_http_im_pb_error(&ctx, "out of memory");
        goto done;
    }

    if (req_identifier < INT32_MIN || req_identifier > INT32_MAX) {
        ngx_http_im_pb_path_add(&ctx, "reqIdentifier", 13, 0);
        rc = ngx_http_im_pb_error(&ctx, "is out of range");
        goto done;
    }

    if (ngx_http_im_pb_data_encode(req_identifier, data_json, data_json_len,
                                   &data, err, errlen)
        != 0)
    {
        rc = -1;
        goto done;
    }

    resp.reqidentifier = (int32_t) req_identifier;
    resp.errcode = err_code;
    resp.data.data = data.data;
    resp.data.len = data.len;

    rc = ngx_http_im_pb_pack(&ctx, &resp.base, out);

done:

    free(resp.operationid);
    free(resp.msgincr);
    free(resp.errmsg);
    ngx_http_im_buf_free(&data);

    return rc;
}


/*
 * The JS SDK's frames (sdkType=js) are JSON envelopes whose "data" is a
 * string: standard base64, padded, of the protobuf data message.
 */
int
ngx_http_im_pb_js_req_decode(const unsigned char *frame, size_t len,
    ngx_http_im_pb_req_t *req, char *err, size_t errlen)
{
    int                                rc;
    size_t                             n;
    unsigned char                     *pb;
    ngx_http_im_str_t                  data;
    const ProtobufCMessageDescriptor  *d;

    ngx_http_im_pb_req_init(req);

    req->root = ngx_http_im_json_parse(frame, len, err, errlen);
    if (req->root == NULL) {
        return -1;
    }

    if (!YAJL_IS_OBJECT(req->root)) {
        snprintf(err, errlen, "invalid JSON: the request is not an object");
        return -1;
    }

    if (ngx_http_im_json_get_int(req->root, "reqIdentifier", 1,
                                 &req->req_identifier, err, errlen) != 0
        || ngx_http_im_pb_js_str(req->root, "operationID", &req->operation_id,
                                 err, errlen) != 0
        || ngx_http_im_pb_js_str(req->root, "msgIncr", &req->msg_incr,
                                 err, errlen) != 0
        || ngx_http_im_pb_js_str(req->root, "sendID", &req->send_id,
                                 err, errlen) != 0
        || ngx_http_im_pb_js_str(req->root, "data", &data, err, errlen) != 0)
    {
        return -1;
    }

    d = ngx_http_im_pb_descriptor(req->req_identifier,
                                  NGX_HTTP_IM_PB_REQUEST);
    if (d == NULL) {
        ngx_http_im_buf_str(&req->data, "{}");
        return 0;
    }

    if (data.len > NGX_HTTP_IM_PB_MAX_INPUT / 3 * 4) {
        snprintf(err, errlen, "field \"data\" is too large");
        return -1;
    }

    if (ngx_http_im_pb_base64_decode(data.data, data.len, &pb, &n) != 0) {
        snprintf(err, errlen, "field \"data\" must be padded base64");
        return -1;
    }

    rc = ngx_http_im_pb_to_json(d, pb, n, &req->data, err, errlen);

    free(pb);

    return rc;
}


int
ngx_http_im_pb_js_resp_encode(long long req_identifier,
    ngx_http_im_str_t operation_id, ngx_http_im_str_t msg_incr,
    int err_code, const char *err_msg, const unsigned char *data_json,
    size_t data_json_len, ngx_http_im_buf_t *out, char *err, size_t errlen)
{
    int                 rc;
    size_t              len;
    unsigned char      *b64;
    ngx_http_im_buf_t   data;

    len = out->len;
    ngx_http_im_buf_init(&data, NGX_HTTP_IM_PB_MAX_JSON);

    rc = ngx_http_im_pb_data_encode(req_identifier, data_json, data_json_len,
                                    &data, err, errlen);
    if (rc != 0) {
        goto done;
    }

    b64 = malloc((data.len + 2) / 3 * 4 + 1);
    if (b64 == NULL) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
        goto done;
    }

    /* "err_msg" may be "err": it is written before anything else is */
    ngx_http_im_resp_begin(out, req_identifier, operation_id, msg_incr,
                           err_code, err_msg);
    ngx_http_im_buf_str(out, "\"");
    ngx_http_im_buf_add(out, b64,
                        data.len ? EVP_EncodeBlock(b64, data.data,
                                                   (int) data.len)
                                 : 0);
    ngx_http_im_buf_str(out, "\"");
    ngx_http_im_resp_end(out);

    free(b64);

    if (out->failed) {
        snprintf(err, errlen, "answer too large");
        rc = -1;
    }

done:

    if (rc != 0) {
        out->len = len;
        out->failed = 0;
    }

    ngx_http_im_buf_free(&data);

    return rc;
}


/* a string member, absent or null read as empty */
static int
ngx_http_im_pb_js_str(yajl_val root, const char *key, ngx_http_im_str_t *out,
    char *err, size_t errlen)
{
    if (ngx_http_im_json_get_str(root, key, 0, out, err, errlen) != 0) {
        return -1;
    }

    if (out->data == NULL) {
        out->data = "";
        out->len = 0;
    }

    return 0;
}


/* *out is malloc()ed; JS encoders pad, so only padded input is taken */
static int
ngx_http_im_pb_base64_decode(const char *src, size_t len,
    unsigned char **out, size_t *n)
{
    int  rc;

    *out = malloc(len / 4 * 3 + 1);
    if (*out == NULL) {
        return -1;
    }

    *n = 0;

    if (len == 0) {
        return 0;
    }

    if (len % 4 != 0) {
        goto failed;
    }

    rc = EVP_DecodeBlock(*out, (const unsigned char *) src, (int) len);
    if (rc < 0) {
        goto failed;
    }

    /* EVP_DecodeBlock() counts the padding as zero bytes */
    *n = (size_t) rc - (src[len - 1] == '=') - (src[len - 2] == '=');

    return 0;

failed:

    free(*out);
    *out = NULL;

    return -1;
}


/*
 * The data of an answer or push: "data_json" transcoded with the response
 * message of "req_identifier", or its push message; nothing when it has
 * neither or there is no JSON.
 */
static int
ngx_http_im_pb_data_encode(long long req_identifier,
    const unsigned char *data_json, size_t data_json_len,
    ngx_http_im_buf_t *out, char *err, size_t errlen)
{
    int                                rc;
    yajl_val                           root;
    const ProtobufCMessageDescriptor  *d;

    d = ngx_http_im_pb_descriptor(req_identifier, NGX_HTTP_IM_PB_RESPONSE);
    if (d == NULL) {
        d = ngx_http_im_pb_descriptor(req_identifier, NGX_HTTP_IM_PB_PUSH);
    }

    if (d == NULL || data_json == NULL || data_json_len == 0) {
        return 0;
    }

    root = ngx_http_im_json_parse(data_json, data_json_len, err, errlen);
    if (root == NULL) {
        return -1;
    }

    rc = ngx_http_im_json_to_pb(d, root, out, err, errlen);

    yajl_tree_free(root);

    return rc;
}


static void
ngx_http_im_pb_req_init(ngx_http_im_pb_req_t *req)
{
    req->req_identifier = 0;
    req->operation_id.data = "";
    req->operation_id.len = 0;
    req->msg_incr = req->operation_id;
    req->send_id = req->operation_id;
    req->token = req->operation_id;
    req->env = NULL;
    req->root = NULL;
    ngx_http_im_buf_init(&req->data, NGX_HTTP_IM_PB_MAX_JSON);
}


/* errors and the field path */

static void
ngx_http_im_pb_ctx_init(ngx_http_im_pb_ctx_t *ctx, char *err, size_t errlen)
{
    ctx->err = err;
    ctx->errlen = errlen;
    ctx->out = NULL;
    ctx->pool.blocks = NULL;
    ctx->pool.total = 0;
    ctx->bytes_text = 0;
    ctx->path_len = 0;
    ctx->path[0] = '\0';

    if (err && errlen) {
        err[0] = '\0';
    }
}


/* 'field "<path>" <what>', or "<what>" with no path; returns -1 */

static int
ngx_http_im_pb_error(ngx_http_im_pb_ctx_t *ctx, const char *what)
{
    if (ctx->err == NULL || ctx->errlen == 0) {
        return -1;
    }

    if (ctx->path_len) {
        snprintf(ctx->err, ctx->errlen, "field \"%s\" %s", ctx->path, what);

    } else {
        snprintf(ctx->err, ctx->errlen, "%s", what);
    }

    return -1;
}


static int
ngx_http_im_pb_wire_error(ngx_http_im_pb_ctx_t *ctx, const char *what)
{
    if (ctx->err == NULL || ctx->errlen == 0) {
        return -1;
    }

    if (ctx->path_len) {
        snprintf(ctx->err, ctx->errlen, "invalid protobuf: %s in field \"%s\"",
                 what, ctx->path);

    } else {
        snprintf(ctx->err, ctx->errlen, "invalid protobuf: %s", what);
    }

    return -1;
}


static int
ngx_http_im_pb_too_many(ngx_http_im_pb_ctx_t *ctx, const char *what)
{
    char  tmp[64];

    snprintf(tmp, sizeof(tmp), "has more than %d %s",
             NGX_HTTP_IM_PB_MAX_REPEATED, what);

    return ngx_http_im_pb_error(ctx, tmp);
}


/*
 * Appends ".s" (or "s" at the start, or when "dot" is 0) to the path;
 * control characters and quotes become '?'.  A path that does not fit is
 * cut.  Returns the length to restore with ngx_http_im_pb_path_pop().
 */

static size_t
ngx_http_im_pb_path_add(ngx_http_im_pb_ctx_t *ctx, const char *s, size_t n,
    int dot)
{
    size_t  old, i, room;
    char    c;

    old = ctx->path_len;
    room = sizeof(ctx->path) - 1;

    if (dot && old && old < room) {
        ctx->path[ctx->path_len++] = '.';
    }

    for (i = 0; i < n && ctx->path_len < room; i++) {
        c = s[i];
        ctx->path[ctx->path_len++] = ((unsigned char) c < 0x20 || c == '"')
                                     ? '?' : c;
    }

    ctx->path[ctx->path_len] = '\0';

    return old;
}


static size_t
ngx_http_im_pb_path_index(ngx_http_im_pb_ctx_t *ctx, size_t i)
{
    int   n;
    char  tmp[32];

    n = snprintf(tmp, sizeof(tmp), "[%zu]", i);

    return ngx_http_im_pb_path_add(ctx, tmp, (size_t) n, 0);
}


static void
ngx_http_im_pb_path_pop(ngx_http_im_pb_ctx_t *ctx, size_t len)
{
    ctx->path_len = len;
    ctx->path[len] = '\0';
}


/* text */

/* the length of the valid UTF-8 sequence at p (*p >= 0x80), or 0 */

static size_t
ngx_http_im_pb_utf8_seq(const unsigned char *p, size_t n)
{
    size_t         len, i;
    unsigned char  min, max;

    min = 0x80;
    max = 0xbf;

    switch (p[0] >> 4) {

    case 0xc:
    case 0xd:
        if (p[0] < 0xc2) {
            return 0;                           /* overlong */
        }

        len = 2;
        break;

    case 0xe:
        len = 3;

        if (p[0] == 0xe0) {
            min = 0xa0;                         /* overlong */

        } else if (p[0] == 0xed) {
            max = 0x9f;                         /* UTF-16 surrogates */
        }

        break;

    case 0xf:
        if (p[0] > 0xf4) {
            return 0;
        }

        len = 4;

        if (p[0] == 0xf0) {
            min = 0x90;                         /* overlong */

        } else if (p[0] == 0xf4) {
            max = 0x8f;                         /* above U+10FFFF */
        }

        break;

    default:
        return 0;
    }

    if (n < len || p[1] < min || p[1] > max) {
        return 0;
    }

    for (i = 2; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            return 0;
        }
    }

    return len;
}


/* strings are UTF-8 without NUL bytes (which C strings cannot carry) */

static int
ngx_http_im_pb_text_check(ngx_http_im_pb_ctx_t *ctx, const unsigned char *p,
    size_t n)
{
    size_t  i, k;

    for (i = 0; i < n; i += k) {
        if (p[i] >= 0x80) {
            k = ngx_http_im_pb_utf8_seq(p + i, n - i);
            if (k == 0) {
                return ngx_http_im_pb_error(ctx, "is not valid UTF-8");
            }

            continue;
        }

        if (p[i] == '\0') {
            return ngx_http_im_pb_error(ctx, "contains a NUL byte");
        }

        k = 1;
    }

    return 0;
}


/*
 * A malloc()ed, NUL-terminated copy of "s" in which each byte of an
 * invalid UTF-8 sequence, and each NUL, becomes U+FFFD.
 */

static char *
ngx_http_im_pb_text_dup(const char *s, size_t n)
{
    char                 *dst, *p;
    size_t                i, k;
    const unsigned char  *src;

    if (n > (SIZE_MAX - 1) / 3) {
        return NULL;
    }

    dst = malloc(3 * n + 1);
    if (dst == NULL) {
        return NULL;
    }

    src = (const unsigned char *) s;
    p = dst;

    for (i = 0; i < n; i += k) {
        k = (src[i] >= 0x80) ? ngx_http_im_pb_utf8_seq(src + i, n - i) : 1;

        if (k == 0 || src[i] == '\0') {
            memcpy(p, "\xef\xbf\xbd", 3);
            p += 3;
            k = 1;
            continue;
        }

        memcpy(p, src + i, k);
        p += k;
    }

    *p = '\0';

    return dst;
}


/* descriptors */

/*
 * protoc-c turns map<K, V> name = n; into a repeated message "NameEntry"
 * nested in the message, of two fields, key = 1 and value = 2.
 */

static int
ngx_http_im_pb_is_map(const ProtobufCFieldDescriptor *f)
{
    size_t                             n;
    const ProtobufCMessageDescriptor  *e;

    if (f->label != PROTOBUF_C_LABEL_REPEATED
        || f->type != PROTOBUF_C_TYPE_MESSAGE)
    {
        return 0;
    }

    e = f->descriptor;

    if (e->n_fields != 2
        || e->fields[0].id != 1 || strcmp(e->fields[0].name, "key") != 0
        || e->fields[1].id != 2 || strcmp(e->fields[1].name, "value") != 0
        || e->fields[0].label == PROTOBUF_C_LABEL_REPEATED
        || e->fields[1].label == PROTOBUF_C_LABEL_REPEATED)
    {
        return 0;
    }

    n = strlen(e->name);

    return n > 5 && strcmp(e->name + n - 5, "Entry") == 0;
}


/* the list field, if field "f" of "parent" is written as that list */

static const ProtobufCFieldDescriptor *
ngx_http_im_pb_short_list(const ProtobufCMessageDescriptor *parent,
    const ProtobufCFieldDescriptor *f)
{
    const ProtobufCFieldDescriptor  *lf;
    const ngx_http_im_pb_short_t    *s;

    for (s = ngx_http_im_pb_shorts; s->parent; s++) {
        if (s->parent != parent || strcmp(s->field, f->name) != 0) {
            continue;
        }

        lf = protobuf_c_message_descriptor_get_field_by_name(f->descriptor,
                                                             s->list);

        if (lf && lf->label == PROTOBUF_C_LABEL_REPEATED
            && !ngx_http_im_pb_is_map(lf))
        {
            return lf;
        }
    }

    return NULL;
}


/* the size of one element of a repeated field, as protobuf-c stores it */

static size_t
ngx_http_im_pb_type_size(ProtobufCType type)
{
    switch (type) {

    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_ENUM:
        return 4;

    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;

    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);

    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);

    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);

    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }

    return 0;
}


/* pb -> JSON: the wire scan */

static int
ngx_http_im_pb_varint(const unsigned char **pp, const unsigned char *last,
    uint64_t *v)
{
    unsigned              shift;
    const unsigned char  *p;

    p = *pp;
    *v = 0;

    for (shift = 0; shift < 64; shift += 7) {
        if (p == last) {
            return -1;
        }

        *v |= (uint64_t) (*p & 0x7f) << shift;

        if ((*p++ & 0x80) == 0) {
            *pp = p;
            return 0;
        }
    }

    return -1;
}


static int
ngx_http_im_pb_wire_type(ProtobufCType type)
{
    switch (type) {

    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
        return PROTOBUF_C_WIRE_TYPE_32BIT;

    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return PROTOBUF_C_WIRE_TYPE_64BIT;

    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE:
        return PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED;

    default:
        return PROTOBUF_C_WIRE_TYPE_VARINT;
    }
}


/* the number of elements of a packed repeated field of wire type "wt" */

static int
ngx_http_im_pb_packed_count(int wt, const unsigned char *p, size_t n,
    size_t *count)
{
    size_t  i;

    switch (wt) {

    case PROTOBUF_C_WIRE_TYPE_32BIT:
        *count = n / 4;
        return (n % 4) ? -1 : 0;

    case PROTOBUF_C_WIRE_TYPE_64BIT:
        *count = n / 8;
        return (n % 8) ? -1 : 0;
    }

    *count = 0;

    for (i = 0; i < n; i++) {
        if ((p[i] & 0x80) == 0) {
            (*count)++;
        }
    }

    return (n && (p[n - 1] & 0x80)) ? -1 : 0;
}


/*
 * Checks the wire encoding of a "d" message before protobuf-c unpacks it:
 * tags, lengths and wire types, nesting, the number of elements of each
 * repeated field, and the text of strings (and of bytes, if
 * ctx->bytes_text).  Unknown fields are skipped.
 */

static int
ngx_http_im_pb_scan(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, const unsigned char *p, size_t len,
    unsigned depth)
{
    int                              wt, want, packed;
    size_t                           idx, k, n, old;
    size_t                           count[NGX_HTTP_IM_PB_MAX_FIELDS];
    uint64_t                         tag, v;
    const unsigned char             *last, *q;
    const ProtobufCFieldDescriptor  *f;

    if (depth > NGX_HTTP_IM_PB_MAX_DEPTH) {
        return ngx_http_im_pb_wire_error(ctx, "nesting too deep");
    }

    memset(count, 0, sizeof(count));
    last = p + len;

    while (p < last) {

        if (ngx_http_im_pb_varint(&p, last, &tag) != 0) {
            return ngx_http_im_pb_wire_error(ctx, "bad tag");
        }

        if ((tag >> 3) == 0 || (tag >> 3) > 0x1fffffff) {
            return ngx_http_im_pb_wire_error(ctx, "bad field number");
        }

        wt = (int) (tag & 7);
        q = p;
        n = 0;

        switch (wt) {

        case PROTOBUF_C_WIRE_TYPE_VARINT:
            if (ngx_http_im_pb_varint(&p, last, &v) != 0) {
                return ngx_http_im_pb_wire_error(ctx, "bad varint");
            }

            break;

        case PROTOBUF_C_WIRE_TYPE_64BIT:
        case PROTOBUF_C_WIRE_TYPE_32BIT:
            n = (wt == PROTOBUF_C_WIRE_TYPE_64BIT) ? 8 : 4;

            if ((size_t) (last - p) < n) {
                return ngx_http_im_pb_wire_error(ctx, "truncated");
            }

            p += n;
            break;

        case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED:
            if (ngx_http_im_pb_varint(&p, last, &v) != 0
                || v > (uint64_t) (last - p))
            {
                return ngx_http_im_pb_wire_error(ctx, "truncated");
            }

            q = p;
            n = (size_t) v;
            p += n;
            break;

        default:
            return ngx_http_im_pb_wire_error(ctx, "unsupported wire type");
        }

        f = protobuf_c_message_descriptor_get_field(d, (unsigned) (tag >> 3));
        if (f == NULL) {
            continue;
        }

        want = ngx_http_im_pb_wire_type(f->type);
        packed = (f->label == PROTOBUF_C_LABEL_REPEATED
                  && wt == PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED
                  && want != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED);

        old = ngx_http_im_pb_path_add(ctx, f->name, strlen(f->name), 1);

        if (wt != want && !packed) {
            return ngx_http_im_pb_wire_error(ctx, "wrong wire type");
        }

        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            k = 1;

            if (packed && ngx_http_im_pb_packed_count(want, q, n, &k) != 0) {
                return ngx_http_im_pb_wire_error(ctx, "bad packed field");
            }

            idx = (size_t) (f - d->fields);

            if (idx < NGX_HTTP_IM_PB_MAX_FIELDS) {
                count[idx] += k;

                if (count[idx] > NGX_HTTP_IM_PB_MAX_REPEATED) {
                    return ngx_http_im_pb_too_many(ctx,
                               ngx_http_im_pb_is_map(f) ? "entries"
                                                        : "elements");
                }

                if (!packed) {
                    ngx_http_im_pb_path_index(ctx, count[idx] - 1);
                }
            }
        }

        if (wt == PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED && !packed
            && ngx_http_im_pb_scan_field(ctx, f, q, n, depth) != 0)
        {
            return -1;
        }

        ngx_http_im_pb_path_pop(ctx, old);
    }

    return 0;
}


static int
ngx_http_im_pb_scan_field(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCFieldDescriptor *f, const unsigned char *p, size_t len,
    unsigned depth)
{
    switch (f->type) {

    case PROTOBUF_C_TYPE_STRING:
        return ngx_http_im_pb_text_check(ctx, p, len);

    case PROTOBUF_C_TYPE_BYTES:
        return ctx->bytes_text ? ngx_http_im_pb_text_check(ctx, p, len) : 0;

    case PROTOBUF_C_TYPE_MESSAGE:
        return ngx_http_im_pb_scan(ctx, f->descriptor, p, len, depth + 1);

    default:
        return 0;
    }
}


/*
 * protobuf_c_message_unpack() with an allocator that refuses to go past
 * a budget proportional to the input, so that small inputs (say, many
 * empty messages) cannot take much memory.  What it unpacks is released
 * with protobuf_c_message_free_unpacked(m, NULL): the memory is malloc()'s.
 */

static ProtobufCMessage *
ngx_http_im_pb_unpack(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, const unsigned char *pb, size_t len)
{
    ProtobufCMessage         *m;
    ngx_http_im_pb_budget_t   budget;

    budget.allocator.alloc = ngx_http_im_pb_budget_alloc;
    budget.allocator.free = ngx_http_im_pb_budget_free;
    budget.allocator.allocator_data = &budget;
    budget.used = 0;
    budget.max = NGX_HTTP_IM_PB_MEM_MIN + len * NGX_HTTP_IM_PB_MEM_RATIO;
    budget.exhausted = 0;

    m = protobuf_c_message_unpack(d, &budget.allocator, len, pb);

    if (m == NULL) {
        ngx_http_im_pb_wire_error(ctx, budget.exhausted ? "message too large"
                                                        : "cannot unpack");
    }

    return m;
}


static void *
ngx_http_im_pb_budget_alloc(void *data, size_t size)
{
    ngx_http_im_pb_budget_t  *budget = data;

    if (size > budget->max - budget->used) {
        budget->exhausted = 1;
        return NULL;
    }

    budget->used += size;

    return malloc(size ? size : 1);
}


static void
ngx_http_im_pb_budget_free(void *data, void *p)
{
    (void) data;

    free(p);
}


/* pb -> JSON: the writer */

static int
ngx_http_im_pb_write_msg(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, const ProtobufCMessage *m,
    unsigned depth)
{
    int                              rc, first;
    void                            *def;
    size_t                           i, old;
    ngx_http_im_buf_t               *b;
    const ProtobufCFieldDescriptor  *f;

    if (depth > NGX_HTTP_IM_PB_MAX_DEPTH) {
        return ngx_http_im_pb_error(ctx, "is nested too deeply");
    }

    def = NULL;

    if (m == NULL) {
        /* an absent message reads as one of defaults */

        def = malloc(d->sizeof_message);
        if (def == NULL) {
            return ngx_http_im_pb_error(ctx, "out of memory");
        }

        protobuf_c_message_init(d, def);
        m = def;
    }

    b = ctx->out;
    rc = 0;
    first = 1;

    ngx_http_im_buf_add(b, "{", 1);

    for (i = 0; i < d->n_fields; i++) {
        f = &d->fields[i];

        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
            && *(const uint32_t *) ((const char *) m + f->quantifier_offset)
               != f->id)
        {
            continue;
        }

        if (!first) {
            ngx_http_im_buf_add(b, ",", 1);
        }

        first = 0;

        ngx_http_im_buf_json_str(b, f->name, strlen(f->name));
        ngx_http_im_buf_add(b, ":", 1);

        old = ngx_http_im_pb_path_add(ctx, f->name, strlen(f->name), 1);
        rc = ngx_http_im_pb_write_field(ctx, d, f, m, depth);
        ngx_http_im_pb_path_pop(ctx, old);

        if (rc != 0 || b->failed) {
            break;
        }
    }

    ngx_http_im_buf_add(b, "}", 1);

    free(def);

    return rc;
}


static int
ngx_http_im_pb_write_field(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f,
    const ProtobufCMessage *m, unsigned depth)
{
    size_t                i, n, size;
    const char           *member, *elts;
    ngx_http_im_buf_t    *b;

    member = (const char *) m + f->offset;

    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
        return ngx_http_im_pb_write_value(ctx, d, f, member, depth);
    }

    n = *(const size_t *) ((const char *) m + f->quantifier_offset);
    elts = *(const char *const *) member;

    if (n > NGX_HTTP_IM_PB_MAX_REPEATED) {
        return ngx_http_im_pb_too_many(ctx, ngx_http_im_pb_is_map(f)
                                            ? "entries" : "elements");
    }

    if (n && elts == NULL) {
        return ngx_http_im_pb_error(ctx, "is missing");
    }

    if (ngx_http_im_pb_is_map(f)) {
        return ngx_http_im_pb_write_map(ctx, f,
                                        (ProtobufCMessage *const *) elts, n,
                                        depth);
    }

    b = ctx->out;
    size = ngx_http_im_pb_type_size(f->type);

    ngx_http_im_buf_add(b, "[", 1);

    for (i = 0; i < n; i++) {
        if (i) {
            ngx_http_im_buf_add(b, ",", 1);
        }

        if (ngx_http_im_pb_write_value(ctx, d, f, elts + i * size, depth)
            != 0)
        {
            return -1;
        }
    }

    ngx_http_im_buf_add(b, "]", 1);

    return 0;
}


static int
ngx_http_im_pb_write_map(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCFieldDescriptor *f, ProtobufCMessage *const *entries,
    size_t n, unsigned depth)
{
    size_t                             i, old, klen;
    const char                        *e, *key;
    ngx_http_im_buf_t                 *b;
    const ProtobufCFieldDescriptor    *kf, *vf;
    const ProtobufCMessageDescriptor  *ed;

    b = ctx->out;
    ed = f->descriptor;
    kf = &ed->fields[0];
    vf = &ed->fields[1];

    ngx_http_im_buf_add(b, "{", 1);

    for (i = 0; i < n; i++) {
        e = (const char *) entries[i];
        if (e == NULL) {
            return ngx_http_im_pb_error(ctx, "is missing an entry");
        }

        if (i) {
            ngx_http_im_buf_add(b, ",", 1);
        }

        if (ngx_http_im_pb_write_key(ctx, kf, e + kf->offset) != 0) {
            return -1;
        }

        ngx_http_im_buf_add(b, ":", 1);

        key = (kf->type == PROTOBUF_C_TYPE_STRING)
              ? *(char *const *) (e + kf->offset) : NULL;
        klen = key ? strlen(key) : 0;
        old = ngx_http_im_pb_path_add(ctx, key,
                                      klen < NGX_HTTP_IM_PB_KEY_LEN
                                      ? klen : NGX_HTTP_IM_PB_KEY_LEN, 1);

        if (ngx_http_im_pb_write_value(ctx, ed, vf, e + vf->offset,
                                       depth + 1)
            != 0)
        {
            return -1;
        }

        ngx_http_im_pb_path_pop(ctx, old);
    }

    ngx_http_im_buf_add(b, "}", 1);

    return 0;
}


/* a map key as a JSON object key: strings as they are, numbers as text */

static int
ngx_http_im_pb_write_key(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCFieldDescriptor *f, const void *p)
{
    const char         *s;
    ngx_http_im_buf_t  *b;

    b = ctx->out;

    switch (f->type) {

    case PROTOBUF_C_TYPE_STRING:
        s = *(char *const *) p;
        if (s == NULL) {
            s = "";
        }

        ngx_http_im_buf_json_str(b, s, strlen(s));
        return 0;

    case PROTOBUF_C_TYPE_BOOL:
        ngx_http_im_buf_str(b, *(const protobuf_c_boolean *) p
                               ? "\"true\"" : "\"false\"");
        return 0;

    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE:
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        return ngx_http_im_pb_error(ctx, "has an unsupported key type");

    default:
        ngx_http_im_buf_add(b, "\"", 1);

        if (ngx_http_im_pb_write_value(ctx, NULL, f, p, 0) != 0) {
            return -1;
        }

        ngx_http_im_buf_add(b, "\"", 1);
        return 0;
    }
}


static int
ngx_http_im_pb_write_value(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f,
    const void *p, unsigned depth)
{
    int                              n;
    char                             tmp[32];
    double                           dv;
    const char                      *s;
    ngx_http_im_buf_t               *b;
    const ProtobufCMessage          *sub;
    const ProtobufCBinaryData       *bd;
    const ProtobufCFieldDescriptor  *lf;

    b = ctx->out;

    switch (f->type) {

    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        ngx_http_im_buf_int(b, *(const int32_t *) p);
        return 0;

    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        ngx_http_im_buf_int(b, *(const uint32_t *) p);
        return 0;

    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        ngx_http_im_buf_int(b, *(const int64_t *) p);
        return 0;

    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        ngx_http_im_pb_write_uint(b, *(const uint64_t *) p);
        return 0;

    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        dv = (f->type == PROTOBUF_C_TYPE_FLOAT) ? *(const float *) p
                                                : *(const double *) p;

        if (!isfinite(dv)) {
            return ngx_http_im_pb_error(ctx, "is not a finite number");
        }

        n = snprintf(tmp, sizeof(tmp), "%.17g", dv);
        ngx_http_im_buf_add(b, tmp, (size_t) n);
        return 0;

    case PROTOBUF_C_TYPE_BOOL:
        ngx_http_im_buf_str(b, *(const protobuf_c_boolean *) p ? "true"
                                                                : "false");
        return 0;

    case PROTOBUF_C_TYPE_STRING:
        s = *(char *const *) p;
        if (s == NULL) {
            s = "";
        }

        ngx_http_im_buf_json_str(b, s, strlen(s));
        return 0;

    case PROTOBUF_C_TYPE_BYTES:
        bd = p;

        if (bd->len == 0) {
            ngx_http_im_buf_add(b, "\"\"", 2);
            return 0;
        }

        ngx_http_im_buf_json_str(b, (const char *) bd->data, bd->len);
        return 0;

    case PROTOBUF_C_TYPE_MESSAGE:
        sub = *(ProtobufCMessage *const *) p;
        lf = d ? ngx_http_im_pb_short_list(d, f) : NULL;

        if (lf == NULL) {
            return ngx_http_im_pb_write_msg(ctx, f->descriptor, sub,
                                            depth + 1);
        }

        if (sub == NULL) {
            ngx_http_im_buf_add(b, "[]", 2);
            return 0;
        }

        return ngx_http_im_pb_write_field(ctx, f->descriptor, lf, sub,
                                          depth + 1);

    default:
        return ngx_http_im_pb_error(ctx, "has an unsupported type");
    }
}


static void
ngx_http_im_pb_write_uint(ngx_http_im_buf_t *b, unsigned long long v)
{
    int   n;
    char  tmp[32];

    n = snprintf(tmp, sizeof(tmp), "%llu", v);

    ngx_http_im_buf_add(b, tmp, (size_t) n);
}


/* JSON -> pb: the pool */

static void *
ngx_http_im_pb_palloc(ngx_http_im_pb_ctx_t *ctx, size_t size)
{
    size_t                   hdr, bsize;
    unsigned char           *p;
    ngx_http_im_pb_block_t  *blk;

    size = ngx_http_im_pb_align(size ? size : 1);
    hdr = ngx_http_im_pb_align(sizeof(ngx_http_im_pb_block_t));
    blk = ctx->pool.blocks;

    if (blk && blk->size - blk->used >= size) {
        p = (unsigned char *) blk + hdr + blk->used;
        blk->used += size;
        return p;
    }

    bsize = (size > NGX_HTTP_IM_PB_BLOCK) ? size : NGX_HTTP_IM_PB_BLOCK;

    if (bsize > NGX_HTTP_IM_PB_MAX_MEM - ctx->pool.total) {
        ngx_http_im_pb_error(ctx, "makes the message too large");
        return NULL;
    }

    blk = malloc(hdr + bsize);
    if (blk == NULL) {
        ngx_http_im_pb_error(ctx, "out of memory");
        return NULL;
    }

    ctx->pool.total += bsize;

    /* an oversized block goes second, so the current one stays in use */

    if (size > NGX_HTTP_IM_PB_BLOCK && ctx->pool.blocks) {
        blk->next = ctx->pool.blocks->next;
        ctx->pool.blocks->next = blk;

    } else {
        blk->next = ctx->pool.blocks;
        ctx->pool.blocks = blk;
    }

    blk->size = bsize;
    blk->used = size;

    return (unsigned char *) blk + hdr;
}


static void
ngx_http_im_pb_pool_free(ngx_http_im_pb_pool_t *pool)
{
    ngx_http_im_pb_block_t  *blk, *next;

    for (blk = pool->blocks; blk; blk = next) {
        next = blk->next;
        free(blk);
    }

    pool->blocks = NULL;
    pool->total = 0;
}


/* JSON -> pb: the reader */

static int
ngx_http_im_pb_read_msg(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, yajl_val obj, unsigned depth,
    ProtobufCMessage **out)
{
    size_t                           i, idx, old;
    yajl_val                         v;
    const char                      *key;
    unsigned char                    seen[NGX_HTTP_IM_PB_MAX_FIELDS];
    ProtobufCMessage                *m;
    const ProtobufCFieldDescriptor  *f;

    if (depth > NGX_HTTP_IM_PB_MAX_DEPTH) {
        return ngx_http_im_pb_error(ctx, "is nested too deeply");
    }

    if (!YAJL_IS_OBJECT(obj)) {
        return ngx_http_im_pb_error(ctx, "must be an object");
    }

    m = ngx_http_im_pb_palloc(ctx, d->sizeof_message);
    if (m == NULL) {
        return -1;
    }

    protobuf_c_message_init(d, m);
    memset(seen, 0, sizeof(seen));

    /*
     * Each key is looked up by name (a binary search); of keys given
     * twice the first counts, as with ngx_http_im_json_get().
     */

    for (i = 0; i < obj->u.object.len; i++) {
        key = obj->u.object.keys[i];

        f = protobuf_c_message_descriptor_get_field_by_name(d, key);
        if (f == NULL) {
            continue;
        }

        idx = (size_t) (f - d->fields);

        if (idx < NGX_HTTP_IM_PB_MAX_FIELDS) {
            if (seen[idx]) {
                continue;
            }

            seen[idx] = 1;
        }

        v = obj->u.object.values[i];
        if (v == NULL || YAJL_IS_NULL(v)) {
            continue;
        }

        old = ngx_http_im_pb_path_add(ctx, f->name, strlen(f->name), 1);

        if (ngx_http_im_pb_read_field(ctx, d, f, m, v, depth) != 0) {
            return -1;
        }

        ngx_http_im_pb_path_pop(ctx, old);
    }

    *out = m;

    return 0;
}


static int
ngx_http_im_pb_read_field(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f,
    ProtobufCMessage *m, yajl_val v, unsigned depth)
{
    char    *member, *elts;
    size_t   i, n, size, old;

    member = (char *) m + f->offset;

    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
        if (ngx_http_im_pb_read_value(ctx, d, f, v, member, depth) != 0) {
            return -1;
        }

        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            *(uint32_t *) ((char *) m + f->quantifier_offset) = f->id;

        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            ngx_http_im_pb_drop_empty((ProtobufCMessage **) member);

        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL
                   && f->type != PROTOBUF_C_TYPE_STRING
                   && f->type != PROTOBUF_C_TYPE_MESSAGE)
        {
            *(protobuf_c_boolean *) ((char *) m + f->quantifier_offset) = 1;
        }

        return 0;
    }

    if (ngx_http_im_pb_is_map(f)) {
        return ngx_http_im_pb_read_map(ctx, f, m, v, depth);
    }

    if (!YAJL_IS_ARRAY(v)) {
        return ngx_http_im_pb_error(ctx, "must be an array");
    }

    n = v->u.array.len;

    if (n > NGX_HTTP_IM_PB_MAX_REPEATED) {
        return ngx_http_im_pb_too_many(ctx, "elements");
    }

    elts = NULL;

    if (n) {
        size = ngx_http_im_pb_type_size(f->type);

        elts = ngx_http_im_pb_palloc(ctx, n * size);
        if (elts == NULL) {
            return -1;
        }

        for (i = 0; i < n; i++) {
            old = ngx_http_im_pb_path_index(ctx, i);

            if (ngx_http_im_pb_read_value(ctx, d, f, v->u.array.values[i],
                                          elts + i * size, depth)
                != 0)
            {
                return -1;
            }

            ngx_http_im_pb_path_pop(ctx, old);
        }
    }

    *(size_t *) ((char *) m + f->quantifier_offset) = n;
    *(char **) member = elts;

    return 0;
}


static int
ngx_http_im_pb_read_map(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCFieldDescriptor *f, ProtobufCMessage *m, yajl_val v,
    unsigned depth)
{
    char                              *e;
    size_t                             i, n, old, klen;
    yajl_val                           val;
    const char                        *key;
    ProtobufCMessage                 **entries;
    const ProtobufCFieldDescriptor    *kf, *vf;
    const ProtobufCMessageDescriptor  *ed;

    if (!YAJL_IS_OBJECT(v)) {
        return ngx_http_im_pb_error(ctx, "must be an object");
    }

    n = v->u.object.len;

    if (n > NGX_HTTP_IM_PB_MAX_REPEATED) {
        return ngx_http_im_pb_too_many(ctx, "entries");
    }

    ed = f->descriptor;
    kf = &ed->fields[0];
    vf = &ed->fields[1];
    entries = NULL;

    if (n) {
        entries = ngx_http_im_pb_palloc(ctx, n * sizeof(ProtobufCMessage *));
        if (entries == NULL) {
            return -1;
        }
    }

    for (i = 0; i < n; i++) {
        e = ngx_http_im_pb_palloc(ctx, ed->sizeof_message);
        if (e == NULL) {
            return -1;
        }

        protobuf_c_message_init(ed, e);
        entries[i] = (ProtobufCMessage *) e;

        key = v->u.object.keys[i];
        val = v->u.object.values[i];

        klen = strlen(key);
        old = ngx_http_im_pb_path_add(ctx, key,
                                      klen < NGX_HTTP_IM_PB_KEY_LEN
                                      ? klen : NGX_HTTP_IM_PB_KEY_LEN, 1);

        if (ngx_http_im_pb_read_key(ctx, kf, key, e + kf->offset) != 0) {
            return -1;
        }

        /* a null value is the default one */

        if (val && !YAJL_IS_NULL(val)
            && ngx_http_im_pb_read_value(ctx, ed, vf, val, e + vf->offset,
                                         depth + 1)
               != 0)
        {
            return -1;
        }

        if (vf->type == PROTOBUF_C_TYPE_MESSAGE) {
            ngx_http_im_pb_drop_empty((ProtobufCMessage **) (e + vf->offset));
        }

        ngx_http_im_pb_path_pop(ctx, old);
    }

    *(size_t *) ((char *) m + f->quantifier_offset) = n;
    *(ProtobufCMessage ***) ((char *) m + f->offset) = entries;

    return 0;
}


/* a map key from a JSON object key: strings, or numbers and booleans */

static int
ngx_http_im_pb_read_key(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCFieldDescriptor *f, const char *key, void *dst)
{
    char                    *end;
    long long                v;
    unsigned long long       u;

    switch (f->type) {

    case PROTOBUF_C_TYPE_STRING:
        if (ngx_http_im_pb_text_check(ctx, (const unsigned char *) key,
                                      strlen(key))
            != 0)
        {
            return -1;
        }

        *(const char **) dst = key;
        return 0;

    case PROTOBUF_C_TYPE_BOOL:
        if (strcmp(key, "true") != 0 && strcmp(key, "false") != 0) {
            return ngx_http_im_pb_error(ctx, "must be keyed by booleans");
        }

        *(protobuf_c_boolean *) dst = (key[0] == 't');
        return 0;

    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        errno = 0;
        u = strtoull(key, &end, 10);

        if (!ngx_http_im_pb_digits(key, 0) || *end || errno
            || (ngx_http_im_pb_type_size(f->type) == 4 && u > UINT32_MAX))
        {
            return ngx_http_im_pb_error(ctx, "must be keyed by integers");
        }

        if (ngx_http_im_pb_type_size(f->type) == 4) {
            *(uint32_t *) dst = (uint32_t) u;

        } else {
            *(uint64_t *) dst = u;
        }

        return 0;

    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        errno = 0;
        v = strtoll(key, &end, 10);

        if (!ngx_http_im_pb_digits(key, 1) || *end || errno
            || (ngx_http_im_pb_type_size(f->type) == 4
                && (v < INT32_MIN || v > INT32_MAX)))
        {
            return ngx_http_im_pb_error(ctx, "must be keyed by integers");
        }

        if (ngx_http_im_pb_type_size(f->type) == 4) {
            *(int32_t *) dst = (int32_t) v;

        } else {
            *(int64_t *) dst = v;
        }

        return 0;

    default:
        return ngx_http_im_pb_error(ctx, "has an unsupported key type");
    }
}


static int
ngx_http_im_pb_read_value(ngx_http_im_pb_ctx_t *ctx,
    const ProtobufCMessageDescriptor *d, const ProtobufCFieldDescriptor *f,
    yajl_val v, void *dst, unsigned depth)
{
    long long                          iv;
    unsigned long long                 uv;
    ProtobufCMessage                  *sub;
    ProtobufCBinaryData               *bd;
    const ProtobufCFieldDescriptor    *lf;
    const ProtobufCMessageDescriptor  *sd;

    switch (f->type) {

    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_ENUM:
        if (ngx_http_im_pb_read_int(ctx, v, INT32_MIN, INT32_MAX, &iv) != 0) {
            return -1;
        }

        *(int32_t *) dst = (int32_t) iv;
        return 0;

    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (ngx_http_im_pb_read_uint(ctx, v, UINT32_MAX, &uv) != 0) {
            return -1;
        }

        *(uint32_t *) dst = (uint32_t) uv;
        return 0;

    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (ngx_http_im_pb_read_int(ctx, v, LLONG_MIN, LLONG_MAX, &iv) != 0) {
            return -1;
        }

        *(int64_t *) dst = (int64_t) iv;
        return 0;

    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (ngx_http_im_pb_read_uint(ctx, v, UINT64_MAX, &uv) != 0) {
            return -1;
        }

        *(uint64_t *) dst = (uint64_t) uv;
        return 0;

    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!YAJL_IS_NUMBER(v)) {
            return ngx_http_im_pb_error(ctx, "must be a number");
        }

        if (!YAJL_IS_DOUBLE(v)
            || (f->type == PROTOBUF_C_TYPE_FLOAT
                && fabs(v->u.number.d) > FLT_MAX))
        {
            return ngx_http_im_pb_error(ctx, "is out of range");
        }

        if (f->type == PROTOBUF_C_TYPE_FLOAT) {
            *(float *) dst = (float) v->u.number.d;

        } else {
            *(double *) dst = v->u.number.d;
        }

        return 0;

    case PROTOBUF_C_TYPE_BOOL:
        if (!YAJL_IS_TRUE(v) && !YAJL_IS_FALSE(v)) {
            return ngx_http_im_pb_error(ctx, "must be a boolean");
        }

        *(protobuf_c_boolean *) dst = YAJL_IS_TRUE(v);
        return 0;

    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES:
        if (!YAJL_IS_STRING(v)) {
            return ngx_http_im_pb_error(ctx, "must be a string");
        }

        /* yajl may decode lone surrogate escapes into invalid UTF-8 */

        if (ngx_http_im_pb_text_check(ctx,
                                      (const unsigned char *) v->u.string,
                                      strlen(v->u.string))
            != 0)
        {
            return -1;
        }

        if (f->type == PROTOBUF_C_TYPE_STRING) {
            *(const char **) dst = v->u.string;
            return 0;
        }

        bd = dst;
        bd->data = (uint8_t *) v->u.string;
        bd->len = strlen(v->u.string);
        return 0;

    case PROTOBUF_C_TYPE_MESSAGE:
        lf = ngx_http_im_pb_short_list(d, f);

        if (lf == NULL || !YAJL_IS_ARRAY(v)) {
            return ngx_http_im_pb_read_msg(ctx, f->descriptor, v, depth + 1,
                                           (ProtobufCMessage **) dst);
        }

        /* the short form: the list alone */

        sd = f->descriptor;

        sub = ngx_http_im_pb_palloc(ctx, sd->sizeof_message);
        if (sub == NULL) {
            return -1;
        }

        protobuf_c_message_init(sd, sub);
        *(ProtobufCMessage **) dst = sub;

        return ngx_http_im_pb_read_field(ctx, sd, lf, sub, v, depth + 1);

    default:
        return ngx_http_im_pb_error(ctx, "has an unsupported type");
    }
}


/*
 * A message of defaults only is left out, as if absent: our JSON cannot
 * tell the two apart (it writes an absent message as one of defaults), so
 * JSON -> pb gives the shortest encoding, the one a protobuf encoder gives.
 */

static void
ngx_http_im_pb_drop_empty(ProtobufCMessage **mp)
{
    if (*mp && protobuf_c_message_get_packed_size(*mp) == 0) {
        *mp = NULL;
    }
}


static int
ngx_http_im_pb_read_int(ngx_http_im_pb_ctx_t *ctx, yajl_val v, long long min,
    long long max, long long *out)
{
    if (!YAJL_IS_NUMBER(v)
        || (!YAJL_IS_INTEGER(v) && !ngx_http_im_pb_digits(v->u.number.r, 1)))
    {
        return ngx_http_im_pb_error(ctx, "must be an integer");
    }

    if (!YAJL_IS_INTEGER(v) || v->u.number.i < min || v->u.number.i > max) {
        return ngx_http_im_pb_error(ctx, "is out of range");
    }

    *out = v->u.number.i;

    return 0;
}


static int
ngx_http_im_pb_read_uint(ngx_http_im_pb_ctx_t *ctx, yajl_val v,
    unsigned long long max, unsigned long long *out)
{
    if (!YAJL_IS_NUMBER(v) || !ngx_http_im_pb_digits(v->u.number.r, 1)) {
        return ngx_http_im_pb_error(ctx, "must be an integer");
    }

    if (v->u.number.r[0] == '-') {
        return ngx_http_im_pb_error(ctx, "is out of range");
    }

    errno = 0;
    *out = strtoull(v->u.number.r, NULL, 10);

    if (errno || *out > max) {
        return ngx_http_im_pb_error(ctx, "is out of range");
    }

    return 0;
}


/* "s" is decimal digits, after a '-' if "sign" allows it */

static int
ngx_http_im_pb_digits(const char *s, int sign)
{
    if (sign && *s == '-') {
        s++;
    }

    if (*s == '\0') {
        return 0;
    }

    while (*s >= '0' && *s <= '9') {
        s++;
    }

    return *s == '\0';
}


/* appends "m" serialized to "out"; on failure "out" is as it was */

static int
ngx_http_im_pb_pack(ngx_http_im_pb_ctx_t *ctx, const ProtobufCMessage *m,
    ngx_http_im_buf_t *out)
{
    int                    failed;
    size_t                 start;
    ngx_http_im_pb_sink_t  sink;

    start = out->len;
    failed = out->failed;

    if (failed) {
        return ngx_http_im_pb_error(ctx, "output buffer failed");
    }

    sink.base.append = ngx_http_im_pb_sink_append;
    sink.out = out;

    protobuf_c_message_pack_to_buffer(m, &sink.base);

    if (out->failed) {
        out->len = start;
        out->failed = failed;
        return ngx_http_im_pb_error(ctx, "message too large");
    }

    return 0;
}


static void
ngx_http_im_pb_sink_append(ProtobufCBuffer *buffer, size_t len,
    const uint8_t *data)
{
    ngx_http_im_pb_sink_t  *sink = (ngx_http_im_pb_sink_t *) buffer;

    ngx_http_im_buf_add(sink->out, data, len);
}
