
/*
 * Unit tests of ngx_http_im_slot.c: hash slots, the CLUSTER SLOTS map,
 * MOVED/ASK redirects, error kinds and pub/sub pushes.
 *
 * Replies are RESP text, parsed by hiredis's own reader one byte at a
 * time, so the functions see the very trees hiredis builds.  The "real"
 * texts were captured from redis-server 7.0.15 running a two-node
 * cluster on ports 7999 and 7998.
 */


#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "ngx_http_im_slot.h"

#include "check.h"


#define R(s)  reply_of(s, sizeof(s) - 1)


typedef struct {
    char    *data;
    size_t   len;
    size_t   cap;
} resp_t;


static ngx_http_im_slot_map_t  map;


/* the reply of RESP text fed one byte at a time; NULL if incomplete */

static redisReply *
reply_of(const char *text, size_t len)
{
    void         *reply;
    size_t        i;
    redisReader  *rd;

    rd = redisReaderCreate();
    if (rd == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }

    reply = NULL;

    for (i = 0; i < len && reply == NULL; i++) {
        if (redisReaderFeed(rd, text + i, 1) != REDIS_OK
            || redisReaderGetReply(rd, &reply) != REDIS_OK)
        {
            printf("  bad test RESP at byte %zu\n", i);
            break;
        }
    }

    /* a reply before the last byte means the test text is wrong */
    check_named(i == len, "reply_of", "reply ends before the text");

    redisReaderFree(rd);

    return reply;
}


static void
resp_add(resp_t *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->data = check_realloc(b->data, b->cap);
    }

    memcpy(b->data + b->len, s, n);
    b->len += n;
}


static void
resp_fmt(resp_t *b, const char *fmt, ...)
{
    int      n;
    char     tmp[64];
    va_list  args;

    va_start(args, fmt);
    n = vsnprintf(tmp, sizeof(tmp), fmt, args);
    va_end(args);

    resp_add(b, tmp, (size_t) n);
}


static void
resp_bulk(resp_t *b, const char *s, size_t n)
{
    resp_fmt(b, "$%zu\r\n", n);
    resp_add(b, s, n);
    resp_add(b, "\r\n", 2);
}


/* one range [start, end, [host, port, id]] of CLUSTER SLOTS */

static void
resp_range(resp_t *b, int start, int end, const char *host, size_t host_len,
    int port)
{
    resp_fmt(b, "*3\r\n:%d\r\n:%d\r\n*3\r\n", start, end);
    resp_bulk(b, host, host_len);
    resp_fmt(b, ":%d\r\n", port);
    resp_bulk(b, "0123456789abcdef0123456789abcdef01234567", 40);
}


/* the result of ngx_http_im_slot_map_parse() on RESP text */

static int
parse_text(const char *text, size_t len, char *err, size_t errlen)
{
    int          rc;
    redisReply  *reply;

    reply = reply_of(text, len);
    rc = ngx_http_im_slot_map_parse(&map, reply, err, errlen);

    if (reply) {
        freeReplyObject(reply);
    }

    return rc;
}


static void
test_spec(void)
{
    /* the spec's CRC16 check value: 0x31C3 is below 16384 */
    CHECK(ngx_http_im_slot("123456789", 9) == 0x31c3);
    CHECK(ngx_http_im_slot("123456789", 9) == 12739);

    CHECK(ngx_http_im_slot("{user1000}.following", 20)
          == ngx_http_im_slot("{user1000}.followers", 20));
    CHECK(ngx_http_im_slot("{user1000}.following", 20)
          == ngx_http_im_slot("user1000", 8));

    /* "{}" is no tag, and the search does not go on to "{bar}" */
    CHECK(ngx_http_im_slot("foo{}{bar}", 10) == 8363);
    CHECK(ngx_http_im_slot("foo{}{bar}", 10) != ngx_http_im_slot("bar", 3));

    CHECK(ngx_http_im_slot("foo{{bar}}zap", 13)
          == ngx_http_im_slot("{bar", 4));
    CHECK(ngx_http_im_slot("foo{bar}{zap}", 13)
          == ngx_http_im_slot("bar", 3));

    /* our keys keep a conversation's keys in one slot */
    CHECK(ngx_http_im_slot("im:{c:si_a_b}:seq", 17)
          == ngx_http_im_slot("c:si_a_b", 8));
    CHECK(ngx_http_im_slot("im:{c:si_alice_bob}:cmid:x", 26)
          == ngx_http_im_slot("im:{c:si_alice_bob}:done", 24));
}


static void
test_known(void)
{
    size_t  i;
    char    key[320];

    /* each expected slot is what "CLUSTER KEYSLOT" of redis 7.0.15 said */
    static const struct {
        const char  *key;
        size_t       len;
        unsigned     slot;
    } cases[] = {
        { "123456789", 9, 12739 },
        { "foo", 3, 12182 },
        { "bar", 3, 5061 },
        { "hello", 5, 866 },
        { "{user1000}.following", 20, 3443 },
        { "{user1000}.followers", 20, 3443 },
        { "foo{}{bar}", 10, 8363 },
        { "foo{{bar}}zap", 13, 4015 },
        { "{bar", 4, 4015 },
        { "foo{bar}{zap}", 13, 5061 },
        { "im:{c:si_a_b}:seq", 17, 2617 },
        { "c:si_a_b", 8, 2617 },
        { "im:{c:si_alice_bob}:cmid:x", 26, 7019 },
        { "im:u:alice", 10, 2314 },
        { "im:user:bob", 11, 2858 },
        { "im:persist", 10, 8600 },
        { "im:push", 7, 740 },
        { "", 0, 0 },
        { "a", 1, 15495 },
        { "{", 1, 4092 },
        { "}", 1, 12090 },
        { "{}", 2, 15257 },
        { "{a", 2, 10276 },
        { "a}", 2, 5921 },
        { "}{a}", 4, 15495 },
        { "x{a}{b}", 7, 15495 },
        { "user:1000", 9, 1649 },
        { "\xc3\xa9", 2, 10180 },
        { "session:{sn_sys_bob}:q", 22, 5725 },
        { "\\{\\}x", 5, 7033 },
        { "\\", 1, 7033 },
        { "\xff\x00\x80", 3, 7915 },
    };

    for (i = 0; i < CHECK_N(cases); i++) {
        CHECK_CASE(ngx_http_im_slot(cases[i].key, cases[i].len)
                   == cases[i].slot, cases[i].key);
    }

    /* 300 'x': 11216; "{" 300 'z' "}tail": 10508 */
    memset(key, 'x', 300);
    CHECK(ngx_http_im_slot(key, 300) == 11216);

    key[0] = '{';
    memset(key + 1, 'z', 300);
    memcpy(key + 301, "}tail", 5);
    CHECK(ngx_http_im_slot(key, 306) == 10508);

    /* only len bytes count: the '}' past the end closes no tag */
    CHECK(ngx_http_im_slot("foo{bar}", 5) == ngx_http_im_slot("foo{b", 5));
    CHECK(ngx_http_im_slot("foo{bar}", 8) == 5061);
    CHECK(ngx_http_im_slot("a\0{b}", 5) == ngx_http_im_slot("b", 1));
}


static void
test_map_real(void)
{
    char         err[128];
    redisReply  *reply;

    static const char  two[] =
        "*2\r\n"
        "*3\r\n:0\r\n:9999\r\n*4\r\n$9\r\n127.0.0.1\r\n:7999\r\n"
        "$40\r\nd40aba4dfa6be116ef1573c0b33c23d83a78d8ec\r\n*0\r\n"
        "*3\r\n:10000\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:7998\r\n"
        "$40\r\n83090f53475742fa018a86fab357d5e3963c4e87\r\n*0\r\n";

    /* a lone node does not know its own IP: "" */
    static const char  lone[] =
        "*2\r\n"
        "*3\r\n:0\r\n:5000\r\n*4\r\n$0\r\n\r\n:7999\r\n"
        "$40\r\nd40aba4dfa6be116ef1573c0b33c23d83a78d8ec\r\n*0\r\n"
        "*3\r\n:9000\r\n:9000\r\n*4\r\n$0\r\n\r\n:7999\r\n"
        "$40\r\nd40aba4dfa6be116ef1573c0b33c23d83a78d8ec\r\n*0\r\n";

    /* redis 3 style, no ID; replicas after the master; an IPv6 master */
    static const char  replicas[] =
        "*2\r\n"
        "*5\r\n:0\r\n:8000\r\n*2\r\n$8\r\n10.0.0.1\r\n:7000\r\n"
        "*2\r\n$8\r\n10.0.0.2\r\n:7003\r\n"
        "*2\r\n$8\r\n10.0.0.3\r\n:7004\r\n"
        "*3\r\n:8001\r\n:16383\r\n*3\r\n$7\r\nfe80::1\r\n:7001\r\n"
        "$3\r\nabc\r\n";

    /* redis 7: a nil host is an unknown endpoint, like "" */
    static const char  nil_host[] =
        "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$-1\r\n:7000\r\n$1\r\nx\r\n";

    CHECK(parse_text(two, sizeof(two) - 1, err, sizeof(err)) == 0);
    CHECK(map.nnodes == 2);
    CHECK(strcmp(map.nodes[0].host, "127.0.0.1") == 0);
    CHECK(map.nodes[0].port == 7999);
    CHECK(strcmp(map.nodes[1].host, "127.0.0.1") == 0);
    CHECK(map.nodes[1].port == 7998);
    CHECK(map.owner[0] == 0 && map.owner[9999] == 0);
    CHECK(map.owner[10000] == 1 && map.owner[16383] == 1);
    CHECK(map.owner[ngx_http_im_slot("foo", 3)] == 1);
    CHECK(map.owner[ngx_http_im_slot("bar", 3)] == 0);

    /* a parse starts afresh: nothing is left of the map before */
    CHECK(parse_text(lone, sizeof(lone) - 1, err, sizeof(err)) == 0);
    CHECK(map.nnodes == 1);
    CHECK(map.nodes[0].host[0] == '\0' && map.nodes[0].port == 7999);
    CHECK(map.owner[0] == 0 && map.owner[5000] == 0);
    CHECK(map.owner[5001] == NGX_HTTP_IM_SLOT_NONE);
    CHECK(map.owner[8999] == NGX_HTTP_IM_SLOT_NONE);
    CHECK(map.owner[9000] == 0);
    CHECK(map.owner[9001] == NGX_HTTP_IM_SLOT_NONE);
    CHECK(map.owner[16383] == NGX_HTTP_IM_SLOT_NONE);

    CHECK(parse_text(replicas, sizeof(replicas) - 1, err, sizeof(err)) == 0);
    CHECK(map.nnodes == 2);
    CHECK(strcmp(map.nodes[0].host, "10.0.0.1") == 0);
    CHECK(map.nodes[0].port == 7000);
    CHECK(strcmp(map.nodes[1].host, "fe80::1") == 0);
    CHECK(map.nodes[1].port == 7001);
    CHECK(map.owner[8000] == 0 && map.owner[8001] == 1);

    CHECK(parse_text(nil_host, sizeof(nil_host) - 1, err, sizeof(err))
          == 0);
    CHECK(map.nnodes == 1 && map.nodes[0].host[0] == '\0');
    CHECK(map.owner[0] == 0 && map.owner[16383] == 0);

    /* no slots assigned yet */
    reply = R("*0\r\n");
    CHECK(ngx_http_im_slot_map_parse(&map, reply, err, sizeof(err)) == 0);
    CHECK(map.nnodes == 0 && map.owner[42] == NGX_HTTP_IM_SLOT_NONE);
    freeReplyObject(reply);
}


static void
test_map_bad(void)
{
    size_t  i;
    char    err[128];

    static const char  nul_host[] =
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$3\r\nh\0x\r\n:7000\r\n";
    static const char  port_max[] =
        "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\nh\r\n:65535\r\n";
    static const char  slot_max[] =
        "*1\r\n*3\r\n:16383\r\n:16383\r\n*2\r\n$1\r\nh\r\n:1\r\n";
    static const char  truncated[] = "*2\r\n*3\r\n:0\r\n:5\r\n";
    static const char  empty_range[] = "*1\r\n*0\r\n";

    static const struct {
        const char  *name;
        const char  *text;
    } cases[] = {
        { "status", "+OK\r\n" },
        { "error", "-ERR This instance has cluster support disabled\r\n" },
        { "nil", "$-1\r\n" },
        { "integer", ":1\r\n" },
        { "range not array", "*1\r\n:0\r\n" },
        { "range of 2", "*1\r\n*2\r\n:0\r\n:5\r\n" },
        { "range empty", "*1\r\n*0\r\n" },
        { "start string",
          "*1\r\n*3\r\n$1\r\n0\r\n:5\r\n*2\r\n$1\r\nh\r\n:7000\r\n" },
        { "end nil",
          "*1\r\n*3\r\n:0\r\n$-1\r\n*2\r\n$1\r\nh\r\n:7000\r\n" },
        { "end 16384",
          "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:7000\r\n" },
        { "end huge",
          "*1\r\n*3\r\n:0\r\n:4294967296\r\n*2\r\n$1\r\nh\r\n:7000\r\n" },
        { "start > end",
          "*1\r\n*3\r\n:6\r\n:5\r\n*2\r\n$1\r\nh\r\n:7000\r\n" },
        { "start < 0",
          "*1\r\n*3\r\n:-1\r\n:5\r\n*2\r\n$1\r\nh\r\n:7000\r\n" },
        { "master string", "*1\r\n*3\r\n:0\r\n:5\r\n$6\r\nh:7000\r\n" },
        { "master of 1", "*1\r\n*3\r\n:0\r\n:5\r\n*1\r\n$1\r\nh\r\n" },
        { "master empty", "*1\r\n*3\r\n:0\r\n:5\r\n*0\r\n" },
        { "host integer", "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n:1\r\n:7000\r\n" },
        { "host status", "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n+h\r\n:7000\r\n" },
        { "host array", "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n*0\r\n:7000\r\n" },
        { "port string",
          "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\nh\r\n$4\r\n7000\r\n" },
        { "port nil", "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\nh\r\n$-1\r\n" },
        { "port 0", "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\nh\r\n:0\r\n" },
        { "port -1", "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\nh\r\n:-1\r\n" },
        { "port 65536",
          "*1\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\nh\r\n:65536\r\n" },
        { "second range bad",
          "*2\r\n*3\r\n:0\r\n:5\r\n*2\r\n$1\r\nh\r\n:7000\r\n:7\r\n" },
    };

    for (i = 0; i < CHECK_N(cases); i++) {
        err[0] = '\0';
        CHECK_CASE(parse_text(cases[i].text, strlen(cases[i].text), err,
                              sizeof(err))
                   == -1 && err[0] != '\0', cases[i].name);
    }

    /* "h\0x" would compare equal to "h" once copied */
    CHECK(parse_text(nul_host, sizeof(nul_host) - 1, err, sizeof(err))
          == -1);

    /* the limits themselves pass, so the table tests what it says */
    CHECK(parse_text(port_max, sizeof(port_max) - 1, err, sizeof(err))
          == 0);
    CHECK(map.nnodes == 1 && map.nodes[0].port == 65535);
    CHECK(parse_text(slot_max, sizeof(slot_max) - 1, err, sizeof(err))
          == 0);
    CHECK(map.owner[16383] == 0 && map.owner[16382] == NGX_HTTP_IM_SLOT_NONE);

    /* no reply at all (truncated input), and no room for a message */
    CHECK(parse_text(truncated, sizeof(truncated) - 1, err, sizeof(err))
          == -1);
    CHECK(ngx_http_im_slot_map_parse(&map, NULL, NULL, 0) == -1);
    CHECK(parse_text(empty_range, sizeof(empty_range) - 1, err, 4) == -1
          && strlen(err) == 3);
}


static void
test_map_limits(void)
{
    int       i;
    char      err[128], host[300];
    size_t    len;
    resp_t    b;

    memset(&b, 0, sizeof(resp_t));
    memset(host, 'h', sizeof(host));

    /* host lengths around the 255 bytes that fit, one byte at a time */
    for (len = 250; len <= 260; len++) {
        b.len = 0;
        resp_add(&b, "*1\r\n", 4);
        resp_range(&b, 0, 16383, host, len, 7000);

        CHECK_CASE(parse_text(b.data, b.len, err, sizeof(err))
                   == (len < NGX_HTTP_IM_SLOT_HOST_LEN ? 0 : -1),
                   len < NGX_HTTP_IM_SLOT_HOST_LEN ? "fits" : "too long");

        if (len < NGX_HTTP_IM_SLOT_HOST_LEN) {
            CHECK(strlen(map.nodes[0].host) == len);
        }
    }

    /* 64 masters fit, the 65th does not; each has 100 slots */
    for (i = 64; i <= 65; i++) {
        b.len = 0;
        resp_fmt(&b, "*%d\r\n", i);

        for (len = 0; len < (size_t) i; len++) {
            resp_range(&b, (int) len * 100, (int) len * 100 + 99,
                       host, 255, 7000 + (int) len);
        }

        CHECK(parse_text(b.data, b.len, err, sizeof(err))
              == (i == 64 ? 0 : -1));
    }

    /* the same master in 200 ranges, some with another spelling */
    b.len = 0;
    resp_add(&b, "*200\r\n", 6);

    for (i = 0; i < 200; i++) {
        resp_range(&b, i * 80, i * 80 + 79, i % 3 ? "::1" : "::01",
                   i % 3 ? 3 : 4, 6379 + i % 2);
    }

    CHECK(parse_text(b.data, b.len, err, sizeof(err)) == 0);
    CHECK(map.nnodes == 4);
    CHECK(strcmp(map.nodes[0].host, "::01") == 0 && map.nodes[0].port == 6379);
    CHECK(strcmp(map.nodes[3].host, "::01") == 0 && map.nodes[3].port == 6380);
    CHECK(map.owner[0] == 0 && map.owner[80] == 1 && map.owner[160] == 2);
    CHECK(map.owner[240] == 3 && map.owner[320] == 2 && map.owner[400] == 1);
    CHECK(map.owner[15920] == 1 && map.owner[15999] == 1);
    CHECK(map.owner[16000] == NGX_HTTP_IM_SLOT_NONE);

    free(b.data);
}


static void
test_redirect(void)
{
    int       port, ask;
    char      host[64];
    size_t    i;
    unsigned  slot;

    static const struct {
        const char  *text;
        int          rc;
        unsigned     slot;
        const char  *host;
        int          port;
        int          ask;
    } cases[] = {
        { "MOVED 3999 127.0.0.1:6381", 0, 3999, "127.0.0.1", 6381, 0 },
        { "ASK 3999 127.0.0.1:6381", 0, 3999, "127.0.0.1", 6381, 1 },
        { "MOVED 12182 127.0.0.1:7998", 0, 12182, "127.0.0.1", 7998, 0 },
        { "MOVED 1 ::1:7000", 0, 1, "::1", 7000, 0 },
        { "MOVED 0 :7000", 0, 0, "", 7000, 0 },
        { "ASK 16383 redis-3.example.com:65535", 0, 16383,
          "redis-3.example.com", 65535, 1 },
        { "MOVED 007 h:01", 0, 7, "h", 1, 0 },
        { "MOVED 16384 h:1", -1, 0, NULL, 0, 0 },
        { "MOVED 99999999999999999999999 h:1", -1, 0, NULL, 0, 0 },
        { "MOVED -1 h:1", -1, 0, NULL, 0, 0 },
        { "MOVED x h:1", -1, 0, NULL, 0, 0 },
        { "MOVED  1 h:1", -1, 0, NULL, 0, 0 },
        { "MOVED 1  h:1", -1, 0, NULL, 0, 0 },
        { "MOVED 1 h:0", -1, 0, NULL, 0, 0 },
        { "MOVED 1 h:65536", -1, 0, NULL, 0, 0 },
        { "MOVED 1 h:99999999999999999999", -1, 0, NULL, 0, 0 },
        { "MOVED 1 h:", -1, 0, NULL, 0, 0 },
        { "MOVED 1 h:-1", -1, 0, NULL, 0, 0 },
        { "MOVED 1 h:7000x", -1, 0, NULL, 0, 0 },
        { "MOVED 1 h:7000 ", -1, 0, NULL, 0, 0 },
        { "MOVED 1 a b:7000", -1, 0, NULL, 0, 0 },
        { "MOVED 1 h", -1, 0, NULL, 0, 0 },
        { "MOVED 1 ", -1, 0, NULL, 0, 0 },
        { "MOVED 1", -1, 0, NULL, 0, 0 },
        { "MOVED ", -1, 0, NULL, 0, 0 },
        { "MOVED", -1, 0, NULL, 0, 0 },
        { "moved 1 h:1", -1, 0, NULL, 0, 0 },
        { "MOVEDX 1 h:1", -1, 0, NULL, 0, 0 },
        { "ASKING 1 h:1", -1, 0, NULL, 0, 0 },
        { "TRYAGAIN Multiple keys request during rehashing of slot", -1, 0,
          NULL, 0, 0 },
        { "CLUSTERDOWN Hash slot not served", -1, 0, NULL, 0, 0 },
        { "", -1, 0, NULL, 0, 0 },
    };

    for (i = 0; i < CHECK_N(cases); i++) {
        slot = 77777;
        port = -5;
        ask = -5;
        strcpy(host, "untouched");

        if (!CHECK_CASE(ngx_http_im_slot_redirect(cases[i].text,
                                                  strlen(cases[i].text),
                                                  &slot, host, sizeof(host),
                                                  &port, &ask)
                        == cases[i].rc, cases[i].text))
        {
            continue;
        }

        if (cases[i].rc == 0) {
            CHECK_CASE(slot == cases[i].slot && port == cases[i].port
                       && ask == cases[i].ask
                       && strcmp(host, cases[i].host) == 0, cases[i].text);

        } else {
            CHECK_CASE(slot == 77777 && port == -5 && ask == -5
                       && strcmp(host, "untouched") == 0, cases[i].text);
        }
    }

    /* len, not a '\0', ends the text */
    CHECK(ngx_http_im_slot_redirect("MOVED 3999 h:63810", 17, &slot, host,
                                    sizeof(host), &port, &ask) == 0);
    CHECK(port == 6381);
    CHECK(ngx_http_im_slot_redirect("MOVED 1 h\0x:1", 13, &slot, host,
                                    sizeof(host), &port, &ask) == -1);
}


static void
test_redirect_hostlen(void)
{
    int       port, ask;
    char      text[64], host[16];
    size_t    len, n;
    unsigned  slot;

    /* a host of len bytes fits in 10 bytes with its '\0' if len < 10 */
    for (len = 0; len <= 14; len++) {
        memcpy(text, "ASK 5 ", 6);
        memset(text + 6, 'a', len);
        n = 6 + len + sprintf(text + 6 + len, ":%d", 7000);

        memset(host, 'z', sizeof(host));

        CHECK_CASE(ngx_http_im_slot_redirect(text, n, &slot, host, 10, &port,
                                             &ask)
                   == (len < 10 ? 0 : -1), text);

        if (len < 10) {
            CHECK_CASE(strlen(host) == len && host[10] == 'z', text);

        } else {
            CHECK_CASE(host[0] == 'z', text);
        }
    }

    CHECK(ngx_http_im_slot_redirect("MOVED 1 :1", 10, &slot, host, 0, &port,
                                    &ask) == -1);
    CHECK(ngx_http_im_slot_redirect("MOVED 1 :1", 10, &slot, host, 1, &port,
                                    &ask) == 0);
}


static void
test_error_kind(void)
{
    size_t       i;
    redisReply  *reply;

    static const struct {
        const char  *text;
        int          kind;
    } cases[] = {
        { "MOVED 3999 127.0.0.1:6381", NGX_HTTP_IM_SLOT_ERR_MOVED },
        { "ASK 3999 127.0.0.1:6381", NGX_HTTP_IM_SLOT_ERR_ASK },
        { "TRYAGAIN Multiple keys request during rehashing of slot",
          NGX_HTTP_IM_SLOT_ERR_TRYAGAIN },
        { "CLUSTERDOWN Hash slot not served",
          NGX_HTTP_IM_SLOT_ERR_CLUSTERDOWN },
        { "CLUSTERDOWN The cluster is down",
          NGX_HTTP_IM_SLOT_ERR_CLUSTERDOWN },
        { "CLUSTERDOWN", NGX_HTTP_IM_SLOT_ERR_CLUSTERDOWN },
        { "MOVED", NGX_HTTP_IM_SLOT_ERR_MOVED },
        { "ERR unknown command", NGX_HTTP_IM_SLOT_ERR_OTHER },
        { "CROSSSLOT Keys in request don't hash to the same slot",
          NGX_HTTP_IM_SLOT_ERR_OTHER },
        { "LOADING Redis is loading the dataset in memory",
          NGX_HTTP_IM_SLOT_ERR_OTHER },
        { "MOVE 1 h:1", NGX_HTTP_IM_SLOT_ERR_OTHER },
        { "MOVEDX 1 h:1", NGX_HTTP_IM_SLOT_ERR_OTHER },
        { "ASKING", NGX_HTTP_IM_SLOT_ERR_OTHER },
        { "moved 1 h:1", NGX_HTTP_IM_SLOT_ERR_OTHER },
        { " MOVED 1 h:1", NGX_HTTP_IM_SLOT_ERR_OTHER },
        { "", NGX_HTTP_IM_SLOT_ERR_OTHER },
    };

    for (i = 0; i < CHECK_N(cases); i++) {
        CHECK_CASE(ngx_http_im_slot_error_kind(cases[i].text,
                                               strlen(cases[i].text))
                   == cases[i].kind, cases[i].text);
    }

    CHECK(ngx_http_im_slot_error_kind("MOVED", 4)
          == NGX_HTTP_IM_SLOT_ERR_OTHER);
    CHECK(ngx_http_im_slot_error_kind("ASKING", 3)
          == NGX_HTTP_IM_SLOT_ERR_ASK);

    /* as hiredis hands them over: no '-', no CRLF */
    reply = R("-MOVED 12182 127.0.0.1:7998\r\n");
    CHECK(reply != NULL && reply->type == REDIS_REPLY_ERROR);
    CHECK(ngx_http_im_slot_error_kind(reply->str, reply->len)
          == NGX_HTTP_IM_SLOT_ERR_MOVED);
    freeReplyObject(reply);
}


static void
test_push_good(void)
{
    size_t                    i;
    redisReply               *reply;
    ngx_http_im_slot_push_t   p;

    static const struct {
        const char  *text;
        size_t       len;
        int          kind;
        const char  *channel;   /* NULL: no channel */
        const char  *data;      /* NULL: no data */
        size_t       data_len;
        long long    count;
    } cases[] = {
        { "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_SUBSCRIBE, "ch", NULL, 0, 1 },
        { "*3\r\n$10\r\nssubscribe\r\n$4\r\n{a}y\r\n:2\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_SSUBSCRIBE, "{a}y", NULL, 0, 2 },
        { "*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_UNSUBSCRIBE, "ch", NULL, 0, 0 },
        { "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_UNSUBSCRIBE, NULL, NULL, 0, 0 },
        { "*3\r\n$12\r\nsunsubscribe\r\n$4\r\n{a}x\r\n:2\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_SUNSUBSCRIBE, "{a}x", NULL, 0, 2 },
        { "*3\r\n$12\r\nsunsubscribe\r\n$-1\r\n:0\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_SUNSUBSCRIBE, NULL, NULL, 0, 0 },
        { "*3\r\n$8\r\nsmessage\r\n$4\r\n{a}x\r\n$5\r\nhello\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_SMESSAGE, "{a}x", "hello", 5, 0 },
        { "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$0\r\n\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_MESSAGE, "ch", "", 0, 0 },
        { "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\na\0\r\nb\r\n", 36,
          NGX_HTTP_IM_SLOT_PUSH_MESSAGE, "ch", "a\0\r\nb", 5, 0 },
        { "*3\r\n$7\r\nMESSAGE\r\n$2\r\nch\r\n$1\r\nx\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_MESSAGE, "ch", "x", 1, 0 },
        { "*3\r\n$8\r\nSMessage\r\n$2\r\nch\r\n$1\r\nx\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_SMESSAGE, "ch", "x", 1, 0 },
        { "*3\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n:3\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_SUBSCRIBE, "ch", NULL, 0, 3 },
        { "*2\r\n$4\r\npong\r\n$0\r\n\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_PONG, NULL, "", 0, 0 },
        { "*2\r\n$4\r\npong\r\n$2\r\nhi\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_PONG, NULL, "hi", 2, 0 },
        { "*2\r\n$4\r\nPONG\r\n$2\r\nhi\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_PONG, NULL, "hi", 2, 0 },
        { "+PONG\r\n", 0, NGX_HTTP_IM_SLOT_PUSH_PONG, NULL, NULL, 0, 0 },
        { "+pong\r\n", 0, NGX_HTTP_IM_SLOT_PUSH_PONG, NULL, NULL, 0, 0 },
        { "*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:1\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_OTHER, NULL, NULL, 0, 0 },
        { "*4\r\n$8\r\npmessage\r\n$2\r\np*\r\n$2\r\npx\r\n$1\r\nx\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_OTHER, NULL, NULL, 0, 0 },
        { "*1\r\n$0\r\n\r\n", 0,
          NGX_HTTP_IM_SLOT_PUSH_OTHER, NULL, NULL, 0, 0 },
    };

    for (i = 0; i < CHECK_N(cases); i++) {
        reply = reply_of(cases[i].text, cases[i].len ? cases[i].len
                                        : strlen(cases[i].text));

        if (!CHECK_CASE(reply != NULL
                        && ngx_http_im_slot_push(reply, &p) == 0,
                        cases[i].text))
        {
            if (reply) {
                freeReplyObject(reply);
            }

            continue;
        }

        CHECK_CASE(p.kind == cases[i].kind && p.count == cases[i].count,
                   cases[i].text);

        CHECK_CASE(cases[i].channel
                   ? p.channel != NULL
                     && p.channel_len == strlen(cases[i].channel)
                     && memcmp(p.channel, cases[i].channel,
                               p.channel_len) == 0
                   : p.channel == NULL && p.channel_len == 0,
                   cases[i].text);

        CHECK_CASE(cases[i].data
                   ? p.data != NULL && p.data_len == cases[i].data_len
                     && memcmp(p.data, cases[i].data, p.data_len) == 0
                   : p.data == NULL && p.data_len == 0,
                   cases[i].text);

        freeReplyObject(reply);
    }
}


static void
test_push_bad(void)
{
    size_t                    i;
    redisReply               *reply;
    ngx_http_im_slot_push_t   p;

    static const char  *cases[] = {
        "+OK\r\n",
        "+PONGS\r\n",
        "+message\r\n",
        "+pon\r\n",
        "-ERR wrong number of arguments\r\n",
        "-MOVED 15495 127.0.0.1:7998\r\n",
        ":1\r\n",
        "$-1\r\n",
        "$4\r\npong\r\n",
        "*-1\r\n",
        "*0\r\n",
        "*1\r\n:1\r\n",
        "*1\r\n$-1\r\n",
        "*1\r\n+message\r\n",
        "*1\r\n*0\r\n",
        "*2\r\n$7\r\nmessage\r\n$2\r\nch\r\n",
        "*4\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nx\r\n$1\r\ny\r\n",
        "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n:1\r\n",
        "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$-1\r\n",
        "*3\r\n$7\r\nmessage\r\n$-1\r\n$1\r\nx\r\n",
        "*3\r\n$7\r\nmessage\r\n:1\r\n$1\r\nx\r\n",
        "*3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n*1\r\n$1\r\nx\r\n",
        "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n$1\r\n1\r\n",
        "*3\r\n$9\r\nsubscribe\r\n$-1\r\n:1\r\n",
        "*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:-1\r\n",
        "*2\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n",
        "*3\r\n$10\r\nssubscribe\r\n:1\r\n:1\r\n",
        "*3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n$-1\r\n",
        "*3\r\n$12\r\nsunsubscribe\r\n:0\r\n:0\r\n",
        "*1\r\n$4\r\npong\r\n",
        "*3\r\n$4\r\npong\r\n$0\r\n\r\n$0\r\n\r\n",
        "*2\r\n$4\r\npong\r\n:1\r\n",
        "*2\r\n$4\r\npong\r\n$-1\r\n",
    };

    for (i = 0; i < CHECK_N(cases); i++) {
        reply = reply_of(cases[i], strlen(cases[i]));

        memset(&p, 0x5a, sizeof(p));

        CHECK_CASE(ngx_http_im_slot_push(reply, &p) == -1
                   && p.kind == NGX_HTTP_IM_SLOT_PUSH_OTHER
                   && p.channel == NULL && p.data == NULL && p.count == 0,
                   cases[i]);

        if (reply) {
            freeReplyObject(reply);
        }
    }

    CHECK(ngx_http_im_slot_push(NULL, &p) == -1);

    /* a truncated array is no reply at all */
    reply = reply_of("*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n", 25);
    CHECK(reply == NULL);
    CHECK(ngx_http_im_slot_push(reply, &p) == -1);
}


int
main(void)
{
    test_spec();
    test_known();
    test_map_real();
    test_map_bad();
    test_map_limits();
    test_redirect();
    test_redirect_hostlen();
    test_error_kind();
    test_push_good();
    test_push_bad();

    return check_done();
}
