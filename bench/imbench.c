
/*
 * imbench: a load generator for ngx_im (and, for fanout and connect,
 * Nchan and Centrifugo as peers).
 *
 *   imbench connect|chat|fanout|sweep|group [options]   (imbench -h)
 *
 * The parent process sets up users and tokens over REST, then forks -P
 * load processes.  Each drives its share of WebSocket clients from one
 * epoll loop and is self-contained: a chat message's sender and
 * recipient live in the same process, so loss, duplicates and order are
 * checked without sharing state.  The parent sends each process one
 * command per phase over a pipe and merges the fixed-size results
 * (counters and histograms) they send back.
 *
 * Every scenario prints a table and one JSON line starting with
 * {"scenario": for scripts.
 *
 * Peers: --nchan and --centrifugo run the same load against Nchan and
 * Centrifugo in the same invocation (fanout, connect; group: Nchan), one
 * target after the other.  Nchan is a channel with WebSocket subscribers
 * and an HTTP publisher; Centrifugo speaks its JSON client protocol
 * (connect with an HS256 token, subscribe, pushes) and is published to
 * through its HTTP API.  CPU is the server's (nginx's workers, or the
 * Centrifugo process) and its Redis's.
 *
 * group: one group of M members (registered, created with the first
 * 1000, the rest invited 1000 at a time), N of them online (one session
 * each, platform 1), member #N sending group messages (1003, sessionType
 * 3) at R msg/s for D s; each online member must get each message once.
 * It runs on the fanout machinery (the same per-client bitmaps, the same
 * "<tag>-f-<k>-<t>" clientMsgID with the scheduled send time), so the
 * Nchan side is the fanout's: one channel, N subscribers, same R and
 * count.  --members A,B makes a group of each size (every one holding
 * the same N online members) and alternates them with Nchan each round;
 * --redis/--nchan-redis read INFO commandstats for PUBLISHes and Redis
 * commands per message.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <arpa/inet.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include "imb.h"
#include "ngx_http_im_ws_frame.h"


#define IMB_MAX_PROCS        16
#define IMB_PLATFORMS        11
#define IMB_PLATFORM_ADMIN   10
#define IMB_MAX_PENDING      512      /* connects in flight per process */

#define IMB_CMD_CONNECT      1
#define IMB_CMD_CHAT         2
#define IMB_CMD_FANOUT       3
#define IMB_CMD_CLOSE        4
#define IMB_CMD_EXIT         5

/* targets: ngx_im, Nchan, then each --centrifugo in order */
#define IMB_TARGET_IM        0
#define IMB_TARGET_NCHAN     1
#define IMB_TARGET_CF        2
#define IMB_MAX_CF           4
#define IMB_MAX_TARGETS      (IMB_TARGET_CF + IMB_MAX_CF)

#define imb_is_cf(t)         ((t) >= IMB_TARGET_CF)

#define IMB_CF_WS_PATH       "/connection/websocket"
#define IMB_CF_API_PATH      "/api/publish"
#define IMB_CF_NS            "imb"    /* the namespace of its channels */

#define IMB_MSG_ACKED        0x01
#define IMB_MSG_FAILED       0x02


typedef struct {
    int                    op;
    int                    target;
    int                    phase;
    double                 rate;       /* messages/s for this process */
    double                 duration;   /* s */
    double                 drain;      /* s after the last send */
    long                   count;      /* fanout: messages */
    int                    group;      /* group: index in imb_groups */
} imb_cmd_t;


typedef struct {
    int                    op;
    uint64_t               clients;
    uint64_t               conn_ok;
    uint64_t               conn_fail;
    imb_errs_t             errs;
    uint64_t               dropped;    /* open connections lost */
    uint64_t               t_first;    /* ns */
    uint64_t               t_last;
    uint64_t               t_start;
    uint64_t               t_last_ack;
    uint64_t               t_last_deliv;
    uint64_t               sent;
    uint64_t               skipped;    /* sender not connected */
    uint64_t               acked;
    uint64_t               ack_err;
    long long              last_err;
    uint64_t               expected;
    uint64_t               delivered;
    uint64_t               lost;
    uint64_t               dup;
    uint64_t               ooo;
    uint64_t               late;
    uint64_t               unexpected;
    uint64_t               bytes_in;
    uint64_t               sub_bytes;  /* fanout: subscribers' frames, */
    uint64_t               sub_frames; /* headers included */
    imb_hist_t             conn;       /* connect to open, µs */
    imb_hist_t             ack;
    imb_hist_t             deliv;
} imb_result_t;


/* a Centrifugo server (--centrifugo NAME=HOST:PORT[,PID[,REDIS_PID]]) */
typedef struct {
    char                   name[32];
    struct sockaddr_in     addr;
    char                  *pid_file;   /* the centrifugo process */
    char                  *redis_pid_file;
} imb_cf_t;


typedef struct {
    const char            *scenario;
    struct sockaddr_in     im;
    struct sockaddr_in     nchan;
    int                    use_nchan;
    const char            *ws_path;
    const char            *api_path;
    const char            *nchan_sub;
    const char            *nchan_pub;
    const char            *secret;
    const char            *admin;
    const char            *codec_name;
    const imb_codec_t     *codec;
    const char            *pid_file;
    const char            *redis_pid_file;
    const char            *nchan_pid_file;
    const char            *nchan_redis_pid_file;
    const char            *label;
    int                    procs;
    int                    rounds;
    long                   peers;      /* chat: recipients per sender */
    double                 conn_rate;
    long                   users;
    long                   senders;
    double                 rate;
    double                 duration;
    double                 drain;
    double                 settle;     /* group: most s to wait for quiet */
    double                 hold;
    long                   count;
    int                    size;
    double                 p99_limit;  /* ms */
    double                 rates[64];
    int                    nrates;
    double                 sweep_start;
    double                 sweep_factor;
    double                 sweep_max;
    uint64_t               seed;
    long                   members[8]; /* group: sizes */
    int                    nmembers;
    struct sockaddr_in     redis;      /* INFO commandstats */
    struct sockaddr_in     nchan_redis;
    int                    use_redis;
    int                    use_nchan_redis;
    imb_cf_t               cfs[IMB_MAX_CF];
    int                    ncf;
    const char            *cf_secret;  /* HS256 key of connect tokens */
    const char            *cf_api_key;
    char                   tag[16];
} imb_conf_t;


typedef struct {
    imb_conn_t             c;
    uint32_t               id;         /* global client number */
    uint32_t               user;       /* index in imb_users */
    int                    platform;
    int                    role;       /* 0 client, 1 publisher */
    int                    ready;      /* open; Centrifugo: subscribed */
    uint8_t               *seen;       /* fanout: one bit per message */
} imb_client_t;


typedef struct {
    uint64_t               t;          /* scheduled send time, ns */
    uint32_t               from;       /* local client numbers */
    uint32_t               to;
    uint8_t                flags;
    uint8_t                recv;
} imb_msg_t;


typedef struct {
    uint64_t               key;        /* to << 32 | from, +1 */
    uint64_t               seq;
} imb_order_t;


typedef struct {
    int                    fd;
    int                    res;
    pid_t                  pid;
} imb_proc_t;


static imb_conf_t      cf;
static char          **imb_users;
static char          **imb_tokens;
static long            imb_nusers;
static char           *imb_tokens_pf[IMB_PLATFORMS + 1];
static char            imb_padding[65536];

/* the load process */
static int             imb_shard;
static imb_loop_t      imb_loop;
static imb_client_t   *imb_clients;
static long            imb_nclients;
static long            imb_first;    /* global number of the first one */
static imb_client_t    imb_pub;
static imb_cmd_t       imb_cur;
static imb_result_t    imb_res;
static int             imb_res_fd;
static int             imb_busy;
static long            imb_next;     /* next client to connect */
static long            imb_pending;
static long            imb_open;
static imb_msg_t      *imb_msgs;
static size_t          imb_nmsgs;
static size_t          imb_msgs_cap;
static long            imb_rr;       /* round robin over senders */
static long            imb_local_senders;
static uint64_t        imb_stop_send;
static uint64_t        imb_deadline;
static imb_order_t    *imb_order;
static size_t          imb_order_cap;
static size_t          imb_order_n;
static imb_buf_t       imb_out;
static long            imb_pub_acked;
static long            imb_http_sent;
static int             imb_group;    /* the group scenario */
static char           *imb_groups[8];


static void imb_usage(void);
static int imb_parse(int argc, char **argv);
static int imb_setup_users(void);
static int imb_setup_groups(imb_api_t *api);
static int imb_run(void);
static void imb_child(int shard, int cmd_fd, int res_fd);
static void imb_child_cmd(imb_io_t *io, uint32_t events);
static void imb_child_tick(imb_loop_t *l, void *data);
static void imb_child_report(void);
static void imb_start_connect(void);
static void imb_connect_some(void);
static void imb_client_open(imb_conn_t *c);
static void imb_client_message(imb_conn_t *c, int op, char *data,
    size_t len);
static void imb_client_response(imb_conn_t *c, int status, char *body,
    size_t len);
static void imb_client_closed(imb_conn_t *c, int why, int err);
static void imb_client_ready(imb_client_t *cl);
static void imb_cf_hello(imb_client_t *cl);
static void imb_cf_frame(imb_client_t *cl, char *data, size_t len);
static void imb_chat_tick(void);
static void imb_chat_send(uint64_t t);
static void imb_chat_frame(imb_client_t *cl, char *data, size_t len);
static void imb_fanout_tick(void);
static void imb_client_hello(imb_client_t *cl, char *data, size_t len);
static void imb_pub_answered(int ok, long long err);
static void imb_fanout_frame(imb_client_t *cl, char *data, size_t len);
static void imb_fanout_got(imb_client_t *cl, const char *p, const char *e);
static void imb_order_check(uint32_t to, uint32_t from, uint64_t seq);
static int imb_phase(imb_proc_t *procs, imb_cmd_t *cmd, imb_result_t *sum);
static void imb_merge(imb_result_t *sum, imb_result_t *r);
static void imb_print_hist_row(const char *name, uint64_t n, double rate,
    imb_hist_t *h);
static void imb_print_hist_shares(imb_hist_t *h);
static void imb_json_hist(imb_buf_t *b, const char *name, imb_hist_t *h);
static void imb_env_json(imb_buf_t *b);


static const imb_handler_t  imb_client_handler = {
    imb_client_open, imb_client_message, imb_client_response,
    imb_client_closed
};


int
main(int argc, char **argv)
{
    long  limit;

    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (imb_parse(argc, argv) != IMB_OK) {
        return 2;
    }

    limit = imb_raise_nofile();
    if (limit > 0 && limit < 1024) {
        fprintf(stderr, "imbench: fd limit is only %ld\n", limit);
    }

    imb_srand(cf.seed);
    snprintf(cf.tag, sizeof(cf.tag), "%06x",
             (unsigned) (imb_rand() & 0xffffff));
    memset(imb_padding, 'x', sizeof(imb_padding) - 1);

    if (imb_setup_users() != IMB_OK) {
        return 1;
    }

    return imb_run() == IMB_OK ? 0 : 1;
}


static void
imb_usage(void)
{
    fprintf(stderr,
"usage: imbench connect|chat|fanout|sweep|group [options]\n"
"  -s HOST:PORT      ngx_im server (127.0.0.1:8080)\n"
"  -P N              load processes (1); each has its own fd limit\n"
"  -n N              connect: connections; chat/sweep: users;\n"
"                    fanout: subscribers; group: members online (2000)\n"
"  -m N              chat/sweep: senders (n/10)\n"
"  -M A[,B..]        group: group sizes, each > -n (10000); with\n"
"                    several, each round runs every size, then Nchan\n"
"  -r RATE           chat: msg/s (1000); fanout: publishes/s (100);\n"
"                    group: messages/s (50)\n"
"  -d SEC            chat: duration (10); sweep: per step (5);\n"
"                    group: sending time (10)\n"
"  -k N              fanout: messages (200)\n"
"  --redis HOST:PORT --nchan-redis HOST:PORT   group: Redis INFO\n"
"                    commandstats (PUBLISHes, commands per message)\n"
"  --settle SEC      group: after each ngx_im phase, wait up to SEC for\n"
"                    its Redis to go quiet (offline-push jobs) (30)\n"
"  --drain SEC       wait for late deliveries (5)\n"
"  --peers N         chat/sweep: each sender writes to N fixed users\n"
"                    (default: anyone, so most messages open a new\n"
"                    conversation)\n"
"  --conn-rate R     connections/s (2000)\n"
"  --hold SEC        connect: keep connections open (0)\n"
"  --size BYTES      message text size (64)\n"
"  --nchan HOST:PORT fanout/group/connect: also run against Nchan there\n"
"  --nchan-sub PATH  Nchan WebSocket location prefix (/sub/)\n"
"  --nchan-pub PATH  Nchan publisher location prefix (/pub/)\n"
"  --centrifugo NAME=HOST:PORT[,PID_FILE[,REDIS_PID_FILE]]\n"
"                    fanout/connect: also run against this Centrifugo (up\n"
"                    to %d; its pid file and its Redis's for CPU and memory)\n"
"  --cf-secret S     Centrifugo's HS256 connect-token key (imbench-secret)\n"
"  --cf-api-key K    Centrifugo's HTTP API key (imbench-key)\n"
"  --rounds N        fanout/group: alternate the targets N times; fanout\n"
"                    reports the round with the median deliveries/s of\n"
"                    each, group the median of each figure (1)\n"
"  --rates A,B,..    sweep: the rates (default: --start, x--factor)\n"
"  --start R --factor F --max R    sweep: 1000, 1.5, 64000\n"
"  --p99 MS          sweep: delivery p99 limit (100)\n"
"  --pid-file PATH   nginx pid file: workers' memory and CPU\n"
"  --redis-pid-file PATH   Redis pid file: its CPU per message\n"
"  --nchan-pid-file P --nchan-redis-pid-file P   the same for Nchan\n"
"  --codec json|pb   ngx_im's encoding: JSON text frames (json), or\n"
"                    protobuf binary frames (pb)\n"
"  --ws-path P --api-path P --secret S --admin ID --label TEXT --seed N\n",
    IMB_MAX_CF);
}


static int
imb_parse_rates(const char *s)
{
    char  *end;

    cf.nrates = 0;

    while (*s && cf.nrates < 64) {
        cf.rates[cf.nrates++] = strtod(s, &end);
        if (end == s) {
            return IMB_ERROR;
        }

        s = *end == ',' ? end + 1 : end;
    }

    return IMB_OK;
}


static int
imb_parse_members(const char *s)
{
    char  *end;

    cf.nmembers = 0;

    while (*s && cf.nmembers < 8) {
        cf.members[cf.nmembers++] = strtol(s, &end, 10);
        if (end == s) {
            return IMB_ERROR;
        }

        s = *end == ',' ? end + 1 : end;
    }

    return *s ? IMB_ERROR : IMB_OK;
}


/* NAME=HOST:PORT[,PID_FILE[,REDIS_PID_FILE]] */
static int
imb_parse_cf(const char *s)
{
    char      *p, *f[3];
    size_t     n;
    imb_cf_t  *c;

    p = strchr(s, '=');
    n = p ? (size_t) (p - s) : 0;

    if (cf.ncf == IMB_MAX_CF || n == 0 || n >= sizeof(c->name)) {
        return IMB_ERROR;
    }

    c = &cf.cfs[cf.ncf];
    memcpy(c->name, s, n);
    c->name[n] = '\0';

    p = strdup(p + 1);
    if (p == NULL) {
        return IMB_ERROR;
    }

    f[0] = strsep(&p, ",");
    f[1] = strsep(&p, ",");
    f[2] = strsep(&p, ",");

    if (p != NULL || imb_addr(f[0], &c->addr) != IMB_OK) {
        return IMB_ERROR;
    }

    c->pid_file = f[1] && *f[1] ? f[1] : NULL;
    c->redis_pid_file = f[2] && *f[2] ? f[2] : NULL;
    cf.ncf++;

    return IMB_OK;
}


static int
imb_parse(int argc, char **argv)
{
    int                   ch, idx;
    static struct option  opts[] = {
        { "drain", required_argument, NULL, 1 },
        { "conn-rate", required_argument, NULL, 2 },
        { "hold", required_argument, NULL, 3 },
        { "size", required_argument, NULL, 4 },
        { "nchan", required_argument, NULL, 5 },
        { "rates", required_argument, NULL, 6 },
        { "start", required_argument, NULL, 7 },
        { "factor", required_argument, NULL, 8 },
        { "max", required_argument, NULL, 9 },
        { "p99", required_argument, NULL, 10 },
        { "pid-file", required_argument, NULL, 11 },
        { "codec", required_argument, NULL, 12 },
        { "ws-path", required_argument, NULL, 13 },
        { "api-path", required_argument, NULL, 14 },
        { "secret", required_argument, NULL, 15 },
        { "admin", required_argument, NULL, 16 },
        { "label", required_argument, NULL, 17 },
        { "seed", required_argument, NULL, 18 },
        { "nchan-sub", required_argument, NULL, 19 },
        { "nchan-pub", required_argument, NULL, 20 },
        { "redis-pid-file", required_argument, NULL, 21 },
        { "nchan-pid-file", required_argument, NULL, 22 },
        { "rounds", required_argument, NULL, 24 },
        { "nchan-redis-pid-file", required_argument, NULL, 23 },
        { "peers", required_argument, NULL, 25 },
        { "members", required_argument, NULL, 'M' },
        { "redis", required_argument, NULL, 26 },
        { "nchan-redis", required_argument, NULL, 27 },
        { "settle", required_argument, NULL, 28 },
        { "centrifugo", required_argument, NULL, 29 },
        { "cf-secret", required_argument, NULL, 30 },
        { "cf-api-key", required_argument, NULL, 31 },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 }
    };

    if (argc < 2 || argv[1][0] == '-') {
        imb_usage();
        return IMB_ERROR;
    }

    cf.scenario = argv[1];
    (void) imb_addr("127.0.0.1:8080", &cf.im);
    cf.ws_path = "/im/ws";
    cf.api_path = "/im/api";
    cf.nchan_sub = "/sub/";
    cf.nchan_pub = "/pub/";
    cf.cf_secret = "imbench-secret";
    cf.cf_api_key = "imbench-key";
    cf.secret = "openIM123";
    cf.admin = "imAdmin";
    cf.codec_name = "json";
    cf.label = "";
    cf.procs = 1;
    cf.rounds = 1;
    cf.conn_rate = 2000;
    cf.users = -1;
    cf.senders = -1;
    cf.rate = -1;
    cf.duration = -1;
    cf.drain = 5;
    cf.settle = 30;
    cf.count = 200;
    cf.size = 64;
    cf.p99_limit = 100;
    cf.sweep_start = 1000;
    cf.sweep_factor = 1.5;
    cf.sweep_max = 64000;

    optind = 2;

    while ((ch = getopt_long(argc, argv, "s:P:n:m:M:r:d:k:h", opts, &idx))
           != -1)
    {
        switch (ch) {
        case 's':
            if (imb_addr(optarg, &cf.im) != IMB_OK) {
                fprintf(stderr, "imbench: bad address %s\n", optarg);
                return IMB_ERROR;
            }
            break;
        case 'P': cf.procs = atoi(optarg); break;
        case 'n': cf.users = atol(optarg); break;
        case 'm': cf.senders = atol(optarg); break;
        case 'r': cf.rate = atof(optarg); break;
        case 'd': cf.duration = atof(optarg); break;
        case 'k': cf.count = atol(optarg); break;
        case 1: cf.drain = atof(optarg); break;
        case 2: cf.conn_rate = atof(optarg); break;
        case 3: cf.hold = atof(optarg); break;
        case 4: cf.size = atoi(optarg); break;
        case 5:
            if (imb_addr(optarg, &cf.nchan) != IMB_OK) {
                fprintf(stderr, "imbench: bad address %s\n", optarg);
                return IMB_ERROR;
            }
            cf.use_nchan = 1;
            break;
        case 6:
            if (imb_parse_rates(optarg) != IMB_OK) {
                fprintf(stderr, "imbench: bad --rates\n");
                return IMB_ERROR;
            }
            break;
        case 7: cf.sweep_start = atof(optarg); break;
        case 8: cf.sweep_factor = atof(optarg); break;
        case 9: cf.sweep_max = atof(optarg); break;
        case 10: cf.p99_limit = atof(optarg); break;
        case 11: cf.pid_file = optarg; break;
        case 12: cf.codec_name = optarg; break;
        case 13: cf.ws_path = optarg; break;
        case 14: cf.api_path = optarg; break;
        case 15: cf.secret = optarg; break;
        case 16: cf.admin = optarg; break;
        case 17: cf.label = optarg; break;
        case 18: cf.seed = strtoull(optarg, NULL, 10); break;
        case 19: cf.nchan_sub = optarg; break;
        case 20: cf.nchan_pub = optarg; break;
        case 21: cf.redis_pid_file = optarg; break;
        case 22: cf.nchan_pid_file = optarg; break;
        case 24: cf.rounds = atoi(optarg); break;
        case 25: cf.peers = atol(optarg); break;
        case 23: cf.nchan_redis_pid_file = optarg; break;
        case 'M':
            if (imb_parse_members(optarg) != IMB_OK) {
                fprintf(stderr, "imbench: bad -M\n");
                return IMB_ERROR;
            }
            break;
        case 28: cf.settle = atof(optarg); break;
        case 29:
            if (imb_parse_cf(optarg) != IMB_OK) {
                fprintf(stderr, "imbench: bad --centrifugo %s (NAME=HOST:"
                        "PORT[,PID_FILE[,REDIS_PID_FILE]], at most %d)\n",
                        optarg, IMB_MAX_CF);
                return IMB_ERROR;
            }
            break;
        case 30: cf.cf_secret = optarg; break;
        case 31: cf.cf_api_key = optarg; break;
        case 26:
        case 27:
            if (imb_addr(optarg, ch == 26 ? &cf.redis : &cf.nchan_redis)
                != IMB_OK)
            {
                fprintf(stderr, "imbench: bad address %s\n", optarg);
                return IMB_ERROR;
            }
            *(ch == 26 ? &cf.use_redis : &cf.use_nchan_redis) = 1;
            break;
        default:
            imb_usage();
            return IMB_ERROR;
        }
    }

    cf.codec = imb_codec(cf.codec_name);
    if (cf.codec == NULL) {
        fprintf(stderr, "imbench: codec \"%s\" is not one of json, "
                "pb\n", cf.codec_name);
        return IMB_ERROR;
    }

    if (cf.rounds < 1 || cf.rounds > 15) {
        fprintf(stderr, "imbench: --rounds must be 1..15\n");
        return IMB_ERROR;
    }

    if (cf.procs < 1 || cf.procs > IMB_MAX_PROCS) {
        fprintf(stderr, "imbench: -P must be 1..%d\n", IMB_MAX_PROCS);
        return IMB_ERROR;
    }

    if (cf.size < 1 || cf.size > 60000) {
        fprintf(stderr, "imbench: --size must be 1..60000\n");
        return IMB_ERROR;
    }

    if (strcmp(cf.scenario, "connect") == 0) {
        if (cf.users < 0) {
            cf.users = 1000;
        }

    } else if (strcmp(cf.scenario, "chat") == 0
               || strcmp(cf.scenario, "sweep") == 0)
    {
        if (cf.users < 0) {
            cf.users = 1000;
        }

        if (cf.senders < 0) {
            cf.senders = cf.users / 10 ? cf.users / 10 : 1;
        }

        if (cf.senders > cf.users) {
            cf.senders = cf.users;
        }

        if (cf.rate < 0) {
            cf.rate = 1000;
        }

        if (cf.duration < 0) {
            cf.duration = cf.scenario[0] == 'c' ? 10 : 5;
        }

        if (cf.users < 2 * cf.procs) {
            fprintf(stderr, "imbench: need at least 2 users a process\n");
            return IMB_ERROR;
        }

    } else if (strcmp(cf.scenario, "fanout") == 0) {
        if (cf.users < 0) {
            cf.users = 1000;
        }

        if (cf.rate < 0) {
            cf.rate = 100;
        }

    } else if (strcmp(cf.scenario, "group") == 0) {
        imb_group = 1;

        if (cf.users < 0) {
            cf.users = 2000;
        }

        if (cf.rate < 0) {
            cf.rate = 50;
        }

        if (cf.duration < 0) {
            cf.duration = 10;
        }

        if (cf.nmembers == 0) {
            cf.members[cf.nmembers++] = 10000;
        }

        for (idx = 0; idx < cf.nmembers; idx++) {
            if (cf.members[idx] <= cf.users || cf.members[idx] > 100000) {
                fprintf(stderr, "imbench: each -M must be above -n (the "
                        "sender is member #n) and at most 100000\n");
                return IMB_ERROR;
            }
        }

        cf.count = (long) (cf.rate * cf.duration + 0.5);
        if (cf.rate <= 0 || cf.count < 1) {
            fprintf(stderr, "imbench: group needs -r and -d above 0\n");
            return IMB_ERROR;
        }

    } else {
        imb_usage();
        return IMB_ERROR;
    }

    if (cf.users > 10000000) {
        fprintf(stderr, "imbench: -n too large\n");
        return IMB_ERROR;
    }

    return IMB_OK;
}


/* targets */


static const char *
imb_target_name(int t)
{
    return t == IMB_TARGET_IM ? "ngx_im"
           : t == IMB_TARGET_NCHAN ? "nchan" : cf.cfs[t - IMB_TARGET_CF].name;
}


static struct sockaddr_in *
imb_target_addr(int t)
{
    return t == IMB_TARGET_IM ? &cf.im
           : t == IMB_TARGET_NCHAN ? &cf.nchan
           : &cf.cfs[t - IMB_TARGET_CF].addr;
}


/* the server's pid file: an nginx master, whose workers are measured
 * (*workers = 1), or the Centrifugo process itself */
static const char *
imb_target_pid_file(int t, int *workers)
{
    *workers = !imb_is_cf(t);

    return t == IMB_TARGET_IM ? cf.pid_file
           : t == IMB_TARGET_NCHAN ? cf.nchan_pid_file
           : cf.cfs[t - IMB_TARGET_CF].pid_file;
}


static const char *
imb_target_redis_pid_file(int t)
{
    return t == IMB_TARGET_IM ? cf.redis_pid_file
           : t == IMB_TARGET_NCHAN ? cf.nchan_redis_pid_file
           : cf.cfs[t - IMB_TARGET_CF].redis_pid_file;
}


/* the targets of this run, in the order they are measured */
static int
imb_targets(int *t)
{
    int  i, n;

    n = 0;
    t[n++] = IMB_TARGET_IM;

    if (cf.use_nchan) {
        t[n++] = IMB_TARGET_NCHAN;
    }

    for (i = 0; i < cf.ncf; i++) {
        t[n++] = IMB_TARGET_CF + i;
    }

    return n;
}


/* REST: users and their tokens */


/* group i: members 0 .. cf.members[i] - 1, user 0 the owner; created
 * with the first 1000, the rest invited 1000 at a time */
static int
imb_setup_groups(imb_api_t *api)
{
    int        i;
    long       m, k, lo, hi, nb;
    char     **bodies;
    uint64_t   t0;
    imb_buf_t  b;

    for (i = 0; i < cf.nmembers; i++) {
        t0 = imb_now_ns();
        m = cf.members[i];

        if (asprintf(&imb_groups[i], "g%s-%ld-%d", cf.tag, m, i) < 0) {
            return IMB_ERROR;
        }

        nb = 1 + (m - 1000 + 999) / 1000;
        if (m <= 1000) {
            nb = 1;
        }

        bodies = calloc(nb, sizeof(char *));
        if (bodies == NULL) {
            return IMB_ERROR;
        }

        for (k = 0; k < nb; k++) {
            memset(&b, 0, sizeof(b));

            if (k == 0) {
                lo = 1;
                hi = m < 1000 ? m : 1000;
                (void) imb_buf_printf(&b, "{\"ownerUserID\":\"%s\","
                                      "\"groupInfo\":{\"groupID\":\"%s\","
                                      "\"groupName\":\"imbench %ld\"},"
                                      "\"memberUserIDs\":[",
                                      imb_users[0], imb_groups[i], m);

            } else {
                lo = k * 1000;
                hi = lo + 1000 < m ? lo + 1000 : m;
                (void) imb_buf_printf(&b, "{\"groupID\":\"%s\","
                                      "\"reason\":\"\",\"invitedUserIDs\":[",
                                      imb_groups[i]);
            }

            for ( /* void */ ; lo < hi; lo++) {
                (void) imb_buf_printf(&b, "%s\"%s\"",
                                      b.data[b.len - 1] == '[' ? "" : ",",
                                      imb_users[lo]);
            }

            if (imb_buf_add(&b, "]}", 3) != IMB_OK) {
                return IMB_ERROR;
            }

            bodies[k] = b.data;
        }

        api->parallel = 1;

        if (imb_api_post(api, "/group/create_group", bodies, 1) != IMB_OK
            || imb_api_post(api, "/group/invite_user_to_group", bodies + 1,
                            nb - 1)
               != IMB_OK)
        {
            fprintf(stderr, "imbench: group %s: %s\n", imb_groups[i],
                    api->err);
            return IMB_ERROR;
        }

        for (k = 0; k < nb; k++) {
            free(bodies[k]);
        }
        free(bodies);

        fprintf(stderr, "imbench: group %s of %ld members made in %.1f s "
                "(1 create, %ld invites)\n", imb_groups[i], m,
                (imb_now_ns() - t0) / 1e9, nb - 1);
    }

    return IMB_OK;
}


static int
imb_setup_users(void)
{
    long       i;
    imb_api_t  api;
    uint64_t   t0;
    char      *fan[2];

    memset(&api, 0, sizeof(api));
    api.addr = cf.im;
    api.api = cf.api_path;
    api.secret = cf.secret;
    api.admin = cf.admin;
    api.parallel = 32;

    t0 = imb_now_ns();

    if (imb_api_admin(&api) != IMB_OK) {
        fprintf(stderr, "imbench: admin token: %s\n", api.err);
        return IMB_ERROR;
    }

    if (strcmp(cf.scenario, "fanout") == 0) {
        /* a publisher and one subscribing user with many sessions */
        imb_nusers = 2;

    } else if (imb_group) {
        /* every member of the largest group; tokens for the online ones
         * and the sender */
        imb_nusers = 0;
        for (i = 0; i < cf.nmembers; i++) {
            if (cf.members[i] > imb_nusers) {
                imb_nusers = cf.members[i];
            }
        }

    } else {
        imb_nusers = cf.users;
    }

    imb_users = calloc(imb_nusers, sizeof(char *));
    imb_tokens = calloc(imb_nusers, sizeof(char *));
    if (imb_users == NULL || imb_tokens == NULL) {
        return IMB_ERROR;
    }

    for (i = 0; i < imb_nusers; i++) {
        if (asprintf(&imb_users[i], "b%s-%ld", cf.tag, i) < 0) {
            return IMB_ERROR;
        }
    }

    if (imb_api_register(&api, imb_users, imb_nusers) != IMB_OK) {
        fprintf(stderr, "imbench: register: %s\n", api.err);
        return IMB_ERROR;
    }

    if (imb_api_tokens(&api, imb_users,
                       imb_group ? cf.users + 1 : imb_nusers, 1, imb_tokens)
        != IMB_OK)
    {
        fprintf(stderr, "imbench: tokens: %s\n", api.err);
        return IMB_ERROR;
    }

    if (imb_group) {
        fprintf(stderr, "imbench: %ld users registered, %ld tokens in "
                "%.1f s\n", imb_nusers, cf.users + 1,
                (imb_now_ns() - t0) / 1e9);

        return imb_setup_groups(&api);
    }

    if (imb_nusers == 2) {
        /* the subscriber user on every platform: multi-device */
        fan[0] = imb_users[1];

        for (i = 1; i <= IMB_PLATFORMS; i++) {
            if (i == IMB_PLATFORM_ADMIN) {
                continue;
            }

            if (imb_api_tokens(&api, fan, 1, (int) i, &imb_tokens_pf[i])
                != IMB_OK)
            {
                fprintf(stderr, "imbench: tokens: %s\n", api.err);
                return IMB_ERROR;
            }
        }
    }

    fprintf(stderr, "imbench: %ld users registered with tokens in %.1f s\n",
            imb_nusers, (imb_now_ns() - t0) / 1e9);

    return IMB_OK;
}


/* the load process */


static void
imb_child(int shard, int cmd_fd, int res_fd)
{
    long      i, n, lo, hi;
    imb_io_t  io;

    imb_shard = shard;
    imb_res_fd = res_fd;
    imb_srand(cf.seed ? cf.seed + shard + 1 : 0);

    n = cf.users;
    lo = n * shard / cf.procs;
    hi = n * (shard + 1) / cf.procs;

    imb_first = lo;
    imb_nclients = hi - lo;
    imb_clients = calloc(imb_nclients ? imb_nclients : 1,
                         sizeof(imb_client_t));
    if (imb_clients == NULL || imb_loop_init(&imb_loop) != IMB_OK) {
        fprintf(stderr, "imbench: out of memory\n");
        exit(1);
    }

    for (i = 0; i < imb_nclients; i++) {
        imb_clients[i].id = (uint32_t) (lo + i);
        imb_clients[i].c.state = IMB_CONN_IDLE;
    }

    imb_local_senders = cf.senders * (shard + 1) / cf.procs
                        - cf.senders * shard / cf.procs;

    io.fd = cmd_fd;
    io.handler = imb_child_cmd;

    if (imb_loop_add_io(&imb_loop, &io) != IMB_OK) {
        exit(1);
    }

    imb_loop.tick_ns = 1000000;
    imb_loop.next_tick = imb_loop.now + imb_loop.tick_ns;
    imb_loop.tick = imb_child_tick;

    imb_loop_run(&imb_loop);

    exit(0);
}


static void
imb_child_cmd(imb_io_t *io, uint32_t events)
{
    long       i;
    ssize_t    n;
    imb_cmd_t  cmd;

    (void) events;

    n = read(io->fd, &cmd, sizeof(cmd));
    if (n != sizeof(cmd)) {
        /* the parent is gone */
        exit(n == 0 ? 0 : 1);
    }

    memset(&imb_res, 0, sizeof(imb_res));
    imb_cur = cmd;
    imb_res.op = cmd.op;
    imb_res.t_start = imb_loop.now;
    imb_busy = 1;
    imb_loop.tick_ns = 1000000;
    imb_loop.next_tick = imb_loop.now;

    switch (cmd.op) {

    case IMB_CMD_CONNECT:
        imb_start_connect();
        break;

    case IMB_CMD_CHAT:
        imb_nmsgs = 0;
        imb_order_n = 0;
        if (imb_order) {
            memset(imb_order, 0, imb_order_cap * sizeof(imb_order_t));
        }
        imb_stop_send = imb_loop.now + (uint64_t) (cmd.duration * 1e9);
        imb_deadline = imb_stop_send + (uint64_t) (cmd.drain * 1e9);
        break;

    case IMB_CMD_FANOUT:
        for (i = 0; i < imb_nclients; i++) {
            free(imb_clients[i].seen);
            imb_clients[i].seen = calloc((cmd.count + 7) / 8, 1);
        }
        imb_nmsgs = 0;
        imb_pub_acked = 0;
        imb_http_sent = 0;
        imb_stop_send = imb_loop.now
                        + (uint64_t) (cmd.count / cmd.rate * 1e9);
        imb_deadline = imb_stop_send + (uint64_t) (cmd.drain * 1e9);
        break;

    case IMB_CMD_CLOSE:
        for (i = 0; i < imb_nclients; i++) {
            imb_conn_close(&imb_clients[i].c, 0);
        }
        imb_conn_close(&imb_pub.c, 0);
        imb_open = 0;
        imb_child_report();
        break;

    case IMB_CMD_EXIT:
        exit(0);
    }
}


static void
imb_child_report(void)
{
    size_t   off;
    ssize_t  n;
    char    *p;

    imb_busy = 0;
    imb_loop.tick_ns = 100000000;
    p = (char *) &imb_res;

    for (off = 0; off < sizeof(imb_res); off += n) {
        n = write(imb_res_fd, p + off, sizeof(imb_res) - off);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                n = 0;
                continue;
            }
            exit(1);
        }
    }
}


static void
imb_child_tick(imb_loop_t *l, void *data)
{
    (void) l;
    (void) data;

    if (!imb_busy) {
        return;
    }

    switch (imb_cur.op) {

    case IMB_CMD_CONNECT:
        imb_connect_some();
        break;

    case IMB_CMD_CHAT:
        imb_chat_tick();
        break;

    case IMB_CMD_FANOUT:
        imb_fanout_tick();
        break;
    }
}


/* connecting */


static void
imb_start_connect(void)
{
    imb_next = 0;
    imb_pending = 0;
    imb_open = 0;
    imb_res.clients = imb_nclients;

    /* and the publisher */
    if ((strcmp(cf.scenario, "fanout") == 0 || imb_group)
        && imb_shard == 0)
    {
        imb_res.clients++;
    }

    imb_connect_some();
}


static int
imb_connect_one(imb_client_t *cl, long src)
{
    int                  rc, platform;
    char                 path[2048];
    const char          *token;
    struct sockaddr_in  *dst;

    dst = imb_target_addr(imb_cur.target);
    cl->ready = 0;

    if (imb_cur.target != IMB_TARGET_IM && cl->role == 1) {
        /* Nchan's and Centrifugo's publishers speak HTTP */
        rc = imb_conn_connect(&cl->c, &imb_loop, dst, src, IMB_KIND_HTTP,
                              NULL, &imb_client_handler, cl);
        goto done;
    }

    if (imb_cur.target == IMB_TARGET_NCHAN) {
        /* the fanout's channel, or (connect) one for each connection */
        if (imb_cur.op == IMB_CMD_CONNECT
            && strcmp(cf.scenario, "connect") == 0)
        {
            snprintf(path, sizeof(path), "%sb%sc%u", cf.nchan_sub, cf.tag,
                     cl->id);

        } else {
            snprintf(path, sizeof(path), "%sb%s", cf.nchan_sub, cf.tag);
        }

    } else if (imb_is_cf(imb_cur.target)) {
        /* authenticated after the 101: imb_cf_hello() */
        snprintf(path, sizeof(path), "%s", IMB_CF_WS_PATH);

    } else if (imb_group) {
        /* members 0 .. n-1 listen, member n sends */
        cl->user = cl->role == 1 ? (uint32_t) cf.users : cl->id;
        snprintf(path, sizeof(path),
                 "%s?sendID=%s&token=%s&platformID=1&operationID=imb%u",
                 cf.ws_path, imb_users[cl->user], imb_tokens[cl->user],
                 cl->id);

    } else if (strcmp(cf.scenario, "fanout") == 0) {
        if (cl->role == 1) {
            platform = 1;
            token = imb_tokens[0];
            cl->user = 0;

        } else {
            /* platforms 1..11 without the admin's 10 */
            platform = 1 + cl->id % (IMB_PLATFORMS - 1);
            if (platform >= IMB_PLATFORM_ADMIN) {
                platform++;
            }

            token = imb_tokens_pf[platform];
            cl->user = 1;
        }

        snprintf(path, sizeof(path),
                 "%s?sendID=%s&token=%s&platformID=%d&operationID=imb%u",
                 cf.ws_path, imb_users[cl->user], token, platform, cl->id);

    } else {
        cl->user = cl->id;
        snprintf(path, sizeof(path),
                 "%s?sendID=%s&token=%s&platformID=1&operationID=imb%u",
                 cf.ws_path, imb_users[cl->user], imb_tokens[cl->user],
                 cl->id);
    }

    rc = imb_conn_connect(&cl->c, &imb_loop, dst, src, IMB_KIND_WS, path,
                          &imb_client_handler, cl);

done:

    if (rc != IMB_OK) {
        imb_res.conn_fail++;
        imb_errs_count(&imb_res.errs, IMB_END_CONNECT, errno);
        return IMB_ERROR;
    }

    imb_pending++;
    return IMB_OK;
}


static void
imb_connect_check(void)
{
    if (imb_next < imb_nclients || imb_pending > 0) {
        return;
    }

    if (imb_res.t_last == 0) {
        imb_res.t_last = imb_loop.now;
    }

    imb_child_report();
}


static void
imb_connect_some(void)
{
    long      due;
    double    rate;
    uint64_t  elapsed;

    if (imb_next == 0 && imb_pending == 0 && imb_res.t_first == 0) {
        imb_res.t_first = imb_loop.now;

        /* the publisher first: it is not rate limited */
        if (imb_res.clients > (uint64_t) imb_nclients) {
            memset(&imb_pub, 0, sizeof(imb_pub));
            imb_pub.role = 1;
            imb_pub.id = (uint32_t) cf.users;
            (void) imb_connect_one(&imb_pub, (long) cf.users + 1000000);
        }
    }

    rate = cf.conn_rate / cf.procs;
    elapsed = imb_loop.now - imb_res.t_first;
    due = (long) (elapsed / 1e9 * rate) + 1;

    while (imb_next < imb_nclients && imb_next < due
           && imb_pending < IMB_MAX_PENDING)
    {
        (void) imb_connect_one(&imb_clients[imb_next],
                               (long) imb_clients[imb_next].id);
        imb_next++;
    }

    imb_connect_check();
}


static void
imb_client_open(imb_conn_t *c)
{
    imb_client_t  *cl = c->data;

    if (imb_is_cf(imb_cur.target) && c->kind == IMB_KIND_WS) {
        imb_cf_hello(cl);
        return;
    }

    /* connect measures the handshake alone: it sends nothing */
    if (imb_cur.target == IMB_TARGET_IM && cf.codec->hello
        && strcmp(cf.scenario, "connect") != 0)
    {
        imb_out.len = 0;

        if (cf.codec->hello(&imb_out, "hello") != IMB_OK
            || imb_ws_send(&cl->c, cf.codec->opcode, imb_out.data,
                           imb_out.len)
               != IMB_OK)
        {
            imb_conn_close(&cl->c, 0);
            imb_client_closed(&cl->c, IMB_END_REFUSED, 0);
        }

        return;
    }

    imb_client_ready(cl);
}


/* the answer to the codec's hello: from now on the session's pushes come
 * in the codec's encoding */
static void
imb_client_hello(imb_client_t *cl, char *data, size_t len)
{
    static imb_frame_t  f;

    if (cf.codec->parse(data, len, 0, &f) == IMB_OK
        && f.req_identifier == 1001 && f.err_code == 0)
    {
        imb_client_ready(cl);
        return;
    }

    imb_res.unexpected++;
    imb_conn_close(&cl->c, 0);
    imb_client_closed(&cl->c, IMB_END_PROTOCOL, 0);
}


/* open, and for Centrifugo connected and subscribed: the handshake
 * latency runs from connect() to here */
static void
imb_client_ready(imb_client_t *cl)
{
    cl->ready = 1;

    if (!imb_busy || imb_cur.op != IMB_CMD_CONNECT) {
        return;
    }

    imb_pending--;
    imb_open += cl->role == 0;
    imb_res.conn_ok++;
    imb_res.t_last = imb_loop.now;
    imb_hist_add(&imb_res.conn, (imb_loop.now - cl->c.t_connect) / 1000);

    imb_connect_some();
}


static void
imb_client_closed(imb_conn_t *c, int why, int err)
{
    imb_client_t  *cl = c->data;

    if (why == IMB_END_LOCAL) {
        return;
    }

    if (!cl->ready) {
        /* never ready: a failed connect, a refused upgrade, or a
         * Centrifugo that closed before the subscribe reply */
        imb_res.conn_fail++;
        imb_errs_count(&imb_res.errs, why, err);

        if (imb_busy && imb_cur.op == IMB_CMD_CONNECT) {
            imb_pending--;
            imb_connect_check();
        }

        return;
    }

    imb_open -= cl->role == 0;
    imb_res.dropped++;
    imb_errs_count(&imb_res.errs, why, err);
}


static void
imb_client_response(imb_conn_t *c, int status, char *body, size_t len)
{
    imb_client_t  *cl = c->data;

    if (c->state == IMB_CONN_HANDSHAKE) {
        /* a refused upgrade */
        if (imb_res.errs.refused < 3) {
            fprintf(stderr, "imbench: upgrade refused: %d %.*s\n", status,
                    (int) (len > 200 ? 200 : len), body);
        }
        return;
    }

    /* the Nchan or Centrifugo publisher; Centrifugo reports an API
     * error in a 200 */
    if (cl->role != 1 || !imb_busy || imb_cur.op != IMB_CMD_FANOUT) {
        return;
    }

    imb_pub_answered(status >= 200 && status < 300
                     && !(imb_is_cf(imb_cur.target)
                          && memmem(body, len, "\"error\"", 7) != NULL),
                     status);
}


/* the fanout publisher's answer to its next message: ok, or err */
static void
imb_pub_answered(int ok, long long err)
{
    if (ok) {
        imb_res.acked++;

    } else {
        imb_res.ack_err++;
        imb_res.last_err = err;
    }

    if ((size_t) imb_pub_acked < imb_nmsgs) {
        imb_hist_add(&imb_res.ack,
                     (imb_loop.now - imb_msgs[imb_pub_acked].t) / 1000);
    }

    imb_pub_acked++;
    imb_res.t_last_ack = imb_loop.now;
}


static void
imb_client_message(imb_conn_t *c, int op, char *data, size_t len)
{
    imb_client_t  *cl = c->data;

    (void) op;

    imb_res.bytes_in += len;

    if (imb_busy && imb_cur.op == IMB_CMD_FANOUT && cl->role == 0) {
        imb_res.sub_bytes += len + imb_ws_header_len(len);
        imb_res.sub_frames++;
    }

    if (imb_is_cf(imb_cur.target)) {
        /* replies, pings and pushes, idle or not */
        imb_cf_frame(cl, data, len);
        return;
    }

    if (!cl->ready) {
        imb_client_hello(cl, data, len);
        return;
    }

    if (!imb_busy) {
        return;
    }

    if (imb_cur.op == IMB_CMD_CHAT) {
        imb_chat_frame(cl, data, len);

    } else if (imb_cur.op == IMB_CMD_FANOUT) {
        imb_fanout_frame(cl, data, len);
    }
}


/* chat */


static imb_msg_t *
imb_msg_new(void)
{
    size_t      cap;
    imb_msg_t  *m;

    if (imb_nmsgs == imb_msgs_cap) {
        cap = imb_msgs_cap ? 2 * imb_msgs_cap : 65536;
        m = realloc(imb_msgs, cap * sizeof(imb_msg_t));
        if (m == NULL) {
            return NULL;
        }

        imb_msgs = m;
        imb_msgs_cap = cap;
    }

    m = &imb_msgs[imb_nmsgs++];
    memset(m, 0, sizeof(*m));

    return m;
}


static void
imb_chat_tick(void)
{
    size_t      i;
    uint64_t    due, t, period;
    imb_msg_t  *m;

    period = (uint64_t) (1e9 / imb_cur.rate);

    if (imb_loop.now < imb_stop_send) {
        due = (imb_loop.now - imb_res.t_start) / period + 1;

        while (imb_nmsgs < due) {
            t = imb_res.t_start + imb_nmsgs * period;
            imb_chat_send(t);
        }

        return;
    }

    /* draining: done when every send is answered and every ack
     * delivered, or at the deadline */
    if (imb_loop.now < imb_deadline
        && (imb_res.acked + imb_res.ack_err < imb_res.sent
            || imb_res.delivered < imb_res.acked))
    {
        return;
    }

    for (i = 0; i < imb_nmsgs; i++) {
        m = &imb_msgs[i];

        if ((m->flags & IMB_MSG_ACKED) && m->recv == 0 && m->t) {
            imb_res.lost++;
        }
    }

    imb_res.expected = imb_res.acked;
    imb_child_report();
}


static void
imb_chat_send(uint64_t t)
{
    int            n;
    long           from, to;
    char           incr[32], cmid[64];
    size_t         idx;
    static char    text[65600];
    imb_msg_t     *m;
    imb_client_t  *s, *r;

    m = imb_msg_new();
    if (m == NULL) {
        imb_res.skipped++;
        return;
    }

    idx = imb_nmsgs - 1;
    from = imb_rr++ % imb_local_senders;
    if (cf.peers > 0 && cf.peers < imb_nclients) {
        /* the same few conversations again and again, as real chats */
        to = (from + 1 + imb_randn((uint32_t) cf.peers)) % imb_nclients;

    } else {
        to = imb_randn((uint32_t) (imb_nclients - 1));
        if (to >= from) {
            to++;
        }
    }

    m->t = 0;
    m->from = (uint32_t) from;
    m->to = (uint32_t) to;

    s = &imb_clients[from];
    r = &imb_clients[to];

    if (s->c.state != IMB_CONN_OPEN) {
        imb_res.skipped++;
        return;
    }

    snprintf(incr, sizeof(incr), "%d-%zu", imb_cur.phase, idx);
    snprintf(cmid, sizeof(cmid), "%s-%d-%d-%zu", cf.tag, imb_shard,
             imb_cur.phase, idx);
    n = snprintf(text, sizeof(text), "m%zu-", idx);
    if (n < cf.size) {
        memcpy(text + n, imb_padding, cf.size - n);
        text[cf.size] = '\0';
    }

    imb_out.len = 0;

    if (cf.codec->send_msg(&imb_out, incr, imb_users[s->user],
                           imb_users[r->user], NULL, cmid, 101, text)
        != IMB_OK)
    {
        imb_res.skipped++;
        return;
    }

    if (imb_ws_send(&s->c, cf.codec->opcode, imb_out.data, imb_out.len)
        != IMB_OK)
    {
        imb_res.skipped++;
        return;
    }

    m->t = t;
    imb_res.sent++;
}


/* "<tag>-<shard>-<phase>-<idx>": the message index, or -1 */
static long
imb_cmid_index(imb_js_t *s, int *late)
{
    long         v[3];
    int          i;
    const char  *p;

    *late = 0;

    if (s->e - s->p < 8 || memcmp(s->p, cf.tag, 6) != 0 || s->p[6] != '-') {
        return -1;
    }

    p = s->p + 7;

    for (i = 0; i < 3; i++) {
        v[i] = 0;

        if (p >= s->e || *p < '0' || *p > '9') {
            return -1;
        }

        while (p < s->e && *p >= '0' && *p <= '9') {
            v[i] = v[i] * 10 + (*p++ - '0');
        }

        if (i < 2) {
            if (p >= s->e || *p != '-') {
                return -1;
            }
            p++;
        }
    }

    if (v[0] != imb_shard) {
        return -1;
    }

    if (v[1] != imb_cur.phase) {
        *late = 1;
        return -1;
    }

    return v[2];
}


static void
imb_chat_ack(imb_frame_t *f)
{
    long        idx;
    imb_msg_t  *m;
    const char *p;

    if (f->msg_incr.p == NULL) {
        imb_res.unexpected++;
        return;
    }

    p = memchr(f->msg_incr.p, '-', f->msg_incr.e - f->msg_incr.p);
    if (p == NULL || atoi(f->msg_incr.p) != imb_cur.phase) {
        imb_res.late++;
        return;
    }

    idx = atol(p + 1);
    if (idx < 0 || (size_t) idx >= imb_nmsgs) {
        imb_res.unexpected++;
        return;
    }

    m = &imb_msgs[idx];

    if (!f->has_err_code) {
        imb_res.unexpected++;
        return;
    }

    if (f->err_code != 0) {
        m->flags |= IMB_MSG_FAILED;
        imb_res.ack_err++;
        imb_res.last_err = f->err_code;
        return;
    }

    m->flags |= IMB_MSG_ACKED;
    imb_res.acked++;
    imb_res.t_last_ack = imb_loop.now;
    imb_hist_add(&imb_res.ack, (imb_loop.now - m->t) / 1000);
}


static void
imb_chat_push(imb_client_t *cl, imb_frame_t *f)
{
    int               late;
    long              idx;
    size_t            i;
    imb_msg_t        *m;
    imb_frame_msg_t  *fm;

    imb_res.unexpected += f->more;

    for (i = 0; i < f->nmsgs; i++) {
        fm = &f->msgs[i];

        if (fm->client_msg_id.p == NULL) {
            imb_res.unexpected++;
            continue;
        }

        idx = imb_cmid_index(&fm->client_msg_id, &late);

        if (idx < 0 || (size_t) idx >= imb_nmsgs) {
            if (late) {
                imb_res.late++;
            } else {
                imb_res.unexpected++;
            }
            continue;
        }

        m = &imb_msgs[idx];

        if (&imb_clients[m->to] != cl) {
            imb_res.unexpected++;
            continue;
        }

        if (m->recv < 255) {
            m->recv++;
        }

        if (m->recv > 1) {
            imb_res.dup++;
            continue;
        }

        imb_res.delivered++;
        imb_res.t_last_deliv = imb_loop.now;
        imb_hist_add(&imb_res.deliv, (imb_loop.now - m->t) / 1000);

        if (fm->seq >= 0) {
            imb_order_check(m->to, m->from, (uint64_t) fm->seq);
        }
    }
}


static void
imb_chat_frame(imb_client_t *cl, char *data, size_t len)
{
    static imb_frame_t  f;

    /* the seqs: each sender's messages must reach a recipient in order */
    if (cf.codec->parse(data, len, 1, &f) != IMB_OK) {
        imb_res.unexpected++;
        return;
    }

    if (f.req_identifier == 2001) {
        imb_chat_push(cl, &f);

    } else if (f.req_identifier == 1003) {
        imb_chat_ack(&f);

    } else {
        imb_res.unexpected++;
    }
}


/* the seq of pushes from one sender to one recipient must grow */
static void
imb_order_check(uint32_t to, uint32_t from, uint64_t seq)
{
    size_t        i, mask, cap;
    uint64_t      key;
    imb_order_t  *o, *old;

    if (imb_order_n * 2 >= imb_order_cap) {
        old = imb_order;
        cap = imb_order_cap;
        imb_order_cap = cap ? 2 * cap : 65536;
        imb_order = calloc(imb_order_cap, sizeof(imb_order_t));
        if (imb_order == NULL) {
            imb_order = old;
            imb_order_cap = cap;
            return;
        }

        imb_order_n = 0;

        for (i = 0; i < cap; i++) {
            if (old[i].key) {
                imb_order_check((uint32_t) ((old[i].key - 1) >> 32),
                                (uint32_t) (old[i].key - 1), old[i].seq);
            }
        }

        free(old);
    }

    key = (((uint64_t) to << 32) | from) + 1;
    mask = imb_order_cap - 1;
    i = (size_t) ((key * 0x9e3779b97f4a7c15ULL) >> 20) & mask;

    for ( ;; ) {
        o = &imb_order[i];

        if (o->key == 0) {
            o->key = key;
            o->seq = seq;
            imb_order_n++;
            return;
        }

        if (o->key == key) {
            if (seq <= o->seq) {
                imb_res.ooo++;

            } else {
                o->seq = seq;
            }

            return;
        }

        i = (i + 1) & mask;
    }
}


/* fanout */


static void
imb_fanout_tick(void)
{
    long        i, k;
    char        incr[32], cmid[96], hdr[256];
    uint64_t    due, t, period;
    imb_msg_t  *m;

    if (imb_shard == 0 && imb_nmsgs < (size_t) imb_cur.count) {
        period = (uint64_t) (1e9 / imb_cur.rate);
        due = (imb_loop.now - imb_res.t_start) / period + 1;

        while (imb_nmsgs < due && imb_nmsgs < (size_t) imb_cur.count) {
            t = imb_res.t_start + imb_nmsgs * period;
            k = (long) imb_nmsgs;

            m = imb_msg_new();
            if (m == NULL) {
                return;
            }

            m->t = t;

            snprintf(cmid, sizeof(cmid), "%s-f-%ld-%llu", cf.tag, k,
                     (unsigned long long) t);
            imb_out.len = 0;

            if (imb_is_cf(imb_cur.target)) {
                /* data: the same text as Nchan's body, a JSON string */
                if (imb_buf_printf(&imb_out, "{\"channel\":\"" IMB_CF_NS
                                   ":b%s\",\"data\":\"%s %s\"}", cf.tag,
                                   cmid, imb_padding + sizeof(imb_padding)
                                         - 1 - cf.size)
                    != IMB_OK)
                {
                    continue;
                }

                snprintf(hdr, sizeof(hdr), "X-API-Key: %s\r\nContent-Type: "
                         "application/json\r\n", cf.cf_api_key);

                if (imb_http_request(&imb_pub.c, "POST", IMB_CF_API_PATH, hdr,
                                     imb_out.data, imb_out.len)
                    != IMB_OK)
                {
                    imb_res.skipped++;
                    continue;
                }

            } else if (imb_cur.target == IMB_TARGET_NCHAN) {
                if (imb_buf_printf(&imb_out, "%s ", cmid) != IMB_OK
                    || imb_buf_add(&imb_out, imb_padding, cf.size)
                       != IMB_OK)
                {
                    continue;
                }

                snprintf(hdr, sizeof(hdr), "%sb%s", cf.nchan_pub, cf.tag);

                if (imb_http_request(&imb_pub.c, "POST", hdr,
                                     "Content-Type: text/plain\r\n",
                                     imb_out.data, imb_out.len)
                    != IMB_OK)
                {
                    imb_res.skipped++;
                    continue;
                }

            } else {
                /* ngx_im: 1:1 to the user of the sessions, or a group */
                snprintf(incr, sizeof(incr), "f-%ld", k);

                if (cf.codec->send_msg(&imb_out, incr,
                                       imb_users[imb_group ? cf.users : 0],
                                       imb_users[1],
                                       imb_group ? imb_groups[imb_cur.group]
                                                 : NULL,
                                       cmid, 101,
                                       imb_padding + sizeof(imb_padding)
                                       - 1 - cf.size)
                    != IMB_OK
                    || imb_ws_send(&imb_pub.c, cf.codec->opcode,
                                   imb_out.data, imb_out.len)
                       != IMB_OK)
                {
                    imb_res.skipped++;
                    continue;
                }
            }

            imb_res.sent++;
        }
    }

    if (imb_loop.now < imb_deadline) {
        if (imb_res.delivered < (uint64_t) imb_cur.count * imb_open) {
            return;
        }

        if (imb_shard == 0
            && imb_res.acked + imb_res.ack_err < imb_res.sent)
        {
            return;
        }
    }

    imb_res.expected = (uint64_t) imb_cur.count * imb_nclients;

    for (i = 0; i < imb_nclients; i++) {
        free(imb_clients[i].seen);
        imb_clients[i].seen = NULL;
    }

    imb_child_report();
}


static void
imb_fanout_frame(imb_client_t *cl, char *data, size_t len)
{
    size_t              i;
    static imb_frame_t  f;

    if (imb_cur.target == IMB_TARGET_NCHAN && cl->role == 0) {
        imb_fanout_got(cl, data, data + len);
        return;
    }

    if (cf.codec->parse(data, len, 0, &f) != IMB_OK) {
        imb_res.unexpected++;
        return;
    }

    if (cl->role == 1) {
        /* the ngx_im publisher: acks; a group sender may get its own
         * messages pushed too */
        if (imb_group && f.req_identifier == 2001) {
            return;
        }

        if (f.req_identifier != 1003 || !f.has_err_code) {
            imb_res.unexpected++;
            return;
        }

        imb_pub_answered(f.err_code == 0, f.err_code);
        return;
    }

    if (f.req_identifier != 2001) {
        imb_res.unexpected++;
        return;
    }

    imb_res.unexpected += f.more;

    for (i = 0; i < f.nmsgs; i++) {
        if (f.msgs[i].client_msg_id.p == NULL) {
            imb_res.unexpected++;
            continue;
        }

        imb_fanout_got(cl, f.msgs[i].client_msg_id.p,
                       f.msgs[i].client_msg_id.e);
    }
}




/* "<tag>-f-<k>-<t>" at p */
static void
imb_fanout_got(imb_client_t *cl, const char *p, const char *e)
{
    long      k;
    uint64_t  t;

    if (e - p < 10 || memcmp(p, cf.tag, 6) != 0
        || memcmp(p + 6, "-f-", 3) != 0)
    {
        imb_res.unexpected++;
        return;
    }

    p += 9;
    k = 0;
    while (p < e && *p >= '0' && *p <= '9') {
        k = k * 10 + (*p++ - '0');
    }

    if (p >= e || *p != '-' || k >= imb_cur.count || cl->seen == NULL) {
        imb_res.unexpected++;
        return;
    }

    p++;
    t = 0;
    while (p < e && *p >= '0' && *p <= '9') {
        t = t * 10 + (uint64_t) (*p++ - '0');
    }

    if (cl->seen[k / 8] & (1 << (k % 8))) {
        imb_res.dup++;
        return;
    }

    cl->seen[k / 8] |= (uint8_t) (1 << (k % 8));
    imb_res.delivered++;
    imb_res.t_last_deliv = imb_loop.now;
    imb_hist_add(&imb_res.deliv,
                 imb_loop.now > t ? (imb_loop.now - t) / 1000 : 0);
}


/*
 * Centrifugo's client protocol (JSON over WebSocket): after the 101 a
 * connect command with an HS256 token (sub: the user) and a subscribe
 * command, in one frame; replies and pushes come back one JSON object a
 * line, several to a frame.  An empty object is the server's ping, and
 * an empty command the pong.  Publishing goes through its HTTP API.
 */


static void
imb_cf_fail(imb_client_t *cl, long long code, imb_js_t *err)
{
    if (imb_res.errs.refused < 3) {
        fprintf(stderr, "imbench: %s refused the client: %.*s\n",
                imb_target_name(imb_cur.target),
                err ? (int) (err->e - err->p) : 0, err ? err->p : "");
    }

    imb_conn_close(&cl->c, 0);

    if (cl->ready) {
        cl->ready = 0;
        imb_open -= cl->role == 0;
        imb_res.dropped++;
        return;
    }

    if (!imb_busy || imb_cur.op != IMB_CMD_CONNECT) {
        return;
    }

    imb_res.conn_fail++;
    imb_errs_count(&imb_res.errs, IMB_END_REFUSED, (int) code);
    imb_pending--;
    imb_connect_check();
}


static void
imb_cf_hello(imb_client_t *cl)
{
    char        claims[256], token[512], ch[128];
    const char *user;

    /* fanout: sessions of one user on one channel, as ngx_im's; connect:
     * a user and a personal channel for each connection */
    if (strcmp(cf.scenario, "connect") == 0) {
        user = imb_users[cl->id];
        snprintf(ch, sizeof(ch), IMB_CF_NS ":%s", user);

    } else {
        user = imb_users[1];
        snprintf(ch, sizeof(ch), IMB_CF_NS ":b%s", cf.tag);
    }

    snprintf(claims, sizeof(claims), "{\"sub\":\"%s\"}", user);
    imb_out.len = 0;

    if (imb_jwt_hs256(cf.cf_secret, claims, token, sizeof(token)) != IMB_OK
        || imb_buf_printf(&imb_out, "{\"id\":1,\"connect\":{\"token\":"
                          "\"%s\",\"name\":\"imbench\"}}\n{\"id\":2,"
                          "\"subscribe\":{\"channel\":\"%s\"}}", token, ch)
           != IMB_OK
        || imb_ws_send(&cl->c, NGX_HTTP_IM_WS_OP_TEXT, imb_out.data,
                       imb_out.len)
           != IMB_OK)
    {
        imb_cf_fail(cl, 0, NULL);
    }
}


static void
imb_cf_reply(imb_client_t *cl, imb_js_t *root)
{
    imb_js_t  v, pub, d, str;

    if (root->e - root->p == 2) {
        (void) imb_ws_send(&cl->c, NGX_HTTP_IM_WS_OP_TEXT, "{}", 2);
        return;
    }

    if (imb_js_get(root, "push", &v) == IMB_OK) {
        if (imb_busy && imb_cur.op == IMB_CMD_FANOUT && cl->role == 0
            && imb_js_get(&v, "pub", &pub) == IMB_OK
            && imb_js_get(&pub, "data", &d) == IMB_OK
            && imb_js_str(&d, &str) == IMB_OK)
        {
            imb_fanout_got(cl, str.p, str.e);

        } else if (imb_busy) {
            imb_res.unexpected++;
        }

        return;
    }

    if (imb_js_get(root, "error", &v) == IMB_OK) {
        imb_cf_fail(cl, imb_js_get(&v, "code", &d) == IMB_OK
                        ? imb_js_int(&d) : 0, &v);
        return;
    }

    /* the subscribe reply; the connect reply needs nothing */
    if (!cl->ready && imb_js_get(root, "id", &v) == IMB_OK
        && imb_js_int(&v) == 2)
    {
        imb_client_ready(cl);
    }
}


static void
imb_cf_frame(imb_client_t *cl, char *data, size_t len)
{
    char      *p, *e;
    unsigned   gen;
    imb_js_t   root;

    p = data;
    e = data + len;
    gen = cl->c.gen;

    while (imb_js_value(p, e, &root) == IMB_OK && *root.p == '{') {
        p = (char *) root.e;
        imb_cf_reply(cl, &root);

        if (cl->c.gen != gen || cl->c.state != IMB_CONN_OPEN) {
            return;
        }
    }
}


/* the parent */


static int
imb_spawn(imb_proc_t *procs)
{
    int    i, cmd[2], res[2];
    pid_t  pid;

    for (i = 0; i < cf.procs; i++) {
        if (pipe(cmd) != 0 || pipe(res) != 0) {
            perror("imbench: pipe");
            return IMB_ERROR;
        }

        pid = fork();
        if (pid < 0) {
            perror("imbench: fork");
            return IMB_ERROR;
        }

        if (pid == 0) {
            close(cmd[1]);
            close(res[0]);
            imb_child(i, cmd[0], res[1]);
        }

        close(cmd[0]);
        close(res[1]);
        procs[i].fd = cmd[1];
        procs[i].res = res[0];
        procs[i].pid = pid;
    }

    return IMB_OK;
}


static void
imb_reap(imb_proc_t *procs)
{
    int        i;
    imb_cmd_t  cmd;

    memset(&cmd, 0, sizeof(cmd));
    cmd.op = IMB_CMD_EXIT;

    for (i = 0; i < cf.procs; i++) {
        (void) write(procs[i].fd, &cmd, sizeof(cmd));
        close(procs[i].fd);
    }

    for (i = 0; i < cf.procs; i++) {
        (void) waitpid(procs[i].pid, NULL, 0);
        close(procs[i].res);
    }
}


static int
imb_phase(imb_proc_t *procs, imb_cmd_t *cmd, imb_result_t *sum)
{
    int            i;
    size_t         off;
    ssize_t        n;
    imb_result_t  *r;

    memset(sum, 0, sizeof(*sum));

    for (i = 0; i < cf.procs; i++) {
        if (write(procs[i].fd, cmd, sizeof(*cmd)) != sizeof(*cmd)) {
            perror("imbench: command");
            return IMB_ERROR;
        }
    }

    r = malloc(sizeof(*r));
    if (r == NULL) {
        return IMB_ERROR;
    }

    for (i = 0; i < cf.procs; i++) {
        for (off = 0; off < sizeof(*r); off += n) {
            n = read(procs[i].res, (char *) r + off, sizeof(*r) - off);
            if (n <= 0) {
                if (n < 0 && errno == EINTR) {
                    n = 0;
                    continue;
                }
                fprintf(stderr, "imbench: load process %d died\n", i);
                free(r);
                return IMB_ERROR;
            }
        }

        imb_merge(sum, r);
    }

    free(r);

    return IMB_OK;
}


static void
imb_merge(imb_result_t *sum, imb_result_t *r)
{
#define imb_add(f)  sum->f += r->f
#define imb_min(f)  if (r->f && (sum->f == 0 || r->f < sum->f)) sum->f = r->f
#define imb_max(f)  if (r->f > sum->f) sum->f = r->f

    imb_add(clients);
    imb_add(conn_ok);
    imb_add(conn_fail);
    imb_add(errs.connect_fail);
    imb_add(errs.refused);
    imb_add(errs.peer_closed);
    imb_add(errs.protocol);
    imb_add(dropped);
    imb_min(t_first);
    imb_max(t_last);
    imb_min(t_start);
    imb_max(t_last_ack);
    imb_max(t_last_deliv);
    imb_add(sent);
    imb_add(skipped);
    imb_add(acked);
    imb_add(ack_err);
    imb_add(expected);
    imb_add(delivered);
    imb_add(lost);
    imb_add(dup);
    imb_add(ooo);
    imb_add(late);
    imb_add(unexpected);
    imb_add(bytes_in);
    imb_add(sub_bytes);
    imb_add(sub_frames);

    if (r->errs.last_errno) {
        sum->errs.last_errno = r->errs.last_errno;
    }

    if (r->errs.last_status) {
        sum->errs.last_status = r->errs.last_status;
    }

    if (r->last_err) {
        sum->last_err = r->last_err;
    }

    imb_hist_merge(&sum->conn, &r->conn);
    imb_hist_merge(&sum->ack, &r->ack);
    imb_hist_merge(&sum->deliv, &r->deliv);

#undef imb_add
#undef imb_min
#undef imb_max
}


/* memory of the nginx workers and the kernel */


typedef struct {
    long                   workers;    /* server processes */
    uint64_t               rss;        /* bytes */
    uint64_t               anon;
    uint64_t               sock_mem;   /* TCP pages in bytes */
    uint64_t               slab;
    long                   tcp_inuse;
} imb_mem_t;


static uint64_t
imb_status_kb(const char *path, const char *field)
{
    char      line[256];
    FILE     *f;
    size_t    n;
    uint64_t  v;

    f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }

    v = 0;
    n = strlen(field);

    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, field, n) == 0) {
            v = strtoull(line + n, NULL, 10);
            break;
        }
    }

    fclose(f);

    return v * 1024;
}


static void
imb_mem(imb_mem_t *m, int target)
{
    int          i, n, workers;
    char         path[300], line[512], *p;
    long         master, pids[64];
    FILE        *f;
    const char  *pid_file;

    memset(m, 0, sizeof(*m));

    f = fopen("/proc/net/sockstat", "r");
    if (f) {
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, "TCP:", 4) == 0) {
                p = strstr(line, "inuse ");
                m->tcp_inuse = p ? atol(p + 6) : 0;
                p = strstr(line, "mem ");
                m->sock_mem = p ? strtoull(p + 4, NULL, 10) * 4096 : 0;
            }
        }
        fclose(f);
    }

    m->slab = imb_status_kb("/proc/meminfo", "Slab:");

    pid_file = imb_target_pid_file(target, &workers);
    if (pid_file == NULL) {
        return;
    }

    f = fopen(pid_file, "r");
    if (f == NULL) {
        return;
    }

    master = fgets(line, sizeof(line), f) ? atol(line) : 0;
    fclose(f);

    if (workers) {
        n = imb_children(master, pids, 64);

    } else {
        pids[0] = master;
        n = master > 0;
    }

    for (i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "/proc/%ld/status", pids[i]);
        m->workers++;
        m->rss += imb_status_kb(path, "VmRSS:");
        m->anon += imb_status_kb(path, "RssAnon:");
    }
}


/* CPU seconds of the server (nginx workers, or Centrifugo), Redis and
 * the load processes */


typedef struct {
    double                 nginx;      /* the server's */
    double                 redis;
    double                 load;
    double                 wall;
} imb_cpu_t;


static double
imb_proc_cpu(long pid, int children)
{
    char                path[64], line[1024], *p;
    FILE               *f;
    unsigned long long  ut, st, cut, cst;

    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }

    ut = st = cut = cst = 0;

    if (fgets(line, sizeof(line), f) && (p = strrchr(line, ')')) != NULL) {
        (void) sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
                      "%llu %llu %llu %llu", &ut, &st, &cut, &cst);
    }

    fclose(f);

    if (!children) {
        cut = cst = 0;
    }

    return (double) (ut + st + cut + cst) / sysconf(_SC_CLK_TCK);
}


static long
imb_pid_file(const char *path)
{
    char   line[64];
    long   pid;
    FILE  *f;

    if (path == NULL || (f = fopen(path, "r")) == NULL) {
        return 0;
    }

    pid = fgets(line, sizeof(line), f) ? atol(line) : 0;
    fclose(f);

    return pid;
}


static void
imb_cpu(imb_proc_t *procs, imb_cpu_t *c, int target)
{
    int    i, n, workers;
    long   master, pids[64];

    memset(c, 0, sizeof(*c));
    c->wall = imb_now_ns() / 1e9;

    for (i = 0; i < cf.procs; i++) {
        c->load += imb_proc_cpu(procs[i].pid, 0);
    }

    c->redis = imb_proc_cpu(imb_pid_file(imb_target_redis_pid_file(target)),
                            1);

    master = imb_pid_file(imb_target_pid_file(target, &workers));

    if (workers) {
        n = imb_children(master, pids, 64);

    } else {
        pids[0] = master;
        n = master > 0;
    }

    for (i = 0; i < n; i++) {
        c->nginx += imb_proc_cpu(pids[i], 0);
    }
}


/* a line (json NULL) or "cpu":{...}: cores busy, CPU per unit of n; the
 * server is nginx's workers or (json keys "centrifugo_...") Centrifugo */
static void
imb_cpu_report(imb_cpu_t *a, imb_cpu_t *b, uint64_t n, const char *unit,
    int target, imb_buf_t *json)
{
    double       wall, ng, rd, ld;
    const char  *srv;

    srv = imb_is_cf(target) ? "centrifugo" : "nginx";

    wall = b->wall - a->wall;
    ng = b->nginx - a->nginx;
    rd = b->redis - a->redis;
    ld = b->load - a->load;

    if (wall <= 0 || n == 0) {
        return;
    }

    if (json == NULL) {
        printf("  CPU: %s %.2f cores (%.1f us/%s), redis %.2f "
               "cores (%.1f us/%s), imbench %.2f cores (%.1f us/%s)\n",
               imb_is_cf(target) ? srv : "nginx workers",
               ng / wall, ng * 1e6 / n, unit, rd / wall, rd * 1e6 / n, unit,
               ld / wall, ld * 1e6 / n, unit);

    } else {
        (void) imb_buf_printf(json, ",\"cpu\":{\"seconds\":%.2f,"
                              "\"%s_cores\":%.3f,\"redis_cores\":%.3f,"
                              "\"imbench_cores\":%.3f,\"%s_us_per_%s\":"
                              "%.2f,\"redis_us_per_%s\":%.2f,"
                              "\"imbench_us_per_%s\":%.2f}", wall,
                              srv, ng / wall, rd / wall, ld / wall, srv, unit,
                              ng * 1e6 / n, unit, rd * 1e6 / n, unit,
                              ld * 1e6 / n);
    }
}


/* reports */


static double
imb_ms(uint64_t us)
{
    return us / 1000.0;
}


static void
imb_print_hist_row(const char *name, uint64_t n, double rate, imb_hist_t *h)
{
    char  r[32];

    r[0] = '\0';
    if (rate >= 0) {
        snprintf(r, sizeof(r), "%.1f", rate);
    }

    printf("  %-12s %10llu %10s %8.2f %8.2f %8.2f %8.2f %8.2f\n",
           name, (unsigned long long) n, r,
           imb_ms(imb_hist_pct(h, 50)), imb_ms(imb_hist_pct(h, 90)),
           imb_ms(imb_hist_pct(h, 99)), imb_ms(imb_hist_pct(h, 99.9)),
           imb_ms(h->max_us));
}


static void
imb_json_hist(imb_buf_t *b, const char *name, imb_hist_t *h)
{
    (void) imb_buf_printf(b,
               ",\"%s_ms\":{\"n\":%llu,\"mean\":%.3f,\"p50\":%.3f,"
               "\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f}",
               name, (unsigned long long) h->count,
               h->count ? imb_ms(h->sum_us / h->count) : 0.0,
               imb_ms(imb_hist_pct(h, 50)), imb_ms(imb_hist_pct(h, 90)),
               imb_ms(imb_hist_pct(h, 99)), imb_ms(imb_hist_pct(h, 99.9)),
               imb_ms(h->max_us));
}


static void
imb_env_json(imb_buf_t *b)
{
    long            cores;
    char            model[256], line[256], *p;
    FILE           *f;
    struct rlimit   rl;
    struct utsname  u;

    model[0] = '\0';
    f = fopen("/proc/cpuinfo", "r");
    if (f) {
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, "model name", 10) == 0) {
                p = strchr(line, ':');
                snprintf(model, sizeof(model), "%s", p ? p + 2 : "");
                model[strcspn(model, "\n")] = '\0';
                break;
            }
        }
        fclose(f);
    }

    cores = sysconf(_SC_NPROCESSORS_ONLN);
    (void) uname(&u);
    (void) getrlimit(RLIMIT_NOFILE, &rl);

    (void) imb_buf_printf(b, ",\"env\":{\"cpu\":\"%s\",\"cores\":%ld,"
                          "\"kernel\":\"%s\",\"fd_limit\":%llu}",
                          model, cores, u.release,
                          (unsigned long long) rl.rlim_cur);
}


static void
imb_json_begin(imb_buf_t *b, const char *scenario, const char *target)
{
    b->len = 0;
    (void) imb_buf_printf(b, "{\"scenario\":\"%s\",\"target\":\"%s\","
                          "\"label\":\"%s\",\"codec\":\"%s\",\"procs\":%d",
                          scenario, target, cf.label, cf.codec->name,
                          cf.procs);
}


static void
imb_json_end(imb_buf_t *b)
{
    imb_env_json(b);
    (void) imb_buf_add(b, "}", 1);
    printf("%s\n", b->data);
}


static void
imb_print_errors(imb_result_t *r)
{
    if (r->conn_fail || r->dropped) {
        printf("  connection problems: %llu failed (connect %llu, refused "
               "%llu, last errno %d \"%s\", last status %d), %llu dropped "
               "while open\n",
               (unsigned long long) r->conn_fail,
               (unsigned long long) r->errs.connect_fail,
               (unsigned long long) r->errs.refused, r->errs.last_errno,
               strerror(r->errs.last_errno), r->errs.last_status,
               (unsigned long long) r->dropped);
    }
}


static int
imb_connect_phase(imb_proc_t *procs, int target, imb_result_t *r)
{
    imb_cmd_t  cmd;
    double     secs;

    memset(&cmd, 0, sizeof(cmd));
    cmd.op = IMB_CMD_CONNECT;
    cmd.target = target;

    if (imb_phase(procs, &cmd, r) != IMB_OK) {
        return IMB_ERROR;
    }

    secs = r->t_last > r->t_first ? (r->t_last - r->t_first) / 1e9 : 0;

    fprintf(stderr, "imbench: %llu of %llu connections open in %.1f s "
            "(%.0f/s), %llu failed\n",
            (unsigned long long) r->conn_ok,
            (unsigned long long) r->clients, secs,
            secs > 0 ? r->conn_ok / secs : 0.0,
            (unsigned long long) r->conn_fail);

    return IMB_OK;
}


static int
imb_close_phase(imb_proc_t *procs)
{
    imb_cmd_t     cmd;
    imb_result_t  r;

    memset(&cmd, 0, sizeof(cmd));
    cmd.op = IMB_CMD_CLOSE;

    return imb_phase(procs, &cmd, &r);
}


/* what the connect scenario's comparison keeps of each target */
typedef struct {
    uint64_t               open;
    uint64_t               failed;
    double                 per_conn;   /* server anon bytes */
    double                 p50;        /* handshake, ms */
    double                 p99;
} imb_conn_sum_t;


static int
imb_connect_target(imb_proc_t *procs, int target, imb_conn_sum_t *sum)
{
    int           workers;
    double        secs, n;
    imb_buf_t     b;
    imb_mem_t     before, after;
    const char   *server;
    imb_result_t  r;

    imb_mem(&before, target);

    if (imb_connect_phase(procs, target, &r) != IMB_OK) {
        return IMB_ERROR;
    }

    /* let the server settle before measuring */
    sleep(2);
    imb_mem(&after, target);

    if (cf.hold > 0) {
        fprintf(stderr, "imbench: holding for %.0f s\n", cf.hold);
        usleep((useconds_t) (cf.hold * 1e6));
    }

    secs = r.t_last > r.t_first ? (r.t_last - r.t_first) / 1e9 : 0;
    n = r.conn_ok ? (double) r.conn_ok : 1;

    sum->open = r.conn_ok;
    sum->failed = r.conn_fail;
    sum->per_conn = ((double) after.anon - before.anon) / n;
    sum->p50 = imb_ms(imb_hist_pct(&r.conn, 50));
    sum->p99 = imb_ms(imb_hist_pct(&r.conn, 99));

    printf("\nconnect %s: %ld WebSocket connections at %.0f/s target, %d "
           "load process(es); %s\n", imb_target_name(target), cf.users,
           cf.conn_rate, cf.procs,
           target == IMB_TARGET_IM
           ? "authenticated sessions (a user and a token each)"
           : target == IMB_TARGET_NCHAN
           ? "subscribers, a channel each (no authentication)"
           : "a user each: connect token (HS256), subscribed to a "
             "personal channel");
    printf("  open %llu, failed %llu, in %.2f s = %.0f conn/s\n",
           (unsigned long long) r.conn_ok, (unsigned long long) r.conn_fail,
           secs, secs > 0 ? r.conn_ok / secs : 0.0);
    printf("  %-12s %10s %10s %8s %8s %8s %8s %8s   (ms)\n", "", "count",
           "", "p50", "p90", "p99", "p99.9", "max");
    imb_print_hist_row("handshake", r.conn.count, -1, &r.conn);
    imb_print_errors(&r);

    server = imb_is_cf(target) ? "centrifugo" : "nginx workers";

    if (imb_target_pid_file(target, &workers)) {
        printf("  %s (%ld): RSS %.1f -> %.1f MiB, anon %.1f -> %.1f MiB\n",
               server, after.workers, before.rss / 1048576.0,
               after.rss / 1048576.0, before.anon / 1048576.0,
               after.anon / 1048576.0);
        printf("  user-space memory per connection: %.0f B RSS, %.0f B "
               "anon\n", ((double) after.rss - before.rss) / n,
               sum->per_conn);
    }

    printf("  kernel per connection (both ends on loopback): TCP buffers "
           "%.0f B, slab %.0f B\n",
           ((double) after.sock_mem - before.sock_mem) / n,
           ((double) after.slab - before.slab) / n);

    memset(&b, 0, sizeof(b));
    imb_json_begin(&b, "connect", imb_target_name(target));
    (void) imb_buf_printf(&b,
               ",\"connections\":%ld,\"open\":%llu,\"failed\":%llu,"
               "\"dropped\":%llu,\"seconds\":%.3f,\"conn_per_s\":%.1f,"
               "\"workers\":%ld,\"rss_before\":%llu,\"rss_after\":%llu,"
               "\"anon_before\":%llu,\"anon_after\":%llu,"
               "\"rss_per_conn\":%.0f,\"anon_per_conn\":%.0f,"
               "\"kernel_tcp_mem_per_conn\":%.0f,\"slab_per_conn\":%.0f",
               cf.users, (unsigned long long) r.conn_ok,
               (unsigned long long) r.conn_fail,
               (unsigned long long) r.dropped, secs,
               secs > 0 ? r.conn_ok / secs : 0.0, after.workers,
               (unsigned long long) before.rss,
               (unsigned long long) after.rss,
               (unsigned long long) before.anon,
               (unsigned long long) after.anon,
               ((double) after.rss - before.rss) / n, sum->per_conn,
               ((double) after.sock_mem - before.sock_mem) / n,
               ((double) after.slab - before.slab) / n);
    imb_json_hist(&b, "handshake", &r.conn);
    imb_json_end(&b);
    imb_buf_free(&b);

    return imb_close_phase(procs);
}


/* each target in turn, then a comparison against ngx_im */
static int
imb_scenario_connect(imb_proc_t *procs)
{
    int             i, n, t[IMB_MAX_TARGETS];
    imb_conn_sum_t  s[IMB_MAX_TARGETS];

    n = imb_targets(t);

    for (i = 0; i < n; i++) {
        if (i > 0) {
            /* the last target's sockets close */
            sleep(2);
        }

        if (imb_connect_target(procs, t[i], &s[i]) != IMB_OK) {
            return IMB_ERROR;
        }
    }

    if (n == 1) {
        return IMB_OK;
    }

    printf("\nconnect, all targets: handshake = TCP connect to 101 (ngx_im, "
           "nchan) or to the subscribe reply (centrifugo)\n");
    printf("  B/conn: the server's anonymous memory (nginx workers, or "
           "centrifugo) after - before, over the connections\n");
    printf("  %-12s %8s %7s %10s %10s %10s %10s %10s\n", "target", "open",
           "failed", "hs p50 ms", "hs p99 ms", "x ngx_im", "B/conn",
           "x ngx_im");

    for (i = 0; i < n; i++) {
        printf("  %-12s %8llu %7llu %10.2f %10.2f %10.2f %10.0f %10.2f\n",
               imb_target_name(t[i]), (unsigned long long) s[i].open,
               (unsigned long long) s[i].failed, s[i].p50, s[i].p99,
               s[0].p99 > 0 ? s[i].p99 / s[0].p99 : 0.0, s[i].per_conn,
               s[0].per_conn > 0 ? s[i].per_conn / s[0].per_conn : 0.0);
    }

    return IMB_OK;
}


static imb_cpu_t  imb_cpu_a, imb_cpu_b;


static int
imb_chat_phase(imb_proc_t *procs, int phase, double rate, imb_result_t *r)
{
    int        rc;
    imb_cmd_t  cmd;

    memset(&cmd, 0, sizeof(cmd));
    cmd.op = IMB_CMD_CHAT;
    cmd.phase = phase;
    cmd.rate = rate / cf.procs;
    cmd.duration = cf.duration;
    cmd.drain = cf.drain;

    imb_cpu(procs, &imb_cpu_a, IMB_TARGET_IM);
    rc = imb_phase(procs, &cmd, r);
    imb_cpu(procs, &imb_cpu_b, IMB_TARGET_IM);

    /* count the time the work took, not the idle drain after it */
    if (r->t_last_deliv > r->t_start) {
        imb_cpu_b.wall = imb_cpu_a.wall
                         + (double) (r->t_last_deliv - r->t_start) / 1e9;
    }

    return rc;
}


static void
imb_chat_rates(imb_result_t *r, double *send, double *ack, double *deliv)
{
    double  span;

    *send = r->sent / cf.duration;

    span = r->t_last_ack > r->t_start ? (r->t_last_ack - r->t_start) / 1e9
                                      : 0;
    *ack = r->acked / (span > cf.duration ? span : cf.duration);

    span = r->t_last_deliv > r->t_start
           ? (r->t_last_deliv - r->t_start) / 1e9 : 0;
    *deliv = r->delivered / (span > cf.duration ? span : cf.duration);
}


static int
imb_chat_bad(imb_result_t *r)
{
    return r->lost || r->dup || r->ooo
           || r->sent != r->acked + r->ack_err
           || r->skipped || r->dropped;
}


/* where the tail is: the share of deliveries in each latency band */
static void
imb_print_hist_shares(imb_hist_t *h)
{
    int             i;
    static const struct {
        const char  *name;
        uint64_t     lo, hi;
    } bands[] = {
        { "<1", 0, 1000 }, { "1-2", 1000, 2000 }, { "2-5", 2000, 5000 },
        { "5-10", 5000, 10000 }, { "10-20", 10000, 20000 },
        { "20-50", 20000, 50000 }, { "50-100", 50000, 100000 },
        { "100-200", 100000, 200000 }, { "200-500", 200000, 500000 },
        { ">=500", 500000, UINT64_MAX },
    };

    if (h->count == 0) {
        return;
    }

    printf("  delivery ms:");
    for (i = 0; i < (int) (sizeof(bands) / sizeof(bands[0])); i++) {
        printf(" %s %.2f%%", bands[i].name,
               100.0 * (double) imb_hist_between(h, bands[i].lo, bands[i].hi)
               / (double) h->count);
    }
    printf("\n");
}


static void
imb_chat_print(imb_result_t *r, double rate)
{
    double  send, ack, deliv;

    imb_chat_rates(r, &send, &ack, &deliv);

    printf("\nchat: %ld users online, %ld senders, target %.0f msg/s for "
           "%.0f s, %d B text, %d load process(es)\n", cf.users, cf.senders,
           rate, cf.duration, cf.size, cf.procs);
    printf("  %-12s %10s %10s %8s %8s %8s %8s %8s   (ms)\n", "", "count",
           "rate/s", "p50", "p90", "p99", "p99.9", "max");
    printf("  %-12s %10llu %10.1f\n", "sent", (unsigned long long) r->sent,
           send);
    imb_print_hist_row("acked", r->acked, ack, &r->ack);
    imb_print_hist_row("delivered", r->delivered, deliv, &r->deliv);
    imb_print_hist_shares(&r->deliv);
    printf("  lost (acked, never pushed) %llu  duplicated %llu  "
           "out-of-order %llu\n  send errors %llu (last errCode %lld)  "
           "unanswered %llu  not sent %llu\n",
           (unsigned long long) r->lost, (unsigned long long) r->dup,
           (unsigned long long) r->ooo, (unsigned long long) r->ack_err,
           r->last_err,
           (unsigned long long) (r->sent - r->acked - r->ack_err),
           (unsigned long long) r->skipped);
    imb_print_errors(r);

    if (r->lost || r->dup || r->ooo) {
        printf("  !!!!! DELIVERY VIOLATION: lost %llu, duplicated %llu, "
               "out of order %llu !!!!!\n",
               (unsigned long long) r->lost, (unsigned long long) r->dup,
               (unsigned long long) r->ooo);
    }
}


static void
imb_chat_json(imb_buf_t *b, imb_result_t *r, double rate)
{
    double  send, ack, deliv;

    imb_chat_rates(r, &send, &ack, &deliv);

    (void) imb_buf_printf(b,
               "{\"rate\":%.0f,\"sent\":%llu,\"acked\":%llu,"
               "\"send_errors\":%llu,\"unanswered\":%llu,\"not_sent\":%llu,"
               "\"delivered\":%llu,\"lost\":%llu,\"duplicated\":%llu,"
               "\"out_of_order\":%llu,\"dropped\":%llu,\"send_per_s\":%.1f,"
               "\"ack_per_s\":%.1f,\"deliver_per_s\":%.1f",
               rate, (unsigned long long) r->sent,
               (unsigned long long) r->acked,
               (unsigned long long) r->ack_err,
               (unsigned long long) (r->sent - r->acked - r->ack_err),
               (unsigned long long) r->skipped,
               (unsigned long long) r->delivered,
               (unsigned long long) r->lost, (unsigned long long) r->dup,
               (unsigned long long) r->ooo,
               (unsigned long long) r->dropped, send, ack, deliv);
    imb_json_hist(b, "ack", &r->ack);
    imb_json_hist(b, "deliver", &r->deliv);
    (void) imb_buf_add(b, "}", 1);
}


static int
imb_scenario_chat(imb_proc_t *procs)
{
    imb_buf_t     b;
    imb_result_t  r;

    if (imb_connect_phase(procs, IMB_TARGET_IM, &r) != IMB_OK) {
        return IMB_ERROR;
    }

    if (r.conn_fail) {
        imb_print_errors(&r);
    }

    if (imb_chat_phase(procs, 1, cf.rate, &r) != IMB_OK) {
        return IMB_ERROR;
    }

    imb_chat_print(&r, cf.rate);
    imb_cpu_report(&imb_cpu_a, &imb_cpu_b, r.acked, "msg", IMB_TARGET_IM,
                   NULL);

    memset(&b, 0, sizeof(b));
    imb_json_begin(&b, "chat", "ngx_im");
    imb_cpu_report(&imb_cpu_a, &imb_cpu_b, r.acked, "msg", IMB_TARGET_IM,
                   &b);
    (void) imb_buf_printf(&b, ",\"users\":%ld,\"senders\":%ld,"
                          "\"duration\":%.1f,\"size\":%d,\"result\":",
                          cf.users, cf.senders, cf.duration, cf.size);
    imb_chat_json(&b, &r, cf.rate);
    imb_json_end(&b);
    imb_buf_free(&b);

    (void) imb_close_phase(procs);

    return imb_chat_bad(&r) ? IMB_ERROR : IMB_OK;
}


static int
imb_scenario_sweep(imb_proc_t *procs)
{
    int            i, n, best_i;
    double         rate, send, ack, deliv, best;
    imb_buf_t      b;
    imb_result_t   r, *res;
    double         rates[64];
    const char    *why;

    if (cf.nrates) {
        n = cf.nrates;
        memcpy(rates, cf.rates, n * sizeof(double));

    } else {
        n = 0;
        for (rate = cf.sweep_start; rate <= cf.sweep_max && n < 64;
             rate *= cf.sweep_factor)
        {
            rates[n++] = (double) (long) rate;
        }
    }

    res = calloc(n ? n : 1, sizeof(imb_result_t));
    if (res == NULL) {
        return IMB_ERROR;
    }

    if (imb_connect_phase(procs, IMB_TARGET_IM, &r) != IMB_OK) {
        free(res);
        return IMB_ERROR;
    }

    printf("\nsweep: %ld users online, %ld senders, %.0f s a step, pass = "
           "delivery p99 < %.0f ms, nothing lost, all answered, delivery "
           "rate >= 95%% of target\n", cf.users, cf.senders, cf.duration,
           cf.p99_limit);
    printf("  %8s %9s %9s %9s %8s %8s %8s %8s %6s  %s\n", "target",
           "sent/s", "acked/s", "deliv/s", "ack p99", "dlv p50", "dlv p99",
           "dlv max", "lost", "verdict");

    best = 0;
    best_i = -1;

    for (i = 0; i < n; i++) {
        if (imb_chat_phase(procs, i + 1, rates[i], &res[i]) != IMB_OK) {
            free(res);
            return IMB_ERROR;
        }

        imb_chat_rates(&res[i], &send, &ack, &deliv);

        why = NULL;
        if (res[i].lost || res[i].dup || res[i].ooo) {
            why = "LOSS/DUP/ORDER";

        } else if (res[i].sent != res[i].acked + res[i].ack_err
                   || res[i].skipped || res[i].dropped)
        {
            why = "unanswered";

        } else if (res[i].ack_err) {
            why = "send errors";

        } else if (imb_ms(imb_hist_pct(&res[i].deliv, 99)) >= cf.p99_limit)
        {
            why = "p99";

        } else if (deliv < 0.95 * rates[i]) {
            why = "rate";
        }

        printf("  %8.0f %9.1f %9.1f %9.1f %8.2f %8.2f %8.2f %8.2f %6llu  "
               "%s\n", rates[i], send, ack, deliv,
               imb_ms(imb_hist_pct(&res[i].ack, 99)),
               imb_ms(imb_hist_pct(&res[i].deliv, 50)),
               imb_ms(imb_hist_pct(&res[i].deliv, 99)),
               imb_ms(res[i].deliv.max_us),
               (unsigned long long) res[i].lost, why ? why : "pass");
        imb_cpu_report(&imb_cpu_a, &imb_cpu_b, res[i].acked, "msg",
                       IMB_TARGET_IM, NULL);

        if (res[i].lost || res[i].dup || res[i].ooo) {
            printf("  !!!!! DELIVERY VIOLATION at %.0f msg/s: lost %llu, "
                   "duplicated %llu, out of order %llu !!!!!\n", rates[i],
                   (unsigned long long) res[i].lost,
                   (unsigned long long) res[i].dup,
                   (unsigned long long) res[i].ooo);
        }

        if (why) {
            n = i + 1;
            break;
        }

        best = rates[i];
        best_i = i;

        /* let queues empty between steps */
        sleep(1);
    }

    printf("  headline: highest rate with delivery p99 < %.0f ms and zero "
           "loss: %.0f msg/s\n", cf.p99_limit, best);

    memset(&b, 0, sizeof(b));
    imb_json_begin(&b, "sweep", "ngx_im");
    (void) imb_buf_printf(&b, ",\"users\":%ld,\"senders\":%ld,"
                          "\"step_seconds\":%.1f,\"p99_limit_ms\":%.0f,"
                          "\"best_rate\":%.0f,\"steps\":[", cf.users,
                          cf.senders, cf.duration, cf.p99_limit, best);

    for (i = 0; i < n; i++) {
        if (i) {
            (void) imb_buf_add(&b, ",", 1);
        }
        imb_chat_json(&b, &res[i], rates[i]);
    }

    (void) imb_buf_add(&b, "]", 1);
    imb_json_end(&b);
    imb_buf_free(&b);

    (void) best_i;
    free(res);

    return imb_close_phase(procs);
}


/* Redis INFO commandstats: calls by command */


#define IMB_RSTAT_MAX  128

typedef struct {
    int                    n;
    int                    ok;
    char                   name[IMB_RSTAT_MAX][48];
    uint64_t               calls[IMB_RSTAT_MAX];
} imb_rstat_t;


/* a request on a new blocking connection; the answer, NUL-terminated,
 * up to EOF (HTTP/1.0) or to the end of a Redis bulk string */
static ssize_t
imb_sync_req(struct sockaddr_in *addr, const char *req, char *buf,
    size_t cap, int redis)
{
    int             fd;
    char           *p;
    size_t          len, need;
    ssize_t         n;
    struct timeval  tv;

    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }

    tv.tv_sec = 2;
    tv.tv_usec = 0;
    (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));

    if (connect(fd, (struct sockaddr *) addr, sizeof(*addr)) != 0
        || write(fd, req, strlen(req)) != (ssize_t) strlen(req))
    {
        close(fd);
        return -1;
    }

    len = 0;
    need = 0;

    while (len < cap - 1) {
        n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0) {
            break;
        }

        len += n;
        buf[len] = '\0';

        if (redis && need == 0 && (p = strstr(buf, "\r\n")) != NULL) {
            need = (p - buf) + 2 + strtoul(buf + 1, NULL, 10) + 2;
        }

        if (need && len >= need) {
            break;
        }
    }

    close(fd);
    buf[len] = '\0';

    if (redis && (len == 0 || buf[0] != '$' || need == 0 || len < need)) {
        return -1;
    }

    return (ssize_t) len;
}


static int
imb_rstat(struct sockaddr_in *addr, imb_rstat_t *st)
{
    char         *p, *q, *e;
    static char   buf[1 << 16];

    memset(st, 0, sizeof(*st));

    if (imb_sync_req(addr, "INFO commandstats\r\n", buf, sizeof(buf), 1)
        < 0)
    {
        return IMB_ERROR;
    }

    for (p = buf; (p = strstr(p, "cmdstat_")) != NULL
                  && st->n < IMB_RSTAT_MAX; p = e)
    {
        p += 8;
        e = strchr(p, ':');
        q = e ? strstr(e, "calls=") : NULL;
        if (e == NULL || q == NULL || e - p >= 48) {
            break;
        }

        memcpy(st->name[st->n], p, e - p);
        st->name[st->n][e - p] = '\0';
        st->calls[st->n] = strtoull(q + 6, NULL, 10);
        st->n++;
    }

    st->ok = 1;

    return IMB_OK;
}


/* ngx_im's /im/metrics counters that tell about a group message's tail */

#define IMB_MET_JOBS      0
#define IMB_MET_DROPPED   1
#define IMB_MET_PUSHES    2
#define IMB_MET_REDIS_ERR 3
#define IMB_MET_OVERFLOW  4
#define IMB_MET_N         5

static const char  *imb_met_names[IMB_MET_N] = {
    "im_offline_push_jobs_total", "im_offline_push_dropped_total",
    "im_pushes_total", "im_redis_errors_total",
    "im_send_queue_overflows_total"
};


static int
imb_metrics(double *v)
{
    int          i;
    char         req[512], name[80], *p;
    static char  buf[1 << 17];

    for (i = 0; i < IMB_MET_N; i++) {
        v[i] = -1;
    }

    snprintf(req, sizeof(req), "GET %.*s/metrics HTTP/1.0\r\n"
             "Host: imbench\r\n\r\n",
             (int) (strlen(cf.ws_path) > 3 ? strlen(cf.ws_path) - 3 : 0),
             cf.ws_path);

    if (imb_sync_req(&cf.im, req, buf, sizeof(buf), 0) <= 0) {
        return IMB_ERROR;
    }

    for (i = 0; i < IMB_MET_N; i++) {
        snprintf(name, sizeof(name), "\n%s ", imb_met_names[i]);
        p = strstr(buf, name);
        if (p) {
            v[i] = strtod(p + strlen(name), NULL);
        }
    }

    return IMB_OK;
}


static uint64_t
imb_rstat_calls(imb_rstat_t *st, const char *name)
{
    int  i;

    for (i = 0; i < st->n; i++) {
        if (strcmp(st->name[i], name) == 0) {
            return st->calls[i];
        }
    }

    return 0;
}


/* calls of name between a and b; name NULL: all but INFO */
static double
imb_rstat_delta(imb_rstat_t *a, imb_rstat_t *b, const char *name)
{
    int       i;
    uint64_t  d;

    if (!a->ok || !b->ok) {
        return -1;
    }

    if (name) {
        return (double) (imb_rstat_calls(b, name) - imb_rstat_calls(a, name));
    }

    d = 0;

    for (i = 0; i < b->n; i++) {
        if (strcmp(b->name[i], "info") != 0) {
            d += b->calls[i] - imb_rstat_calls(a, b->name[i]);
        }
    }

    return (double) d;
}


typedef struct {
    imb_result_t           r;
    imb_cpu_t              cpu_a;
    imb_cpu_t              cpu_b;
    imb_rstat_t            rs_a;
    imb_rstat_t            rs_b;
    /* group: until Redis is quiet again (offline-push jobs and the like) */
    imb_cpu_t              cpu_q;
    imb_rstat_t            rs_q;
    double                 met_a[IMB_MET_N];
    double                 met_b[IMB_MET_N];
    double                 met_q[IMB_MET_N];
    double                 tail;       /* s from the phase's end to quiet */
    int                    quiet;      /* 0: still busy at --settle */
    double                 secs;
    double                 rate;
    uint64_t               lost;
    int                    ok;
    int                    target;
    long                   members;    /* group: its size */
} imb_fan_t;


/*
 * After a group phase: waits until ngx_im's Redis is quiet (fewer than
 * 50 commands in 0.5 s) or --settle seconds, so that a group's tail
 * (offline-push jobs, paged off the send path) is measured, and does not
 * run into the next target's phase.
 */
static void
imb_settle(imb_proc_t *procs, struct sockaddr_in *raddr, imb_fan_t *f)
{
    double       t0, d;
    imb_rstat_t  prev;

    t0 = imb_now_ns() / 1e9;
    f->quiet = 0;
    prev = f->rs_b;

    while (raddr && prev.ok && imb_now_ns() / 1e9 - t0 < cf.settle) {
        usleep(500000);

        if (imb_rstat(raddr, &f->rs_q) != IMB_OK) {
            break;
        }

        d = imb_rstat_delta(&prev, &f->rs_q, NULL);
        prev = f->rs_q;

        if (d >= 0 && d < 50) {
            f->quiet = 1;
            break;
        }
    }

    if (!f->rs_q.ok) {
        f->rs_q = f->rs_b;
    }

    f->tail = imb_now_ns() / 1e9 - t0;
    imb_cpu(procs, &f->cpu_q, IMB_TARGET_IM);
    (void) imb_metrics(f->met_q);

    if (!f->quiet && raddr) {
        fprintf(stderr, "imbench: ngx_im's Redis still busy %.0f s after "
                "the phase (--settle)\n", f->tail);
    }
}


static int
imb_fanout_run(imb_proc_t *procs, int target, int group, imb_fan_t *f)
{
    struct sockaddr_in  *raddr;

    imb_cmd_t     cmd;
    imb_result_t  c;
    uint64_t      want;

    memset(f, 0, sizeof(*f));
    f->target = target;
    f->members = imb_group && target == IMB_TARGET_IM
                 ? cf.members[group] : 0;
    raddr = NULL;
    if (target == IMB_TARGET_IM && cf.use_redis) {
        raddr = &cf.redis;
    } else if (target == IMB_TARGET_NCHAN && cf.use_nchan_redis) {
        raddr = &cf.nchan_redis;
    }

    if (imb_connect_phase(procs, target, &c) != IMB_OK) {
        return IMB_ERROR;
    }

    if (c.conn_fail) {
        imb_print_errors(&c);
    }

    /* subscriptions settle (Nchan subscribes to Redis after the 101) */
    sleep(1);

    memset(&cmd, 0, sizeof(cmd));
    cmd.op = IMB_CMD_FANOUT;
    cmd.target = target;
    cmd.rate = cf.rate;
    cmd.count = cf.count;
    cmd.drain = cf.drain;
    cmd.group = group;

    if (raddr && imb_rstat(raddr, &f->rs_a) != IMB_OK) {
        fprintf(stderr, "imbench: INFO commandstats failed\n");
    }

    if (imb_group && target == IMB_TARGET_IM) {
        (void) imb_metrics(f->met_a);
    }

    imb_cpu(procs, &f->cpu_a, target);

    if (imb_phase(procs, &cmd, &f->r) != IMB_OK) {
        return IMB_ERROR;
    }

    imb_cpu(procs, &f->cpu_b, target);

    if (raddr && imb_rstat(raddr, &f->rs_b) != IMB_OK) {
        fprintf(stderr, "imbench: INFO commandstats failed\n");
    }

    if (imb_group && target == IMB_TARGET_IM) {
        (void) imb_metrics(f->met_b);
        imb_settle(procs, raddr, f);
    }

    f->secs = f->r.t_last_deliv > f->r.t_start
              ? (f->r.t_last_deliv - f->r.t_start) / 1e9 : 0;
    f->cpu_b.wall = f->cpu_a.wall + f->secs;
    f->rate = f->secs > 0 ? f->r.delivered / f->secs : 0;

    want = f->r.acked * (uint64_t) cf.users;
    f->lost = want > f->r.delivered ? want - f->r.delivered : 0;
    f->ok = 1;

    return imb_close_phase(procs);
}


/* per delivery: µs of the server's (0) and its Redis's (1) CPU, frame
 * bytes (2), frames (3: below 1 when a server puts several pushes in a
 * frame) */
static double
imb_fan_per(imb_fan_t *f, int what)
{
    double  n;

    n = (double) f->r.delivered;
    if (n == 0) {
        return 0;
    }

    switch (what) {
    case 0:
        return (f->cpu_b.nginx - f->cpu_a.nginx) * 1e6 / n;
    case 1:
        return (f->cpu_b.redis - f->cpu_a.redis) * 1e6 / n;
    case 2:
        return f->r.sub_bytes / n;
    default:
        return f->r.sub_frames / n;
    }
}


static void
imb_fanout_row(const char *name, imb_fan_t *f)
{
    imb_hist_t  *h;

    h = &f->r.deliv;

    printf("  %-10s %9llu %9.0f %7.2f %7.2f %7.2f %8.2f %7llu %4llu "
           "%4llu/%-4llu %6.2f %6.2f %6.1f %5.2f\n", name,
           (unsigned long long) f->r.delivered, f->rate,
           imb_ms(imb_hist_pct(h, 50)), imb_ms(imb_hist_pct(h, 90)),
           imb_ms(imb_hist_pct(h, 99)), imb_ms(h->max_us),
           (unsigned long long) f->lost, (unsigned long long) f->r.dup,
           (unsigned long long) f->r.acked, (unsigned long long) f->r.sent,
           imb_fan_per(f, 0), imb_fan_per(f, 1), imb_fan_per(f, 2),
           imb_fan_per(f, 3));
}


static void
imb_fanout_json(imb_buf_t *b, const char *target, int t, imb_fan_t *f)
{
    (void) imb_buf_printf(b,
               "\"%s\":{\"published\":%llu,\"publish_ok\":%llu,"
               "\"publish_errors\":%llu,\"delivered\":%llu,\"lost\":%llu,"
               "\"duplicated\":%llu,\"dropped\":%llu,\"unexpected\":%llu,"
               "\"seconds\":%.3f,\"deliver_per_s\":%.1f,"
               "\"server_us_per_delivery\":%.3f,"
               "\"redis_us_per_delivery\":%.3f,"
               "\"frame_bytes_per_delivery\":%.1f,\"frames\":%llu", target,
               (unsigned long long) f->r.sent,
               (unsigned long long) f->r.acked,
               (unsigned long long) f->r.ack_err,
               (unsigned long long) f->r.delivered,
               (unsigned long long) f->lost,
               (unsigned long long) f->r.dup,
               (unsigned long long) f->r.dropped,
               (unsigned long long) f->r.unexpected, f->secs, f->rate,
               imb_fan_per(f, 0), imb_fan_per(f, 1), imb_fan_per(f, 2),
               (unsigned long long) f->r.sub_frames);
    imb_json_hist(b, "publish", &f->r.ack);
    imb_json_hist(b, "deliver", &f->r.deliv);
    imb_cpu_report(&f->cpu_a, &f->cpu_b, f->r.delivered, "delivery", t, b);
    (void) imb_buf_add(b, "}", 1);
}


static int
imb_fan_cmp(const void *a, const void *b)
{
    const imb_fan_t  *x = a, *y = b;

    return (x->rate > y->rate) - (x->rate < y->rate);
}


static const char *
imb_fan_desc(int t)
{
    if (t == IMB_TARGET_IM) {
        return "one user with N sessions (10 platforms), a second user "
               "sends 1:1 over WebSocket (1003)";
    }

    if (t == IMB_TARGET_NCHAN) {
        return "one channel, N WebSocket subscribers, HTTP POST publisher, "
               "Redis store";
    }

    return "one channel, N WebSocket connections of one user (HS256 "
           "connect token), HTTP API publish";
}


/* ngx_im against the target of f: "x" for figures where more is
 * better, "(lower is better)" for the others */
static void
imb_fanout_ratio(imb_fan_t *m, const char *name, imb_fan_t *f,
    imb_buf_t *json)
{
    double  p99a, p99b, cpua, cpub, rate, p99, cpu, bytes;

    p99a = imb_ms(imb_hist_pct(&m->r.deliv, 99));
    p99b = imb_ms(imb_hist_pct(&f->r.deliv, 99));
    cpua = imb_fan_per(m, 0) + imb_fan_per(m, 1);
    cpub = imb_fan_per(f, 0) + imb_fan_per(f, 1);

    rate = f->rate > 0 ? m->rate / f->rate : 0;
    p99 = p99b > 0 ? p99a / p99b : 0;
    cpu = cpub > 0 ? cpua / cpub : 0;
    bytes = imb_fan_per(f, 2) > 0 ? imb_fan_per(m, 2) / imb_fan_per(f, 2)
                                  : 0;

    if (json) {
        (void) imb_buf_printf(json, "%s\"%s\":{\"deliver_per_s\":%.3f,"
                              "\"p99\":%.3f,\"cpu_per_delivery\":%.3f,"
                              "\"frame_bytes_per_delivery\":%.3f}",
                              json->data[json->len - 1] == '{' ? "" : ",",
                              name, rate, p99, cpu, bytes);
        return;
    }

    printf("  ratio ngx_im/%s: deliveries/s %.2fx; lower is better: p99 "
           "%.2fx, server+redis CPU per delivery %.2fx, frame bytes per "
           "delivery %.2fx\n", name, rate, p99, cpu, bytes);
}


static int
imb_scenario_fanout(imb_proc_t *procs)
{
    int         i, k, n, t[IMB_MAX_TARGETS];
    char       *tl;
    imb_buf_t   b;
    imb_fan_t  *fs, *med[IMB_MAX_TARGETS];

    n = imb_targets(t);
    fs = calloc((size_t) n * cf.rounds, sizeof(imb_fan_t));
    if (fs == NULL) {
        return IMB_ERROR;
    }

    /* fs[k * rounds + i]: target k, round i; the targets alternate */
    for (i = 0; i < cf.rounds; i++) {
        for (k = 0; k < n; k++) {
            if (imb_fanout_run(procs, t[k], 0, &fs[k * cf.rounds + i])
                != IMB_OK)
            {
                free(fs);
                return IMB_ERROR;
            }
        }
    }

    printf("\nfanout: %ld subscribers, %ld messages at %.0f msg/s, %d B "
           "text, %d load process(es), %d round(s)\n", cf.users, cf.count,
           cf.rate, cf.size, cf.procs, cf.rounds);

    for (k = 0; k < n; k++) {
        printf("  %-10s %s\n", imb_target_name(t[k]), imb_fan_desc(t[k]));
    }

    printf("  per delivery: srv, rds = us of the server's (nginx workers, "
           "centrifugo) and its Redis's CPU; B = WebSocket frame bytes, "
           "fr = frames\n");
    printf("  %-10s %9s %9s %7s %7s %7s %8s %7s %4s %9s %6s %6s %6s %5s\n",
           "target", "delivered", "deliv/s", "p50", "p90", "p99", "max",
           "lost", "dup", "pub ok", "srv", "rds", "B", "fr");

    if (cf.rounds > 1) {
        for (i = 0; i < cf.rounds; i++) {
            printf("  round %d\n", i + 1);
            for (k = 0; k < n; k++) {
                imb_fanout_row(imb_target_name(t[k]),
                               &fs[k * cf.rounds + i]);
            }
        }

        printf("  median round\n");
    }

    /* the round with the median rate, each target on its own */
    for (k = 0; k < n; k++) {
        qsort(&fs[k * cf.rounds], cf.rounds, sizeof(imb_fan_t), imb_fan_cmp);
        med[k] = &fs[k * cf.rounds + cf.rounds / 2];
        imb_fanout_row(imb_target_name(t[k]), med[k]);
    }

    for (k = 0; k < n; k++) {
        printf("  %-10s", imb_target_name(t[k]));
        imb_cpu_report(&med[k]->cpu_a, &med[k]->cpu_b, med[k]->r.delivered,
                       "delivery", t[k], NULL);
    }

    for (k = 1; k < n; k++) {
        imb_fanout_ratio(med[0], imb_target_name(t[k]), med[k], NULL);
    }

    for (i = 0; i < n * cf.rounds; i++) {
        if (fs[i].lost || fs[i].r.dup) {
            printf("  !!!!! %s DELIVERY VIOLATION: lost %llu, "
                   "duplicated %llu !!!!!\n",
                   imb_target_name(t[i / cf.rounds]),
                   (unsigned long long) fs[i].lost,
                   (unsigned long long) fs[i].r.dup);
        }
    }

    memset(&b, 0, sizeof(b));

    for (k = 0; k < n; k++) {
        (void) imb_buf_printf(&b, "%s%s", k ? "," : "",
                              imb_target_name(t[k]));
    }

    tl = strndup(b.data, b.len);
    imb_json_begin(&b, "fanout", tl ? tl : "?");
    free(tl);

    (void) imb_buf_printf(&b, ",\"subscribers\":%ld,\"messages\":%ld,"
                          "\"rate\":%.0f,\"size\":%d,\"rounds\":%d",
                          cf.users, cf.count, cf.rate, cf.size, cf.rounds);

    for (k = 0; k < n; k++) {
        (void) imb_buf_add(&b, ",", 1);
        imb_fanout_json(&b, imb_target_name(t[k]), t[k], med[k]);
    }

    if (cf.use_nchan) {
        (void) imb_buf_printf(&b, ",\"ratio_deliver_per_s\":%.3f",
                              med[1]->rate > 0 ? med[0]->rate / med[1]->rate
                                               : 0.0);
    }

    (void) imb_buf_add(&b, ",\"ratio\":{", 10);
    for (k = 1; k < n; k++) {
        imb_fanout_ratio(med[0], imb_target_name(t[k]), med[k], &b);
    }

    (void) imb_buf_add(&b, "},\"rounds_deliver_per_s\":{", 26);
    for (k = 0; k < n; k++) {
        (void) imb_buf_printf(&b, "%s\"%s\":[", k ? "," : "",
                              imb_target_name(t[k]));
        for (i = 0; i < cf.rounds; i++) {
            (void) imb_buf_printf(&b, "%s%.0f", i ? "," : "",
                                  fs[k * cf.rounds + i].rate);
        }
        (void) imb_buf_add(&b, "]", 1);
    }
    (void) imb_buf_add(&b, "}", 1);

    imb_json_end(&b);
    imb_buf_free(&b);
    free(fs);

    return IMB_OK;
}


/* group: each group size and Nchan, alternated, each figure's median */


enum {
    IMB_G_DELIVERED, IMB_G_RATE, IMB_G_P50, IMB_G_P90, IMB_G_P99, IMB_G_MAX,
    IMB_G_LOST, IMB_G_DUP, IMB_G_ACKED, IMB_G_SENT, IMB_G_SEND_ERR,
    IMB_G_NGX_MSG, IMB_G_REDIS_MSG, IMB_G_NGX_DELIV, IMB_G_LOAD_MSG,
    IMB_G_PUB_MSG, IMB_G_CMDS_MSG, IMB_G_ACK_P50, IMB_G_ACK_P99,
    IMB_G_DROPPED, IMB_G_UNEXPECTED,
    IMB_G_TAIL, IMB_G_QUIET, IMB_G_JOBS_MSG, IMB_G_JOBS_DROPPED,
    IMB_G_NGX_MSG_ALL, IMB_G_REDIS_MSG_ALL, IMB_G_CMDS_MSG_ALL,
    IMB_G_REDIS_ERR, IMB_G_OVERFLOW, IMB_G_N
};

static const char  *imb_g_names[IMB_G_N] = {
    "delivered", "deliver_per_s", "deliver_p50_ms", "deliver_p90_ms",
    "deliver_p99_ms", "deliver_max_ms", "lost", "duplicated", "sent_ok",
    "sent", "send_errors", "nginx_us_per_msg", "redis_us_per_msg",
    "nginx_us_per_delivery", "imbench_us_per_msg", "publish_per_msg",
    "redis_cmds_per_msg", "send_ack_p50_ms", "send_ack_p99_ms",
    "dropped", "unexpected",
    "tail_s", "quiet", "offline_push_jobs_per_msg",
    "offline_push_dropped_msgs", "nginx_us_per_msg_to_quiet",
    "redis_us_per_msg_to_quiet", "redis_cmds_per_msg_to_quiet",
    "redis_errors", "send_queue_overflows"
};


static void
imb_group_metrics(imb_fan_t *f, double *m)
{
    double  n, pubs, spubs;

    n = f->r.acked ? (double) f->r.acked : 0;

    m[IMB_G_DELIVERED] = (double) f->r.delivered;
    m[IMB_G_RATE] = f->rate;
    m[IMB_G_P50] = imb_ms(imb_hist_pct(&f->r.deliv, 50));
    m[IMB_G_P90] = imb_ms(imb_hist_pct(&f->r.deliv, 90));
    m[IMB_G_P99] = imb_ms(imb_hist_pct(&f->r.deliv, 99));
    m[IMB_G_MAX] = imb_ms(f->r.deliv.max_us);
    m[IMB_G_LOST] = (double) f->lost;
    m[IMB_G_DUP] = (double) f->r.dup;
    m[IMB_G_ACKED] = (double) f->r.acked;
    m[IMB_G_SENT] = (double) f->r.sent;
    m[IMB_G_SEND_ERR] = (double) f->r.ack_err;
    m[IMB_G_NGX_MSG] = n ? (f->cpu_b.nginx - f->cpu_a.nginx) * 1e6 / n : -1;
    m[IMB_G_REDIS_MSG] = n ? (f->cpu_b.redis - f->cpu_a.redis) * 1e6 / n
                           : -1;
    m[IMB_G_NGX_DELIV] = f->r.delivered
                         ? (f->cpu_b.nginx - f->cpu_a.nginx) * 1e6
                           / f->r.delivered : -1;
    m[IMB_G_LOAD_MSG] = n ? (f->cpu_b.load - f->cpu_a.load) * 1e6 / n : -1;

    pubs = imb_rstat_delta(&f->rs_a, &f->rs_b, "publish");
    spubs = imb_rstat_delta(&f->rs_a, &f->rs_b, "spublish");
    m[IMB_G_PUB_MSG] = n && pubs >= 0 ? (pubs + spubs) / n : -1;
    m[IMB_G_CMDS_MSG] = n && pubs >= 0
                        ? imb_rstat_delta(&f->rs_a, &f->rs_b, NULL) / n : -1;
    m[IMB_G_ACK_P50] = imb_ms(imb_hist_pct(&f->r.ack, 50));
    m[IMB_G_ACK_P99] = imb_ms(imb_hist_pct(&f->r.ack, 99));
    m[IMB_G_DROPPED] = (double) f->r.dropped;
    m[IMB_G_UNEXPECTED] = (double) f->r.unexpected;

    /* ngx_im only: from the phase's start until its Redis was quiet */
    m[IMB_G_TAIL] = f->target == IMB_TARGET_IM ? f->tail : 0;
    m[IMB_G_QUIET] = f->target == IMB_TARGET_IM ? f->quiet : 1;
    m[IMB_G_JOBS_MSG] = -1;
    m[IMB_G_JOBS_DROPPED] = -1;
    m[IMB_G_REDIS_ERR] = -1;
    m[IMB_G_OVERFLOW] = -1;

    if (f->target == IMB_TARGET_IM && f->met_a[0] >= 0 && f->met_q[0] >= 0) {
        m[IMB_G_JOBS_MSG] = n ? (f->met_q[IMB_MET_JOBS]
                                 - f->met_a[IMB_MET_JOBS]) / n : -1;
        m[IMB_G_JOBS_DROPPED] = f->met_q[IMB_MET_DROPPED]
                                - f->met_a[IMB_MET_DROPPED];
        m[IMB_G_REDIS_ERR] = f->met_q[IMB_MET_REDIS_ERR]
                             - f->met_a[IMB_MET_REDIS_ERR];
        m[IMB_G_OVERFLOW] = f->met_q[IMB_MET_OVERFLOW]
                            - f->met_a[IMB_MET_OVERFLOW];
    }

    if (f->target == IMB_TARGET_IM) {
        m[IMB_G_NGX_MSG_ALL] = n ? (f->cpu_q.nginx - f->cpu_a.nginx) * 1e6 / n
                                 : -1;
        m[IMB_G_REDIS_MSG_ALL] = n ? (f->cpu_q.redis - f->cpu_a.redis) * 1e6
                                     / n : -1;
        m[IMB_G_CMDS_MSG_ALL] = n && f->rs_q.ok
                                ? imb_rstat_delta(&f->rs_a, &f->rs_q, NULL)
                                  / n : -1;

    } else {
        m[IMB_G_NGX_MSG_ALL] = m[IMB_G_NGX_MSG];
        m[IMB_G_REDIS_MSG_ALL] = m[IMB_G_REDIS_MSG];
        m[IMB_G_CMDS_MSG_ALL] = m[IMB_G_CMDS_MSG];
    }
}


static void
imb_group_row_all(const char *name, long members, double *m)
{
    char  mem[16], jobs[16], drop[16], cmds[16];

    snprintf(mem, sizeof(mem), "%ld", members);
    snprintf(jobs, sizeof(jobs), "%.0f", m[IMB_G_JOBS_MSG]);
    snprintf(drop, sizeof(drop), "%.0f", m[IMB_G_JOBS_DROPPED]);
    snprintf(cmds, sizeof(cmds), "%.1f", m[IMB_G_CMDS_MSG_ALL]);

    printf("  %-7s %7s %7.1f%s %9s %9s %10.1f %10.1f %9s\n", name,
           members ? mem : "-", m[IMB_G_TAIL], m[IMB_G_QUIET] ? " " : "+",
           m[IMB_G_JOBS_MSG] >= 0 ? jobs : "-",
           m[IMB_G_JOBS_DROPPED] >= 0 ? drop : "-",
           m[IMB_G_NGX_MSG_ALL], m[IMB_G_REDIS_MSG_ALL],
           m[IMB_G_CMDS_MSG_ALL] >= 0 ? cmds : "-");
}


static int
imb_dbl_cmp(const void *a, const void *b)
{
    const double  *x = a, *y = b;

    return (*x > *y) - (*x < *y);
}


/* the median of each figure over n rounds (f[0], f[stride], ...) */
static void
imb_group_median(imb_fan_t *f, int n, int stride, double *med)
{
    int     i, k;
    double  v[16], m[IMB_G_N];

    for (k = 0; k < IMB_G_N; k++) {
        for (i = 0; i < n; i++) {
            imb_group_metrics(&f[i * stride], m);
            v[i] = m[k];
        }

        qsort(v, n, sizeof(double), imb_dbl_cmp);
        med[k] = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    }
}


static void
imb_group_row(const char *name, long members, double *m)
{
    char  mem[16], pub[16], cmds[16];

    snprintf(mem, sizeof(mem), "%ld", members);
    snprintf(pub, sizeof(pub), "%.2f", m[IMB_G_PUB_MSG]);
    snprintf(cmds, sizeof(cmds), "%.1f", m[IMB_G_CMDS_MSG]);

    printf("  %-7s %7s %9.0f %7.2f %7.2f %8.2f %6.0f %4.0f %5.0f/%-5.0f "
           "%8.1f %8.1f %7.2f %6s %6s\n", name, members ? mem : "-",
           m[IMB_G_RATE], m[IMB_G_P50], m[IMB_G_P99], m[IMB_G_MAX],
           m[IMB_G_LOST], m[IMB_G_DUP], m[IMB_G_ACKED], m[IMB_G_SENT],
           m[IMB_G_NGX_MSG], m[IMB_G_REDIS_MSG], m[IMB_G_NGX_DELIV],
           m[IMB_G_PUB_MSG] >= 0 ? pub : "-",
           m[IMB_G_CMDS_MSG] >= 0 ? cmds : "-");
}


/* Redis commands per message over every round of one column */
static void
imb_group_cmds(const char *name, imb_fan_t *f, int n, int stride,
    imb_buf_t *json)
{
    int       i, k, j, first;
    double    acked, d;
    char      seen[IMB_RSTAT_MAX];
    imb_fan_t  *x;

    acked = 0;
    for (i = 0; i < n; i++) {
        acked += f[i * stride].r.acked;
    }

    if (acked == 0 || !f[0].rs_b.ok) {
        return;
    }

    if (json == NULL) {
        printf("    %s Redis calls/msg (sent ok: %.0f):", name, acked);
    }

    memset(seen, 0, sizeof(seen));
    first = 1;

    for (k = 0; k < f[0].rs_b.n; k++) {
        d = 0;
        for (i = 0; i < n; i++) {
            x = &f[i * stride];
            for (j = 0; j < x->rs_b.n; j++) {
                if (strcmp(x->rs_b.name[j], f[0].rs_b.name[k]) == 0) {
                    d += x->rs_b.calls[j]
                         - imb_rstat_calls(&x->rs_a, x->rs_b.name[j]);
                }
            }
        }

        if (strcmp(f[0].rs_b.name[k], "info") == 0 || d / acked < 0.005) {
            continue;
        }

        if (json) {
            (void) imb_buf_printf(json, "%s\"%s\":%.3f", first ? "" : ",",
                                  f[0].rs_b.name[k], d / acked);
        } else {
            printf(" %s %.2f", f[0].rs_b.name[k], d / acked);
        }

        first = 0;
    }

    if (json == NULL) {
        printf("\n");
    }
}


static void
imb_group_cmds_quiet(const char *name, imb_fan_t *f, int n, int stride)
{
    int           i;
    char          label[80];
    imb_rstat_t  *save;

    save = malloc(n * sizeof(imb_rstat_t));
    if (save == NULL) {
        return;
    }

    for (i = 0; i < n; i++) {
        save[i] = f[i * stride].rs_b;
        f[i * stride].rs_b = f[i * stride].rs_q;
    }

    snprintf(label, sizeof(label), "%s to quiet:", name);
    imb_group_cmds(label, f, n, stride, NULL);

    for (i = 0; i < n; i++) {
        f[i * stride].rs_b = save[i];
    }

    free(save);
}


static void
imb_group_json(imb_buf_t *b, const char *target, long members, imb_fan_t *f,
    int n, int stride)
{
    int     i, k;
    double  med[IMB_G_N], m[IMB_G_N];

    imb_group_median(f, n, stride, med);

    (void) imb_buf_printf(b, "{\"target\":\"%s\",\"members\":%ld,"
                          "\"median\":{", target, members);
    for (k = 0; k < IMB_G_N; k++) {
        (void) imb_buf_printf(b, "%s\"%s\":%.3f", k ? "," : "",
                              imb_g_names[k], med[k]);
    }

    (void) imb_buf_add(b, "},\"redis_calls_per_msg\":{", 25);
    imb_group_cmds(target, f, n, stride, b);
    (void) imb_buf_add(b, "},\"rounds\":[", 12);

    for (i = 0; i < n; i++) {
        imb_group_metrics(&f[i * stride], m);
        (void) imb_buf_printf(b, "%s{\"deliver_per_s\":%.1f,"
                              "\"deliver_p50_ms\":%.3f,\"deliver_p99_ms\":%.3f,"
                              "\"lost\":%.0f,\"duplicated\":%.0f,"
                              "\"nginx_us_per_msg\":%.2f,"
                              "\"redis_us_per_msg\":%.2f,"
                              "\"publish_per_msg\":%.3f}", i ? "," : "",
                              m[IMB_G_RATE], m[IMB_G_P50], m[IMB_G_P99],
                              m[IMB_G_LOST], m[IMB_G_DUP], m[IMB_G_NGX_MSG],
                              m[IMB_G_REDIS_MSG], m[IMB_G_PUB_MSG]);
    }

    (void) imb_buf_add(b, "]}", 2);
}


static int
imb_scenario_group(imb_proc_t *procs)
{
    int         i, g, cols, bad;
    char        name[32];
    double      med[IMB_G_N], nmed[IMB_G_N], m[IMB_G_N];
    imb_buf_t   b;
    imb_fan_t  *fs, *f;

    /* columns: every group size, then Nchan */
    cols = cf.nmembers + cf.use_nchan;
    fs = calloc((size_t) cols * cf.rounds, sizeof(imb_fan_t));
    if (fs == NULL) {
        return IMB_ERROR;
    }

    for (i = 0; i < cf.rounds; i++) {
        for (g = 0; g < cols; g++) {
            f = &fs[i * cols + g];

            if (imb_fanout_run(procs, g < cf.nmembers ? IMB_TARGET_IM
                                                      : IMB_TARGET_NCHAN,
                               g < cf.nmembers ? g : 0, f)
                != IMB_OK)
            {
                free(fs);
                return IMB_ERROR;
            }

            imb_group_metrics(f, m);
            snprintf(name, sizeof(name), g < cf.nmembers ? "ngx_im M=%ld"
                                                         : "nchan",
                     g < cf.nmembers ? cf.members[g] : 0L);
            fprintf(stderr, "imbench: round %d %s: %.0f deliveries/s, "
                    "p99 %.1f ms, lost %.0f, nginx %.1f us/msg, redis "
                    "%.1f us/msg\n", i + 1, name, m[IMB_G_RATE],
                    m[IMB_G_P99], m[IMB_G_LOST], m[IMB_G_NGX_MSG],
                    m[IMB_G_REDIS_MSG]);
        }
    }

    printf("\ngroup: %ld members online, %ld messages at %.0f msg/s (%.0f "
           "s), %d B text, %d load process(es), %d round(s)\n", cf.users,
           cf.count, cf.rate, cf.duration, cf.size, cf.procs, cf.rounds);
    printf("  ngx_im: a group of M members (created with 1000, the rest "
           "invited 1000 at a time); members 0..%ld online, one session "
           "each; member %ld sends over WebSocket (1003, sessionType 3)\n",
           cf.users - 1, cf.users);
    if (cf.use_nchan) {
        printf("  nchan:  one channel, %ld WebSocket subscribers, HTTP POST "
               "publisher, Redis store\n", cf.users);
    }
    printf("  CPU per message: (CPU of the workers or Redis during the "
           "phase) / messages sent ok; deliv/s: deliveries / (first send "
           "to last delivery)\n");
    printf("  %-7s %7s %9s %7s %7s %8s %6s %4s %11s %8s %8s %7s %6s %6s\n",
           "target", "members", "deliv/s", "p50", "p99", "max", "lost",
           "dup", "sent ok", "ngx us/m", "rds us/m", "ngx us/d", "pub/m",
           "cmds/m");

    if (cf.rounds > 1) {
        for (i = 0; i < cf.rounds; i++) {
            printf("  round %d\n", i + 1);
            for (g = 0; g < cols; g++) {
                f = &fs[i * cols + g];
                imb_group_metrics(f, m);
                imb_group_row(g < cf.nmembers ? "ngx_im" : "nchan",
                              f->members, m);
            }
        }

        printf("  median of the rounds, figure by figure\n");
    }

    if (cf.use_nchan) {
        imb_group_median(&fs[cf.nmembers], cf.rounds, cols, nmed);
    }

    for (g = 0; g < cols; g++) {
        imb_group_median(&fs[g], cf.rounds, cols, med);
        imb_group_row(g < cf.nmembers ? "ngx_im" : "nchan",
                      g < cf.nmembers ? cf.members[g] : 0, med);
    }

    for (g = 0; g < cols; g++) {
        snprintf(name, sizeof(name), g < cf.nmembers ? "ngx_im M=%ld"
                                                     : "nchan",
                 g < cf.nmembers ? cf.members[g] : 0L);
        imb_group_cmds(name, &fs[g], cf.rounds, cols, NULL);
    }

    for (g = 0; cf.use_nchan && g < cf.nmembers; g++) {
        imb_group_median(&fs[g], cf.rounds, cols, med);
        printf("  ratio ngx_im(M=%ld)/nchan: deliveries/s %.2fx, p50 %.2fx, "
               "p99 %.2fx, nginx CPU/msg %.2fx, Redis CPU/msg %.2fx "
               "(latency and CPU: lower is better)\n", cf.members[g],
               nmed[IMB_G_RATE] > 0 ? med[IMB_G_RATE] / nmed[IMB_G_RATE] : 0,
               nmed[IMB_G_P50] > 0 ? med[IMB_G_P50] / nmed[IMB_G_P50] : 0,
               nmed[IMB_G_P99] > 0 ? med[IMB_G_P99] / nmed[IMB_G_P99] : 0,
               nmed[IMB_G_NGX_MSG] > 0
               ? med[IMB_G_NGX_MSG] / nmed[IMB_G_NGX_MSG] : 0,
               nmed[IMB_G_REDIS_MSG] > 0
               ? med[IMB_G_REDIS_MSG] / nmed[IMB_G_REDIS_MSG] : 0);
    }

    printf("  until ngx_im's Redis was quiet again (tail: s after the last "
           "delivery; + still busy at --settle %.0f s), medians:\n",
           cf.settle);
    printf("  %-7s %7s %8s %9s %9s %10s %10s %9s\n", "target", "members",
           "tail s", "jobs/msg", "dropped", "ngx us/m", "rds us/m",
           "cmds/m");

    for (g = 0; g < cols; g++) {
        imb_group_median(&fs[g], cf.rounds, cols, med);
        imb_group_row_all(g < cf.nmembers ? "ngx_im" : "nchan",
                          g < cf.nmembers ? cf.members[g] : 0, med);
    }

    for (g = 0; cf.use_nchan && g < cf.nmembers; g++) {
        imb_group_median(&fs[g], cf.rounds, cols, med);
        printf("  ratio ngx_im(M=%ld)/nchan to quiet: nginx CPU/msg %.2fx, "
               "Redis CPU/msg %.2fx\n", cf.members[g],
               nmed[IMB_G_NGX_MSG_ALL] > 0
               ? med[IMB_G_NGX_MSG_ALL] / nmed[IMB_G_NGX_MSG_ALL] : 0,
               nmed[IMB_G_REDIS_MSG_ALL] > 0
               ? med[IMB_G_REDIS_MSG_ALL] / nmed[IMB_G_REDIS_MSG_ALL] : 0);
    }

    for (g = 0; g < cf.nmembers; g++) {
        snprintf(name, sizeof(name), "ngx_im M=%ld", cf.members[g]);
        imb_group_cmds_quiet(name, &fs[g], cf.rounds, cols);
    }

    bad = 0;

    for (i = 0; i < cf.rounds; i++) {
        for (g = 0; g < cols; g++) {
            f = &fs[i * cols + g];

            if (f->lost || f->r.dup || f->r.ack_err
                || f->r.acked != f->r.sent || f->r.dropped)
            {
                printf("  !!!!! %s%s round %d: lost %llu, duplicated %llu, "
                       "sent %llu, ok %llu, send errors %llu (last %lld), "
                       "not sent %llu, dropped connections %llu, unexpected "
                       "frames %llu !!!!!\n",
                       g < cf.nmembers ? "ngx_im group of " : "nchan",
                       g < cf.nmembers ? (snprintf(name, sizeof(name), "%ld",
                                                   cf.members[g]), name)
                                       : "", i + 1,
                       (unsigned long long) f->lost,
                       (unsigned long long) f->r.dup,
                       (unsigned long long) f->r.sent,
                       (unsigned long long) f->r.acked,
                       (unsigned long long) f->r.ack_err, f->r.last_err,
                       (unsigned long long) f->r.skipped,
                       (unsigned long long) f->r.dropped,
                       (unsigned long long) f->r.unexpected);
                imb_print_errors(&f->r);
                bad |= g < cf.nmembers;
            }
        }
    }

    memset(&b, 0, sizeof(b));
    imb_json_begin(&b, "group", cf.use_nchan ? "ngx_im,nchan" : "ngx_im");
    (void) imb_buf_printf(&b, ",\"online\":%ld,\"messages\":%ld,"
                          "\"rate\":%.0f,\"duration\":%.1f,\"size\":%d,"
                          "\"rounds\":%d,\"results\":[", cf.users, cf.count,
                          cf.rate, cf.duration, cf.size, cf.rounds);

    for (g = 0; g < cols; g++) {
        if (g) {
            (void) imb_buf_add(&b, ",", 1);
        }
        imb_group_json(&b, g < cf.nmembers ? "ngx_im" : "nchan",
                       g < cf.nmembers ? cf.members[g] : 0, &fs[g],
                       cf.rounds, cols);
    }

    (void) imb_buf_add(&b, "]", 1);

    if (cf.use_nchan) {
        (void) imb_buf_add(&b, ",\"ratio\":[", 10);
        for (g = 0; g < cf.nmembers; g++) {
            imb_group_median(&fs[g], cf.rounds, cols, med);
            (void) imb_buf_printf(&b, "%s{\"members\":%ld,"
                                  "\"deliver_per_s\":%.3f,\"p99\":%.3f,"
                                  "\"nginx_us_per_msg\":%.3f,"
                                  "\"redis_us_per_msg\":%.3f}",
                                  g ? "," : "", cf.members[g],
                                  nmed[IMB_G_RATE] > 0
                                  ? med[IMB_G_RATE] / nmed[IMB_G_RATE] : 0,
                                  nmed[IMB_G_P99] > 0
                                  ? med[IMB_G_P99] / nmed[IMB_G_P99] : 0,
                                  nmed[IMB_G_NGX_MSG] > 0
                                  ? med[IMB_G_NGX_MSG] / nmed[IMB_G_NGX_MSG]
                                  : 0,
                                  nmed[IMB_G_REDIS_MSG] > 0
                                  ? med[IMB_G_REDIS_MSG]
                                    / nmed[IMB_G_REDIS_MSG] : 0);
        }
        (void) imb_buf_add(&b, "]", 1);
    }

    imb_json_end(&b);
    imb_buf_free(&b);
    free(fs);

    return bad ? IMB_ERROR : IMB_OK;
}


static int
imb_run(void)
{
    int         rc;
    imb_proc_t  procs[IMB_MAX_PROCS];

    if (imb_spawn(procs) != IMB_OK) {
        return IMB_ERROR;
    }

    switch (cf.scenario[0]) {

    case 'c':
        rc = strcmp(cf.scenario, "connect") == 0
             ? imb_scenario_connect(procs) : imb_scenario_chat(procs);
        break;

    case 'f':
        rc = imb_scenario_fanout(procs);
        break;

    case 'g':
        rc = imb_scenario_group(procs);
        break;

    default:
        rc = imb_scenario_sweep(procs);
        break;
    }

    imb_reap(procs);

    return rc;
}
