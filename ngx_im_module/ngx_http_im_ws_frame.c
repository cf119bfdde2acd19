
/*
 * ngx_im: RFC 6455 frame codec, server side.  See ngx_http_im_ws_frame.h.
 *
 * The parser collects a frame header (2..14 bytes) into the parser, then
 * unmasks the payload straight into its destination: the inline control
 * buffer, or the message buffer, where fragments are reassembled.  Every
 * limit is checked on the header, before any byte is stored, and the
 * message buffer grows only with bytes that actually arrived, so a
 * claimed length never makes us allocate.
 */


#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "ngx_http_im_ws_frame.h"


#define NGX_HTTP_IM_WS_ST_HEADER      0
#define NGX_HTTP_IM_WS_ST_PAYLOAD     1
#define NGX_HTTP_IM_WS_ST_ERROR       2

#define NGX_HTTP_IM_WS_MSG_MIN        256

#define NGX_HTTP_IM_WS_GUID           "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


static int ngx_http_im_ws_header(ngx_http_im_ws_parser_t *p,
    const unsigned char **pos, const unsigned char *end,
    ngx_http_im_ws_event_t *ev);
static int ngx_http_im_ws_check_start(ngx_http_im_ws_parser_t *p,
    ngx_http_im_ws_event_t *ev);
static int ngx_http_im_ws_start_frame(ngx_http_im_ws_parser_t *p,
    ngx_http_im_ws_event_t *ev);
static int ngx_http_im_ws_payload(ngx_http_im_ws_parser_t *p,
    const unsigned char **pos, const unsigned char *end,
    ngx_http_im_ws_event_t *ev);
static int ngx_http_im_ws_frame_end(ngx_http_im_ws_parser_t *p,
    ngx_http_im_ws_event_t *ev);
static int ngx_http_im_ws_control_end(ngx_http_im_ws_parser_t *p,
    ngx_http_im_ws_event_t *ev);
static int ngx_http_im_ws_reserve(ngx_http_im_ws_parser_t *p, size_t need);
static void ngx_http_im_ws_unmask(unsigned char *dst,
    const unsigned char *src, size_t n, const unsigned char *mask,
    size_t off);
static int ngx_http_im_ws_fail(ngx_http_im_ws_parser_t *p,
    ngx_http_im_ws_event_t *ev, int code, const char *reason);
static size_t ngx_http_im_ws_write_header(unsigned char *out, int b0,
    int b1, uint64_t len);


/*
 * UTF-8 byte classes:
 *  0: 00-7f     1: 80-8f     2: 90-9f     3: a0-bf
 *  4: never valid (c0, c1, f5-ff)        5: c2-df
 *  6: e0        7: e1-ec, ee-ef          8: ed
 *  9: f0       10: f1-f3    11: f4
 */
static const unsigned char  ngx_http_im_utf8_class[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 7,
    9, 10, 10, 10, 11, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4
};


/*
 * Validator states: 0 accept, 1 reject, 2..4 expect 1..3 more
 * continuation bytes, 5..8 expect a restricted second byte that rules
 * out overlong forms (after e0, f0), surrogates (after ed) and code
 * points above U+10FFFF (after f4).
 */
#define NGX_HTTP_IM_UTF8_STATES       9

static const unsigned char
    ngx_http_im_utf8_next[NGX_HTTP_IM_UTF8_STATES][12] =
{
    /* class:  0  1  2  3  4  5  6  7  8  9 10 11 */
    /* 0 */  { 0, 1, 1, 1, 1, 2, 5, 3, 6, 7, 4, 8 },
    /* 1 */  { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 },
    /* 2 */  { 1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1 },
    /* 3 */  { 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1 },
    /* 4 */  { 1, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },
    /* 5 */  { 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1 },
    /* 6 */  { 1, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1 },
    /* 7 */  { 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1 },
    /* 8 */  { 1, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 }
};


static const unsigned char  ngx_http_im_ws_empty[1];


void
ngx_http_im_ws_parser_init(ngx_http_im_ws_parser_t *p, size_t max_frame,
    size_t max_message)
{
    memset(p, 0, offsetof(ngx_http_im_ws_parser_t, ctl));

    p->max_frame = max_frame;
    p->max_message = max_message;
    p->state = NGX_HTTP_IM_WS_ST_HEADER;
    p->hdr_need = 2;
}


int
ngx_http_im_ws_parse(ngx_http_im_ws_parser_t *p, const unsigned char *buf,
    size_t len, size_t *consumed, ngx_http_im_ws_event_t *ev)
{
    int                   rc;
    const unsigned char  *pos, *end;

    if (p->state == NGX_HTTP_IM_WS_ST_ERROR) {
        *consumed = 0;
        return ngx_http_im_ws_fail(p, ev, p->err_code, p->err_reason);
    }

    if (len == 0) {
        /* buf may be NULL */
        *consumed = 0;
        return NGX_HTTP_IM_WS_AGAIN;
    }

    pos = buf;
    end = buf + len;
    rc = NGX_HTTP_IM_WS_AGAIN;

    while (rc == NGX_HTTP_IM_WS_AGAIN && pos < end) {

        if (p->state == NGX_HTTP_IM_WS_ST_HEADER) {
            rc = ngx_http_im_ws_header(p, &pos, end, ev);

        } else {
            rc = ngx_http_im_ws_payload(p, &pos, end, ev);
        }
    }

    *consumed = pos - buf;

    return rc;
}


static int
ngx_http_im_ws_header(ngx_http_im_ws_parser_t *p, const unsigned char **pos,
    const unsigned char *end, ngx_http_im_ws_event_t *ev)
{
    size_t  n;

    n = p->hdr_need - p->hdr_len;

    if (n > (size_t) (end - *pos)) {
        n = end - *pos;
    }

    memcpy(p->hdr + p->hdr_len, *pos, n);
    p->hdr_len += n;
    *pos += n;

    if (p->hdr_len < p->hdr_need) {
        return NGX_HTTP_IM_WS_AGAIN;
    }

    /* a mask is mandatory, so a complete header is never 2 bytes long */

    if (p->hdr_need == 2) {
        return ngx_http_im_ws_check_start(p, ev);
    }

    return ngx_http_im_ws_start_frame(p, ev);
}


/* fails fast on the first two bytes, before the rest of the header */

static int
ngx_http_im_ws_check_start(ngx_http_im_ws_parser_t *p,
    ngx_http_im_ws_event_t *ev)
{
    int  len;

    p->fin = p->hdr[0] >> 7;
    p->opcode = p->hdr[0] & 0x0f;
    len = p->hdr[1] & 0x7f;

    if (p->hdr[0] & 0x70) {
        return ngx_http_im_ws_fail(p, ev, 1002, "reserved bits set");
    }

    if (!(p->hdr[1] & 0x80)) {
        return ngx_http_im_ws_fail(p, ev, 1002, "unmasked client frame");
    }

    if (p->opcode & 0x08) {

        if (p->opcode > NGX_HTTP_IM_WS_OP_PONG) {
            return ngx_http_im_ws_fail(p, ev, 1002, "unknown opcode");
        }

        if (!p->fin) {
            return ngx_http_im_ws_fail(p, ev, 1002,
                                       "fragmented control frame");
        }

        if (len > NGX_HTTP_IM_WS_CONTROL_MAX) {
            return ngx_http_im_ws_fail(p, ev, 1002,
                                       "control frame too long");
        }

    } else if (p->opcode > NGX_HTTP_IM_WS_OP_BINARY) {
        return ngx_http_im_ws_fail(p, ev, 1002, "unknown opcode");

    } else if (p->opcode == NGX_HTTP_IM_WS_OP_CONT) {

        if (p->msg_opcode == 0) {
            return ngx_http_im_ws_fail(p, ev, 1002,
                                       "continuation without message");
        }

    } else if (p->msg_opcode) {
        return ngx_http_im_ws_fail(p, ev, 1002,
                                   "new message inside fragmented one");
    }

    p->hdr_need = 2 + 4 + (len == 126 ? 2 : (len == 127 ? 8 : 0));

    return NGX_HTTP_IM_WS_AGAIN;
}


static int
ngx_http_im_ws_start_frame(ngx_http_im_ws_parser_t *p,
    ngx_http_im_ws_event_t *ev)
{
    int                   i;
    size_t                limit;
    uint64_t              len;
    const unsigned char  *h;

    h = p->hdr + 2;
    len = p->hdr[1] & 0x7f;

    if (len == 126) {
        len = (h[0] << 8) | h[1];
        h += 2;

    } else if (len == 127) {

        if (h[0] & 0x80) {
            return ngx_http_im_ws_fail(p, ev, 1002, "bad frame length");
        }

        len = 0;
        for (i = 0; i < 8; i++) {
            len = (len << 8) | h[i];
        }

        h += 8;
    }

    memcpy(p->mask, h, 4);

    if (p->max_frame && len > p->max_frame) {
        return ngx_http_im_ws_fail(p, ev, 1009, "frame too big");
    }

    if (p->opcode & 0x08) {
        p->ctl_len = 0;

    } else {
        if (p->opcode != NGX_HTTP_IM_WS_OP_CONT) {
            p->msg_opcode = p->opcode;
            p->msg_len = 0;
            p->utf8 = NGX_HTTP_IM_UTF8_ACCEPT;
        }

        limit = p->max_message ? p->max_message : (size_t) -1;

        if (len > limit - p->msg_len) {
            return ngx_http_im_ws_fail(p, ev, 1009, "message too big");
        }
    }

    p->remain = len;
    p->mask_pos = 0;
    p->state = NGX_HTTP_IM_WS_ST_PAYLOAD;

    if (len == 0) {
        return ngx_http_im_ws_frame_end(p, ev);
    }

    return NGX_HTTP_IM_WS_AGAIN;
}


static int
ngx_http_im_ws_payload(ngx_http_im_ws_parser_t *p, const unsigned char **pos,
    const unsigned char *end, ngx_http_im_ws_event_t *ev)
{
    size_t          n;
    unsigned char  *dst;

    n = end - *pos;

    if (n > p->remain) {
        n = (size_t) p->remain;
    }

    if (p->opcode & 0x08) {
        dst = p->ctl + p->ctl_len;
        p->ctl_len += n;

    } else {
        if (ngx_http_im_ws_reserve(p, p->msg_len + n) != 0) {
            return ngx_http_im_ws_fail(p, ev, 1009, "out of memory");
        }

        dst = p->msg + p->msg_len;
        p->msg_len += n;
    }

    ngx_http_im_ws_unmask(dst, *pos, n, p->mask, p->mask_pos);
    p->mask_pos = (p->mask_pos + n) & 3;
    p->remain -= n;
    *pos += n;

    if (p->msg_opcode == NGX_HTTP_IM_WS_OP_TEXT && !(p->opcode & 0x08)) {
        p->utf8 = ngx_http_im_utf8_step(p->utf8, dst, n);

        if (p->utf8 == NGX_HTTP_IM_UTF8_REJECT) {
            return ngx_http_im_ws_fail(p, ev, 1007, "invalid UTF-8 text");
        }
    }

    if (p->remain) {
        return NGX_HTTP_IM_WS_AGAIN;
    }

    return ngx_http_im_ws_frame_end(p, ev);
}


static int
ngx_http_im_ws_frame_end(ngx_http_im_ws_parser_t *p,
    ngx_http_im_ws_event_t *ev)
{
    p->state = NGX_HTTP_IM_WS_ST_HEADER;
    p->hdr_len = 0;
    p->hdr_need = 2;

    if (p->opcode & 0x08) {
        return ngx_http_im_ws_control_end(p, ev);
    }

    if (!p->fin) {
        return NGX_HTTP_IM_WS_AGAIN;
    }

    if (p->msg_opcode == NGX_HTTP_IM_WS_OP_TEXT
        && p->utf8 != NGX_HTTP_IM_UTF8_ACCEPT)
    {
        return ngx_http_im_ws_fail(p, ev, 1007, "truncated UTF-8 text");
    }

    ev->opcode = p->msg_opcode;
    ev->data = p->msg ? p->msg : ngx_http_im_ws_empty;
    ev->len = p->msg_len;
    ev->close_code = 0;
    ev->reason = NULL;

    /* the data stays until the next message starts */
    p->msg_opcode = 0;

    return NGX_HTTP_IM_WS_MESSAGE;
}


static int
ngx_http_im_ws_control_end(ngx_http_im_ws_parser_t *p,
    ngx_http_im_ws_event_t *ev)
{
    int  code;

    code = 0;

    if (p->opcode == NGX_HTTP_IM_WS_OP_CLOSE) {

        if (p->ctl_len == 0) {
            code = NGX_HTTP_IM_WS_CLOSE_NO_STATUS;

        } else if (p->ctl_len == 1) {
            return ngx_http_im_ws_fail(p, ev, 1002, "bad close payload");

        } else {
            code = (p->ctl[0] << 8) | p->ctl[1];

            if (!ngx_http_im_ws_close_code_valid(code)) {
                return ngx_http_im_ws_fail(p, ev, 1002, "bad close code");
            }

            if (ngx_http_im_utf8_step(NGX_HTTP_IM_UTF8_ACCEPT, p->ctl + 2,
                                      p->ctl_len - 2)
                != NGX_HTTP_IM_UTF8_ACCEPT)
            {
                return ngx_http_im_ws_fail(p, ev, 1007,
                                           "invalid UTF-8 close reason");
            }
        }
    }

    ev->opcode = p->opcode;
    ev->data = p->ctl;
    ev->len = p->ctl_len;
    ev->close_code = code;
    ev->reason = NULL;

    return NGX_HTTP_IM_WS_CONTROL;
}


/*
 * Grows the message buffer geometrically, capped at max_message; the
 * header checks guarantee need <= max_message.
 */

static int
ngx_http_im_ws_reserve(ngx_http_im_ws_parser_t *p, size_t need)
{
    size_t          cap, limit;
    unsigned char  *m;

    if (need <= p->msg_cap) {
        return 0;
    }

    limit = p->max_message ? p->max_message : (size_t) -1;
    cap = p->msg_cap ? p->msg_cap : NGX_HTTP_IM_WS_MSG_MIN;

    while (cap < need && cap <= limit / 2) {
        cap *= 2;
    }

    if (cap < need || cap > limit) {
        cap = (need > limit) ? need : limit;
    }

    m = realloc(p->msg, cap);
    if (m == NULL) {
        return -1;
    }

    p->msg = m;
    p->msg_cap = cap;

    return 0;
}


/*
 * XORs eight bytes at a time with the key rotated to the payload offset;
 * eight is a multiple of four, so the rotation holds for every word.
 * memcpy() keeps unaligned access portable and compiles to plain loads.
 */

static void
ngx_http_im_ws_unmask(unsigned char *dst, const unsigned char *src,
    size_t n, const unsigned char *mask, size_t off)
{
    size_t         i;
    uint64_t       w, m;
    unsigned char  key[8];

    for (i = 0; i < 8; i++) {
        key[i] = mask[(off + i) & 3];
    }

    memcpy(&m, key, 8);

    for (i = 0; i + 8 <= n; i += 8) {
        memcpy(&w, src + i, 8);
        w ^= m;
        memcpy(dst + i, &w, 8);
    }

    for ( /* void */ ; i < n; i++) {
        dst[i] = src[i] ^ key[i & 7];
    }
}


static int
ngx_http_im_ws_fail(ngx_http_im_ws_parser_t *p, ngx_http_im_ws_event_t *ev,
    int code, const char *reason)
{
    p->state = NGX_HTTP_IM_WS_ST_ERROR;
    p->err_code = code;
    p->err_reason = reason;

    ev->opcode = 0;
    ev->data = ngx_http_im_ws_empty;
    ev->len = 0;
    ev->close_code = code;
    ev->reason = reason;

    return NGX_HTTP_IM_WS_ERROR;
}


void
ngx_http_im_ws_parser_release(ngx_http_im_ws_parser_t *p)
{
    if (p->msg_opcode && p->msg_len && p->state != NGX_HTTP_IM_WS_ST_ERROR)
    {
        p->state = NGX_HTTP_IM_WS_ST_ERROR;
        p->err_code = NGX_HTTP_IM_WS_CLOSE_INTERNAL;
        p->err_reason = "message buffer released";
    }

    free(p->msg);

    p->msg = NULL;
    p->msg_len = 0;
    p->msg_cap = 0;
}


int
ngx_http_im_ws_parser_idle(ngx_http_im_ws_parser_t *p)
{
    if (p->state == NGX_HTTP_IM_WS_ST_ERROR) {
        return 1;
    }

    return p->state == NGX_HTTP_IM_WS_ST_HEADER
           && p->hdr_len == 0
           && p->msg_opcode == 0;
}


uint32_t
ngx_http_im_utf8_step(uint32_t state, const unsigned char *s, size_t n)
{
    uint64_t              w;
    const unsigned char  *end;

    if (state >= NGX_HTTP_IM_UTF8_STATES) {
        return NGX_HTTP_IM_UTF8_REJECT;
    }

    end = s + n;

    while (s < end) {

        if (state == NGX_HTTP_IM_UTF8_ACCEPT) {

            /* skip ASCII runs, most of JSON, a word at a time */

            while (end - s >= 8) {
                memcpy(&w, s, 8);

                if (w & 0x8080808080808080ULL) {
                    break;
                }

                s += 8;
            }

            if (s == end) {
                break;
            }
        }

        state = ngx_http_im_utf8_next[state][ngx_http_im_utf8_class[*s++]];

        if (state == NGX_HTTP_IM_UTF8_REJECT) {
            break;
        }
    }

    return state;
}


int
ngx_http_im_ws_close_code_valid(int code)
{
    if (code >= 3000 && code <= 4999) {
        return 1;
    }

    switch (code) {
    case 1000:
    case 1001:
    case 1002:
    case 1003:
    case 1007:
    case 1008:
    case 1009:
    case 1010:
    case 1011:
        return 1;
    default:
        return 0;
    }
}


static size_t
ngx_http_im_ws_write_header(unsigned char *out, int b0, int b1,
    uint64_t len)
{
    int  i;

    out[0] = (unsigned char) b0;

    if (len < 126) {
        out[1] = (unsigned char) (b1 | len);
        return 2;
    }

    if (len <= 0xffff) {
        out[1] = (unsigned char) (b1 | 126);
        out[2] = (unsigned char) (len >> 8);
        out[3] = (unsigned char) len;
        return 4;
    }

    out[1] = (unsigned char) (b1 | 127);

    for (i = 0; i < 8; i++) {
        out[2 + i] = (unsigned char) (len >> (56 - 8 * i));
    }

    return 10;
}


size_t
ngx_http_im_ws_frame_header(unsigned char *out, int opcode, uint64_t len)
{
    return ngx_http_im_ws_write_header(out, 0x80 | (opcode & 0x0f), 0, len);
}


size_t
ngx_http_im_ws_frame_client(unsigned char *out, int fin, int opcode,
    const unsigned char *mask4, const unsigned char *payload, size_t len)
{
    int     b0;
    size_t  n;

    b0 = (fin ? 0x80 : 0) | (opcode & 0x0f);

    if (mask4 == NULL) {
        n = ngx_http_im_ws_write_header(out, b0, 0, len);
        if (len) {
            memcpy(out + n, payload, len);
        }

        return n + len;
    }

    n = ngx_http_im_ws_write_header(out, b0, 0x80, len);
    memcpy(out + n, mask4, 4);
    n += 4;

    if (len) {
        ngx_http_im_ws_unmask(out + n, payload, len, mask4, 0);
    }

    return n + len;
}


size_t
ngx_http_im_ws_close_payload(unsigned char *out, int code,
    const char *reason)
{
    size_t  n;

    out[0] = (unsigned char) (code >> 8);
    out[1] = (unsigned char) code;

    if (reason == NULL) {
        return 2;
    }

    n = strlen(reason);

    if (n > NGX_HTTP_IM_WS_CONTROL_MAX - 2) {
        n = NGX_HTTP_IM_WS_CONTROL_MAX - 2;

        /* a cut sequence would make the peer fail us with 1007 */
        while (n && ((unsigned char) reason[n] & 0xc0) == 0x80) {
            n--;
        }
    }

    memcpy(out + 2, reason, n);

    return 2 + n;
}


size_t
ngx_http_im_ws_accept_key(const unsigned char *key, size_t key_len,
    char *out)
{
    int            ok;
    unsigned int   n;
    EVP_MD_CTX    *md;
    unsigned char  digest[EVP_MAX_MD_SIZE];

    md = EVP_MD_CTX_new();
    if (md == NULL) {
        return 0;
    }

    ok = EVP_DigestInit_ex(md, EVP_sha1(), NULL)
         && EVP_DigestUpdate(md, key, key_len)
         && EVP_DigestUpdate(md, NGX_HTTP_IM_WS_GUID,
                             sizeof(NGX_HTTP_IM_WS_GUID) - 1)
         && EVP_DigestFinal_ex(md, digest, &n);

    EVP_MD_CTX_free(md);

    if (!ok || n != 20) {
        return 0;
    }

    EVP_EncodeBlock((unsigned char *) out, digest, 20);

    return NGX_HTTP_IM_WS_ACCEPT_LEN;
}


int
ngx_http_im_ws_key_valid(const unsigned char *key, size_t len)
{
    size_t         i;
    unsigned char  c;

    /* 16 bytes encode as 22 characters and "==" */

    if (len != 24 || key[22] != '=' || key[23] != '=') {
        return 0;
    }

    for (i = 0; i < 22; i++) {
        c = key[i];

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
              || (c >= '0' && c <= '9') || c == '+' || c == '/'))
        {
            return 0;
        }
    }

    return 1;
}
