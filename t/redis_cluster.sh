#!/usr/bin/env bash
# A local Redis Cluster on 127.0.0.1 for tests and the dev stack.
#
#   t/redis_cluster.sh start DIR BASE_PORT [MASTERS] [REPLICAS_PER_MASTER]
#   t/redis_cluster.sh stop  DIR BASE_PORT [MASTERS] [REPLICAS_PER_MASTER]
#   t/redis_cluster.sh node  DIR PORT      (re)start one node of DIR, no create
#
# start: MASTERS*(1+REPLICAS) nodes on BASE_PORT.. (cluster bus on +10000),
# each in DIR/<port>/ (redis.pid, redis.log, nodes.conf, appendonlydir),
# then `redis-cli --cluster create`, then waits (bounded) until every node
# says cluster_state:ok and knows every other node and every replica has
# master_link_status:up.  Prints "ready" and the comma-separated master
# addresses on stdout.  If every DIR/<port>/nodes.conf already exists the
# nodes rejoin their old cluster instead (dev-stack restart).  On failure the
# nodes it started are stopped again unless REDIS_CLUSTER_KEEP=1.
#
# stop: SHUTDOWN NOSAVE NOW to each node that has DIR/<port>/redis.pid,
# SIGKILL by pidfile if it is still there after a few seconds; idempotent.
#
# Defaults: MASTERS=3 REPLICAS=1, READY_TIMEOUT=20 (seconds, env).
# --repl-diskless-sync-delay 0: Redis 7 otherwise waits 5 s before every full
# sync, so each replica (initial, or a node restarted as replica) would
# take >5 s to reach master_link_status:up.

set -euo pipefail

READY_TIMEOUT=${READY_TIMEOUT:-20}
NODE_TIMEOUT_MS=${NODE_TIMEOUT_MS:-1000}

die() {
    echo "redis_cluster.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 start|stop DIR BASE_PORT [MASTERS] [REPLICAS_PER_MASTER]" >&2
    echo "       $0 node DIR PORT" >&2
    exit 2
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# cli PORT ARGS...: one redis-cli call, never longer than 5 s.
cli() {
    local port=$1
    shift
    timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null
}

listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_of PORT: the live redis-server pid from DIR/<port>/redis.pid, or "".
pid_of() {
    local pidfile="$DIR/$1/redis.pid" pid
    [[ -s $pidfile ]] || return 0
    pid=$(<"$pidfile")
    is_uint "$pid" || return 0
    # the pid may have been recycled after a SIGKILL left the pidfile behind
    if [[ -r /proc/$pid/cmdline ]] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "redis-server.*:$1"; then
        if [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
            echo "$pid"
        fi
    fi
}

start_node() {
    local port=$1 d="$DIR/$1"
    mkdir -p "$d"
    if [[ -n $(pid_of "$port") ]]; then
        die "node $port already running (pid $(pid_of "$port"))"
    fi
    if listening "$port"; then
        die "port $port is already in use by another process"
    fi
    if listening $((port + 10000)); then
        die "cluster bus port $((port + 10000)) (of node $port) is already in use"
    fi
    rm -f "$d/redis.pid"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$d" \
        --daemonize yes --pidfile "$d/redis.pid" --logfile "$d/redis.log" \
        --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout "$NODE_TIMEOUT_MS" \
        --appendonly yes --appendfsync everysec --save "" \
        --repl-diskless-sync-delay 0 \
        >/dev/null || die "redis-server on port $port failed to start (see $d/redis.log)"
}

wait_ping() {
    local port=$1 end=$((SECONDS + 10))
    while [[ $(cli "$port" ping || true) != PONG ]]; do
        if ((SECONDS >= end)) ||
            grep -qE 'aborting|Fatal|FATAL|Bad directive' "$DIR/$port/redis.log" 2>/dev/null; then
            tail -n 20 "$DIR/$port/redis.log" >&2 2>/dev/null || true
            die "node $port did not come up (log: $DIR/$port/redis.log)"
        fi
        sleep 0.05
    done
}

# cluster_ready: 0 once every node is ok and sees the whole cluster.
WHY=""
cluster_ready() {
    local port info repl nmasters=0 nreplicas=0 state
    for port in "${PORTS[@]}"; do
        info=$(cli "$port" cluster info || true)
        state=$(sed -n 's/^cluster_state:\([a-z]*\).*/\1/p' <<<"$info")
        if [[ $state != ok ]]; then
            WHY="node $port: cluster_state:${state:-unreachable}"
            return 1
        fi
        if ! grep -q "^cluster_known_nodes:$N\b" <<<"$info"; then
            WHY="node $port: $(grep cluster_known_nodes <<<"$info" | tr -d '\r'), want $N"
            return 1
        fi
        repl=$(cli "$port" info replication || true)
        if grep -q '^role:slave' <<<"$repl"; then
            if ! grep -q '^master_link_status:up' <<<"$repl"; then
                WHY="replica $port: master link not up"
                return 1
            fi
            nreplicas=$((nreplicas + 1))
        elif grep -q '^role:master' <<<"$repl"; then
            nmasters=$((nmasters + 1))
        else
            WHY="node $port: no role"
            return 1
        fi
    done
    if ((nmasters != MASTERS || nreplicas != MASTERS * REPLICAS)); then
        WHY="$nmasters masters / $nreplicas replicas, want $MASTERS / $((MASTERS * REPLICAS))"
        return 1
    fi
    return 0
}

master_addrs() {
    cli "${PORTS[0]}" cluster nodes |
        awk '$3 ~ /master/ && $3 !~ /fail/ && NF > 8 { sub(/@.*/, "", $2); print $2 }' |
        sort -t: -k2,2n | paste -sd, -
}

stop_ports() {
    local port pid pids=() end
    for port in "$@"; do
        pid=$(pid_of "$port")
        [[ -n $pid ]] || continue
        pids+=("$port:$pid")
        # NOW: a master must not wait (shutdown-timeout) for lagging replicas
        cli "$port" shutdown nosave now >/dev/null || true
    done
    end=$((SECONDS + 5))
    for entry in "${pids[@]+"${pids[@]}"}"; do
        port=${entry%%:*}
        pid=${entry#*:}
        while [[ -n $(pid_of "$port") ]] && ((SECONDS < end)); do
            sleep 0.05
        done
        if [[ -n $(pid_of "$port") ]]; then
            kill -9 "$pid" 2>/dev/null || true
            local kend=$((SECONDS + 5))
            while [[ -n $(pid_of "$port") ]]; do
                ((SECONDS < kend)) || die "node $port (pid $pid) survived SIGKILL"
                sleep 0.05
            done
        fi
        rm -f "$DIR/$port/redis.pid"
    done
}

STARTED=()
FRESH=0
on_exit() {
    local rc=$?
    if ((rc != 0)) && ((${#STARTED[@]})) && [[ ${REDIS_CLUSTER_KEEP:-0} != 1 ]]; then
        echo "redis_cluster.sh: stopping the nodes started (REDIS_CLUSTER_KEEP=1 keeps them)" >&2
        stop_ports "${STARTED[@]}" || true
        if ((FRESH)); then
            # half-made cluster state would block the next start
            for port in "${STARTED[@]}"; do rm -f "$DIR/$port/nodes.conf"; done
        fi
    fi
    exit "$rc"
}

[[ $# -ge 3 ]] || usage
CMD=$1
DIR=$2
is_uint "$3" || usage

case $CMD in
node)
    PORT=$3
    [[ -s $DIR/$PORT/nodes.conf ]] || die "$DIR/$PORT/nodes.conf missing: not a node of this cluster"
    start_node "$PORT"
    wait_ping "$PORT"
    echo "started 127.0.0.1:$PORT"
    exit 0
    ;;
start | stop) ;;
*) usage ;;
esac

BASE_PORT=$3
MASTERS=${4:-3}
REPLICAS=${5:-1}
is_uint "$MASTERS" && is_uint "$REPLICAS" || usage
((MASTERS >= 1)) || die "MASTERS must be >= 1"
N=$((MASTERS * (1 + REPLICAS)))
((BASE_PORT + N - 1 + 10000 <= 65535)) || die "BASE_PORT $BASE_PORT too high: bus ports are port+10000"
PORTS=()
for ((i = 0; i < N; i++)); do PORTS+=($((BASE_PORT + i))); done

if [[ $CMD == stop ]]; then
    [[ -d $DIR ]] || exit 0
    stop_ports "${PORTS[@]}"
    exit 0
fi

# start
command -v redis-server >/dev/null || die "redis-server not found"
command -v redis-cli >/dev/null || die "redis-cli not found"
if ((MASTERS < 3)); then
    echo "redis_cluster.sh: warning: redis-cli --cluster create wants >= 3 masters" >&2
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

have=0
for port in "${PORTS[@]}"; do
    [[ -s $DIR/$port/nodes.conf ]] && have=$((have + 1))
done
if ((have != 0 && have != N)); then
    die "$have of $N nodes under $DIR already have a nodes.conf: remove $DIR to start fresh"
fi

if ((have == 0)); then FRESH=1; fi
trap on_exit EXIT
for port in "${PORTS[@]}"; do
    start_node "$port"
    STARTED+=("$port")
done
for port in "${PORTS[@]}"; do wait_ping "$port"; done

if ((have == 0)); then
    addrs=()
    for port in "${PORTS[@]}"; do addrs+=("127.0.0.1:$port"); done
    if ! out=$(timeout 60 redis-cli --cluster create "${addrs[@]}" \
        --cluster-replicas "$REPLICAS" --cluster-yes 2>&1); then
        echo "$out" >&2
        die "redis-cli --cluster create failed"
    fi
    # the answer has an [ERR] line when a node refused its slots or role
    if grep -q '^\[ERR\]' <<<"$out"; then
        echo "$out" >&2
        die "redis-cli --cluster create reported errors"
    fi
fi

end=$((SECONDS + READY_TIMEOUT))
until cluster_ready; do
    if ((SECONDS >= end)); then
        for port in "${PORTS[@]}"; do
            echo "--- $port: $(cli "$port" cluster info | grep cluster_state || echo unreachable)" >&2
        done
        die "cluster not ready after ${READY_TIMEOUT} s: $WHY"
    fi
    sleep 0.1
done

trap - EXIT
echo ready
master_addrs
