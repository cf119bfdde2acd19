
/*
 * libFuzzer target over the protobuf codec.  The first byte picks what the
 * rest is:
 *
 *   a data message of one of the descriptors: pb -> JSON must not crash
 *   or leak; JSON it writes must parse, go back to protobuf, and that
 *   protobuf must give the same JSON again;
 *
 *   a request envelope: ngx_http_im_pb_req_decode(), then a response
 *   echoing its fields, which must unpack to the same fields;
 *
 *   a descriptor (the second byte) and JSON text: ngx_http_im_json_to_pb()
 *   with it; what it accepts must come back from protobuf as JSON that is
 *   stable under another round.  (One descriptor per input, not all of
 *   them: sixteen times the executions for the same coverage.)
 *
 *   make -C t/unit fuzz && build/unit/fuzz/fuzz_pb -max_total_time=60
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "ngx_http_im_json.h"
#include "ngx_http_im_pb.h"
#include "im.pb-c.h"


#define FUZZ_ASSERT(cond)                                                   \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "fuzz_pb: %s:%d: %s\n", __FILE__, __LINE__,     \
                    #cond);                                                 \
            abort();                                                        \
        }                                                                   \
    } while (0)


static void fuzz_data(const ProtobufCMessageDescriptor *d,
    const uint8_t *data, size_t size);
static void fuzz_envelope(const uint8_t *data, size_t size);
static void fuzz_json(const ProtobufCMessageDescriptor *d,
    const uint8_t *data, size_t size);
static int fuzz_stable(const ProtobufCMessageDescriptor *d,
    const ngx_http_im_buf_t *json);


static const ProtobufCMessageDescriptor  *fuzz_descs[] = {
    &im__get_max_seq_req__descriptor,
    &im__get_max_seq_resp__descriptor,
    &im__pull_message_by_seqs_req__descriptor,
    &im__pull_message_by_seqs_resp__descriptor,
    &im__msg_data__descriptor,
    &im__send_msg_resp__descriptor,
    &im__get_seq_message_req__descriptor,
    &im__get_seq_message_resp__descriptor,
    &im__get_conversations_has_read_and_max_seq_req__descriptor,
    &im__get_conversations_has_read_and_max_seq_resp__descriptor,
    &im__push_messages__descriptor,
    &im__kick_online_msg__descriptor,
    &im__del_user_push_token_req__descriptor,
    &im__del_user_push_token_resp__descriptor,
    &im__offline_push_info__descriptor,
    &im__pull_msgs__descriptor
};

#define FUZZ_NDESCS  (sizeof(fuzz_descs) / sizeof(fuzz_descs[0]))


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t  pick;

    if (size == 0) {
        return 0;
    }

    pick = data[0] % (FUZZ_NDESCS + 2);

    if (pick < FUZZ_NDESCS) {
        fuzz_data(fuzz_descs[pick], data + 1, size - 1);

    } else if (pick == FUZZ_NDESCS) {
        fuzz_envelope(data + 1, size - 1);

    } else if (size > 1) {
        fuzz_json(fuzz_descs[data[1] % FUZZ_NDESCS], data + 2, size - 2);
    }

    return 0;
}


static void
fuzz_data(const ProtobufCMessageDescriptor *d, const uint8_t *data,
    size_t size)
{
    char               err[NGX_HTTP_IM_PB_ERRLEN];
    ngx_http_im_buf_t  json;

    ngx_http_im_buf_init(&json, 0);
    ngx_http_im_buf_str(&json, "[");

    if (ngx_http_im_pb_to_json(d, data, size, &json, err, sizeof(err)) != 0)
    {
        FUZZ_ASSERT(err[0] != '\0' && strchr(err, '\n') == NULL);
        FUZZ_ASSERT(json.len == 1 && !json.failed);
        ngx_http_im_buf_free(&json);
        return;
    }

    /* it appended to what was there */

    FUZZ_ASSERT(json.len > 2 && json.data[0] == '[' && json.data[1] == '{');

    json.data[0] = ' ';
    FUZZ_ASSERT(fuzz_stable(d, &json));

    ngx_http_im_buf_free(&json);
}


static void
fuzz_envelope(const uint8_t *data, size_t size)
{
    int                    rc;
    char                   err[NGX_HTTP_IM_PB_ERRLEN];
    yajl_val               v;
    Im__Resp              *resp;
    ngx_http_im_buf_t      out;
    ngx_http_im_pb_req_t   req;

    rc = ngx_http_im_pb_req_decode(data, size, &req, err, sizeof(err));

    if (rc == 0) {
        v = ngx_http_im_json_parse(req.data.data, req.data.len, err,
                                   sizeof(err));
        FUZZ_ASSERT(v != NULL && YAJL_IS_OBJECT(v));
        yajl_tree_free(v);

    } else {
        FUZZ_ASSERT(err[0] != '\0' && strchr(err, '\n') == NULL);
    }

    /* an answer echoes the fields, in either case */

    ngx_http_im_buf_init(&out, 0);

    if (req.req_identifier >= INT32_MIN && req.req_identifier <= INT32_MAX) {
        rc = ngx_http_im_pb_resp_encode(req.req_identifier, req.operation_id,
                                        req.msg_incr, 1001, err,
                                        (const unsigned char *) "{}", 2,
                                        &out, err, sizeof(err));
        FUZZ_ASSERT(rc == 0);

        resp = im__resp__unpack(NULL, out.len, out.data);
        FUZZ_ASSERT(resp != NULL);
        FUZZ_ASSERT(resp->reqidentifier == req.req_identifier);
        FUZZ_ASSERT(strlen(resp->operationid) == req.operation_id.len
                    && memcmp(resp->operationid, req.operation_id.data,
                              req.operation_id.len) == 0);
        FUZZ_ASSERT(strlen(resp->msgincr) == req.msg_incr.len
                    && memcmp(resp->msgincr, req.msg_incr.data,
                              req.msg_incr.len) == 0);
        FUZZ_ASSERT(resp->data.len == 0);
        im__resp__free_unpacked(resp, NULL);
    }

    ngx_http_im_buf_free(&out);
    ngx_http_im_pb_req_free(&req);
}


static void
fuzz_json(const ProtobufCMessageDescriptor *d, const uint8_t *data,
    size_t size)
{
    int                rc;
    char               err[NGX_HTTP_IM_PB_ERRLEN];
    yajl_val           v;
    ngx_http_im_buf_t  pb, json;

    v = ngx_http_im_json_parse(data, size, err, sizeof(err));
    if (v == NULL) {
        return;
    }

    ngx_http_im_buf_init(&pb, 0);
    ngx_http_im_buf_init(&json, 0);

    rc = ngx_http_im_json_to_pb(d, v, &pb, err, sizeof(err));

    if (rc != 0) {
        FUZZ_ASSERT(err[0] != '\0' && pb.len == 0 && !pb.failed);
        goto done;
    }

    rc = ngx_http_im_pb_to_json(d, pb.data, pb.len, &json, err, sizeof(err));

    if (rc != 0) {
        /* only the unpack budget may refuse what we packed */
        FUZZ_ASSERT(strcmp(err, "invalid protobuf: message too large") == 0);
        goto done;
    }

    FUZZ_ASSERT(fuzz_stable(d, &json));

done:

    ngx_http_im_buf_free(&pb);
    ngx_http_im_buf_free(&json);
    yajl_tree_free(v);
}


/* JSON written by pb_to_json -> pb -> JSON gives the same text */

static int
fuzz_stable(const ProtobufCMessageDescriptor *d, const ngx_http_im_buf_t *json)
{
    int                ok;
    char               err[NGX_HTTP_IM_PB_ERRLEN];
    yajl_val           v;
    ProtobufCMessage  *m;
    ngx_http_im_buf_t  pb, again;

    v = ngx_http_im_json_parse(json->data, json->len, err, sizeof(err));
    if (v == NULL) {
        fprintf(stderr, "fuzz_pb: %s: %.*s\n", err, (int) json->len,
                json->data);
        return 0;
    }

    ngx_http_im_buf_init(&pb, 0);
    ngx_http_im_buf_init(&again, 0);

    ok = ngx_http_im_json_to_pb(d, v, &pb, err, sizeof(err)) == 0;

    if (ok) {
        m = protobuf_c_message_unpack(d, NULL, pb.len, pb.data);
        ok = (m != NULL);

        if (m) {
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }

    if (ok) {
        ok = ngx_http_im_pb_to_json(d, pb.data, pb.len, &again, err,
                                    sizeof(err))
             == 0;
    }

    if (!ok) {
        fprintf(stderr, "fuzz_pb: %s\n", err);
    }

    /* the first text may start with a blank (see fuzz_data) */

    if (ok && json->data[0] == ' ') {
        ok = again.len == json->len - 1
             && memcmp(again.data, json->data + 1, again.len) == 0;

    } else if (ok) {
        ok = again.len == json->len
             && memcmp(again.data, json->data, again.len) == 0;
    }

    if (!ok) {
        fprintf(stderr, "fuzz_pb: unstable:\n%.*s\n%.*s\n", (int) json->len,
                json->data, (int) again.len, again.data);
    }

    yajl_tree_free(v);
    ngx_http_im_buf_free(&pb);
    ngx_http_im_buf_free(&again);

    return ok;
}
