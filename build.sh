#!/usr/bin/env bash
# ngx_im: build, run and test the module against Debian's nginx.
#   ./build.sh deps | build | run | start | stop | test | unit | bench |
#              reliability
set -euo pipefail

ROOT=$(cd "$(dirname "$0")" && pwd)
BUILD=$ROOT/build
RUN=$BUILD/run
NGX_SRC=/usr/share/nginx/src
MODULE=$BUILD/nginx/ngx_http_im_module.so
PORT=${IM_PORT:-8080}
REDIS_PORT=${IM_REDIS_PORT:-6390}
CLUSTER_PORT=${IM_CLUSTER_PORT:-7000}
MONGO_PORT=${IM_MONGO_PORT:-27018}
FERRET=$BUILD/bin/imferret

DEBS="nginx nginx-dev libhiredis-dev libmongoc-dev libbson-dev
      libprotobuf-c-dev protobuf-c-compiler protobuf-compiler libyajl-dev libssl-dev
      redis-server redis-tools pkg-config gcc make curl
      python3-pytest python3-websockets python3-redis python3-pymongo
      python3-protobuf libnginx-mod-nchan"

log() { printf '%s\n' "build.sh: $*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

deps() {
    local missing=()
    for p in $DEBS; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
            grep -q "ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    # the MongoDB wire-protocol server for tests and the dev stack:
    # FerretDB embedded in a tiny Go program of ours (t/ferretdb)
    "$ROOT/t/ferretdb/build.sh" "$BUILD/bin" >&2
    # Debian starts the packaged services; ours run from build/run
    for svc in nginx redis-server; do
        if command -v systemctl >/dev/null && \
           systemctl is-active -q "$svc" 2>/dev/null; then
            as_root systemctl stop "$svc" || true
        fi
    done
}

build() {
    mkdir -p "$BUILD/nginx"
    if [ ! -f "$BUILD/nginx/Makefile" ] || \
       [ "$ROOT/config" -nt "$BUILD/nginx/Makefile" ]; then
        log "configuring against $NGX_SRC"
        (
            cd "$NGX_SRC"
            # shellcheck disable=SC1091
            . ./conf_flags
            ./configure \
                --with-cc-opt="$(dpkg-buildflags --get CFLAGS) -fPIC $(dpkg-buildflags --get CPPFLAGS)" \
                --with-ld-opt="$(dpkg-buildflags --get LDFLAGS) -fPIC" \
                "${NGX_CONF_FLAGS[@]}" \
                --add-dynamic-module="$ROOT" --builddir="$BUILD/nginx" \
                >"$BUILD/configure.log" 2>&1 ||
                { tail -30 "$BUILD/configure.log"; exit 1; }
        )
    fi
    sh "$ROOT/ngx_im_module/lua/embed.sh" "$ROOT/ngx_im_module/lua" \
        >"$BUILD/nginx/ngx_http_im_scripts.h.new"
    cmp -s "$BUILD/nginx/ngx_http_im_scripts.h.new" \
        "$BUILD/nginx/ngx_http_im_scripts.h" ||
        mv "$BUILD/nginx/ngx_http_im_scripts.h.new" \
            "$BUILD/nginx/ngx_http_im_scripts.h"
    if [ "$ROOT/ngx_im_module/im.proto" -nt "$BUILD/nginx/im.pb-c.c" ]; then
        protoc-c --c_out="$BUILD/nginx" --proto_path="$ROOT/ngx_im_module" \
            im.proto
    fi
    make -s -f "$BUILD/nginx/Makefile" -C "$NGX_SRC" -j"$(nproc)" modules
    log "built $MODULE"
}

# render_conf DIR PORT REDIS_ADDR MONGO_URI: an nginx prefix for one stack
render_conf() {
    local dir=$1 listen=$2 redis=$3 mongo=$4
    mkdir -p "$dir/conf" "$dir/logs" "$dir/temp"
    sed -e "s|@MODULE@|$MODULE|" -e "s|@WORKERS@|2|" \
        -e "s|@LOG_LEVEL@|info|" -e "s|@REDIS@|$redis;|" \
        -e "s|@MONGO@|${mongo:+im_mongo $mongo;}|" \
        -e "s|@LISTEN@|$listen|" -e "s|@EXTRA_HTTP@||" -e "s|@EXTRA_WS@||" \
        "$ROOT/conf/nginx.conf" >"$dir/conf/nginx.conf"
}

start_mongo() {
    mkdir -p "$RUN/mongo"
    "$FERRET" -listen "127.0.0.1:$MONGO_PORT" -dir "$RUN/mongo" \
        -log-level warn >"$RUN/mongo/ready" 2>"$RUN/mongo/ferret.log" &
    echo $! >"$RUN/mongo/pid"
    for _ in $(seq 100); do
        grep -q ready "$RUN/mongo/ready" 2>/dev/null && return 0
        sleep 0.1
    done
    log "the MongoDB server did not start; see $RUN/mongo/ferret.log"
    exit 1
}

start_redis() {
    mkdir -p "$RUN/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$RUN/redis" \
        --appendonly yes --daemonize yes --save "" \
        --pidfile "$RUN/redis/redis.pid" --logfile "$RUN/redis/redis.log"
    for _ in $(seq 50); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "redis did not start; see $RUN/redis/redis.log"
    exit 1
}

wait_api() {
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$PORT/im/api/" && return 0
        sleep 0.1
    done
    log "nginx did not answer; see $RUN/logs/error.log"
    exit 1
}

# IM_REDIS_CLUSTER=1: 3 masters + 3 replicas on CLUSTER_PORT.., instead of
# the single Redis (and, for now, without MongoDB: docs/architecture.md)
start_cluster() {
    local seeds
    seeds=$("$ROOT/t/redis_cluster.sh" start "$RUN/cluster" "$CLUSTER_PORT" \
            3 1 | tail -1)
    echo "im_redis_cluster ${seeds//,/ }"
}

start() {
    deps
    build
    stop_quiet
    if [ "${IM_REDIS_CLUSTER:-0}" = 1 ]; then
        render_conf "$RUN" "127.0.0.1:$PORT" "$(start_cluster)" ""
    else
        start_redis
        start_mongo
        render_conf "$RUN" "127.0.0.1:$PORT" \
            "im_redis 127.0.0.1:$REDIS_PORT" \
            "mongodb://127.0.0.1:$MONGO_PORT/"
    fi
    nginx -p "$RUN" -c conf/nginx.conf -e "$RUN/logs/error.log"
    wait_api
    log "serving ws://127.0.0.1:$PORT/im/ws and http://127.0.0.1:$PORT/im/api"
    if [ "${IM_REDIS_CLUSTER:-0}" = 1 ]; then
        log "redis cluster 127.0.0.1:$CLUSTER_PORT..$((CLUSTER_PORT + 5))"
    else
        log "redis 127.0.0.1:$REDIS_PORT," \
            "MongoDB (FerretDB) 127.0.0.1:$MONGO_PORT/im"
    fi
}

stop_quiet() {
    if [ -f "$RUN/logs/nginx.pid" ]; then
        nginx -p "$RUN" -c conf/nginx.conf -e "$RUN/logs/error.log" \
            -s quit 2>/dev/null || true
        for _ in $(seq 50); do
            [ -f "$RUN/logs/nginx.pid" ] || break
            sleep 0.1
        done
    fi
    if [ -f "$RUN/mongo/pid" ]; then
        kill "$(cat "$RUN/mongo/pid")" 2>/dev/null || true
        rm -f "$RUN/mongo/pid"
    fi
    if [ -d "$RUN/cluster" ]; then
        "$ROOT/t/redis_cluster.sh" stop "$RUN/cluster" "$CLUSTER_PORT" 3 1 \
            >/dev/null 2>&1 || true
    fi
    if [ -f "$RUN/redis/redis.pid" ]; then
        redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
        rm -f "$RUN/redis/redis.pid"
    fi
}

run() {
    start
    trap 'stop_quiet; exit 0' INT TERM
    log "running; Ctrl-C stops nginx and redis"
    tail -n 0 -F "$RUN/logs/error.log" &
    wait
}

unit() {
    make -s -C "$ROOT/t/unit" O="$BUILD/unit" run
}

# the files that run a second time with the shared stacks on a Redis
# Cluster (3 masters + 3 replicas) instead of one Redis
CLUSTER_TESTS="t/test_messaging.py t/test_api.py t/test_notify.py
               t/test_protobuf.py t/test_handshake.py"

tests() {
    deps
    build
    unit
    cd "$ROOT"
    IM_MODULE="$MODULE" /usr/bin/python3 -m pytest -q t "$@"
    if [ $# -eq 0 ]; then
        log "again on a Redis Cluster: $(echo $CLUSTER_TESTS)"
        # shellcheck disable=SC2086
        IM_MODULE="$MODULE" IM_TEST_REDIS=cluster \
            /usr/bin/python3 -m pytest -q $CLUSTER_TESTS
    fi
}

cmd=${1:-}
shift || true
case "$cmd" in
    deps) deps ;;
    build) deps; build ;;
    run) run ;;
    start) start ;;
    stop) stop_quiet ;;
    test) tests "$@" ;;
    unit) unit ;;
    bench) deps; build; "$ROOT/bench/bench.sh" "$@" ;;
    reliability) deps; build; "$ROOT/t/reliability/run.sh" "$@" ;;
    *) echo "usage: $0 deps|build|run|start|stop|test|unit|bench|reliability" >&2
       exit 2 ;;
esac
