#!/usr/bin/env bash
# Where the time goes in a chat run: profiles ngx_im under load.
#
#   bench/profile.sh perf [RATE]       perf record of the nginx workers and
#                                      Redis during a chat run (default
#                                      5000 msg/s, 2 workers); prints the
#                                      top of the report by process/DSO and
#                                      by symbol
#   bench/profile.sh fanout [CODEC] [RATE]
#                                      the same for a fan-out run (2,000
#                                      sessions, RATE msg/s (200) for 12 s)
#                                      with ngx_im's clients on CODEC
#                                      (json, or pb: protobuf)
#   bench/profile.sh callgrind [RATE]  nginx as one process under
#                                      valgrind --tool=callgrind (default
#                                      200 msg/s: valgrind is ~50x slower);
#                                      prints callgrind_annotate's top
#
# Output: build/bench/profile/.  Ports as in bench.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export IMB_BASE=${IMB_BASE:-$ROOT/build/bench}
STACK=$ROOT/bench/stack.sh
BIN=$IMB_BASE/imbench
OUT=$IMB_BASE/profile
PORT=${IMB_PORT:-18080}
REDIS_PORT=${IMB_REDIS_PORT:-16390}
mode=${1:-perf}

mkdir -p "$OUT"
gcc -O2 -g -o "$BIN" "$ROOT/bench/imbench.c" "$ROOT/bench/imb.c" \
    "$ROOT/bench/imb_pb.c" "$ROOT/ngx_im_module/ngx_http_im_ws_frame.c" \
    -I"$ROOT/bench" \
    -I"$ROOT/ngx_im_module" -lcrypto

cleanup() {
    "$STACK" nginx-stop prof 2>/dev/null || true
    [ -n "${VG:-}" ] && kill -QUIT "$VG" 2>/dev/null && wait "$VG" || true
    "$STACK" redis-stop prof-redis "$REDIS_PORT" || true
}
trap cleanup EXIT

rm -rf "$IMB_BASE/prof-redis"
"$STACK" redis-start prof-redis "$REDIS_PORT"

# profile NAME WAIT SECONDS PIDS IMBENCH-ARGS...: imbench in the
# background (its output to $OUT/NAME.txt), perf record of PIDS for
# SECONDS after WAIT, then the end of imbench's table
profile() {
    local name=$1 wait=$2 secs=$3 pids=$4 load
    shift 4
    "$BIN" "$@" -s "127.0.0.1:$PORT" \
        --pid-file "$IMB_BASE/prof/logs/nginx.pid" \
        --redis-pid-file "$IMB_BASE/prof-redis/redis.pid" \
        >"$OUT/$name.txt" 2>&1 &
    load=$!
    sleep "$wait"
    perf record ${IMB_PERF_ARGS:-} -e cpu-clock -F 999 -o "$OUT/perf.data" -p "$pids" \
        -- sleep "$secs" 2>/dev/null
    wait "$load" || true
    grep -v '^{' "$OUT/$name.txt" | tail -8
}

case "$mode" in
perf)
    rate=${2:-5000}
    "$STACK" im-start prof "$PORT" "$REDIS_PORT" 2
    master=$(cat "$IMB_BASE/prof/logs/nginx.pid")
    pids=$(pgrep -P "$master" | paste -sd, -),$(cat "$IMB_BASE/prof-redis/redis.pid")
    profile chat 5 10 "$pids" chat -n 2000 -m 500 -r "$rate" -d 20
    perf report -i "$OUT/perf.data" --no-children --sort comm,dso -g none \
        -q 2>/dev/null | head -15
    perf report -i "$OUT/perf.data" --no-children --comm nginx \
        --sort dso,sym -g none -q 2>/dev/null | head -40
    ;;
fanout)
    # one publisher sends 200/s: over the per-connection rate limit
    IMB_EXTRA_HTTP="im_ws_rate 0; im_api_rate 0;" \
        "$STACK" im-start prof "$PORT" "$REDIS_PORT" 2
    master=$(cat "$IMB_BASE/prof/logs/nginx.pid")
    # the sessions connect first (~2 s), then 12 s of sends
    profile fanout 6 6 "$(pgrep -P "$master" | paste -sd, -)" \
        fanout -n 2000 -k $((${3:-200} * 12)) -r "${3:-200}" \
        --codec "${2:-json}"
    perf report -i "$OUT/perf.data" --no-children --sort dso,sym -g none \
        -q 2>/dev/null | head -30
    ;;
callgrind)
    rate=${2:-200}
    IMB_EXTRA_HTTP="" "$STACK" im-start prof "$PORT" "$REDIS_PORT" 1
    "$STACK" nginx-stop prof
    dir=$IMB_BASE/prof
    valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
        nginx -p "$dir" -c conf/nginx.conf -e "$dir/logs/error.log" \
        -g 'daemon off; master_process off;' 2>"$OUT/valgrind.log" &
    VG=$!
    for _ in $(seq 300); do
        redis-cli -p "$REDIS_PORT" client list 2>/dev/null |
            grep -q 'sub=[1-9]' && break
        sleep 0.1
    done
    "$BIN" chat -s "127.0.0.1:$PORT" -n 200 -m 100 -r "$rate" -d 20 \
        >"$OUT/chat.txt" 2>&1 || true
    kill -QUIT "$VG"
    wait "$VG" || true
    VG=
    grep -v '^{' "$OUT/chat.txt" | tail -7
    callgrind_annotate --inclusive=no "$OUT/callgrind.out" 2>/dev/null |
        head -45
    ;;
*)
    sed -n '2,19p' "$0" >&2
    exit 2
    ;;
esac
