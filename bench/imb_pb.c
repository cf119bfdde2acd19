
/*
 * The protobuf codec of imb (imbench --codec pb): requests as binary
 * frames of `Req` (ngx_im_module/im.proto), server frames read as `Resp`.
 *
 * The wire format is written and walked by hand, an independent
 * implementation of what the module does with protobuf-c: a wrong field
 * number or wire type on either side shows up as an unexpected frame.
 * A session gets its pushes as protobuf once it has sent a binary
 * request, so the codec's hello is a GetNewestSeq (1001).
 */


#include <string.h>

#include "imb.h"
#include "ngx_http_im_ws_frame.h"


#define IMB_PB_VARINT   0
#define IMB_PB_I64      1
#define IMB_PB_LEN      2
#define IMB_PB_I32      5

/* a 64-bit varint takes at most 10 bytes */
#define IMB_PB_VARINT_MAX  10


typedef struct {
    uint32_t               field;
    int                    type;
    uint64_t               num;        /* IMB_PB_VARINT */
    imb_js_t               span;       /* IMB_PB_LEN */
} imb_pb_field_t;

/* a field of a message being walked (imb_pb_each()): IMB_OK, or
 * IMB_ERROR to stop the walk */
typedef int (*imb_pb_visit_pt)(imb_pb_field_t *fd, void *ctx);

/* a Resp being read: its frame, and the span of its data */
typedef struct {
    imb_frame_t           *f;
    imb_js_t               data;
} imb_pb_resp_t;


static int imb_pb_key(imb_buf_t *b, uint32_t field, int type);
static int imb_pb_varint(imb_buf_t *b, uint64_t v);
static int imb_pb_uint(imb_buf_t *b, uint32_t field, uint64_t v);
static int imb_pb_bytes(imb_buf_t *b, uint32_t field, const char *p,
    size_t n);
static int imb_pb_str(imb_buf_t *b, uint32_t field, const char *s);
static int imb_pb_req(imb_buf_t *b, int req_identifier, const char *incr,
    imb_buf_t *data);
static int imb_pb_read_varint(const char **pp, const char *e, uint64_t *v);
static int imb_pb_next(const char **pp, const char *e, imb_pb_field_t *f);
static int imb_pb_each(const imb_js_t *span, imb_pb_visit_pt visit,
    void *ctx);
static int imb_pb_resp_field(imb_pb_field_t *fd, void *ctx);
static int imb_pb_push_field(imb_pb_field_t *fd, void *ctx);
static int imb_pb_entry_field(imb_pb_field_t *fd, void *ctx);
static int imb_pb_pull_field(imb_pb_field_t *fd, void *ctx);
static int imb_pb_msg_field(imb_pb_field_t *fd, void *ctx);


/* writing */


static int
imb_pb_varint(imb_buf_t *b, uint64_t v)
{
    char    out[IMB_PB_VARINT_MAX];
    size_t  n;

    n = 0;

    while (v >= 0x80) {
        out[n++] = (char) ((v & 0x7f) | 0x80);
        v >>= 7;
    }

    out[n++] = (char) v;

    return imb_buf_add(b, out, n);
}


static int
imb_pb_key(imb_buf_t *b, uint32_t field, int type)
{
    return imb_pb_varint(b, ((uint64_t) field << 3) | (uint64_t) type);
}


/* proto3: a field of its default value is not written */
static int
imb_pb_uint(imb_buf_t *b, uint32_t field, uint64_t v)
{
    if (v == 0) {
        return IMB_OK;
    }

    if (imb_pb_key(b, field, IMB_PB_VARINT) != IMB_OK) {
        return IMB_ERROR;
    }

    return imb_pb_varint(b, v);
}


static int
imb_pb_bytes(imb_buf_t *b, uint32_t field, const char *p, size_t n)
{
    if (n == 0) {
        return IMB_OK;
    }

    if (imb_pb_key(b, field, IMB_PB_LEN) != IMB_OK
        || imb_pb_varint(b, n) != IMB_OK)
    {
        return IMB_ERROR;
    }

    return imb_buf_add(b, p, n);
}


static int
imb_pb_str(imb_buf_t *b, uint32_t field, const char *s)
{
    return imb_pb_bytes(b, field, s, strlen(s));
}


static int
imb_pb_req(imb_buf_t *b, int req_identifier, const char *incr,
    imb_buf_t *data)
{
    if (imb_pb_uint(b, 1, (uint64_t) req_identifier) != IMB_OK
        || imb_pb_str(b, 4, incr) != IMB_OK
        || imb_pb_str(b, 5, incr) != IMB_OK)
    {
        return IMB_ERROR;
    }

    return data ? imb_pb_bytes(b, 6, data->data, data->len) : IMB_OK;
}


static int
imb_pb_send_msg(imb_buf_t *b, const char *incr, const char *send_id,
    const char *recv_id, const char *group_id, const char *client_msg_id,
    int content_type, const char *text)
{
    static imb_buf_t  msg, content;

    msg.len = 0;
    content.len = 0;

    if (imb_buf_printf(&content, "{\"content\":\"%s\"}", text) != IMB_OK
        || imb_pb_str(&msg, 1, send_id) != IMB_OK
        || imb_pb_str(&msg, group_id ? 3 : 2, group_id ? group_id : recv_id)
           != IMB_OK
        || imb_pb_str(&msg, 4, client_msg_id) != IMB_OK
        || imb_pb_uint(&msg, 9, group_id ? 3 : 1) != IMB_OK
        || imb_pb_uint(&msg, 10, 100) != IMB_OK
        || imb_pb_uint(&msg, 11, (uint64_t) content_type) != IMB_OK
        || imb_pb_bytes(&msg, 12, content.data, content.len) != IMB_OK)
    {
        return IMB_ERROR;
    }

    return imb_pb_req(b, 1003, incr, &msg);
}


static int
imb_pb_hello(imb_buf_t *b, const char *incr)
{
    return imb_pb_req(b, 1001, incr, NULL);
}


/* reading */


static int
imb_pb_read_varint(const char **pp, const char *e, uint64_t *v)
{
    int          shift;
    const char  *p;

    p = *pp;
    *v = 0;

    for (shift = 0; shift < 7 * IMB_PB_VARINT_MAX; shift += 7) {
        if (p >= e) {
            return IMB_ERROR;
        }

        *v |= (uint64_t) (*p & 0x7f) << shift;

        if ((*p++ & 0x80) == 0) {
            *pp = p;
            return IMB_OK;
        }
    }

    return IMB_ERROR;
}


/* the next field at *pp: 1 with f set, 0 at the end, IMB_ERROR */
static int
imb_pb_next(const char **pp, const char *e, imb_pb_field_t *f)
{
    uint64_t  key, n;

    if (*pp >= e) {
        return 0;
    }

    if (imb_pb_read_varint(pp, e, &key) != IMB_OK) {
        return IMB_ERROR;
    }

    f->field = (uint32_t) (key >> 3);
    f->type = (int) (key & 7);

    switch (f->type) {

    case IMB_PB_VARINT:
        return imb_pb_read_varint(pp, e, &f->num) == IMB_OK ? 1 : IMB_ERROR;

    case IMB_PB_LEN:
        if (imb_pb_read_varint(pp, e, &n) != IMB_OK
            || n > (uint64_t) (e - *pp))
        {
            return IMB_ERROR;
        }

        f->span.p = *pp;
        f->span.e = *pp + n;
        *pp += n;
        return 1;

    case IMB_PB_I64:
    case IMB_PB_I32:
        n = f->type == IMB_PB_I64 ? 8 : 4;
        if (n > (uint64_t) (e - *pp)) {
            return IMB_ERROR;
        }

        *pp += n;
        return 1;
    }

    return IMB_ERROR;
}


/* calls visit for each field of the message in span; IMB_ERROR when
 * the message is malformed or visit fails */
static int
imb_pb_each(const imb_js_t *span, imb_pb_visit_pt visit, void *ctx)
{
    int             rc;
    const char     *p;
    imb_pb_field_t  fd;

    p = span->p;

    while ((rc = imb_pb_next(&p, span->e, &fd)) == 1) {
        if (visit(&fd, ctx) != IMB_OK) {
            return IMB_ERROR;
        }
    }

    return rc == 0 ? IMB_OK : IMB_ERROR;
}


static int
imb_pb_parse(const char *p, size_t len, int seq, imb_frame_t *f)
{
    imb_js_t        frame;
    imb_pb_resp_t   resp;

    /* a single pass reads the seqs anyway */
    (void) seq;

    memset(f, 0, sizeof(*f) - sizeof(f->msgs));
    resp.f = f;
    resp.data.p = resp.data.e = NULL;
    frame.p = p;
    frame.e = p + len;

    if (imb_pb_each(&frame, imb_pb_resp_field, &resp) != IMB_OK
        || f->req_identifier == 0)
    {
        return IMB_ERROR;
    }

    /* an errCode of 0 is absent from a Resp, as every default */
    f->has_err_code = 1;

    if (f->req_identifier != 2001) {
        return IMB_OK;
    }

    return imb_pb_each(&resp.data, imb_pb_push_field, f);
}


/* Resp: reqIdentifier = 1, msgIncr = 2, errCode = 4, data = 6 */
static int
imb_pb_resp_field(imb_pb_field_t *fd, void *ctx)
{
    imb_pb_resp_t  *resp = ctx;

    if (fd->type == IMB_PB_VARINT && fd->field == 1) {
        resp->f->req_identifier = (int32_t) fd->num;

    } else if (fd->type == IMB_PB_VARINT && fd->field == 4) {
        resp->f->err_code = (int32_t) fd->num;

    } else if (fd->type == IMB_PB_LEN && fd->field == 2) {
        resp->f->msg_incr = fd->span;

    } else if (fd->type == IMB_PB_LEN && fd->field == 6) {
        resp->data = fd->span;
    }

    return IMB_OK;
}


/* PushMessages {map<string, PullMsgs> msgs = 1}: entries {key = 1,
 * value = 2} */
static int
imb_pb_push_field(imb_pb_field_t *fd, void *ctx)
{
    if (fd->field != 1 || fd->type != IMB_PB_LEN) {
        return IMB_OK;
    }

    return imb_pb_each(&fd->span, imb_pb_entry_field, ctx);
}


static int
imb_pb_entry_field(imb_pb_field_t *fd, void *ctx)
{
    if (fd->field != 2 || fd->type != IMB_PB_LEN) {
        return IMB_OK;
    }

    return imb_pb_each(&fd->span, imb_pb_pull_field, ctx);
}


/* PullMsgs {repeated MsgData Msgs = 1} */
static int
imb_pb_pull_field(imb_pb_field_t *fd, void *ctx)
{
    imb_frame_msg_t  *m;

    if (fd->field != 1 || fd->type != IMB_PB_LEN) {
        return IMB_OK;
    }

    m = imb_frame_msg(ctx);

    /* proto3: an absent seq is 0 (imb_frame_msg() zeroes m) */
    return m ? imb_pb_each(&fd->span, imb_pb_msg_field, m) : IMB_OK;
}


/* MsgData: clientMsgID = 4, seq = 14 */
static int
imb_pb_msg_field(imb_pb_field_t *fd, void *ctx)
{
    imb_frame_msg_t  *m = ctx;

    if (fd->field == 4 && fd->type == IMB_PB_LEN) {
        m->client_msg_id = fd->span;

    } else if (fd->field == 14 && fd->type == IMB_PB_VARINT) {
        m->seq = (long long) fd->num;
    }

    return IMB_OK;
}


const imb_codec_t  imb_codec_pb = {
    "pb",
    NGX_HTTP_IM_WS_OP_BINARY,
    imb_pb_send_msg,
    NULL,
    imb_pb_hello,
    imb_pb_parse
};
