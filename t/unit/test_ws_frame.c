
/*
 * ngx_im: unit tests of the RFC 6455 frame codec.
 *
 * Every stream is parsed several times: fed whole, one byte at a time,
 * and in random chunks.  Each chunk is copied into a heap block of its
 * exact size, so that AddressSanitizer catches any read past len.  All
 * feedings must produce the same events, and those must be the expected
 * ones.  Prints "N passed, N failed" and exits non-zero on failure.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_im_ws_frame.h"

#include "check.h"


#define TEST_MSG(op, s)                                                     \
    { NGX_HTTP_IM_WS_MESSAGE, op, 0, s, sizeof(s) - 1 }
#define TEST_TEXT(s)      TEST_MSG(NGX_HTTP_IM_WS_OP_TEXT, s)
#define TEST_BINARY(s)    TEST_MSG(NGX_HTTP_IM_WS_OP_BINARY, s)
#define TEST_CTL(op, s)                                                     \
    { NGX_HTTP_IM_WS_CONTROL, op, 0, s, sizeof(s) - 1 }
#define TEST_CLOSE(code, s)                                                 \
    { NGX_HTTP_IM_WS_CONTROL, NGX_HTTP_IM_WS_OP_CLOSE, code, s,            \
      sizeof(s) - 1 }
#define TEST_ERR(code)    { NGX_HTTP_IM_WS_ERROR, 0, code, NULL, 0 }

#define TEST_IDLE         1
#define TEST_BUSY         0

#define TEST_OP_TEXT      NGX_HTTP_IM_WS_OP_TEXT
#define TEST_OP_BINARY    NGX_HTTP_IM_WS_OP_BINARY
#define TEST_OP_CONT      NGX_HTTP_IM_WS_OP_CONT
#define TEST_OP_PING      NGX_HTTP_IM_WS_OP_PING
#define TEST_OP_PONG      NGX_HTTP_IM_WS_OP_PONG
#define TEST_OP_CLOSE     NGX_HTTP_IM_WS_OP_CLOSE


typedef struct {
    unsigned char   *data;
    size_t           len;
    size_t           cap;
} test_buf_t;


typedef struct {
    int              rc;
    int              opcode;
    int              code;
    const void      *data;
    size_t           len;
} test_event_t;


typedef struct {
    test_event_t    *ev;
    size_t           n;
    size_t           cap;
    size_t           err_at;     /* stream offset after the ERROR */
    int              idle;
    const char      *broken;     /* the parser broke its contract */
} test_run_t;


/* a masked client frame of a stream; "set" is 0 past the last one */
typedef struct {
    int              set;
    int              fin;
    int              opcode;
    const void      *data;
    size_t           len;
} test_part_t;

#define TEST_FRAME(fin, op, s)   { 1, fin, op, s, sizeof(s) - 1 }
#define TEST_NO_PAYLOAD(fin, op) { 1, fin, op, NULL, 0 }

#define TEST_PARTS_MAX    7


/* a stream of frames that parses into "exp" without limits */
typedef struct {
    const char          *name;
    const test_event_t  *exp;
    size_t               n;
    int                  idle;
    size_t               err_max;
    test_part_t          part[TEST_PARTS_MAX];
} test_stream_t;

#define TEST_EXPECT(events)  events, CHECK_N(events)


static uint32_t
test_rand(uint32_t *seed)
{
    /* xorshift32: deterministic across libcs */
    *seed ^= *seed << 13;
    *seed ^= *seed >> 17;
    *seed ^= *seed << 5;

    return *seed;
}


static void
test_put(test_buf_t *b, const void *data, size_t len)
{
    if (b->len + len > b->cap) {
        b->cap = (b->len + len) * 2;
        b->data = check_realloc(b->data, b->cap);
    }

    if (len) {
        memcpy(b->data + b->len, data, len);
    }

    b->len += len;
}


/* appends a masked client frame; the key varies with the offset */

static void
test_frame(test_buf_t *b, int fin, int opcode, const void *payload,
    size_t len)
{
    unsigned char   mask[4], *out;
    size_t          n;

    mask[0] = (unsigned char) (0x37 + b->len);
    mask[1] = 0xfa;
    mask[2] = (unsigned char) (0x21 ^ b->len);
    mask[3] = 0x3d;

    out = check_alloc(len + NGX_HTTP_IM_WS_HEADER_MAX);
    n = ngx_http_im_ws_frame_client(out, fin, opcode, mask, payload, len);
    test_put(b, out, n);
    free(out);
}


static void
test_frame_str(test_buf_t *b, int fin, int opcode, const char *s)
{
    test_frame(b, fin, opcode, s, strlen(s));
}


/* appends a masked frame with a forced length form: 0, 126 or 127 */

static void
test_frame_form(test_buf_t *b, int b0, int form, const void *payload,
    size_t len)
{
    int             i;
    size_t          n;
    unsigned char   hdr[14], mask[4] = { 1, 2, 3, 4 };
    unsigned char  *body;

    hdr[0] = (unsigned char) b0;
    n = 2;

    if (form == 0) {
        hdr[1] = (unsigned char) (0x80 | len);

    } else if (form == 126) {
        hdr[1] = 0x80 | 126;
        hdr[n++] = (unsigned char) (len >> 8);
        hdr[n++] = (unsigned char) len;

    } else {
        hdr[1] = 0x80 | 127;
        for (i = 0; i < 8; i++) {
            hdr[n++] = (unsigned char) ((uint64_t) len >> (56 - 8 * i));
        }
    }

    memcpy(hdr + n, mask, 4);
    test_put(b, hdr, n + 4);

    body = check_alloc(len);
    for (i = 0; (size_t) i < len; i++) {
        body[i] = ((const unsigned char *) payload)[i] ^ mask[i & 3];
    }

    test_put(b, body, len);
    free(body);
}


static void
test_event(test_event_t *e, int rc, int opcode, int code, const void *data,
    size_t len)
{
    e->rc = rc;
    e->opcode = opcode;
    e->code = code;
    e->data = data;
    e->len = len;
}


static void
test_record(test_run_t *r, int rc, ngx_http_im_ws_event_t *ev)
{
    test_event_t  *e;
    void          *copy;

    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 16;
        r->ev = check_realloc(r->ev, r->cap * sizeof(test_event_t));
    }

    if (ev->data == NULL) {
        r->broken = "ev->data is NULL";
    }

    copy = check_alloc(ev->len);
    if (ev->len) {
        memcpy(copy, ev->data, ev->len);
    }

    e = &r->ev[r->n++];
    test_event(e, rc, ev->opcode, ev->close_code, copy, ev->len);
}


static void
test_run_free(test_run_t *r)
{
    size_t  i;

    for (i = 0; i < r->n; i++) {
        free((void *) r->ev[i].data);
    }

    free(r->ev);
}


/* feeds one chunk; returns the last rc */

static int
test_chunk(test_run_t *r, ngx_http_im_ws_parser_t *p,
    const unsigned char *chunk, size_t n, size_t off)
{
    int                     rc;
    size_t                  done, used;
    ngx_http_im_ws_event_t  ev;

    rc = NGX_HTTP_IM_WS_AGAIN;

    for (done = 0; done < n; done += used) {
        used = (size_t) -1;
        rc = ngx_http_im_ws_parse(p, chunk + done, n - done, &used, &ev);

        if (used > n - done) {
            r->broken = "consumed more than given";
            return NGX_HTTP_IM_WS_ERROR;
        }

        if (rc == NGX_HTTP_IM_WS_AGAIN) {
            if (used != n - done) {
                r->broken = "AGAIN left input unconsumed";
                return NGX_HTTP_IM_WS_ERROR;
            }

            continue;
        }

        test_record(r, rc, &ev);

        if (rc == NGX_HTTP_IM_WS_ERROR) {
            r->err_at = off + done + used;
            return rc;
        }

        if (used == 0) {
            r->broken = "event without progress";
            return NGX_HTTP_IM_WS_ERROR;
        }
    }

    return rc;
}


/*
 * mode 0: whole stream; 1: one byte at a time; n > 1: random chunks of
 * 1..n bytes.
 */

static void
test_feed(test_run_t *r, const test_buf_t *b, size_t max_frame,
    size_t max_message, size_t mode, uint32_t seed)
{
    int                      rc, code;
    size_t                   off, n, used;
    unsigned char           *chunk;
    ngx_http_im_ws_event_t   ev;
    ngx_http_im_ws_parser_t  p;

    memset(r, 0, sizeof(test_run_t));
    ngx_http_im_ws_parser_init(&p, max_frame, max_message);

    rc = ngx_http_im_ws_parse(&p, (const unsigned char *) "", 0, &used, &ev);
    if (rc != NGX_HTTP_IM_WS_AGAIN || used != 0) {
        r->broken = "empty input";
    }

    rc = NGX_HTTP_IM_WS_AGAIN;

    for (off = 0; off < b->len && rc != NGX_HTTP_IM_WS_ERROR; off += n) {

        if (mode == 0) {
            n = b->len - off;

        } else if (mode == 1) {
            n = 1;

        } else {
            n = 1 + test_rand(&seed) % mode;
        }

        if (n > b->len - off) {
            n = b->len - off;
        }

        chunk = check_alloc(n);
        memcpy(chunk, b->data + off, n);
        rc = test_chunk(r, &p, chunk, n, off);
        free(chunk);
    }

    if (rc == NGX_HTTP_IM_WS_ERROR && r->n && r->broken == NULL) {
        code = r->ev[r->n - 1].code;
        rc = ngx_http_im_ws_parse(&p, b->data, b->len, &used, &ev);

        if (rc != NGX_HTTP_IM_WS_ERROR || used != 0
            || ev.close_code != code || ev.reason == NULL)
        {
            r->broken = "error state is not sticky";
        }
    }

    r->idle = ngx_http_im_ws_parser_idle(&p);
    ngx_http_im_ws_parser_release(&p);
}


static int
test_compare(const test_run_t *r, const test_event_t *exp, size_t n,
    char *why, size_t size)
{
    size_t               i;
    const test_event_t  *a, *e;

    if (r->broken) {
        snprintf(why, size, "%s", r->broken);
        return 0;
    }

    for (i = 0; i < n || i < r->n; i++) {

        if (i >= r->n || i >= n) {
            snprintf(why, size, "got %zu events, expected %zu", r->n, n);
            return 0;
        }

        a = &r->ev[i];
        e = &exp[i];

        if (a->rc != e->rc || a->opcode != e->opcode || a->code != e->code
            || a->len != e->len
            || (a->len && memcmp(a->data, e->data, a->len) != 0))
        {
            snprintf(why, size, "event %zu: got rc %d op %d code %d "
                     "len %zu, expected rc %d op %d code %d len %zu%s",
                     i, a->rc, a->opcode, a->code, a->len, e->rc,
                     e->opcode, e->code, e->len,
                     a->len == e->len ? " (data differs)" : "");
            return 0;
        }
    }

    return 1;
}


/*
 * Parses b in every feeding mode and checks the events, the idle state
 * at the end and, if err_max is not 0, that the error came no later
 * than err_max bytes into the stream.  Counts as one test case.  Returns
 * the error offset of the one-byte feeding.
 */

static size_t
test_case(const char *name, const test_buf_t *b, size_t max_frame,
    size_t max_message, const test_event_t *exp, size_t n, int idle,
    size_t err_max)
{
    int         ok;
    char        why[256], msg[320];
    size_t      i, mode, err_one;
    uint32_t    seed;
    test_run_t  r;

    static const size_t  modes[] = {
        0, 1, 2, 3, 4, 5, 7, 13, 16, 64, 100, 1000, 5000, 70000
    };

    ok = 1;
    err_one = 0;
    msg[0] = '\0';

    for (i = 0; ok && i < CHECK_N(modes) + 6; i++) {
        mode = i < CHECK_N(modes) ? modes[i] : 2 + i * 11;
        seed = 2463534242u + (uint32_t) i * 7919;

        test_feed(&r, b, max_frame, max_message, mode, seed);

        if (!test_compare(&r, exp, n, why, sizeof(why))) {
            ok = 0;

        } else if (r.idle != idle) {
            snprintf(why, sizeof(why), "idle is %d", r.idle);
            ok = 0;

        } else if (err_max && r.err_at > err_max) {
            snprintf(why, sizeof(why), "error at %zu, after %zu",
                     r.err_at, err_max);
            ok = 0;
        }

        if (mode == 1) {
            err_one = r.err_at;
        }

        if (!ok) {
            snprintf(msg, sizeof(msg), "%s (chunks of %zu)", why, mode);
        }

        test_run_free(&r);
    }

    check_named(ok, name, msg);

    return err_one;
}


/* builds each stream of "s" and runs it as a test case */

static void
test_streams(const test_stream_t *s, size_t n)
{
    size_t              i, k;
    test_buf_t          b;
    const test_part_t  *f;

    memset(&b, 0, sizeof(test_buf_t));

    for (i = 0; i < n; i++) {
        b.len = 0;

        for (k = 0; k < TEST_PARTS_MAX && s[i].part[k].set; k++) {
            f = &s[i].part[k];
            test_frame(&b, f->fin, f->opcode, f->data, f->len);
        }

        test_case(s[i].name, &b, 0, 0, s[i].exp, s[i].n, s[i].idle,
                  s[i].err_max);
    }

    free(b.data);
}


static void
test_single(void)
{
    static const test_event_t  text[] = { TEST_TEXT("Hello") };
    static const test_event_t  bin[] = {
        TEST_BINARY("\x00\x01\xff\x80\x7f\xc0\xed\xa0\x80")
    };
    static const test_event_t  empty[] = {
        TEST_TEXT(""), TEST_BINARY(""), TEST_CTL(TEST_OP_PING, ""),
        TEST_CTL(TEST_OP_PONG, ""), TEST_TEXT("")
    };
    static const test_event_t  many[] = {
        TEST_TEXT("one"), TEST_CTL(TEST_OP_PING, "\xff\x00 binary ok"),
        TEST_BINARY("two"), TEST_CTL(TEST_OP_PONG, "pong"),
        TEST_TEXT("\xe4\xb8\xad\xe6\x96\x87"),
        TEST_CLOSE(1000, "\x03\xe8" "bye")
    };

    static const test_stream_t  streams[] = {
        { "single text", TEST_EXPECT(text), TEST_IDLE, 0,
          { TEST_FRAME(1, TEST_OP_TEXT, "Hello") } },

        { "single binary", TEST_EXPECT(bin), TEST_IDLE, 0,
          { TEST_FRAME(1, TEST_OP_BINARY,
                       "\x00\x01\xff\x80\x7f\xc0\xed\xa0\x80") } },

        { "empty frames", TEST_EXPECT(empty), TEST_IDLE, 0,
          { TEST_NO_PAYLOAD(1, TEST_OP_TEXT),
            TEST_NO_PAYLOAD(1, TEST_OP_BINARY),
            TEST_NO_PAYLOAD(1, TEST_OP_PING),
            TEST_NO_PAYLOAD(1, TEST_OP_PONG),
            TEST_NO_PAYLOAD(0, TEST_OP_TEXT),
            TEST_NO_PAYLOAD(0, TEST_OP_CONT),
            TEST_NO_PAYLOAD(1, TEST_OP_CONT) } },

        { "back to back", TEST_EXPECT(many), TEST_IDLE, 0,
          { TEST_FRAME(1, TEST_OP_TEXT, "one"),
            TEST_FRAME(1, TEST_OP_PING, "\xff\x00 binary ok"),
            TEST_FRAME(1, TEST_OP_BINARY, "two"),
            TEST_FRAME(1, TEST_OP_PONG, "pong"),
            TEST_FRAME(1, TEST_OP_TEXT, "\xe4\xb8\xad\xe6\x96\x87"),
            TEST_FRAME(1, TEST_OP_CLOSE, "\x03\xe8" "bye") } }
    };

    test_streams(streams, CHECK_N(streams));
}


static void
test_fragmented(void)
{
    static const test_event_t  text[] = { TEST_TEXT("Hello, world") };
    static const test_event_t  bin[] = { TEST_BINARY("\x00\x01\x02\x03\xff") };
    static const test_event_t  two[] = {
        TEST_TEXT("ab"), TEST_BINARY("cd")
    };

    static const test_stream_t  streams[] = {
        { "fragmented text", TEST_EXPECT(text), TEST_IDLE, 0,
          { TEST_FRAME(0, TEST_OP_TEXT, "Hel"),
            TEST_FRAME(0, TEST_OP_CONT, ""),
            TEST_FRAME(0, TEST_OP_CONT, "lo, "),
            TEST_FRAME(1, TEST_OP_CONT, "world") } },

        { "fragmented binary", TEST_EXPECT(bin), TEST_IDLE, 0,
          { TEST_FRAME(0, TEST_OP_BINARY, "\x00"),
            TEST_FRAME(0, TEST_OP_CONT, "\x01\x02"),
            TEST_FRAME(0, TEST_OP_CONT, "\x03"),
            TEST_FRAME(1, TEST_OP_CONT, "\xff") } },

        { "empty first fragment", TEST_EXPECT(text), TEST_IDLE, 0,
          { TEST_FRAME(0, TEST_OP_TEXT, ""),
            TEST_FRAME(1, TEST_OP_CONT, "Hello, world") } },

        { "two fragmented messages", TEST_EXPECT(two), TEST_IDLE, 0,
          { TEST_FRAME(0, TEST_OP_TEXT, "a"),
            TEST_FRAME(1, TEST_OP_CONT, "b"),
            TEST_FRAME(0, TEST_OP_BINARY, "c"),
            TEST_FRAME(1, TEST_OP_CONT, "d") } }
    };

    test_streams(streams, CHECK_N(streams));
}


static void
test_interleaved(void)
{
    static const test_event_t  ev[] = {
        TEST_CTL(TEST_OP_PING, "p1"), TEST_CTL(TEST_OP_PONG, ""),
        TEST_CTL(TEST_OP_PING, ""), TEST_TEXT("Hello world")
    };
    static const test_event_t  closed[] = {
        TEST_CLOSE(1001, "\x03\xe9")
    };

    static const test_stream_t  streams[] = {
        { "ping inside fragmented text", TEST_EXPECT(ev), TEST_IDLE, 0,
          { TEST_FRAME(0, TEST_OP_TEXT, "Hel"),
            TEST_FRAME(1, TEST_OP_PING, "p1"),
            TEST_FRAME(0, TEST_OP_CONT, "lo "),
            TEST_FRAME(1, TEST_OP_PONG, ""),
            TEST_FRAME(0, TEST_OP_CONT, ""),
            TEST_FRAME(1, TEST_OP_PING, ""),
            TEST_FRAME(1, TEST_OP_CONT, "world") } },

        { "close inside fragmented binary", TEST_EXPECT(closed), TEST_BUSY, 0,
          { TEST_FRAME(0, TEST_OP_BINARY, "abc"),
            TEST_FRAME(1, TEST_OP_CLOSE, "\x03\xe9") } }
    };

    test_streams(streams, CHECK_N(streams));
}


static void
test_length(const char *name, int opcode, size_t len, int form)
{
    size_t          i;
    test_buf_t      b;
    test_event_t    ev;
    unsigned char  *data;

    data = check_alloc(len);
    for (i = 0; i < len; i++) {
        data[i] = (unsigned char) (opcode == TEST_OP_TEXT
                                   ? 'a' + i % 26 : i * 7);
    }

    memset(&b, 0, sizeof(test_buf_t));

    if (form < 0) {
        test_frame(&b, 1, opcode, data, len);
        form = len < 126 ? 0 : (len < 65536 ? 126 : 127);
        CHECK_CASE((b.data[1] & 0x7f) == (form ? form : (int) len), name);

    } else {
        test_frame_form(&b, 0x80 | opcode, form, data, len);
    }

    test_event(&ev, NGX_HTTP_IM_WS_MESSAGE, opcode, 0, data, len);

    test_case(name, &b, len, len, &ev, 1, TEST_IDLE, 0);

    free(b.data);
    free(data);
}


static void
test_lengths(void)
{
    test_length("length 125", TEST_OP_BINARY, 125, -1);
    test_length("length 126 (16-bit)", TEST_OP_BINARY, 126, -1);
    test_length("length 1000 (16-bit)", TEST_OP_TEXT, 1000, -1);
    test_length("length 65535 (16-bit)", TEST_OP_BINARY, 65535, -1);
    test_length("length 65536 (64-bit)", TEST_OP_TEXT, 65536, -1);
    test_length("length 100000 (64-bit)", TEST_OP_BINARY, 100000, -1);
    test_length("non-minimal 16-bit", TEST_OP_TEXT, 5, 126);
    test_length("non-minimal 64-bit", TEST_OP_TEXT, 5, 127);
    test_length("non-minimal 64-bit 300", TEST_OP_BINARY, 300, 127);
    test_length("non-minimal empty", TEST_OP_BINARY, 0, 127);
}


static void
test_protocol_errors(void)
{
    int             op, bit;
    char            name[64];
    test_buf_t      b;
    unsigned char   data[126];

    static const test_event_t  e1002[] = { TEST_ERR(1002) };
    static const test_event_t  msg_e1002[] = {
        TEST_TEXT("ok"), TEST_ERR(1002)
    };
    static const test_event_t  ping_e1002[] = {
        TEST_CTL(TEST_OP_PING, ""), TEST_ERR(1002)
    };

    static const test_stream_t  streams[] = {
        { "fragmented ping", TEST_EXPECT(e1002), TEST_IDLE, 2,
          { TEST_FRAME(0, TEST_OP_PING, "x") } },

        { "fragmented close", TEST_EXPECT(e1002), TEST_IDLE, 2,
          { TEST_FRAME(0, TEST_OP_CLOSE, "\x03\xe8") } },

        { "continuation first", TEST_EXPECT(e1002), TEST_IDLE, 2,
          { TEST_FRAME(1, TEST_OP_CONT, "x") } },

        { "continuation after message", TEST_EXPECT(msg_e1002), TEST_IDLE, 0,
          { TEST_FRAME(1, TEST_OP_TEXT, "ok"),
            TEST_FRAME(0, TEST_OP_CONT, "x") } },

        { "text inside fragmented text", TEST_EXPECT(e1002), TEST_IDLE, 0,
          { TEST_FRAME(0, TEST_OP_TEXT, "a"),
            TEST_FRAME(1, TEST_OP_TEXT, "b") } },

        { "binary inside fragmented text", TEST_EXPECT(ping_e1002),
          TEST_IDLE, 0,
          { TEST_FRAME(0, TEST_OP_TEXT, "a"),
            TEST_FRAME(1, TEST_OP_PING, ""),
            TEST_FRAME(0, TEST_OP_BINARY, "b") } }
    };

    test_streams(streams, CHECK_N(streams));

    memset(&b, 0, sizeof(test_buf_t));

    b.len = ngx_http_im_ws_frame_client(data, 1, TEST_OP_TEXT, NULL,
                                        (const unsigned char *) "Hello", 5);
    CHECK_CASE(b.len == 7 && memcmp(data, "\x81\x05Hello", 7) == 0,
               "unmasked client frame");

    b.len = 0;
    test_put(&b, "\x81\x05Hello", 7);
    test_case("unmasked frame", &b, 0, 0, e1002, 1, TEST_IDLE, 2);

    b.len = 0;
    test_put(&b, "\x89\x00", 2);
    test_case("unmasked empty ping", &b, 0, 0, e1002, 1, TEST_IDLE, 2);

    for (bit = 0x40; bit >= 0x10; bit >>= 1) {
        b.len = 0;
        test_frame_str(&b, 1, TEST_OP_TEXT, "rsv");
        b.data[0] |= bit;
        snprintf(name, sizeof(name), "reserved bit 0x%02x", bit);
        test_case(name, &b, 0, 0, e1002, 1, TEST_IDLE, 2);
    }

    for (op = 3; op <= 0xf; op++) {
        if (op >= TEST_OP_CLOSE && op <= TEST_OP_PONG) {
            continue;
        }

        b.len = 0;
        test_frame_str(&b, 1, op, "x");
        snprintf(name, sizeof(name), "unknown opcode 0x%x", op);
        test_case(name, &b, 0, 0, e1002, 1, TEST_IDLE, 2);
    }

    b.len = 0;
    memset(data, 'p', sizeof(data));
    test_frame(&b, 1, TEST_OP_PING, data, 126);
    test_case("ping of 126 bytes", &b, 0, 0, e1002, 1, TEST_IDLE, 2);

    b.len = 0;
    test_frame_form(&b, 0x80 | TEST_OP_PONG, 126, "abc", 3);
    test_case("pong with 16-bit length", &b, 0, 0, e1002, 1, TEST_IDLE, 2);

    b.len = 0;
    test_put(&b, "\x82\xff\x80\x00\x00\x00\x00\x00\x00\x01" "abcd", 14);
    test_put(&b, "x", 1);
    test_case("64-bit length, top bit set", &b, 0, 0, e1002, 1,
              TEST_IDLE, 14);

    free(b.data);
}


static void
test_limits(void)
{
    size_t          err;
    test_buf_t      b;
    unsigned char   data[200];

    static const test_event_t  e1009[] = { TEST_ERR(1009) };
    static const test_event_t  none[1];

    test_event_t  ok[1] = {
        { NGX_HTTP_IM_WS_MESSAGE, TEST_OP_BINARY, 0, data, 100 }
    };

    memset(data, 'x', sizeof(data));
    memset(&b, 0, sizeof(test_buf_t));

    test_frame(&b, 1, TEST_OP_BINARY, data, 100);
    test_case("frame of max_frame", &b, 100, 1000, ok, 1, TEST_IDLE, 0);

    b.len = 0;
    test_frame(&b, 1, TEST_OP_BINARY, data, 101);
    test_case("frame over max_frame", &b, 100, 1000, e1009, 1, TEST_IDLE, 6);

    b.len = 0;
    test_frame(&b, 1, TEST_OP_PING, data, 101);
    test_case("ping over max_frame", &b, 100, 1000, e1009, 1, TEST_IDLE, 6);

    b.len = 0;
    test_frame(&b, 0, TEST_OP_BINARY, data, 60);
    test_frame(&b, 1, TEST_OP_CONT, data, 40);
    test_case("message of max_message", &b, 64, 100, ok, 1, TEST_IDLE, 0);

    b.len = 0;
    test_frame(&b, 0, TEST_OP_BINARY, data, 60);
    test_frame(&b, 1, TEST_OP_CONT, data, 41);
    test_case("message over max_message", &b, 64, 100, e1009, 1, TEST_IDLE,
              66 + 6);

    b.len = 0;
    test_frame(&b, 1, TEST_OP_BINARY, data, 101);
    test_case("single frame over max_message", &b, 0, 100, e1009, 1,
              TEST_IDLE, 6);

    /* a huge claimed length fails on the header, before any allocation */
    b.len = 0;
    test_put(&b, "\x82\xff\x40\x00\x00\x00\x00\x00\x00\x00" "abcd", 14);
    test_put(&b, data, 100);
    err = test_case("2^62 bytes over limits", &b, 1 << 20, 1 << 20, e1009, 1,
                    TEST_IDLE, 14);
    CHECK_CASE(err == 14, "2^62 bytes fails on the header");

    /* without limits, memory grows only with bytes that arrived */
    test_case("2^62 bytes, no limits", &b, 0, 0, none, 0, TEST_BUSY, 0);

    free(b.data);
}


static void
test_utf8_errors(void)
{
    size_t      err;
    test_buf_t  b;

    static const test_event_t  e1007[] = { TEST_ERR(1007) };
    static const test_event_t  ok[] = {
        TEST_TEXT("ab\xe2\x82\xac" "cd")
    };
    static const test_event_t  bin[] = {
        TEST_BINARY("\xc0\xaf\xff")
    };
    static const test_event_t  ping[] = {
        TEST_CTL(TEST_OP_PING, "\xc0\xaf\xff")
    };

    static const test_stream_t  streams[] = {
        { "invalid UTF-8 text", TEST_EXPECT(e1007), TEST_IDLE, 0,
          { TEST_FRAME(1, TEST_OP_TEXT, "ab\xc0\xaf") } },

        { "invalid UTF-8 across fragments", TEST_EXPECT(e1007), TEST_IDLE, 0,
          { TEST_FRAME(0, TEST_OP_TEXT, "ab\xe2\x82"),
            TEST_FRAME(1, TEST_OP_CONT, "(") } },

        { "valid UTF-8 across fragments", TEST_EXPECT(ok), TEST_IDLE, 0,
          { TEST_FRAME(0, TEST_OP_TEXT, "ab\xe2\x82"),
            TEST_FRAME(1, TEST_OP_CONT, "\xac" "cd") } },

        { "truncated UTF-8 at end", TEST_EXPECT(e1007), TEST_IDLE, 0,
          { TEST_FRAME(1, TEST_OP_TEXT, "ab\xe2\x82") } },

        { "truncated UTF-8 in final fragment", TEST_EXPECT(e1007),
          TEST_IDLE, 0,
          { TEST_FRAME(0, TEST_OP_TEXT, "a"),
            TEST_FRAME(0, TEST_OP_CONT, "\xf0\x9f"),
            TEST_FRAME(1, TEST_OP_CONT, "\x98") } },

        { "truncated UTF-8, empty final fragment", TEST_EXPECT(e1007),
          TEST_IDLE, 0,
          { TEST_FRAME(0, TEST_OP_TEXT, "a\xf0\x9f"),
            TEST_FRAME(1, TEST_OP_CONT, "") } },

        { "binary is not UTF-8 checked", TEST_EXPECT(bin), TEST_IDLE, 0,
          { TEST_FRAME(0, TEST_OP_BINARY, "\xc0"),
            TEST_FRAME(1, TEST_OP_CONT, "\xaf\xff") } },

        { "ping is not UTF-8 checked", TEST_EXPECT(ping), TEST_IDLE, 0,
          { TEST_FRAME(1, TEST_OP_PING, "\xc0\xaf\xff") } }
    };

    test_streams(streams, CHECK_N(streams));

    memset(&b, 0, sizeof(test_buf_t));

    /* the bad byte is the 4th of the payload, after a 6-byte header */
    test_frame_str(&b, 0, TEST_OP_TEXT, "abc\xc0\xaf" "def");
    test_frame_str(&b, 0, TEST_OP_CONT, "ghi");
    test_frame_str(&b, 1, TEST_OP_CONT, "jkl");
    err = test_case("invalid UTF-8 fails early", &b, 0, 0, e1007, 1,
                    TEST_IDLE, 6 + 8);
    CHECK_CASE(err == 6 + 4, "invalid UTF-8 fails at the byte");

    b.len = 0;
    test_frame_str(&b, 0, TEST_OP_TEXT, "abc\xed\xa0");
    test_frame_str(&b, 1, TEST_OP_CONT, "\x80");
    err = test_case("surrogate fails at its second byte", &b, 0, 0, e1007, 1,
                    TEST_IDLE, 6 + 5);
    CHECK_CASE(err == 6 + 5, "surrogate fails at the byte");

    free(b.data);
}


typedef struct {
    const char  *s;
    int          result;     /* 0 valid, 1 invalid, 2 incomplete */
} test_utf8_t;


static const test_utf8_t  test_utf8_cases[] = {
    { "", 0 },
    { "plain ASCII text, longer than a word", 0 },
    { "\x7f", 0 },
    { "\xc2\x80", 0 },
    { "\xdf\xbf", 0 },
    { "\xe0\xa0\x80", 0 },
    { "\xed\x9f\xbf", 0 },                  /* U+D7FF */
    { "\xee\x80\x80", 0 },                  /* U+E000 */
    { "\xef\xbf\xbf", 0 },                  /* U+FFFF */
    { "\xf0\x90\x80\x80", 0 },              /* U+10000 */
    { "\xf4\x8f\xbf\xbf", 0 },              /* U+10FFFF */
    { "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 0 },
    { "12345678\xe2\x82\xac" "12345678", 0 },
    { "\x80", 1 },
    { "\xbf", 1 },
    { "\xc0\x80", 1 },                      /* overlong */
    { "\xc1\xbf", 1 },
    { "\xe0\x80\x80", 1 },
    { "\xe0\x9f\xbf", 1 },
    { "\xf0\x80\x80\x80", 1 },
    { "\xf0\x8f\xbf\xbf", 1 },
    { "\xed\xa0\x80", 1 },                  /* U+D800 */
    { "\xed\xbf\xbf", 1 },                  /* U+DFFF */
    { "\xf4\x90\x80\x80", 1 },              /* U+110000 */
    { "\xf5\x80\x80\x80", 1 },
    { "\xf7\xbf\xbf\xbf", 1 },
    { "\xfe", 1 },
    { "\xff", 1 },
    { "\xc2\x41", 1 },
    { "\xe2\x82\x41", 1 },
    { "\xf0\x9f\x98\x41", 1 },
    { "\xe2\x82\xac\xac", 1 },
    { "abcdefgh\x80", 1 },
    { "abcdefghij\xc0\x80", 1 },
    { "\xf0\x9f\x98\x80\xed\xb0\x80", 1 },
    { "\xc2", 2 },
    { "\xe2\x82", 2 },
    { "\xf0\x9f\x98", 2 },
    { "abcdefghijk\xe2", 2 }
};


static void
test_utf8_table(void)
{
    int             bad;
    char            name[80], text[25];
    size_t          i, j, n;
    uint32_t        st, one;
    test_buf_t      b;
    test_event_t    ev;
    const char     *s;

    static const test_event_t  e1007[] = { TEST_ERR(1007) };

    memset(&b, 0, sizeof(test_buf_t));

    for (i = 0; i < CHECK_N(test_utf8_cases); i++) {
        s = test_utf8_cases[i].s;
        n = strlen(s);

        st = ngx_http_im_utf8_step(NGX_HTTP_IM_UTF8_ACCEPT,
                                   (const unsigned char *) s, n);

        one = NGX_HTTP_IM_UTF8_ACCEPT;
        for (j = 0; j < n; j++) {
            one = ngx_http_im_utf8_step(one, (const unsigned char *) s + j, 1);
        }

        switch (test_utf8_cases[i].result) {
        case 0:
            bad = st != NGX_HTTP_IM_UTF8_ACCEPT;
            break;
        case 1:
            bad = st != NGX_HTTP_IM_UTF8_REJECT;
            break;
        default:
            bad = st == NGX_HTTP_IM_UTF8_ACCEPT
                  || st == NGX_HTTP_IM_UTF8_REJECT;
        }

        snprintf(name, sizeof(name), "utf8 case %zu", i);
        CHECK_CASE(!bad && one == st, name);

        b.len = 0;
        test_frame(&b, 1, TEST_OP_TEXT, s, n);

        test_event(&ev, NGX_HTTP_IM_WS_MESSAGE, TEST_OP_TEXT, 0, s, n);

        snprintf(name, sizeof(name), "utf8 case %zu in a frame", i);
        test_case(name, &b, 0, 0, test_utf8_cases[i].result ? e1007 : &ev,
                  1, TEST_IDLE, 0);
    }

    /* a non-ASCII byte at every place of the word-at-a-time scan */
    for (i = 0; i < 24; i++) {
        memset(text, 'a', 24);
        text[24] = '\0';

        text[i] = '\x80';
        st = ngx_http_im_utf8_step(0, (const unsigned char *) text, 24);
        bad = st != NGX_HTTP_IM_UTF8_REJECT;

        if (i < 23) {
            text[i] = '\xc3';
            text[i + 1] = '\xa9';
            st = ngx_http_im_utf8_step(0, (const unsigned char *) text, 24);
            bad |= st != NGX_HTTP_IM_UTF8_ACCEPT;
        }

        text[23] = '\xe2';
        st = ngx_http_im_utf8_step(0, (const unsigned char *) text, 24);
        bad |= st == NGX_HTTP_IM_UTF8_ACCEPT;

        snprintf(name, sizeof(name), "utf8 non-ASCII at %zu", i);
        CHECK_CASE(!bad, name);
    }

    st = ngx_http_im_utf8_step(NGX_HTTP_IM_UTF8_REJECT,
                               (const unsigned char *) "abc", 3);
    CHECK_CASE(st == NGX_HTTP_IM_UTF8_REJECT, "utf8 reject is sticky");

    st = ngx_http_im_utf8_step(1000, (const unsigned char *) "abc", 3);
    CHECK_CASE(st == NGX_HTTP_IM_UTF8_REJECT, "utf8 bad state rejects");

    free(b.data);
}


/* valid multi-byte text split into 2 and 3 fragments at every boundary */

static void
test_utf8_splits(void)
{
    int             ok;
    size_t          i, j, n, err;
    uint32_t        st;
    test_buf_t      b;
    test_event_t    ev;

    static const char  s[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"
                             "\xd0\x96\xe4\xb8\xad z\xf4\x8f\xbf\xbf";

    n = sizeof(s) - 1;
    memset(&b, 0, sizeof(test_buf_t));

    test_event(&ev, NGX_HTTP_IM_WS_MESSAGE, TEST_OP_TEXT, 0, s, n);

    ok = 1;

    for (i = 0; i <= n; i++) {
        st = ngx_http_im_utf8_step(NGX_HTTP_IM_UTF8_ACCEPT,
                                   (const unsigned char *) s, i);
        st = ngx_http_im_utf8_step(st, (const unsigned char *) s + i, n - i);
        ok &= st == NGX_HTTP_IM_UTF8_ACCEPT;

        for (j = i; j <= n; j++) {
            b.len = 0;
            test_frame(&b, 0, TEST_OP_TEXT, s, i);
            test_frame(&b, 0, TEST_OP_CONT, s + i, j - i);
            test_frame(&b, 1, TEST_OP_CONT, s + j, n - j);

            err = check_failed;
            test_case("utf8 split in 3 fragments", &b, 0, 0, &ev, 1,
                      TEST_IDLE, 0);

            if (err != check_failed) {
                printf("  split at %zu and %zu\n", i, j);
            }
        }
    }

    CHECK_CASE(ok, "utf8_step split at every byte");

    free(b.data);
}


static void
test_close(void)
{
    int             valid;
    char            name[64];
    size_t          i;
    test_buf_t      b;
    test_event_t    ev;
    unsigned char   pl[2];

    static const struct {
        int  code;
        int  valid;
    } codes[] = {
        { 0, 0 }, { 999, 0 }, { 1000, 1 }, { 1001, 1 }, { 1002, 1 },
        { 1003, 1 }, { 1004, 0 }, { 1005, 0 }, { 1006, 0 }, { 1007, 1 },
        { 1008, 1 }, { 1009, 1 }, { 1010, 1 }, { 1011, 1 }, { 1012, 0 },
        { 1013, 0 }, { 1014, 0 }, { 1015, 0 }, { 1016, 0 }, { 1100, 0 },
        { 2000, 0 }, { 2999, 0 }, { 3000, 1 }, { 3999, 1 }, { 4000, 1 },
        { 4999, 1 }, { 5000, 0 }, { 65535, 0 }
    };

    static const test_event_t  e1002[] = { TEST_ERR(1002) };
    static const test_event_t  e1007[] = { TEST_ERR(1007) };
    static const test_event_t  empty[] = { TEST_CLOSE(1005, "") };
    static const test_event_t  bye[] = {
        TEST_CLOSE(1000, "\x03\xe8" "bye \xe2\x82\xac")
    };

    static const test_stream_t  streams[] = {
        { "close without payload", TEST_EXPECT(empty), TEST_IDLE, 0,
          { TEST_NO_PAYLOAD(1, TEST_OP_CLOSE) } },

        { "close with reason", TEST_EXPECT(bye), TEST_IDLE, 0,
          { TEST_FRAME(1, TEST_OP_CLOSE, "\x03\xe8" "bye \xe2\x82\xac") } },

        { "close payload of 1 byte", TEST_EXPECT(e1002), TEST_IDLE, 0,
          { TEST_FRAME(1, TEST_OP_CLOSE, "\x03") } },

        { "close reason not UTF-8", TEST_EXPECT(e1007), TEST_IDLE, 0,
          { TEST_FRAME(1, TEST_OP_CLOSE, "\x03\xe8" "b\xff") } },

        { "close reason truncated UTF-8", TEST_EXPECT(e1007), TEST_IDLE, 0,
          { TEST_FRAME(1, TEST_OP_CLOSE, "\x03\xe8" "b\xe2\x82") } }
    };

    test_streams(streams, CHECK_N(streams));

    memset(&b, 0, sizeof(test_buf_t));

    for (i = 0; i < CHECK_N(codes); i++) {
        pl[0] = (unsigned char) (codes[i].code >> 8);
        pl[1] = (unsigned char) codes[i].code;

        b.len = 0;
        test_frame(&b, 1, TEST_OP_CLOSE, pl, 2);

        test_event(&ev, NGX_HTTP_IM_WS_CONTROL, TEST_OP_CLOSE, codes[i].code,
                   pl, 2);

        snprintf(name, sizeof(name), "close code %d", codes[i].code);
        test_case(name, &b, 0, 0, codes[i].valid ? &ev : e1002, 1,
                  TEST_IDLE, 0);

        valid = ngx_http_im_ws_close_code_valid(codes[i].code);
        CHECK_CASE(valid == codes[i].valid, name);
    }

    free(b.data);
}


static void
test_close_payload(void)
{
    int             ok;
    char            reason[300];
    size_t          n;
    test_buf_t      b;
    test_event_t    ev;
    unsigned char   out[NGX_HTTP_IM_WS_CONTROL_MAX];

    n = ngx_http_im_ws_close_payload(out, 1001, NULL);
    CHECK_CASE(n == 2 && out[0] == 0x03 && out[1] == 0xe9,
               "close payload without reason");

    n = ngx_http_im_ws_close_payload(out, 4001, "going");
    CHECK_CASE(n == 7 && out[0] == 0x0f && out[1] == 0xa1
               && memcmp(out + 2, "going", 5) == 0,
               "close payload with reason");

    memset(reason, 'r', sizeof(reason) - 1);
    reason[sizeof(reason) - 1] = '\0';
    n = ngx_http_im_ws_close_payload(out, 1000, reason);
    CHECK_CASE(n == 125, "close payload truncated");

    /* 2-byte characters: 123 would cut the 62nd one */
    for (n = 0; n + 2 < sizeof(reason); n += 2) {
        reason[n] = '\xc3';
        reason[n + 1] = '\xa9';
    }

    reason[n] = '\0';
    n = ngx_http_im_ws_close_payload(out, 1000, reason);
    ok = n == 124
         && ngx_http_im_utf8_step(0, out + 2, n - 2) == 0;
    CHECK_CASE(ok, "close payload cut on a character");

    memset(&b, 0, sizeof(test_buf_t));
    test_frame(&b, 1, TEST_OP_CLOSE, out, n);

    test_event(&ev, NGX_HTTP_IM_WS_CONTROL, TEST_OP_CLOSE, 1000, out, n);
    test_case("close payload parses", &b, 0, 0, &ev, 1, TEST_IDLE, 0);

    free(b.data);
}


static void
test_frame_header(void)
{
    size_t          i, n;
    char            name[64];
    unsigned char   out[10];

    static const struct {
        uint64_t  len;
        size_t    size;
    } sizes[] = {
        { 0, 2 }, { 1, 2 }, { 125, 2 }, { 126, 4 }, { 127, 4 },
        { 65535, 4 }, { 65536, 10 }, { 1ULL << 32, 10 },
        { 0x7fffffffffffffffULL, 10 }
    };

    for (i = 0; i < CHECK_N(sizes); i++) {
        n = ngx_http_im_ws_frame_header(out, TEST_OP_BINARY, sizes[i].len);
        snprintf(name, sizeof(name), "frame header for %llu bytes",
                 (unsigned long long) sizes[i].len);
        CHECK_CASE(n == sizes[i].size && out[0] == 0x82 && !(out[1] & 0x80),
                   name);
    }

    n = ngx_http_im_ws_frame_header(out, TEST_OP_TEXT, 5);
    CHECK_CASE(n == 2 && memcmp(out, "\x81\x05", 2) == 0,
               "frame header bytes, 7-bit");

    n = ngx_http_im_ws_frame_header(out, TEST_OP_PING, 300);
    CHECK_CASE(n == 4 && memcmp(out, "\x89\x7e\x01\x2c", 4) == 0,
               "frame header bytes, 16-bit");

    n = ngx_http_im_ws_frame_header(out, TEST_OP_CLOSE, 0x123456789aULL);
    CHECK_CASE(n == 10 && memcmp(out, "\x88\x7f\x00\x00\x00\x12\x34\x56"
                                      "\x78\x9a", 10) == 0,
               "frame header bytes, 64-bit");
}


static void
test_handshake(void)
{
    size_t  i, n;
    char    out[NGX_HTTP_IM_WS_ACCEPT_LEN + 1];

    static const struct {
        const char  *key;
        int          valid;
    } keys[] = {
        { "dGhlIHNhbXBsZSBub25jZQ==", 1 },
        { "AAAAAAAAAAAAAAAAAAAAAA==", 1 },
        { "+/+/+/+/+/+/+/+/+/+/+w==", 1 },
        { "", 0 },
        { "dGhlIHNhbXBsZSBub25jZQ=", 0 },
        { "dGhlIHNhbXBsZSBub25jZQ", 0 },
        { "dGhlIHNhbXBsZSBub25jZQ===", 0 },
        { "dGhlIHNhbXBsZSBub25jZ!==", 0 },
        { "dGhlIHNhbXBsZSBub25jZ-==", 0 },
        { "dGhlIHNhbXBsZSBub25jZQ=x", 0 },
        { "dGhlIHNhbXBsZSBub25j=Q==", 0 },
        { "dGhlIHNhbXBsZSBub25jZSBz", 0 },      /* 18 bytes */
        { "dGhlIHNhbXBsZSBub25jZSBzYQ==", 0 },  /* 19 bytes */
        { "========================", 0 },
        { " dGhlIHNhbXBsZSBub25jZQ==", 0 }
    };

    memset(out, 'x', sizeof(out));
    n = ngx_http_im_ws_accept_key((const unsigned char *)
                                  "dGhlIHNhbXBsZSBub25jZQ==", 24, out);
    CHECK_CASE(n == 28 && strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0,
               "accept key of RFC 6455");

    for (i = 0; i < CHECK_N(keys); i++) {
        n = ngx_http_im_ws_key_valid((const unsigned char *) keys[i].key,
                                     strlen(keys[i].key));
        CHECK_CASE((int) n == keys[i].valid,
                   keys[i].key[0] ? keys[i].key : "empty key");
    }
}


static int
test_parse_one(ngx_http_im_ws_parser_t *p, test_buf_t *b,
    ngx_http_im_ws_event_t *ev)
{
    int     rc;
    size_t  used;

    rc = ngx_http_im_ws_parse(p, b->data, b->len, &used, ev);
    b->len = 0;

    return rc;
}


static void
test_release(void)
{
    int                      rc, ok;
    size_t                   used;
    test_buf_t               b;
    ngx_http_im_ws_event_t   ev;
    ngx_http_im_ws_parser_t  p;

    memset(&b, 0, sizeof(test_buf_t));

    ngx_http_im_ws_parser_init(&p, 0, 0);
    ngx_http_im_ws_parser_release(&p);
    ngx_http_im_ws_parser_release(&p);
    CHECK_CASE(ngx_http_im_ws_parser_idle(&p), "release of a fresh parser");

    test_frame_str(&b, 1, TEST_OP_TEXT, "first");
    rc = test_parse_one(&p, &b, &ev);
    ok = rc == NGX_HTTP_IM_WS_MESSAGE && ev.len == 5
         && memcmp(ev.data, "first", 5) == 0
         && ngx_http_im_ws_parser_idle(&p);

    /* releasing right after a message is the idle-connection path */
    ngx_http_im_ws_parser_release(&p);

    test_frame_str(&b, 1, TEST_OP_TEXT, "second");
    rc = test_parse_one(&p, &b, &ev);
    ok = ok && rc == NGX_HTTP_IM_WS_MESSAGE && ev.len == 6
         && memcmp(ev.data, "second", 6) == 0;
    CHECK_CASE(ok, "release after a message");

    /* a partial header and an empty first fragment hold no message data */
    test_frame_str(&b, 0, TEST_OP_TEXT, "");
    test_frame_str(&b, 1, TEST_OP_CONT, "third");
    rc = ngx_http_im_ws_parse(&p, b.data, 9, &used, &ev);
    ok = rc == NGX_HTTP_IM_WS_AGAIN && !ngx_http_im_ws_parser_idle(&p);
    ngx_http_im_ws_parser_release(&p);
    rc = ngx_http_im_ws_parse(&p, b.data + 9, b.len - 9, &used, &ev);
    ok = ok && rc == NGX_HTTP_IM_WS_MESSAGE && ev.len == 5
         && memcmp(ev.data, "third", 5) == 0
         && ngx_http_im_ws_parser_idle(&p);
    CHECK_CASE(ok, "release with a partial header");
    b.len = 0;

    /* a control frame keeps a fragmented message pending */
    test_frame_str(&b, 0, TEST_OP_TEXT, "abc");
    test_frame_str(&b, 1, TEST_OP_PING, "");
    rc = test_parse_one(&p, &b, &ev);
    ok = rc == NGX_HTTP_IM_WS_CONTROL && !ngx_http_im_ws_parser_idle(&p);
    CHECK_CASE(ok, "not idle inside a message");

    /* releasing buffered data is a bug of the caller, but must be safe */
    ngx_http_im_ws_parser_release(&p);
    test_frame_str(&b, 1, TEST_OP_CONT, "def");
    rc = test_parse_one(&p, &b, &ev);
    ok = rc == NGX_HTTP_IM_WS_ERROR && ev.close_code == 1011
         && ngx_http_im_ws_parser_idle(&p);
    CHECK_CASE(ok, "release inside a message fails");
    ngx_http_im_ws_parser_release(&p);

    /* release while the error holds the buffer */
    ngx_http_im_ws_parser_init(&p, 0, 0);
    test_frame_str(&b, 0, TEST_OP_TEXT, "abc");
    test_frame_str(&b, 1, TEST_OP_CONT, "\xff");
    rc = test_parse_one(&p, &b, &ev);
    ngx_http_im_ws_parser_release(&p);
    CHECK_CASE(rc == NGX_HTTP_IM_WS_ERROR && ev.close_code == 1007,
               "release after an error");

    free(b.data);
}


static void
test_buffer(void)
{
    int                      rc, ok;
    size_t                   i, used;
    test_buf_t               b;
    unsigned char            data[1000];
    ngx_http_im_ws_event_t   ev;
    ngx_http_im_ws_parser_t  p;

    memset(&b, 0, sizeof(test_buf_t));
    memset(data, 'x', sizeof(data));

    test_frame(&b, 1, TEST_OP_PING, "p", 1);
    ngx_http_im_ws_parser_init(&p, 0, 0);
    rc = ngx_http_im_ws_parse(&p, b.data, 1, &used, &ev);
    ok = rc == NGX_HTTP_IM_WS_AGAIN && !ngx_http_im_ws_parser_idle(&p);
    rc = ngx_http_im_ws_parse(&p, b.data + 1, b.len - 1, &used, &ev);
    ok = ok && rc == NGX_HTTP_IM_WS_CONTROL && ngx_http_im_ws_parser_idle(&p)
         && p.msg == NULL;
    CHECK_CASE(ok, "partial header is not idle; control frames allocate none");

    /* grown a byte at a time, the buffer still stops at max_message */
    b.len = 0;
    test_frame(&b, 0, TEST_OP_BINARY, data, 500);
    test_frame(&b, 1, TEST_OP_CONT, data, 499);
    ngx_http_im_ws_parser_init(&p, 0, 999);
    rc = NGX_HTTP_IM_WS_AGAIN;

    for (i = 0; i < b.len; i++) {
        rc = ngx_http_im_ws_parse(&p, b.data + i, 1, &used, &ev);
    }

    ok = rc == NGX_HTTP_IM_WS_MESSAGE && ev.len == 999
         && p.msg_cap == 999 && memcmp(ev.data, data, 999) == 0;
    CHECK_CASE(ok, "message buffer capped at max_message");

    ngx_http_im_ws_parser_release(&p);

    /* without a limit it doubles: 300 bytes fed one by one take 512 */
    b.len = 0;
    test_frame(&b, 1, TEST_OP_BINARY, data, 300);
    ngx_http_im_ws_parser_init(&p, 0, 0);

    for (i = 0; i < b.len; i++) {
        rc = ngx_http_im_ws_parse(&p, b.data + i, 1, &used, &ev);
    }

    ok = rc == NGX_HTTP_IM_WS_MESSAGE && ev.len == 300 && p.msg_cap == 512;
    CHECK_CASE(ok, "message buffer grows geometrically");

    ngx_http_im_ws_parser_release(&p);
    free(b.data);
}


/* appends random valid UTF-8 of about len bytes */

static void
test_random_text(test_buf_t *b, size_t len, uint32_t *seed)
{
    size_t         n;
    uint32_t       cp;
    unsigned char  u[4];

    while (b->len < len) {
        switch (test_rand(seed) % 5) {
        case 0:
            cp = 0x80 + test_rand(seed) % 0x780;
            break;
        case 1:
            cp = 0x800 + test_rand(seed) % 0xf800;
            if (cp >= 0xd800 && cp <= 0xdfff) {
                cp -= 0x800;
            }
            break;
        case 2:
            cp = 0x10000 + test_rand(seed) % 0x100000;
            break;
        default:
            cp = 0x20 + test_rand(seed) % 0x5f;
        }

        if (cp < 0x80) {
            u[0] = (unsigned char) cp;
            n = 1;

        } else if (cp < 0x800) {
            u[0] = (unsigned char) (0xc0 | (cp >> 6));
            u[1] = (unsigned char) (0x80 | (cp & 0x3f));
            n = 2;

        } else if (cp < 0x10000) {
            u[0] = (unsigned char) (0xe0 | (cp >> 12));
            u[1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
            u[2] = (unsigned char) (0x80 | (cp & 0x3f));
            n = 3;

        } else {
            u[0] = (unsigned char) (0xf0 | (cp >> 18));
            u[1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3f));
            u[2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3f));
            u[3] = (unsigned char) (0x80 | (cp & 0x3f));
            n = 4;
        }

        test_put(b, u, n);
    }
}


static void
test_random_control(test_buf_t *b, test_event_t *e, uint32_t *seed)
{
    size_t          i, len;
    unsigned char  *data;

    len = test_rand(seed) % 126;
    data = check_alloc(len);

    for (i = 0; i < len; i++) {
        data[i] = (unsigned char) test_rand(seed);
    }

    test_event(e, NGX_HTTP_IM_WS_CONTROL,
               test_rand(seed) & 1 ? TEST_OP_PING : TEST_OP_PONG, 0, data,
               len);

    test_frame(b, 1, e->opcode, data, len);
}


/*
 * Random messages of random sizes, cut into random fragments with
 * random control frames between them.
 */

static void
test_random_stream(uint32_t seed)
{
    int             op;
    char            name[64];
    size_t          i, k, n, nev, off, cut, frags;
    test_buf_t      b, m;
    test_event_t    ev[400];

    memset(&b, 0, sizeof(test_buf_t));
    nev = 0;

    for (i = 0; i < 60; i++) {
        memset(&m, 0, sizeof(test_buf_t));

        n = test_rand(&seed) % 8 == 0 ? test_rand(&seed) % 70000
                                      : test_rand(&seed) % 300;
        op = test_rand(&seed) & 1 ? TEST_OP_TEXT : TEST_OP_BINARY;

        if (op == TEST_OP_TEXT) {
            test_random_text(&m, n, &seed);

        } else {
            for (k = 0; k < n; k++) {
                test_put(&m, &seed, 1);
                (void) test_rand(&seed);
            }
        }

        frags = 1 + test_rand(&seed) % 4;

        for (k = 0, off = 0; k < frags; k++) {
            cut = k + 1 == frags ? m.len
                                 : off + test_rand(&seed) % (m.len - off + 1);

            if (test_rand(&seed) % 3 == 0) {
                test_random_control(&b, &ev[nev++], &seed);
            }

            test_frame(&b, k + 1 == frags, k ? TEST_OP_CONT : op,
                       m.data + off, cut - off);
            off = cut;
        }

        test_event(&ev[nev++], NGX_HTTP_IM_WS_MESSAGE, op, 0,
                   m.data ? m.data : check_alloc(0), m.len);
    }

    snprintf(name, sizeof(name), "random stream %u", (unsigned) seed);
    test_case(name, &b, 1 << 17, 1 << 17, ev, nev, TEST_IDLE, 0);

    for (i = 0; i < nev; i++) {
        free((void *) ev[i].data);
    }

    free(b.data);
}


int
main(void)
{
    uint32_t  seed;

    test_single();
    test_fragmented();
    test_interleaved();
    test_lengths();
    test_protocol_errors();
    test_limits();
    test_utf8_errors();
    test_utf8_table();
    test_utf8_splits();
    test_close();
    test_close_payload();
    test_frame_header();
    test_handshake();
    test_release();
    test_buffer();

    for (seed = 1; seed <= 8; seed++) {
        test_random_stream(seed * 2654435761u);
    }

    return check_done();
}
