
/*
 * Unit tests of ngx_http_im_json.c: the output buffer, JSON escaping,
 * request and response envelopes, MsgData <-> JSON, handler helpers.
 */


#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "ngx_http_im_json.h"

#include "check.h"


#define S(s)  (const unsigned char *) (s), strlen(s)

/* U+FFFD, the replacement character, in UTF-8 */
#define R     "\xef\xbf\xbd"


/* escapes "in", checks the text, and that yajl reads "in" back */

static int
escape_is(const char *in, size_t n, const char *exp, int same)
{
    int                 ok;
    char                err[NGX_HTTP_IM_JSON_ERRLEN];
    yajl_val            v;
    ngx_http_im_buf_t   b;

    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_buf_json_str(&b, in, n);

    ok = check_buf_is(&b, exp);

    v = ngx_http_im_json_parse(b.data, b.len, err, sizeof(err));
    if (v == NULL || !YAJL_IS_STRING(v)) {
        ok = 0;

    } else if (same && (strlen(v->u.string) != n
                        || memcmp(v->u.string, in, n) != 0))
    {
        ok = 0;
    }

    yajl_tree_free(v);
    ngx_http_im_buf_free(&b);

    return ok;
}


static void
test_buf(void)
{
    size_t             i;
    ngx_http_im_buf_t  b;

    ngx_http_im_buf_init(&b, 0);
    CHECK(b.data == NULL && b.len == 0 && !b.failed);

    ngx_http_im_buf_str(&b, "ab");
    ngx_http_im_buf_add(&b, "cd", 2);
    ngx_http_im_buf_add(&b, NULL, 0);
    ngx_http_im_buf_int(&b, -42);
    ngx_http_im_buf_int(&b, 0);
    CHECK(check_buf_is(&b, "abcd-420"));

    ngx_http_im_buf_reset(&b);
    ngx_http_im_buf_int(&b, LLONG_MIN);
    ngx_http_im_buf_str(&b, ",");
    ngx_http_im_buf_int(&b, LLONG_MAX);
    CHECK(check_buf_is(&b, "-9223372036854775808,9223372036854775807"));

    /* growth past the first block */

    ngx_http_im_buf_reset(&b);

    for (i = 0; i < 10000; i++) {
        ngx_http_im_buf_add(&b, "x", 1);
    }

    CHECK(!b.failed && b.len == 10000 && b.cap >= 10000);
    ngx_http_im_buf_free(&b);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0);

    /* the bound */

    ngx_http_im_buf_init(&b, 10);
    ngx_http_im_buf_str(&b, "12345678");
    CHECK(!b.failed && b.len == 8 && b.cap <= 10);
    ngx_http_im_buf_str(&b, "90a");
    CHECK(b.failed && b.len == 8);
    ngx_http_im_buf_str(&b, "9");
    CHECK(b.failed && b.len == 8);
    ngx_http_im_buf_reset(&b);
    CHECK(!b.failed && b.len == 0);
    ngx_http_im_buf_str(&b, "1234567890");
    CHECK(!b.failed && b.len == 10 && b.cap == 10);
    ngx_http_im_buf_json_str(&b, "", 0);
    CHECK(b.failed && b.len == 10);
    ngx_http_im_buf_free(&b);
    CHECK(b.max == 10);
}


static void
test_escape(void)
{
    size_t  i;

    static const struct {
        const char  *in;
        size_t       n;
        const char  *exp;
        int          same;      /* yajl reads "in" back as it was */
    } escapes[] = {
        { "", 0, "\"\"", 1 },
        { NULL, 0, "\"\"", 0 },
        { "hello", 5, "\"hello\"", 1 },
        { "a\"b", 3, "\"a\\\"b\"", 1 },
        { "a\\b", 3, "\"a\\\\b\"", 1 },
        { "/", 1, "\"/\"", 1 },
        { "\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\"", 1 },
        { "\x01\x1f\x7f", 3, "\"\\u0001\\u001f\x7f\"", 1 },
        { "a\0b", 3, "\"a\\u0000b\"", 0 },

        /* valid UTF-8 as is: 2, 3 and 4 bytes, and the edges */
        { "\xc3\xa9", 2, "\"\xc3\xa9\"", 1 },
        { "\xe4\xb8\xad\xe6\x96\x87", 6, "\"\xe4\xb8\xad\xe6\x96\x87\"", 1 },
        { "\xf0\x9f\x98\x80", 4, "\"\xf0\x9f\x98\x80\"", 1 },
        { "\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf", 10,
          "\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\"", 1 },
        { "\xf4\x8f\xbf\xbf", 4, "\"\xf4\x8f\xbf\xbf\"", 1 },
        { "\xe7\xb3\xbb\xe7\xbb\x9f\"x", 8,
          "\"\xe7\xb3\xbb\xe7\xbb\x9f\\\"x\"", 1 },

        /* invalid UTF-8: each bad byte becomes U+FFFD, as UTF-8 */
        { "\xff", 1, "\"" R "\"", 0 },
        { "a\xc3", 2, "\"a" R "\"", 0 },
        { "\xc3(", 2, "\"" R "(\"", 0 },
        { "\xc0\xaf", 2, "\"" R R "\"", 0 },
        { "\xc0\x80", 2, "\"\\u0000\"", 0 },
        { "\xc0", 1, "\"" R "\"", 0 },
        { "\xe0\x80\xaf", 3, "\"" R R R "\"", 0 },
        { "\xed\xa0\x80", 3, "\"" R R R "\"", 0 },
        { "\xf4\x90\x80\x80", 4, "\"" R R R R "\"", 0 },
        { "\xf0\x9f\x98", 3, "\"" R R R "\"", 0 },
        { "\xf5\x80\x80\x80", 4, "\"" R R R R "\"", 0 },
        { "\x80\xc3\xa9", 3, "\"" R "\xc3\xa9\"", 0 }
    };

    for (i = 0; i < CHECK_N(escapes); i++) {
        CHECK_CASE(escape_is(escapes[i].in, escapes[i].n, escapes[i].exp,
                             escapes[i].same),
                   escapes[i].exp);
    }
}


static void
test_parse(void)
{
    int                i;
    char               err[NGX_HTTP_IM_JSON_ERRLEN], text[200];
    yajl_val           v;
    ngx_http_im_buf_t  b;

    static const char  doc[] =
        "{\"a\":[1,2.5,-3e2,true,false,null,\"x\\\"y\xc3\xa9\"],"
        "\"b\":{},\"c\":[],\"d\":{\"e\":-0}}";

    v = ngx_http_im_json_parse(S(doc), err, sizeof(err));
    CHECK(v != NULL);

    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_buf_json_val(&b, v);
    CHECK(check_buf_is(&b, doc));
    yajl_tree_free(v);

    /* not NUL-terminated: only len bytes are read */
    v = ngx_http_im_json_parse((const unsigned char *) "[1]]]", 3, err,
                               sizeof(err));
    CHECK(v != NULL && YAJL_IS_ARRAY(v));
    yajl_tree_free(v);

    v = ngx_http_im_json_parse(S(""), err, sizeof(err));
    CHECK(v == NULL && strcmp(err, "invalid JSON: empty text") == 0);

    v = ngx_http_im_json_parse(S("{\"a\":"), err, sizeof(err));
    CHECK(v == NULL && strncmp(err, "invalid JSON: ", 14) == 0
          && strchr(err, '\n') == NULL);

    v = ngx_http_im_json_parse(S("{\"a\":x}"), err, sizeof(err));
    CHECK(v == NULL && strncmp(err, "invalid JSON: ", 14) == 0
          && strchr(err, '\n') == NULL);

    v = ngx_http_im_json_parse(S("{} {}"), err, sizeof(err));
    CHECK(v == NULL);

    v = ngx_http_im_json_parse(S("{\"a\":\"\xff\"}"), err, sizeof(err));
    CHECK(v == NULL);

    v = ngx_http_im_json_parse((const unsigned char *) "{}\0{", 4, err,
                               sizeof(err));
    CHECK(v == NULL && strcmp(err, "invalid JSON: NUL byte") == 0);

    v = ngx_http_im_json_parse(S("/* c */ {}"), err, sizeof(err));
    CHECK(v == NULL && strstr(err, "comments") != NULL);

    v = ngx_http_im_json_parse(S("{\"a\":\"/* not a comment */\"}"), err,
                               sizeof(err));
    CHECK(v != NULL);
    yajl_tree_free(v);

    v = ngx_http_im_json_parse(S("{\"a\\\"[[\":1}"), err, sizeof(err));
    CHECK(v != NULL);
    yajl_tree_free(v);

    /* depth 64 is fine, 65 is not */

    for (i = 0; i < 64; i++) {
        text[i] = '[';
        text[64 + i] = ']';
    }

    v = ngx_http_im_json_parse((unsigned char *) text, 128, err,
                               sizeof(err));
    CHECK(v != NULL);

    ngx_http_im_buf_reset(&b);
    ngx_http_im_buf_json_val(&b, v);
    CHECK(!b.failed && b.len == 128);
    yajl_tree_free(v);

    text[64] = '[';
    text[128] = ']';
    text[129] = ']';

    v = ngx_http_im_json_parse((unsigned char *) text, 130, err,
                               sizeof(err));
    CHECK(v == NULL && strstr(err, "deeper") != NULL);

    /* yajl turns a lone surrogate escape into invalid UTF-8 (CESU) */

    v = ngx_http_im_json_parse(S("\"a\\ude00b\""), err, sizeof(err));
    CHECK(v != NULL && YAJL_IS_STRING(v));
    ngx_http_im_buf_reset(&b);
    ngx_http_im_buf_json_val(&b, v);
    CHECK(check_buf_is(&b, "\"a" R R R "b\""));
    yajl_tree_free(v);

    /* a short err buffer is cut, not overrun */
    v = ngx_http_im_json_parse(S("{"), err, 8);
    CHECK(v == NULL && strlen(err) == 7);

    ngx_http_im_buf_free(&b);
}


static void
test_req(void)
{
    int                rc;
    char               err[NGX_HTTP_IM_JSON_ERRLEN];
    ngx_http_im_req_t  req;

    rc = ngx_http_im_req_parse(S("{\"reqIdentifier\":1003,"
                                 "\"operationID\":\"op1\",\"msgIncr\":\"7\","
                                 "\"token\":\"ignored\","
                                 "\"data\":{\"sendID\":\"u1\"}}"),
                               &req, err, sizeof(err));
    CHECK(rc == 0);
    CHECK(req.req_identifier == 1003);
    CHECK(req.operation_id.len == 3
          && memcmp(req.operation_id.data, "op1", 3) == 0);
    CHECK(req.msg_incr.len == 1 && req.msg_incr.data[0] == '7');
    CHECK(YAJL_IS_OBJECT(req.data) && req.data->u.object.len == 1);
    ngx_http_im_req_free(&req);
    CHECK(req.root == NULL);
    ngx_http_im_req_free(&req);

    /* absent or null data reads as {}; absent strings as "" */

    rc = ngx_http_im_req_parse(S("{\"reqIdentifier\":1001}"), &req, err,
                               sizeof(err));
    CHECK(rc == 0 && req.data != NULL && YAJL_IS_OBJECT(req.data)
          && req.data->u.object.len == 0);
    CHECK(req.operation_id.data != NULL && req.operation_id.len == 0);
    CHECK(req.msg_incr.data != NULL && req.msg_incr.len == 0);
    CHECK(ngx_http_im_json_get(req.data, "x") == NULL);
    ngx_http_im_req_free(&req);

    rc = ngx_http_im_req_parse(S("{\"reqIdentifier\":1001,\"data\":null,"
                                 "\"operationID\":null}"),
                               &req, err, sizeof(err));
    CHECK(rc == 0 && YAJL_IS_OBJECT(req.data) && req.operation_id.len == 0);
    ngx_http_im_req_free(&req);

    /* errors */

    rc = ngx_http_im_req_parse(S("{\"operationID\":\"op\"}"), &req, err,
                               sizeof(err));
    CHECK(rc == -1
          && strcmp(err, "field \"reqIdentifier\" is required") == 0);
    ngx_http_im_req_free(&req);

    rc = ngx_http_im_req_parse(S("{\"reqIdentifier\":\"1003\"}"), &req, err,
                               sizeof(err));
    CHECK(rc == -1
          && strcmp(err, "field \"reqIdentifier\" must be an integer") == 0);
    ngx_http_im_req_free(&req);

    rc = ngx_http_im_req_parse(S("{\"reqIdentifier\":1003.5}"), &req, err,
                               sizeof(err));
    CHECK(rc == -1 && strstr(err, "\"reqIdentifier\"") != NULL);
    ngx_http_im_req_free(&req);

    rc = ngx_http_im_req_parse(S("{\"reqIdentifier\":null}"), &req, err,
                               sizeof(err));
    CHECK(rc == -1 && strstr(err, "\"reqIdentifier\" is required") != NULL);
    ngx_http_im_req_free(&req);

    /* reqIdentifier stays set for the error answer */

    rc = ngx_http_im_req_parse(S("{\"reqIdentifier\":1002,"
                                 "\"operationID\":5}"),
                               &req, err, sizeof(err));
    CHECK(rc == -1
          && strcmp(err, "field \"operationID\" must be a string") == 0);
    CHECK(req.req_identifier == 1002);
    ngx_http_im_req_free(&req);

    rc = ngx_http_im_req_parse(S("{\"reqIdentifier\":1002,"
                                 "\"operationID\":\"op\",\"msgIncr\":1}"),
                               &req, err, sizeof(err));
    CHECK(rc == -1 && strstr(err, "\"msgIncr\"") != NULL);
    CHECK(req.operation_id.len == 2);
    ngx_http_im_req_free(&req);

    rc = ngx_http_im_req_parse(S("{\"reqIdentifier\":1002,\"data\":[]}"),
                               &req, err, sizeof(err));
    CHECK(rc == -1 && strcmp(err, "field \"data\" must be an object") == 0);
    ngx_http_im_req_free(&req);

    rc = ngx_http_im_req_parse(S("[1003]"), &req, err, sizeof(err));
    CHECK(rc == -1 && strncmp(err, "invalid JSON: ", 14) == 0);
    ngx_http_im_req_free(&req);

    rc = ngx_http_im_req_parse(S("{\"reqIdentifier\":1003,"), &req, err,
                               sizeof(err));
    CHECK(rc == -1 && strncmp(err, "invalid JSON: ", 14) == 0
          && strchr(err, '\n') == NULL && req.root == NULL);
    ngx_http_im_req_free(&req);

    rc = ngx_http_im_req_parse(S("{\"type\":\"ping\"}"), &req, err,
                               sizeof(err));
    CHECK(rc == -1);
    ngx_http_im_req_free(&req);
}


/* an envelope around data {} in "b" (reset first) is exactly "exp" */

static int
resp_is(ngx_http_im_buf_t *b, long long id, ngx_http_im_str_t op,
    ngx_http_im_str_t incr, int code, const char *msg, const char *exp)
{
    ngx_http_im_buf_reset(b);
    ngx_http_im_resp_begin(b, id, op, incr, code, msg);
    ngx_http_im_buf_str(b, "{}");
    ngx_http_im_resp_end(b);

    return check_buf_is(b, exp);
}


static void
test_resp(void)
{
    ngx_http_im_buf_t  b;
    ngx_http_im_str_t  op, incr;

    op.data = "op\"1";
    op.len = 4;
    incr.data = "";
    incr.len = 0;

    ngx_http_im_buf_init(&b, 0);

    CHECK(resp_is(&b, 1003, op, incr, 0, NULL,
                  "{\"reqIdentifier\":1003,\"operationID\":\"op\\\"1\","
                  "\"msgIncr\":\"\",\"errCode\":0,\"errMsg\":\"\","
                  "\"data\":{}}"));

    CHECK(resp_is(&b, 9, incr, incr, 1001,
                  "field \"seq\" must be an integer",
                  "{\"reqIdentifier\":9,\"operationID\":\"\","
                  "\"msgIncr\":\"\",\"errCode\":1001,"
                  "\"errMsg\":\"field \\\"seq\\\" must be an integer\","
                  "\"data\":{}}"));

    ngx_http_im_buf_free(&b);
}


static const char  msg_full[] =
    "{\"sendID\":\"u1\",\"recvID\":\"u2\",\"groupID\":\"g1\","
    "\"clientMsgID\":\"c1\",\"serverMsgID\":\"s1\","
    "\"senderPlatformID\":5,\"senderNickname\":\"\xe5\xb0\x8f\xe6\x98\x8e\","
    "\"senderFaceURL\":\"http://x/y.png\",\"sessionType\":1,"
    "\"msgFrom\":100,\"contentType\":101,"
    "\"content\":\"{\\\"content\\\":\\\"hi \\\\\\\"there\\\\\\\"\\\"}\","
    "\"seq\":12345,\"sendTime\":1700000000123,"
    "\"createTime\":1700000000100,\"status\":2,"
    "\"options\":{\"history\":true,\"unreadCount\":false},"
    "\"offlinePushInfo\":{\"title\":\"t\",\"desc\":\"d\",\"ex\":\"e\","
    "\"iOSPushSound\":\"default\",\"iOSBadgeCount\":true},"
    "\"atUserIDList\":[\"u3\",\"u4\"],\"ex\":\"x\\n\"}";

static const char  msg_empty[] =
    "{\"sendID\":\"\",\"recvID\":\"\",\"groupID\":\"\",\"clientMsgID\":\"\","
    "\"serverMsgID\":\"\",\"senderPlatformID\":0,\"senderNickname\":\"\","
    "\"senderFaceURL\":\"\",\"sessionType\":0,\"msgFrom\":0,"
    "\"contentType\":0,\"content\":\"\",\"seq\":0,\"sendTime\":0,"
    "\"createTime\":0,\"status\":0,\"options\":{},"
    "\"offlinePushInfo\":{\"title\":\"\",\"desc\":\"\",\"ex\":\"\","
    "\"iOSPushSound\":\"\",\"iOSBadgeCount\":false},"
    "\"atUserIDList\":[],\"ex\":\"\"}";


static int
str_is(ngx_http_im_str_t *s, const char *v)
{
    return s->data != NULL && s->len == strlen(v)
           && memcmp(s->data, v, s->len) == 0;
}


static void
test_msg_roundtrip(void)
{
    int                 rc;
    char                err[NGX_HTTP_IM_JSON_ERRLEN];
    size_t              seq_at;
    yajl_val            v, v2;
    ngx_http_im_msg_t   m, m2;
    ngx_http_im_buf_t   b, b2;

    v = ngx_http_im_json_parse(S(msg_full), err, sizeof(err));
    CHECK(v != NULL);

    rc = ngx_http_im_msg_from_json(v, &m, err, sizeof(err));
    CHECK(rc == 0);
    CHECK(str_is(&m.send_id, "u1") && str_is(&m.recv_id, "u2")
          && str_is(&m.group_id, "g1") && str_is(&m.client_msg_id, "c1")
          && str_is(&m.server_msg_id, "s1")
          && str_is(&m.sender_face_url, "http://x/y.png")
          && str_is(&m.content, "{\"content\":\"hi \\\"there\\\"\"}")
          && str_is(&m.ex, "x\n"));
    CHECK(m.sender_platform_id == 5 && m.session_type == 1
          && m.msg_from == 100 && m.content_type == 101 && m.seq == 12345
          && m.send_time == 1700000000123LL
          && m.create_time == 1700000000100LL && m.status == 2);
    CHECK(m.noptions == 2 && str_is(&m.options[0].key, "history")
          && m.options[0].value == 1
          && str_is(&m.options[1].key, "unreadCount")
          && m.options[1].value == 0);
    CHECK(m.has_push_info && str_is(&m.offline_push_info.title, "t")
          && str_is(&m.offline_push_info.ios_push_sound, "default")
          && m.offline_push_info.ios_badge_count == 1);
    CHECK(m.nat == 2 && m.at_owned && str_is(&m.at_user_ids[1], "u4"));

    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_msg_to_json(&m, &b, &seq_at);
    CHECK(check_buf_is(&b, msg_full));

    /* the seq split: prefix ends with "seq":, digits up to ',' */

    CHECK(seq_at > 6 && memcmp(b.data + seq_at - 6, "\"seq\":", 6) == 0);
    CHECK(memcmp(b.data + seq_at, "12345,", 6) == 0);

    /* parse the output again: the same message, the same text */

    v2 = ngx_http_im_json_parse(b.data, b.len, err, sizeof(err));
    CHECK(v2 != NULL);
    CHECK(ngx_http_im_msg_from_json(v2, &m2, err, sizeof(err)) == 0);

    ngx_http_im_buf_init(&b2, 0);
    ngx_http_im_buf_str(&b2, "[");
    ngx_http_im_msg_to_json(&m2, &b2, &seq_at);
    CHECK(b2.len == b.len + 1 && memcmp(b2.data + 1, b.data, b.len) == 0);
    CHECK(memcmp(b2.data + seq_at - 6, "\"seq\":12345,", 12) == 0);

    ngx_http_im_msg_free(&m2);
    CHECK(m2.at_user_ids == NULL && m2.nat == 0 && !m2.at_owned);
    ngx_http_im_msg_free(&m2);
    yajl_tree_free(v2);

    /* a bounded buffer fails cleanly */

    ngx_http_im_buf_free(&b2);
    ngx_http_im_buf_init(&b2, 100);
    ngx_http_im_msg_to_json(&m, &b2, NULL);
    CHECK(b2.failed && b2.len <= 100);
    ngx_http_im_buf_free(&b2);

    ngx_http_im_msg_free(&m);
    yajl_tree_free(v);

    /* an empty object, null, and a NULL tree all give the empty message */

    v = ngx_http_im_json_parse(S("{\"unknown\":[1,{}],\"sendID\":null,"
                                 "\"seq\":null,\"options\":null,"
                                 "\"offlinePushInfo\":null,"
                                 "\"atUserIDList\":null}"),
                               err, sizeof(err));
    CHECK(v != NULL);
    CHECK(ngx_http_im_msg_from_json(v, &m, err, sizeof(err)) == 0);
    CHECK(!m.has_push_info && m.nat == 0 && m.at_user_ids == NULL);

    ngx_http_im_buf_reset(&b);
    ngx_http_im_msg_to_json(&m, &b, &seq_at);
    CHECK(check_buf_is(&b, msg_empty));
    CHECK(memcmp(b.data + seq_at - 6, "\"seq\":0,", 8) == 0);
    ngx_http_im_msg_free(&m);
    yajl_tree_free(v);

    CHECK(ngx_http_im_msg_from_json(NULL, &m, err, sizeof(err)) == 0);
    ngx_http_im_buf_reset(&b);
    ngx_http_im_msg_to_json(&m, &b, NULL);
    CHECK(check_buf_is(&b, msg_empty));
    ngx_http_im_msg_free(&m);

    ngx_http_im_msg_init(&m);
    ngx_http_im_buf_reset(&b);
    ngx_http_im_msg_to_json(&m, &b, NULL);
    CHECK(check_buf_is(&b, msg_empty));

    ngx_http_im_buf_free(&b);
}


static void
test_msg_built(void)
{
    size_t              seq_at;
    ngx_http_im_msg_t   m;
    ngx_http_im_buf_t   b;
    ngx_http_im_str_t   at[1];

    /* a message filled by a caller, with its own @ list */

    ngx_http_im_msg_init(&m);

    m.send_id.data = "a\"b";
    m.send_id.len = 3;
    m.seq = -1;
    at[0].data = "u9";
    at[0].len = 2;
    m.at_user_ids = at;
    m.nat = 1;
    m.noptions = 1;
    m.options[0].key.data = "k";
    m.options[0].key.len = 1;
    m.options[0].value = 1;
    m.offline_push_info.ios_badge_count = 3;

    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_msg_to_json(&m, &b, &seq_at);
    CHECK(!b.failed);
    CHECK(memcmp(b.data, "{\"sendID\":\"a\\\"b\",", 17) == 0);
    CHECK(memcmp(b.data + seq_at, "-1,", 3) == 0);
    CHECK(strstr((char *) b.data, "\"options\":{\"k\":true}") != NULL);
    CHECK(strstr((char *) b.data, "\"iOSBadgeCount\":true}") != NULL);
    CHECK(strstr((char *) b.data, "\"atUserIDList\":[\"u9\"]") != NULL);

    /* not owned: msg_free leaves it alone (ASan would see a bad free) */
    ngx_http_im_msg_free(&m);
    CHECK(m.at_user_ids == NULL);

    ngx_http_im_buf_free(&b);
}


/* parses one MsgData and expects "err" to be exactly "exp" */

static int
msg_error_is(const char *json, const char *exp)
{
    int                ok;
    char               err[NGX_HTTP_IM_JSON_ERRLEN];
    yajl_val           v;
    ngx_http_im_msg_t  m;

    v = check_parse(json);
    if (v == NULL) {
        return 0;
    }

    err[0] = '\0';

    ok = (ngx_http_im_msg_from_json(v, &m, err, sizeof(err)) == -1
          && strcmp(err, exp) == 0
          && m.at_user_ids == NULL);

    if (!ok) {
        printf("  json: %s\n  got: %s\n  exp: %s\n", json, err, exp);
    }

    yajl_tree_free(v);

    return ok;
}


static void
test_msg_errors(void)
{
    int          i;
    char         json[8192], exp[128], *p;

    static const struct {
        const char  *json;
        const char  *err;
    } errors[] = {
        { "{\"contentType\":\"101\"}",
          "field \"contentType\" must be an integer" },
        { "{\"content\":{\"content\":\"hi\"}}",
          "field \"content\" must be a string" },
        { "{\"options\":[]}", "field \"options\" must be an object" },
        { "{\"options\":{\"a\":1}}",
          "field \"options\" must map names to booleans" },
        { "{\"options\":{\"a\":null}}",
          "field \"options\" must map names to booleans" },
        { "{\"offlinePushInfo\":\"x\"}",
          "field \"offlinePushInfo\" must be an object" },
        { "{\"offlinePushInfo\":{\"title\":1}}",
          "field \"offlinePushInfo.title\" must be a string" },
        { "{\"offlinePushInfo\":{\"desc\":[]}}",
          "field \"offlinePushInfo.desc\" must be a string" },
        { "{\"offlinePushInfo\":{\"ex\":false}}",
          "field \"offlinePushInfo.ex\" must be a string" },
        { "{\"offlinePushInfo\":{\"iOSPushSound\":2}}",
          "field \"offlinePushInfo.iOSPushSound\" must be a string" },
        { "{\"offlinePushInfo\":{\"iOSBadgeCount\":\"1\"}}",
          "field \"offlinePushInfo.iOSBadgeCount\" must be a boolean" },
        { "{\"atUserIDList\":\"u1\"}",
          "field \"atUserIDList\" must be an array" },
        { "{\"atUserIDList\":[\"u1\",2]}",
          "field \"atUserIDList\" must be an array of strings" },
        { "{\"atUserIDList\":[\"u1\",null]}",
          "field \"atUserIDList\" must be an array of strings" },
        { "[]", "field \"data\" must be an object" },
        { "\"x\"", "field \"data\" must be an object" },

        /* an error after the @ list was taken frees it (ASan checks) */
        { "{\"atUserIDList\":[\"u1\"],\"ex\":1}",
          "field \"ex\" must be a string" }
    };

    static const char  *strs[] = {
        "sendID", "recvID", "groupID", "clientMsgID", "serverMsgID",
        "senderNickname", "senderFaceURL", "content", "ex", NULL
    };

    static const char  *ints[] = {
        "senderPlatformID", "sessionType", "msgFrom", "contentType", "seq",
        "sendTime", "createTime", "status", NULL
    };

    static const char  *not_str[] = { "5", "true", "{}", "[]", NULL };

    static const char  *not_int[] = {
        "\"5\"", "1.5", "1e3", "true", "{}", "[]",
        "9223372036854775808", NULL
    };

    for (i = 0; strs[i]; i++) {
        snprintf(exp, sizeof(exp), "field \"%s\" must be a string", strs[i]);

        snprintf(json, sizeof(json), "{\"x\":\"u1\",\"%s\":%s}",
                 strs[i], not_str[i % 4]);
        CHECK(msg_error_is(json, exp));
    }

    for (i = 0; ints[i]; i++) {
        snprintf(exp, sizeof(exp), "field \"%s\" must be an integer",
                 ints[i]);

        snprintf(json, sizeof(json), "{\"x\":\"u1\",\"%s\":%s}",
                 ints[i], not_int[i % 7]);
        CHECK(msg_error_is(json, exp));
    }

    for (i = 0; i < (int) CHECK_N(errors); i++) {
        CHECK(msg_error_is(errors[i].json, errors[i].err));
    }

    /* bounds: 16 options, 1000 @ entries */

    p = json + sprintf(json, "{\"options\":{");
    for (i = 0; i < 17; i++) {
        p += sprintf(p, "%s\"o%d\":true", i ? "," : "", i);
    }
    sprintf(p, "}}");
    CHECK(msg_error_is(json, "field \"options\" has more than 16 entries"));

    p = json + sprintf(json, "{\"atUserIDList\":[");
    for (i = 0; i < 1001; i++) {
        p += sprintf(p, "%s\"\"", i ? "," : "");
    }
    sprintf(p, "]}");
    CHECK(msg_error_is(json,
                       "field \"atUserIDList\" has more than 1000 entries"));
}


static void
test_msg_accepts(void)
{
    int                i;
    char               err[NGX_HTTP_IM_JSON_ERRLEN], json[8192], *p;
    yajl_val           v;
    ngx_http_im_msg_t  m;

    /* the limits themselves */

    p = json + sprintf(json, "{\"options\":{");
    for (i = 0; i < 16; i++) {
        p += sprintf(p, "%s\"o%d\":%s", i ? "," : "", i,
                     i % 2 ? "true" : "false");
    }
    p += sprintf(p, "},\"atUserIDList\":[");
    for (i = 0; i < 1000; i++) {
        p += sprintf(p, "%s\"\"", i ? "," : "");
    }
    sprintf(p, "],\"seq\":-9223372036854775807,"
            "\"offlinePushInfo\":{\"iOSBadgeCount\":7}}");

    v = ngx_http_im_json_parse(S(json), err, sizeof(err));
    CHECK(v != NULL);
    CHECK(ngx_http_im_msg_from_json(v, &m, err, sizeof(err)) == 0);
    CHECK(m.noptions == 16 && m.options[15].value == 1 && m.nat == 1000);
    CHECK(m.seq == -9223372036854775807LL);
    CHECK(m.has_push_info && m.offline_push_info.ios_badge_count == 1
          && m.offline_push_info.title.data != NULL);
    ngx_http_im_msg_free(&m);
    yajl_tree_free(v);

    v = ngx_http_im_json_parse(S("{\"offlinePushInfo\":{"
                                 "\"iOSBadgeCount\":0}}"),
                               err, sizeof(err));
    CHECK(v != NULL);
    CHECK(ngx_http_im_msg_from_json(v, &m, err, sizeof(err)) == 0);
    CHECK(m.has_push_info && m.offline_push_info.ios_badge_count == 0);
    ngx_http_im_msg_free(&m);
    yajl_tree_free(v);
}


/*
 * "\u0000" in a string: yajl's strings end at a NUL, so C code would read
 * "a\u0000b" as "a".  The getters refuse such strings, naming the field;
 * keys keep their length (no shorter key matches); an opaque value (a
 * content object) is written back as it came.
 */

static void
test_nul(void)
{
    int                 i;
    char                err[NGX_HTTP_IM_JSON_ERRLEN];
    yajl_val            v;
    ngx_http_im_str_t   s;
    ngx_http_im_buf_t   b;

    static const struct {
        const char  *json;
        const char  *err;
    } msgs[] = {
        { "{\"sendID\":\"u1\\u0000x\"}",
          "field \"sendID\" must not contain NUL bytes" },
        { "{\"senderNickname\":\"\\u0000\"}",
          "field \"senderNickname\" must not contain NUL bytes" },
        { "{\"content\":\"{}\\u0000\"}",
          "field \"content\" must not contain NUL bytes" },
        { "{\"offlinePushInfo\":{\"title\":\"t\\u0000\"}}",
          "field \"offlinePushInfo.title\" must not contain NUL bytes" },
        { "{\"atUserIDList\":[\"u1\",\"u2\\u0000\"]}",
          "field \"atUserIDList\" must not contain NUL bytes" }
    };

    v = ngx_http_im_json_parse(S("{\"secret\":\"openIM123\\u0000junk\","
                                 "\"k\\u0000\":1,\"e\":\"\\\\u0000\"}"),
                               err, sizeof(err));
    CHECK(v != NULL);

    err[0] = '\0';
    CHECK(ngx_http_im_json_get_str(v, "secret", 1, &s, err, sizeof(err))
          == -1
          && strcmp(err, "field \"secret\" must not contain NUL bytes")
             == 0);

    /* a key with a NUL is not the shorter key */
    CHECK(ngx_http_im_json_get(v, "k") == NULL);

    /* an escaped backslash before "u0000" is no NUL */
    CHECK(ngx_http_im_json_get_str(v, "e", 1, &s, err, sizeof(err)) == 0
          && str_is(&s, "\\u0000"));

    /* written back as it came */
    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_buf_json_val(&b, v);
    CHECK(check_buf_is(&b, "{\"secret\":\"openIM123\\u0000junk\","
                           "\"k\\u0000\":1,\"e\":\"\\\\u0000\"}"));
    ngx_http_im_buf_free(&b);
    yajl_tree_free(v);

    for (i = 0; i < (int) CHECK_N(msgs); i++) {
        CHECK_CASE(msg_error_is(msgs[i].json, msgs[i].err), msgs[i].json);
    }

    /* the overlong form itself, sent raw, is no NUL but invalid UTF-8 */
    v = ngx_http_im_json_parse(S("{\"ex\":\"a\xc0\x80\"}"), err,
                               sizeof(err));
    CHECK(v == NULL && strcmp(err, "invalid JSON: invalid UTF-8") == 0);
    yajl_tree_free(v);
}


/*
 * "text" fails to parse with exactly "exp", or, if "exp" is NULL, parses;
 * shows what it got if not
 */

static int
parse_error_is(const char *text, const char *exp)
{
    int       ok;
    char      err[NGX_HTTP_IM_JSON_ERRLEN];
    yajl_val  v;

    err[0] = '\0';

    v = ngx_http_im_json_parse((const unsigned char *) text, strlen(text),
                               err, sizeof(err));

    ok = (exp == NULL) ? (v != NULL) : (v == NULL && strcmp(err, exp) == 0);

    if (!ok) {
        printf("  got: %s\n  exp: %s\n", v ? "(parsed)" : err,
               exp ? exp : "(parsed)");
    }

    yajl_tree_free(v);

    return ok;
}


/* "text" parses and is written back byte for byte */

static int
parse_back_is(const char *text)
{
    int                ok;
    yajl_val           v;
    ngx_http_im_buf_t  b;

    v = check_parse(text);
    if (v == NULL) {
        return 0;
    }

    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_buf_json_val(&b, v);
    ok = check_buf_is(&b, text);
    ngx_http_im_buf_free(&b);
    yajl_tree_free(v);

    return ok;
}


/*
 * What yajl lets through and the parser refuses: text that is not
 * strictly UTF-8, VT and FF as whitespace, and a string left open after
 * a whole value, which yajl_complete_parse() takes for text still to come.
 */

static void
test_strict(void)
{
    int                rc;
    char               err[NGX_HTTP_IM_JSON_ERRLEN];
    size_t             i;
    yajl_val           v;
    ngx_http_im_req_t  req;

    static const char  *bad_utf8[] = {
        "{\"a\":\"\xc0\xaf\"}",                 /* overlong '/' */
        "{\"a\":\"\xc1\xbf\"}",
        "{\"a\":\"\xe0\x80\xaf\"}",
        "{\"a\":\"\xe0\x9f\xbf\"}",             /* overlong U+07FF */
        "{\"a\":\"\xf0\x80\x80\xaf\"}",
        "{\"a\":\"\xf0\x8f\xbf\xbf\"}",         /* overlong U+FFFF */
        "{\"a\":\"\xed\xa0\x80\"}",             /* surrogate U+D800 */
        "{\"a\":\"\xed\xbf\xbf\"}",             /* surrogate U+DFFF */
        "{\"a\":\"\xed\xa0\xbd\xed\xb8\x80\"}", /* CESU-8 pair */
        "{\"a\":\"\xf4\x90\x80\x80\"}",         /* U+110000 */
        "{\"a\":\"\xf5\x80\x80\x80\"}",
        "{\"a\":\"\xf7\xbf\xbf\xbf\"}",
        "{\"a\":\"\xff\"}",
        "{\"a\":\"\xfe\"}",
        "{\"a\":\"\x80\"}",                     /* lone continuation */
        "{\"a\":\"\xe2\x82\"}",                 /* cut short */
        "{\"a\":\"\xe2\x82",                    /* ... at the end */
        "{\"a\":\"\xf0\x9f\x98\"}",
        "{\"\xed\xa0\x80\":1}",                 /* in a key */
        "{\"a\":1}\xc0\xaf",                    /* outside strings */
        "\xef\xbb\xbf\xff{}",
        /* past the first 8 bytes, which the validator skips by words */
        "{\"a\":\"0123456789abcdef0123456789\xed\xa0\x80\"}"
    };

    static const char  *unterminated[] = {
        "{\"a\":1} \"abc",
        "{\"a\":1}\"",
        "{\"a\":1} \"",
        "{\"a\":1} \"ab\\",
        "{\"a\":1} \"ab\\\"",                   /* the quote is escaped */
        "{\"a\":1} \"ab\\u00",
        "[1]\n\"x",
        "\"abc",
        "{\"a\":\"b"
    };

    static const char  *bad_space[] = {
        "{\"a\":1}\x0b",
        "{\"a\":1}\x0c",
        "\x0b{}",
        "{\x0c\"a\":1}",
        "{\"a\":\x0b" "1}",
        "[1,\x0c" "2]",
        "{\"a\":1} \t\r\n\x0c"
    };

    static const struct {
        const char  *text;
        const char  *err;
    } reqs[] = {
        { "{\"reqIdentifier\":1001} \"abc",
          "invalid JSON: unterminated string" },
        { "{\"reqIdentifier\":1001}\x0c",
          "invalid JSON: invalid whitespace" },
        { "{\"reqIdentifier\":1001,\"operationID\":\"\xed\xa0\x80\"}",
          "invalid JSON: invalid UTF-8" }
    };

    /* valid UTF-8 at the edges, and escapes of VT and FF */
    static const char  *good[] = {
        "{\"a\":\"\xc2\x80\xdf\xbf\"}",
        "{\"a\":\"\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\"}",
        "{\"a\":\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"}",
        "{\"\xe4\xb8\xad\":\"\xf0\x9f\x98\x80\"}",
        "{\"a\":\"\\f\\u000b\"}",
        "\"\\\\\"",
        "\"a\\\"b\""
    };

    for (i = 0; i < CHECK_N(bad_utf8); i++) {
        CHECK_CASE(parse_error_is(bad_utf8[i],
                                  "invalid JSON: invalid UTF-8"),
                   bad_utf8[i]);
    }

    for (i = 0; i < CHECK_N(unterminated); i++) {
        CHECK_CASE(parse_error_is(unterminated[i],
                                  "invalid JSON: unterminated string"),
                   unterminated[i]);
    }

    for (i = 0; i < CHECK_N(bad_space); i++) {
        CHECK_CASE(parse_error_is(bad_space[i],
                                  "invalid JSON: invalid whitespace"),
                   bad_space[i]);
    }

    for (i = 0; i < CHECK_N(good); i++) {
        CHECK_CASE(parse_back_is(good[i]), good[i]);
    }

    /* RFC 8259's whitespace, everywhere it may be */
    CHECK(parse_error_is(" \t\r\n{ \t\r\n\"a\" \t\r\n: \t\r\n[ \t\r\n1 \t\r\n"
                         ", \t\r\n2 \t\r\n] \t\r\n} \t\r\n", NULL));

    /* in a string they are control characters, which yajl refuses */
    v = ngx_http_im_json_parse(S("{\"a\":\"\x0b\x0c\"}"), err, sizeof(err));
    CHECK(v == NULL && strncmp(err, "invalid JSON: ", 14) == 0
          && strstr(err, "whitespace") == NULL);
    yajl_tree_free(v);

    /* the request envelope, which WebSocket requests come in */

    for (i = 0; i < CHECK_N(reqs); i++) {
        rc = ngx_http_im_req_parse(S(reqs[i].text), &req, err, sizeof(err));
        CHECK_CASE(rc == -1 && strcmp(err, reqs[i].err) == 0
                   && req.root == NULL,
                   reqs[i].text);
        ngx_http_im_req_free(&req);
    }
}


/*
 * The text is valid UTF-8, but yajl decodes a lone low surrogate escape
 * into invalid UTF-8: the string getters refuse it, naming the field
 * (a NUL is named first), while a pair is one character.
 */

static void
test_surrogate_escapes(void)
{
    int                 i;
    char                err[NGX_HTTP_IM_JSON_ERRLEN];
    yajl_val            v;
    ngx_http_im_str_t   s;
    ngx_http_im_msg_t   m;

    static const struct {
        const char  *json;
        const char  *err;
    } msgs[] = {
        { "{\"sendID\":\"u\\udc00\"}",
          "field \"sendID\" is not valid UTF-8" },
        { "{\"content\":\"{}\\udfff\"}",
          "field \"content\" is not valid UTF-8" },
        { "{\"offlinePushInfo\":{\"title\":\"t\\udc00\"}}",
          "field \"offlinePushInfo.title\" is not valid UTF-8" },
        { "{\"offlinePushInfo\":{\"desc\":\"\\ude00\"}}",
          "field \"offlinePushInfo.desc\" is not valid UTF-8" },
        { "{\"atUserIDList\":[\"u1\",\"\\udc00\"]}",
          "field \"atUserIDList\" is not valid UTF-8" },
        { "{\"ex\":\"\\udc00\\u0000\"}",
          "field \"ex\" must not contain NUL bytes" }
    };

    for (i = 0; i < (int) CHECK_N(msgs); i++) {
        CHECK_CASE(msg_error_is(msgs[i].json, msgs[i].err), msgs[i].json);
    }

    v = check_parse("{\"k\":\"\\udc00\",\"pair\":\"\\ud83d\\ude00\"}");
    CHECK(v != NULL);

    err[0] = '\0';
    CHECK(ngx_http_im_json_get_str(v, "k", 1, &s, err, sizeof(err)) == -1
          && strcmp(err, "field \"k\" is not valid UTF-8") == 0);
    CHECK(ngx_http_im_json_get_str(v, "pair", 1, &s, err, sizeof(err)) == 0
          && str_is(&s, "\xf0\x9f\x98\x80"));
    yajl_tree_free(v);

    ngx_http_im_msg_init(&m);
    v = check_parse("{\"sendID\":\"\\ud83d\\ude00\"}");
    CHECK(v != NULL
          && ngx_http_im_msg_from_json(v, &m, err, sizeof(err)) == 0
          && str_is(&m.send_id, "\xf0\x9f\x98\x80"));
    ngx_http_im_msg_free(&m);
    yajl_tree_free(v);
}


/* the int32 fields of MsgData (im.proto) must fit 32 bits */

static void
test_msg_int32(void)
{
    int                 i;
    char                err[NGX_HTTP_IM_JSON_ERRLEN], json[128], exp[128];
    yajl_val            v;
    ngx_http_im_msg_t   m;

    static const char  *ints[] = {
        "senderPlatformID", "sessionType", "msgFrom", "contentType",
        "status"
    };

    for (i = 0; i < (int) CHECK_N(ints); i++) {
        snprintf(exp, sizeof(exp), "field \"%s\" must be a 32-bit integer",
                 ints[i]);

        snprintf(json, sizeof(json), "{\"%s\":2147483648}", ints[i]);
        CHECK_CASE(msg_error_is(json, exp), ints[i]);

        snprintf(json, sizeof(json), "{\"%s\":-2147483649}", ints[i]);
        CHECK_CASE(msg_error_is(json, exp), ints[i]);
    }

    v = ngx_http_im_json_parse(S("{\"senderPlatformID\":2147483647,"
                                 "\"status\":-2147483648,"
                                 "\"seq\":2147483648,"
                                 "\"sendTime\":9223372036854775807}"),
                               err, sizeof(err));
    CHECK(v != NULL);
    CHECK(ngx_http_im_msg_from_json(v, &m, err, sizeof(err)) == 0);
    CHECK(m.sender_platform_id == 2147483647LL
          && m.status == -2147483648LL && m.seq == 2147483648LL
          && m.send_time == 9223372036854775807LL);
    ngx_http_im_msg_free(&m);
    yajl_tree_free(v);
}


/* the getter of "type" ('s'tr, 'i'nt, 'b'ool, 'a'rray, 'o'bject) */

static int
get_any(int type, yajl_val v, const char *key, int required, char *err,
    size_t errlen)
{
    int                bv;
    yajl_val           o;
    long long          n;
    ngx_http_im_str_t  s;

    switch (type) {
    case 's':
        return ngx_http_im_json_get_str(v, key, required, &s, err, errlen);
    case 'i':
        return ngx_http_im_json_get_int(v, key, required, &n, err, errlen);
    case 'b':
        return ngx_http_im_json_get_bool(v, key, required, &bv, err, errlen);
    case 'a':
        return ngx_http_im_json_get_array(v, key, required, &o, err, errlen);
    default:
        return ngx_http_im_json_get_object(v, key, required, &o, err,
                                           errlen);
    }
}


static void
test_helpers(void)
{
    int                bv;
    char               err[NGX_HTTP_IM_JSON_ERRLEN];
    size_t             i;
    yajl_val           v, o;
    long long          n;
    ngx_http_im_str_t  s;

    static const struct {
        int          type;
        const char  *key;
        int          required;
        const char  *err;
    } errors[] = {
        { 's', "zz", 1, "field \"zz\" is required" },
        { 's', "n", 1, "field \"n\" is required" },
        { 's', "i", 0, "field \"i\" must be a string" },
        { 'i', "f", 0, "field \"f\" must be an integer" },
        { 'i', "s", 0, "field \"s\" must be an integer" },
        { 'b', "i", 1, "field \"i\" must be a boolean" },
        { 'a', "o", 0, "field \"o\" must be an array" },
        { 'o', "a", 1, "field \"a\" must be an object" }
    };

    v = ngx_http_im_json_parse(S("{\"s\":\"x\",\"i\":7,\"f\":1.5,\"b\":true,"
                                 "\"a\":[1],\"o\":{},\"n\":null}"),
                               err, sizeof(err));
    CHECK(v != NULL);

    CHECK(ngx_http_im_json_get(v, "i") != NULL);
    CHECK(ngx_http_im_json_get(v, "zz") == NULL);
    CHECK(ngx_http_im_json_get(NULL, "i") == NULL);
    CHECK(ngx_http_im_json_get(ngx_http_im_json_get(v, "a"), "i") == NULL);

    CHECK(ngx_http_im_json_get_str(v, "s", 1, &s, err, sizeof(err)) == 0
          && str_is(&s, "x"));
    CHECK(ngx_http_im_json_get_str(v, "zz", 0, &s, err, sizeof(err)) == 0
          && str_is(&s, ""));
    CHECK(ngx_http_im_json_get_str(v, "n", 0, &s, err, sizeof(err)) == 0
          && str_is(&s, ""));

    CHECK(ngx_http_im_json_get_int(v, "i", 1, &n, err, sizeof(err)) == 0
          && n == 7);
    CHECK(ngx_http_im_json_get_int(v, "zz", 0, &n, err, sizeof(err)) == 0
          && n == 0);

    CHECK(ngx_http_im_json_get_bool(v, "b", 1, &bv, err, sizeof(err)) == 0
          && bv == 1);

    CHECK(ngx_http_im_json_get_array(v, "a", 1, &o, err, sizeof(err)) == 0
          && o != NULL && YAJL_IS_ARRAY(o));
    CHECK(ngx_http_im_json_get_array(v, "zz", 0, &o, err, sizeof(err)) == 0
          && o == NULL);

    CHECK(ngx_http_im_json_get_object(v, "o", 1, &o, err, sizeof(err)) == 0
          && o != NULL && YAJL_IS_OBJECT(o));

    for (i = 0; i < CHECK_N(errors); i++) {
        err[0] = '\0';
        CHECK_CASE(get_any(errors[i].type, v, errors[i].key,
                           errors[i].required, err, sizeof(err))
                   == -1
                   && strcmp(err, errors[i].err) == 0,
                   errors[i].err);
    }

    /* a NULL err is allowed with errlen 0 */
    CHECK(ngx_http_im_json_get_int(v, "s", 0, &n, NULL, 0) == -1);

    yajl_tree_free(v);
}


static void
test_members_unique(void)
{
    char      err[128], big[2048];
    size_t    i, n;
    yajl_val  v;

    v = ngx_http_im_json_parse((u_char *) "{\"a\":1,\"b\":2}", 13, err,
                               sizeof(err));
    CHECK(v && ngx_http_im_json_members_unique(v, 64, err, sizeof(err))
               == 0);
    yajl_tree_free(v);

    v = ngx_http_im_json_parse((u_char *) "{\"a\":[],\"b\":1,\"a\":[1]}",
                               22, err, sizeof(err));
    CHECK(v && ngx_http_im_json_members_unique(v, 64, err, sizeof(err))
               == -1
          && strcmp(err, "field \"a\" appears twice") == 0);
    yajl_tree_free(v);

    /* 65 distinct fields: over the bound, whatever their names */
    n = (size_t) snprintf(big, sizeof(big), "{");
    for (i = 0; i < 65; i++) {
        n += (size_t) snprintf(big + n, sizeof(big) - n, "%s\"k%zu\":0",
                               i ? "," : "", i);
    }
    n += (size_t) snprintf(big + n, sizeof(big) - n, "}");

    v = ngx_http_im_json_parse((u_char *) big, n, err, sizeof(err));
    CHECK(v && ngx_http_im_json_members_unique(v, 64, err, sizeof(err))
               == -1
          && strcmp(err, "the body has more than 64 fields") == 0);
    yajl_tree_free(v);
}


/* which pushed MsgData the JS SDK must get in notificationMsgs */
static void
test_msg_is_note(void)
{
    size_t              seq_at;
    ngx_http_im_msg_t   m;
    ngx_http_im_buf_t   b;

    ngx_http_im_msg_init(&m);
    m.content.data = "{\"detail\":\"{\\\"seq\\\":0}\"}";
    m.content.len = strlen(m.content.data);
    m.content_type = 2200;
    m.seq = 0;

    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_msg_to_json(&m, &b, &seq_at);
    CHECK(!b.failed && ngx_http_im_msg_json_is_note(b.data, b.len) == 1);

    /* a stored one (seq > 0), a text, a type past the range: messages */
    b.data[seq_at] = '7';
    CHECK(ngx_http_im_msg_json_is_note(b.data, b.len) == 0);
    ngx_http_im_buf_free(&b);

    m.content_type = 101;
    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_msg_to_json(&m, &b, NULL);
    CHECK(!b.failed && ngx_http_im_msg_json_is_note(b.data, b.len) == 0);
    ngx_http_im_buf_free(&b);

    m.content_type = 5000;
    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_msg_to_json(&m, &b, NULL);
    CHECK(!b.failed && ngx_http_im_msg_json_is_note(b.data, b.len) == 0);
    ngx_http_im_buf_free(&b);

    /* truncated texts and keys without digits */
    CHECK(ngx_http_im_msg_json_is_note((u_char *) "{\"contentType\":", 14)
          == 0);
    CHECK(ngx_http_im_msg_json_is_note(
              (u_char *) "{\"contentType\":2200,\"seq\":-0}", 29) == 0);
    CHECK(ngx_http_im_msg_json_is_note(
              (u_char *) "{\"contentType\":2200,\"seq\":0}", 28) == 1);
}


int
main(void)
{
    test_msg_is_note();
    test_members_unique();
    test_buf();
    test_escape();
    test_parse();
    test_strict();
    test_surrogate_escapes();
    test_req();
    test_resp();
    test_msg_roundtrip();
    test_msg_built();
    test_msg_errors();
    test_msg_accepts();
    test_nul();
    test_msg_int32();
    test_helpers();

    return check_done();
}
