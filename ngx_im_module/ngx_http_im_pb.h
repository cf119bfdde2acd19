
/*
 * ngx_im: the protobuf codec.  Binary WebSocket frames carry the messages
 * of im.proto; handlers speak JSON only.  This file transcodes between the
 * two, driven by the protobuf-c descriptors: a JSON key is the field of the
 * same name, so every reqIdentifier works alike in both encodings.  Pure C
 * (libc, yajl, protobuf-c); no nginx types, so it is unit-tested and
 * fuzzed outside nginx.
 *
 * JSON shapes: a message is an object holding every field; repeated fields
 * are arrays, maps objects, integers of 64 bits too are JSON numbers, and
 * bytes fields of data messages hold UTF-8 text (MsgData.content) written
 * as JSON strings.  pb -> JSON writes proto3 defaults ("", 0, false, [],
 * {}, and an object of defaults for an absent message), as our JSON
 * writers do.  One field is written in a short form: a PullMsgs inside
 * PushMessages.msgs is its "Msgs" array, so a 2001 push is
 * {"msgs":{"<conversationID>":[MsgData, ...]}} as in docs/protocol.md;
 * JSON -> pb takes that array or the full {"Msgs":[...],"isEnd":..}.
 *
 * Bounds: protobuf input over NGX_HTTP_IM_PB_MAX_INPUT bytes, nesting
 * deeper than NGX_HTTP_IM_PB_MAX_DEPTH and more than
 * NGX_HTTP_IM_PB_MAX_REPEATED elements in one repeated field or map are
 * refused, in both directions.  Strings must be UTF-8 without NUL bytes.
 * The largest answer, GetNewestSeq's, has its sizes below.
 *
 * Error texts written to "err" name the offending field, as the JSON codec
 * does ('field "seqRanges[0].begin" must be an integer'), or start with
 * "invalid protobuf: ".  They are answered with errCode 1001.
 */


#ifndef _NGX_HTTP_IM_PB_H_INCLUDED_
#define _NGX_HTTP_IM_PB_H_INCLUDED_


#include <stddef.h>

#include <protobuf-c/protobuf-c.h>
#include <yajl/yajl_tree.h>

#include "ngx_http_im_json.h"


#define NGX_HTTP_IM_PB_REQUEST       0
#define NGX_HTTP_IM_PB_RESPONSE      1
#define NGX_HTTP_IM_PB_PUSH          2

#define NGX_HTTP_IM_PB_MAX_INPUT     (4 * 1024 * 1024)
#define NGX_HTTP_IM_PB_MAX_JSON      (16 * 1024 * 1024)
#define NGX_HTTP_IM_PB_MAX_DEPTH     32

/*
 * The most elements of one repeated field, or entries of one map, in
 * either direction.  A GetNewestSeq (1001) answer has an entry per
 * conversation in each of its two maps, so im_max_conversations may not
 * exceed it (ngx_http_im_module.c refuses more).  Requests are bounded
 * further by their handlers (at most 1,000 IDs, seqs or @ users).
 */
#define NGX_HTTP_IM_PB_MAX_REPEATED  10000

/*
 * What one conversation adds to a GetNewestSeq answer at most, in either
 * encoding: an entry "<conv>":<seq> in each of two maps.  A conversation
 * ID has at most NGX_HTTP_IM_PB_CONV_MAX bytes ("si_<uid>_<uid>", user
 * IDs of at most 64 bytes of characters that JSON writes as they are).
 * Beyond the ID an entry takes, in JSON, two quotes, a colon, a comma and
 * the at most 20 characters of an int64 (24 bytes); in protobuf three
 * tags, two lengths of two bytes and a 10-byte varint (17 bytes).
 */
#define NGX_HTTP_IM_PB_CONV_MAX      132
#define NGX_HTTP_IM_PB_NEWEST_CONV   (2 * (NGX_HTTP_IM_PB_CONV_MAX + 24))

/*
 * The largest GetNewestSeq frame for n conversations, answering a request
 * of at most "req" bytes (the answer echoes its operationID and msgIncr):
 * the maps, the echo, and 1k for the rest of the envelope and the frame
 * header.
 */
#define NGX_HTTP_IM_PB_NEWEST_SIZE(n, req)                                    \
    ((n) * NGX_HTTP_IM_PB_NEWEST_CONV + (req) + 1024)

/* a size for "err" buffers that fits every message of this file */
#define NGX_HTTP_IM_PB_ERRLEN        256


/*
 * A decoded request envelope (im.Req).  The strings point into "env", the
 * unpacked message, and are valid UTF-8; "data" holds the JSON text of
 * the request's data (malloc()ed).  ngx_http_im_pb_req_free() releases
 * both.
 */
typedef struct {
    long long                  req_identifier;
    ngx_http_im_str_t          operation_id;
    ngx_http_im_str_t          msg_incr;
    ngx_http_im_str_t          send_id;
    ngx_http_im_str_t          token;
    ngx_http_im_buf_t          data;
    ProtobufCMessage          *env;
    yajl_val                   root;         /* a JS SDK envelope */
} ngx_http_im_pb_req_t;


/*
 * The data message of "req_identifier" in direction NGX_HTTP_IM_PB_REQUEST,
 * _RESPONSE or _PUSH (2001 and 2002 have only a push message); NULL if it
 * has none.
 */
const ProtobufCMessageDescriptor *ngx_http_im_pb_descriptor(
    long long req_identifier, int dir);

/*
 * Decodes "len" bytes of a "d" message and appends its JSON to "out" (one
 * compact object, fields in field number order).  Returns 0, or -1 with an
 * error text; then "out" is as it was.
 */
int ngx_http_im_pb_to_json(const ProtobufCMessageDescriptor *d,
    const unsigned char *pb, size_t len, ngx_http_im_buf_t *out, char *err,
    size_t errlen);

/*
 * Fills a "d" message from the object "json" (NULL or null: an empty
 * message) and appends it, serialized, to "out".  Unknown keys are
 * ignored, null members read as absent; a member of the wrong type is an
 * error naming it.  Returns 0, or -1 with an error text; then "out" is as
 * it was.
 */
int ngx_http_im_json_to_pb(const ProtobufCMessageDescriptor *d,
    yajl_val json, ngx_http_im_buf_t *out, char *err, size_t errlen);

/*
 * Decodes a binary frame: an im.Req whose data is transcoded to JSON with
 * the request message of its reqIdentifier.  An unknown reqIdentifier
 * reads as data "{}"; the caller answers it with 1001.  Returns 0, or -1
 * with an error text; envelope fields decoded before an error stay set, so
 * an error answer can echo them.  Call ngx_http_im_pb_req_free() in either
 * case.
 */
int ngx_http_im_pb_req_decode(const unsigned char *frame, size_t len,
    ngx_http_im_pb_req_t *req, char *err, size_t errlen);
void ngx_http_im_pb_req_free(ngx_http_im_pb_req_t *req);

/*
 * Appends an im.Resp to "out": the envelope fields, and as data the JSON
 * "data_json" transcoded with the response message of "req_identifier"
 * (its push message for 2001 and 2002).  Without such a message, or with
 * no data_json (NULL or length 0), data is empty.  Strings that are not
 * UTF-8 get U+FFFD for each bad byte; "err_msg" may be NULL, or "err"
 * itself (the error of ngx_http_im_pb_req_decode()).  Returns 0, or -1
 * with an error text (data_json not valid JSON or not of the message's
 * shape, "out" full); then "out" is as it was.
 */
int ngx_http_im_pb_resp_encode(long long req_identifier,
    ngx_http_im_str_t operation_id, ngx_http_im_str_t msg_incr,
    int err_code, const char *err_msg, const unsigned char *data_json,
    size_t data_json_len, ngx_http_im_buf_t *out, char *err, size_t errlen);

/*
 * The OpenIM JS SDK's frames (sdkType=js at the handshake): a JSON
 * envelope, as a text frame's, whose "data" is a string, the padded base64
 * of the protobuf data message.  ngx_http_im_pb_js_req_decode() reads one
 * into "req" as ngx_http_im_pb_req_decode() does (token stays empty);
 * ngx_http_im_pb_js_resp_encode() writes an answer or push as
 * ngx_http_im_pb_resp_encode() does, in that form.
 */
typedef int (*ngx_http_im_pb_resp_encode_pt)(long long req_identifier,
    ngx_http_im_str_t operation_id, ngx_http_im_str_t msg_incr,
    int err_code, const char *err_msg, const unsigned char *data_json,
    size_t data_json_len, ngx_http_im_buf_t *out, char *err, size_t errlen);

int ngx_http_im_pb_js_req_decode(const unsigned char *frame, size_t len,
    ngx_http_im_pb_req_t *req, char *err, size_t errlen);
int ngx_http_im_pb_js_resp_encode(long long req_identifier,
    ngx_http_im_str_t operation_id, ngx_http_im_str_t msg_incr,
    int err_code, const char *err_msg, const unsigned char *data_json,
    size_t data_json_len, ngx_http_im_buf_t *out, char *err, size_t errlen);


#endif /* _NGX_HTTP_IM_PB_H_INCLUDED_ */
