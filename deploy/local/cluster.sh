#!/usr/bin/env bash
# A CallState cluster on this machine, on loopback: PostgreSQL, 3 silos and 2 SIP edges.
#
#   deploy/local/cluster.sh start    build, start everything, wait until ready, print where it listens
#   deploy/local/cluster.sh status   what is running
#   deploy/local/cluster.sh stop     stop everything this script started (by the PIDs it recorded)
#   deploy/local/cluster.sh clean    stop, then delete the state directory (database included)
#
# State (PIDs, logs, the database) lives in $CALLSTATE_LOCAL_DIR (default .local-cluster under the repo).
# Ports: PostgreSQL 55440; silo admin HTTP 18081-18083, silo RPC 11111-11113; edge SIP (UDP+TCP) 5060 and 5062,
# edge HTTP (health) 18091-18092. Override the base with CALLSTATE_LOCAL_PORT_OFFSET (added to each).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
state=${CALLSTATE_LOCAL_DIR:-$repo/.local-cluster}
offset=${CALLSTATE_LOCAL_PORT_OFFSET:-0}
pg_port=$((55440 + offset))
silos=3
edges=2

pg_bin() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    [[ -n $bin ]] || { echo "PostgreSQL is not installed (Debian: apt-get install postgresql)" >&2; exit 1; }
    echo "$bin"
}

# PostgreSQL refuses to run as root: run its tools as the postgres user then.
as_pg() {
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_pg() {
    local bin; bin=$(pg_bin)
    mkdir -p "$state/pg"
    [[ $(id -u) == 0 ]] && chown postgres "$state/pg"
    if [[ ! -f $state/pg/data/PG_VERSION ]]; then
        (cd "$state/pg" && as_pg "$bin/initdb" -D "$state/pg/data" -A trust -U callstate >"$state/pg/initdb.log")
    fi
    if ! (cd "$state/pg" && as_pg "$bin/pg_ctl" -D "$state/pg/data" status >/dev/null 2>&1); then
        (cd "$state/pg" && as_pg "$bin/pg_ctl" -D "$state/pg/data" -l "$state/pg/postgres.log" -w start \
            -o "-p $pg_port -k $state/pg -c listen_addresses=127.0.0.1" >/dev/null)
    fi
}

stop_pg() {
    local bin; bin=$(pg_bin)
    if [[ -f $state/pg/data/postmaster.pid ]]; then
        (cd "$state/pg" && as_pg "$bin/pg_ctl" -D "$state/pg/data" -m fast -w stop >/dev/null) || true
    fi
}

wait_ready() { # url name
    for _ in $(seq 1 120); do
        if curl -fsS -o /dev/null "$1"; then return 0; fi
        sleep 0.5
    done
    echo "$2 did not become ready; see its log in $state/logs" >&2
    return 1
}

launch() { # name dll args...
    local name=$1 dll=$2; shift 2
    if running "$state/pids/$name"; then return; fi
    nohup dotnet "$dll" "$@" >"$state/logs/$name.log" 2>&1 &
    echo $! >"$state/pids/$name"
}

start() {
    mkdir -p "$state/pids" "$state/logs"
    echo "building (Release)..."
    dotnet build "$repo/Cluster.sln" -c Release --disable-build-servers -v quiet -nologo >"$state/logs/build.log" 2>&1 \
        || { tail -20 "$state/logs/build.log" >&2; exit 1; }
    start_pg
    local cs="Host=127.0.0.1;Port=$pg_port;Username=callstate;Database=postgres"
    local common=(--CallState:Limits:DefaultUser:Total=2 --CallState:Limits:Users:alice:Total=2 --CallState:Limits:Users:alice:Outbound=1)
    local bootstrap=()
    for i in $(seq 0 $((silos - 1))); do
        bootstrap+=("--CallState:Cluster:Bootstrap:$i=127.0.0.1:$((11111 + offset + i))")
        launch "silo$i" "$repo/src/Silo/bin/Release/net10.0/CallState.Silo.dll" \
            "--urls=http://127.0.0.1:$((18081 + offset + i))" \
            --CallState:Storage:Provider=PostgreSql "--CallState:Storage:ConnectionString=$cs" \
            --CallState:Cluster:Enabled=true "--CallState:Cluster:SiloId=silo$i" \
            --CallState:Cluster:ListenAddress=127.0.0.1 "--CallState:Cluster:Port=$((11111 + offset + i))" \
            "${common[@]}"
    done
    for i in $(seq 0 $((silos - 1))); do wait_ready "http://127.0.0.1:$((18081 + offset + i))/health/ready" "silo$i"; done
    for i in $(seq 0 $((edges - 1))); do
        launch "edge$i" "$repo/src/SipEdge/bin/Release/net10.0/CallState.SipEdge.dll" \
            "--urls=http://127.0.0.1:$((18091 + offset + i))" \
            --CallState:Sip:ListenAddress=127.0.0.1 "--CallState:Sip:Port=$((5060 + offset + 2 * i))" \
            --CallState:Admission:LocalDomains:0=127.0.0.1 --CallState:Admission:Routes:0:Prefix= \
            "--CallState:Admission:Routes:0:Upstream=127.0.0.1:$((5070 + offset))" \
            "${bootstrap[@]}" "${common[@]}"
    done
    for i in $(seq 0 $((edges - 1))); do wait_ready "http://127.0.0.1:$((18091 + offset + i))/health/ready" "edge$i"; done
    status
    cat <<TEXT

Try it (a callee on 127.0.0.1:$((5070 + offset)), then alice calling through edge 0; her outbound limit is 1):
  sipp -sn uas -i 127.0.0.1 -p $((5070 + offset)) &
  sipp 127.0.0.1:$((5060 + offset)) -sn uac -s bob -i 127.0.0.1 -m 2 -l 2 -d 5000 -key service bob
  curl -s http://127.0.0.1:$((18081 + offset))/api/limits | head     # counts, from any silo
Stop with: $0 stop
TEXT
}

status() {
    echo "CallState local cluster (state in $state)"
    printf '  %-7s %s\n' postgres "127.0.0.1:$pg_port (user callstate, database postgres)"
    for i in $(seq 0 $((silos - 1))); do
        local s=stopped; running "$state/pids/silo$i" && s="pid $(cat "$state/pids/silo$i")"
        printf '  %-7s admin http://127.0.0.1:%d  rpc 127.0.0.1:%d  %s\n' "silo$i" $((18081 + offset + i)) $((11111 + offset + i)) "$s"
    done
    for i in $(seq 0 $((edges - 1))); do
        local s=stopped; running "$state/pids/edge$i" && s="pid $(cat "$state/pids/edge$i")"
        printf '  %-7s sip udp/tcp 127.0.0.1:%d  health http://127.0.0.1:%d  %s\n' "edge$i" $((5060 + offset + 2 * i)) $((18091 + offset + i)) "$s"
    done
    echo "  logs    $state/logs"
}

stop() {
    for pidfile in "$state"/pids/edge* "$state"/pids/silo*; do
        [[ -f $pidfile ]] || continue
        if running "$pidfile"; then
            local pid; pid=$(cat "$pidfile")
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
    stop_pg
    echo "stopped"
}

case ${1:-} in
    start) start ;;
    status) status ;;
    stop) stop ;;
    clean) stop; rm -rf "$state" ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
esac
