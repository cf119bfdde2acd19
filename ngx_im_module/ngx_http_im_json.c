
/*
 * ngx_im: the JSON codec (yajl trees in, compact JSON text out).
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "ngx_http_im_json.h"
#include "ngx_http_im_ws_frame.h"


#define NGX_HTTP_IM_BUF_MIN     256

#define NGX_HTTP_IM_FIELD_STR   0
#define NGX_HTTP_IM_FIELD_INT   1       /* int64 */
#define NGX_HTTP_IM_FIELD_OPT   2
#define NGX_HTTP_IM_FIELD_PUSH  3
#define NGX_HTTP_IM_FIELD_AT    4
#define NGX_HTTP_IM_FIELD_INT32 5

/*
 * yajl keeps strings NUL-terminated, so a "\u0000" escape would cut a
 * string short.  The parser hands yajl the overlong form of U+0000
 * instead (two bytes that valid UTF-8 never holds, as Java's modified
 * UTF-8 does): the string getters refuse it, the encoder writes it back
 * as "\u0000".
 */
#define NGX_HTTP_IM_NUL         "\xc0\x80"


typedef struct {
    const char                *name;
    int                        type;
    size_t                     offset;
} ngx_http_im_field_t;


static int ngx_http_im_buf_reserve(ngx_http_im_buf_t *b, size_t n);
static size_t ngx_http_im_utf8_len(const unsigned char *p,
    const unsigned char *last);
static void ngx_http_im_buf_val(ngx_http_im_buf_t *b, yajl_val v,
    int depth);
static int ngx_http_im_json_prescan(const unsigned char *text, size_t len,
    char *copy, char *err, size_t errlen);
static int ngx_http_im_json_copy(const unsigned char *text, size_t len,
    char *copy, char *err, size_t errlen);
static int ngx_http_im_json_outside(unsigned char c, size_t *depth,
    char *err, size_t errlen);
static void ngx_http_im_json_error(char *err, size_t errlen,
    const char *prefix, const char *key, const char *what);
static int ngx_http_im_json_member(yajl_val obj, const char *prefix,
    const char *key, int required, yajl_type type, yajl_val *out, char *err,
    size_t errlen);
static int ngx_http_im_json_str(yajl_val obj, const char *prefix,
    const char *key, int required, ngx_http_im_str_t *out, char *err,
    size_t errlen);
static int ngx_http_im_json_int(yajl_val obj, const char *prefix,
    const char *key, int required, long long *out, char *err,
    size_t errlen);
static int ngx_http_im_json_int32(yajl_val obj, const char *key,
    long long *out, char *err, size_t errlen);
static int ngx_http_im_json_text(const char *s, const char *prefix,
    const char *key, char *err, size_t errlen);
static int ngx_http_im_msg_options(yajl_val obj, ngx_http_im_msg_t *m,
    char *err, size_t errlen);
static int ngx_http_im_msg_push_info(yajl_val obj, ngx_http_im_msg_t *m,
    char *err, size_t errlen);
static int ngx_http_im_msg_at(yajl_val obj, ngx_http_im_msg_t *m, char *err,
    size_t errlen);
static void ngx_http_im_buf_str_field(ngx_http_im_buf_t *b, const char *name,
    const ngx_http_im_str_t *s);


/* what an absent or null "data" reads as; never written, never freed */
static struct yajl_val_s  ngx_http_im_json_empty_object = {
    yajl_t_object, { NULL }
};


/* MsgData fields, in output order */
static const ngx_http_im_field_t  ngx_http_im_msg_fields[] = {

    { "sendID", NGX_HTTP_IM_FIELD_STR,
      offsetof(ngx_http_im_msg_t, send_id) },

    { "recvID", NGX_HTTP_IM_FIELD_STR,
      offsetof(ngx_http_im_msg_t, recv_id) },

    { "groupID", NGX_HTTP_IM_FIELD_STR,
      offsetof(ngx_http_im_msg_t, group_id) },

    { "clientMsgID", NGX_HTTP_IM_FIELD_STR,
      offsetof(ngx_http_im_msg_t, client_msg_id) },

    { "serverMsgID", NGX_HTTP_IM_FIELD_STR,
      offsetof(ngx_http_im_msg_t, server_msg_id) },

    { "senderPlatformID", NGX_HTTP_IM_FIELD_INT32,
      offsetof(ngx_http_im_msg_t, sender_platform_id) },

    { "senderNickname", NGX_HTTP_IM_FIELD_STR,
      offsetof(ngx_http_im_msg_t, sender_nickname) },

    { "senderFaceURL", NGX_HTTP_IM_FIELD_STR,
      offsetof(ngx_http_im_msg_t, sender_face_url) },

    { "sessionType", NGX_HTTP_IM_FIELD_INT32,
      offsetof(ngx_http_im_msg_t, session_type) },

    { "msgFrom", NGX_HTTP_IM_FIELD_INT32,
      offsetof(ngx_http_im_msg_t, msg_from) },

    { "contentType", NGX_HTTP_IM_FIELD_INT32,
      offsetof(ngx_http_im_msg_t, content_type) },

    { "content", NGX_HTTP_IM_FIELD_STR,
      offsetof(ngx_http_im_msg_t, content) },

    { "seq", NGX_HTTP_IM_FIELD_INT,
      offsetof(ngx_http_im_msg_t, seq) },

    { "sendTime", NGX_HTTP_IM_FIELD_INT,
      offsetof(ngx_http_im_msg_t, send_time) },

    { "createTime", NGX_HTTP_IM_FIELD_INT,
      offsetof(ngx_http_im_msg_t, create_time) },

    { "status", NGX_HTTP_IM_FIELD_INT32,
      offsetof(ngx_http_im_msg_t, status) },

    { "options", NGX_HTTP_IM_FIELD_OPT, 0 },

    { "offlinePushInfo", NGX_HTTP_IM_FIELD_PUSH, 0 },

    { "atUserIDList", NGX_HTTP_IM_FIELD_AT, 0 },

    { "ex", NGX_HTTP_IM_FIELD_STR,
      offsetof(ngx_http_im_msg_t, ex) },

    { NULL, 0, 0 }
};


void
ngx_http_im_buf_init(ngx_http_im_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
    b->failed = 0;
}


void
ngx_http_im_buf_free(ngx_http_im_buf_t *b)
{
    free(b->data);
    ngx_http_im_buf_init(b, b->max);
}


void
ngx_http_im_buf_reset(ngx_http_im_buf_t *b)
{
    b->len = 0;
    b->failed = 0;
}


static int
ngx_http_im_buf_reserve(ngx_http_im_buf_t *b, size_t n)
{
    size_t          need, cap;
    unsigned char  *p;

    if (b->failed) {
        return -1;
    }

    if (n <= b->cap - b->len) {
        return 0;
    }

    if (n > SIZE_MAX - b->len) {
        goto failed;
    }

    need = b->len + n;

    if (b->max && need > b->max) {
        goto failed;
    }

    cap = b->cap ? b->cap : NGX_HTTP_IM_BUF_MIN;

    while (cap < need) {
        cap = (cap > SIZE_MAX / 2) ? need : cap * 2;
    }

    if (b->max && cap > b->max) {
        cap = b->max;
    }

    p = realloc(b->data, cap);
    if (p == NULL) {
        goto failed;
    }

    b->data = p;
    b->cap = cap;

    return 0;

failed:

    b->failed = 1;

    return -1;
}


void
ngx_http_im_buf_add(ngx_http_im_buf_t *b, const void *p, size_t n)
{
    if (n == 0 || ngx_http_im_buf_reserve(b, n) != 0) {
        return;
    }

    memcpy(b->data + b->len, p, n);
    b->len += n;
}


void
ngx_http_im_buf_str(ngx_http_im_buf_t *b, const char *s)
{
    ngx_http_im_buf_add(b, s, strlen(s));
}


void
ngx_http_im_buf_int(ngx_http_im_buf_t *b, long long v)
{
    int   n;
    char  tmp[32];

    n = snprintf(tmp, sizeof(tmp), "%lld", v);

    ngx_http_im_buf_add(b, tmp, (size_t) n);
}


void
ngx_http_im_buf_json_str(ngx_http_im_buf_t *b, const char *s, size_t n)
{
    char                  esc[8];
    size_t                k;
    unsigned char         c;
    const unsigned char  *p, *last, *run;

    ngx_http_im_buf_add(b, "\"", 1);

    p = (const unsigned char *) s;
    last = p + n;
    run = p;

    while (p < last) {
        c = *p;

        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            p++;
            continue;
        }

        if (c >= 0x80) {
            k = ngx_http_im_utf8_len(p, last);
            if (k) {
                p += k;
                continue;
            }
        }

        /* c needs an escape: flush the run before it */

        ngx_http_im_buf_add(b, run, p - run);

        switch (c) {

        case '"':
            ngx_http_im_buf_add(b, "\\\"", 2);
            break;

        case '\\':
            ngx_http_im_buf_add(b, "\\\\", 2);
            break;

        case '\b':
            ngx_http_im_buf_add(b, "\\b", 2);
            break;

        case '\f':
            ngx_http_im_buf_add(b, "\\f", 2);
            break;

        case '\n':
            ngx_http_im_buf_add(b, "\\n", 2);
            break;

        case '\r':
            ngx_http_im_buf_add(b, "\\r", 2);
            break;

        case '\t':
            ngx_http_im_buf_add(b, "\\t", 2);
            break;

        default:
            if (c == 0xc0 && last - p > 1 && p[1] == 0x80) {
                /* NGX_HTTP_IM_NUL: the parser's U+0000 */
                ngx_http_im_buf_add(b, "\\u0000", 6);
                p++;

            } else if (c >= 0x80) {
                /* U+FFFD as UTF-8, so that re-encoding is idempotent */
                ngx_http_im_buf_add(b, "\xef\xbf\xbd", 3);

            } else {
                snprintf(esc, sizeof(esc), "\\u%04x", c);
                ngx_http_im_buf_add(b, esc, 6);
            }
        }

        p++;
        run = p;
    }

    ngx_http_im_buf_add(b, run, p - run);
    ngx_http_im_buf_add(b, "\"", 1);
}


/*
 * The length of the valid UTF-8 sequence at p (*p >= 0x80), or 0.  The
 * frame codec's validator decides, so that the encoder keeps as is just
 * what the parser and WebSocket text frames accept.
 */

static size_t
ngx_http_im_utf8_len(const unsigned char *p, const unsigned char *last)
{
    uint32_t              state;
    const unsigned char  *q;

    state = NGX_HTTP_IM_UTF8_ACCEPT;

    for (q = p; q < last; /* void */) {
        state = ngx_http_im_utf8_step(state, q++, 1);

        if (state == NGX_HTTP_IM_UTF8_ACCEPT) {
            return q - p;
        }

        if (state == NGX_HTTP_IM_UTF8_REJECT) {
            return 0;
        }
    }

    /* a sequence cut short by the end */

    return 0;
}


void
ngx_http_im_buf_json_val(ngx_http_im_buf_t *b, yajl_val v)
{
    ngx_http_im_buf_val(b, v, 0);
}


static void
ngx_http_im_buf_val(ngx_http_im_buf_t *b, yajl_val v, int depth)
{
    size_t  i;

    if (depth > NGX_HTTP_IM_JSON_MAX_DEPTH) {
        b->failed = 1;
        return;
    }

    if (v == NULL) {
        ngx_http_im_buf_add(b, "null", 4);
        return;
    }

    switch (v->type) {

    case yajl_t_string:
        ngx_http_im_buf_json_str(b, v->u.string, strlen(v->u.string));
        break;

    case yajl_t_number:
        ngx_http_im_buf_str(b, v->u.number.r);
        break;

    case yajl_t_object:
        ngx_http_im_buf_add(b, "{", 1);

        for (i = 0; i < v->u.object.len; i++) {
            if (i) {
                ngx_http_im_buf_add(b, ",", 1);
            }

            ngx_http_im_buf_json_str(b, v->u.object.keys[i],
                                     strlen(v->u.object.keys[i]));
            ngx_http_im_buf_add(b, ":", 1);
            ngx_http_im_buf_val(b, v->u.object.values[i], depth + 1);
        }

        ngx_http_im_buf_add(b, "}", 1);
        break;

    case yajl_t_array:
        ngx_http_im_buf_add(b, "[", 1);

        for (i = 0; i < v->u.array.len; i++) {
            if (i) {
                ngx_http_im_buf_add(b, ",", 1);
            }

            ngx_http_im_buf_val(b, v->u.array.values[i], depth + 1);
        }

        ngx_http_im_buf_add(b, "]", 1);
        break;

    case yajl_t_true:
        ngx_http_im_buf_add(b, "true", 4);
        break;

    case yajl_t_false:
        ngx_http_im_buf_add(b, "false", 5);
        break;

    default:
        ngx_http_im_buf_add(b, "null", 4);
    }
}


yajl_val
ngx_http_im_json_parse(const unsigned char *text, size_t len, char *err,
    size_t errlen)
{
    char      *copy, *nl, ebuf[256];
    yajl_val   root;

    copy = malloc(len + 1);
    if (copy == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }

    if (ngx_http_im_json_prescan(text, len, copy, err, errlen) != 0) {
        free(copy);
        return NULL;
    }

    ebuf[0] = '\0';

    root = yajl_tree_parse(copy, ebuf, sizeof(ebuf));

    free(copy);

    if (root == NULL) {
        nl = strchr(ebuf, '\n');
        if (nl) {
            *nl = '\0';
        }

        snprintf(err, errlen, "invalid JSON: %s",
                 ebuf[0] ? ebuf : "parse error");
        return NULL;
    }

    return root;
}


/*
 * yajl_tree_parse() needs NUL-terminated text, allows comments, and
 * yajl_tree_free() recurses; so NUL bytes, comments and deep nesting are
 * refused before yajl sees the text.  yajl checks only the shape of UTF-8
 * sequences, so the text is validated here too: strictly, as WebSocket
 * text frames are, since REST bodies come through no frame codec.
 */

static int
ngx_http_im_json_prescan(const unsigned char *text, size_t len, char *copy,
    char *err, size_t errlen)
{
    if (len == 0) {
        snprintf(err, errlen, "invalid JSON: empty text");
        return -1;
    }

    if (memchr(text, '\0', len) != NULL) {
        snprintf(err, errlen, "invalid JSON: NUL byte");
        return -1;
    }

    if (ngx_http_im_utf8_step(NGX_HTTP_IM_UTF8_ACCEPT, text, len)
        != NGX_HTTP_IM_UTF8_ACCEPT)
    {
        snprintf(err, errlen, "invalid JSON: invalid UTF-8");
        return -1;
    }

    return ngx_http_im_json_copy(text, len, copy, err, errlen);
}


/*
 * Copies the text to "copy" (len + 1 bytes), NUL-terminated, with each
 * "\u0000" escape in a string turned into NGX_HTTP_IM_NUL, and checks
 * the bytes outside strings.  A string still open at the end is refused:
 * yajl_complete_parse() takes it for input yet to come, and so would
 * accept '{"a":1} "abc'.
 */

static int
ngx_http_im_json_copy(const unsigned char *text, size_t len, char *copy,
    char *err, size_t errlen)
{
    int     in_str;
    char   *p;
    size_t  i, depth;

    in_str = 0;
    depth = 0;
    p = copy;

    for (i = 0; i < len; i++) {

        if (in_str) {
            if (text[i] == '\\' && len - i >= 6
                && memcmp(&text[i + 1], "u0000", 5) == 0)
            {
                memcpy(p, NGX_HTTP_IM_NUL, 2);
                p += 2;
                i += 5;
                continue;
            }

            if (text[i] == '\\' && i + 1 < len) {
                *p++ = text[i++];

            } else if (text[i] == '"') {
                in_str = 0;
            }

            *p++ = text[i];
            continue;
        }

        *p++ = text[i];

        if (text[i] == '"') {
            in_str = 1;

        } else if (ngx_http_im_json_outside(text[i], &depth, err, errlen)
                   != 0)
        {
            return -1;
        }
    }

    if (in_str) {
        snprintf(err, errlen, "invalid JSON: unterminated string");
        return -1;
    }

    *p = '\0';

    return 0;
}


/*
 * A byte outside strings.  yajl would allow comments and take VT and FF
 * for whitespace (RFC 8259 has only space, tab, LF and CR), and it
 * recurses as deep as the text nests.
 */

static int
ngx_http_im_json_outside(unsigned char c, size_t *depth, char *err,
    size_t errlen)
{
    switch (c) {

    case '[':
    case '{':
        if (++*depth > NGX_HTTP_IM_JSON_MAX_DEPTH) {
            snprintf(err, errlen, "invalid JSON: nested deeper than %d",
                     NGX_HTTP_IM_JSON_MAX_DEPTH);
            return -1;
        }

        break;

    case ']':
    case '}':
        if (*depth) {
            (*depth)--;
        }

        break;

    case '/':
        snprintf(err, errlen, "invalid JSON: comments are not allowed");
        return -1;

    case '\v':
    case '\f':
        snprintf(err, errlen, "invalid JSON: invalid whitespace");
        return -1;
    }

    return 0;
}


int
ngx_http_im_req_parse(const unsigned char *text, size_t len,
    ngx_http_im_req_t *req, char *err, size_t errlen)
{
    yajl_val  data;

    req->root = NULL;
    req->data = &ngx_http_im_json_empty_object;
    req->req_identifier = 0;
    req->operation_id.data = "";
    req->operation_id.len = 0;
    req->msg_incr = req->operation_id;

    req->root = ngx_http_im_json_parse(text, len, err, errlen);
    if (req->root == NULL) {
        return -1;
    }

    if (!YAJL_IS_OBJECT(req->root)) {
        snprintf(err, errlen, "invalid JSON: the request is not an object");
        return -1;
    }

    if (ngx_http_im_json_get_int(req->root, "reqIdentifier", 1,
                                 &req->req_identifier, err, errlen)
        != 0
        || ngx_http_im_json_get_str(req->root, "operationID", 0,
                                    &req->operation_id, err, errlen)
           != 0
        || ngx_http_im_json_get_str(req->root, "msgIncr", 0,
                                    &req->msg_incr, err, errlen)
           != 0
        || ngx_http_im_json_get_object(req->root, "data", 0, &data,
                                       err, errlen)
           != 0)
    {
        return -1;
    }

    if (data) {
        req->data = data;
    }

    return 0;
}


void
ngx_http_im_req_free(ngx_http_im_req_t *req)
{
    if (req->root) {
        yajl_tree_free(req->root);
        req->root = NULL;
    }

    req->data = &ngx_http_im_json_empty_object;
}


void
ngx_http_im_resp_begin(ngx_http_im_buf_t *b, long long req_identifier,
    ngx_http_im_str_t operation_id, ngx_http_im_str_t msg_incr,
    int err_code, const char *err_msg)
{
    if (err_msg == NULL) {
        err_msg = "";
    }

    ngx_http_im_buf_str(b, "{\"reqIdentifier\":");
    ngx_http_im_buf_int(b, req_identifier);
    ngx_http_im_buf_str(b, ",\"operationID\":");
    ngx_http_im_buf_json_str(b, operation_id.data, operation_id.len);
    ngx_http_im_buf_str(b, ",\"msgIncr\":");
    ngx_http_im_buf_json_str(b, msg_incr.data, msg_incr.len);
    ngx_http_im_buf_str(b, ",\"errCode\":");
    ngx_http_im_buf_int(b, err_code);
    ngx_http_im_buf_str(b, ",\"errMsg\":");
    ngx_http_im_buf_json_str(b, err_msg, strlen(err_msg));
    ngx_http_im_buf_str(b, ",\"data\":");
}


void
ngx_http_im_resp_end(ngx_http_im_buf_t *b)
{
    ngx_http_im_buf_add(b, "}", 1);
}


void
ngx_http_im_msg_init(ngx_http_im_msg_t *m)
{
    memset(m, 0, sizeof(ngx_http_im_msg_t));

    m->send_id.data = "";
    m->recv_id.data = "";
    m->group_id.data = "";
    m->client_msg_id.data = "";
    m->server_msg_id.data = "";
    m->sender_nickname.data = "";
    m->sender_face_url.data = "";
    m->content.data = "";
    m->ex.data = "";
    m->offline_push_info.title.data = "";
    m->offline_push_info.desc.data = "";
    m->offline_push_info.ex.data = "";
    m->offline_push_info.ios_push_sound.data = "";
}


int
ngx_http_im_msg_from_json(yajl_val obj, ngx_http_im_msg_t *m, char *err,
    size_t errlen)
{
    int                         rc;
    char                       *f;
    const ngx_http_im_field_t  *fd;

    ngx_http_im_msg_init(m);

    if (obj == NULL || YAJL_IS_NULL(obj)) {
        return 0;
    }

    if (!YAJL_IS_OBJECT(obj)) {
        ngx_http_im_json_error(err, errlen, NULL, "data",
                               "must be an object");
        return -1;
    }

    for (fd = ngx_http_im_msg_fields; fd->name; fd++) {
        f = (char *) m + fd->offset;

        switch (fd->type) {

        case NGX_HTTP_IM_FIELD_STR:
            rc = ngx_http_im_json_str(obj, NULL, fd->name, 0,
                                      (ngx_http_im_str_t *) f, err, errlen);
            break;

        case NGX_HTTP_IM_FIELD_INT:
            rc = ngx_http_im_json_int(obj, NULL, fd->name, 0,
                                      (long long *) f, err, errlen);
            break;

        case NGX_HTTP_IM_FIELD_INT32:
            rc = ngx_http_im_json_int32(obj, fd->name, (long long *) f, err,
                                        errlen);
            break;

        case NGX_HTTP_IM_FIELD_OPT:
            rc = ngx_http_im_msg_options(obj, m, err, errlen);
            break;

        case NGX_HTTP_IM_FIELD_PUSH:
            rc = ngx_http_im_msg_push_info(obj, m, err, errlen);
            break;

        default: /* NGX_HTTP_IM_FIELD_AT */
            rc = ngx_http_im_msg_at(obj, m, err, errlen);
        }

        if (rc != 0) {
            ngx_http_im_msg_free(m);
            return -1;
        }
    }

    return 0;
}


static int
ngx_http_im_msg_options(yajl_val obj, ngx_http_im_msg_t *m, char *err,
    size_t errlen)
{
    size_t    i;
    yajl_val  v, o;

    if (ngx_http_im_json_member(obj, NULL, "options", 0, yajl_t_object, &o,
                                err, errlen)
        != 0)
    {
        return -1;
    }

    if (o == NULL) {
        return 0;
    }

    if (o->u.object.len > NGX_HTTP_IM_MAX_OPTIONS) {
        snprintf(err, errlen, "field \"options\" has more than %d entries",
                 NGX_HTTP_IM_MAX_OPTIONS);
        return -1;
    }

    for (i = 0; i < o->u.object.len; i++) {
        v = o->u.object.values[i];

        if (!YAJL_IS_TRUE(v) && !YAJL_IS_FALSE(v)) {
            ngx_http_im_json_error(err, errlen, NULL, "options",
                                   "must map names to booleans");
            return -1;
        }

        m->options[i].key.data = o->u.object.keys[i];
        m->options[i].key.len = strlen(o->u.object.keys[i]);
        m->options[i].value = YAJL_IS_TRUE(v);
    }

    m->noptions = o->u.object.len;

    return 0;
}


static int
ngx_http_im_msg_push_info(yajl_val obj, ngx_http_im_msg_t *m, char *err,
    size_t errlen)
{
    yajl_val                  o, v;
    ngx_http_im_push_info_t  *pi;

    if (ngx_http_im_json_member(obj, NULL, "offlinePushInfo", 0,
                                yajl_t_object, &o, err, errlen)
        != 0)
    {
        return -1;
    }

    if (o == NULL) {
        return 0;
    }

    pi = &m->offline_push_info;

    if (ngx_http_im_json_str(o, "offlinePushInfo.", "title", 0,
                             &pi->title, err, errlen)
        != 0
        || ngx_http_im_json_str(o, "offlinePushInfo.", "desc", 0,
                                &pi->desc, err, errlen)
           != 0
        || ngx_http_im_json_str(o, "offlinePushInfo.", "ex", 0,
                                &pi->ex, err, errlen)
           != 0
        || ngx_http_im_json_str(o, "offlinePushInfo.", "iOSPushSound", 0,
                                &pi->ios_push_sound, err, errlen)
           != 0)
    {
        return -1;
    }

    /* a boolean in OpenIM; an integer is taken as a count */

    v = ngx_http_im_json_get(o, "iOSBadgeCount");

    if (v == NULL || YAJL_IS_NULL(v) || YAJL_IS_FALSE(v)) {
        pi->ios_badge_count = 0;

    } else if (YAJL_IS_TRUE(v)) {
        pi->ios_badge_count = 1;

    } else if (YAJL_IS_INTEGER(v)) {
        pi->ios_badge_count = (YAJL_GET_INTEGER(v) != 0);

    } else {
        ngx_http_im_json_error(err, errlen, "offlinePushInfo.",
                               "iOSBadgeCount", "must be a boolean");
        return -1;
    }

    m->has_push_info = 1;

    return 0;
}


static int
ngx_http_im_msg_at(yajl_val obj, ngx_http_im_msg_t *m, char *err,
    size_t errlen)
{
    size_t              i, n;
    yajl_val            a, v;
    ngx_http_im_str_t  *ids;

    if (ngx_http_im_json_member(obj, NULL, "atUserIDList", 0, yajl_t_array,
                                &a, err, errlen)
        != 0)
    {
        return -1;
    }

    if (a == NULL || a->u.array.len == 0) {
        return 0;
    }

    n = a->u.array.len;

    if (n > NGX_HTTP_IM_MAX_AT) {
        snprintf(err, errlen,
                 "field \"atUserIDList\" has more than %d entries",
                 NGX_HTTP_IM_MAX_AT);
        return -1;
    }

    for (i = 0; i < n; i++) {
        v = a->u.array.values[i];

        if (!YAJL_IS_STRING(v)) {
            ngx_http_im_json_error(err, errlen, NULL, "atUserIDList",
                                   "must be an array of strings");
            return -1;
        }

        if (ngx_http_im_json_text(v->u.string, NULL, "atUserIDList", err,
                                  errlen)
            != 0)
        {
            return -1;
        }
    }

    ids = malloc(n * sizeof(ngx_http_im_str_t));
    if (ids == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    for (i = 0; i < n; i++) {
        v = a->u.array.values[i];
        ids[i].data = v->u.string;
        ids[i].len = strlen(v->u.string);
    }

    m->at_user_ids = ids;
    m->nat = n;
    m->at_owned = 1;

    return 0;
}


void
ngx_http_im_msg_free(ngx_http_im_msg_t *m)
{
    if (m->at_owned) {
        free(m->at_user_ids);
    }

    m->at_user_ids = NULL;
    m->nat = 0;
    m->at_owned = 0;
}


static long long
ngx_http_im_msg_json_int(const unsigned char *text, size_t len,
    const char *key)
{
    size_t                klen;
    long long             v;
    const unsigned char  *p, *last;

    klen = strlen(key);
    last = text + len;

    for (p = text; p + klen < last; p++) {
        if (memcmp(p, key, klen) != 0) {
            continue;
        }

        p += klen;

        if (p == last || *p < '0' || *p > '9') {
            return -1;
        }

        /* at most 18 digits: our writer never wrote a longer seq or type */
        for (v = 0; p < last && *p >= '0' && *p <= '9'
                    && v < 100000000000000000LL; p++)
        {
            v = v * 10 + (*p - '0');
        }

        return v;
    }

    return -1;
}


int
ngx_http_im_msg_json_is_note(const unsigned char *text, size_t len)
{
    long long  type;

    type = ngx_http_im_msg_json_int(text, len, "\"contentType\":");

    return type >= 1000 && type < 5000
           && ngx_http_im_msg_json_int(text, len, "\"seq\":") == 0;
}


void
ngx_http_im_msg_to_json(const ngx_http_im_msg_t *m, ngx_http_im_buf_t *b,
    size_t *seq_at)
{
    size_t                          i;
    const char                     *f;
    const ngx_http_im_field_t      *fd;
    const ngx_http_im_push_info_t  *pi;

    ngx_http_im_buf_add(b, "{", 1);

    for (fd = ngx_http_im_msg_fields; fd->name; fd++) {
        f = (const char *) m + fd->offset;

        if (fd != ngx_http_im_msg_fields) {
            ngx_http_im_buf_add(b, ",", 1);
        }

        ngx_http_im_buf_add(b, "\"", 1);
        ngx_http_im_buf_str(b, fd->name);
        ngx_http_im_buf_add(b, "\":", 2);

        switch (fd->type) {

        case NGX_HTTP_IM_FIELD_STR:
            ngx_http_im_buf_json_str(b, ((const ngx_http_im_str_t *) f)->data,
                                     ((const ngx_http_im_str_t *) f)->len);
            break;

        case NGX_HTTP_IM_FIELD_INT:
        case NGX_HTTP_IM_FIELD_INT32:
            if (fd->offset == offsetof(ngx_http_im_msg_t, seq) && seq_at) {
                *seq_at = b->len;
            }

            ngx_http_im_buf_int(b, *(const long long *) f);
            break;

        case NGX_HTTP_IM_FIELD_OPT:
            ngx_http_im_buf_add(b, "{", 1);

            for (i = 0; i < m->noptions && i < NGX_HTTP_IM_MAX_OPTIONS; i++) {
                if (i) {
                    ngx_http_im_buf_add(b, ",", 1);
                }

                ngx_http_im_buf_json_str(b, m->options[i].key.data,
                                         m->options[i].key.len);
                ngx_http_im_buf_str(b, m->options[i].value ? ":true"
                                                           : ":false");
            }

            ngx_http_im_buf_add(b, "}", 1);
            break;

        case NGX_HTTP_IM_FIELD_PUSH:
            pi = &m->offline_push_info;

            ngx_http_im_buf_str_field(b, "{\"title\":", &pi->title);
            ngx_http_im_buf_str_field(b, ",\"desc\":", &pi->desc);
            ngx_http_im_buf_str_field(b, ",\"ex\":", &pi->ex);
            ngx_http_im_buf_str_field(b, ",\"iOSPushSound\":",
                                      &pi->ios_push_sound);
            ngx_http_im_buf_str(b, pi->ios_badge_count
                                   ? ",\"iOSBadgeCount\":true}"
                                   : ",\"iOSBadgeCount\":false}");
            break;

        default: /* NGX_HTTP_IM_FIELD_AT */
            ngx_http_im_buf_add(b, "[", 1);

            for (i = 0; i < m->nat; i++) {
                if (i) {
                    ngx_http_im_buf_add(b, ",", 1);
                }

                ngx_http_im_buf_json_str(b, m->at_user_ids[i].data,
                                         m->at_user_ids[i].len);
            }

            ngx_http_im_buf_add(b, "]", 1);
        }
    }

    ngx_http_im_buf_add(b, "}", 1);
}


static void
ngx_http_im_buf_str_field(ngx_http_im_buf_t *b, const char *name,
    const ngx_http_im_str_t *s)
{
    ngx_http_im_buf_str(b, name);
    ngx_http_im_buf_json_str(b, s->data, s->len);
}


yajl_val
ngx_http_im_json_get(yajl_val obj, const char *key)
{
    size_t  i;

    if (obj == NULL || !YAJL_IS_OBJECT(obj)) {
        return NULL;
    }

    for (i = 0; i < obj->u.object.len; i++) {
        if (strcmp(obj->u.object.keys[i], key) == 0) {
            return obj->u.object.values[i];
        }
    }

    return NULL;
}


int
ngx_http_im_json_get_str(yajl_val obj, const char *key, int required,
    ngx_http_im_str_t *out, char *err, size_t errlen)
{
    return ngx_http_im_json_str(obj, NULL, key, required, out, err, errlen);
}


int
ngx_http_im_json_get_int(yajl_val obj, const char *key, int required,
    long long *out, char *err, size_t errlen)
{
    return ngx_http_im_json_int(obj, NULL, key, required, out, err, errlen);
}


int
ngx_http_im_json_get_bool(yajl_val obj, const char *key, int required,
    int *out, char *err, size_t errlen)
{
    yajl_val  v;

    *out = 0;

    if (ngx_http_im_json_member(obj, NULL, key, required, yajl_t_true, &v,
                                err, errlen)
        != 0)
    {
        return -1;
    }

    if (v) {
        *out = YAJL_IS_TRUE(v);
    }

    return 0;
}


int
ngx_http_im_json_get_array(yajl_val obj, const char *key, int required,
    yajl_val *out, char *err, size_t errlen)
{
    return ngx_http_im_json_member(obj, NULL, key, required, yajl_t_array,
                                   out, err, errlen);
}


int
ngx_http_im_json_get_object(yajl_val obj, const char *key, int required,
    yajl_val *out, char *err, size_t errlen)
{
    return ngx_http_im_json_member(obj, NULL, key, required, yajl_t_object,
                                   out, err, errlen);
}


/*
 * Finds member "key" of the wanted type: yajl_t_number means an integer,
 * yajl_t_true a boolean.  An absent or null member gives *out = NULL and
 * is an error only when "required" is set.
 */

static int
ngx_http_im_json_member(yajl_val obj, const char *prefix, const char *key,
    int required, yajl_type type, yajl_val *out, char *err, size_t errlen)
{
    int          ok;
    yajl_val     v;
    const char  *what;

    *out = NULL;

    v = ngx_http_im_json_get(obj, key);

    if (v == NULL || YAJL_IS_NULL(v)) {
        if (required) {
            ngx_http_im_json_error(err, errlen, prefix, key, "is required");
            return -1;
        }

        return 0;
    }

    switch (type) {

    case yajl_t_string:
        ok = YAJL_IS_STRING(v);
        what = "must be a string";
        break;

    case yajl_t_number:
        ok = YAJL_IS_INTEGER(v);
        what = "must be an integer";
        break;

    case yajl_t_object:
        ok = YAJL_IS_OBJECT(v);
        what = "must be an object";
        break;

    case yajl_t_array:
        ok = YAJL_IS_ARRAY(v);
        what = "must be an array";
        break;

    default: /* yajl_t_true */
        ok = YAJL_IS_TRUE(v) || YAJL_IS_FALSE(v);
        what = "must be a boolean";
    }

    if (!ok) {
        ngx_http_im_json_error(err, errlen, prefix, key, what);
        return -1;
    }

    *out = v;

    return 0;
}


static int
ngx_http_im_json_str(yajl_val obj, const char *prefix, const char *key,
    int required, ngx_http_im_str_t *out, char *err, size_t errlen)
{
    yajl_val  v;

    out->data = "";
    out->len = 0;

    if (ngx_http_im_json_member(obj, prefix, key, required, yajl_t_string,
                                &v,
                                err, errlen)
        != 0)
    {
        return -1;
    }

    if (v == NULL) {
        return 0;
    }

    if (ngx_http_im_json_text(v->u.string, prefix, key, err, errlen) != 0) {
        return -1;
    }

    out->data = v->u.string;
    out->len = strlen(v->u.string);

    return 0;
}


/*
 * A string of the tree as C code uses it.  A NUL (NGX_HTTP_IM_NUL) would
 * cut it short.  And though the text was valid UTF-8, yajl decodes a lone
 * low surrogate escape ("\udc00") into invalid UTF-8, which would reach
 * Redis and the im:push stream as it is.
 */

static int
ngx_http_im_json_text(const char *s, const char *prefix, const char *key,
    char *err, size_t errlen)
{
    if (strstr(s, NGX_HTTP_IM_NUL) != NULL) {
        ngx_http_im_json_error(err, errlen, prefix, key,
                               "must not contain NUL bytes");
        return -1;
    }

    if (ngx_http_im_utf8_step(NGX_HTTP_IM_UTF8_ACCEPT,
                              (const unsigned char *) s, strlen(s))
        != NGX_HTTP_IM_UTF8_ACCEPT)
    {
        ngx_http_im_json_error(err, errlen, prefix, key,
                               "is not valid UTF-8");
        return -1;
    }

    return 0;
}


static int
ngx_http_im_json_int(yajl_val obj, const char *prefix, const char *key,
    int required, long long *out, char *err, size_t errlen)
{
    yajl_val  v;

    *out = 0;

    if (ngx_http_im_json_member(obj, prefix, key, required, yajl_t_number,
                                &v,
                                err, errlen)
        != 0)
    {
        return -1;
    }

    if (v) {
        *out = v->u.number.i;
    }

    return 0;
}


/* an int32 field of MsgData (im.proto): absent or null reads as 0 */

static int
ngx_http_im_json_int32(yajl_val obj, const char *key, long long *out,
    char *err, size_t errlen)
{
    if (ngx_http_im_json_int(obj, NULL, key, 0, out, err, errlen) != 0) {
        return -1;
    }

    if (*out < INT32_MIN || *out > INT32_MAX) {
        ngx_http_im_json_error(err, errlen, NULL, key,
                               "must be a 32-bit integer");
        return -1;
    }

    return 0;
}


static void
ngx_http_im_json_error(char *err, size_t errlen, const char *prefix,
    const char *key, const char *what)
{
    if (err == NULL || errlen == 0) {
        return;
    }

    snprintf(err, errlen, "field \"%s%s\" %s", prefix ? prefix : "", key,
             what);
}


int
ngx_http_im_json_members_unique(yajl_val obj, size_t max, char *err,
    size_t errlen)
{
    size_t  i, j, n;

    n = obj->u.object.len;

    if (n > max) {
        snprintf(err, errlen, "the body has more than %zu fields", max);
        return -1;
    }

    for (i = 1; i < n; i++) {
        for (j = 0; j < i; j++) {
            if (strcmp(obj->u.object.keys[i], obj->u.object.keys[j]) == 0) {
                snprintf(err, errlen, "field \"%.64s\" appears twice",
                         obj->u.object.keys[i]);
                return -1;
            }
        }
    }

    return 0;
}

