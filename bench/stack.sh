#!/usr/bin/env bash
# Private server stacks for the benchmarks and the reliability run: Redis,
# nginx with ngx_im, nginx with Nchan, and Centrifugo, each in its own
# directory under $IMB_BASE (build/bench by default), on ports of its
# own, so they never touch ./build.sh start (build/run, 8080/6390).
#
#   stack.sh redis-start NAME PORT      AOF on (appendfsync everysec)
#   stack.sh redis-stop NAME PORT       SHUTDOWN (AOF flushed), or SIGKILL
#   stack.sh redis-restart NAME PORT    stop cleanly, start on the same AOF
#   stack.sh redis-kill NAME PORT       SIGKILL, start again (loses < 1 s)
#   stack.sh im-start NAME PORT REDIS_PORT [WORKERS]
#   stack.sh nchan-start NAME PORT REDIS_PORT [WORKERS]
#   stack.sh nginx-stop NAME            graceful quit, then SIGKILL
#   stack.sh nginx-pid NAME             the master's pid file
#   stack.sh centrifugo-start NAME PORT [REDIS_PORT]
#                                       Centrifugo (bench.sh --centrifugo
#                                       builds it): memory engine, or the
#                                       Redis engine on REDIS_PORT
#   stack.sh centrifugo-stop NAME       SIGTERM, then SIGKILL
#
# Environment: IMB_BASE, IM_MODULE, IMB_REDIS_ARGS (more redis-server
# options, e.g. "--auto-aof-rewrite-percentage 0"), IMB_MONGO (a MongoDB URI: history on),
# IMB_LOG_LEVEL (notice), IMB_EXTRA_HTTP, IMB_EXTRA_WS, CENTRIFUGO (the
# binary, $IMB_BASE/centrifugo), IMB_CF_SECRET (imbench-secret: the HS256
# key of connect tokens), IMB_CF_API_KEY (imbench-key).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=${IMB_BASE:-$ROOT/build/bench}
MODULE=${IM_MODULE:-$ROOT/build/nginx/ngx_http_im_module.so}
NCHAN_MODULE=${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}
CENTRIFUGO=${CENTRIFUGO:-$BASE/centrifugo}

log() { printf 'stack.sh: %s\n' "$*" >&2; }

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() {
    for _ in $(seq 200); do
        port_free "$1" || return 0
        sleep 0.05
    done
    log "port $1 did not open"
    return 1
}

redis_start() {
    local name=$1 port=$2 dir=$BASE/$1
    mkdir -p "$dir"
    port_free "$port" || { log "port $port is busy"; return 1; }
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
        --appendonly yes --appendfsync everysec --save "" \
        --daemonize yes --pidfile "$dir/redis.pid" \
        --logfile "$dir/redis.log" ${IMB_REDIS_ARGS:-}
    for _ in $(seq 200); do
        redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.05
    done
    log "redis $name did not start; see $dir/redis.log"
    return 1
}

redis_pid() {
    cat "$BASE/$1/redis.pid" 2>/dev/null || true
}

redis_stop() {
    local name=$1 port=$2 pid
    pid=$(redis_pid "$name")
    redis-cli -p "$port" shutdown >/dev/null 2>&1 || true
    for _ in $(seq 200); do
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$BASE/$name/redis.pid"
}

redis_kill() {
    local name=$1 port=$2 pid
    pid=$(redis_pid "$name")
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    for _ in $(seq 200); do
        port_free "$port" && break
        sleep 0.05
    done
    rm -f "$BASE/$name/redis.pid"
}

# render NAME PORT REDIS_PORT WORKERS TEMPLATE
render_im() {
    local dir=$BASE/$1
    mkdir -p "$dir/conf" "$dir/logs" "$dir/temp"
    # a private copy: a rebuild during a run must not reach a reload
    cp "$MODULE" "$dir/ngx_http_im_module.so"
    sed -e "s|@MODULE@|$dir/ngx_http_im_module.so|" -e "s|@WORKERS@|$4|" \
        -e "s|@LOG_LEVEL@|${IMB_LOG_LEVEL:-notice}|" \
        -e "s|@REDIS@|${IMB_REDIS_DIRECTIVE:-im_redis 127.0.0.1:$3;}|" \
        -e "s|@LISTEN@|127.0.0.1:$2|" \
        -e "s|@EXTRA_HTTP@|${IMB_EXTRA_HTTP:-}|" \
        -e "s|@EXTRA_WS@|${IMB_EXTRA_WS:-}|" \
        -e "s|@MONGO@|${IMB_MONGO:+im_mongo $IMB_MONGO;}|" \
        -e "s|@DEMO@|$ROOT/build/web/demo/|" \
        -e "s|@[A-Z_]*@||g" \
        "$ROOT/conf/nginx.conf" >"$dir/conf/nginx.conf"
}

render_nchan() {
    local dir=$BASE/$1
    mkdir -p "$dir/conf" "$dir/logs" "$dir/temp"
    cat >"$dir/conf/nginx.conf" <<EOF
# Nchan, the peer of the fanout benchmark: Redis store, WebSocket
# subscribers, HTTP publisher.  Rendered by bench/stack.sh.
load_module $NCHAN_MODULE;

worker_processes $4;
pid logs/nginx.pid;
error_log logs/error.log notice;

events {
    worker_connections 16384;
}

http {
    access_log off;

    client_body_temp_path temp/body;
    proxy_temp_path temp/proxy;
    fastcgi_temp_path temp/fastcgi;
    uwsgi_temp_path temp/uwsgi;
    scgi_temp_path temp/scgi;

    upstream imb_redis {
        nchan_redis_server redis://127.0.0.1:$3;
    }

    server {
        listen 127.0.0.1:$2 reuseport;

        location ~ ^/sub/(\w+)$ {
            nchan_subscriber websocket;
            nchan_channel_id \$1;
            nchan_redis_pass imb_redis;
        }

        location ~ ^/pub/(\w+)$ {
            nchan_publisher;
            nchan_channel_id \$1;
            nchan_redis_pass imb_redis;
        }
    }
}
EOF
}

# Centrifugo v6, the peer of the fanout and connect benchmarks: connect
# tokens (HS256, sub = the user), channels of the namespace "imb" open to
# any connected client, publishing through the HTTP API with a key; no
# history, presence or join/leave (its defaults), as a broadcast needs.
# The keys are those of its v6 configuration reference (configdoc).
render_cf() {
    local dir=$BASE/$1 engine='"type": "memory"'
    mkdir -p "$dir"
    if [ -n "${3:-}" ]; then
        engine="\"type\": \"redis\",
    \"redis\": {\"address\": [\"redis://127.0.0.1:$3\"]}"
    fi
    cat >"$dir/config.json" <<EOF
{
  "pid_file": "$dir/centrifugo.pid",
  "http_server": {"address": "127.0.0.1", "port": $2},
  "log": {"level": "info"},
  "usage_stats": {"disabled": true},
  "engine": {
    $engine
  },
  "client": {
    "token": {"hmac_secret_key": "${IMB_CF_SECRET:-imbench-secret}"}
  },
  "http_api": {"key": "${IMB_CF_API_KEY:-imbench-key}"},
  "channel": {
    "namespaces": [{"name": "imb", "allow_subscribe_for_client": true}]
  }
}
EOF
}

# GOMAXPROCS: every core, as in production
cf_start() {
    local name=$1 port=$2 dir=$BASE/$1
    [ -x "$CENTRIFUGO" ] || {
        log "no $CENTRIFUGO; bench/bench.sh --centrifugo builds it"
        return 1
    }
    port_free "$port" || { log "port $port is busy"; return 1; }
    render_cf "$@"
    rm -f "$dir/centrifugo.pid"
    GOMAXPROCS=$(nproc) "$CENTRIFUGO" -c "$dir/config.json" \
        >"$dir/centrifugo.log" 2>&1 </dev/null &
    wait_port "$port" || {
        log "centrifugo $name did not start; see $dir/centrifugo.log"
        return 1
    }
    for _ in $(seq 100); do
        [ -s "$dir/centrifugo.pid" ] && return 0
        sleep 0.05
    done
    log "centrifugo $name wrote no pid file; see $dir/centrifugo.log"
    return 1
}

cf_stop() {
    local dir=$BASE/$1 pid
    pid=$(cat "$dir/centrifugo.pid" 2>/dev/null || true)
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "centrifugo $1 did not stop; killing"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/centrifugo.pid"
}

nginx_cmd() {
    local dir=$BASE/$1
    shift
    nginx -p "$dir" -c conf/nginx.conf -e "$dir/logs/error.log" "$@"
}

nginx_start() {
    local name=$1 port=$2
    port_free "$port" || { log "port $port is busy"; return 1; }
    : >"$BASE/$name/logs/error.log"
    nginx_cmd "$name"
    wait_port "$port"
}

# ngx_im is ready when every worker's two Redis connections (commands,
# pub/sub) are up: its own Redis then counts them
im_wait_ready() {
    local name=$1 redis_port=$2 workers=$3 n
    for _ in $(seq 200); do
        n=$(redis-cli -p "$redis_port" client list 2>/dev/null |
            grep -vc 'cmd=client' || true)
        [ "$n" -ge $((2 * workers)) ] && return 0
        sleep 0.05
    done
    log "ngx_im $name: workers not connected to redis :$redis_port;" \
        "see $BASE/$name/logs/error.log"
    return 1
}

nchan_wait_ready() {
    local log=$BASE/$1/logs/error.log
    for _ in $(seq 200); do
        [ "$(grep -c 'Redis upstream imb_redis: ready' "$log" 2>/dev/null ||
            true)" -ge "$2" ] && return 0
        sleep 0.05
    done
    log "nchan $1: not connected to redis; see $log"
    return 1
}

nginx_stop() {
    local name=$1 dir=$BASE/$1 pid
    pid=$(cat "$dir/logs/nginx.pid" 2>/dev/null || true)
    [ -n "$pid" ] || return 0
    nginx_cmd "$name" -s quit 2>/dev/null || kill -QUIT "$pid" 2>/dev/null \
        || true
    for _ in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.05
    done
    log "nginx $name did not quit; killing"
    pkill -9 -P "$pid" 2>/dev/null || true
    kill -9 "$pid" 2>/dev/null || true
}

cmd=${1:-}
shift || true
case "$cmd" in
    redis-start) redis_start "$1" "$2" ;;
    redis-stop) redis_stop "$1" "$2" ;;
    redis-restart) redis_stop "$1" "$2"; redis_start "$1" "$2" ;;
    redis-kill) redis_kill "$1" "$2"; redis_start "$1" "$2" ;;
    im-start)
        [ -f "$MODULE" ] || { log "no $MODULE; run ./build.sh build"; exit 1; }
        render_im "$1" "$2" "$3" "${4:-2}"
        nginx_start "$1" "$2"
        im_wait_ready "$1" "$3" "${4:-2}"
        ;;
    nchan-start)
        [ -f "$NCHAN_MODULE" ] || {
            log "no $NCHAN_MODULE; apt-get install libnginx-mod-nchan"
            exit 1
        }
        if [ ! -d /var/lib/nginx/body ]; then
            # Nchan registers this path whatever the config says
            install -d -m 700 -o nobody -g nogroup /var/lib/nginx/body \
                2>/dev/null || sudo install -d -m 700 -o nobody \
                -g nogroup /var/lib/nginx/body
        fi
        render_nchan "$1" "$2" "$3" "${4:-2}"
        nginx_start "$1" "$2"
        nchan_wait_ready "$1" "${4:-2}"
        ;;
    nginx-stop) nginx_stop "$1" ;;
    nginx-pid) echo "$BASE/$1/logs/nginx.pid" ;;
    centrifugo-start) cf_start "$1" "$2" "${3:-}" ;;
    centrifugo-stop) cf_stop "$1" ;;
    *) sed -n '2,25p' "$0" >&2; exit 2 ;;
esac
