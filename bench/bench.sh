#!/usr/bin/env bash
# The benchmark set: builds bench/imbench, starts private servers (ngx_im
# on its own Redis; Nchan on another Redis, in its own nginx), runs the
# scenarios, stops the servers.  Results go to stdout and to
# build/bench/results/<time>.{txt,jsonl}.
#
#   bench/bench.sh                   the short default set (a few minutes
#                                    on 2 cores): connect chat conv fanout
#                                    sweep group
#   bench/bench.sh chat fanout       only these
#   bench/bench.sh --full            the targets' sizes: 100,000 idle
#                                    connections (6 load processes, 8
#                                    workers), longer chat and sweep steps
#   bench/bench.sh --mongo           ngx_im with MongoDB history
#                                    (build/bin/imferret, see build.sh)
#   bench/bench.sh --cluster         ngx_im on a local Redis Cluster of 3
#                                    masters (no replicas), instead of one
#                                    Redis
#   bench/bench.sh --centrifugo fanout connect
#                                    Centrifugo v6.9.1 as a peer: fanout
#                                    and connect also run against it
#                                    (memory engine, and Redis engine on a
#                                    Redis of its own), and connect against
#                                    Nchan too.  The first use builds it
#                                    with `go install` (Go module proxy)
#                                    into build/bench/centrifugo; not with
#                                    --full connect (one process: the
#                                    20,000-fd limit)
#   bench/bench.sh --codec pb fanout ngx_im's clients speak protobuf
#                                    (binary frames) instead of JSON
#
# Environment: IMB_PORT, IMB_REDIS_PORT, IMB_NCHAN_PORT,
# IMB_NCHAN_REDIS_PORT (18080, 16390, 18081, 16391), IMB_CF_PORT,
# IMB_CF_REDIS_ENGINE_PORT, IMB_CF_REDIS_PORT (Centrifugo with the memory
# engine, with the Redis engine, and that engine's Redis: 18082, 18083,
# 16393), IMB_WORKERS (2), IM_MODULE (build/nginx/ngx_http_im_module.so),
# IMB_FANOUT (fanout's messages and rate: "-k 400 -r 200").
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export IMB_BASE=${IMB_BASE:-$ROOT/build/bench}
STACK=$ROOT/bench/stack.sh
BIN=$IMB_BASE/imbench
PORT=${IMB_PORT:-18080}
REDIS_PORT=${IMB_REDIS_PORT:-16390}
NCHAN_PORT=${IMB_NCHAN_PORT:-18081}
NCHAN_REDIS_PORT=${IMB_NCHAN_REDIS_PORT:-16391}
MONGO_PORT=${IMB_MONGO_PORT:-17018}
CF_PORT=${IMB_CF_PORT:-18082}
CF_REDIS_ENGINE_PORT=${IMB_CF_REDIS_ENGINE_PORT:-18083}
CF_REDIS_PORT=${IMB_CF_REDIS_PORT:-16393}
CF_VERSION=v6.9.1
CF_MOD=github.com/centrifugal/centrifugo/v6
export CENTRIFUGO=$IMB_BASE/centrifugo
WORKERS=${IMB_WORKERS:-2}
FERRET=$ROOT/build/bin/imferret

log() { printf 'bench.sh: %s\n' "$*" >&2; }

full=0
mongo=0
cluster=0
centrifugo=0
codec=json
CLUSTER_PORT=${IMB_CLUSTER_PORT:-17000}
scenarios=()
prev=
for a in "$@"; do
    if [ "$prev" = --codec ]; then codec=$a; prev=; continue; fi
    case "$a" in
        --codec) prev=$a ;;
        --full) full=1 ;;
        --mongo) mongo=1 ;;
        --cluster) cluster=1 ;;
        --centrifugo) centrifugo=1 ;;
        connect|chat|conv|fanout|sweep|group) scenarios+=("$a") ;;
        -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
        *) log "unknown argument $a"; exit 2 ;;
    esac
done
[ ${#scenarios[@]} -gt 0 ] || scenarios=(connect chat conv fanout sweep group)

# a few hundred connections carry the whole load (up to 120 msg/s each
# in the sweep): the rate limits model one client, not a load generator
# (a module from before them, compared against, has no such directive)
if grep -q im_ws_rate "${IM_MODULE:-$ROOT/build/nginx/ngx_http_im_module.so}" \
       2>/dev/null; then
    export IMB_EXTRA_HTTP="${IMB_EXTRA_HTTP:-} im_ws_rate 0; im_api_rate 0;"
fi

# Centrifugo from its module at the pinned version, with the version
# stamped as its release builds do; skipped when that binary is there
centrifugo_build() {
    local gobin
    if [ -x "$CENTRIFUGO" ] &&
       "$CENTRIFUGO" version 2>/dev/null | grep -q "Centrifugo $CF_VERSION "
    then
        return 0
    fi
    command -v go >/dev/null || { log "--centrifugo needs Go"; exit 1; }
    gobin=$(cd "$IMB_BASE" && pwd)
    log "building Centrifugo $CF_VERSION into $gobin (go install, minutes)"
    GOBIN=$gobin go install \
        -ldflags "-s -w -X $CF_MOD/internal/build.Version=${CF_VERSION#v}" \
        "$CF_MOD@$CF_VERSION"
    "$CENTRIFUGO" version | grep -q "Centrifugo $CF_VERSION " || {
        log "$CENTRIFUGO is not $CF_VERSION"
        exit 1
    }
}

mkdir -p "$IMB_BASE/results"
[ "$centrifugo" = 0 ] || centrifugo_build
gcc -O2 -g -Wall -Wextra -o "$BIN" "$ROOT/bench/imbench.c" \
    "$ROOT/bench/imb.c" "$ROOT/bench/imb_pb.c" \
    "$ROOT/ngx_im_module/ngx_http_im_ws_frame.c" \
    -I"$ROOT/bench" -I"$ROOT/ngx_im_module" -lcrypto

STAMP=$(date +%Y%m%d-%H%M%S)
TXT=$IMB_BASE/results/$STAMP.txt
JSONL=$IMB_BASE/results/$STAMP.jsonl

started=()
# stops what was started, the last first: a server before its Redis
cleanup() {
    local s i
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do
        s=${started[i]}
        case "$s" in
            nginx:*) "$STACK" nginx-stop "${s#nginx:}" || true ;;
            redis:*) x=${s#redis:}
                     "$STACK" redis-stop "${x%:*}" "${x##*:}" || true ;;
            ferret:*) kill "${s#ferret:}" 2>/dev/null || true ;;
            cluster:*) "$ROOT/t/redis_cluster.sh" stop "${s#cluster:}" \
                           "$CLUSTER_PORT" 3 0 >/dev/null 2>&1 || true ;;
            centrifugo:*) "$STACK" centrifugo-stop "${s#centrifugo:}" ||
                              true ;;
        esac
    done
    started=()
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# a 3-master Redis Cluster in place of the Redis of ngx_im
cluster_up() {
    local dir=$IMB_BASE/$1-cluster seeds
    rm -rf "$dir"
    seeds=$("$ROOT/t/redis_cluster.sh" start "$dir" "$CLUSTER_PORT" 3 0 |
            tail -1)
    started+=("cluster:$dir")
    export IMB_REDIS_DIRECTIVE="im_redis_cluster ${seeds//,/ };"
}

im_up() {
    local name=$1 workers=$2
    if [ "$cluster" = 1 ]; then
        cluster_up "$name"
        "$STACK" im-start "$name" "$PORT" "$CLUSTER_PORT" "$workers"
        started+=("nginx:$name")
        return
    fi
    rm -rf "${IMB_BASE:?}/$name-redis"
    "$STACK" redis-start "$name-redis" "$REDIS_PORT"
    started+=("redis:$name-redis:$REDIS_PORT")
    if [ "$mongo" = 1 ]; then
        [ -x "$FERRET" ] || { log "no $FERRET: ./build.sh build"; exit 1; }
        rm -rf "$IMB_BASE/$name-mongo"
        mkdir -p "$IMB_BASE/$name-mongo"
        "$FERRET" -listen "127.0.0.1:$MONGO_PORT" -dir "$IMB_BASE/$name-mongo" \
            -log-level warn >"$IMB_BASE/$name-mongo/ready" \
            2>"$IMB_BASE/$name-mongo/ferret.log" &
        started+=("ferret:$!")
        for _ in $(seq 100); do
            grep -q ready "$IMB_BASE/$name-mongo/ready" 2>/dev/null && break
            sleep 0.1
        done
        export IMB_MONGO="mongodb://127.0.0.1:$MONGO_PORT/"
    fi
    "$STACK" im-start "$name" "$PORT" "$REDIS_PORT" "$workers"
    started+=("nginx:$name")
}

nchan_up() {
    rm -rf "${IMB_BASE:?}/nchan-redis"
    "$STACK" redis-start nchan-redis "$NCHAN_REDIS_PORT"
    started+=("redis:nchan-redis:$NCHAN_REDIS_PORT")
    "$STACK" nchan-start nchan "$NCHAN_PORT" "$NCHAN_REDIS_PORT" "$WORKERS"
    started+=("nginx:nchan")
}

# Centrifugo with the memory engine, and with the Redis engine on a Redis
# of its own (AOF on, like the others; it keeps no history here)
cf_up() {
    rm -rf "${IMB_BASE:?}/cf-redis-redis"
    "$STACK" redis-start cf-redis-redis "$CF_REDIS_PORT"
    started+=("redis:cf-redis-redis:$CF_REDIS_PORT")
    "$STACK" centrifugo-start cf-memory "$CF_PORT"
    started+=("centrifugo:cf-memory")
    "$STACK" centrifugo-start cf-redis "$CF_REDIS_ENGINE_PORT" \
        "$CF_REDIS_PORT"
    started+=("centrifugo:cf-redis")
}

say() { printf '%s\n' "$*" | tee -a "$TXT"; }

# imbench with its table to the text file and its JSON line to .jsonl;
# a violation is reported loudly by imbench, and the set goes on
run() {
    local rc=0
    say ""
    say "\$ imbench $*"
    "$BIN" "$@" 2>&1 | tee -a "$TXT" |
        tee >(grep '^{"scenario"' >>"$JSONL") || rc=$?
    [ "$rc" = 0 ] || { say "(imbench exited with status $rc)"; status=1; }
}
status=0

environment() {
    say "# ngx_im benchmark run $STAMP"
    say "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
    say "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    say "kernel:  $(uname -sr)"
    say "nginx:   $(nginx -v 2>&1 | sed 's/.*: //')"
    say "nchan:   $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?')"
    say "redis:   $(redis-server --version | sed 's/Redis server //')"
    say "gcc:     $(gcc -dumpfullversion)"
    say "module:  git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes'), $(stat -c '%y' "${IM_MODULE:-$ROOT/build/nginx/ngx_http_im_module.so}" | cut -d. -f1)"
    say "fd limit: soft $(ulimit -Sn), hard $(ulimit -Hn); nginx worker_connections 16384"
    say "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the run)"
    say "mongo:   $([ "$mongo" = 1 ] && echo "on (FerretDB)" || echo "off (Redis hot store only)")"
    say "codec:   $codec (ngx_im's clients)"
    say "store:   $([ "$cluster" = 1 ] && echo "Redis Cluster, 3 masters on :$CLUSTER_PORT.. (Redis CPU: the first master only)" || echo "one Redis")"
    if [ "$centrifugo" = 1 ]; then
        cfv=$("$CENTRIFUGO" version | sed 's/Centrifugo //')
        say "centrifugo: $cfv, GOMAXPROCS $(nproc), memory and Redis engines"
    fi
}

environment

PIDF=$IMB_BASE/im/logs/nginx.pid
S=(-s "127.0.0.1:$PORT" --pid-file "$PIDF" --codec "$codec"
   --redis-pid-file "$IMB_BASE/im-redis/redis.pid")
REDIS_ADDR=127.0.0.1:$REDIS_PORT
if [ "$cluster" = 1 ]; then
    S=(-s "127.0.0.1:$PORT" --pid-file "$PIDF" --codec "$codec"
       --redis-pid-file "$IMB_BASE/im-cluster/$CLUSTER_PORT/redis.pid")
    REDIS_ADDR=127.0.0.1:$CLUSTER_PORT
fi
NCHAN=(--nchan "127.0.0.1:$NCHAN_PORT"
       --nchan-pid-file "$IMB_BASE/nchan/logs/nginx.pid"
       --nchan-redis-pid-file "$IMB_BASE/nchan-redis/redis.pid")
CF=()
if [ "$centrifugo" = 1 ]; then
    # NAME=HOST:PORT,PID_FILE[,REDIS_PID_FILE]
    cfm=$IMB_BASE/cf-memory/centrifugo.pid
    cfr=$IMB_BASE/cf-redis/centrifugo.pid
    cfrr=$IMB_BASE/cf-redis-redis/redis.pid
    CF=(--centrifugo "cf-memory=127.0.0.1:$CF_PORT,$cfm"
        --centrifugo "cf-redis=127.0.0.1:$CF_REDIS_ENGINE_PORT,$cfr,$cfrr")
fi

for sc in "${scenarios[@]}"; do
    case "$sc" in
    connect)
        if [ "$full" = 1 ]; then
            # 20,000 fds a process: 6 load processes (each from its own
            # source address) and 8 workers (one Centrifugo process could
            # not hold 100,000)
            [ "$centrifugo" = 0 ] || log "connect --full: ngx_im only"
            im_up im 8
            run connect "${S[@]}" -n 100000 -P 6 --conn-rate 3000
        elif [ "$centrifugo" = 1 ]; then
            im_up im "$WORKERS"
            nchan_up
            cf_up
            run connect "${S[@]}" "${NCHAN[@]}" "${CF[@]}" -n 10000 \
                --conn-rate 3000
        else
            im_up im "$WORKERS"
            run connect "${S[@]}" -n 10000 --conn-rate 3000
        fi
        cleanup
        ;;
    chat)
        im_up im "$WORKERS"
        if [ "$full" = 1 ]; then
            run chat "${S[@]}" -n 10000 -m 2000 -r 5000 -d 60
        else
            run chat "${S[@]}" -n 2000 -m 500 -r 5000 -d 15
        fi
        cleanup
        ;;
    conv)
        # chat in the same few conversations (5 peers a sender), as real
        # users do; "chat" opens a new conversation with most messages
        im_up im "$WORKERS"
        run chat "${S[@]}" -n 2000 -m 500 -r 5000 -d 15 --peers 5 \
            --label "5 peers"
        cleanup
        ;;
    fanout)
        im_up im "$WORKERS"
        nchan_up
        [ "$centrifugo" = 0 ] || cf_up
        # shell words: IMB_FANOUT="-k 2000 -r 1000" offers more than
        # 200 msg/s x 2,000 sessions = 400,000 deliveries/s
        # shellcheck disable=SC2086
        run fanout "${S[@]}" "${NCHAN[@]}" "${CF[@]}" -n 2000 \
            ${IMB_FANOUT:--k 400 -r 200} --rounds 3
        cleanup
        ;;
    group)
        # a group message to 2,000 online members against a Nchan channel
        # with 2,000 subscribers: first a group of 2,001 (only the sender
        # not listening: no offline members), then groups of 1,000 and
        # 10,000 with the same 900 online, where each message also makes
        # an offline-push job per offline member (off the send path, paced:
        # --settle waits for ngx_im's Redis to be quiet again).  Redis
        # commands per message from INFO commandstats (with a cluster: the
        # first master only)
        im_up im "$WORKERS"
        nchan_up
        G=("${S[@]}" "${NCHAN[@]}" --redis "$REDIS_ADDR"
           --nchan-redis "127.0.0.1:$NCHAN_REDIS_PORT")
        run group "${G[@]}" -n 2000 -M 2001 -r 50 -d 10 --rounds 3 \
            --settle 150
        run group "${G[@]}" -n 900 -M 1000,10000 -r 20 -d 5 --settle 120
        cleanup
        ;;
    sweep)
        im_up im "$WORKERS"
        if [ "$full" = 1 ]; then
            run sweep "${S[@]}" -n 10000 -m 2000 -d 20 --start 1000 \
                --factor 1.25 --max 60000
        else
            run sweep "${S[@]}" -n 2000 -m 500 -d 5 --start 3000 \
                --factor 1.25 --max 60000
        fi
        cleanup
        ;;
    esac
done

say ""
say "results: $TXT"
say "         $JSONL"
exit "$status"
