#!/usr/bin/env bash
# A CallState cluster on this machine, on loopback: PostgreSQL, 3 Orleans silos and 2 SIP edges.
#
#   deploy/local/cluster.sh start    build, start everything, wait until ready, print where it listens
#   deploy/local/cluster.sh status   what is running, and whether each process answers ready
#   deploy/local/cluster.sh stop     stop everything this script started (by the PIDs it recorded)
#   deploy/local/cluster.sh clean    stop, then delete the state directory (database included)
#
# The silos form one Orleans cluster (id "local") through the membership table in PostgreSQL (Storage clustering);
# each edge is an Orleans client of every silo's gateway. State (PIDs, logs, the database) lives in
# $CALLSTATE_LOCAL_DIR (default .local-cluster under the repo). Ports: PostgreSQL 55440; silo admin HTTP 18081-18083,
# silo-to-silo 11111-11113, gateway 30000-30002, silo health probes 18181-18183; edge SIP (UDP+TCP) 5060 and 5062,
# edge admin HTTP 18091-18092, edge health probes 18191-18192; the admin token is in $CALLSTATE_LOCAL_DIR/admin-token;
# the edges route calls to 127.0.0.1:5070. CALLSTATE_LOCAL_PORT_OFFSET is added to each.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
state=${CALLSTATE_LOCAL_DIR:-$repo/.local-cluster}
offset=${CALLSTATE_LOCAL_PORT_OFFSET:-0}
pg_port=$((55440 + offset))
callee_port=$((5070 + offset))
cluster_id=callstate  # as the manifests name the cluster (deploy/k8s/base: CallState__Orleans__ClusterId)
silos=3
edges=2
# Settings shared with the Kubernetes dev overlay: every process gets callstate.env, the edges edge.env too (the
# overlay turns the same files into the pods' environment; docs/deploy.md).
dev_overlay=$repo/deploy/k8s/overlays/dev
silo_dll=$repo/src/Silo/bin/Release/net10.0/CallState.Silo.dll
edge_dll=$repo/src/SipEdge/bin/Release/net10.0/CallState.SipEdge.dll

silo_http() { echo $((18081 + offset + $1)); }
silo_port() { echo $((11111 + offset + $1)); }
gateway_port() { echo $((30000 + offset + $1)); }
edge_sip() { echo $((5060 + offset + 2 * $1)); }
edge_http() { echo $((18091 + offset + $1)); }
# Health probes on their own ports (no token): silos 18181.., edges 18191..
silo_health() { echo $((18181 + offset + $1)); }
edge_health() { echo $((18191 + offset + $1)); }

# The KEY__PART=value lines of an env file (blank lines and # comments skipped) as --KEY:PART=value arguments.
env_args() { # file
    local line key
    while IFS= read -r line || [[ -n $line ]]; do
        [[ -z $line || $line == \#* ]] && continue
        key=${line%%=*}
        printf -- '--%s=%s\n' "${key//__/:}" "${line#*=}"
    done <"$1"
}

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

# True when the recorded PID is alive and still one of ours (a PID the kernel reused for something else is not).
running() { # name
    local file=$state/pids/$1 pid
    [[ -f $file ]] || return 1
    pid=$(cat "$file")
    kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "CallState\.\(Silo\|SipEdge\)\.dll"
}

ready() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$1/health/ready" 2>/dev/null; }

start_pg() {
    local bin; bin=$(pg_bin)
    mkdir -p "$state/pg"
    if [[ $(id -u) == 0 ]]; then chown postgres "$state/pg"; fi
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

wait_ready() { # port name
    for _ in $(seq 1 120); do
        if ready "$1"; then return 0; fi
        if ! running "$2"; then
            echo "$2 exited; the end of its log ($state/logs/$2.log):" >&2
            tail -20 "$state/logs/$2.log" >&2
            return 1
        fi
        sleep 0.5
    done
    echo "$2 did not become ready; see its log in $state/logs/$2.log" >&2
    return 1
}

launch() { # name dll args...
    local name=$1 dll=$2; shift 2
    if running "$name"; then return; fi
    nohup dotnet "$dll" "$@" >"$state/logs/$name.log" 2>&1 &
    echo $! >"$state/pids/$name"
}

start() {
    mkdir -p "$state/pids" "$state/logs"
    # The admin API's write token, in a secret file every process reads (CallState:Admin:TokensFile), made once.
    if [[ ! -s $state/admin-token ]]; then
        (umask 077; od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$state/admin-token")
    fi
    (umask 077; printf 'operator write %s\n' "$(cat "$state/admin-token")" >"$state/admin-tokens")
    echo "building the silo and the edge (Release)..."
    for project in src/Silo/CallState.Silo.csproj src/SipEdge/CallState.SipEdge.csproj src/Cli/CallState.Cli.csproj; do
        dotnet build "$repo/$project" -c Release --disable-build-servers -v quiet -nologo >"$state/logs/build.log" 2>&1 \
            || { tail -20 "$state/logs/build.log" >&2; exit 1; }
    done
    start_pg
    local cs="Host=127.0.0.1;Port=$pg_port;Username=callstate;Database=postgres"
    local shared edge_shared
    mapfile -t shared < <(env_args "$dev_overlay/callstate.env")
    mapfile -t edge_shared < <(env_args "$dev_overlay/edge.env")
    local common=(--CallState:Limits:DefaultUser:Total=2 --CallState:Limits:Users:alice:Total=2 --CallState:Limits:Users:alice:Outbound=1
        "--CallState:Orleans:ClusterId=$cluster_id" "--CallState:Admin:TokensFile=$state/admin-tokens" "${shared[@]}")
    local gateways=()
    for i in $(seq 0 $((silos - 1))); do
        gateways+=("--CallState:Orleans:Gateways:$i=127.0.0.1:$(gateway_port "$i")")
        launch "silo$i" "$silo_dll" \
            "--urls=http://127.0.0.1:$(silo_http "$i")" "--CallState:Admin:HealthPort=$(silo_health "$i")" \
            --CallState:Storage:Provider=PostgreSql "--CallState:Storage:ConnectionString=$cs" \
            --CallState:Orleans:Clustering=Storage --CallState:Orleans:AdvertisedAddress=127.0.0.1 \
            "--CallState:Orleans:SiloPort=$(silo_port "$i")" "--CallState:Orleans:GatewayPort=$(gateway_port "$i")" \
            "${common[@]}"
    done
    for i in $(seq 0 $((silos - 1))); do wait_ready "$(silo_health "$i")" "silo$i"; done
    # edge.env sets the admission deadline to 1 s, not 200 ms: on one machine the first calls meet silos that have not
    # run (JIT, first activations) and would be refused with 503 (fail closed).
    for i in $(seq 0 $((edges - 1))); do
        launch "edge$i" "$edge_dll" \
            "--urls=http://127.0.0.1:$(edge_http "$i")" "--CallState:Admin:HealthPort=$(edge_health "$i")" \
            --CallState:Sip:ListenAddress=127.0.0.1 "--CallState:Sip:Port=$(edge_sip "$i")" \
            --CallState:Admission:LocalDomains:0=127.0.0.1 --CallState:Admission:Routes:0:Prefix= \
            "--CallState:Admission:Routes:0:Upstream=127.0.0.1:$callee_port" \
            "${gateways[@]}" "${common[@]}" "${edge_shared[@]}"
    done
    # An edge is ready once one admission round trip through the cluster has succeeded.
    for i in $(seq 0 $((edges - 1))); do wait_ready "$(edge_health "$i")" "edge$i"; done
    status
    local scenarios=$repo/tests/Cluster.IntegrationTests/sipp
    printf 'SEQUENTIAL\nalice\n' >"$state/alice.csv"
    cat <<TEXT

Try it: a callee on 127.0.0.1:$callee_port, then alice calling bob twice at once through edge0 (her outbound limit
is 1: one call connects, one gets 486). The scenarios follow Record-Route, so ACK and BYE cross the edge:
  sipp -sf $scenarios/uas_rr.xml -i 127.0.0.1 -p $callee_port -bg
  sipp 127.0.0.1:$(edge_sip 0) -sf $scenarios/uac_rr.xml -inf $state/alice.csv -s bob -i 127.0.0.1 -p $((5080 + offset)) -m 2 -l 2 -d 5000 -trace_msg
  curl -s -H "Authorization: Bearer \$(cat $state/admin-token)" http://127.0.0.1:$(silo_http 0)/api/limits     # counts, from any silo
  CALLSTATE_URL=http://127.0.0.1:$(silo_http 0) CALLSTATE_TOKEN=\$(cat $state/admin-token) dotnet $repo/src/Cli/bin/Release/net10.0/callstate.dll cac show
Stop with: $0 stop
TEXT
}

status() {
    echo "CallState local cluster '$cluster_id' (state in $state)"
    local pg=stopped
    if [[ -f $state/pg/data/postmaster.pid ]] && (cd / && as_pg "$(pg_bin)/pg_ctl" -D "$state/pg/data" status >/dev/null 2>&1); then pg=running; fi
    printf '  %-8s 127.0.0.1:%d (user callstate, database postgres)  %s\n' postgres "$pg_port" "$pg"
    for i in $(seq 0 $((silos - 1))); do
        printf '  %-8s admin http://127.0.0.1:%d  silo 127.0.0.1:%d  gateway 127.0.0.1:%d  %s\n' "silo$i" \
            "$(silo_http "$i")" "$(silo_port "$i")" "$(gateway_port "$i")" "$(describe "silo$i" "$(silo_health "$i")")"
    done
    for i in $(seq 0 $((edges - 1))); do
        printf '  %-8s sip udp/tcp 127.0.0.1:%d  health http://127.0.0.1:%d  %s\n' "edge$i" \
            "$(edge_sip "$i")" "$(edge_health "$i")" "$(describe "edge$i" "$(edge_health "$i")")"
    done
    printf '  %-8s calls are routed to 127.0.0.1:%d\n' callee "$callee_port"
    echo "  logs     $state/logs"
}

describe() { # name health-port
    if ! running "$1"; then echo stopped; return; fi
    local text; text="pid $(cat "$state/pids/$1")"
    if ready "$2"; then echo "$text, ready"; else echo "$text, not ready"; fi
}

stop() {
    for pidfile in "$state"/pids/edge* "$state"/pids/silo*; do
        [[ -f $pidfile ]] || continue
        local name pid; name=$(basename "$pidfile")
        if running "$name"; then
            pid=$(cat "$pidfile")
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            if running "$name"; then kill -KILL "$pid" 2>/dev/null || true; fi
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
    *) sed -n '2,13p' "$0"; exit 2 ;;
esac
