#!/usr/bin/env bash
# ngx_im: build, run and test the module against Debian's nginx.
#   ./build.sh deps | build | run | start | stop | test | unit | bench |
#              reliability | asan | web | demo USER...
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
# the npm packages of web/package-lock.json, and the chat page nginx
# serves at /im/demo/
WEB=$BUILD/web
DEMO=$WEB/demo

DEBS="nginx nginx-dev libhiredis-dev libmongoc-dev libbson-dev
      libprotobuf-c-dev protobuf-c-compiler protobuf-compiler libyajl-dev libssl-dev
      redis-server redis-tools pkg-config gcc make curl
      python3-pytest python3-websockets python3-redis python3-pymongo
      python3-protobuf libnginx-mod-nchan chromium"

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
    # node and npm for the official JS SDK's test (t/test_sdk.py: node
    # 20.10+ runs it with its own WebSocket, an older one, as Debian 12's
    # 18, with the ws package's); a node already installed (e.g.
    # NodeSource's, which bundles npm) stays
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        log "installing nodejs npm"
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends nodejs npm
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

# build_in DIR CC_OPT LD_OPT: configures nginx's build of the module into
# DIR once (again when config changes), with the flags Debian's nginx was
# built with plus CC_OPT / LD_OPT, and makes the module there
build_in() {
    local dir=$1 cc_opt=$2 ld_opt=$3
    mkdir -p "$dir"
    if [ ! -f "$dir/Makefile" ] || [ "$ROOT/config" -nt "$dir/Makefile" ]; then
        log "configuring against $NGX_SRC"
        (
            cd "$NGX_SRC"
            # shellcheck disable=SC1091
            . ./conf_flags
            ./configure \
                --with-cc-opt="$(dpkg-buildflags --get CFLAGS) -fPIC $(dpkg-buildflags --get CPPFLAGS)${cc_opt:+ $cc_opt}" \
                --with-ld-opt="$(dpkg-buildflags --get LDFLAGS) -fPIC${ld_opt:+ $ld_opt}" \
                "${NGX_CONF_FLAGS[@]}" \
                --add-dynamic-module="$ROOT" --builddir="$dir" \
                >"$(dirname "$dir")/configure.log" 2>&1 ||
                { tail -30 "$(dirname "$dir")/configure.log"; exit 1; }
        )
    fi
    sh "$ROOT/ngx_im_module/lua/embed.sh" "$ROOT/ngx_im_module/lua" \
        >"$dir/ngx_http_im_scripts.h.new"
    cmp -s "$dir/ngx_http_im_scripts.h.new" "$dir/ngx_http_im_scripts.h" ||
        mv "$dir/ngx_http_im_scripts.h.new" "$dir/ngx_http_im_scripts.h"
    if [ "$ROOT/ngx_im_module/im.proto" -nt "$dir/im.pb-c.c" ]; then
        protoc-c --c_out="$dir" --proto_path="$ROOT/ngx_im_module" im.proto
    fi
    make -s -f "$dir/Makefile" -C "$NGX_SRC" -j"$(nproc)" modules
}

build() {
    build_in "$BUILD/nginx" "" ""
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
        -e "s|@DEMO@|$DEMO/|" -e "s|@USER@|$(nginx_user)|" \
        "$ROOT/conf/nginx.conf" >"$dir/conf/nginx.conf"
}

# nginx's "user" line: as root, the checkout's owner (conf/nginx.conf)
nginx_user() {
    if [ "$(id -u)" -eq 0 ]; then
        echo "user $(stat -c %U "$ROOT");"
    fi
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
# the single Redis
start_cluster() {
    local seeds
    seeds=$("$ROOT/t/redis_cluster.sh" start "$RUN/cluster" "$CLUSTER_PORT" \
            3 1 | tail -1)
    echo "im_redis_cluster ${seeds//,/ }"
}

start() {
    deps
    build
    web
    stop_quiet
    start_mongo
    if [ "${IM_REDIS_CLUSTER:-0}" = 1 ]; then
        render_conf "$RUN" "127.0.0.1:$PORT" "$(start_cluster)" \
            "mongodb://127.0.0.1:$MONGO_PORT/"
    else
        start_redis
        render_conf "$RUN" "127.0.0.1:$PORT" \
            "im_redis 127.0.0.1:$REDIS_PORT" \
            "mongodb://127.0.0.1:$MONGO_PORT/"
    fi
    nginx -p "$RUN" -c conf/nginx.conf -e "$RUN/logs/error.log"
    wait_api
    log "serving ws://127.0.0.1:$PORT/im/ws and http://127.0.0.1:$PORT/im/api"
    log "the chat page: http://127.0.0.1:$PORT/im/demo/ (./build.sh demo USER...)"
    if [ "${IM_REDIS_CLUSTER:-0}" = 1 ]; then
        log "redis cluster 127.0.0.1:$CLUSTER_PORT..$((CLUSTER_PORT + 5)),"\
            "MongoDB (FerretDB) 127.0.0.1:$MONGO_PORT/im"
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
    # the MongoDB task ops against FerretDB, outside nginx (needs the
    # module's build for nginx's config header, and the FerretDB binary)
    make -s -C "$ROOT/t/mongo_ops" O="$BUILD/mongo_ops" \
        NGX_BUILD="$BUILD/nginx" FERRET="$FERRET" run
}

# the files that run a second time with the shared stacks on a Redis
# Cluster (3 masters + 3 replicas) instead of one Redis
CLUSTER_TESTS="t/test_messaging.py t/test_api.py t/test_notify.py
               t/test_protobuf.py t/test_handshake.py t/test_conversations.py
               t/test_group_push.py t/test_groups.py t/test_friends.py
               t/test_login_policy.py t/test_presence.py t/test_jssdk.py"

# the npm packages of web/package-lock.json (the official OpenIM JS SDK,
# esbuild, and for the tests puppeteer-core and ws) into
# build/web/node_modules, for the page and for t/test_sdk.py and
# t/test_browser.py; again only when the lockfile changed.  npm's cache
# serves them offline once fetched.
npm_modules() {
    if [ -d "$WEB/node_modules" ] &&
       cmp -s "$ROOT/web/package-lock.json" "$WEB/package-lock.json"; then
        return 0
    fi
    mkdir -p "$WEB"
    cp "$ROOT/web/package.json" "$ROOT/web/package-lock.json" "$WEB/"
    log "npm ci in $WEB"
    (cd "$WEB" && npm ci --prefer-offline --no-audit --no-fund \
        --loglevel=error >&2) || { rm -rf "$WEB/node_modules"; exit 1; }
}

# the chat page (README.md, "The chat page"): web/src, its app.js and the
# SDK bundled by esbuild, into build/web/demo
web() {
    npm_modules
    mkdir -p "$DEMO"
    cp "$ROOT/web/src/index.html" "$ROOT/web/src/style.css" "$DEMO/"
    NODE_PATH="$WEB/node_modules" "$WEB/node_modules/.bin/esbuild" \
        "$ROOT/web/src/app.js" --bundle --minify --target=es2020 \
        --outfile="$DEMO/app.js" --log-level=warning
}

# demo USER...: for the stack of ./build.sh run, registers the users and
# prints each one's address of the chat page, carrying a fresh token
demo() {
    local api="http://127.0.0.1:$PORT/im/api" admin u token
    [ $# -gt 0 ] || { log "usage: ./build.sh demo USER..."; exit 2; }
    # im_secret and im_admin of conf/nginx.conf
    admin=$(demo_call "$api/auth/get_admin_token" "" \
            '{"secret":"openIM123","userID":"imAdmin"}') || admin=
    [ -n "$admin" ] || { log "no admin token from $api: is ./build.sh run up?"; exit 1; }
    for u in "$@"; do
        demo_call "$api/user/user_register" "$admin" \
            "{\"users\":[{\"userID\":\"$u\",\"nickname\":\"$u\"}]}" >/dev/null
        token=$(demo_call "$api/auth/get_user_token" "$admin" \
                "{\"userID\":\"$u\",\"platformID\":5}")
        echo "http://127.0.0.1:$PORT/im/demo/#user=$u&token=$token"
    done
}

# demo_call URL TOKEN BODY: the "token" of the answer's data, if any
demo_call() {
    curl -sf -X POST "$1" -H "Content-Type: application/json" \
        -H "operationID: demo" ${2:+-H "token: $2"} -d "$3" |
        sed -n 's/.*"token":"\([^"]*\)".*/\1/p'
}

tests() {
    deps
    build
    unit
    web
    cd "$ROOT"
    IM_MODULE="$MODULE" /usr/bin/python3 -m pytest -q t "$@"
    if [ $# -eq 0 ]; then
        log "again on a Redis Cluster: $(echo $CLUSTER_TESTS)"
        # shellcheck disable=SC2086
        IM_MODULE="$MODULE" IM_TEST_REDIS=cluster \
            /usr/bin/python3 -m pytest -q $CLUSTER_TESTS
    fi
}

# ./build.sh asan: the module built with AddressSanitizer and UBSan into
# build/asan (build/nginx is left alone), and the e2e suite run with it.
# Debian's nginx is not instrumented, so the sanitizer runtimes are
# preloaded into it: build/asan/bin/nginx, first in PATH, is a wrapper that
# sets LD_PRELOAD, ASAN_OPTIONS and UBSAN_OPTIONS, so every nginx the tests
# start (conftest.py, and bench/stack.sh for test_reliability.py) runs
# under the sanitizers.  Reports go to build/asan/reports/{asan,ubsan}.<pid>;
# any report fails the run.
ASAN=$BUILD/asan
ASAN_MODULE=$ASAN/nginx/ngx_http_im_module.so
ASAN_FLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

asan_build() {
    # -O1 for stack traces true to the source; no _FORTIFY_SOURCE, whose
    # __memcpy_chk and friends would bypass ASan's checks of the ranges
    local cc_opt="-O1 -U_FORTIFY_SOURCE $ASAN_FLAGS"
    if [ "$(cat "$ASAN/flags" 2>/dev/null)" != "$cc_opt" ]; then
        rm -rf "$ASAN/nginx"
        mkdir -p "$ASAN"
        echo "$cc_opt" >"$ASAN/flags"
    fi
    # configure runs its test programs: no LeakSanitizer for them
    ASAN_OPTIONS=detect_leaks=0 build_in "$ASAN/nginx" "$cc_opt" "$ASAN_FLAGS"
    log "built $ASAN_MODULE"
}

# asan_wrapper REPORTS: writes $ASAN/bin/nginx.  ASan and UBSan stop the
# process at the first report (abort: the master logs "exited on signal
# 6", which the tests' error log checks catch too).  No LeakSanitizer:
# nginx exits without freeing what only its cycle pool pointed to (1 KB
# request pools of open WebSockets and the like), the module is unloaded
# by then so its frames cannot be named, and a leak at exit would abort
# even "nginx -s reload".  t/asan/ubsan_options.c, preloaded too, makes
# UBSAN_OPTIONS hold in the workers.
asan_wrapper() {
    local reports=$1 real libasan libubsan f
    real=$(command -v nginx)
    libasan=$(readlink -f "$(gcc -print-file-name=libasan.so)")
    libubsan=$(readlink -f "$(gcc -print-file-name=libubsan.so)")
    for f in "$libasan" "$libubsan"; do
        [ -f "$f" ] || { log "no sanitizer runtime $f (gcc)"; exit 1; }
    done
    mkdir -p "$ASAN/bin"
    gcc -O2 -Wall -Wextra -Werror -shared -fPIC \
        -o "$ASAN/libimubsan.so" "$ROOT/t/asan/ubsan_options.c" -ldl
    cat >"$ASAN/bin/nginx" <<EOF
#!/bin/sh
# written by ./build.sh asan: $real with the sanitizer runtimes preloaded,
# for $ASAN_MODULE
export LD_PRELOAD='$libasan:$ASAN/libimubsan.so:$libubsan'
export ASAN_OPTIONS='detect_leaks=0:abort_on_error=1:halt_on_error=1:disable_coredump=1:detect_stack_use_after_return=1:log_path=$reports/asan'
export UBSAN_OPTIONS='print_stacktrace=1:report_error_type=1:halt_on_error=1:abort_on_error=1:log_path=$reports/ubsan'
exec $real "\$@"
EOF
    chmod +x "$ASAN/bin/nginx"
}

# asan_reports DIR: prints each report in DIR; fails if there is one
asan_reports() {
    local f n=0
    for f in "$1"/*; do
        [ -f "$f" ] || continue
        n=$((n + 1))
        printf '\n==== %s\n' "$f" >&2
        cat "$f" >&2
    done
    if [ "$n" -gt 0 ]; then
        log "$n sanitizer report(s) in $1"
        return 1
    fi
    log "no sanitizer reports"
}

asan() {
    local reports=$ASAN/reports status=0 t0=$SECONDS
    deps
    asan_build
    rm -rf "$reports"
    # the workers write their reports as nginx's "user" (nobody)
    mkdir -p -m 1777 "$reports"
    asan_wrapper "$reports"
    cd "$ROOT"
    export PATH="$ASAN/bin:$PATH" IM_MODULE="$ASAN_MODULE" \
        IM_SANITIZER_LOGS="$reports"
    /usr/bin/python3 -m pytest -q t "$@" || status=$?
    if [ $# -eq 0 ]; then
        log "again on a Redis Cluster: $(echo $CLUSTER_TESTS)"
        # shellcheck disable=SC2086
        IM_TEST_REDIS=cluster /usr/bin/python3 -m pytest -q $CLUSTER_TESTS ||
            status=$?
    fi
    asan_reports "$reports" || status=1
    log "asan: $((SECONDS - t0)) s, exit status $status"
    return "$status"
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
    unit) deps; build; unit ;;
    bench) deps; build; "$ROOT/bench/bench.sh" "$@" ;;
    reliability) deps; build; "$ROOT/t/reliability/run.sh" "$@" ;;
    asan) asan "$@" ;;
    web) web ;;
    demo) demo "$@" ;;
    *) echo "usage: $0 deps|build|run|start|stop|test|unit|bench|reliability|asan|web|demo" >&2
       exit 2 ;;
esac
