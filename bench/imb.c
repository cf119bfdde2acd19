
/*
 * imb: the client side shared by bench/imbench and t/reliability/imrel.
 * See imb.h.  Frames going out are built by the module's own pure codec
 * (ngx_http_im_ws_frame_client()); frames coming in are unmasked server
 * frames, read here.
 */


#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "imb.h"
#include "ngx_http_im_ws_frame.h"


#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT  24
#endif

#define IMB_READ_CHUNK       65536
#define IMB_MAX_HEADER       65536
#define IMB_MAX_FRAME        (64 * 1024 * 1024)
#define IMB_WS_KEY           "dGhlIHNhbXBsZSBub25jZQ=="
#define IMB_WS_ACCEPT        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


static void imb_conn_handler(imb_io_t *io, uint32_t events);
static void imb_conn_connected(imb_conn_t *c);
static void imb_conn_read(imb_conn_t *c);
static void imb_conn_write(imb_conn_t *c);
static void imb_conn_end(imb_conn_t *c, int why, int err);
static void imb_conn_arm(imb_conn_t *c, int out);
static void imb_conn_mark(imb_conn_t *c);
static void imb_conn_input(imb_conn_t *c, imb_buf_t *in);
static int imb_http_input(imb_conn_t *c, imb_buf_t *in);
static int imb_ws_input(imb_conn_t *c, imb_buf_t *in);
static int imb_ws_control(imb_conn_t *c, int op, char *data, size_t len);
static int imb_http_parse(imb_buf_t *in, int *status, char **body,
    size_t *blen, int *close, imb_buf_t *tmp);
static void imb_src_addr(long idx, struct sockaddr_in *sa);


/* buffers */


int
imb_buf_reserve(imb_buf_t *b, size_t n)
{
    char    *p;
    size_t   cap;

    if (b->cap - b->len >= n) {
        return IMB_OK;
    }

    if (b->pos) {
        memmove(b->data, b->data + b->pos, b->len - b->pos);
        b->len -= b->pos;
        b->pos = 0;

        if (b->cap - b->len >= n) {
            return IMB_OK;
        }
    }

    cap = b->cap ? b->cap : 256;
    while (cap - b->len < n) {
        cap *= 2;
    }

    p = realloc(b->data, cap);
    if (p == NULL) {
        return IMB_ERROR;
    }

    b->data = p;
    b->cap = cap;

    return IMB_OK;
}


int
imb_buf_add(imb_buf_t *b, const void *p, size_t n)
{
    if (imb_buf_reserve(b, n + 1) != IMB_OK) {
        return IMB_ERROR;
    }

    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';

    return IMB_OK;
}


int
imb_buf_printf(imb_buf_t *b, const char *fmt, ...)
{
    int      n;
    va_list  ap;

    for ( ;; ) {
        if (imb_buf_reserve(b, 64) != IMB_OK) {
            return IMB_ERROR;
        }

        va_start(ap, fmt);
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);

        if (n < 0) {
            return IMB_ERROR;
        }

        if ((size_t) n < b->cap - b->len) {
            b->len += n;
            return IMB_OK;
        }

        if (imb_buf_reserve(b, n + 1) != IMB_OK) {
            return IMB_ERROR;
        }
    }
}


void
imb_buf_consume(imb_buf_t *b, size_t n)
{
    b->pos += n;

    if (b->pos >= b->len) {
        b->pos = 0;
        b->len = 0;
    }
}


void
imb_buf_free(imb_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->pos = b->len = b->cap = 0;
}


int
imb_buf_json_str(imb_buf_t *b, const char *s)
{
    char        esc[8];
    const char *p;

    if (imb_buf_add(b, "\"", 1) != IMB_OK) {
        return IMB_ERROR;
    }

    for (p = s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = *p;
            if (imb_buf_add(b, esc, 2) != IMB_OK) {
                return IMB_ERROR;
            }

        } else if ((unsigned char) *p < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", (unsigned char) *p);
            if (imb_buf_add(b, esc, 6) != IMB_OK) {
                return IMB_ERROR;
            }

        } else if (imb_buf_add(b, p, 1) != IMB_OK) {
            return IMB_ERROR;
        }
    }

    return imb_buf_add(b, "\"", 1);
}


void
imb_conv_single(const char *a, const char *b, char *out, size_t size)
{
    if (strcmp(a, b) > 0) {
        snprintf(out, size, "si_%s_%s", b, a);

    } else {
        snprintf(out, size, "si_%s_%s", a, b);
    }
}


/* time and randomness */


uint64_t
imb_now_ns(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}


static uint64_t  imb_rng = 88172645463325252ULL;


void
imb_srand(uint64_t seed)
{
    if (seed == 0) {
        seed = imb_now_ns() ^ ((uint64_t) getpid() << 32);
    }

    imb_rng = seed ? seed : 1;
    (void) imb_rand();
}


uint64_t
imb_rand(void)
{
    imb_rng ^= imb_rng >> 12;
    imb_rng ^= imb_rng << 25;
    imb_rng ^= imb_rng >> 27;

    return imb_rng * 2685821657736338717ULL;
}


uint32_t
imb_randn(uint32_t n)
{
    return n ? (uint32_t) ((imb_rand() >> 32) % n) : 0;
}


double
imb_frand(void)
{
    return (imb_rand() >> 11) * (1.0 / 9007199254740992.0);
}


/* histograms: 64 exact buckets below 64 µs, then 32 per power of two */


static int
imb_hist_bucket(uint64_t us)
{
    int  e, i;

    if (us < 64) {
        return (int) us;
    }

    e = 63 - __builtin_clzll(us);
    i = 64 + (e - 6) * 32 + (int) ((us >> (e - 5)) & 31);

    return i < IMB_HIST_BUCKETS ? i : IMB_HIST_BUCKETS - 1;
}


static uint64_t
imb_hist_value(int i)
{
    int  e, sub;

    if (i < 64) {
        return (uint64_t) i;
    }

    e = (i - 64) / 32 + 6;
    sub = (i - 64) % 32;

    /* the highest value of the bucket */
    return (((uint64_t) (32 + sub + 1)) << (e - 5)) - 1;
}


void
imb_hist_add(imb_hist_t *h, uint64_t us)
{
    h->count++;
    h->sum_us += us;

    if (us > h->max_us) {
        h->max_us = us;
    }

    h->b[imb_hist_bucket(us)]++;
}


void
imb_hist_merge(imb_hist_t *dst, const imb_hist_t *src)
{
    int  i;

    dst->count += src->count;
    dst->sum_us += src->sum_us;

    if (src->max_us > dst->max_us) {
        dst->max_us = src->max_us;
    }

    for (i = 0; i < IMB_HIST_BUCKETS; i++) {
        dst->b[i] += src->b[i];
    }
}


/* how many values fell in [lo_us, hi_us) (by their bucket's top) */
uint64_t
imb_hist_between(const imb_hist_t *h, uint64_t lo_us, uint64_t hi_us)
{
    int       i;
    uint64_t  n, v;

    n = 0;
    for (i = 0; i < IMB_HIST_BUCKETS; i++) {
        v = imb_hist_value(i);
        if (v >= lo_us && v < hi_us) {
            n += h->b[i];
        }
    }

    return n;
}


uint64_t
imb_hist_pct(const imb_hist_t *h, double pct)
{
    int       i;
    uint64_t  want, seen, v;

    if (h->count == 0) {
        return 0;
    }

    want = (uint64_t) (pct / 100.0 * (double) h->count + 0.999999);
    if (want == 0) {
        want = 1;
    }

    seen = 0;

    for (i = 0; i < IMB_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= want) {
            v = imb_hist_value(i);
            return v < h->max_us ? v : h->max_us;
        }
    }

    return h->max_us;
}


/* JSON scanning */


static const char *
imb_js_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) {
        p++;
    }

    return p;
}


static const char *
imb_js_skip_str(const char *p, const char *e)
{
    for (p++; p < e; p++) {
        if (*p == '\\') {
            p++;
            continue;
        }

        if (*p == '"') {
            return p + 1;
        }
    }

    return NULL;
}


int
imb_js_value(const char *p, const char *e, imb_js_t *v)
{
    int  depth;

    p = imb_js_ws(p, e);
    if (p >= e) {
        return IMB_ERROR;
    }

    v->p = p;

    switch (*p) {

    case '"':
        v->e = imb_js_skip_str(p, e);
        return v->e ? IMB_OK : IMB_ERROR;

    case '{':
    case '[':
        depth = 0;

        while (p < e) {
            if (*p == '"') {
                p = imb_js_skip_str(p, e);
                if (p == NULL) {
                    return IMB_ERROR;
                }
                continue;
            }

            if (*p == '{' || *p == '[') {
                depth++;

            } else if (*p == '}' || *p == ']') {
                if (--depth == 0) {
                    v->e = p + 1;
                    return IMB_OK;
                }
            }

            p++;
        }

        return IMB_ERROR;

    default:
        while (p < e && *p != ',' && *p != '}' && *p != ']' && *p != ' '
               && *p != '\n' && *p != '\r' && *p != '\t')
        {
            p++;
        }

        v->e = p;
        return v->e > v->p ? IMB_OK : IMB_ERROR;
    }
}


int
imb_js_iter(imb_js_t *v, imb_js_iter_t *it)
{
    if (v->e - v->p < 2 || (*v->p != '{' && *v->p != '[')) {
        return IMB_ERROR;
    }

    it->p = v->p + 1;
    it->e = v->e - 1;
    it->first = 1;

    return IMB_OK;
}


int
imb_js_next(imb_js_iter_t *it, imb_js_t *key, imb_js_t *val)
{
    const char  *p;

    p = imb_js_ws(it->p, it->e);

    if (p >= it->e) {
        return 0;
    }

    if (!it->first) {
        if (*p != ',') {
            return IMB_ERROR;
        }
        p++;
    }

    it->first = 0;
    p = imb_js_ws(p, it->e);

    if (key) {
        if (p >= it->e || *p != '"') {
            return IMB_ERROR;
        }

        key->p = p + 1;
        p = imb_js_skip_str(p, it->e);
        if (p == NULL) {
            return IMB_ERROR;
        }

        key->e = p - 1;
        p = imb_js_ws(p, it->e);

        if (p >= it->e || *p != ':') {
            return IMB_ERROR;
        }

        p++;
    }

    if (imb_js_value(p, it->e, val) != IMB_OK) {
        return IMB_ERROR;
    }

    it->p = val->e;

    return 1;
}


int
imb_js_get(imb_js_t *obj, const char *name, imb_js_t *val)
{
    int            rc;
    imb_js_t       key;
    imb_js_iter_t  it;

    if (obj->p >= obj->e || *obj->p != '{'
        || imb_js_iter(obj, &it) != IMB_OK)
    {
        return IMB_ERROR;
    }

    while ((rc = imb_js_next(&it, &key, val)) == 1) {
        if (imb_js_eq(&key, name)) {
            return IMB_OK;
        }
    }

    return IMB_ERROR;
}


long long
imb_js_int(imb_js_t *v)
{
    long long    n;
    int          neg;
    const char  *p;

    p = v->p;
    neg = 0;
    n = 0;

    if (p < v->e && *p == '-') {
        neg = 1;
        p++;
    }

    while (p < v->e && *p >= '0' && *p <= '9') {
        n = n * 10 + (*p++ - '0');
    }

    return neg ? -n : n;
}


int
imb_js_str(imb_js_t *v, imb_js_t *s)
{
    if (v->e - v->p < 2 || *v->p != '"') {
        return IMB_ERROR;
    }

    s->p = v->p + 1;
    s->e = v->e - 1;

    return IMB_OK;
}


int
imb_js_eq(imb_js_t *s, const char *text)
{
    size_t  n;

    n = strlen(text);

    return (size_t) (s->e - s->p) == n && memcmp(s->p, text, n) == 0;
}


/* the event loop */


int
imb_loop_init(imb_loop_t *l)
{
    memset(l, 0, sizeof(*l));

    l->ep = epoll_create1(EPOLL_CLOEXEC);
    if (l->ep < 0) {
        return IMB_ERROR;
    }

    l->now = imb_now_ns();

    return IMB_OK;
}


int
imb_loop_add_io(imb_loop_t *l, imb_io_t *io)
{
    struct epoll_event  ev;

    ev.events = EPOLLIN;
    ev.data.ptr = io;

    return epoll_ctl(l->ep, EPOLL_CTL_ADD, io->fd, &ev) == 0
           ? IMB_OK : IMB_ERROR;
}


void
imb_loop_del_io(imb_loop_t *l, imb_io_t *io)
{
    (void) epoll_ctl(l->ep, EPOLL_CTL_DEL, io->fd, NULL);
}


void
imb_loop_once(imb_loop_t *l, int max_ms)
{
    int                 n, i, timeout;
    size_t              k;
    uint64_t            wait;
    imb_io_t           *io;
    imb_conn_t         *c;
    struct epoll_event  ev[512];

    l->now = imb_now_ns();
    timeout = max_ms;

    if (l->tick_ns) {
        if (l->next_tick <= l->now) {
            timeout = 0;

        } else {
            wait = (l->next_tick - l->now + 999999) / 1000000;
            if ((int) wait < timeout || timeout < 0) {
                timeout = (int) wait;
            }
        }
    }

    n = epoll_wait(l->ep, ev, 512, timeout);
    l->now = imb_now_ns();

    for (i = 0; i < n; i++) {
        io = ev[i].data.ptr;
        io->handler(io, ev[i].events);
    }

    if (l->tick_ns && l->now >= l->next_tick) {
        l->next_tick += l->tick_ns;
        if (l->next_tick <= l->now) {
            l->next_tick = l->now + l->tick_ns;
        }

        l->tick(l, l->tick_data);
    }

    /* output queued during this turn leaves in one write per socket */
    for (k = 0; k < l->ndirty; k++) {
        c = l->dirty[k];

        if (c->dirty) {
            c->dirty = 0;
            imb_conn_write(c);
        }
    }

    l->ndirty = 0;
}


void
imb_loop_run(imb_loop_t *l)
{
    while (!l->stop) {
        imb_loop_once(l, 100);
    }
}


/* connections */


static void
imb_src_addr(long idx, struct sockaddr_in *sa)
{
    long      rest;
    uint32_t  o2, o3, o4;

    /* 127.10.1.1 upwards, skipping .0 and .255 in the last two octets */
    o2 = 10 + (uint32_t) ((idx / (254 * 254)) % 240);
    rest = idx % (254 * 254);
    o3 = 1 + (uint32_t) (rest / 254);
    o4 = 1 + (uint32_t) (rest % 254);

    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_addr.s_addr = htonl((127u << 24) | (o2 << 16) | (o3 << 8) | o4);
}


int
imb_conn_connect(imb_conn_t *c, imb_loop_t *l, struct sockaddr_in *dst,
    long src_index, int kind, const char *request, const imb_handler_t *h,
    void *data)
{
    int                 fd, one, rc;
    struct sockaddr_in  src;
    struct epoll_event  ev;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return IMB_ERROR;
    }

    one = 1;
    (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    if (src_index >= 0) {
        (void) setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one,
                          sizeof(one));
        imb_src_addr(src_index, &src);

        if (bind(fd, (struct sockaddr *) &src, sizeof(src)) != 0) {
            goto failed;
        }
    }

    rc = connect(fd, (struct sockaddr *) dst, sizeof(*dst));
    if (rc != 0 && errno != EINPROGRESS) {
        goto failed;
    }

    c->io.fd = fd;
    c->io.handler = imb_conn_handler;
    c->gen++;
    c->state = IMB_CONN_CONNECTING;
    c->kind = kind;
    c->out_armed = 1;
    c->dirty = 0;
    c->busy = 0;
    c->http_close = 0;
    c->loop = l;
    c->h = h;
    c->data = data;
    c->in.pos = c->in.len = 0;
    c->out.pos = c->out.len = 0;
    c->frag.pos = c->frag.len = 0;
    c->frag_op = 0;
    c->t_connect = l->now;
    c->t_open = 0;
    c->bytes_in = 0;
    c->frames_in = 0;

    if (kind == IMB_KIND_WS
        && imb_buf_printf(&c->out,
                          "GET %s HTTP/1.1\r\n"
                          "Host: %s:%d\r\n"
                          "Upgrade: websocket\r\n"
                          "Connection: Upgrade\r\n"
                          "Sec-WebSocket-Key: " IMB_WS_KEY "\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n",
                          request, inet_ntoa(dst->sin_addr),
                          ntohs(dst->sin_port))
           != IMB_OK)
    {
        goto failed;
    }

    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.ptr = &c->io;

    if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        goto failed;
    }

    return IMB_OK;

failed:

    rc = errno;
    close(fd);
    c->state = IMB_CONN_CLOSED;
    errno = rc;

    return IMB_ERROR;
}


static void
imb_conn_handler(imb_io_t *io, uint32_t events)
{
    imb_conn_t  *c = (imb_conn_t *) io;

    if (c->state == IMB_CONN_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            imb_conn_connected(c);
        }

        if (c->state == IMB_CONN_CONNECTING
            || c->state == IMB_CONN_CLOSED)
        {
            return;
        }
    }

    if (c->state == IMB_CONN_CLOSED || c->state == IMB_CONN_IDLE) {
        return;
    }

    if (events & EPOLLOUT) {
        imb_conn_write(c);
    }

    if (c->state != IMB_CONN_CLOSED
        && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
    {
        imb_conn_read(c);
    }
}


static void
imb_conn_connected(imb_conn_t *c)
{
    int        err;
    socklen_t  len;

    err = 0;
    len = sizeof(err);

    if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
        err = errno;
    }

    if (err) {
        imb_conn_end(c, IMB_END_CONNECT, err);
        return;
    }

    if (c->kind == IMB_KIND_WS) {
        c->state = IMB_CONN_HANDSHAKE;
        imb_conn_write(c);
        return;
    }

    c->state = IMB_CONN_OPEN;
    c->t_open = c->loop->now;

    if (c->h->open) {
        c->h->open(c);
    }

    if (c->state == IMB_CONN_OPEN) {
        imb_conn_write(c);
    }
}


static void
imb_conn_arm(imb_conn_t *c, int out)
{
    struct epoll_event  ev;

    if ((unsigned) out == c->out_armed) {
        return;
    }

    ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
    ev.data.ptr = &c->io;

    if (epoll_ctl(c->loop->ep, EPOLL_CTL_MOD, c->io.fd, &ev) == 0) {
        c->out_armed = out;
    }
}


static void
imb_conn_write(imb_conn_t *c)
{
    ssize_t  n;

    if (c->state != IMB_CONN_OPEN && c->state != IMB_CONN_HANDSHAKE) {
        return;
    }

    while (c->out.pos < c->out.len) {
        n = write(c->io.fd, c->out.data + c->out.pos,
                  c->out.len - c->out.pos);

        if (n > 0) {
            c->out.pos += n;
            continue;
        }

        if (n < 0 && errno == EINTR) {
            continue;
        }

        if (n < 0 && errno == EAGAIN) {
            imb_conn_arm(c, 1);
            return;
        }

        imb_conn_end(c, IMB_END_PEER, n < 0 ? errno : 0);
        return;
    }

    c->out.pos = c->out.len = 0;

    if (c->out.cap > 1024 * 1024) {
        imb_buf_free(&c->out);
    }

    imb_conn_arm(c, 0);
}


static void
imb_conn_read(imb_conn_t *c)
{
    int         i, eof, err;
    ssize_t     n;
    unsigned    gen;
    imb_buf_t  *in;

    /* without a partial frame pending, read into the loop's buffer */
    in = c->in.len > c->in.pos ? &c->in : &c->loop->rbuf;

    if (in != &c->in) {
        in->pos = in->len = 0;
    }

    eof = 0;
    err = 0;

    for (i = 0; i < 4; i++) {
        if (imb_buf_reserve(in, IMB_READ_CHUNK) != IMB_OK) {
            imb_conn_end(c, IMB_END_LOCAL, ENOMEM);
            return;
        }

        n = read(c->io.fd, in->data + in->len, in->cap - in->len);

        if (n > 0) {
            in->len += n;
            c->bytes_in += n;

            if ((size_t) n < IMB_READ_CHUNK) {
                break;
            }

            continue;
        }

        if (n == 0) {
            eof = 1;
            break;
        }

        if (errno == EINTR) {
            continue;
        }

        if (errno != EAGAIN) {
            eof = 1;
            err = errno;
        }

        break;
    }

    gen = c->gen;
    imb_conn_input(c, in);

    if (c->gen != gen) {
        /* closed, and connected again from a callback */
        if (in == &c->loop->rbuf) {
            in->pos = in->len = 0;
        }

        return;
    }

    if (c->state != IMB_CONN_CLOSED && in == &c->loop->rbuf) {
        /* keep a partial frame in the connection's own buffer */
        if (in->pos < in->len
            && imb_buf_add(&c->in, in->data + in->pos, in->len - in->pos)
               != IMB_OK)
        {
            imb_conn_end(c, IMB_END_LOCAL, ENOMEM);
        }

        in->pos = in->len = 0;
    }

    if (c->state == IMB_CONN_CLOSED) {
        if (in == &c->loop->rbuf) {
            in->pos = in->len = 0;
        }

        imb_buf_free(&c->in);
        return;
    }

    if (c->in.pos == c->in.len) {
        /* an idle connection keeps no input buffer */
        imb_buf_free(&c->in);
    }

    if (eof) {
        imb_conn_end(c, c->state == IMB_CONN_HANDSHAKE ? IMB_END_PROTOCOL
                                                       : IMB_END_PEER,
                     err);
    }
}


static void
imb_conn_input(imb_conn_t *c, imb_buf_t *in)
{
    int       rc;
    unsigned  gen;

    gen = c->gen;
    c->busy = 1;

    for ( ;; ) {
        if (c->state == IMB_CONN_OPEN && c->kind == IMB_KIND_WS) {
            rc = imb_ws_input(c, in);

        } else if (c->state == IMB_CONN_OPEN
                   || c->state == IMB_CONN_HANDSHAKE)
        {
            rc = imb_http_input(c, in);

        } else {
            break;
        }

        if (rc != IMB_OK || c->gen != gen) {
            break;
        }
    }

    if (c->gen == gen) {
        c->busy = 0;
    }
}


/* one HTTP response: IMB_OK if one was handled, else IMB_AGAIN/ERROR */
static int
imb_http_input(imb_conn_t *c, imb_buf_t *in)
{
    int        status, close, rc;
    char      *body;
    size_t     blen;
    unsigned   gen;
    imb_buf_t  tmp;

    memset(&tmp, 0, sizeof(tmp));
    gen = c->gen;

    rc = imb_http_parse(in, &status, &body, &blen, &close, &tmp);

    if (rc == IMB_AGAIN) {
        imb_buf_free(&tmp);
        return IMB_AGAIN;
    }

    if (rc != IMB_OK) {
        imb_buf_free(&tmp);
        imb_conn_end(c, IMB_END_PROTOCOL, 0);
        return IMB_ERROR;
    }

    if (c->state == IMB_CONN_HANDSHAKE) {
        if (status != 101) {
            if (c->h->response) {
                c->h->response(c, status, body, blen);
            }

            imb_buf_free(&tmp);

            if (c->gen == gen && c->state != IMB_CONN_CLOSED) {
                imb_conn_end(c, IMB_END_REFUSED, status);
            }

            return IMB_ERROR;
        }

        /* frames start right after the header */
        imb_buf_consume(in, body - (in->data + in->pos));
        imb_buf_free(&tmp);

        c->state = IMB_CONN_OPEN;
        c->t_open = c->loop->now;

        if (c->h->open) {
            c->h->open(c);
        }

        return c->gen == gen && c->state == IMB_CONN_OPEN ? IMB_OK
                                                          : IMB_ERROR;
    }

    if (c->h->response) {
        c->h->response(c, status, body, blen);
    }

    imb_buf_free(&tmp);

    if (c->gen != gen || c->state != IMB_CONN_OPEN) {
        return IMB_ERROR;
    }

    if (close) {
        imb_conn_end(c, IMB_END_PEER, 0);
        return IMB_ERROR;
    }

    return IMB_OK;
}


/*
 * Parses one complete response at the start of in and consumes it.  body
 * points into in (or tmp, when chunked) and stays valid until the next
 * change of in.  Returns IMB_OK, IMB_AGAIN or IMB_ERROR.
 */
static int
imb_http_parse(imb_buf_t *in, int *status, char **body, size_t *blen,
    int *close, imb_buf_t *tmp)
{
    char    *start, *end, *hdr_end, *line, *eol, *p;
    long     clen;
    size_t   n, total;
    int      chunked;

    start = in->data + in->pos;
    end = in->data + in->len;

    if (end - start < 12) {
        return IMB_AGAIN;
    }

    hdr_end = memmem(start, end - start, "\r\n\r\n", 4);
    if (hdr_end == NULL) {
        return end - start > IMB_MAX_HEADER ? IMB_ERROR : IMB_AGAIN;
    }

    if (strncmp(start, "HTTP/1.", 7) != 0) {
        return IMB_ERROR;
    }

    *status = atoi(start + 9);
    clen = -1;
    chunked = 0;
    *close = 0;

    for (line = memchr(start, '\n', hdr_end - start) + 1;
         line < hdr_end;
         line = eol + 1)
    {
        eol = memchr(line, '\n', hdr_end + 2 - line);
        if (eol == NULL) {
            break;
        }

        if (strncasecmp(line, "Content-Length:", 15) == 0) {
            clen = atol(line + 15);

        } else if (strncasecmp(line, "Transfer-Encoding:", 18) == 0
                   && memmem(line, eol - line, "chunked", 7))
        {
            chunked = 1;

        } else if (strncasecmp(line, "Connection:", 11) == 0
                   && memmem(line, eol - line, "close", 5))
        {
            *close = 1;
        }
    }

    p = hdr_end + 4;

    if (*status == 101) {
        *body = p;
        *blen = 0;
        return IMB_OK;
    }

    if (chunked) {
        for ( ;; ) {
            eol = memmem(p, end - p, "\r\n", 2);
            if (eol == NULL) {
                return IMB_AGAIN;
            }

            n = strtoul(p, NULL, 16);
            p = eol + 2;

            if ((size_t) (end - p) < n + 2) {
                return IMB_AGAIN;
            }

            if (n == 0) {
                p += 2;
                break;
            }

            if (imb_buf_add(tmp, p, n) != IMB_OK) {
                return IMB_ERROR;
            }

            p += n + 2;
        }

        if (imb_buf_add(tmp, "", 0) != IMB_OK) {
            return IMB_ERROR;
        }

        total = p - start;
        *body = tmp->data;
        *blen = tmp->len;
        imb_buf_consume(in, total);
        return IMB_OK;
    }

    if (clen < 0) {
        clen = 0;
    }

    if (end - p < clen) {
        return IMB_AGAIN;
    }

    /* the body stays in place: consume after the caller used it; the
     * caller only appends to in after returning, so copy to tmp */
    if (imb_buf_add(tmp, p, clen) != IMB_OK) {
        return IMB_ERROR;
    }

    imb_buf_consume(in, p + clen - start);
    *body = tmp->data;
    *blen = clen;

    return IMB_OK;
}


/* one WebSocket frame: IMB_OK if one was handled, else AGAIN/ERROR */
static int
imb_ws_input(imb_conn_t *c, imb_buf_t *in)
{
    int            fin, op;
    size_t         avail, hl;
    unsigned       gen;
    uint64_t       plen;
    unsigned char *p;

    p = (unsigned char *) in->data + in->pos;
    avail = in->len - in->pos;
    gen = c->gen;

    if (avail < 2) {
        return IMB_AGAIN;
    }

    fin = p[0] & 0x80;
    op = p[0] & 0x0f;
    plen = p[1] & 0x7f;
    hl = 2;

    if (p[1] & 0x80) {
        /* servers must not mask */
        imb_conn_end(c, IMB_END_PROTOCOL, 0);
        return IMB_ERROR;
    }

    if (plen == 126) {
        if (avail < 4) {
            return IMB_AGAIN;
        }

        plen = ((uint64_t) p[2] << 8) | p[3];
        hl = 4;

    } else if (plen == 127) {
        if (avail < 10) {
            return IMB_AGAIN;
        }

        plen = ((uint64_t) p[2] << 56) | ((uint64_t) p[3] << 48)
               | ((uint64_t) p[4] << 40) | ((uint64_t) p[5] << 32)
               | ((uint64_t) p[6] << 24) | ((uint64_t) p[7] << 16)
               | ((uint64_t) p[8] << 8) | p[9];
        hl = 10;
    }

    if (plen > IMB_MAX_FRAME) {
        imb_conn_end(c, IMB_END_PROTOCOL, 0);
        return IMB_ERROR;
    }

    if (avail < hl + plen) {
        if (imb_buf_reserve(in, hl + plen - avail) != IMB_OK) {
            imb_conn_end(c, IMB_END_LOCAL, ENOMEM);
            return IMB_ERROR;
        }

        return IMB_AGAIN;
    }

    c->frames_in++;

    if (op & 0x8) {
        if (imb_ws_control(c, op, (char *) p + hl, plen) != IMB_OK) {
            return IMB_ERROR;
        }

    } else if (op == NGX_HTTP_IM_WS_OP_CONT) {
        if (c->frag_op == 0
            || imb_buf_add(&c->frag, p + hl, plen) != IMB_OK)
        {
            imb_conn_end(c, IMB_END_PROTOCOL, 0);
            return IMB_ERROR;
        }

        if (fin) {
            c->h->message(c, c->frag_op, c->frag.data, c->frag.len);
            c->frag_op = 0;
            c->frag.pos = c->frag.len = 0;
        }

    } else if (!fin) {
        c->frag_op = op;
        c->frag.pos = c->frag.len = 0;

        if (imb_buf_add(&c->frag, p + hl, plen) != IMB_OK) {
            imb_conn_end(c, IMB_END_LOCAL, ENOMEM);
            return IMB_ERROR;
        }

    } else {
        c->h->message(c, op, (char *) p + hl, plen);
    }

    if (c->gen != gen || c->state != IMB_CONN_OPEN) {
        return IMB_ERROR;
    }

    in->pos += hl + plen;

    if (in->pos == in->len) {
        in->pos = in->len = 0;
        return IMB_AGAIN;
    }

    return IMB_OK;
}


static int
imb_ws_control(imb_conn_t *c, int op, char *data, size_t len)
{
    int  code;

    switch (op) {

    case NGX_HTTP_IM_WS_OP_PING:
        return imb_ws_send(c, NGX_HTTP_IM_WS_OP_PONG, data, len);

    case NGX_HTTP_IM_WS_OP_CLOSE:
        code = len >= 2 ? ((unsigned char) data[0] << 8)
                          | (unsigned char) data[1]
                        : 1005;

        /* echo the close, then go */
        (void) imb_ws_send(c, NGX_HTTP_IM_WS_OP_CLOSE, data,
                           len >= 2 ? 2 : 0);
        imb_conn_flush(c);

        if (c->state != IMB_CONN_CLOSED) {
            imb_conn_end(c, IMB_END_PEER, code);
        }

        return IMB_ERROR;

    default:
        return IMB_OK;
    }
}


int
imb_ws_send(imb_conn_t *c, int opcode, const void *data, size_t len)
{
    uint64_t       r;
    unsigned char  mask[4];

    if (c->state != IMB_CONN_OPEN) {
        return IMB_ERROR;
    }

    if (imb_buf_reserve(&c->out, len + NGX_HTTP_IM_WS_HEADER_MAX)
        != IMB_OK)
    {
        return IMB_ERROR;
    }

    r = imb_rand();
    memcpy(mask, &r, 4);

    c->out.len += ngx_http_im_ws_frame_client(
                      (unsigned char *) c->out.data + c->out.len, 1, opcode,
                      mask, data, len);

    imb_conn_mark(c);

    return IMB_OK;
}


size_t
imb_ws_header_len(uint64_t len)
{
    return len < 126 ? 2 : len < 65536 ? 4 : 10;
}


int
imb_http_request(imb_conn_t *c, const char *method, const char *path,
    const char *headers, const char *body, size_t len)
{
    if (c->state == IMB_CONN_CLOSED || c->state == IMB_CONN_IDLE) {
        return IMB_ERROR;
    }

    if (imb_buf_printf(&c->out,
                       "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s"
                       "Content-Length: %zu\r\n\r\n",
                       method, path, headers, len)
        != IMB_OK
        || (len && imb_buf_add(&c->out, body, len) != IMB_OK))
    {
        return IMB_ERROR;
    }

    imb_conn_mark(c);

    return IMB_OK;
}


static void
imb_conn_mark(imb_conn_t *c)
{
    imb_loop_t   *l;
    imb_conn_t  **d;
    size_t        cap;

    if (c->dirty) {
        return;
    }

    l = c->loop;

    if (l->ndirty == l->dirty_cap) {
        cap = l->dirty_cap ? 2 * l->dirty_cap : 1024;
        d = realloc(l->dirty, cap * sizeof(imb_conn_t *));
        if (d == NULL) {
            imb_conn_flush(c);
            return;
        }

        l->dirty = d;
        l->dirty_cap = cap;
    }

    l->dirty[l->ndirty++] = c;
    c->dirty = 1;
}


void
imb_conn_flush(imb_conn_t *c)
{
    c->dirty = 0;
    imb_conn_write(c);
}


void
imb_conn_close(imb_conn_t *c, int abort)
{
    struct linger  lg;

    if (c->state == IMB_CONN_CLOSED || c->state == IMB_CONN_IDLE) {
        return;
    }

    if (abort) {
        lg.l_onoff = 1;
        lg.l_linger = 0;
        (void) setsockopt(c->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }

    imb_conn_end(c, IMB_END_LOCAL, 0);
}


static void
imb_conn_end(imb_conn_t *c, int why, int err)
{
    if (c->state == IMB_CONN_CLOSED) {
        return;
    }

    (void) epoll_ctl(c->loop->ep, EPOLL_CTL_DEL, c->io.fd, NULL);
    close(c->io.fd);

    c->io.fd = -1;
    c->state = IMB_CONN_CLOSED;
    c->dirty = 0;

    imb_buf_free(&c->out);
    imb_buf_free(&c->frag);

    if (!c->busy) {
        imb_buf_free(&c->in);
    }

    if (c->h && c->h->closed) {
        c->h->closed(c, why, err);
    }
}


void
imb_errs_count(imb_errs_t *e, int why, int err)
{
    switch (why) {

    case IMB_END_CONNECT:
        e->connect_fail++;
        e->last_errno = err;
        break;

    case IMB_END_REFUSED:
        e->refused++;
        e->last_status = err;
        break;

    case IMB_END_PROTOCOL:
        e->protocol++;
        break;

    case IMB_END_PEER:
        e->peer_closed++;
        break;

    default:
        break;
    }
}


long
imb_raise_nofile(void)
{
    struct rlimit  rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        return -1;
    }

    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void) setrlimit(RLIMIT_NOFILE, &rl);
        (void) getrlimit(RLIMIT_NOFILE, &rl);
    }

    return (long) rl.rlim_cur;
}


int
imb_addr(const char *text, struct sockaddr_in *sa)
{
    char        host[64];
    const char *colon;
    size_t      n;

    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;

    colon = strrchr(text, ':');

    if (colon == NULL) {
        strcpy(host, "127.0.0.1");
        colon = text - 1;

    } else {
        n = colon - text;
        if (n >= sizeof(host)) {
            return IMB_ERROR;
        }

        memcpy(host, text, n);
        host[n] = '\0';
    }

    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        return IMB_ERROR;
    }

    sa->sin_port = htons((uint16_t) atoi(colon + 1));

    return sa->sin_port ? IMB_OK : IMB_ERROR;
}


/* REST set-up */


typedef struct imb_batch_s  imb_batch_t;

typedef struct {
    imb_conn_t             c;
    imb_batch_t           *batch;
    size_t                 item;       /* in flight, or (size_t) -1 */
    int                    retries;
} imb_batch_conn_t;


struct imb_batch_s {
    imb_api_t             *api;
    imb_loop_t             loop;
    size_t                 n;
    size_t                 next;
    size_t                 done;
    int                    failed;
    const char            *path;
    /* the JSON body of item i */
    int                  (*body)(imb_batch_t *b, size_t i, imb_buf_t *out);
    /* the response of item i; IMB_OK or IMB_ERROR (stops the batch) */
    int                  (*result)(imb_batch_t *b, size_t i, imb_js_t *root);
    void                  *ctx;
    imb_batch_conn_t      *conns;
    int                    nconns;
};


static void imb_batch_open(imb_conn_t *c);
static void imb_batch_response(imb_conn_t *c, int status, char *body,
    size_t len);
static void imb_batch_closed(imb_conn_t *c, int why, int err);
static void imb_batch_issue(imb_batch_conn_t *bc);


static const imb_handler_t  imb_batch_handler = {
    imb_batch_open, NULL, imb_batch_response, imb_batch_closed
};


static int
imb_batch_run(imb_batch_t *b)
{
    int               i;
    uint64_t          deadline;
    imb_batch_conn_t *bc;

    if (imb_loop_init(&b->loop) != IMB_OK) {
        snprintf(b->api->err, sizeof(b->api->err), "epoll: %s",
                 strerror(errno));
        return IMB_ERROR;
    }

    b->nconns = b->api->parallel > 0 ? b->api->parallel : 16;
    if ((size_t) b->nconns > b->n) {
        b->nconns = (int) b->n;
    }

    b->conns = calloc(b->nconns ? b->nconns : 1, sizeof(imb_batch_conn_t));
    if (b->conns == NULL) {
        close(b->loop.ep);
        return IMB_ERROR;
    }

    for (i = 0; i < b->nconns; i++) {
        bc = &b->conns[i];
        bc->batch = b;
        bc->item = (size_t) -1;

        if (imb_conn_connect(&bc->c, &b->loop, &b->api->addr, -1,
                             IMB_KIND_HTTP, NULL, &imb_batch_handler, bc)
            != IMB_OK)
        {
            snprintf(b->api->err, sizeof(b->api->err), "connect: %s",
                     strerror(errno));
            b->failed = 1;
            break;
        }
    }

    deadline = imb_now_ns() + 120 * 1000000000ULL;

    while (!b->failed && b->done < b->n && b->loop.now < deadline) {
        imb_loop_once(&b->loop, 100);
    }

    if (!b->failed && b->done < b->n) {
        snprintf(b->api->err, sizeof(b->api->err),
                 "REST calls timed out (%zu of %zu done)", b->done, b->n);
        b->failed = 1;
    }

    for (i = 0; i < b->nconns; i++) {
        imb_conn_close(&b->conns[i].c, 0);
        imb_buf_free(&b->conns[i].c.in);
    }

    free(b->conns);
    free(b->loop.dirty);
    close(b->loop.ep);

    return b->failed ? IMB_ERROR : IMB_OK;
}


static void
imb_batch_open(imb_conn_t *c)
{
    imb_batch_issue(c->data);
}


static void
imb_batch_issue(imb_batch_conn_t *bc)
{
    char          hdr[1200];
    imb_buf_t     body;
    imb_batch_t  *b;

    b = bc->batch;

    if (bc->item == (size_t) -1) {
        if (b->next >= b->n) {
            return;
        }

        bc->item = b->next++;
    }

    memset(&body, 0, sizeof(body));

    if (b->body(b, bc->item, &body) != IMB_OK) {
        imb_buf_free(&body);
        b->failed = 1;
        return;
    }

    snprintf(hdr, sizeof(hdr),
             "Content-Type: application/json\r\n"
             "operationID: imb-%zu\r\n%s%s%s",
             bc->item, b->api->admin_token[0] ? "token: " : "",
             b->api->admin_token, b->api->admin_token[0] ? "\r\n" : "");

    if (imb_http_request(&bc->c, "POST", b->path, hdr, body.data, body.len)
        != IMB_OK)
    {
        b->failed = 1;
    }

    imb_buf_free(&body);
}


static void
imb_batch_response(imb_conn_t *c, int status, char *body, size_t len)
{
    imb_js_t           root;
    imb_batch_t       *b;
    imb_batch_conn_t  *bc;

    bc = c->data;
    b = bc->batch;

    if (status != 200 || imb_js_value(body, body + len, &root) != IMB_OK) {
        snprintf(b->api->err, sizeof(b->api->err),
                 "%s: HTTP %d: %.*s", b->path, status,
                 (int) (len > 200 ? 200 : len), body);
        b->failed = 1;
        return;
    }

    if (b->result(b, bc->item, &root) != IMB_OK) {
        b->failed = 1;
        return;
    }

    b->done++;
    bc->item = (size_t) -1;
    bc->retries = 0;

    imb_batch_issue(bc);
}


static void
imb_batch_closed(imb_conn_t *c, int why, int err)
{
    imb_batch_t       *b;
    imb_batch_conn_t  *bc;

    bc = c->data;
    b = bc->batch;

    if (b->failed || (bc->item == (size_t) -1 && b->next >= b->n)) {
        return;
    }

    /* a dropped keep-alive connection: reconnect, repeat the item */
    if (++bc->retries > 5
        || imb_conn_connect(&bc->c, &b->loop, &b->api->addr, -1,
                            IMB_KIND_HTTP, NULL, &imb_batch_handler, bc)
           != IMB_OK)
    {
        snprintf(b->api->err, sizeof(b->api->err),
                 "%s: connection lost (%d, %s)", b->path, why,
                 strerror(err));
        b->failed = 1;
    }
}


/* the errCode of a response; sets api->err unless it is 0 */
static long long
imb_api_errcode(imb_batch_t *b, imb_js_t *root)
{
    long long  code;
    imb_js_t   v, msg;

    if (imb_js_get(root, "errCode", &v) != IMB_OK) {
        snprintf(b->api->err, sizeof(b->api->err), "%s: no errCode",
                 b->path);
        return -1;
    }

    code = imb_js_int(&v);

    if (code != 0) {
        if (imb_js_get(root, "errMsg", &v) != IMB_OK
            || imb_js_str(&v, &msg) != IMB_OK)
        {
            msg.p = msg.e = "";
        }

        snprintf(b->api->err, sizeof(b->api->err), "%s: errCode %lld: %.*s",
                 b->path, code, (int) (msg.e - msg.p), msg.p);
    }

    return code;
}


static int
imb_api_admin_body(imb_batch_t *b, size_t i, imb_buf_t *out)
{
    (void) i;

    if (imb_buf_add(out, "{\"secret\":", 10) != IMB_OK
        || imb_buf_json_str(out, b->api->secret) != IMB_OK
        || imb_buf_add(out, ",\"userID\":", 10) != IMB_OK
        || imb_buf_json_str(out, b->api->admin) != IMB_OK
        || imb_buf_add(out, "}", 1) != IMB_OK)
    {
        return IMB_ERROR;
    }

    return IMB_OK;
}


static int
imb_api_token_result(imb_batch_t *b, size_t i, imb_js_t *root)
{
    char      **out;
    imb_js_t    data, v, s;

    if (imb_api_errcode(b, root) != 0) {
        return IMB_ERROR;
    }

    if (imb_js_get(root, "data", &data) != IMB_OK
        || imb_js_get(&data, "token", &v) != IMB_OK
        || imb_js_str(&v, &s) != IMB_OK)
    {
        snprintf(b->api->err, sizeof(b->api->err), "%s: no data.token",
                 b->path);
        return IMB_ERROR;
    }

    out = b->ctx;
    out[i] = strndup(s.p, s.e - s.p);

    return out[i] ? IMB_OK : IMB_ERROR;
}


int
imb_api_admin(imb_api_t *api)
{
    char         *token;
    char          path[256];
    imb_batch_t   b;

    memset(&b, 0, sizeof(b));
    token = NULL;

    snprintf(path, sizeof(path), "%s/auth/get_admin_token", api->api);
    api->admin_token[0] = '\0';

    b.api = api;
    b.n = 1;
    b.path = path;
    b.body = imb_api_admin_body;
    b.result = imb_api_token_result;
    b.ctx = &token;

    if (imb_batch_run(&b) != IMB_OK) {
        free(token);
        return IMB_ERROR;
    }

    snprintf(api->admin_token, sizeof(api->admin_token), "%s", token);
    free(token);

    return IMB_OK;
}


typedef struct {
    char                 **names;
    size_t                 n;
    int                    platform;
} imb_api_users_t;


static int
imb_api_register_body(imb_batch_t *b, size_t i, imb_buf_t *out)
{
    size_t            k, last;
    imb_api_users_t  *u;

    u = b->ctx;
    last = (i + 1) * 1000 < u->n ? (i + 1) * 1000 : u->n;

    if (imb_buf_add(out, "{\"users\":[", 10) != IMB_OK) {
        return IMB_ERROR;
    }

    for (k = i * 1000; k < last; k++) {
        if (imb_buf_add(out, k > i * 1000 ? ",{\"userID\":" : "{\"userID\":",
                        k > i * 1000 ? 11 : 10)
            != IMB_OK
            || imb_buf_json_str(out, u->names[k]) != IMB_OK
            || imb_buf_add(out, ",\"nickname\":", 12) != IMB_OK
            || imb_buf_json_str(out, u->names[k]) != IMB_OK
            || imb_buf_add(out, "}", 1) != IMB_OK)
        {
            return IMB_ERROR;
        }
    }

    return imb_buf_add(out, "]}", 2);
}


static int
imb_api_register_result(imb_batch_t *b, size_t i, imb_js_t *root)
{
    (void) i;

    return imb_api_errcode(b, root) == 0 ? IMB_OK : IMB_ERROR;
}


int
imb_api_register(imb_api_t *api, char **names, size_t n)
{
    char              path[256];
    imb_batch_t       b;
    imb_api_users_t   u;

    memset(&b, 0, sizeof(b));
    snprintf(path, sizeof(path), "%s/user/user_register", api->api);

    u.names = names;
    u.n = n;

    b.api = api;
    b.n = (n + 999) / 1000;
    b.path = path;
    b.body = imb_api_register_body;
    b.result = imb_api_register_result;
    b.ctx = &u;

    return b.n ? imb_batch_run(&b) : IMB_OK;
}


typedef struct {
    imb_api_users_t        u;
    char                 **tokens;
} imb_api_tokens_t;


static int
imb_api_user_token_body(imb_batch_t *b, size_t i, imb_buf_t *out)
{
    imb_api_tokens_t  *t;

    t = b->ctx;

    if (imb_buf_add(out, "{\"userID\":", 10) != IMB_OK
        || imb_buf_json_str(out, t->u.names[i]) != IMB_OK
        || imb_buf_printf(out, ",\"platformID\":%d}", t->u.platform)
           != IMB_OK)
    {
        return IMB_ERROR;
    }

    return IMB_OK;
}


static int
imb_api_user_token_result(imb_batch_t *b, size_t i, imb_js_t *root)
{
    int                rc;
    imb_api_tokens_t  *t;

    t = b->ctx;
    b->ctx = t->tokens;
    rc = imb_api_token_result(b, i, root);
    b->ctx = t;

    return rc;
}


int
imb_api_tokens(imb_api_t *api, char **names, size_t n, int platform,
    char **tokens)
{
    char               path[256];
    imb_batch_t        b;
    imb_api_tokens_t   t;

    memset(&b, 0, sizeof(b));
    snprintf(path, sizeof(path), "%s/auth/get_user_token", api->api);

    t.u.names = names;
    t.u.n = n;
    t.u.platform = platform;
    t.tokens = tokens;

    b.api = api;
    b.n = n;
    b.path = path;
    b.body = imb_api_user_token_body;
    b.result = imb_api_user_token_result;
    b.ctx = &t;

    return n ? imb_batch_run(&b) : IMB_OK;
}


static int
imb_api_post_body(imb_batch_t *b, size_t i, imb_buf_t *out)
{
    char  **bodies;

    bodies = b->ctx;

    return imb_buf_add(out, bodies[i], strlen(bodies[i]));
}


int
imb_api_post(imb_api_t *api, const char *path, char **bodies, size_t n)
{
    char         full[512];
    imb_batch_t  b;

    memset(&b, 0, sizeof(b));
    snprintf(full, sizeof(full), "%s%s", api->api, path);

    b.api = api;
    b.n = n;
    b.path = full;
    b.body = imb_api_post_body;
    b.result = imb_api_register_result;
    b.ctx = bodies;

    return n ? imb_batch_run(&b) : IMB_OK;
}


/* the JSON codec */


static void imb_json_msg(imb_js_t *msg, int seq, imb_frame_msg_t *m);


static int
imb_json_send_msg(imb_buf_t *b, const char *incr, const char *send_id,
    const char *recv_id, const char *group_id, const char *client_msg_id,
    int content_type, const char *text)
{
    if (group_id) {
        return imb_buf_printf(b,
                   "{\"reqIdentifier\":1003,\"operationID\":\"%s\","
                   "\"msgIncr\":\"%s\",\"data\":{\"sendID\":\"%s\","
                   "\"recvID\":\"\",\"groupID\":\"%s\",\"clientMsgID\":\"%s\","
                   "\"sessionType\":3,\"msgFrom\":100,\"contentType\":%d,"
                   "\"content\":\"{\\\"content\\\":\\\"%s\\\"}\"}}",
                   incr, incr, send_id, group_id, client_msg_id,
                   content_type, text);
    }

    return imb_buf_printf(b,
               "{\"reqIdentifier\":1003,\"operationID\":\"%s\","
               "\"msgIncr\":\"%s\",\"data\":{\"sendID\":\"%s\","
               "\"recvID\":\"%s\",\"clientMsgID\":\"%s\","
               "\"sessionType\":1,\"msgFrom\":100,\"contentType\":%d,"
               "\"content\":\"{\\\"content\\\":\\\"%s\\\"}\"}}",
               incr, incr, send_id, recv_id, client_msg_id, content_type,
               text);
}


static int
imb_json_request(imb_buf_t *b, int req_identifier, const char *incr,
    const char *data)
{
    return imb_buf_printf(b,
               "{\"reqIdentifier\":%d,\"operationID\":\"%s\","
               "\"msgIncr\":\"%s\",\"data\":%s}",
               req_identifier, incr, incr, data);
}


static int
imb_json_parse(const char *p, size_t len, int seq, imb_frame_t *f)
{
    imb_js_t          root, v, d, msgs, conv, arr, msg;
    imb_js_iter_t     ci, mi;
    imb_frame_msg_t  *m;

    memset(f, 0, sizeof(*f) - sizeof(f->msgs));

    if (imb_js_value(p, p + len, &root) != IMB_OK
        || imb_js_get(&root, "reqIdentifier", &v) != IMB_OK)
    {
        return IMB_ERROR;
    }

    f->req_identifier = imb_js_int(&v);

    if (imb_js_get(&root, "errCode", &v) == IMB_OK) {
        f->has_err_code = 1;
        f->err_code = imb_js_int(&v);
    }

    if (imb_js_get(&root, "msgIncr", &v) == IMB_OK) {
        (void) imb_js_str(&v, &f->msg_incr);
    }

    if (f->req_identifier != 2001) {
        return IMB_OK;
    }

    if (imb_js_get(&root, "data", &d) != IMB_OK
        || imb_js_get(&d, "msgs", &msgs) != IMB_OK
        || imb_js_iter(&msgs, &ci) != IMB_OK)
    {
        return IMB_ERROR;
    }

    while (imb_js_next(&ci, &conv, &arr) == 1) {
        if (imb_js_iter(&arr, &mi) != IMB_OK) {
            return IMB_ERROR;
        }

        while (imb_js_next(&mi, NULL, &msg) == 1) {
            m = imb_frame_msg(f);
            if (m == NULL) {
                continue;
            }

            imb_json_msg(&msg, seq, m);
        }
    }

    return IMB_OK;
}


/* clientMsgID, and seq when asked, of a MsgData: one pass over its
 * members, which ends once it has them (clientMsgID comes early) */
static void
imb_json_msg(imb_js_t *msg, int seq, imb_frame_msg_t *m)
{
    imb_js_t       key, v;
    imb_js_iter_t  it;

    m->seq = -1;

    if (msg->p >= msg->e || *msg->p != '{' || imb_js_iter(msg, &it) != IMB_OK)
    {
        return;
    }

    while (imb_js_next(&it, &key, &v) == 1) {
        if (m->client_msg_id.p == NULL && imb_js_eq(&key, "clientMsgID")) {
            (void) imb_js_str(&v, &m->client_msg_id);

        } else if (seq && imb_js_eq(&key, "seq")) {
            m->seq = imb_js_int(&v);
        }

        if (m->client_msg_id.p && (!seq || m->seq >= 0)) {
            return;
        }
    }
}


imb_frame_msg_t *
imb_frame_msg(imb_frame_t *f)
{
    imb_frame_msg_t  *m;

    if (f->nmsgs == IMB_FRAME_MSGS) {
        f->more++;
        return NULL;
    }

    m = &f->msgs[f->nmsgs++];
    memset(m, 0, sizeof(*m));

    return m;
}


const imb_codec_t  imb_codec_json = {
    "json",
    NGX_HTTP_IM_WS_OP_TEXT,
    imb_json_send_msg,
    imb_json_request,
    NULL,
    imb_json_parse
};


const imb_codec_t *
imb_codec(const char *name)
{
    if (strcmp(name, "json") == 0) {
        return &imb_codec_json;
    }

    if (strcmp(name, "pb") == 0) {
        return &imb_codec_pb;
    }

    return NULL;
}


/* JSON Web Tokens */


/* base64url without padding of n bytes; returns the length, or 0 when
 * it does not fit with its NUL */
static size_t
imb_b64url(const unsigned char *p, size_t n, char *out, size_t size)
{
    size_t       i, o;
    uint32_t     v;
    static char  abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                         "0123456789-_";

    if ((n + 2) / 3 * 4 + 1 > size) {
        return 0;
    }

    for (i = 0, o = 0; i < n; i += 3) {
        v = (uint32_t) p[i] << 16;
        v |= i + 1 < n ? (uint32_t) p[i + 1] << 8 : 0;
        v |= i + 2 < n ? p[i + 2] : 0;

        out[o++] = abc[v >> 18];
        out[o++] = abc[(v >> 12) & 63];
        if (i + 1 < n) {
            out[o++] = abc[(v >> 6) & 63];
        }
        if (i + 2 < n) {
            out[o++] = abc[v & 63];
        }
    }

    out[o] = '\0';

    return o;
}


int
imb_jwt_hs256(const char *secret, const char *claims, char *out,
    size_t size)
{
    size_t         n, m;
    unsigned int   dlen;
    unsigned char  digest[EVP_MAX_MD_SIZE];
    static char    head[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

    n = imb_b64url((unsigned char *) head, sizeof(head) - 1, out, size);
    if (n == 0 || n + 1 >= size) {
        return IMB_ERROR;
    }

    out[n++] = '.';
    m = imb_b64url((const unsigned char *) claims, strlen(claims), out + n,
                   size - n);
    if (m == 0 || n + m + 1 >= size) {
        return IMB_ERROR;
    }

    n += m;

    if (HMAC(EVP_sha256(), secret, (int) strlen(secret),
             (unsigned char *) out, n, digest, &dlen)
        == NULL)
    {
        return IMB_ERROR;
    }

    out[n++] = '.';

    return imb_b64url(digest, dlen, out + n, size - n) ? IMB_OK : IMB_ERROR;
}


int
imb_children(long ppid, long *pids, int max)
{
    int             n;
    long            parent;
    char            path[300], line[512], *p;
    FILE           *f;
    DIR            *d;
    struct dirent  *de;

    n = 0;
    d = ppid > 0 ? opendir("/proc") : NULL;

    while (d && (de = readdir(d)) != NULL && n < max) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9') {
            continue;
        }

        snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
        f = fopen(path, "r");
        if (f == NULL) {
            continue;
        }

        parent = 0;
        if (fgets(line, sizeof(line), f) && (p = strrchr(line, ')'))) {
            (void) sscanf(p + 2, "%*c %ld", &parent);
        }
        fclose(f);

        if (parent == ppid) {
            pids[n++] = atol(de->d_name);
        }
    }

    if (d) {
        closedir(d);
    }

    return n;
}
