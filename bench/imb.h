
/*
 * imb: the client side shared by bench/imbench and t/reliability/imrel.
 *
 * One epoll loop drives many non-blocking connections: WebSocket clients
 * (handshake, masked frames out, unmasked server frames in, ping/pong)
 * and HTTP/1.1 keep-alive clients.  Around it: growable buffers, a
 * log-linear latency histogram, a small JSON scanner that walks server
 * frames in place, and the REST calls that set up users and tokens.
 *
 * The message encoding lives behind imb_codec_t: JSON here, protobuf in
 * imb_pb.c.
 */


#ifndef _IMB_H_INCLUDED_
#define _IMB_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <netinet/in.h>


#define IMB_OK          0
#define IMB_ERROR      -1
#define IMB_AGAIN      -2


/* buffers */


typedef struct {
    char                  *data;
    size_t                 pos;        /* first unconsumed byte */
    size_t                 len;        /* bytes filled */
    size_t                 cap;
} imb_buf_t;


/* Makes room for n more bytes; returns IMB_OK or IMB_ERROR (no memory). */
int imb_buf_reserve(imb_buf_t *b, size_t n);

/* Appends n bytes; returns IMB_OK or IMB_ERROR. */
int imb_buf_add(imb_buf_t *b, const void *p, size_t n);

/* Appends formatted text; returns IMB_OK or IMB_ERROR. */
int imb_buf_printf(imb_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Marks n bytes consumed; an empty buffer starts over at offset 0. */
void imb_buf_consume(imb_buf_t *b, size_t n);

/* Frees the memory; the buffer may be used again. */
void imb_buf_free(imb_buf_t *b);


/* time and randomness */


/* CLOCK_MONOTONIC in nanoseconds: comparable across processes. */
uint64_t imb_now_ns(void);

/* xorshift64*; imb_srand(0) seeds from the clock and the pid. */
void imb_srand(uint64_t seed);
uint64_t imb_rand(void);
uint32_t imb_randn(uint32_t n);       /* 0 .. n-1 */
double imb_frand(void);               /* [0, 1) */


/* histograms: microseconds, about 3% resolution, up to ~19 hours */


#define IMB_HIST_BUCKETS  1280

typedef struct {
    uint64_t               count;
    uint64_t               sum_us;
    uint64_t               max_us;
    uint64_t               b[IMB_HIST_BUCKETS];
} imb_hist_t;


void imb_hist_add(imb_hist_t *h, uint64_t us);
void imb_hist_merge(imb_hist_t *dst, const imb_hist_t *src);

/* The value (µs) below which pct percent of the samples lie. */
uint64_t imb_hist_pct(const imb_hist_t *h, double pct);
uint64_t imb_hist_between(const imb_hist_t *h, uint64_t lo_us,
    uint64_t hi_us);


/* JSON scanning: spans of the server's text, nothing is copied */


typedef struct {
    const char            *p;          /* first byte of the value */
    const char            *e;          /* one past its last byte */
} imb_js_t;

typedef struct {
    const char            *p;
    const char            *e;
    int                    first;
} imb_js_iter_t;


/* The span of the value starting at or after p; IMB_OK or IMB_ERROR. */
int imb_js_value(const char *p, const char *e, imb_js_t *v);

/* Walks the members of an object or the elements of an array. */
int imb_js_iter(imb_js_t *v, imb_js_iter_t *it);

/* Next member (key set, quotes stripped) or element (key NULL); returns
 * 1 with val set, 0 at the end, IMB_ERROR on malformed input. */
int imb_js_next(imb_js_iter_t *it, imb_js_t *key, imb_js_t *val);

/* Member named name of object obj; returns IMB_OK or IMB_ERROR. */
int imb_js_get(imb_js_t *obj, const char *name, imb_js_t *val);

/* The integer value of v (0 for anything else). */
long long imb_js_int(imb_js_t *v);

/* Raw string contents (without the quotes, escapes kept) of v; returns
 * IMB_OK or IMB_ERROR when v is not a string. */
int imb_js_str(imb_js_t *v, imb_js_t *s);

/* 1 if the string span s equals text. */
int imb_js_eq(imb_js_t *s, const char *text);


/* the event loop */


typedef struct imb_io_s    imb_io_t;
typedef struct imb_loop_s  imb_loop_t;
typedef struct imb_conn_s  imb_conn_t;

struct imb_io_s {
    int                    fd;
    void                 (*handler)(imb_io_t *io, uint32_t events);
};


struct imb_loop_s {
    int                    ep;
    uint64_t               now;        /* imb_now_ns() of this turn */
    int                    stop;
    uint64_t               tick_ns;    /* 0: no tick */
    uint64_t               next_tick;
    void                 (*tick)(imb_loop_t *l, void *data);
    void                  *tick_data;
    imb_buf_t              rbuf;       /* shared read buffer */
    imb_conn_t           **dirty;      /* connections with output */
    size_t                 ndirty;
    size_t                 dirty_cap;
};


/* Creates the epoll instance; IMB_OK or IMB_ERROR. */
int imb_loop_init(imb_loop_t *l);

/* Watches a plain fd for input with io->handler. */
int imb_loop_add_io(imb_loop_t *l, imb_io_t *io);
void imb_loop_del_io(imb_loop_t *l, imb_io_t *io);

/* Runs one turn: waits at most max_ms (or until the next tick), handles
 * events, calls the tick when due, and flushes output. */
void imb_loop_once(imb_loop_t *l, int max_ms);

/* Runs turns until l->stop is set. */
void imb_loop_run(imb_loop_t *l);


/* connections */


#define IMB_CONN_IDLE        0
#define IMB_CONN_CONNECTING  1
#define IMB_CONN_HANDSHAKE   2         /* upgrade request sent */
#define IMB_CONN_OPEN        3         /* WebSocket open, or HTTP ready */
#define IMB_CONN_CLOSED      4

#define IMB_KIND_WS          0
#define IMB_KIND_HTTP        1

/* why a connection ended, for handler->closed() */
#define IMB_END_CONNECT      1         /* connect() failed: err is errno */
#define IMB_END_REFUSED      2         /* HTTP status instead of 101 */
#define IMB_END_PEER         3         /* EOF, reset or a Close frame */
#define IMB_END_LOCAL        4         /* imb_conn_close() */
#define IMB_END_PROTOCOL     5         /* malformed input from the server */


typedef struct {
    /* WebSocket open (101 seen), or HTTP connection established */
    void                 (*open)(imb_conn_t *c);
    /* a complete text or binary message; data is only valid during the
     * call, and the handler may close c */
    void                 (*message)(imb_conn_t *c, int opcode, char *data,
                                    size_t len);
    /* an HTTP response (or the body of a refused upgrade) */
    void                 (*response)(imb_conn_t *c, int status, char *body,
                                     size_t len);
    /* the connection is gone; err: errno, HTTP status or close code.
     * The handler may connect c again. */
    void                 (*closed)(imb_conn_t *c, int why, int err);
} imb_handler_t;


struct imb_conn_s {
    imb_io_t               io;         /* first: epoll hands it back */
    int                    state;
    int                    kind;
    unsigned               out_armed:1;
    unsigned               dirty:1;
    unsigned               busy:1;     /* inside the read handler */
    unsigned               http_close:1;
    unsigned               gen;        /* counts connects */
    imb_loop_t            *loop;
    const imb_handler_t   *h;
    void                  *data;
    imb_buf_t              in;
    imb_buf_t              out;
    imb_buf_t              frag;       /* fragmented WS message */
    int                    frag_op;
    uint64_t               t_connect;  /* ns of connect() */
    uint64_t               t_open;     /* ns of open */
    uint64_t               bytes_in;
    uint64_t               frames_in;
};


/* counters of connection failures, by cause, for reports */
typedef struct {
    uint64_t               connect_fail;
    uint64_t               refused;
    uint64_t               peer_closed;
    uint64_t               protocol;
    int                    last_errno;
    int                    last_status;
} imb_errs_t;


/*
 * Starts a non-blocking connect to dst from the loopback source address
 * number src_index (spread over 127.0.0.0/8; < 0 lets the kernel choose).
 * For IMB_KIND_WS, request is the path with query of the upgrade; for
 * HTTP it is NULL and requests are queued with imb_http_request().
 * Returns IMB_OK, or IMB_ERROR with errno set (closed() is not called).
 */
int imb_conn_connect(imb_conn_t *c, imb_loop_t *l, struct sockaddr_in *dst,
    long src_index, int kind, const char *request, const imb_handler_t *h,
    void *data);

/* Closes now, without a WebSocket Close; abort = 1 sends a reset.
 * handler->closed() is called with IMB_END_LOCAL. */
void imb_conn_close(imb_conn_t *c, int abort);

/* Queues one masked WebSocket frame; IMB_OK or IMB_ERROR. */
int imb_ws_send(imb_conn_t *c, int opcode, const void *data, size_t len);

/* The header bytes of an unmasked (server) frame of len payload bytes. */
size_t imb_ws_header_len(uint64_t len);

/* Queues an HTTP/1.1 request with a body (or NULL); headers is "" or
 * lines ending in \r\n.  Responses arrive in order via response(). */
int imb_http_request(imb_conn_t *c, const char *method, const char *path,
    const char *headers, const char *body, size_t len);

/* Writes queued output now (otherwise at the end of the loop turn). */
void imb_conn_flush(imb_conn_t *c);

/* Counts an ending for a report. */
void imb_errs_count(imb_errs_t *e, int why, int err);

/* Raises the soft fd limit to the hard limit; returns the new limit. */
long imb_raise_nofile(void);

/* Parses "host:port" or "port" into a sockaddr; IMB_OK or IMB_ERROR. */
int imb_addr(const char *text, struct sockaddr_in *sa);


/* REST set-up: synchronous from the caller's point of view, with up to
 * `parallel` keep-alive connections driven by a private loop */


typedef struct {
    struct sockaddr_in     addr;
    const char            *api;        /* "/im/api" */
    const char            *secret;
    const char            *admin;
    char                   admin_token[1024];
    int                    parallel;
    char                   err[256];
} imb_api_t;


/* Gets the admin token; IMB_OK or IMB_ERROR with api->err set. */
int imb_api_admin(imb_api_t *api);

/* Registers n users (names[i]); already registered ones are accepted. */
int imb_api_register(imb_api_t *api, char **names, size_t n);

/* Gets a token for each user on platform; tokens[i] is malloc'd. */
int imb_api_tokens(imb_api_t *api, char **names, size_t n, int platform,
    char **tokens);


/* POSTs n ready JSON bodies to api->api + path (up to api->parallel at a
 * time, in order when it is 1); IMB_OK when every answer is errCode 0. */
int imb_api_post(imb_api_t *api, const char *path, char **bodies, size_t n);


/* message codecs: how requests are written and server frames read */


#define IMB_FRAME_MSGS       64


typedef struct {
    imb_js_t               client_msg_id;  /* p NULL when absent */
    long long              seq;            /* JSON: -1 when absent or not
                                            * read; protobuf: 0 when absent */
} imb_frame_msg_t;


/* a server frame as a codec reads it; strings are spans of the frame */
typedef struct {
    long long              req_identifier;
    long long              err_code;
    int                    has_err_code;
    imb_js_t               msg_incr;       /* p NULL when absent */
    size_t                 nmsgs;          /* a push's messages, ... */
    size_t                 more;           /* ... and those past msgs */
    imb_frame_msg_t        msgs[IMB_FRAME_MSGS];
} imb_frame_t;


typedef struct {
    const char            *name;
    int                    opcode;     /* WebSocket opcode of requests */
    /* a 1003 SendMsg of a text message: to recv_id, or to the group
     * group_id when it is not NULL */
    int                  (*send_msg)(imb_buf_t *b, const char *incr,
                                     const char *send_id,
                                     const char *recv_id,
                                     const char *group_id,
                                     const char *client_msg_id,
                                     int content_type,
                                     const char *text);
    /* a request with a ready data object (JSON text); NULL in codecs
     * that cannot take JSON */
    int                  (*request)(imb_buf_t *b, int req_identifier,
                                    const char *incr, const char *data);
    /* the first request of a session, answered before the session counts
     * as open; NULL when the server needs none */
    int                  (*hello)(imb_buf_t *b, const char *incr);
    /* reads a server frame, a push's seqs too when seq is set (else
     * they may be left at -1); IMB_ERROR when it is not one of this
     * codec */
    int                  (*parse)(const char *p, size_t len, int seq,
                                  imb_frame_t *f);
} imb_codec_t;


extern const imb_codec_t  imb_codec_json;
extern const imb_codec_t  imb_codec_pb;


/* The next message slot of a push being read, NULL past IMB_FRAME_MSGS
 * (then counted in f->more). */
imb_frame_msg_t *imb_frame_msg(imb_frame_t *f);


/* Finds a codec by name; NULL if unknown. */
const imb_codec_t *imb_codec(const char *name);


/* Writes a JSON string literal of s (quotes included) into b. */
int imb_buf_json_str(imb_buf_t *b, const char *s);

/* The single-chat conversation ID of a and b ("si_<lower>_<higher>"). */
void imb_conv_single(const char *a, const char *b, char *out, size_t size);


/* An HS256 JSON Web Token (RFC 7519) signed with secret, for the claims
 * (a JSON object); returns IMB_OK, or IMB_ERROR when out is too small. */
int imb_jwt_hs256(const char *secret, const char *claims, char *out,
    size_t size);


/* the pids of ppid's children (at most max), from /proc; returns how many */
int imb_children(long ppid, long *pids, int max);


#endif /* _IMB_H_INCLUDED_ */
