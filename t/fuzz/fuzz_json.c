
/*
 * libFuzzer target over the JSON codec (and the token verifier).
 *
 * For any input: the request parser must not crash or leak; a MsgData it
 * accepts must serialize to JSON that parses back to the same message
 * (the second serialization equals the first), with a correct seq split;
 * escaping any bytes must give a JSON string yajl accepts.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined \
 *       -I ngx_im_module t/fuzz/fuzz_json.c ngx_im_module/ngx_http_im_json.c \
 *       ngx_im_module/ngx_http_im_token.c \
 *       ngx_im_module/ngx_http_im_ws_frame.c -lyajl -lcrypto \
 *       -o build/fuzz/fuzz_json
 *   build/fuzz/fuzz_json -max_total_time=60 build/fuzz/corpus
 */


#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "ngx_http_im_json.h"
#include "ngx_http_im_token.h"


#define FUZZ_ASSERT(cond)                                                   \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "fuzz_json: %s:%d: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                 \
            abort();                                                        \
        }                                                                   \
    } while (0)


static void fuzz_msg(yajl_val data);
static void fuzz_escape(const uint8_t *data, size_t size);
static int fuzz_utf8_valid(const uint8_t *p, size_t n);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char                        err[NGX_HTTP_IM_JSON_ERRLEN];
    yajl_val                    v;
    ngx_http_im_buf_t           b;
    ngx_http_im_req_t           req;
    ngx_http_im_token_claims_t  claims;

    if (ngx_http_im_req_parse(data, size, &req, err, sizeof(err)) == 0) {
        FUZZ_ASSERT(req.data != NULL && YAJL_IS_OBJECT(req.data));

        fuzz_msg(req.data);

        /* the response envelope and a copy of the tree are valid JSON */

        ngx_http_im_buf_init(&b, 0);
        ngx_http_im_resp_begin(&b, req.req_identifier, req.operation_id,
                               req.msg_incr, 1001, err);
        ngx_http_im_buf_json_val(&b, req.data);
        ngx_http_im_resp_end(&b);
        FUZZ_ASSERT(!b.failed);

        v = ngx_http_im_json_parse(b.data, b.len, err, sizeof(err));
        FUZZ_ASSERT(v != NULL);
        yajl_tree_free(v);

        ngx_http_im_buf_free(&b);

    } else {
        FUZZ_ASSERT(err[0] != '\0' && strchr(err, '\n') == NULL);

        /* any valid JSON object may be MsgData */

        v = ngx_http_im_json_parse(data, size, err, sizeof(err));
        if (v) {
            fuzz_msg(v);
            yajl_tree_free(v);
        }
    }

    ngx_http_im_req_free(&req);

    fuzz_escape(data, size);

    (void) ngx_http_im_token_verify((const unsigned char *) "openIM123", 9,
                                    (const char *) data, size, 1700000000,
                                    &claims);
    (void) ngx_http_im_user_id_valid((const char *) data, size);

    return 0;
}


static void
fuzz_msg(yajl_val data)
{
    int                 rc;
    char                err[NGX_HTTP_IM_JSON_ERRLEN];
    size_t              seq_at, seq_at2;
    yajl_val            v;
    ngx_http_im_buf_t   b, b2;
    ngx_http_im_msg_t   m, m2;

    rc = ngx_http_im_msg_from_json(data, &m, err, sizeof(err));
    if (rc != 0) {
        FUZZ_ASSERT(strncmp(err, "field \"", 7) == 0 || err[0] == 'o');
        FUZZ_ASSERT(m.at_user_ids == NULL);
        return;
    }

    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_msg_to_json(&m, &b, &seq_at);
    FUZZ_ASSERT(!b.failed);
    FUZZ_ASSERT(fuzz_utf8_valid(b.data, b.len));

    FUZZ_ASSERT(seq_at > 6 && seq_at < b.len);
    FUZZ_ASSERT(memcmp(b.data + seq_at - 6, "\"seq\":", 6) == 0);

    v = ngx_http_im_json_parse(b.data, b.len, err, sizeof(err));
    FUZZ_ASSERT(v != NULL);

    rc = ngx_http_im_msg_from_json(v, &m2, err, sizeof(err));
    FUZZ_ASSERT(rc == 0);
    FUZZ_ASSERT(m2.seq == m.seq && m2.nat == m.nat
                && m2.noptions == m.noptions);

    ngx_http_im_buf_init(&b2, 0);
    ngx_http_im_msg_to_json(&m2, &b2, &seq_at2);
    FUZZ_ASSERT(!b2.failed);
    FUZZ_ASSERT(b2.len == b.len && memcmp(b2.data, b.data, b.len) == 0);
    FUZZ_ASSERT(seq_at2 == seq_at);

    ngx_http_im_buf_free(&b2);
    ngx_http_im_msg_free(&m2);
    yajl_tree_free(v);
    ngx_http_im_buf_free(&b);
    ngx_http_im_msg_free(&m);
}


static void
fuzz_escape(const uint8_t *data, size_t size)
{
    char               err[NGX_HTTP_IM_JSON_ERRLEN];
    yajl_val           v;
    ngx_http_im_buf_t  b;

    ngx_http_im_buf_init(&b, 0);
    ngx_http_im_buf_json_str(&b, (const char *) data, size);
    FUZZ_ASSERT(!b.failed);
    FUZZ_ASSERT(fuzz_utf8_valid(b.data, b.len));

    v = ngx_http_im_json_parse(b.data, b.len, err, sizeof(err));
    FUZZ_ASSERT(v != NULL && YAJL_IS_STRING(v));

    /* valid UTF-8 without NUL comes back unchanged */

    if (fuzz_utf8_valid(data, size) && memchr(data, '\0', size) == NULL) {
        FUZZ_ASSERT(strlen(v->u.string) == size
                    && memcmp(v->u.string, data, size) == 0);
    }

    yajl_tree_free(v);
    ngx_http_im_buf_free(&b);
}


/* an independent strict UTF-8 check, written differently from json.c's */

static int
fuzz_utf8_valid(const uint8_t *p, size_t n)
{
    size_t    i, k, j;
    uint32_t  cp, min;

    for (i = 0; i < n; i += k) {
        if (p[i] < 0x80) {
            k = 1;
            continue;
        }

        if ((p[i] & 0xe0) == 0xc0) {
            k = 2;
            cp = p[i] & 0x1f;
            min = 0x80;

        } else if ((p[i] & 0xf0) == 0xe0) {
            k = 3;
            cp = p[i] & 0x0f;
            min = 0x800;

        } else if ((p[i] & 0xf8) == 0xf0) {
            k = 4;
            cp = p[i] & 0x07;
            min = 0x10000;

        } else {
            return 0;
        }

        if (n - i < k) {
            return 0;
        }

        for (j = 1; j < k; j++) {
            if ((p[i + j] & 0xc0) != 0x80) {
                return 0;
            }

            cp = (cp << 6) | (p[i + j] & 0x3f);
        }

        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }
    }

    return 1;
}
