
/*
 * ngx_im: libFuzzer target of the RFC 6455 frame parser.
 *
 * The first bytes of the input choose small limits, a chunking seed and
 * a mode: the rest is either parsed as raw bytes, or read as a list of
 * frame descriptions that are encoded as masked client frames, which
 * gets the fuzzer past the header checks quickly.
 *
 * The stream is parsed twice, fed whole and in random chunks (each
 * chunk copied to a heap block of its exact size), and both parsers
 * must produce the same events.  Events are checked against the
 * contract: limits, valid UTF-8 text, valid close codes.
 */


#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_http_im_ws_frame.h"


typedef struct {
    ngx_http_im_ws_parser_t   p;
    const unsigned char      *data;
    size_t                    len;
    size_t                    off;
    unsigned char            *chunk;
    size_t                    chunk_off;
    size_t                    chunk_len;
    uint32_t                  seed;    /* 0: feed whole */
    int                       done;
} fuzz_feeder_t;


#define fuzz_assert(cond)  if (!(cond)) { __builtin_trap(); }


static uint32_t
fuzz_rand(uint32_t *seed)
{
    *seed ^= *seed << 13;
    *seed ^= *seed >> 17;
    *seed ^= *seed << 5;

    return *seed;
}


/* returns the next event, or -1 when the input is used up */

static int
fuzz_next(fuzz_feeder_t *f, ngx_http_im_ws_event_t *ev)
{
    int     rc;
    size_t  n, used, left;

    for ( ;; ) {

        if (f->chunk_off == f->chunk_len) {
            free(f->chunk);
            f->chunk = NULL;

            if (f->off == f->len) {
                return -1;
            }

            n = f->len - f->off;

            if (f->seed) {
                left = 1 + fuzz_rand(&f->seed) % 37;
                n = left < n ? left : n;
            }

            f->chunk = malloc(n);
            fuzz_assert(f->chunk != NULL);
            memcpy(f->chunk, f->data + f->off, n);
            f->off += n;
            f->chunk_off = 0;
            f->chunk_len = n;
        }

        left = f->chunk_len - f->chunk_off;
        rc = ngx_http_im_ws_parse(&f->p, f->chunk + f->chunk_off, left,
                                  &used, ev);

        fuzz_assert(used <= left);
        f->chunk_off += used;

        if (rc == NGX_HTTP_IM_WS_AGAIN) {
            fuzz_assert(used == left);
            continue;
        }

        return rc;
    }
}


static void
fuzz_check(ngx_http_im_ws_parser_t *p, int rc, ngx_http_im_ws_event_t *ev)
{
    fuzz_assert(ev->data != NULL);

    switch (rc) {

    case NGX_HTTP_IM_WS_MESSAGE:
        fuzz_assert(ev->opcode == NGX_HTTP_IM_WS_OP_TEXT
                    || ev->opcode == NGX_HTTP_IM_WS_OP_BINARY);
        fuzz_assert(p->max_message == 0 || ev->len <= p->max_message);

        if (ev->opcode == NGX_HTTP_IM_WS_OP_TEXT) {
            fuzz_assert(ngx_http_im_utf8_step(0, ev->data, ev->len) == 0);
        }

        break;

    case NGX_HTTP_IM_WS_CONTROL:
        fuzz_assert(ev->len <= NGX_HTTP_IM_WS_CONTROL_MAX);
        fuzz_assert(p->max_frame == 0 || ev->len <= p->max_frame);

        if (ev->opcode == NGX_HTTP_IM_WS_OP_CLOSE) {
            fuzz_assert(ev->close_code == 1005
                        || ngx_http_im_ws_close_code_valid(ev->close_code));
        }

        break;

    default:
        fuzz_assert(rc == NGX_HTTP_IM_WS_ERROR);
        fuzz_assert(ev->close_code == 1002 || ev->close_code == 1007
                    || ev->close_code == 1009);
        fuzz_assert(ev->reason != NULL);
    }
}


/*
 * Frame descriptions: a flags byte (FIN 0x80, RSV 0x70, opcode 0x0f),
 * a length byte (high bit: send unmasked, for rare protocol errors) and
 * that many payload bytes.
 */

static size_t
fuzz_encode(const unsigned char *in, size_t len, unsigned char *out)
{
    size_t         n, plen, size;
    unsigned char  mask[4];

    size = 0;
    mask[0] = 0x5a;
    mask[1] = 0xc3;
    mask[2] = 0x00;
    mask[3] = 0xff;

    while (len >= 2) {
        plen = in[1] & 0x7f;
        plen = plen < len - 2 ? plen : len - 2;

        n = ngx_http_im_ws_frame_client(out + size, in[0] >> 7, in[0] & 0x0f,
                                        (in[1] & 0x80) ? NULL : mask,
                                        in + 2, plen);
        out[size] |= in[0] & 0x70;

        size += n;
        in += 2 + plen;
        len -= 2 + plen;
        mask[2]++;
    }

    return size;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int                     a, b;
    size_t                  max_frame, max_message, len;
    unsigned char          *stream;
    fuzz_feeder_t           whole, chunked;
    ngx_http_im_ws_event_t  ea, eb;

    if (size < 4) {
        return 0;
    }

    max_frame = data[0] & 0x80 ? 0 : data[0];
    max_message = data[1] & 0x80 ? 0 : (size_t) data[1] * 4;

    len = size - 4;

    if (data[3] & 1) {
        /* a description of 2 + n bytes becomes at most 8 + n bytes */
        stream = malloc(len * 4 + 1);
        fuzz_assert(stream != NULL);
        len = fuzz_encode(data + 4, len, stream);

    } else {
        stream = malloc(len + 1);
        fuzz_assert(stream != NULL);
        memcpy(stream, data + 4, len);
    }

    memset(&whole, 0, sizeof(fuzz_feeder_t));
    memset(&chunked, 0, sizeof(fuzz_feeder_t));

    ngx_http_im_ws_parser_init(&whole.p, max_frame, max_message);
    ngx_http_im_ws_parser_init(&chunked.p, max_frame, max_message);

    whole.data = chunked.data = stream;
    whole.len = chunked.len = len;
    chunked.seed = 0x9e3779b9u ^ ((uint32_t) data[2] << 8) ^ data[3];

    for ( ;; ) {
        a = fuzz_next(&whole, &ea);
        b = fuzz_next(&chunked, &eb);

        fuzz_assert(a == b);

        if (a == -1) {
            break;
        }

        fuzz_check(&whole.p, a, &ea);

        fuzz_assert(ea.opcode == eb.opcode && ea.len == eb.len
                    && ea.close_code == eb.close_code);
        fuzz_assert(memcmp(ea.data, eb.data, ea.len) == 0);

        if (a == NGX_HTTP_IM_WS_ERROR) {
            break;
        }

        /* what an idle connection does between messages */
        if (ngx_http_im_ws_parser_idle(&chunked.p)) {
            ngx_http_im_ws_parser_release(&chunked.p);
        }
    }

    free(whole.chunk);
    free(chunked.chunk);
    ngx_http_im_ws_parser_release(&whole.p);
    ngx_http_im_ws_parser_release(&chunked.p);
    free(stream);

    return 0;
}
