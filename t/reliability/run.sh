#!/usr/bin/env bash
# The reliability run (MISSION.md item 2, stricter): builds imrel, starts a
# private Redis (AOF) and nginx with ngx_im (2 workers), runs the clients
# with every fault on, stops the servers and checks nginx's error log.
#
#   t/reliability/run.sh            the seed-sized run: 50 clients,
#                                   100,000 messages, sleep 0..60 s
#   t/reliability/run.sh --short    20 clients, 5,000 messages, one worker
#                                   kill, one reload, one Redis restart
#   ... [-- imrel options]          passed on (they win over the defaults)
#
# Environment: IMR_PORT, IMR_REDIS_PORT (free ones are picked otherwise),
# IMR_BASE (build/reliability), IM_MODULE (build/nginx/*.so).
# Exit status: 0 for PASS; 1 for a violation or a bad error log line.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BASE=${IMR_BASE:-$ROOT/build/reliability}
export IMB_BASE=$BASE/stack
STACK=$ROOT/bench/stack.sh
BIN=$BASE/imrel

log() { printf 'reliability: %s\n' "$*" >&2; }

free_port() {
    local p
    for _ in $(seq 100); do
        p=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
    return 1
}

short=0
if [ "${1:-}" = "--short" ]; then
    short=1
    shift
fi
[ "${1:-}" = "--" ] && shift

PORT=${IMR_PORT:-$(free_port)}
REDIS_PORT=${IMR_REDIS_PORT:-$(free_port)}

mkdir -p "$BASE"
gcc -O2 -g -Wall -Wextra -o "$BIN" "$ROOT/t/reliability/imrel.c" \
    "$ROOT/bench/imb.c" "$ROOT/bench/imb_pb.c" \
    "$ROOT/ngx_im_module/ngx_http_im_ws_frame.c" \
    -I"$ROOT/bench" -I"$ROOT/ngx_im_module" -lcrypto

cleanup() {
    "$STACK" nginx-stop im || true
    "$STACK" redis-stop redis "$REDIS_PORT" || true
}
trap cleanup EXIT
trap 'exit 143' TERM INT

rm -rf "${IMB_BASE:?}/redis"
"$STACK" redis-start redis "$REDIS_PORT"
"$STACK" im-start im "$PORT" "$REDIS_PORT" 2

RESTART="$STACK redis-restart redis $REDIS_PORT"
DATA=$BASE/data
rm -rf "$DATA"

if [ "$short" = 1 ]; then
    ARGS=(-c 20 -M 5000 -r 500 --sleep 5 --kill-every 4 --kills 1
          --reload-every 7 --reloads 1 --redis-at 10 --drop-every 0.5
          --offline 1 --timeout 90)
else
    ARGS=(-c 50 -M 100000 -r 1000 --sleep 60 --kill-every 20
          --reload-every 30 --redis-at 45 --drop-every 1 --offline 3
          --timeout 900)
fi

log "nginx :$PORT, redis :$REDIS_PORT, files in $DATA"
set +e
"$BIN" run -s "127.0.0.1:$PORT" --dir "$DATA" \
    --pid-file "$("$STACK" nginx-pid im)" --redis-cmd "$RESTART" \
    "${ARGS[@]}" "$@"
status=$?
set -e

cleanup
trap - EXIT

# a SIGKILLed worker is reported by the master as an alert: that one is
# ours; any other alert, crit or emerg is a finding
ERRLOG=$BASE/stack/im/logs/error.log
bad=$(grep -E '\[(alert|crit|emerg)\]' "$ERRLOG" |
      grep -v 'exited on signal 9' || true)
if [ -n "$bad" ]; then
    log "unexpected lines in $ERRLOG:"
    printf '%s\n' "$bad" | head -20 >&2
    status=1
fi

exit "$status"
