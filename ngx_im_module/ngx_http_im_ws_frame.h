
/*
 * ngx_im: RFC 6455 frame codec, server side.
 *
 * Pure C (libc and OpenSSL only, no nginx types), so that it can be
 * unit-tested and fuzzed outside nginx.  The parser is incremental: all
 * state lives in ngx_http_im_ws_parser_t, so input may arrive in pieces
 * of any size, down to one byte.
 */


#ifndef _NGX_HTTP_IM_WS_FRAME_H_INCLUDED_
#define _NGX_HTTP_IM_WS_FRAME_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define NGX_HTTP_IM_WS_OP_CONT        0x0
#define NGX_HTTP_IM_WS_OP_TEXT        0x1
#define NGX_HTTP_IM_WS_OP_BINARY      0x2
#define NGX_HTTP_IM_WS_OP_CLOSE       0x8
#define NGX_HTTP_IM_WS_OP_PING        0x9
#define NGX_HTTP_IM_WS_OP_PONG        0xa


/* return values of ngx_http_im_ws_parse() */
#define NGX_HTTP_IM_WS_AGAIN          0   /* all input consumed */
#define NGX_HTTP_IM_WS_MESSAGE        1   /* complete text/binary message */
#define NGX_HTTP_IM_WS_CONTROL        2   /* complete ping/pong/close */
#define NGX_HTTP_IM_WS_ERROR          3   /* close with ev->close_code */


/* close codes */
#define NGX_HTTP_IM_WS_CLOSE_NORMAL         1000
#define NGX_HTTP_IM_WS_CLOSE_GOING_AWAY     1001
#define NGX_HTTP_IM_WS_CLOSE_PROTOCOL       1002
#define NGX_HTTP_IM_WS_CLOSE_NO_STATUS      1005
#define NGX_HTTP_IM_WS_CLOSE_BAD_DATA       1007
#define NGX_HTTP_IM_WS_CLOSE_POLICY         1008
#define NGX_HTTP_IM_WS_CLOSE_TOO_BIG        1009
#define NGX_HTTP_IM_WS_CLOSE_INTERNAL       1011


#define NGX_HTTP_IM_WS_CONTROL_MAX    125
#define NGX_HTTP_IM_WS_HEADER_MAX     14  /* client header: 2 + 8 + mask */
#define NGX_HTTP_IM_WS_ACCEPT_LEN     28


/* state of ngx_http_im_utf8_step(); any other nonzero state is partial */
#define NGX_HTTP_IM_UTF8_ACCEPT       0
#define NGX_HTTP_IM_UTF8_REJECT       1


typedef struct {
    int                    opcode;
    const unsigned char   *data;       /* unmasked payload: for CLOSE the
                                          whole payload, code included */
    size_t                 len;
    int                    close_code; /* CLOSE: the peer's code (1005 if
                                          none); ERROR: the code to send */
    const char            *reason;     /* ERROR: static text for logs */
} ngx_http_im_ws_event_t;


typedef struct {
    size_t                 max_frame;    /* 0: no limit */
    size_t                 max_message;  /* 0: no limit */

    int                    state;
    int                    opcode;       /* of the frame being read */
    int                    fin;
    int                    msg_opcode;   /* TEXT/BINARY being assembled;
                                            0 when none */

    size_t                 hdr_len;      /* header bytes collected */
    size_t                 hdr_need;     /* 2 until the length is known */
    uint64_t               remain;       /* payload bytes still to come */
    size_t                 mask_pos;
    unsigned char          mask[4];
    unsigned char          hdr[NGX_HTTP_IM_WS_HEADER_MAX];

    uint32_t               utf8;         /* validator state of TEXT */

    unsigned char         *msg;          /* malloc'd, <= max_message */
    size_t                 msg_len;
    size_t                 msg_cap;

    int                    err_code;
    const char            *err_reason;

    size_t                 ctl_len;
    unsigned char          ctl[NGX_HTTP_IM_WS_CONTROL_MAX];
} ngx_http_im_ws_parser_t;


/*
 * Sets up a parser.  Allocates nothing: the message buffer is allocated
 * when the first data byte arrives.  To reuse a parser, release it first.
 */
void ngx_http_im_ws_parser_init(ngx_http_im_ws_parser_t *p,
    size_t max_frame, size_t max_message);

/*
 * Consumes bytes of buf until one event completes or the input runs out,
 * and stores in *consumed how many were used; the caller calls again with
 * the rest.  Never reads past len.  Returns NGX_HTTP_IM_WS_AGAIN (all of
 * buf consumed, ev untouched), or MESSAGE, CONTROL or ERROR with ev
 * filled in.  ev->data stays valid until the next call, or until
 * ngx_http_im_ws_parser_release().  After ERROR the parser stays failed
 * and returns the same ERROR again, consuming nothing.
 */
int ngx_http_im_ws_parse(ngx_http_im_ws_parser_t *p,
    const unsigned char *buf, size_t len, size_t *consumed,
    ngx_http_im_ws_event_t *ev);

/*
 * Frees the message buffer; it is allocated again when needed.  Safe to
 * call at any time, also on a parser that was never fed.  Meant for idle
 * connections: if part of a data message is buffered, that data is lost
 * and the parser fails with close code 1011.
 */
void ngx_http_im_ws_parser_release(ngx_http_im_ws_parser_t *p);

/*
 * Returns 1 when no partial frame or message is pending (also after an
 * ERROR), 0 otherwise.
 */
int ngx_http_im_ws_parser_idle(ngx_http_im_ws_parser_t *p);

/*
 * Writes an unmasked server frame header with FIN set for a payload of
 * len bytes into out, which must hold 10 bytes.  Returns its size, 2..10.
 */
size_t ngx_http_im_ws_frame_header(unsigned char *out, int opcode,
    uint64_t len);

/*
 * Writes a close frame payload into out (at least 125 bytes): the code,
 * then reason (may be NULL), truncated to 123 bytes without splitting a
 * UTF-8 sequence.  Returns its size.
 */
size_t ngx_http_im_ws_close_payload(unsigned char *out, int code,
    const char *reason);

/*
 * Writes a client frame into out (len + 14 bytes): header, mask4 and the
 * masked payload.  mask4 == NULL writes an unmasked frame, which servers
 * must reject; tests use it.  Returns the total size.
 */
size_t ngx_http_im_ws_frame_client(unsigned char *out, int fin, int opcode,
    const unsigned char *mask4, const unsigned char *payload, size_t len);

/*
 * Returns 1 if a peer may send this close code, 0 otherwise.
 */
int ngx_http_im_ws_close_code_valid(int code);

/*
 * Incremental UTF-8 validator.  Start with state NGX_HTTP_IM_UTF8_ACCEPT;
 * feed the text in pieces, passing each returned state to the next call.
 * Returns NGX_HTTP_IM_UTF8_ACCEPT at a character boundary,
 * NGX_HTTP_IM_UTF8_REJECT (sticky) as soon as the input cannot be valid
 * (overlong forms, surrogates, code points above U+10FFFF included), or
 * another value inside a multi-byte sequence.
 */
uint32_t ngx_http_im_utf8_step(uint32_t state, const unsigned char *s,
    size_t n);

/*
 * Writes the Sec-WebSocket-Accept value for key into out (29 bytes: 28
 * and a NUL).  Returns 28, or 0 if OpenSSL failed.
 */
size_t ngx_http_im_ws_accept_key(const unsigned char *key, size_t key_len,
    char *out);

/*
 * Returns 1 if key is a valid Sec-WebSocket-Key (base64 of 16 bytes),
 * 0 otherwise.
 */
int ngx_http_im_ws_key_valid(const unsigned char *key, size_t len);


#endif /* _NGX_HTTP_IM_WS_FRAME_H_INCLUDED_ */
