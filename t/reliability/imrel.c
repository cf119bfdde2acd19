
/*
 * imrel: the reference system's reliability test (MISSION.md item 2),
 * stricter, against ngx_im.
 *
 *   imrel run [options]    run the clients, then verify their files
 *   imrel verify DIR       verify the files of an earlier run
 *
 * Clients start offline, sleep a random 0..T s and log in.  Even-numbered
 * clients send and receive, odd ones only receive.  Each sender sends
 * 1:1 messages to random other clients, online or not.  A client stores
 * every message it learns of (push, pull, or its own ack) in its file,
 * in seq order per conversation, before it counts it; a message that
 * arrives after a gap waits in memory until the gap is pulled.  On every
 * login it aligns with GetNewestSeq (1001) and pulls (1002) what it
 * lacks, as an SDK does; a seq gap in pushes triggers a pull too.  A
 * send whose answer is lost with the connection is sent again with the
 * same clientMsgID after the next login; transient errors are retried.
 *
 * Faults: SIGKILL a random nginx worker, nginx reload (SIGHUP), one Redis
 * restart (a shell command), dropped client connections.
 *
 * The verdict is computed from the files alone: every acked clientMsgID
 * is stored exactly once by its recipient, with the acked seq; no failed
 * one is stored; every stored message of another user was acked; per
 * client and conversation the stored seqs are 1, 2, 3, ... up to the
 * server's final max seq.  Exit status 1 on any violation.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "imb.h"


#define IMR_MAX_INFLIGHT     32
#define IMR_REQS             256
#define IMR_PULL_MAX         100
#define IMR_TICK_NS          5000000ULL

#define IMR_OFF              0
#define IMR_CONNECTING       1
#define IMR_ONLINE           2

#define IMR_REQ_NONE         0
#define IMR_REQ_NEWEST       1
#define IMR_REQ_PULL         2
#define IMR_REQ_SEND         3

#define IMR_M_NEW            0
#define IMR_M_INFLIGHT       1
#define IMR_M_RETRY          2
#define IMR_M_ACKED          3
#define IMR_M_FAILED         4

#define IMR_VIA_PUSH         'p'
#define IMR_VIA_PULL         'l'
#define IMR_VIA_ACK          'a'

#define imr_sec(s)           ((uint64_t) ((s) * 1e9))


typedef struct {
    uint64_t               seq;
    char                  *line;       /* the record, ready to store */
} imr_held_t;


typedef struct {
    char                   id[160];
    uint64_t               synced;     /* 1..synced are stored */
    uint64_t               known;      /* highest seq known to exist */
    int                    pulling;
    int                    stalls;     /* pulls that did not advance */
    imr_held_t            *held;
    int                    nheld;
    int                    held_cap;
    uint64_t               final_max;
    int                    final_seen;
} imr_conv_t;


typedef struct {
    int                    type;
    uint64_t               incr;
    int                    conv;
    uint64_t               begin;
    uint64_t               end;
    long                   msg;
} imr_req_t;


typedef struct {
    int                    client;
    int                    to;
    int                    bad;        /* invalid on purpose */
    int                    state;
    int                    tries;
    int                    transient;
    uint64_t               next_try;
    char                   cmid[48];
} imr_msg_t;


typedef struct {
    imb_conn_t             c;
    int                    idx;
    int                    state;
    int                    sender;
    char                  *uid;
    char                  *token;
    uint64_t               wake;
    FILE                  *rf;
    FILE                  *sf;
    imr_conv_t            *convs;      /* by peer client */
    imr_req_t              reqs[IMR_REQS];
    uint64_t               incr;
    int                    inflight;
    long                  *retry;
    int                    nretry;
    int                    retry_cap;
    double                 credit;
    int                    newest;     /* a 1001 in flight */
    int                    final;      /* 0, 1 asked, 2 done */
    uint64_t               logins;
} imr_client_t;


typedef struct {
    struct sockaddr_in     addr;
    const char            *ws_path;
    const char            *api_path;
    const char            *dir;
    const char            *pid_file;
    const char            *redis_cmd;
    int                    clients;
    long                   messages;
    double                 rate;
    double                 sleep_max;
    double                 kill_every;
    int                    kills_max;
    double                 reload_every;
    int                    reloads_max;
    double                 redis_at;
    double                 drop_every;
    double                 offline_max;
    double                 bad_pct;
    int                    retries;
    double                 timeout;
    int                    fsync;
    uint64_t               seed;
} imr_conf_t;


typedef struct {
    uint64_t               logins;
    uint64_t               login_failures;
    uint64_t               refusals;
    uint64_t               disconnects;
    uint64_t               drops;
    uint64_t               kills;
    uint64_t               reloads;
    uint64_t               redis_restarts;
    uint64_t               sends;
    uint64_t               resends;
    uint64_t               transient;
    uint64_t               pushes;
    uint64_t               pulls;
    uint64_t               pulled;
    uint64_t               redundant;
    uint64_t               holes;
    uint64_t               protocol;
} imr_stats_t;


static imr_conf_t      rc;
static imr_stats_t     st;
static imb_loop_t      loop;
static imr_client_t   *cl;
static imr_msg_t      *msgs;
static long            nmsgs;
static long            resolved;
static char            tag[16];
static uint64_t        t0;
static uint64_t        next_kill;
static uint64_t        next_reload;
static uint64_t        next_drop;
static pid_t           redis_child;
static int             redis_done;
static int             finishing;
static int             finished;
static FILE           *events;
static imb_buf_t       out;


static int imr_parse(int argc, char **argv);
static int imr_run(void);
static void imr_tick(imb_loop_t *l, void *data);
static void imr_connect(imr_client_t *c);
static void imr_open(imb_conn_t *conn);
static void imr_message(imb_conn_t *conn, int op, char *data, size_t len);
static void imr_response(imb_conn_t *conn, int status, char *body,
    size_t len);
static void imr_closed(imb_conn_t *conn, int why, int err);
static void imr_offline(imr_client_t *c, double for_s);
static int imr_request(imr_client_t *c, int type, int req_id,
    const char *data, imr_req_t **req);
static void imr_newest(imr_client_t *c);
static void imr_newest_done(imr_client_t *c, imb_js_t *data);
static void imr_pull_check(imr_client_t *c, int peer);
static void imr_pull_done(imr_client_t *c, imr_req_t *req, imb_js_t *data,
    int ok);
static void imr_got(imr_client_t *c, imb_js_t *msg, int via);
static void imr_hold(imr_client_t *c, int peer, uint64_t seq, char *line);
static void imr_commit(imr_client_t *c, int peer);
static void imr_send_some(imr_client_t *c);
static void imr_send(imr_client_t *c, long m);
static void imr_retry_add(imr_client_t *c, long m);
static int imr_busy(imr_client_t *c);
static void imr_ack(imr_client_t *c, imr_req_t *req, imb_js_t *root);
static void imr_resolve(imr_msg_t *m, int state, long long code);
static int imr_peer(imr_client_t *c, imb_js_t *a, imb_js_t *b);
static void imr_faults(void);
static void imr_event(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static int imr_verify(const char *dir, int nclients);


static const imb_handler_t  imr_handler = {
    imr_open, imr_message, imr_response, imr_closed
};


int
main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (argc >= 3 && strcmp(argv[1], "verify") == 0) {
        return imr_verify(argv[2], argc >= 4 ? atoi(argv[3]) : 0) == 0
               ? 0 : 1;
    }

    if (argc < 2 || strcmp(argv[1], "run") != 0
        || imr_parse(argc, argv) != IMB_OK)
    {
        fprintf(stderr,
"usage: imrel run [options] | imrel verify DIR\n"
"  -s HOST:PORT          ngx_im (127.0.0.1:8080)\n"
"  -c N                  clients (50); even ones send, odd ones receive\n"
"  -M N                  messages to send (100000)\n"
"  -r RATE               msg/s over all online senders (1000)\n"
"  --sleep S             initial offline time, random 0..S (60)\n"
"  --dir DIR             files per client (build/reliability)\n"
"  --pid-file PATH       nginx pid file, for the nginx faults\n"
"  --kill-every S        SIGKILL a random worker every S s (0: off)\n"
"  --kills N             at most N kills (0: no limit)\n"
"  --reload-every S      nginx reload every S s (0: off)\n"
"  --reloads N           at most N reloads (0: no limit)\n"
"  --redis-at S          run --redis-cmd once, S s after the start\n"
"  --redis-cmd CMD       restarts Redis (sh -c)\n"
"  --drop-every S        drop a random client connection every S s\n"
"  --offline S           a dropped client stays away 0..S s (2)\n"
"  --bad PCT             invalid sends on purpose, must fail (1)\n"
"  --retries N           retries of transient send errors (20)\n"
"  --timeout S           give up after S s (600)\n"
"  --fsync               fdatasync received messages before counting\n"
"  --seed N\n");
        return 2;
    }

    return imr_run();
}


static int
imr_parse(int argc, char **argv)
{
    int                   ch, idx;
    static struct option  opts[] = {
        { "sleep", required_argument, NULL, 1 },
        { "dir", required_argument, NULL, 2 },
        { "pid-file", required_argument, NULL, 3 },
        { "kill-every", required_argument, NULL, 4 },
        { "kills", required_argument, NULL, 5 },
        { "reload-every", required_argument, NULL, 6 },
        { "reloads", required_argument, NULL, 7 },
        { "redis-at", required_argument, NULL, 8 },
        { "redis-cmd", required_argument, NULL, 9 },
        { "drop-every", required_argument, NULL, 10 },
        { "offline", required_argument, NULL, 11 },
        { "bad", required_argument, NULL, 12 },
        { "retries", required_argument, NULL, 13 },
        { "timeout", required_argument, NULL, 14 },
        { "fsync", no_argument, NULL, 15 },
        { "seed", required_argument, NULL, 16 },
        { "ws-path", required_argument, NULL, 17 },
        { "api-path", required_argument, NULL, 18 },
        { NULL, 0, NULL, 0 }
    };

    (void) imb_addr("127.0.0.1:8080", &rc.addr);
    rc.ws_path = "/im/ws";
    rc.api_path = "/im/api";
    rc.dir = "build/reliability";
    rc.clients = 50;
    rc.messages = 100000;
    rc.rate = 1000;
    rc.sleep_max = 60;
    rc.offline_max = 2;
    rc.bad_pct = 1;
    rc.retries = 20;
    rc.timeout = 600;

    optind = 2;

    while ((ch = getopt_long(argc, argv, "s:c:M:r:", opts, &idx)) != -1) {
        switch (ch) {
        case 's':
            if (imb_addr(optarg, &rc.addr) != IMB_OK) {
                return IMB_ERROR;
            }
            break;
        case 'c': rc.clients = atoi(optarg); break;
        case 'M': rc.messages = atol(optarg); break;
        case 'r': rc.rate = atof(optarg); break;
        case 1: rc.sleep_max = atof(optarg); break;
        case 2: rc.dir = optarg; break;
        case 3: rc.pid_file = optarg; break;
        case 4: rc.kill_every = atof(optarg); break;
        case 5: rc.kills_max = atoi(optarg); break;
        case 6: rc.reload_every = atof(optarg); break;
        case 7: rc.reloads_max = atoi(optarg); break;
        case 8: rc.redis_at = atof(optarg); break;
        case 9: rc.redis_cmd = optarg; break;
        case 10: rc.drop_every = atof(optarg); break;
        case 11: rc.offline_max = atof(optarg); break;
        case 12: rc.bad_pct = atof(optarg); break;
        case 13: rc.retries = atoi(optarg); break;
        case 14: rc.timeout = atof(optarg); break;
        case 15: rc.fsync = 1; break;
        case 16: rc.seed = strtoull(optarg, NULL, 10); break;
        case 17: rc.ws_path = optarg; break;
        case 18: rc.api_path = optarg; break;
        default:
            return IMB_ERROR;
        }
    }

    if (rc.clients < 2 || rc.clients > 10000 || rc.messages < 1
        || rc.rate <= 0)
    {
        fprintf(stderr, "imrel: need -c >= 2, -M >= 1, -r > 0\n");
        return IMB_ERROR;
    }

    if ((rc.kill_every > 0 || rc.reload_every > 0) && rc.pid_file == NULL)
    {
        fprintf(stderr, "imrel: nginx faults need --pid-file\n");
        return IMB_ERROR;
    }

    if (rc.redis_at > 0 && rc.redis_cmd == NULL) {
        fprintf(stderr, "imrel: --redis-at needs --redis-cmd\n");
        return IMB_ERROR;
    }

    return IMB_OK;
}


static void
imr_event(const char *fmt, ...)
{
    char     text[512];
    va_list  ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);

    printf("imrel: %7.2f s  %s\n", (imb_now_ns() - t0) / 1e9, text);

    if (events) {
        fprintf(events, "%.3f %s\n", (imb_now_ns() - t0) / 1e9, text);
        fflush(events);
    }
}


static int
imr_setup(void)
{
    int            i, p;
    char           path[4096];
    char         **names, **tokens;
    FILE          *f;
    imb_api_t      api;
    imr_client_t  *c;

    memset(&api, 0, sizeof(api));
    api.addr = rc.addr;
    api.api = rc.api_path;
    api.secret = "openIM123";
    api.admin = "imAdmin";
    api.parallel = 8;

    names = calloc(rc.clients, sizeof(char *));
    tokens = calloc(rc.clients, sizeof(char *));
    cl = calloc(rc.clients, sizeof(imr_client_t));
    if (names == NULL || tokens == NULL || cl == NULL) {
        return IMB_ERROR;
    }

    for (i = 0; i < rc.clients; i++) {
        if (asprintf(&names[i], "r%s-%d", tag, i) < 0) {
            return IMB_ERROR;
        }
    }

    if (imb_api_admin(&api) != IMB_OK
        || imb_api_register(&api, names, rc.clients) != IMB_OK
        || imb_api_tokens(&api, names, rc.clients, 1, tokens) != IMB_OK)
    {
        fprintf(stderr, "imrel: set-up: %s\n", api.err);
        return IMB_ERROR;
    }

    if (mkdir(rc.dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "imrel: mkdir %s: %s\n", rc.dir, strerror(errno));
        return IMB_ERROR;
    }

    snprintf(path, sizeof(path), "%s/events.log", rc.dir);
    events = fopen(path, "w");

    snprintf(path, sizeof(path), "%s/clients", rc.dir);

    f = fopen(path, "w");
    if (f == NULL) {
        return IMB_ERROR;
    }

    for (i = 0; i < rc.clients; i++) {
        fprintf(f, "%d %s %d\n", i, names[i], i % 2 == 0);
    }

    fclose(f);

    for (i = 0; i < rc.clients; i++) {
        c = &cl[i];
        c->idx = i;
        c->uid = names[i];
        c->token = tokens[i];
        c->sender = i % 2 == 0;
        c->state = IMR_OFF;
        c->c.state = IMB_CONN_IDLE;
        c->wake = t0 + (uint64_t) (imb_frand() * imr_sec(rc.sleep_max));

        c->convs = calloc(rc.clients, sizeof(imr_conv_t));
        if (c->convs == NULL) {
            return IMB_ERROR;
        }

        for (p = 0; p < rc.clients; p++) {
            imb_conv_single(names[i], names[p], c->convs[p].id,
                            sizeof(c->convs[p].id));
        }

        snprintf(path, sizeof(path), "%s/recv-%d.log", rc.dir, i);
        c->rf = fopen(path, "w");
        snprintf(path, sizeof(path), "%s/sent-%d.log", rc.dir, i);
        c->sf = fopen(path, "w");

        if (c->rf == NULL || c->sf == NULL) {
            fprintf(stderr, "imrel: %s: %s\n", path, strerror(errno));
            return IMB_ERROR;
        }

        setvbuf(c->rf, NULL, _IOFBF, 65536);
        setvbuf(c->sf, NULL, _IOFBF, 65536);
    }

    msgs = calloc(rc.messages, sizeof(imr_msg_t));
    if (msgs == NULL) {
        return IMB_ERROR;
    }

    free(names);
    free(tokens);

    return IMB_OK;
}


static int
imr_run(void)
{
    int       i, rcode;
    long      limit;
    uint64_t  deadline;

    limit = imb_raise_nofile();
    (void) limit;

    imb_srand(rc.seed);
    snprintf(tag, sizeof(tag), "%06x", (unsigned) (imb_rand() & 0xffffff));

    if (imb_loop_init(&loop) != IMB_OK) {
        return 1;
    }

    t0 = imb_now_ns();

    if (imr_setup() != IMB_OK) {
        return 1;
    }

    t0 = imb_now_ns();
    next_kill = rc.kill_every > 0 ? t0 + imr_sec(rc.kill_every) : 0;
    next_reload = rc.reload_every > 0 ? t0 + imr_sec(rc.reload_every) : 0;
    next_drop = rc.drop_every > 0 ? t0 + imr_sec(rc.drop_every) : 0;
    redis_done = rc.redis_at <= 0;
    deadline = t0 + imr_sec(rc.timeout);

    imr_event("%d clients (%d senders), %ld messages at %.0f msg/s, "
              "sleep 0..%.0f s, run tag %s, files in %s", rc.clients,
              (rc.clients + 1) / 2, rc.messages, rc.rate, rc.sleep_max, tag,
              rc.dir);

    loop.tick_ns = IMR_TICK_NS;
    loop.next_tick = loop.now;
    loop.tick = imr_tick;

    while (!finished && loop.now < deadline) {
        imb_loop_once(&loop, 50);
    }

    if (!finished) {
        imr_event("TIMEOUT after %.0f s: %ld of %ld sends issued, %ld "
                  "resolved", rc.timeout, nmsgs, rc.messages, resolved);
    }

    for (i = 0; i < rc.clients; i++) {
        imb_conn_close(&cl[i].c, 0);
        fflush(cl[i].sf);
        fflush(cl[i].rf);
        fclose(cl[i].rf);
        fclose(cl[i].sf);
    }

    if (redis_child > 0) {
        (void) waitpid(redis_child, NULL, 0);
    }

    imr_event("run over: logins %llu (failed %llu, refused %llu), "
              "disconnects %llu (dropped by us %llu), worker kills %llu, "
              "reloads %llu, redis restarts %llu",
              (unsigned long long) st.logins,
              (unsigned long long) st.login_failures,
              (unsigned long long) st.refusals,
              (unsigned long long) st.disconnects,
              (unsigned long long) st.drops,
              (unsigned long long) st.kills,
              (unsigned long long) st.reloads,
              (unsigned long long) st.redis_restarts);
    imr_event("sends %llu, resends %llu, transient errors %llu, pushes "
              "%llu, pulls %llu (%llu messages), redundant %llu, holes "
              "%llu, protocol errors %llu",
              (unsigned long long) st.sends,
              (unsigned long long) st.resends,
              (unsigned long long) st.transient,
              (unsigned long long) st.pushes,
              (unsigned long long) st.pulls,
              (unsigned long long) st.pulled,
              (unsigned long long) st.redundant,
              (unsigned long long) st.holes,
              (unsigned long long) st.protocol);

    if (events) {
        fclose(events);
        events = NULL;
    }

    rcode = imr_verify(rc.dir, rc.clients);

    return rcode != 0 || !finished ? 1 : 0;
}


/* the schedule: logins, sends, faults, the end */


static void
imr_tick(imb_loop_t *l, void *data)
{
    int            i, all;
    imr_client_t  *c;

    (void) l;
    (void) data;

    imr_faults();

    if (!finishing && nmsgs == rc.messages && resolved == nmsgs
        && redis_done)
    {
        finishing = 1;
        imr_event("all %ld sends resolved; faults stop, every client "
                  "logs in and syncs", nmsgs);
    }

    all = 1;

    for (i = 0; i < rc.clients; i++) {
        c = &cl[i];

        if (c->state == IMR_OFF) {
            if (loop.now >= c->wake || finishing) {
                imr_connect(c);
            }

            all = 0;
            continue;
        }

        if (c->state != IMR_ONLINE) {
            all = 0;
            continue;
        }

        if (c->sender) {
            imr_send_some(c);
        }

        if (finishing) {
            if (c->final == 0 && c->newest == 0 && !imr_busy(c)) {
                c->final = 1;
                imr_newest(c);
            }

            if (c->final != 2) {
                all = 0;
            }
        }
    }

    if (finishing && all && !finished) {
        finished = 1;
        imr_event("final sync done");
    }
}


static void
imr_faults(void)
{
    int            i, j, k, n, status;
    long           master, pids[64], all[64];
    char           path[300], line[512];
    FILE          *f;
    imr_client_t  *c;

    if (redis_child > 0
        && waitpid(redis_child, &status, WNOHANG) == redis_child)
    {
        imr_event("redis restart done (status %d)", status);
        redis_child = 0;
        redis_done = 1;
    }

    if (finishing) {
        return;
    }

    if (rc.redis_at > 0 && !redis_done && redis_child == 0
        && loop.now >= t0 + imr_sec(rc.redis_at))
    {
        imr_event("restarting redis: %s", rc.redis_cmd);
        st.redis_restarts++;
        redis_child = fork();

        if (redis_child == 0) {
            execl("/bin/sh", "sh", "-c", rc.redis_cmd, (char *) NULL);
            _exit(127);
        }

        if (redis_child < 0) {
            redis_child = 0;
            redis_done = 1;
        }
    }

    if (next_drop && loop.now >= next_drop) {
        next_drop += imr_sec(rc.drop_every);

        for (n = 0; n < 10; n++) {
            c = &cl[imb_randn(rc.clients)];

            if (c->state == IMR_ONLINE) {
                st.drops++;
                imb_conn_close(&c->c, 1);
                imr_offline(c, imb_frand() * rc.offline_max);
                break;
            }
        }
    }

    if ((next_kill && loop.now >= next_kill)
        || (next_reload && loop.now >= next_reload))
    {
        f = fopen(rc.pid_file, "r");
        master = f && fgets(line, sizeof(line), f) ? atol(line) : 0;
        if (f) {
            fclose(f);
        }

        if (master <= 0) {
            imr_event("fault skipped: no nginx master pid in %s",
                      rc.pid_file);
        }
    } else {
        return;
    }

    if (next_reload && loop.now >= next_reload) {
        st.reloads++;
        next_reload = rc.reloads_max && st.reloads >= (uint64_t) rc.reloads_max
                      ? 0 : next_reload + imr_sec(rc.reload_every);

        if (master > 0) {
            imr_event("nginx reload (SIGHUP to %ld)", master);
            (void) kill((pid_t) master, SIGHUP);
        }
    }

    if (!next_kill || loop.now < next_kill) {
        return;
    }

    st.kills++;
    next_kill = rc.kills_max && st.kills >= (uint64_t) rc.kills_max
                ? 0 : next_kill + imr_sec(rc.kill_every);

    /* workers still serving, not ones shutting down after a reload */
    k = imb_children(master, all, 64);
    n = 0;

    for (j = 0; j < k; j++) {
        snprintf(path, sizeof(path), "/proc/%ld/cmdline", all[j]);
        f = fopen(path, "r");
        line[0] = '\0';
        if (f) {
            i = (int) fread(line, 1, sizeof(line) - 1, f);
            line[i > 0 ? i : 0] = '\0';
            fclose(f);
        }

        if (strstr(line, "worker process") && !strstr(line, "shutting down"))
        {
            pids[n++] = all[j];
        }
    }

    if (n == 0) {
        imr_event("worker kill skipped: no worker found");
        return;
    }

    i = (int) imb_randn(n);
    imr_event("SIGKILL nginx worker %ld (of %d)", pids[i], n);
    (void) kill((pid_t) pids[i], SIGKILL);
}


/* connections */


static void
imr_connect(imr_client_t *c)
{
    int   i;
    char  path[2048];

    snprintf(path, sizeof(path),
             "%s?sendID=%s&token=%s&platformID=1&operationID=rel%d-%llu",
             rc.ws_path, c->uid, c->token, c->idx,
             (unsigned long long) c->logins);

    for (i = 0; i < IMR_REQS; i++) {
        c->reqs[i].type = IMR_REQ_NONE;
    }

    c->newest = 0;
    c->final = 0;

    if (imb_conn_connect(&c->c, &loop, &rc.addr, c->idx, IMB_KIND_WS, path,
                         &imr_handler, c)
        != IMB_OK)
    {
        st.login_failures++;
        imr_offline(c, 0.2 + imb_frand() * 0.8);
        return;
    }

    c->state = IMR_CONNECTING;
}


static void
imr_open(imb_conn_t *conn)
{
    imr_client_t  *c = conn->data;

    c->state = IMR_ONLINE;
    c->logins++;
    st.logins++;

    /* align with the server first, as an SDK does after a login */
    imr_newest(c);
}


static void
imr_offline(imr_client_t *c, double for_s)
{
    int         i;
    imr_req_t  *r;
    imr_msg_t  *m;

    for (i = 0; i < IMR_REQS; i++) {
        r = &c->reqs[i];

        if (r->type == IMR_REQ_SEND) {
            /* the answer is lost: send it again after the next login */
            m = &msgs[r->msg];
            if (m->state == IMR_M_INFLIGHT) {
                m->state = IMR_M_RETRY;
                m->next_try = 0;
                imr_retry_add(c, r->msg);
            }

        } else if (r->type == IMR_REQ_PULL) {
            c->convs[r->conv].pulling = 0;
        }

        r->type = IMR_REQ_NONE;
    }

    c->inflight = 0;
    c->newest = 0;
    c->final = 0;
    c->state = IMR_OFF;
    c->wake = loop.now + (uint64_t) (for_s * 1e9);
}


static void
imr_closed(imb_conn_t *conn, int why, int err)
{
    imr_client_t  *c = conn->data;

    if (why == IMB_END_LOCAL) {
        /* imr_faults() or the end: the caller decides what follows */
        return;
    }

    if (c->state == IMR_CONNECTING) {
        st.login_failures++;

    } else {
        st.disconnects++;
    }

    (void) err;

    /* reconnect soon, like an SDK's backoff */
    imr_offline(c, 0.1 + imb_frand() * 0.5);
}


static void
imr_response(imb_conn_t *conn, int status, char *body, size_t len)
{
    imr_client_t  *c = conn->data;

    if (++st.refusals <= 3) {
        imr_event("login of %s refused: HTTP %d %.*s%s", c->uid, status,
                  (int) (len > 120 ? 120 : len), body,
                  st.refusals == 3 ? " (no more of these)" : "");
    }
}


/* requests */


static int
imr_request(imr_client_t *c, int type, int req_id, const char *data,
    imr_req_t **req)
{
    int         i;
    char        incr[32];
    imr_req_t  *r;

    for (i = 0; i < IMR_REQS; i++) {
        r = &c->reqs[(c->incr + i) % IMR_REQS];
        if (r->type == IMR_REQ_NONE) {
            break;
        }
    }

    if (i == IMR_REQS) {
        return IMB_ERROR;
    }

    c->incr += i + 1;
    r->type = type;
    r->incr = c->incr;
    *req = r;

    if (type == IMR_REQ_SEND) {
        /* imr_send() encodes it */
        return IMB_OK;
    }

    snprintf(incr, sizeof(incr), "%llu", (unsigned long long) c->incr);

    out.len = 0;

    if (imb_codec_json.request(&out, req_id, incr, data) != IMB_OK
        || imb_ws_send(&c->c, imb_codec_json.opcode, out.data, out.len)
           != IMB_OK)
    {
        r->type = IMR_REQ_NONE;
        return IMB_ERROR;
    }

    return IMB_OK;
}


static imr_req_t *
imr_find(imr_client_t *c, imb_js_t *root)
{
    uint64_t    incr;
    imb_js_t    v, s;
    imr_req_t  *r;

    if (imb_js_get(root, "msgIncr", &v) != IMB_OK
        || imb_js_str(&v, &s) != IMB_OK || s.e == s.p)
    {
        return NULL;
    }

    incr = strtoull(s.p, NULL, 10);
    r = &c->reqs[(incr - 1) % IMR_REQS];

    return r->type != IMR_REQ_NONE && r->incr == incr ? r : NULL;
}


static void
imr_message(imb_conn_t *conn, int op, char *data, size_t len)
{
    long long       id, code;
    imb_js_t        root, v, d, msgs_v, key, arr, msg;
    imr_req_t      *r;
    imr_client_t   *c = conn->data;
    imb_js_iter_t   ci, mi;

    (void) op;

    if (imb_js_value(data, data + len, &root) != IMB_OK
        || imb_js_get(&root, "reqIdentifier", &v) != IMB_OK)
    {
        st.protocol++;
        return;
    }

    id = imb_js_int(&v);

    if (id == 2001) {
        st.pushes++;

        if (imb_js_get(&root, "data", &d) != IMB_OK
            || imb_js_get(&d, "msgs", &msgs_v) != IMB_OK
            || imb_js_iter(&msgs_v, &ci) != IMB_OK)
        {
            st.protocol++;
            return;
        }

        while (imb_js_next(&ci, &key, &arr) == 1) {
            if (imb_js_iter(&arr, &mi) != IMB_OK) {
                st.protocol++;
                break;
            }

            while (imb_js_next(&mi, NULL, &msg) == 1) {
                imr_got(c, &msg, IMR_VIA_PUSH);
            }
        }

        goto done;
    }

    r = imr_find(c, &root);
    if (r == NULL) {
        st.protocol++;
        return;
    }

    code = imb_js_get(&root, "errCode", &v) == IMB_OK ? imb_js_int(&v) : -1;
    if (imb_js_get(&root, "data", &d) != IMB_OK) {
        d.p = d.e = "";
    }

    switch (r->type) {

    case IMR_REQ_SEND:
        imr_ack(c, r, &root);
        break;

    case IMR_REQ_NEWEST:
        c->newest = 0;

        if (code == 0) {
            imr_newest_done(c, &d);

        } else if (c->final == 1) {
            c->final = 0;
        }

        break;

    case IMR_REQ_PULL:
        imr_pull_done(c, r, &d, code == 0);
        break;
    }

    r->type = IMR_REQ_NONE;

done:

    fflush(c->rf);
    fflush(c->sf);

    if (rc.fsync) {
        (void) fdatasync(fileno(c->rf));
    }
}


/* sync */


static void
imr_newest(imr_client_t *c)
{
    imr_req_t  *r;

    if (imr_request(c, IMR_REQ_NEWEST, 1001, "{}", &r) == IMB_OK) {
        c->newest = 1;
    }
}


static void
imr_newest_done(imr_client_t *c, imb_js_t *data)
{
    int             peer, pending;
    uint64_t        max;
    imb_js_t        maxs, key, val;
    imr_conv_t     *cv;
    imb_js_iter_t   it;

    if (imb_js_get(data, "maxSeqs", &maxs) != IMB_OK
        || imb_js_iter(&maxs, &it) != IMB_OK)
    {
        st.protocol++;
        return;
    }

    while (imb_js_next(&it, &key, &val) == 1) {
        for (peer = 0; peer < rc.clients; peer++) {
            if (imb_js_eq(&key, c->convs[peer].id)) {
                break;
            }
        }

        if (peer == rc.clients) {
            continue;
        }

        cv = &c->convs[peer];
        max = (uint64_t) imb_js_int(&val);

        if (max > cv->known) {
            cv->known = max;
        }

        if (c->final == 1) {
            cv->final_max = max;
            cv->final_seen = 1;
        }

        imr_pull_check(c, peer);
    }

    if (c->final != 1) {
        return;
    }

    /* the final sync is done once nothing is missing */
    pending = 0;

    for (peer = 0; peer < rc.clients; peer++) {
        cv = &c->convs[peer];

        if (cv->pulling || cv->synced < cv->final_max || cv->nheld) {
            pending = 1;
        }
    }

    if (pending) {
        /* ask again once the pulls are in */
        c->final = 0;
        return;
    }

    for (peer = 0; peer < rc.clients; peer++) {
        cv = &c->convs[peer];

        if (cv->final_seen) {
            fprintf(c->rf, "M %s %llu\n", cv->id,
                    (unsigned long long) cv->final_max);
        }
    }

    c->final = 2;
}


static void
imr_pull_check(imr_client_t *c, int peer)
{
    char         data[512];
    uint64_t     end;
    imr_req_t   *r;
    imr_conv_t  *cv;

    cv = &c->convs[peer];

    if (cv->pulling || cv->known <= cv->synced || c->state != IMR_ONLINE) {
        return;
    }

    /* from the bottom up, at most a page at a time */
    end = cv->synced + IMR_PULL_MAX;
    if (end > cv->known) {
        end = cv->known;
    }

    snprintf(data, sizeof(data),
             "{\"seqRanges\":[{\"conversationID\":\"%s\",\"begin\":%llu,"
             "\"end\":%llu,\"num\":%d}]}", cv->id,
             (unsigned long long) cv->synced + 1, (unsigned long long) end,
             IMR_PULL_MAX);

    if (imr_request(c, IMR_REQ_PULL, 1002, data, &r) != IMB_OK) {
        return;
    }

    r->conv = peer;
    r->begin = cv->synced + 1;
    r->end = end;
    cv->pulling = 1;
    st.pulls++;
}


static void
imr_pull_done(imr_client_t *c, imr_req_t *req, imb_js_t *data, int ok)
{
    int             peer;
    uint64_t        before, s;
    imb_js_t        msgs_v, conv, arr, list, msg;
    imr_conv_t     *cv;
    imb_js_iter_t   ci, mi;

    peer = req->conv;
    cv = &c->convs[peer];
    cv->pulling = 0;
    before = cv->synced;

    if (ok && imb_js_get(data, "msgs", &msgs_v) == IMB_OK
        && imb_js_iter(&msgs_v, &ci) == IMB_OK)
    {
        while (imb_js_next(&ci, &conv, &arr) == 1) {
            if (imb_js_get(&arr, "Msgs", &list) != IMB_OK
                || imb_js_iter(&list, &mi) != IMB_OK)
            {
                continue;
            }

            while (imb_js_next(&mi, NULL, &msg) == 1) {
                st.pulled++;
                imr_got(c, &msg, IMR_VIA_PULL);
            }
        }
    }

    if (cv->synced >= req->end || cv->synced > before) {
        cv->stalls = 0;

    } else if (ok && ++cv->stalls >= 5) {
        /* the server does not have these: a hole, recorded as such */
        for (s = cv->synced + 1; s <= req->end; s++) {
            fprintf(c->rf, "H %s %llu\n", cv->id, (unsigned long long) s);
            st.holes++;
        }

        imr_event("HOLE: %s lacks %s seq %llu..%llu on the server",
                  c->uid, cv->id, (unsigned long long) cv->synced + 1,
                  (unsigned long long) req->end);
        cv->synced = req->end;
        cv->stalls = 0;
        imr_commit(c, peer);
    }

    imr_pull_check(c, peer);

}


/* 1 while pulls are on their way or messages wait for a gap */
static int
imr_busy(imr_client_t *c)
{
    int  i;

    for (i = 0; i < rc.clients; i++) {
        if (c->convs[i].pulling || c->convs[i].nheld) {
            return 1;
        }
    }

    return 0;
}


/* a message of a push, a pull or an ack: stored in seq order */
static void
imr_got(imr_client_t *c, imb_js_t *msg, int via)
{
    int          peer;
    char        *line;
    uint64_t     seq;
    imb_js_t     v, send, recv, cmid;
    imr_conv_t  *cv;

    if (imb_js_get(msg, "seq", &v) != IMB_OK
        || (seq = (uint64_t) imb_js_int(&v)) == 0
        || imb_js_get(msg, "sendID", &v) != IMB_OK
        || imb_js_str(&v, &send) != IMB_OK
        || imb_js_get(msg, "recvID", &v) != IMB_OK
        || imb_js_str(&v, &recv) != IMB_OK
        || imb_js_get(msg, "clientMsgID", &v) != IMB_OK
        || imb_js_str(&v, &cmid) != IMB_OK)
    {
        st.protocol++;
        return;
    }

    peer = imr_peer(c, &send, &recv);
    if (peer < 0) {
        st.protocol++;
        return;
    }

    cv = &c->convs[peer];

    if (seq > cv->known) {
        cv->known = seq;
    }

    if (seq <= cv->synced) {
        st.redundant++;
        return;
    }

    if (asprintf(&line, "R %s %llu %.*s %.*s %.*s %c\n", cv->id,
                 (unsigned long long) seq, (int) (send.e - send.p), send.p,
                 (int) (recv.e - recv.p), recv.p, (int) (cmid.e - cmid.p),
                 cmid.p, via)
        < 0)
    {
        return;
    }

    imr_hold(c, peer, seq, line);
    imr_commit(c, peer);

    /* a gap: pull it, unless a pull is on its way */
    imr_pull_check(c, peer);
}


static int
imr_peer(imr_client_t *c, imb_js_t *send, imb_js_t *recv)
{
    int        i;
    imb_js_t  *other;

    if (imb_js_eq(send, c->uid)) {
        other = recv;

    } else if (imb_js_eq(recv, c->uid)) {
        other = send;

    } else {
        return -1;
    }

    /* "r<tag>-<n>" */
    if (other->e - other->p < 9 || memcmp(other->p + 1, tag, 6) != 0) {
        return -1;
    }

    i = atoi(other->p + 8);

    return i >= 0 && i < rc.clients && imb_js_eq(other, cl[i].uid) ? i : -1;
}


static void
imr_hold(imr_client_t *c, int peer, uint64_t seq, char *line)
{
    int          i, cap;
    imr_conv_t  *cv;
    imr_held_t  *h;

    cv = &c->convs[peer];

    for (i = 0; i < cv->nheld; i++) {
        if (cv->held[i].seq == seq) {
            st.redundant++;
            free(line);
            return;
        }
    }

    if (cv->nheld == cv->held_cap) {
        cap = cv->held_cap ? 2 * cv->held_cap : 16;
        h = realloc(cv->held, cap * sizeof(imr_held_t));
        if (h == NULL) {
            free(line);
            return;
        }

        cv->held = h;
        cv->held_cap = cap;
    }

    cv->held[cv->nheld].seq = seq;
    cv->held[cv->nheld].line = line;
    cv->nheld++;
}


/* stores held messages while they continue the conversation */
static void
imr_commit(imr_client_t *c, int peer)
{
    int          i, found;
    imr_conv_t  *cv;

    cv = &c->convs[peer];

    do {
        found = 0;

        for (i = 0; i < cv->nheld; i++) {
            if (cv->held[i].seq <= cv->synced) {
                free(cv->held[i].line);
                cv->held[i--] = cv->held[--cv->nheld];
                continue;
            }

            if (cv->held[i].seq == cv->synced + 1) {
                fputs(cv->held[i].line, c->rf);
                free(cv->held[i].line);
                cv->held[i] = cv->held[--cv->nheld];
                cv->synced++;
                found = 1;
                break;
            }
        }

    } while (found);
}


/* sending */


static void
imr_send_some(imr_client_t *c)
{
    int        i, senders;
    long       m;
    imr_msg_t *mp;

    /* first what must go again */
    for (i = 0; i < c->nretry && c->inflight < IMR_MAX_INFLIGHT; i++) {
        m = c->retry[i];
        mp = &msgs[m];

        if (mp->state != IMR_M_RETRY) {
            c->retry[i--] = c->retry[--c->nretry];
            continue;
        }

        if (mp->next_try > loop.now) {
            continue;
        }

        c->retry[i--] = c->retry[--c->nretry];
        st.resends++;
        imr_send(c, m);
    }

    if (finishing || nmsgs >= rc.messages) {
        return;
    }

    senders = (rc.clients + 1) / 2;
    c->credit += rc.rate / senders * (IMR_TICK_NS / 1e9);

    if (c->credit > 10) {
        c->credit = 10;
    }

    while (c->credit >= 1 && c->inflight < IMR_MAX_INFLIGHT
           && nmsgs < rc.messages)
    {
        c->credit -= 1;

        m = nmsgs++;
        mp = &msgs[m];
        mp->client = c->idx;
        mp->to = (int) imb_randn(rc.clients - 1);
        if (mp->to >= c->idx) {
            mp->to++;
        }

        mp->bad = imb_frand() * 100 < rc.bad_pct;
        mp->state = IMR_M_NEW;
        snprintf(mp->cmid, sizeof(mp->cmid), "%s-%d-%ld", tag, c->idx, m);

        fprintf(c->sf, "S %s %s %d\n", mp->cmid, cl[mp->to].uid, mp->bad);
        imr_send(c, m);
    }
}


static void
imr_send(imr_client_t *c, long m)
{
    char        incr[32], text[64];
    imr_req_t  *r;
    imr_msg_t  *mp;

    mp = &msgs[m];

    if (imr_request(c, IMR_REQ_SEND, 1003, NULL, &r) != IMB_OK) {
        goto later;
    }

    snprintf(incr, sizeof(incr), "%llu", (unsigned long long) r->incr);
    snprintf(text, sizeof(text), "reliability %ld", m);

    out.len = 0;

    if (imb_codec_json.send_msg(&out, incr, c->uid, cl[mp->to].uid, NULL,
                                mp->cmid, mp->bad ? 999 : 101, text)
        != IMB_OK
        || imb_ws_send(&c->c, imb_codec_json.opcode, out.data, out.len)
           != IMB_OK)
    {
        r->type = IMR_REQ_NONE;
        goto later;
    }

    r->msg = m;
    mp->state = IMR_M_INFLIGHT;
    mp->tries++;
    c->inflight++;
    st.sends++;

    return;

later:

    mp->state = IMR_M_RETRY;
    mp->next_try = loop.now + 100000000;
    imr_retry_add(c, m);
}


static void
imr_retry_add(imr_client_t *c, long m)
{
    long  *p;
    int    cap;

    if (c->nretry == c->retry_cap) {
        cap = c->retry_cap ? 2 * c->retry_cap : 64;
        p = realloc(c->retry, cap * sizeof(long));
        if (p == NULL) {
            fprintf(stderr, "imrel: out of memory\n");
            exit(1);
        }

        c->retry = p;
        c->retry_cap = cap;
    }

    c->retry[c->nretry++] = m;
}


static void
imr_ack(imr_client_t *c, imr_req_t *req, imb_js_t *root)
{
    int          peer;
    char        *line;
    uint64_t     seq;
    long long    code;
    imb_js_t     v, d, s;
    imr_msg_t   *m;
    imr_conv_t  *cv;

    m = &msgs[req->msg];
    c->inflight--;

    if (m->state != IMR_M_INFLIGHT) {
        return;
    }

    code = imb_js_get(root, "errCode", &v) == IMB_OK ? imb_js_int(&v) : -1;

    if (code == 0) {
        if (imb_js_get(root, "data", &d) != IMB_OK
            || imb_js_get(&d, "seq", &v) != IMB_OK
            || (seq = (uint64_t) imb_js_int(&v)) == 0
            || imb_js_get(&d, "clientMsgID", &v) != IMB_OK
            || imb_js_str(&v, &s) != IMB_OK
            || !imb_js_eq(&s, m->cmid))
        {
            st.protocol++;
            imr_event("PROTOCOL: bad ack for %s", m->cmid);
            return;
        }

        peer = m->to;
        cv = &c->convs[peer];

        fprintf(c->sf, "A %s %s %s %llu\n", m->cmid, cl[peer].uid, cv->id,
                (unsigned long long) seq);
        imr_resolve(m, IMR_M_ACKED, 0);

        /* the sender's copy of its own message */
        if (seq > cv->known) {
            cv->known = seq;
        }

        if (seq > cv->synced
            && asprintf(&line, "R %s %llu %s %s %s %c\n", cv->id,
                        (unsigned long long) seq, c->uid, cl[peer].uid,
                        m->cmid, IMR_VIA_ACK) >= 0)
        {
            imr_hold(c, peer, seq, line);
            imr_commit(c, peer);
            imr_pull_check(c, peer);
        }

        return;
    }

    /* storage or network trouble: the same clientMsgID again, later */
    if ((code == 90004 || code == 500 || code < 0)
        && m->transient < rc.retries)
    {
        m->transient++;
        st.transient++;
        m->state = IMR_M_RETRY;
        m->next_try = loop.now + 100000000ULL * (m->transient < 20
                                                 ? m->transient : 20);
        imr_retry_add(c, req->msg);
        return;
    }

    fprintf(c->sf, "F %s %s %lld\n", m->cmid, cl[m->to].uid, code);
    imr_resolve(m, IMR_M_FAILED, code);

    if (!m->bad) {
        imr_event("send of %s failed for good: errCode %lld", m->cmid,
                  code);
    }
}


static void
imr_resolve(imr_msg_t *m, int state, long long code)
{
    (void) code;

    if (m->state == IMR_M_ACKED || m->state == IMR_M_FAILED) {
        return;
    }

    m->state = state;
    resolved++;
}


/* the verdict, from the files */


typedef struct {
    char                  *cmid;
    int                    sender;
    int                    to;
    int                    bad;
    int                    state;      /* 0 unknown, 1 acked, 2 failed */
    uint64_t               seq;
    int                    receipts;
    uint64_t               got_seq;
} imr_rec_t;


typedef struct {
    imr_rec_t             *slots;
    size_t                 cap;
    size_t                 n;
} imr_tab_t;


static uint64_t
imr_hash(const char *s, size_t n)
{
    uint64_t  h;

    h = 1469598103934665603ULL;
    while (n--) {
        h = (h ^ (unsigned char) *s++) * 1099511628211ULL;
    }

    return h;
}


static imr_rec_t *
imr_tab_get(imr_tab_t *t, const char *key, size_t n, int create)
{
    size_t      i, k;
    imr_rec_t  *old, *r;
    size_t      cap;

    if (create && (t->n + 1) * 2 > t->cap) {
        old = t->slots;
        cap = t->cap;
        t->cap = cap ? 2 * cap : 65536;
        t->slots = calloc(t->cap, sizeof(imr_rec_t));
        t->n = 0;

        for (k = 0; k < cap; k++) {
            if (old[k].cmid) {
                r = imr_tab_get(t, old[k].cmid, strlen(old[k].cmid), 1);
                *r = old[k];
            }
        }

        free(old);
    }

    if (t->cap == 0) {
        return NULL;
    }

    i = imr_hash(key, n) & (t->cap - 1);

    for ( ;; ) {
        r = &t->slots[i];

        if (r->cmid == NULL) {
            if (!create) {
                return NULL;
            }

            r->cmid = strndup(key, n);
            r->sender = r->to = -1;
            t->n++;
            return r;
        }

        if (strlen(r->cmid) == n && memcmp(r->cmid, key, n) == 0) {
            return r;
        }

        i = (i + 1) & (t->cap - 1);
    }
}


typedef struct {
    char                  *id;
    uint64_t               last;
    uint64_t               max;
    int                    has_max;
} imr_vconv_t;


static int
imr_verify(const char *dir, int nclients)
{
    int           i, j, owner, to, nconv, ncap;
    size_t        k;
    char          path[4096], line[1024], a[256], b[256], c3[256], d[256];
    char          e[256], via;
    FILE         *f;
    uint64_t      seq, viol;
    imr_tab_t     tab;
    imr_rec_t    *r;
    imr_vconv_t  *convs, *cv;
    char        **uids;
    unsigned long long  n_sent, n_bad, n_acked, n_failed, n_unknown;
    unsigned long long  n_recv, lost, dup, failed_recv, not_acked, wrong_seq;
    unsigned long long  gaps, holes, incomplete, own;
    unsigned long long  failed_good;

    memset(&tab, 0, sizeof(tab));

    /* the client list */
    snprintf(path, sizeof(path), "%s/clients", dir);
    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "imrel: %s: %s\n", path, strerror(errno));
        return -1;
    }

    uids = NULL;
    i = 0;
    while (fgets(line, sizeof(line), f)) {
        uids = realloc(uids, (i + 1) * sizeof(char *));
        if (sscanf(line, "%d %255s", &j, a) == 2) {
            uids[i++] = strdup(a);
        }
    }
    fclose(f);

    if (nclients <= 0 || nclients > i) {
        nclients = i;
    }

    n_sent = n_bad = n_acked = n_failed = 0;

    /* what the senders know */
    for (i = 0; i < nclients; i++) {
        snprintf(path, sizeof(path), "%s/sent-%d.log", dir, i);
        f = fopen(path, "r");
        if (f == NULL) {
            continue;
        }

        while (fgets(line, sizeof(line), f)) {
            if (line[0] == 'S' && sscanf(line, "S %255s %255s %d", a, b, &j)
                                  == 3)
            {
                r = imr_tab_get(&tab, a, strlen(a), 1);
                r->sender = i;
                r->bad = j;
                for (to = 0; to < nclients; to++) {
                    if (strcmp(uids[to], b) == 0) {
                        r->to = to;
                    }
                }
                n_sent++;
                n_bad += j;

            } else if (line[0] == 'A'
                       && sscanf(line, "A %255s %255s %255s %llu", a, b, c3,
                                 (unsigned long long *) &seq) == 4)
            {
                r = imr_tab_get(&tab, a, strlen(a), 1);
                r->state = 1;
                r->seq = seq;
                n_acked++;

            } else if (line[0] == 'F' && sscanf(line, "F %255s", a) == 1) {
                r = imr_tab_get(&tab, a, strlen(a), 1);
                r->state = 2;
                n_failed++;
            }
        }

        fclose(f);
    }

    n_recv = lost = dup = failed_recv = not_acked = wrong_seq = 0;
    gaps = holes = incomplete = own = failed_good = 0;
    viol = 0;

    /* what the recipients stored */
    for (owner = 0; owner < nclients; owner++) {
        snprintf(path, sizeof(path), "%s/recv-%d.log", dir, owner);
        f = fopen(path, "r");
        if (f == NULL) {
            continue;
        }

        convs = NULL;
        nconv = ncap = 0;

        while (fgets(line, sizeof(line), f)) {
            a[0] = '\0';
            seq = 0;

            if (line[0] == 'R') {
                if (sscanf(line, "R %255s %llu %255s %255s %255s %c", a,
                           (unsigned long long *) &seq, b, c3, d, &via)
                    != 6)
                {
                    continue;
                }

            } else if (line[0] == 'H' || line[0] == 'M') {
                if (sscanf(line, "%*c %255s %llu", a,
                           (unsigned long long *) &seq) != 2)
                {
                    continue;
                }

            } else {
                continue;
            }

            cv = NULL;
            for (j = 0; j < nconv; j++) {
                if (strcmp(convs[j].id, a) == 0) {
                    cv = &convs[j];
                    break;
                }
            }

            if (cv == NULL) {
                if (nconv == ncap) {
                    ncap = ncap ? 2 * ncap : 64;
                    convs = realloc(convs, ncap * sizeof(imr_vconv_t));
                }

                cv = &convs[nconv++];
                memset(cv, 0, sizeof(*cv));
                cv->id = strdup(a);
            }

            if (line[0] == 'M') {
                cv->max = seq;
                cv->has_max = 1;
                continue;
            }

            if (seq != cv->last + 1) {
                if (gaps < 10) {
                    printf("  GAP/ORDER: client %d %s: seq %llu after "
                           "%llu\n", owner, a, (unsigned long long) seq,
                           (unsigned long long) cv->last);
                }
                gaps++;
            }

            if (seq > cv->last) {
                cv->last = seq;
            }

            if (line[0] == 'H') {
                holes++;
                continue;
            }

            snprintf(e, sizeof(e), "%s", b);

            if (strcmp(e, uids[owner]) == 0) {
                /* the owner's own message (ack, or pulled back) */
                own++;
                continue;
            }

            if (strcmp(c3, uids[owner]) != 0) {
                continue;
            }

            n_recv++;
            r = imr_tab_get(&tab, d, strlen(d), 0);

            if (r == NULL || r->state == 0) {
                if (not_acked < 10) {
                    printf("  RECEIVED BUT NOT ACKED: %s at client %d\n", d,
                           owner);
                }
                not_acked++;
                continue;
            }

            if (r->state == 2) {
                if (failed_recv < 10) {
                    printf("  FAILED BUT RECEIVED: %s at client %d\n", d,
                           owner);
                }
                failed_recv++;
                continue;
            }

            r->receipts++;

            if (r->receipts > 1) {
                if (dup < 10) {
                    printf("  DUPLICATE: %s stored again at client %d seq "
                           "%llu\n", d, owner, (unsigned long long) seq);
                }
                dup++;
            }

            if (r->seq != seq) {
                if (wrong_seq < 10) {
                    printf("  WRONG SEQ: %s acked as %llu, stored as %llu\n",
                           d, (unsigned long long) r->seq,
                           (unsigned long long) seq);
                }
                wrong_seq++;
            }
        }

        fclose(f);

        for (j = 0; j < nconv; j++) {
            if (!convs[j].has_max || convs[j].last != convs[j].max) {
                if (incomplete < 10) {
                    printf("  INCOMPLETE: client %d %s stored up to %llu, "
                           "server max %s%llu\n", owner, convs[j].id,
                           (unsigned long long) convs[j].last,
                           convs[j].has_max ? "" : "unknown ",
                           (unsigned long long) convs[j].max);
                }
                incomplete++;
            }

            free(convs[j].id);
        }

        free(convs);
    }

    n_unknown = 0;

    for (k = 0; k < tab.cap; k++) {
        r = &tab.slots[k];

        if (r->cmid == NULL) {
            continue;
        }

        if (r->state == 0) {
            n_unknown++;
        }

        if (r->state == 2 && !r->bad) {
            failed_good++;
        }

        if (r->state == 1 && r->receipts == 0) {
            if (lost < 10) {
                printf("  LOST: %s (acked seq %llu) never stored by client "
                       "%d\n", r->cmid, (unsigned long long) r->seq, r->to);
            }
            lost++;
        }

        if (r->state == 1 && r->bad) {
            if (wrong_seq < 10) {
                printf("  INVALID MESSAGE ACCEPTED: %s\n", r->cmid);
            }
            wrong_seq++;
        }

        free(r->cmid);
    }

    free(tab.slots);

    viol = lost + dup + failed_recv + not_acked + wrong_seq + gaps + holes
           + incomplete;

    printf("\nreliability verdict (%s, %d clients)\n", dir, nclients);
    printf("  sends:      %llu (invalid on purpose %llu), acked %llu, "
           "failed %llu (valid ones failing %llu), unresolved %llu\n",
           n_sent, n_bad, n_acked, n_failed, failed_good, n_unknown);
    printf("  receipts:   %llu stored by their recipients, lost %llu, "
           "duplicated %llu, wrong seq %llu\n", n_recv, lost, dup,
           wrong_seq);
    printf("  failed but received %llu, received but not acked %llu\n",
           failed_recv, not_acked);
    printf("  per-conversation order: gaps/out of order %llu, holes %llu, "
           "not synced to the server's max %llu; own copies %llu\n", gaps,
           holes, incomplete, own);
    printf("VERDICT: %s\n", viol == 0 && n_unknown == 0 ? "PASS" : "FAIL");

    for (i = 0; i < nclients; i++) {
        free(uids[i]);
    }
    free(uids);

    return viol == 0 && n_unknown == 0 ? 0 : 1;
}
