
/*
 * Unit tests of ngx_http_im_pb.c: the JSON <-> protobuf transcoder of
 * every data message, the envelopes, errors naming fields, UTF-8 checks,
 * malformed protobuf and the bounds.
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "ngx_http_im_json.h"
#include "ngx_http_im_pb.h"
#include "im.pb-c.h"

#include "check.h"


#define REQ(id)   ngx_http_im_pb_descriptor(id, NGX_HTTP_IM_PB_REQUEST)
#define RESP(id)  ngx_http_im_pb_descriptor(id, NGX_HTTP_IM_PB_RESPONSE)
#define PUSH(id)  ngx_http_im_pb_descriptor(id, NGX_HTTP_IM_PB_PUSH)

/* what pb -> JSON writes for an empty PushMessages.notificationMsgs */
#define NOTES     ",\"notificationMsgs\":{}"

#define B(s)      (const unsigned char *) (s), sizeof(s) - 1


/* JSON for a descriptor, and what must come of it */
typedef struct {
    const ProtobufCMessageDescriptor  *d;
    const char                        *in;
    const char                        *exp;
} json_case_t;

/* protobuf for a descriptor, and the error it must give */
typedef struct {
    const ProtobufCMessageDescriptor  *d;
    const unsigned char               *p;
    size_t                             n;
    const char                        *exp;
} pb_case_t;


/* docs/protocol.md's MsgData, as our JSON writers write it */
#define MSG                                                                 \
    "{\"sendID\":\"alice\",\"recvID\":\"bob\",\"groupID\":\"\","            \
    "\"clientMsgID\":\"c1\","                                               \
    "\"serverMsgID\":\"865a8fb2d26a111608f3619aef637741\","                 \
    "\"senderPlatformID\":1,\"senderNickname\":\"\","                       \
    "\"senderFaceURL\":\"\",\"sessionType\":1,\"msgFrom\":100,"             \
    "\"contentType\":101,\"content\":\"{\\\"content\\\":\\\"hi\\\"}\","     \
    "\"seq\":1,\"sendTime\":1795437860134,\"createTime\":1795437860134,"    \
    "\"status\":2,\"options\":{},\"offlinePushInfo\":{\"title\":\"\","      \
    "\"desc\":\"\",\"ex\":\"\",\"iOSPushSound\":\"\","                      \
    "\"iOSBadgeCount\":false},\"atUserIDList\":[],\"ex\":\"\"}"

/* another one, with every kind of field set */
#define MSG2                                                                \
    "{\"sendID\":\"bob\",\"recvID\":\"alice\",\"groupID\":\"\","            \
    "\"clientMsgID\":\"c2\",\"serverMsgID\":\"s2\","                        \
    "\"senderPlatformID\":5,"                                               \
    "\"senderNickname\":\"B\xc3\xb6" "b \xe4\xb8\xad\","                    \
    "\"senderFaceURL\":\"http://x/y.png\",\"sessionType\":1,"               \
    "\"msgFrom\":100,\"contentType\":106,"                                  \
    "\"content\":\"{\\\"text\\\":\\\"\xf0\x9f\x98\x80 @alice\\\"}\","       \
    "\"seq\":2,\"sendTime\":1795437860135,\"createTime\":1795437860135,"    \
    "\"status\":2,\"options\":{\"history\":true,\"offlinePush\":false},"    \
    "\"offlinePushInfo\":{\"title\":\"t\",\"desc\":\"d\",\"ex\":\"e\","     \
    "\"iOSPushSound\":\"s\",\"iOSBadgeCount\":true},"                       \
    "\"atUserIDList\":[\"alice\",\"carol\"],\"ex\":\"x\"}"

/* an empty MsgData in full */
#define MSG0                                                                \
    "{\"sendID\":\"\",\"recvID\":\"\",\"groupID\":\"\","                    \
    "\"clientMsgID\":\"\",\"serverMsgID\":\"\",\"senderPlatformID\":0,"     \
    "\"senderNickname\":\"\",\"senderFaceURL\":\"\",\"sessionType\":0,"     \
    "\"msgFrom\":0,\"contentType\":0,\"content\":\"\",\"seq\":0,"           \
    "\"sendTime\":0,\"createTime\":0,\"status\":0,\"options\":{},"          \
    "\"offlinePushInfo\":{\"title\":\"\",\"desc\":\"\",\"ex\":\"\","        \
    "\"iOSPushSound\":\"\",\"iOSBadgeCount\":false},\"atUserIDList\":[],"   \
    "\"ex\":\"\"}"


static int
bytes_are(const ngx_http_im_buf_t *b, const unsigned char *p, size_t n)
{
    size_t  i;

    if (b->failed || b->len != n || (n && memcmp(b->data, p, n) != 0)) {
        printf("  got:");

        for (i = 0; i < b->len; i++) {
            printf(" %02x", b->data[i]);
        }

        printf("\n");
        return 0;
    }

    return 1;
}


/* JSON -> pb into "pb"; 0 or -1 */

static int
to_pb(const ProtobufCMessageDescriptor *d, const char *in,
    ngx_http_im_buf_t *pb)
{
    int       rc;
    char      err[NGX_HTTP_IM_PB_ERRLEN];
    yajl_val  v;

    v = check_parse(in);
    if (v == NULL) {
        return -1;
    }

    rc = ngx_http_im_json_to_pb(d, v, pb, err, sizeof(err));
    if (rc != 0) {
        printf("  json_to_pb: %s\n", err);
    }

    yajl_tree_free(v);

    return rc;
}


/*
 * JSON -> pb -> JSON gives "exp" ("in" if NULL), and the protobuf parses
 * back with the generated code.
 */

static int
roundtrip(const ProtobufCMessageDescriptor *d, const char *in,
    const char *exp)
{
    int                 ok;
    char                err[NGX_HTTP_IM_PB_ERRLEN];
    ProtobufCMessage   *m;
    ngx_http_im_buf_t   pb, json;

    ngx_http_im_buf_init(&pb, 0);
    ngx_http_im_buf_init(&json, 0);

    ok = 0;

    if (to_pb(d, in, &pb) != 0) {
        goto done;
    }

    m = protobuf_c_message_unpack(d, NULL, pb.len, pb.data);
    if (m == NULL) {
        printf("  protobuf-c cannot unpack the output\n");
        goto done;
    }

    protobuf_c_message_free_unpacked(m, NULL);

    if (ngx_http_im_pb_to_json(d, pb.data, pb.len, &json, err, sizeof(err))
        != 0)
    {
        printf("  pb_to_json: %s\n", err);
        goto done;
    }

    ok = check_buf_is(&json, exp ? exp : in);

done:

    ngx_http_im_buf_free(&pb);
    ngx_http_im_buf_free(&json);

    return ok;
}


/*
 * The call that returned "rc" failed with the error "exp" (with "prefix":
 * an error that starts with "exp") and left "out", which held "x", as it
 * was.  Frees "out".
 */

static int
failed_with(int rc, const char *err, const char *exp, int prefix,
    ngx_http_im_buf_t *out)
{
    int  ok;

    /* without "prefix" the NUL of "exp" is compared too */
    ok = (rc == -1 && strncmp(err, exp, strlen(exp) + !prefix) == 0
          && check_buf_is(out, "x"));

    if (!ok) {
        printf("  rc %d, err: %s\n  exp: %s%s\n", rc, err, exp,
               prefix ? "..." : "");
    }

    ngx_http_im_buf_free(out);

    return ok;
}


/* JSON -> pb fails with "exp" */

static int
json_err(const ProtobufCMessageDescriptor *d, const char *in,
    const char *exp)
{
    int                 rc;
    char                err[NGX_HTTP_IM_PB_ERRLEN];
    yajl_val            v;
    ngx_http_im_buf_t   pb;

    v = check_parse(in);
    if (v == NULL) {
        return 0;
    }

    ngx_http_im_buf_init(&pb, 0);
    ngx_http_im_buf_str(&pb, "x");

    err[0] = '\0';
    rc = ngx_http_im_json_to_pb(d, v, &pb, err, sizeof(err));

    yajl_tree_free(v);

    return failed_with(rc, err, exp, 0, &pb);
}


/* pb -> JSON fails with an error that starts with "exp" */

static int
pb_err(const ProtobufCMessageDescriptor *d, const unsigned char *p,
    size_t n, const char *exp)
{
    int                 rc;
    char                err[NGX_HTTP_IM_PB_ERRLEN];
    ngx_http_im_buf_t   json;

    ngx_http_im_buf_init(&json, 0);
    ngx_http_im_buf_str(&json, "x");

    err[0] = '\0';
    rc = ngx_http_im_pb_to_json(d, p, n, &json, err, sizeof(err));

    return failed_with(rc, err, exp, 1, &json);
}


/* pb -> JSON gives "exp" */

static int
pb_json(const ProtobufCMessageDescriptor *d, const unsigned char *p,
    size_t n, const char *exp)
{
    int                 ok;
    char                err[NGX_HTTP_IM_PB_ERRLEN];
    ngx_http_im_buf_t   json;

    ngx_http_im_buf_init(&json, 0);

    if (ngx_http_im_pb_to_json(d, p, n, &json, err, sizeof(err)) != 0) {
        printf("  pb_to_json: %s\n", err);
        ngx_http_im_buf_free(&json);
        return 0;
    }

    ok = check_buf_is(&json, exp);
    ngx_http_im_buf_free(&json);

    return ok;
}


static void
test_table(void)
{
    CHECK(REQ(1001) == &im__get_max_seq_req__descriptor);
    CHECK(RESP(1001) == &im__get_max_seq_resp__descriptor);
    CHECK(REQ(1002) == &im__pull_message_by_seqs_req__descriptor);
    CHECK(RESP(1002) == &im__pull_message_by_seqs_resp__descriptor);
    CHECK(REQ(1003) == &im__msg_data__descriptor);
    CHECK(RESP(1003) == &im__send_msg_resp__descriptor);
    CHECK(REQ(1005) == &im__get_seq_message_req__descriptor);
    CHECK(RESP(1005) == &im__get_seq_message_resp__descriptor);
    CHECK(REQ(1006)
          == &im__get_conversations_has_read_and_max_seq_req__descriptor);
    CHECK(RESP(1006)
          == &im__get_conversations_has_read_and_max_seq_resp__descriptor);
    CHECK(PUSH(2001) == &im__push_messages__descriptor);
    CHECK(PUSH(2002) == &im__kick_online_msg__descriptor);
    CHECK(REQ(2003) == &im__del_user_push_token_req__descriptor);
    CHECK(RESP(2003) == &im__del_user_push_token_resp__descriptor);

    CHECK(REQ(2001) == NULL && RESP(2001) == NULL);
    CHECK(REQ(2002) == NULL && RESP(2002) == NULL);
    CHECK(PUSH(1003) == NULL);
    CHECK(REQ(1004) == NULL && RESP(1004) == NULL && PUSH(1004) == NULL);
    CHECK(REQ(0) == NULL && REQ(-1) == NULL && REQ(1007) == NULL);
    CHECK(ngx_http_im_pb_descriptor(1001, 3) == NULL);
    CHECK(ngx_http_im_pb_descriptor(1001, -1) == NULL);
}


static void
test_roundtrips(void)
{
    size_t  i;

    json_case_t  cases[] = {
        /* 1001 GetNewestSeq */

        { REQ(1001), "{}", NULL },
        { REQ(1001), "{\"userID\":\"alice\"}", "{}" },
        { RESP(1001),
          "{\"maxSeqs\":{\"si_alice_bob\":3,\"si_alice_carol\":12},"
          "\"hasReadSeqs\":{\"si_alice_bob\":1,"
          "\"si_alice_carol\":12}}", NULL },
        { RESP(1001), "{}", "{\"maxSeqs\":{},\"hasReadSeqs\":{}}" },

        /* 1002 PullMsgByRange */

        { REQ(1002),
          "{\"seqRanges\":[{\"conversationID\":\"si_alice_bob\","
          "\"begin\":1,\"end\":3,\"num\":100}]}", NULL },
        { REQ(1002), "{\"seqRanges\":[{\"conversationID\":\"a\"},{}]}",
          "{\"seqRanges\":[{\"conversationID\":\"a\",\"begin\":0,"
          "\"end\":0,\"num\":0},{\"conversationID\":\"\","
          "\"begin\":0,\"end\":0,\"num\":0}]}" },
        { REQ(1002), "{}", "{\"seqRanges\":[]}" },
        { RESP(1002),
          "{\"msgs\":{\"si_alice_bob\":{\"Msgs\":[" MSG "," MSG2
          "],\"isEnd\":true}}}", NULL },
        { RESP(1002),
          "{\"msgs\":{\"si_alice_bob\":{\"Msgs\":[],"
          "\"isEnd\":false},\"si_alice_carol\":{}}}",
          "{\"msgs\":{\"si_alice_bob\":{\"Msgs\":[],"
          "\"isEnd\":false},\"si_alice_carol\":{\"Msgs\":[],"
          "\"isEnd\":false}}}" },

        /* 1003 SendMsg */

        { REQ(1003), MSG, NULL },
        { REQ(1003), MSG2, NULL },
        { REQ(1003), "{}", MSG0 },
        { REQ(1003),
          "{\"sendID\":\"alice\",\"recvID\":\"bob\","
          "\"sessionType\":1,\"contentType\":101,"
          "\"clientMsgID\":\"c1\","
          "\"content\":\"{\\\"content\\\":\\\"hi\\\"}\"}",
          "{\"sendID\":\"alice\",\"recvID\":\"bob\","
          "\"groupID\":\"\",\"clientMsgID\":\"c1\","
          "\"serverMsgID\":\"\",\"senderPlatformID\":0,"
          "\"senderNickname\":\"\",\"senderFaceURL\":\"\","
          "\"sessionType\":1,\"msgFrom\":0,\"contentType\":101,"
          "\"content\":\"{\\\"content\\\":\\\"hi\\\"}\","
          "\"seq\":0,\"sendTime\":0,\"createTime\":0,\"status\":0,"
          "\"options\":{},\"offlinePushInfo\":{\"title\":\"\","
          "\"desc\":\"\",\"ex\":\"\",\"iOSPushSound\":\"\","
          "\"iOSBadgeCount\":false},\"atUserIDList\":[],"
          "\"ex\":\"\"}" },
        { RESP(1003),
          "{\"serverMsgID\":\"865a8fb2d26a111608f3619aef637741\","
          "\"clientMsgID\":\"c1\",\"sendTime\":1795437860134,"
          "\"seq\":1}", NULL },
        { RESP(1003), "{}",
          "{\"serverMsgID\":\"\",\"clientMsgID\":\"\","
          "\"sendTime\":0,\"seq\":0}" },

        /* 1005 PullMsgBySeqList */

        { REQ(1005),
          "{\"conversations\":[{\"conversationID\":"
          "\"si_alice_bob\",\"seqs\":[1,5]},{\"conversationID\":"
          "\"si_alice_carol\",\"seqs\":[]}]}", NULL },
        { RESP(1005),
          "{\"msgs\":{\"si_alice_bob\":{\"Msgs\":[" MSG "],"
          "\"isEnd\":false}}}", NULL },

        /* 1006 GetConvMaxReadSeq */

        { REQ(1006), "{\"conversationIDs\":[\"si_alice_bob\",\"sg_g1\"]}",
          NULL },
        { RESP(1006),
          "{\"seqs\":{\"si_alice_bob\":{\"maxSeq\":3,"
          "\"hasReadSeq\":3,\"maxSeqTime\":1795437860134}}}", NULL },
        { RESP(1006), "{\"seqs\":{\"a\":{},\"b\":null}}",
          "{\"seqs\":{\"a\":{\"maxSeq\":0,\"hasReadSeq\":0,"
          "\"maxSeqTime\":0},\"b\":{\"maxSeq\":0,\"hasReadSeq\":0,"
          "\"maxSeqTime\":0}}}" },

        /* 2001 PushMsg: the short form, and the full one read */

        { PUSH(2001), "{\"msgs\":{\"si_alice_bob\":[" MSG "]}"
          NOTES "}", NULL },
        { PUSH(2001),
          "{\"msgs\":{\"si_alice_bob\":[" MSG "," MSG2 "],"
          "\"si_alice_carol\":[]}" NOTES "}", NULL },
        { PUSH(2001),
          "{\"msgs\":{\"si_alice_bob\":{\"Msgs\":[" MSG "],"
          "\"isEnd\":true}}}",
          "{\"msgs\":{\"si_alice_bob\":[" MSG "]}" NOTES "}" },
        { PUSH(2001), "{\"msgs\":{\"c\":null}}",
          "{\"msgs\":{\"c\":[]}" NOTES "}" },
        { PUSH(2001), "{\"notificationMsgs\":{\"sn_a_b\":[" MSG "]}}",
          "{\"msgs\":{},\"notificationMsgs\":{\"sn_a_b\":[" MSG "]}}" },

        /* 2002 KickOnline, 2003 Logout */

        { PUSH(2002), "{}", NULL },
        { REQ(2003), "{}", NULL },
        { RESP(2003), "{\"any\":1}", "{}" },

        /* unknown keys and null members are ignored */

        { RESP(1003),
          "{\"x\":[1,{}],\"serverMsgID\":null,\"seq\":7,"
          "\"modify\":{}}",
          "{\"serverMsgID\":\"\",\"clientMsgID\":\"\","
          "\"sendTime\":0,\"seq\":7}" },

        /* of keys given twice the first counts, as in the JSON codec */

        { RESP(1003), "{\"seq\":1,\"seq\":2,\"seq\":\"x\"}",
          "{\"serverMsgID\":\"\",\"clientMsgID\":\"\","
          "\"sendTime\":0,\"seq\":1}" },
        { RESP(1003), "{\"seq\":null,\"seq\":2}",
          "{\"serverMsgID\":\"\",\"clientMsgID\":\"\","
          "\"sendTime\":0,\"seq\":0}" },

        /* int64 extremes, negative int32 */

        { REQ(1002),
          "{\"seqRanges\":[{\"conversationID\":\"c\","
          "\"begin\":-9223372036854775807,"
          "\"end\":9223372036854775807,\"num\":-1}]}", NULL },
        { REQ(1003), "{\"sessionType\":-2147483648,\"msgFrom\":2147483647}",
          "{\"sendID\":\"\",\"recvID\":\"\",\"groupID\":\"\","
          "\"clientMsgID\":\"\",\"serverMsgID\":\"\","
          "\"senderPlatformID\":0,\"senderNickname\":\"\","
          "\"senderFaceURL\":\"\",\"sessionType\":-2147483648,"
          "\"msgFrom\":2147483647,\"contentType\":0,"
          "\"content\":\"\",\"seq\":0,\"sendTime\":0,"
          "\"createTime\":0,\"status\":0,\"options\":{},"
          "\"offlinePushInfo\":{\"title\":\"\",\"desc\":\"\","
          "\"ex\":\"\",\"iOSPushSound\":\"\","
          "\"iOSBadgeCount\":false},\"atUserIDList\":[],"
          "\"ex\":\"\"}" }
    };

    for (i = 0; i < CHECK_N(cases); i++) {
        CHECK_CASE(roundtrip(cases[i].d, cases[i].in, cases[i].exp),
                   cases[i].in);
    }
}


/* pb -> JSON of a MsgData equals what the JSON codec writes */

static void
test_same_as_json_codec(void)
{
    int                  i;
    char                 err[NGX_HTTP_IM_PB_ERRLEN];
    yajl_val             v;
    ngx_http_im_buf_t    pb, a, b;
    ngx_http_im_msg_t    m;
    static const char   *in[] = {
        MSG, MSG2, "{}",
        "{\"recvID\":\"bob\",\"sessionType\":1,\"contentType\":101,"
        "\"content\":\"x\",\"options\":{\"unreadCount\":false}}",
        NULL
    };

    for (i = 0; in[i]; i++) {
        ngx_http_im_buf_init(&pb, 0);
        ngx_http_im_buf_init(&a, 0);
        ngx_http_im_buf_init(&b, 0);

        v = check_parse(in[i]);
        CHECK(v != NULL);
        if (v == NULL) {
            continue;
        }

        CHECK(ngx_http_im_msg_from_json(v, &m, err, sizeof(err)) == 0);
        ngx_http_im_msg_to_json(&m, &a, NULL);
        ngx_http_im_msg_free(&m);

        CHECK(ngx_http_im_json_to_pb(REQ(1003), v, &pb, err, sizeof(err))
              == 0);
        CHECK(ngx_http_im_pb_to_json(REQ(1003), pb.data, pb.len, &b, err,
                                     sizeof(err))
              == 0);

        CHECK(!a.failed && a.len == b.len
              && memcmp(a.data, b.data, a.len) == 0);

        yajl_tree_free(v);
        ngx_http_im_buf_free(&pb);
        ngx_http_im_buf_free(&a);
        ngx_http_im_buf_free(&b);
    }
}


/* JSON -> pb gives exactly the "n" bytes "p": two checks */

static void
wire_is(const ProtobufCMessageDescriptor *d, const char *in,
    const unsigned char *p, size_t n)
{
    ngx_http_im_buf_t  pb;

    ngx_http_im_buf_init(&pb, 0);
    CHECK_CASE(to_pb(d, in, &pb) == 0, in);
    CHECK_CASE(bytes_are(&pb, p, n), in);
    ngx_http_im_buf_free(&pb);
}


/* field numbers and encodings on the wire, as OpenIM's */

static void
test_wire(void)
{
    ngx_http_im_buf_t  pb;

    /* MsgData: sendID = 1, content = 12 (bytes), seq = 14, options = 19 */

    wire_is(REQ(1003),
            "{\"sendID\":\"a\",\"content\":\"x\",\"seq\":5,"
            "\"options\":{\"k\":true}}",
            B("\x0a\x01\x61\x62\x01\x78\x70\x05"
              "\x9a\x01\x05\x0a\x01\x6b\x10\x01"));

    /* GetMaxSeqResp: maxSeqs = 1, hasReadSeqs = 3 */

    wire_is(RESP(1001), "{\"maxSeqs\":{\"c\":3},\"hasReadSeqs\":{\"c\":1}}",
            B("\x0a\x05\x0a\x01\x63\x10\x03"
              "\x1a\x05\x0a\x01\x63\x10\x01"));

    /* ConversationSeqs: conversationID = 2, seqs = 3, packed */

    wire_is(REQ(1005), "{\"conversations\":[{\"conversationID\":\"c\","
            "\"seqs\":[1,300]}]}",
            B("\x12\x08\x12\x01\x63\x1a\x03\x01\xac\x02"));

    /* empty: nothing */

    ngx_http_im_buf_init(&pb, 0);
    CHECK(to_pb(REQ(1003), "{}", &pb) == 0);
    CHECK(pb.len == 0 && !pb.failed);
    CHECK(ngx_http_im_json_to_pb(REQ(1003), NULL, &pb, NULL, 0) == 0);
    CHECK(pb.len == 0 && !pb.failed);
    ngx_http_im_buf_free(&pb);

    /* an unpacked repeated int64 reads as well */

    CHECK(pb_json(REQ(1005), B("\x12\x07\x12\x01\x63\x18\x01\x18\x05"),
                  "{\"conversations\":[{\"conversationID\":\"c\","
                  "\"seqs\":[1,5]}]}"));

    /* unknown fields are skipped: OpenIM's userID, isRead, order */

    CHECK(pb_json(REQ(1001), B("\x0a\x05\x61\x6c\x69\x63\x65"), "{}"));
    CHECK(pb_json(REQ(1002), B("\x0a\x01\x61\x18\x01\x12\x00"),
                  "{\"seqRanges\":[{\"conversationID\":\"\",\"begin\":0,"
                  "\"end\":0,\"num\":0}]}"));
    CHECK(pb_json(&im__offline_push_info__descriptor,
                  B("\x32\x01\x7a\x90\x01\x01\x28\x01"),
                  "{\"title\":\"\",\"desc\":\"\",\"ex\":\"\","
                  "\"iOSPushSound\":\"\",\"iOSBadgeCount\":true}"));

    /* a negative int32 is a 10-byte varint */

    CHECK(pb_json(RESP(1003), B("\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff"
                                "\x01"),
                  "{\"serverMsgID\":\"\",\"clientMsgID\":\"\","
                  "\"sendTime\":-1,\"seq\":0}"));

    /* the last of a repeated singular field wins, as protobuf says */

    CHECK(pb_json(RESP(1003), B("\x28\x01\x28\x02"),
                  "{\"serverMsgID\":\"\",\"clientMsgID\":\"\","
                  "\"sendTime\":0,\"seq\":2}"));

    /* NULL input with length 0 is an empty message */

    CHECK(pb_json(RESP(1006), NULL, 0, "{\"seqs\":{}}"));
}


static void
test_json_errors(void)
{
    size_t  i;

    json_case_t  cases[] = {
        { REQ(1002), "{\"seqRanges\":[{\"begin\":\"x\"}]}",
          "field \"seqRanges[0].begin\" must be an integer" },
        { REQ(1002), "{\"seqRanges\":[{},{\"num\":1.5}]}",
          "field \"seqRanges[1].num\" must be an integer" },
        { REQ(1002), "{\"seqRanges\":{}}",
          "field \"seqRanges\" must be an array" },
        { REQ(1002), "{\"seqRanges\":[null]}",
          "field \"seqRanges[0]\" must be an object" },
        { REQ(1002), "{\"seqRanges\":[{\"end\":9223372036854775808}]}",
          "field \"seqRanges[0].end\" is out of range" },
        { REQ(1002), "{\"seqRanges\":[{\"conversationID\":7}]}",
          "field \"seqRanges[0].conversationID\" must be a string" },

        { REQ(1003), "{\"sessionType\":4294967296}",
          "field \"sessionType\" is out of range" },
        { REQ(1003), "{\"sessionType\":true}",
          "field \"sessionType\" must be an integer" },
        { REQ(1003), "{\"seq\":1e3}", "field \"seq\" must be an integer" },
        { REQ(1003), "{\"content\":{\"content\":\"hi\"}}",
          "field \"content\" must be a string" },
        { REQ(1003), "{\"options\":{\"history\":1}}",
          "field \"options.history\" must be a boolean" },
        { REQ(1003), "{\"options\":[]}",
          "field \"options\" must be an object" },
        { REQ(1003), "{\"offlinePushInfo\":[]}",
          "field \"offlinePushInfo\" must be an object" },
        { REQ(1003), "{\"offlinePushInfo\":{\"iOSBadgeCount\":1}}",
          "field \"offlinePushInfo.iOSBadgeCount\" must be a "
          "boolean" },
        { REQ(1003), "{\"atUserIDList\":[\"a\",3]}",
          "field \"atUserIDList[1]\" must be a string" },
        { REQ(1003), "{\"atUserIDList\":\"a\"}",
          "field \"atUserIDList\" must be an array" },

        { RESP(1001), "{\"maxSeqs\":{\"c\":\"1\"}}",
          "field \"maxSeqs.c\" must be an integer" },
        { RESP(1002), "{\"msgs\":{\"c\":{\"Msgs\":[{\"seq\":\"1\"}]}}}",
          "field \"msgs.c.Msgs[0].seq\" must be an integer" },
        { RESP(1002), "{\"msgs\":{\"c\":[]}}",
          "field \"msgs.c\" must be an object" },
        { RESP(1006), "{\"seqs\":{\"c\":{\"maxSeq\":[]}}}",
          "field \"seqs.c.maxSeq\" must be an integer" },
        { PUSH(2001), "{\"msgs\":{\"c\":5}}",
          "field \"msgs.c\" must be an object" },
        { PUSH(2001), "{\"msgs\":{\"c\":[{},{\"seq\":\"x\"}]}}",
          "field \"msgs.c[1].seq\" must be an integer" },

        { REQ(1001), "[]", "field \"data\" must be an object" },
        { REQ(1001), "\"x\"", "field \"data\" must be an object" }
    };

    for (i = 0; i < CHECK_N(cases); i++) {
        CHECK_CASE(json_err(cases[i].d, cases[i].in, cases[i].exp),
                   cases[i].in);
    }
}


static void
test_utf8(void)
{
    char                err[NGX_HTTP_IM_PB_ERRLEN];
    size_t              i;
    ngx_http_im_buf_t   json;

    pb_case_t  utf8[] = {
        { REQ(1003), B("\x0a\x02\xc3\x28"),
          "field \"sendID\" is not valid UTF-8" },
        { REQ(1003), B("\x0a\x03\xed\xa0\x80"),
          "field \"sendID\" is not valid UTF-8" },
        { REQ(1003), B("\x0a\x02\xc0\x80"),
          "field \"sendID\" is not valid UTF-8" },
        { REQ(1003), B("\x0a\x04\xf4\x90\x80\x80"),
          "field \"sendID\" is not valid UTF-8" },
        { REQ(1003), B("\x0a\x01\xe4"), "field \"sendID\" is not valid UTF-8" },
        { REQ(1003), B("\x62\x03{\xff}"),
          "field \"content\" is not valid UTF-8" },
        { REQ(1003), B("\x12\x03" "a\0b"),
          "field \"recvID\" contains a NUL byte" },
        { REQ(1003), B("\x62\x01\0"), "field \"content\" contains a NUL byte" },
        { REQ(1003), B("\xaa\x01\x01\x61\xaa\x01\x01\xff"),
          "field \"atUserIDList[1]\" is not valid UTF-8" },
        { REQ(1003), B("\x9a\x01\x05\x0a\x01\x80\x10\x01"),
          "field \"options[0].key\" is not valid UTF-8" },
        { REQ(1003), B("\xa2\x01\x03\x0a\x01\xfe"),
          "field \"offlinePushInfo.title\" is not valid UTF-8" },
        { RESP(1002),
          B("\x0a\x0c\x0a\x01\x63\x12\x07\x0a\x05\x12\x03\x61\xff"
            "\x62"),
          "field \"msgs[0].value.Msgs[0].recvID\" is not valid UTF-8" }
    };

    /* multi-byte text goes through unchanged */

    CHECK(roundtrip(REQ(1006),
                    "{\"conversationIDs\":[\"\xc3\xa9\xe4\xb8\xad"
                    "\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"]}", NULL));

    /* pb strings and bytes must be UTF-8 without NUL */

    for (i = 0; i < CHECK_N(utf8); i++) {
        CHECK_CASE(pb_err(utf8[i].d, utf8[i].p, utf8[i].n, utf8[i].exp),
                   utf8[i].exp);
    }

    /* unknown fields are not text-checked */

    CHECK(pb_json(RESP(1003), B("\x22\x02\xff\x00"),
                  "{\"serverMsgID\":\"\",\"clientMsgID\":\"\","
                  "\"sendTime\":0,\"seq\":0}"));

    /* yajl decodes a lone low surrogate escape into invalid UTF-8 */

    CHECK(json_err(REQ(1003), "{\"content\":\"\\udc00\"}",
                   "field \"content\" is not valid UTF-8"));
    CHECK(json_err(REQ(1006), "{\"conversationIDs\":[\"a\",\"\\udc00\"]}",
                   "field \"conversationIDs[1]\" is not valid UTF-8"));
    CHECK(json_err(RESP(1001), "{\"maxSeqs\":{\"\\udc00\":1}}",
                   "field \"maxSeqs.\xed\xb0\x80\" is not valid UTF-8"));

    /* escapes written by JSON are read back */

    ngx_http_im_buf_init(&json, 0);
    CHECK(ngx_http_im_pb_to_json(REQ(1003), B("\x0a\x04\"\\\n\x01"), &json,
                                 err, sizeof(err))
          == 0);
    CHECK(json.len > 30
          && memcmp(json.data, "{\"sendID\":\"\\\"\\\\\\n\\u0001\"", 24)
             == 0);
    ngx_http_im_buf_free(&json);
}


static void
test_malformed(void)
{
    size_t                i, k, n, bad;
    char                  err[NGX_HTTP_IM_PB_ERRLEN];
    unsigned char         buf[64];
    ngx_http_im_buf_t     json;
    ngx_http_im_pb_req_t  req;

    const ProtobufCMessageDescriptor  *all[] = {
        REQ(1001), RESP(1001), REQ(1002), RESP(1002), REQ(1003), RESP(1003),
        REQ(1005), RESP(1005), REQ(1006), RESP(1006), PUSH(2001),
        PUSH(2002), REQ(2003), RESP(2003), NULL
    };

    pb_case_t  malformed[] = {
        { REQ(1003), B("\x0a"), "invalid protobuf: truncated" },
        { REQ(1003), B("\x0a\x05\x61"), "invalid protobuf: truncated" },
        { REQ(1003), B("\x70"), "invalid protobuf: bad varint" },
        { REQ(1003), B("\x70\x80\x80"), "invalid protobuf: bad varint" },
        { REQ(1003), B("\x70\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
          "invalid protobuf: bad varint" },
        { REQ(1003), B("\x80"), "invalid protobuf: bad tag" },
        { REQ(1003), B("\x00\x00"), "invalid protobuf: bad field number" },
        { REQ(1003), B("\x0b\x0c"), "invalid protobuf: unsupported wire type" },
        { REQ(1003), B("\x0f"), "invalid protobuf: unsupported wire type" },
        { REQ(1003), B("\x75\x01\x02"), "invalid protobuf: truncated" },
        { REQ(1003), B("\x08\x01"),
          "invalid protobuf: wrong wire type in field \"sendID\"" },
        { REQ(1003), B("\x72\x01\x01"),
          "invalid protobuf: wrong wire type in field \"seq\"" },
        { REQ(1003), B("\xa2\x01\x02\x0a\x05"),
          "invalid protobuf: truncated in field \"offlinePushInfo\"" },
        { REQ(1005), B("\x12\x04\x1a\x02\x01\x80"),
          "invalid protobuf: bad packed field in field "
          "\"conversations[0].seqs\"" }
    };

    for (i = 0; i < CHECK_N(malformed); i++) {
        CHECK_CASE(pb_err(malformed[i].d, malformed[i].p, malformed[i].n,
                          malformed[i].exp),
                   malformed[i].exp);
    }

    /* the envelope too */

    CHECK(ngx_http_im_pb_req_decode(B("\x08\xe9\x07\x32\x05\x01"), &req,
                                    err, sizeof(err))
          == -1);
    CHECK(strcmp(err, "invalid protobuf: truncated") == 0);
    ngx_http_im_pb_req_free(&req);

    /* random bytes: an error or JSON, never a crash */

    ngx_http_im_buf_init(&json, 0);
    srand(7);
    bad = 0;

    for (i = 0; i < 200000; i++) {
        n = (size_t) rand() % sizeof(buf);

        for (k = 0; k < n; k++) {
            buf[k] = (unsigned char) rand();
        }

        if (ngx_http_im_pb_to_json(all[i % 14], buf, n, &json, err,
                                   sizeof(err))
            == 0)
        {
            bad += (json.len == 0 || json.data[0] != '{');

        } else {
            bad += (json.len != 0 || err[0] == '\0');
        }

        ngx_http_im_buf_reset(&json);
    }

    CHECK(bad == 0);

    ngx_http_im_buf_free(&json);
}


/* packs "r" into "*n" bytes at "*p" (free() it); 0 if the sizes differ */

static int
pack_req(const Im__Req *r, uint8_t **p, size_t *n)
{
    *n = im__req__get_packed_size(r);
    *p = check_alloc(*n);

    return im__req__pack(r, *p) == *n;
}


static void
test_envelopes(void)
{
    int                    rc;
    char                   err[NGX_HTTP_IM_PB_ERRLEN];
    uint8_t               *p;
    size_t                 n;
    Im__Req                r = IM__REQ__INIT;
    Im__Resp              *resp;
    ngx_http_im_buf_t      data, out, json;
    ngx_http_im_str_t      opid, incr;
    ngx_http_im_pb_req_t   req;

    /* a 1003 request */

    ngx_http_im_buf_init(&data, 0);
    CHECK(to_pb(REQ(1003), "{\"recvID\":\"bob\",\"sessionType\":1,"
                "\"contentType\":101,\"content\":\"{\\\"content\\\":"
                "\\\"hi\\\"}\"}", &data) == 0);

    r.reqidentifier = 1003;
    r.token = "tok";
    r.sendid = "alice";
    r.operationid = "op-1";
    r.msgincr = "u1-1";
    r.data.data = data.data;
    r.data.len = data.len;

    CHECK(pack_req(&r, &p, &n));

    rc = ngx_http_im_pb_req_decode(p, n, &req, err, sizeof(err));
    CHECK(rc == 0);
    CHECK(req.req_identifier == 1003);
    CHECK(req.operation_id.len == 4
          && memcmp(req.operation_id.data, "op-1", 4) == 0);
    CHECK(req.msg_incr.len == 4
          && memcmp(req.msg_incr.data, "u1-1", 4) == 0);
    CHECK(req.send_id.len == 5 && req.token.len == 3);
    CHECK(check_buf_is(&req.data,
                       "{\"sendID\":\"\",\"recvID\":\"bob\",\"groupID\":\"\","
                       "\"clientMsgID\":\"\",\"serverMsgID\":\"\","
                       "\"senderPlatformID\":0,\"senderNickname\":\"\","
                       "\"senderFaceURL\":\"\",\"sessionType\":1,\"msgFrom\":0,"
                       "\"contentType\":101,"
                       "\"content\":\"{\\\"content\\\":\\\"hi\\\"}\",\"seq\":0,"
                       "\"sendTime\":0,\"createTime\":0,\"status\":0,"
                       "\"options\":{},\"offlinePushInfo\":{\"title\":\"\","
                       "\"desc\":\"\",\"ex\":\"\",\"iOSPushSound\":\"\","
                       "\"iOSBadgeCount\":false},\"atUserIDList\":[],"
                 "\"ex\":\"\"}"));
    ngx_http_im_pb_req_free(&req);
    CHECK(req.env == NULL && req.data.data == NULL);
    free(p);

    /* unknown reqIdentifier: data {} whatever it holds */

    r.reqidentifier = 1234;
    (void) pack_req(&r, &p, &n);
    CHECK(ngx_http_im_pb_req_decode(p, n, &req, err, sizeof(err)) == 0);
    CHECK(req.req_identifier == 1234 && check_buf_is(&req.data, "{}"));
    ngx_http_im_pb_req_free(&req);
    free(p);

    /* bad data: an error, with the envelope fields set */

    r.reqidentifier = 1003;
    r.data.data = (uint8_t *) "\x0a\x02\xc3\x28";
    r.data.len = 4;
    (void) pack_req(&r, &p, &n);
    CHECK(ngx_http_im_pb_req_decode(p, n, &req, err, sizeof(err)) == -1);
    CHECK(strcmp(err, "field \"sendID\" is not valid UTF-8") == 0);
    CHECK(req.req_identifier == 1003 && req.msg_incr.len == 4
          && req.data.len == 0);
    ngx_http_im_pb_req_free(&req);
    free(p);

    /* envelope strings are checked; binary data is not text */

    CHECK(ngx_http_im_pb_req_decode(B("\x08\xe9\x07\x22\x01\xff"), &req,
                                    err, sizeof(err))
          == -1);
    CHECK(strcmp(err, "field \"operationID\" is not valid UTF-8") == 0);
    ngx_http_im_pb_req_free(&req);

    CHECK(ngx_http_im_pb_req_decode(B("\x08\xe9\x07\x32\x03\x78\x96\x01"),
                                    &req, err, sizeof(err))
          == 0);
    CHECK(req.req_identifier == 1001 && check_buf_is(&req.data, "{}"));
    ngx_http_im_pb_req_free(&req);

    CHECK(ngx_http_im_pb_req_decode(NULL, 0, &req, err, sizeof(err)) == 0);
    CHECK(req.req_identifier == 0 && check_buf_is(&req.data, "{}"));
    ngx_http_im_pb_req_free(&req);

    ngx_http_im_buf_free(&data);

    /* a response */

    ngx_http_im_buf_init(&out, 0);
    ngx_http_im_buf_init(&json, 0);
    opid.data = "op-1";
    opid.len = 4;
    incr.data = "u1-1";
    incr.len = 4;

    CHECK(ngx_http_im_pb_resp_encode(1003, opid, incr, 0, "",
              B("{\"serverMsgID\":\"s1\",\"clientMsgID\":\"c1\","
                "\"sendTime\":1795437860134,\"seq\":1}"),
              &out, err, sizeof(err))
          == 0);

    resp = im__resp__unpack(NULL, out.len, out.data);
    CHECK(resp != NULL);

    if (resp) {
        CHECK(resp->reqidentifier == 1003 && resp->errcode == 0);
        CHECK(strcmp(resp->operationid, "op-1") == 0);
        CHECK(strcmp(resp->msgincr, "u1-1") == 0);
        CHECK(strcmp(resp->errmsg, "") == 0);
        CHECK(pb_json(RESP(1003), resp->data.data, resp->data.len,
                      "{\"serverMsgID\":\"s1\",\"clientMsgID\":\"c1\","
                      "\"sendTime\":1795437860134,\"seq\":1}"));
        im__resp__free_unpacked(resp, NULL);
    }

    /* an error response: data {} is empty; errMsg kept */

    ngx_http_im_buf_reset(&out);
    CHECK(ngx_http_im_pb_resp_encode(1003, opid, incr, 1001,
                                     "field \"contentType\" must be an "
                                     "integer", B("{}"), &out, err,
                                     sizeof(err))
          == 0);

    resp = im__resp__unpack(NULL, out.len, out.data);
    CHECK(resp != NULL);

    if (resp) {
        CHECK(resp->errcode == 1001 && resp->data.len == 0);
        CHECK(strcmp(resp->errmsg,
                     "field \"contentType\" must be an integer") == 0);
        im__resp__free_unpacked(resp, NULL);
    }

    /* a push, no request fields; unknown identifiers: data empty */

    ngx_http_im_buf_reset(&out);
    opid.data = NULL;
    opid.len = 0;
    CHECK(ngx_http_im_pb_resp_encode(2001, opid, opid, 0, NULL,
              B("{\"msgs\":{\"si_alice_bob\":[" MSG "]}}"),
              &out, err, sizeof(err))
          == 0);

    resp = im__resp__unpack(NULL, out.len, out.data);
    CHECK(resp != NULL);

    if (resp) {
        CHECK(resp->reqidentifier == 2001 && resp->msgincr[0] == '\0');
        CHECK(pb_json(PUSH(2001), resp->data.data, resp->data.len,
                      "{\"msgs\":{\"si_alice_bob\":[" MSG "]}" NOTES
                      "}"));
        CHECK(pb_json(&im__get_seq_message_resp__descriptor,
                      resp->data.data, resp->data.len,
                      "{\"msgs\":{\"si_alice_bob\":{\"Msgs\":[" MSG "],"
                      "\"isEnd\":false}}}"));
        im__resp__free_unpacked(resp, NULL);
    }

    ngx_http_im_buf_reset(&out);
    CHECK(ngx_http_im_pb_resp_encode(2002, opid, opid, 0, NULL, NULL, 0,
                                     &out, err, sizeof(err))
          == 0);
    CHECK(bytes_are(&out, B("\x08\xd2\x0f")));

    ngx_http_im_buf_reset(&out);
    CHECK(ngx_http_im_pb_resp_encode(9999, opid, opid, 1001,
                                     "unknown reqIdentifier",
                                     B("{\"x\":1}"), &out, err, sizeof(err))
          == 0);
    CHECK(bytes_are(&out, B("\x08\x8f\x4e\x20\xe9\x07\x2a\x15"
                            "unknown reqIdentifier")));

    /* not UTF-8, NUL: U+FFFD; bad data JSON: errors, out untouched */

    ngx_http_im_buf_reset(&out);
    opid.data = "a\xff" "b\0c";
    opid.len = 5;
    CHECK(ngx_http_im_pb_resp_encode(0, opid, opid, 1001, "x\xc3", NULL, 0,
                                     &out, err, sizeof(err))
          == 0);

    resp = im__resp__unpack(NULL, out.len, out.data);
    CHECK(resp != NULL);

    if (resp) {
        CHECK(strcmp(resp->operationid,
                     "a\xef\xbf\xbd" "b\xef\xbf\xbd" "c") == 0);
        CHECK(strcmp(resp->errmsg, "x\xef\xbf\xbd") == 0);
        im__resp__free_unpacked(resp, NULL);
    }

    /* err_msg may be the err buffer */

    ngx_http_im_buf_reset(&out);
    strcpy(err, "invalid protobuf: truncated");
    CHECK(ngx_http_im_pb_resp_encode(0, opid, opid, 1001, err, NULL, 0,
                                     &out, err, sizeof(err))
          == 0);

    resp = im__resp__unpack(NULL, out.len, out.data);
    CHECK(resp != NULL);

    if (resp) {
        CHECK(strcmp(resp->errmsg, "invalid protobuf: truncated") == 0);
        im__resp__free_unpacked(resp, NULL);
    }

    ngx_http_im_buf_reset(&out);
    ngx_http_im_buf_str(&out, "x");
    CHECK(ngx_http_im_pb_resp_encode(1003, opid, opid, 0, NULL, B("{"),
                                     &out, err, sizeof(err))
          == -1);
    CHECK(strncmp(err, "invalid JSON", 12) == 0 && check_buf_is(&out, "x"));
    CHECK(ngx_http_im_pb_resp_encode(1003, opid, opid, 0, NULL,
                                     B("{\"seq\":\"1\"}"), &out, err,
                                     sizeof(err))
          == -1);
    CHECK(strcmp(err, "field \"seq\" must be an integer") == 0);
    CHECK(ngx_http_im_pb_resp_encode(1LL << 40, opid, opid, 0, NULL, NULL,
                                     0, &out, err, sizeof(err))
          == -1);
    CHECK(check_buf_is(&out, "x"));

    ngx_http_im_buf_free(&out);
    ngx_http_im_buf_free(&json);
}


/* appends v as a protobuf varint */

static void
put_varint(ngx_http_im_buf_t *b, size_t v)
{
    unsigned char  c;

    while (v >= 0x80) {
        c = (unsigned char) (v | 0x80);
        ngx_http_im_buf_add(b, &c, 1);
        v >>= 7;
    }

    c = (unsigned char) v;
    ngx_http_im_buf_add(b, &c, 1);
}


static void
test_bounds(void)
{
    size_t              i, n;
    char                err[NGX_HTTP_IM_PB_ERRLEN], exp[128];
    yajl_val            v;
    unsigned char      *big;
    ngx_http_im_buf_t   b, pb, json;

    /* NGX_HTTP_IM_PB_MAX_REPEATED elements pass, one more does not: JSON */

    n = NGX_HTTP_IM_PB_MAX_REPEATED;

    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_buf_str(&b, "{\"atUserIDList\":[\"u\"");

    for (i = 1; i < n; i++) {
        ngx_http_im_buf_str(&b, ",\"u\"");
    }

    ngx_http_im_buf_str(&b, "]}");
    ngx_http_im_buf_add(&b, "", 1);

    ngx_http_im_buf_init(&pb, 0);
    CHECK(to_pb(REQ(1003), (char *) b.data, &pb) == 0);

    ngx_http_im_buf_init(&json, 0);
    CHECK(ngx_http_im_pb_to_json(REQ(1003), pb.data, pb.len, &json, err,
                                 sizeof(err))
          == 0);

    /* pb: one more element */

    snprintf(exp, sizeof(exp),
             "field \"atUserIDList\" has more than %d elements",
             NGX_HTTP_IM_PB_MAX_REPEATED);

    ngx_http_im_buf_add(&pb, "\xaa\x01\x01u", 4);
    CHECK(pb_err(REQ(1003), pb.data, pb.len, exp));

    b.len -= 3;
    ngx_http_im_buf_str(&b, ",\"u\"]}");
    ngx_http_im_buf_add(&b, "", 1);
    CHECK(json_err(REQ(1003), (char *) b.data, exp));

    /* maps */

    ngx_http_im_buf_reset(&b);
    ngx_http_im_buf_str(&b, "{\"maxSeqs\":{");

    for (i = 0; i < n + 1; i++) {
        ngx_http_im_buf_str(&b, i ? ",\"" : "\"");
        ngx_http_im_buf_int(&b, (long long) i);
        ngx_http_im_buf_str(&b, "\":1");
    }

    ngx_http_im_buf_str(&b, "}}");
    ngx_http_im_buf_add(&b, "", 1);

    snprintf(exp, sizeof(exp), "field \"maxSeqs\" has more than %d entries",
             NGX_HTTP_IM_PB_MAX_REPEATED);
    CHECK(json_err(RESP(1001), (char *) b.data, exp));

    ngx_http_im_buf_reset(&pb);

    for (i = 0; i < n + 1; i++) {
        ngx_http_im_buf_add(&pb, "\x0a\x02\x0a\x00", 4);
    }

    CHECK(pb_err(RESP(1001), pb.data, pb.len, exp));

    /* packed: one seq too many in one field */

    ngx_http_im_buf_reset(&pb);
    ngx_http_im_buf_add(&pb, "\x12", 1);
    put_varint(&pb, 1 + 2 + n + 1);                     /* conversations */
    ngx_http_im_buf_add(&pb, "\x1a", 1);
    put_varint(&pb, n + 1);                             /* seqs, packed */

    for (i = 0; i < n + 1; i++) {
        ngx_http_im_buf_add(&pb, "\x01", 1);
    }

    snprintf(exp, sizeof(exp),
             "field \"conversations[0].seqs\" has more than %d elements",
             NGX_HTTP_IM_PB_MAX_REPEATED);
    CHECK(pb_err(REQ(1005), pb.data, pb.len, exp));

    /* a singular message twice is merged: the merged count is bounded */

    ngx_http_im_buf_reset(&pb);
    ngx_http_im_buf_add(&pb, "\x0a\xa0\x09", 3);        /* entry, 1184 */
    ngx_http_im_buf_add(&pb, "\x12\xcc\x04", 3);        /* value, 588 */

    for (i = 0; i < 294; i++) {
        ngx_http_im_buf_add(&pb, "\x0a\x00", 2);        /* Msgs {} */
    }

    ngx_http_im_buf_add(&pb, "\x12\xcc\x04", 3);

    for (i = 0; i < 294; i++) {
        ngx_http_im_buf_add(&pb, "\x0a\x00", 2);
    }

    ngx_http_im_buf_add(&pb, "\x0a\x00", 2);            /* key "" */
    CHECK(pb.len == 1187);

    ngx_http_im_buf_reset(&json);
    CHECK(ngx_http_im_pb_to_json(RESP(1002), pb.data, pb.len, &json, err,
                                 sizeof(err))
          == 0);
    CHECK(json.len > 588 * 300);

    /* the same with two halves of the bound, and two more */

    ngx_http_im_buf_reset(&pb);
    ngx_http_im_buf_add(&pb, "\x0a", 1);
    put_varint(&pb, 3 + 2 * (3 + n + 2));               /* entry */
    ngx_http_im_buf_add(&pb, "\x0a\x01" "c", 3);         /* key "c" */

    for (i = 0; i < n + 2; i++) {
        if (i % (n / 2 + 1) == 0) {
            ngx_http_im_buf_add(&pb, "\x12", 1);         /* value */
            put_varint(&pb, n + 2);
        }

        ngx_http_im_buf_add(&pb, "\x0a\x00", 2);
    }

    /* 10002 MsgData take more than protobuf-c's budget for 10 KB of
     * input: refused by the unpack before the count */
    CHECK(pb_err(RESP(1002), pb.data, pb.len,
                 "invalid protobuf: message too large"));

    /* input size */

    big = calloc(1, NGX_HTTP_IM_PB_MAX_INPUT + 1);
    CHECK(big != NULL);

    if (big) {
        CHECK(pb_err(REQ(1003), big, NGX_HTTP_IM_PB_MAX_INPUT + 1,
                     "invalid protobuf: message too large"));
        free(big);
    }

    /* a full output buffer: an error, the buffer as it was */

    ngx_http_im_buf_free(&json);
    ngx_http_im_buf_init(&json, 40);
    ngx_http_im_buf_str(&json, "abc");
    CHECK(ngx_http_im_pb_to_json(REQ(1003), NULL, 0, &json, err,
                                 sizeof(err))
          == -1);
    CHECK(strcmp(err, "JSON too large") == 0 && check_buf_is(&json, "abc"));

    ngx_http_im_buf_free(&pb);
    ngx_http_im_buf_init(&pb, 10);
    ngx_http_im_buf_str(&pb, "abc");
    v = check_parse("{\"serverMsgID\":\"0123456789\"}");
    CHECK(ngx_http_im_json_to_pb(RESP(1003), v, &pb, err, sizeof(err))
          == -1);
    CHECK(strcmp(err, "message too large") == 0 && check_buf_is(&pb, "abc"));
    yajl_tree_free(v);

    ngx_http_im_buf_free(&b);
    ngx_http_im_buf_free(&pb);
    ngx_http_im_buf_free(&json);
}


/*
 * The largest GetNewestSeq answer: NGX_HTTP_IM_PB_MAX_REPEATED (the most
 * im_max_conversations allows) conversations of the longest IDs with the
 * longest numbers encodes, decodes back to the same JSON, and both
 * encodings stay within NGX_HTTP_IM_PB_NEWEST_SIZE(); one conversation
 * more is refused.
 */

static void
newest_json(ngx_http_im_buf_t *b, size_t n)
{
    size_t  i, map;
    char    conv[NGX_HTTP_IM_PB_CONV_MAX + 1];

    ngx_http_im_buf_reset(b);

    for (map = 0; map < 2; map++) {
        ngx_http_im_buf_str(b, map ? "},\"hasReadSeqs\":{" : "{\"maxSeqs\":{");

        for (i = 0; i < n; i++) {
            /* si_<64>_<64>, unique by i */
            snprintf(conv, sizeof(conv), "si_%064zu_%064zu", i, i);

            ngx_http_im_buf_str(b, i ? ",\"" : "\"");
            ngx_http_im_buf_str(b, conv);
            /* the longest int64 yajl reads as an integer */
            ngx_http_im_buf_str(b, "\":-9223372036854775807");
        }
    }

    ngx_http_im_buf_str(b, "}}");

    /* NUL-terminated for to_pb(), outside the length */
    ngx_http_im_buf_add(b, "", 1);
    b->len--;
}


static void
test_newest_answer(void)
{
    char                err[NGX_HTTP_IM_PB_ERRLEN], exp[128];
    size_t              n;
    ngx_http_im_buf_t   b, out, json;
    ngx_http_im_str_t   opid, incr;

    /* im_max_conversations' default, and newest.lua's cap */
    CHECK(NGX_HTTP_IM_PB_MAX_REPEATED >= 10000);
    CHECK(NGX_HTTP_IM_PB_CONV_MAX == 2 * 64 + 4);

    n = NGX_HTTP_IM_PB_MAX_REPEATED;
    opid.data = "operation";
    opid.len = 9;
    incr.data = "increment";
    incr.len = 9;

    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_buf_init(&out, 0);
    ngx_http_im_buf_init(&json, 0);

    newest_json(&b, n);
    CHECK(!b.failed && b.len > 2 * n * NGX_HTTP_IM_PB_CONV_MAX);

    /* JSON: the data object within the envelope */
    ngx_http_im_resp_begin(&out, 1001, opid, incr, 0, "");
    ngx_http_im_buf_add(&out, b.data, b.len);
    ngx_http_im_resp_end(&out);
    CHECK(!out.failed && out.len + 10
                         <= NGX_HTTP_IM_PB_NEWEST_SIZE(n, 18));

    /* protobuf: encodes within the bound, and decodes back */
    ngx_http_im_buf_reset(&out);
    CHECK(ngx_http_im_pb_resp_encode(1001, opid, incr, 0, "", b.data, b.len,
                                     &out, err, sizeof(err))
          == 0);
    CHECK(out.len > 0 && out.len + 10 <= NGX_HTTP_IM_PB_NEWEST_SIZE(n, 18));

    ngx_http_im_buf_reset(&out);
    CHECK(to_pb(RESP(1001), (char *) b.data, &out) == 0);
    CHECK(ngx_http_im_pb_to_json(RESP(1001), out.data, out.len, &json, err,
                                 sizeof(err))
          == 0);
    CHECK(json.len == b.len && memcmp(json.data, b.data, b.len) == 0);

    /* one more is refused */
    newest_json(&b, n + 1);
    ngx_http_im_buf_reset(&out);
    snprintf(exp, sizeof(exp), "field \"maxSeqs\" has more than %d entries",
             NGX_HTTP_IM_PB_MAX_REPEATED);
    CHECK(ngx_http_im_pb_resp_encode(1001, opid, incr, 0, "", b.data, b.len,
                                     &out, err, sizeof(err))
          == -1);
    CHECK(strcmp(err, exp) == 0);

    ngx_http_im_buf_free(&b);
    ngx_http_im_buf_free(&out);
    ngx_http_im_buf_free(&json);
}


int
main(void)
{
    test_table();
    test_roundtrips();
    test_same_as_json_codec();
    test_wire();
    test_json_errors();
    test_utf8();
    test_malformed();
    test_envelopes();
    test_bounds();
    test_newest_answer();

    return check_done();
}
