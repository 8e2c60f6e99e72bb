#!/usr/bin/env bash
# Call setups per second, side by side: Kamailio 5.6 (stateful proxy, per-caller admission on a dialog profile)
# against CallState standalone (edge with an Orleans silo in process, SQLite) and CallState cluster (edge as an Orleans
# client of 1 or more silo processes, PostgreSQL), all under the same sipp load on loopback, in one run, each ramp
# repeated RUNS times (the systems take turns) and summarised by the median. See bench/compare/README.md.
#   bench/compare/run.sh [rates...]          e.g. bench/compare/run.sh 500 1000 2000
# Environment (defaults in brackets):
#   RATES ["500 1000 1250 1500 1750 2000 2250 2500 2750 3000 3250 3500 3750 4000"]  offered calls per second, one step
#                           each, ascending (arguments win); steps of 250 from 1000 up, so the top is known to 250 cps
#   RUNS [3]                ramps per system; the summary gives the median of the runs' highest passing rates
#   SECONDS_PER_RATE [10]   length of a step; calls per step = rate * SECONDS_PER_RATE
#   HOLD_MS [1000]          call length (sipp -d): INVITE, 180, 200, ACK, hold, BYE, 200
#   SUTS ["kamailio standalone cluster"]  which systems to run, in this order; "cluster" stands for one cluster per
#                           entry of SILOS (cluster1, cluster3, ...), and clusterN may be named directly
#   SILOS [1]               silo counts of the cluster, e.g. "1 3": the cluster with 1 silo, then with 3 silos
#   PRECHECK [1]            before each ramp: per-caller limit 2, three concurrent calls of one user -> one 486
#   WARMUP_S [3]            an unmeasured step at the lowest rate before the ramp (JIT, pools, caches)
#   SETTLE_S [2]            pause after each step (its CPU is counted with the step)
#   KAM_CHILDREN [4]        Kamailio UDP worker processes
#   KAM_SHM_MB [2048]       Kamailio shared memory (-m); 512 ran out at 2,500 cps (transactions wait 5 s after they end)
#   USERS [100]             callers user1..userN (sipp -inf, SEQUENTIAL)
#   PG_PORT [55450]         the throwaway PostgreSQL (clusters only)
#   KEEP_WORK [0]           1: keep the temp directory with every log and sipp trace
#   EDGE_ARGS [""]          more command-line settings for CallState's edge (split on spaces)
#   LOG_LEVEL [Warning]     CallState processes' default log level
#   OVERLOAD [""]           past capacity: multiples of each system's peak, e.g. "2 4"; after the ramps, each system is
#                           restarted and offered peak x 1 and then each multiple for OVERLOAD_S seconds, while a load
#                           balancer's probe sends OPTIONS (PROBE_RATE a second); empty: no overload phase
#   OVERLOAD_S [30]         length of an overload step
#   PEAK [""]               the peak the multiples apply to, for every system; empty: each system's median highest rate
#                           from this run's ramps (PEAK with RATES="" skips the ramps)
#   PROBE_RATE [10]         OPTIONS probes a second during an overload step (sipp -nr: one datagram each, 2 s to answer)
# A step fails (and ends that system's ramp) when >= 1% of its calls did not complete with a 200 or when the achieved
# rate is below 90% of the offered rate.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
command_line="$0${*:+ $*}"
if (($# > 0)); then rates=("$@"); else read -r -a rates <<<"${RATES-500 1000 1250 1500 1750 2000 2250 2500 2750 3000 3250 3500 3750 4000}"; fi
read -r -a overload <<<"${OVERLOAD:-}"
overload_s=${OVERLOAD_S:-30}
peak=${PEAK:-}
probe_rate=${PROBE_RATE:-10}
per_rate=${SECONDS_PER_RATE:-10}
hold_ms=${HOLD_MS:-1000}
runs=${RUNS:-3}
read -r -a silo_counts <<<"${SILOS:-1}"
suts=()
for s in ${SUTS:-kamailio standalone cluster}; do
    if [[ $s == cluster ]]; then for n in "${silo_counts[@]}"; do suts+=("cluster$n"); done; else suts+=("$s"); fi
done
precheck=${PRECHECK:-1}
warmup_s=${WARMUP_S:-3}
settle_s=${SETTLE_S:-2}
kam_children=${KAM_CHILDREN:-4}
kam_shm_mb=${KAM_SHM_MB:-2048}
users=${USERS:-100}
pg_port=${PG_PORT:-55450}
high=1000000

# Ports (loopback only). Silo i of a cluster: admin API 26100+i, silo-to-silo 26110+i, gateway 26120+i.
kam_port=26060 uac_port=26061 probe_port=26062 edge_sip_port=26070 edge_http_port=26082 uas_port=26090
silo_http_base=26100 silo_port_base=26110 gateway_base=26120 max_silos=10
# Each process's health probes listen on its admin port + 1000; the admin API needs a token this run makes up
# (docs/operations.md, "Admin API").
health_offset=1000
bench_token="compare-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
admin_auth=("--CallState:Admin:Tokens:bench:Token=$bench_token" --CallState:Admin:Tokens:bench:Role=Read)

uac_xml=$repo/tests/Cluster.IntegrationTests/sipp/uac_rr.xml
uas_xml=$repo/tests/Cluster.IntegrationTests/sipp/uas_rr.xml
edge_dll=$repo/src/SipEdge/bin/Release/net10.0/CallState.SipEdge.dll
silo_dll=$repo/src/Silo/bin/Release/net10.0/CallState.Silo.dll

die() { echo "bench/compare/run.sh: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "run as root (installs packages, runs PostgreSQL as user postgres)"
for r in "${rates[@]}"; do [[ $r =~ ^[1-9][0-9]*$ ]] || die "rate '$r' is not a positive integer"; done
for s in "${suts[@]}"; do
    [[ $s =~ ^(kamailio|standalone|cluster([1-9][0-9]*))$ ]] || die "SUTS: unknown system '$s' (kamailio, standalone, cluster, clusterN)"
    [[ $s != cluster* ]] || ((${s#cluster} <= max_silos)) || die "$s: at most $max_silos silos"
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
for m in "${overload[@]}"; do [[ $m =~ ^[1-9][0-9]*$ ]] || die "OVERLOAD: multiple '$m' is not a positive integer"; done
[[ -z $peak || $peak =~ ^[1-9][0-9]*$ ]] || die "PEAK must be a positive integer"
((${#rates[@]} > 0)) || [[ -n $peak ]] || die "no RATES to ramp and no PEAK"
[[ $overload_s =~ ^[1-9][0-9]*$ && $probe_rate =~ ^[1-9][0-9]*$ ]] || die "OVERLOAD_S and PROBE_RATE must be positive integers"

# ---------------------------------------------------------------- prerequisites and build
missing=()
# Only what the chosen systems need: Kamailio for kamailio, PostgreSQL for a cluster.
if [[ " ${suts[*]} " == *" kamailio "* ]]; then [[ -x /usr/sbin/kamailio ]] || missing+=(kamailio); fi
command -v sipp >/dev/null || missing+=(sip-tester)
if [[ " ${suts[*]} " == *" cluster"* ]]; then compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql); fi
command -v ss >/dev/null || missing+=(iproute2)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]} > 0)); then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y "${missing[@]}"
fi
command -v dotnet >/dev/null || die "the .NET SDK (see global.json) is not installed"
pg_bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

echo "building CallState (Release)"
# No build servers: they would outlive this script.
dotnet build "$repo/src/SipEdge" -c Release --nologo -v q --disable-build-servers >/dev/null
dotnet build "$repo/src/Silo" -c Release --nologo -v q --disable-build-servers >/dev/null

for p in $kam_port $uac_port $probe_port $edge_sip_port $uas_port; do
    [[ -z $(ss -Hlun "sport = :$p") ]] || die "UDP port $p is in use"
done
for p in $edge_sip_port $edge_http_port $pg_port $(seq $silo_http_base $((gateway_base + max_silos - 1))); do
    [[ -z $(ss -Hltn "sport = :$p") ]] || die "TCP port $p is in use"
done

# ---------------------------------------------------------------- processes, cleanup
work=$(mktemp -d /tmp/callstate-compare.XXXXXX)
chmod 755 "$work"
declare -A procs=()   # pid -> name, everything this script started and has not stopped yet
pg_data=""

stop_pid() {  # stop_pid PID: TERM, up to 10 s, then KILL; then any child it left behind (Kamailio's workers)
    local pid=$1 kids k i
    kids=$(descendants "$pid" | tail -n +2 | while read -r k; do echo "$k:$(cat "/proc/$k/comm" 2>/dev/null)"; done)
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for k in $kids; do
        # Only a process that still has the same pid and name (not a reused pid).
        if [[ $(cat "/proc/${k%%:*}/comm" 2>/dev/null) == "${k#*:}" ]]; then kill -9 "${k%%:*}" 2>/dev/null || true; fi
    done
    unset "procs[$pid]"
    return 0
}
stop_postgres() {
    if [[ -n $pg_data && -f $pg_data/postmaster.pid ]]; then
        (cd "$work" && runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w stop >/dev/null 2>&1) || true
    fi
    pg_data=""
}
cleanup() {
    local pid
    for pid in "${!procs[@]}"; do stop_pid "$pid"; done
    stop_postgres
    if [[ ${KEEP_WORK:-0} == 1 ]]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# descendants PID: PID and every process below it, one a line.
descendants() {
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { kids[$2] = kids[$2] " " $1 }
        END { n = 1; q[1] = root; for (i = 1; i <= n; i++) { print q[i]; m = split(kids[q[i]], k, " "); for (j = 1; j <= m; j++) q[++n] = k[j] } }'
}
# cpu_ticks PID: user+system clock ticks of PID and all its descendants (live ones, plus children they reaped).
cpu_ticks() {
    local total=0 p t
    for p in $(descendants "$1"); do
        t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13 + $14 + $15}') || t=0
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
# host_ticks: "idle-ticks wall-seconds" of the whole machine. Busy time in /proc/stat is sampled at the tick and
# misses short bursts (Kamailio's workers wake per packet), while idle time is measured; so the machine's busy share
# is 1 - idle / (wall * cores), not busy / total.
host_ticks() { echo "$(awk '/^cpu / {print $5 + $6}' /proc/stat) $(date +%s.%N)"; }
# alloc_bytes PORT: bytes a CallState process allocated since start (System.Runtime's
# dotnet.gc.heap.total_allocated, scraped from its GET /metrics), or n/a.
alloc_bytes() {
    local file
    file=$(mktemp)
    curl -sf --max-time 2 -H "Authorization: Bearer $bench_token" "http://127.0.0.1:$1/metrics" >"$file" 2>/dev/null || : >"$file"
    python3 "$repo/bench/metrics.py" value "$file" dotnet_gc_heap_total_allocated_bytes_total
    rm -f "$file"
}
wait_http() {  # wait_http PORT PID NAME: PORT is the admin port; the probes answer on PORT + health_offset
    local i
    for i in $(seq 1 300); do
        curl -sf --max-time 1 "http://127.0.0.1:$(($1 + health_offset))/health/ready" >/dev/null 2>&1 && return 0
        kill -0 "$2" 2>/dev/null || { tail -20 "$work/$3.log" >&2; die "$3 exited during start-up"; }
        sleep 0.1
    done
    tail -20 "$work/$3.log" >&2; die "$3 not ready after 30 s"
}
wait_udp() {  # wait_udp PORT PID NAME
    local i
    for i in $(seq 1 100); do
        [[ -n $(ss -Hlun "sport = :$1") ]] && { sleep 0.5; return 0; }
        kill -0 "$2" 2>/dev/null || { tail -20 "$work/$3.log" >&2; die "$3 exited during start-up"; }
        sleep 0.1
    done
    die "$3 is not listening on UDP $1 after 10 s"
}

# ---------------------------------------------------------------- PostgreSQL (cluster only)
start_postgres() {
    local dir=$work/pg
    mkdir -p "$dir" && chown postgres "$dir"
    pg_data=$dir/data
    (cd "$dir" && runuser -u postgres -- "$pg_bin/initdb" -D "$pg_data" -A trust -U callstate >"$dir/initdb.log" 2>&1) \
        || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    (cd "$dir" && runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_data" -l "$dir/postgres.log" -w start \
        -o "-p $pg_port -k $dir -c listen_addresses=127.0.0.1" >/dev/null) \
        || { cat "$dir/postgres.log" >&2; die "PostgreSQL did not start"; }
    pg_pid=$(head -1 "$pg_data/postmaster.pid")
}
pg_conn="Host=127.0.0.1;Port=$pg_port;Username=callstate;Database=postgres"

# ---------------------------------------------------------------- systems under test
# Each start_* sets edge_pid/silo_pids/pg_pid or kam_pid, and target. $1 = per-caller limit.
edge_pid="" pg_pid="" kam_pid="" uas_pid=""
silo_pids=()
start_kamailio() {
    local limit=$1 rundir=$work/kamailio-run
    mkdir -p "$rundir"
    /usr/sbin/kamailio -DD -E -f "$here/kamailio.cfg" -Y "$rundir" -P "$rundir/kamailio.pid" -m "$kam_shm_mb" -M 32 \
        -l "udp:127.0.0.1:$kam_port" -A "CALLER_LIMIT=$limit" -A "UAS_URI=\"sip:127.0.0.1:$uas_port\"" \
        -A "CHILDREN=$kam_children" -A "CTL_SOCKET=\"unix:$rundir/kamailio_ctl\"" >"$work/kamailio.log" 2>&1 &
    kam_pid=$!; procs[$kam_pid]=kamailio
    wait_udp $kam_port $kam_pid kamailio
    target=127.0.0.1:$kam_port
    kam_ctl=unix:$rundir/kamailio_ctl
}
# Limits: every user at $1 (total, inbound, outbound) except the callee "service", which stays high, so the
# precheck's refusal is the caller's limit (as in Kamailio) and the ramp never refuses.
callstate_limits() {
    echo --CallState:Limits:DefaultUser:Total="$1" --CallState:Limits:DefaultUser:Inbound="$1" \
        --CallState:Limits:DefaultUser:Outbound="$1" --CallState:Limits:Users:service:Total=$high \
        --CallState:Limits:Users:service:Inbound=$high --CallState:Limits:Users:service:Outbound=$high
}
# The sipp caller is one source offering thousands of requests a second: without this it would get the default
# per-source budget (docs/architecture.md, "Overload control"); with it, only the edge's own load sheds calls.
budget_args=(--CallState:Sip:Overload:Default:RequestsPerSecond=1000000 --CallState:Sip:Overload:Default:Burst=1000000
    --CallState:Sip:Overload:Default:MaxTransactions=1000000
    # Stopped by SIGTERM between runs: no drain (docs/operations.md, "Draining an edge"), nothing is in progress then.
    --CallState:Sip:DrainTimeout=00:00:00)
instance=0
start_standalone() {  # arguments as in bench/sipp/proxy-throughput.sh ADMISSION=sqlite (an Orleans silo in the edge process)
    local -a limits; read -r -a limits <<<"$(callstate_limits "$1")"
    instance=$((instance + 1))
    (cd "$work" && exec dotnet "$edge_dll" --standalone "--CallState:Admission:Routes:1:Upstream=127.0.0.1:$uas_port" \
        "--CallState:Admission:Routes:2:Upstream=127.0.0.1:$uas_port" "${limits[@]}" \
        "--CallState:Storage:ConnectionString=Data Source=$work/callstate-$instance.db" \
        --urls="http://127.0.0.1:$edge_http_port" "--CallState:Admin:HealthPort=$((edge_http_port + health_offset))" "${admin_auth[@]}" \
        --CallState:Sip:Port=$edge_sip_port "${budget_args[@]}" \
        --CallState:Sip:DefaultUpstream=127.0.0.1:$uas_port --Logging:LogLevel:Default=${LOG_LEVEL:-Warning} ${EDGE_ARGS:-}) >"$work/edge.log" 2>&1 &
    edge_pid=$!; procs[$edge_pid]=edge
    wait_http $edge_http_port $edge_pid edge
    target=127.0.0.1:$edge_sip_port
}
start_cluster() {  # start_cluster LIMIT SILOS: arguments as in bench/sipp/proxy-throughput.sh ADMISSION=cluster
    local -a limits; read -r -a limits <<<"$(callstate_limits "$1")"
    local silos=$2 i
    instance=$((instance + 1))
    [[ -n $pg_data ]] || start_postgres
    # A fresh schema (grain state and membership table) and cluster id per start: no state from an earlier ramp.
    local schema="bench_${instance}_$(date +%s)" cluster_id="compare-${instance}-$$"
    local -a gateways=()
    for ((i = 0; i < silos; i++)); do
        (cd "$work" && exec dotnet "$silo_dll" --urls="http://127.0.0.1:$((silo_http_base + i))" \
            "--CallState:Admin:HealthPort=$((silo_http_base + i + health_offset))" "${admin_auth[@]}" \
            --CallState:Storage:Provider=PostgreSql "--CallState:Storage:ConnectionString=$pg_conn" \
            "--CallState:Storage:Schema=$schema" --CallState:Orleans:Clustering=Storage "--CallState:Orleans:ClusterId=$cluster_id" \
            --CallState:Orleans:AdvertisedAddress=127.0.0.1 "--CallState:Orleans:SiloPort=$((silo_port_base + i))" \
            "--CallState:Orleans:GatewayPort=$((gateway_base + i))" "${limits[@]}" \
            --Logging:LogLevel:Default=${LOG_LEVEL:-Warning}) >"$work/silo$i.log" 2>&1 &
        silo_pids+=($!); procs[$!]=silo$i
        gateways+=("--CallState:Orleans:Gateways:$i=127.0.0.1:$((gateway_base + i))")
        # Ready: the silo is active in the cluster (it joined through the membership table).
        wait_http $((silo_http_base + i)) "${silo_pids[-1]}" "silo$i"
    done
    # The edge is an Orleans client of every silo's gateway; ready once SIP listens and it is connected to the cluster.
    (cd "$work" && exec dotnet "$edge_dll" --CallState:Admission:LocalDomains:0=127.0.0.1 \
        --CallState:Admission:Routes:0:Prefix= "--CallState:Admission:Routes:0:Upstream=127.0.0.1:$uas_port" \
        "${limits[@]}" "--CallState:Orleans:ClusterId=$cluster_id" "${gateways[@]}" \
        --urls="http://127.0.0.1:$edge_http_port" "--CallState:Admin:HealthPort=$((edge_http_port + health_offset))" "${admin_auth[@]}" \
        --CallState:Sip:Port=$edge_sip_port "${budget_args[@]}" \
        --CallState:Sip:DefaultUpstream=127.0.0.1:$uas_port --Logging:LogLevel:Default=${LOG_LEVEL:-Warning} ${EDGE_ARGS:-}) >"$work/edge.log" 2>&1 &
    edge_pid=$!; procs[$edge_pid]=edge
    wait_http $edge_http_port $edge_pid edge
    target=127.0.0.1:$edge_sip_port
}
# start_sut SUT LIMIT: kamailio, standalone or clusterN.
start_sut() {
    case $1 in
        cluster*) start_cluster "$2" "${1#cluster}" ;;
        *) "start_$1" "$2" ;;
    esac
}
stop_sut() {  # the SUT's processes, not PostgreSQL (stopped at the end)
    local pid
    [[ -n $edge_pid ]] && stop_pid "$edge_pid"
    for pid in "${silo_pids[@]}"; do stop_pid "$pid"; done
    [[ -n $kam_pid ]] && stop_pid "$kam_pid"
    edge_pid="" silo_pids=() kam_pid=""
}
start_uas() {
    (cd "$work" && exec sipp -sf "$uas_xml" -i 127.0.0.1 -p $uas_port -t u1 -buff_size 4194304 -nostdin \
        -default_behaviors all,-abortunexp) >"$work/uas.log" 2>&1 &
    uas_pid=$!; procs[$uas_pid]=sipp-uas
    wait_udp $uas_port $uas_pid uas
}
stop_uas() { [[ -n $uas_pid ]] && stop_pid "$uas_pid"; uas_pid=""; }

# run_uac DIR CSV CALLS RATE LIMIT HOLD_MS [extra sipp args]: one bounded sipp UAC run, output and traces in DIR.
run_uac() {
    local dir=$1 csv=$2 calls=$3 rate=$4 limit=$5 hold=$6; shift 6
    local sipp_timeout=$((calls / rate + hold / 1000 + 30))
    mkdir -p "$dir"
    (cd "$dir" && exec timeout -k 5 $((sipp_timeout + 15)) sipp "$target" -sf "$uac_xml" -inf "$csv" \
        -i 127.0.0.1 -p $uac_port -t u1 -m "$calls" -r "$rate" -l "$limit" -d "$hold" -timeout "$sipp_timeout" \
        -buff_size 4194304 -nostdin -default_behaviors all,-abortunexp -trace_counts "$@") >"$dir/uac.log" 2>&1 &
    local pid=$!; procs[$pid]=sipp-uac
    wait "$pid" || true
    unset "procs[$pid]"
}
# counts_field DIR NAME: the last value of column NAME in sipp's -trace_counts file (0 when absent). The columns are
# named INDEX_MESSAGE_KIND (e.g. 10_200_Recv, the index of the message in the scenario); a NAME without the index
# ("200_Recv") is the first column that ends in it, so the 200 to the INVITE, not the one to the BYE.
counts_field() {
    # No file (sipp could not start a call): 0, not a failed pipeline (set -o pipefail would end the script).
    { cat "$1"/uac_rr_*_counts.csv 2>/dev/null || true; } | awk -F';' -v name="$2" '
        NR == 1 { for (i = 1; i <= NF; i++) if (!col && ($i == name || $i ~ ("^[0-9]+_" name "$"))) col = i; next }
        col { v = $col } END { print v + 0 }'
}
# rejected DIR: final non-2xx responses to the INVITE (the scenario's 486/480/403/503/500/408 branches).
rejected() {
    local d=$1 n=0 c
    for c in 486 480 403 503 500 408; do n=$((n + $(counts_field "$d" "${c}_Recv"))); done
    echo "$n"
}
rejected_codes() {  # rejected_codes DIR: e.g. "503x12/500x1", or "-"
    local d=$1 out="" c n
    for c in 486 480 403 503 500 408; do
        n=$(counts_field "$d" "${c}_Recv")
        if ((n > 0)); then out+="${out:+/}${c}x$n"; fi
    done
    echo "${out:--}"
}
sipp_total() {  # sipp_total DIR "Successful call"|"Failed call"
    { grep -E "$2" "$1/uac.log" 2>/dev/null || true; } | tail -1 | awk -F'|' '{gsub(/ /, "", $3); print $3 + 0}'
}

# ---------------------------------------------------------------- the precheck
precheck_ok=()
run_precheck() {  # run_precheck SUT: per-caller limit 2, three concurrent 6 s calls of one user
    local sut=$1 dir=$work/$1-precheck
    start_uas
    start_sut "$sut" 2
    printf 'SEQUENTIAL\nprecheck\n' >"$work/precheck.csv"
    run_uac "$dir" "$work/precheck.csv" 3 10 3 6000 -trace_msg
    local answered refused reason
    answered=$(counts_field "$dir" 200_Recv)
    refused=$(counts_field "$dir" 486_Recv)
    reason=$(grep -c '^Reason: Q.850;cause=17' "$dir"/uac_rr_*_messages.log 2>/dev/null || true)
    # Then, once those calls have ended (BYE), the caller's two slots must be free again.
    sleep 1
    run_uac "$dir-after" "$work/precheck.csv" 2 10 2 1000
    local again again_rejected
    again=$(counts_field "$dir-after" 200_Recv)
    again_rejected=$(rejected "$dir-after")
    stop_sut; stop_uas
    if [[ $answered == 2 && $refused == 1 && $(rejected "$dir") == 1 && ${reason:-0} -ge 1 && $again == 2 && $again_rejected == 0 ]]; then
        echo "precheck $sut: limit 2, 3 concurrent calls of one caller -> 2 answered, 1 x 486 Busy Here (Reason: Q.850;cause=17); after their BYEs 2 more concurrent calls -> 2 answered: OK"
        precheck_ok+=("$sut")
    else
        echo "precheck $sut: FAILED: answered=$answered 486=$refused other-rejections=$(($(rejected "$dir") - refused)) reason-headers=${reason:-0}; after the BYEs: answered=$again rejected=$again_rejected"
    fi
}

# ---------------------------------------------------------------- the ramp
results=$work/results.csv
: >"$results"
header="sut,run,rate,calls,successful,failed,failed_pct,rejected,achieved_cps,p50_ms,p99_ms,cpu_s,cpu_ms_per_call,edge_cpu_s,silo_cpu_s,pg_cpu_s,edge_alloc_B_per_call,silo_alloc_B_per_call,host_busy_pct,rejected_by_code,adm_p50_ms,adm_p99_ms"
ticks_per_s=$(getconf CLK_TCK)

snapshot() {  # prints: sut_ticks edge_ticks silo_ticks pg_ticks edge_alloc silo_alloc host_idle_ticks wall_s (silos: all of them)
    local s e=0 si=0 pg=0 ea=n/a sa=n/a i a
    if [[ -n $kam_pid ]]; then s=$(cpu_ticks "$kam_pid"); else
        e=$(cpu_ticks "$edge_pid"); ea=$(alloc_bytes $edge_http_port)
        if ((${#silo_pids[@]} > 0)); then
            sa=0
            for i in "${!silo_pids[@]}"; do
                si=$((si + $(cpu_ticks "${silo_pids[$i]}")))
                a=$(alloc_bytes $((silo_http_base + i)))
                if [[ $a == n/a || $sa == n/a ]]; then sa=n/a; else sa=$((sa + a)); fi
            done
            [[ -n $pg_pid ]] && pg=$(cpu_ticks "$pg_pid")
        fi
        s=$((e + si + pg))
    fi
    echo "$s $e $si $pg $ea $sa $(host_ticks)"
}
# latency_snapshot FILE: the edge's metrics so far (GET /metrics), for admission p50/p99 from its admission histogram.
latency_snapshot() { mkdir -p "$(dirname "$1")"; curl -sf --max-time 2 -H "Authorization: Bearer $bench_token" "http://127.0.0.1:$edge_http_port/metrics" >"$1" 2>/dev/null || : >"$1"; }
per_call() {  # per_call BEFORE AFTER CALLS: (AFTER - BEFORE) / CALLS, n/a when either is n/a
    [[ $1 == n/a || $2 == n/a || $3 -eq 0 ]] && { echo n/a; return; }
    awk -v a="$1" -v b="$2" -v c="$3" 'BEGIN {printf "%.0f", (b - a) / c}'
}

run_step() {  # run_step SUT RUN RATE SECONDS DIR [sipp args]: one step; sets step_row (not a subshell: the trap must see sipp's pid)
    local sut=$1 run=$2 rate=$3 secs=$4 dir=$5 calls limit
    shift 5
    calls=$((rate * secs))
    limit=$((rate * (hold_ms / 1000 + 4)))
    local -a b a
    [[ $sut != kamailio ]] && latency_snapshot "$dir/admission-before.prom"
    read -r -a b <<<"$(snapshot)"
    local start end
    start=$(date +%s.%N)
    run_uac "$dir" "$work/users.csv" "$calls" "$rate" "$limit" "$hold_ms" -trace_rtt -rtt_freq 1 "$@"
    end=$(date +%s.%N)
    sleep "$settle_s"
    read -r -a a <<<"$(snapshot)"
    local adm="-,-"
    if [[ $sut != kamailio ]]; then
        latency_snapshot "$dir/admission-after.prom"
        adm=$(python3 "$repo/bench/metrics.py" quantiles "$dir/admission-before.prom" "$dir/admission-after.prom" callstate_sipedge_admission_duration_seconds)
    fi
    local ok_total rej ok failed
    ok_total=$(sipp_total "$dir" "Successful call")
    rej=$(rejected "$dir")
    ok=$((ok_total - rej)); ((ok < 0)) && ok=0
    failed=$((calls - ok))
    # INVITE->200 response times (ms) and the times the 200s arrived, from sipp -trace_rtt.
    local rtt
    rtt=$( { cat "$dir"/uac_rr_*_rtt.csv 2>/dev/null || true; } | awk -F';' 'NR > 1 && $2 ~ /^[0-9.]+$/ {print $1, $2}' | sort -k2,2n |
        awk -v hold="$hold_ms" -v start="$start" -v end="$end" '
            { t[NR] = $1; r[NR] = $2; if (NR == 1 || $1 < lo) lo = $1; if (NR == 1 || $1 > hi) hi = $1 }
            function pct(p,  i) { i = int(NR * p); if (i < NR * p) i++; if (i < 1) i = 1; return r[i] }
            END {
                if (NR == 0) { print "n/a n/a n/a"; exit }
                # Achieved rate: answered calls over the window in which their 200s arrived (first to last),
                # which leaves out sipp start-up and the last calls hold time and BYE.
                span = (hi - lo) / 1000
                printf "%s %s %.0f\n", pct(0.5), pct(0.99), (span > 0 ? (NR - 1) / span : NR)
            }')
    local p50 p99 cps
    read -r p50 p99 cps <<<"$rtt"
    [[ $cps == n/a ]] && cps=0
    # Answered calls can exceed successful ones (a call answered but not completed); the achieved rate counts
    # successful calls only: scale by successful/answered.
    local answered; answered=$(counts_field "$dir" 200_Recv)
    ((answered > 0)) && cps=$(awk -v c="$cps" -v o="$ok" -v a="$answered" 'BEGIN {printf "%.0f", c * (o < a ? o / a : 1)}')
    local codes; codes=$(rejected_codes "$dir")
    step_row=$(awk -v codes="$codes" -v sut="$sut" -v run="$run" -v rate="$rate" -v calls="$calls" -v ok="$ok" -v failed="$failed" -v rej="$rej" \
        -v cps="$cps" -v p50="$p50" -v p99="$p99" -v hz="$ticks_per_s" \
        -v s0="${b[0]}" -v s1="${a[0]}" -v e0="${b[1]}" -v e1="${a[1]}" -v i0="${b[2]}" -v i1="${a[2]}" \
        -v g0="${b[3]}" -v g1="${a[3]}" -v hb0="${b[6]}" -v hb1="${a[6]}" -v ht0="${b[7]}" -v ht1="${a[7]}" -v ncpu="$(nproc)" \
        -v ea="$(per_call "${b[4]}" "${a[4]}" "$ok")" -v sa="$(per_call "${b[5]}" "${a[5]}" "$ok")" -v adm="$adm" '
        function host_busy(idle, wall,  b) {
            if (wall <= 0) return 0
            b = 100 * (1 - idle / (wall * hz * ncpu)); return b < 0 ? 0 : (b > 100 ? 100 : b)
        }
        BEGIN {
            cpu = (s1 - s0) / hz
            kam = (sut == "kamailio")
            cl = (sut ~ /^cluster/)
            printf "%s,%d,%d,%d,%d,%d,%.2f,%d,%d,%s,%s,%.2f,%s,%s,%s,%s,%s,%s,%.0f,%s,%s\n", sut, run, rate, calls, ok, failed,
                100 * failed / calls, rej, cps, p50, p99, cpu, (ok > 0 ? sprintf("%.3f", 1000 * cpu / ok) : "n/a"),
                (kam ? "-" : sprintf("%.2f", (e1 - e0) / hz)),
                (cl ? sprintf("%.2f", (i1 - i0) / hz) : "-"),
                (cl ? sprintf("%.2f", (g1 - g0) / hz) : "-"),
                (kam ? "-" : ea), (cl ? sa : "-"),
                host_busy(hb1 - hb0, ht1 - ht0), codes, adm
        }')
}
passes() {  # passes ROW: fewer than 1% failed and at least 90% of the offered rate achieved
    awk -F, '{exit !($7 < 1 && $9 >= 0.9 * $3)}' <<<"$1"
}

run_ramp() {  # run_ramp SUT RUN
    local sut=$1 run=$2 rate row min=${rates[0]} r
    for r in "${rates[@]}"; do if ((r < min)); then min=$r; fi; done
    start_uas
    start_sut "$sut" $high
    if ((warmup_s > 0)); then
        run_step "$sut" "$run" "$min" "$warmup_s" "$work/$sut-$run-warmup"
        echo "warm-up (not counted): $step_row"
    fi
    echo "$header"
    for rate in "${rates[@]}"; do
        run_step "$sut" "$run" "$rate" "$per_rate" "$work/$sut-$run-$rate"
        row=$step_row
        echo "$row"
        echo "$row" >>"$results"
        if ! passes "$row"; then
            echo "($sut run $run: $rate cps failed the step criterion (>= 1% failed or < 90% of offered achieved); ramp stopped)"
            break
        fi
    done
    if ! kill -0 "${kam_pid:-${edge_pid}}" 2>/dev/null; then echo "($sut: the SUT process died; see its log)"; fi
    stop_sut; stop_uas
}

# ---------------------------------------------------------------- past capacity (OVERLOAD)
overload_results=$work/overload.csv
: >"$overload_results"
overload_header="sut,multiple,rate,offered_cps,calls,successful,goodput_cps,goodput_pct_of_x1,rejected_by_code,unfinished,no_final,p50_ms,p99_ms,cpu_s,host_busy_pct,probes,probes_answered,probe_max_gap_ms,held_after,zero_after_s"
probe_xml=$here/options_probe.xml

# held_calls: calls the system under test still counts (Kamailio: the dialog profile; CallState: every user limit's
# total as admission counts it), or n/a.
held_calls() {
    if [[ -n $kam_pid ]]; then
        /usr/sbin/kamcmd -s "$kam_ctl" dlg.profile_get_size caller 2>/dev/null | grep -Eo '[0-9]+' | head -1 || echo n/a
    else
        # A cluster's edge has no admin API: silo 0 answers for the cluster.
        local port=$edge_http_port
        ((${#silo_pids[@]} > 0)) && port=$silo_http_base
        curl -sf --max-time 5 -H "Authorization: Bearer $bench_token" "http://127.0.0.1:$port/api/limits?kind=user&limit=1000" 2>/dev/null |
            python3 -c 'import json, sys; print(sum(e.get("total", 0) for e in json.load(sys.stdin)))' 2>/dev/null || echo n/a
    fi
}
# wait_zero: polls held_calls up to 40 s; prints "HELD SECONDS" (the last count and how long it took to reach it).
wait_zero() {
    local t0 n i
    t0=$(date +%s.%N)
    for i in $(seq 1 80); do
        n=$(held_calls)
        [[ $n == 0 ]] && break
        sleep 0.5
    done
    echo "$n $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')"
}
# start_probe DIR SECONDS: the load balancer's OPTIONS probe, bounded (PROBE_RATE x SECONDS probes).
start_probe() {
    local dir=$1 secs=$2
    mkdir -p "$dir"
    (cd "$dir" && exec timeout -k 5 $((secs + 20)) sipp "$target" -sf "$probe_xml" -i 127.0.0.1 -p $probe_port -t u1 \
        -m $((probe_rate * secs)) -r "$probe_rate" -l $((probe_rate * 3)) -nr -timeout $((secs + 10)) -nostdin \
        -trace_rtt -rtt_freq 1) >"$dir/probe.log" 2>&1 &
    probe_pid=$!; procs[$probe_pid]=sipp-probe
}
# probe_result DIR: "SENT ANSWERED MAX_GAP_MS" (the longest time between two answers, or from the first to the last
# probe's send when nothing was answered).
probe_result() {
    local dir=$1 ok failed gap
    ok=$(sipp_total_file "$dir/probe.log" "Successful call")
    failed=$(sipp_total_file "$dir/probe.log" "Failed call")
    gap=$( { cat "$dir"/options_probe_*_rtt.csv 2>/dev/null || true; } | awk -F';' 'NR > 1 && $1 ~ /^[0-9.]+$/ {print $1}' | sort -n |
        awk 'NR > 1 && $1 - p > g {g = $1 - p} {p = $1} END {printf "%.0f", (NR > 0 ? g : -1)}')
    echo "$((ok + failed)) $ok $gap"
}
sipp_total_file() { { grep -E "$2" "$1" 2>/dev/null || true; } | tail -1 | awk -F'|' '{gsub(/ /, "", $3); print $3 + 0}'; }
# offering DIR: "CPS SECONDS": calls sipp created per second while it was creating them, and for how many seconds
# (-trace_stat, one row a second).
offering() {
    { cat "$1"/uac_rr_*_.csv 2>/dev/null || true; } | awk -F';' '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == "OutgoingCall(P)") col = i; next }
        col && $col + 0 > 0 { n += $col; s++ } END { printf "%.0f %d", (s > 0 ? n / s : 0), s }'
}

run_overload() {  # run_overload SUT PEAK: the system at PEAK x 1 and x each OVERLOAD multiple, OVERLOAD_S seconds each
    local sut=$1 top=$2 m rate dir row x1="" min=${rates[0]:-$2} r
    for r in "${rates[@]}"; do if ((r < min)); then min=$r; fi; done
    start_uas
    start_sut "$sut" $high
    if ((warmup_s > 0)); then
        run_step "$sut" 0 "$min" "$warmup_s" "$work/$sut-overload-warmup"
        echo "warm-up (not counted): $step_row"
    fi
    echo "$overload_header"
    for m in 1 "${overload[@]}"; do
        rate=$((top * m)) dir=$work/$sut-x$m
        start_probe "$dir/probe" "$overload_s"
        run_step "$sut" "$m" "$rate" "$overload_s" "$dir" -trace_stat -fd 1
        wait "$probe_pid" 2>/dev/null || true; unset "procs[$probe_pid]"
        local -a f z pr off
        IFS=, read -r -a f <<<"$step_row"
        read -r -a off <<<"$(offering "$dir")"
        read -r -a z <<<"$(wait_zero)"
        read -r -a pr <<<"$(probe_result "$dir/probe")"
        local answered rej unfinished nofinal
        answered=$(counts_field "$dir" 200_Recv)
        rej=${f[7]}
        # Answered calls that did not complete (no 200 to the BYE) and calls with no final answer at all.
        unfinished=$((answered - f[4])); ((unfinished < 0)) && unfinished=0
        nofinal=$((f[3] - f[4] - unfinished - rej)); ((nofinal < 0)) && nofinal=0
        # Goodput: successful calls over the seconds in which sipp offered calls (not over the window in which the
        # 200s arrived, which is short when only the first seconds' calls got through).
        local goodput
        goodput=$(awk -v ok="${f[4]}" -v s="${off[1]}" -v secs="$overload_s" 'BEGIN {printf "%.0f", ok / (s > 0 ? s : secs)}')
        [[ -z $x1 ]] && x1=$goodput
        row=$(awk -v OFS=, -v sut="$sut" -v m="$m" -v rate="$rate" -v off="${off[0]}" -v calls="${f[3]}" \
            -v ok="${f[4]}" -v cps="$goodput" -v x1="$x1" -v codes="${f[19]}" -v unf="$unfinished" -v nof="$nofinal" \
            -v p50="${f[9]}" -v p99="${f[10]}" -v cpu="${f[11]}" -v busy="${f[18]}" -v ps="${pr[0]}" -v pa="${pr[1]}" \
            -v pg="${pr[2]}" -v held="${z[0]}" -v zt="${z[1]}" \
            'BEGIN {print sut, m, rate, off, calls, ok, cps, (x1 > 0 ? sprintf("%.0f", 100 * cps / x1) : "n/a"), codes, unf, nof, p50, p99, cpu, busy, ps, pa, pg, held, zt}')
        echo "$row"
        echo "$row" >>"$overload_results"
    done
    if ! kill -0 "${kam_pid:-${edge_pid}}" 2>/dev/null; then echo "($sut: the SUT process died; see its log)"; fi
    stop_sut; stop_uas
}

label() {
    case $1 in
        kamailio) echo "Kamailio 5.6 (tm + dialog profile CAC, $kam_children UDP workers)" ;;
        standalone) echo "CallState standalone (edge, Orleans silo in process, SQLite)" ;;
        cluster1) echo "CallState cluster (edge + 1 Orleans silo, PostgreSQL)" ;;
        cluster*) echo "CallState cluster (edge + ${1#cluster} Orleans silos, PostgreSQL)" ;;
    esac
}

# ---------------------------------------------------------------- main
printf 'SEQUENTIAL\n' >"$work/users.csv"
for i in $(seq 1 "$users"); do printf 'user%d\n' "$i" >>"$work/users.csv"; done

echo "=== bench/compare: call setups per second, Kamailio vs CallState"
echo "command:   $command_line"
echo "settings:  RATES='${rates[*]}' RUNS=$runs SECONDS_PER_RATE=$per_rate HOLD_MS=$hold_ms SUTS='${suts[*]}' PRECHECK=$precheck WARMUP_S=$warmup_s SETTLE_S=$settle_s KAM_CHILDREN=$kam_children KAM_SHM_MB=$kam_shm_mb USERS=$users"
echo "date:      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "host:      nproc=$(nproc), $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "software:  $(/usr/sbin/kamailio -v 2>/dev/null | head -1 | sed 's/^version: //'), $(sipp -v 2>/dev/null | grep -o 'SIPp v[^ ,]*' | head -1), dotnet $(dotnet --version), PostgreSQL $("$pg_bin/postgres" --version 2>/dev/null | awk '{print $3}')"
echo "callstate: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?') ($(git -C "$repo" rev-parse --abbrev-ref HEAD 2>/dev/null || echo '?'))$([[ -n $(git -C "$repo" status --porcelain 2>/dev/null) ]] && echo ', uncommitted changes')"
echo "udp:       net.core.rmem_max=$(cat /proc/sys/net/core/rmem_max), sipp -buff_size 4194304"
echo "load:      loadavg before start $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# The systems take turns (run 1 of each, then run 2 of each, ...), so a change in the machine's load over the
# run touches all of them alike. The precheck runs once per system, before its first ramp.
((${#rates[@]} > 0)) || runs=0
for ((run = 1; run <= runs; run++)); do
    for sut in "${suts[@]}"; do
        echo "=== $(label "$sut"), run $run of $runs"
        [[ $precheck == 1 && $run == 1 ]] && run_precheck "$sut"
        run_ramp "$sut" "$run"
        echo
    done
done

# Past capacity: each system restarted, then its peak x 1 and x each multiple (OVERLOAD).
if ((${#overload[@]} > 0)); then
    for sut in "${suts[@]}"; do
        top=$peak
        if [[ -z $top ]]; then
            # The median over the runs of the highest passing rate, as the summary computes it.
            top=$(python3 -c '
import csv, statistics, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if r and r[0] == sys.argv[2]]
best = {}
for r in rows:
    if float(r[6]) < 1 and float(r[8]) >= 0.9 * int(r[2]):
        best[r[1]] = max(best.get(r[1], 0), int(r[2]))
runs = {r[1] for r in rows}
print(statistics.median_low([best.get(run, 0) for run in runs]) if runs else 0)
' "$results" "$sut")
        fi
        if ((top == 0)); then echo "($sut: no passing step to take the peak from; no overload phase)"; continue; fi
        echo "=== $(label "$sut"), past capacity: peak $top cps x 1 ${overload[*]}, ${overload_s} s each, OPTIONS probes ${probe_rate}/s"
        run_overload "$sut" "$top"
        echo
    done
fi
stop_postgres

echo "=== per-step results, all systems and runs (CSV)"
echo "$header"
cat "$results"
echo
echo "Columns: successful = calls answered with 200 and ended with BYE/200; failed = calls - successful; achieved_cps ="
echo "successful calls over the window in which their 200s arrived; p50/p99 = INVITE->200 at the caller (sipp"
echo "-trace_rtt, 1 ms resolution); cpu_s = CPU seconds of the SUT during the step plus ${settle_s}s settle (Kamailio: main"
echo "process and all its children; CallState: edge + silos + PostgreSQL, also shown apart); *_alloc_B_per_call ="
echo "allocated bytes (dotnet_gc_heap_total_allocated_bytes_total from GET /metrics) per successful call (silos: all of them; n/a when the endpoint is"
echo "missing); host_busy_pct = whole machine (all cores, including sipp and anyone else) not idle during the step;"
echo "adm_p50_ms/adm_p99_ms = admission durations measured by the edge itself (callstate_sipedge_admission_duration_seconds from GET /metrics, bucket bounds)."
echo

echo "=== summary: median over $runs run(s) of the highest offered rate with < 1% failed calls and >= 90% of it achieved"
echo
labels=""
for sut in "${suts[@]}"; do labels+="$sut=$(label "$sut");"; done
python3 - "$results" "$precheck" "${precheck_ok[*]:-}" "$labels" "${suts[@]}" <<'PY'
import csv, statistics, sys

path, precheck, precheck_ok, labels = sys.argv[1:5]
suts = sys.argv[5:]
label = dict(item.split("=", 1) for item in labels.split(";") if item)
cols = ("sut,run,rate,calls,successful,failed,failed_pct,rejected,achieved_cps,p50_ms,p99_ms,cpu_s,cpu_ms_per_call,"
        "edge_cpu_s,silo_cpu_s,pg_cpu_s,edge_alloc_B_per_call,silo_alloc_B_per_call,host_busy_pct,rejected_by_code,"
        "adm_p50_ms,adm_p99_ms").split(",")
rows = [dict(zip(cols, r)) for r in csv.reader(open(path)) if r]


def passes(r):
    return float(r["failed_pct"]) < 1 and float(r["achieved_cps"]) >= 0.9 * int(r["rate"])


def num(text):
    try:
        return float(text)
    except ValueError:
        return None


def ms(text):
    return "<1 ms" if text in ("0", "0.0") else f"{text} ms"


best = {}      # sut -> {run: best row or None}
for sut in suts:
    runs = sorted({int(r["run"]) for r in rows if r["sut"] == sut})
    best[sut] = {}
    for run in runs:
        passing = [r for r in rows if r["sut"] == sut and int(r["run"]) == run and passes(r)]
        best[sut][run] = max(passing, key=lambda r: int(r["rate"])) if passing else None


def median_rate(sut):
    # A run with no passing step counts as 0; with an even number of runs the lower middle value, so the median is a
    # rate that was offered.
    rates = [int(r["rate"]) if r else 0 for r in best[sut].values()]
    return statistics.median_low(rates) if rates else None


kam = median_rate("kamailio") if "kamailio" in best else None
print("| system | highest rate per run (cps) | median | achieved cps | INVITE->200 p50 | p99 | CPU ms per call | edge allocated per call | vs Kamailio |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for sut in suts:
    runs = best[sut]
    if not runs:
        continue
    per_run = " / ".join(r["rate"] if r else "none" for r in runs.values())
    med = median_rate(sut)
    # The figures of the run whose highest rate is the median (the first such run).
    row = next((r for r in runs.values() if r and int(r["rate"]) == med), None)
    ratio = "1.00" if sut == "kamailio" else (f"{med / kam:.2f}" if kam else "n/a")
    med_text = f"{med:g}" if med else "none"
    if row is None:
        print(f"| {label.get(sut, sut)} | {per_run} | {med_text} | | | | | | {ratio} |")
        continue
    cpu = row["cpu_ms_per_call"]
    ok = int(row["successful"])
    if sut != "kamailio" and ok > 0:
        cpu += f" (edge {1000 * float(row['edge_cpu_s']) / ok:.3f}"
        if sut.startswith("cluster"):
            cpu += f", silos {1000 * float(row['silo_cpu_s']) / ok:.3f}, pg {1000 * float(row['pg_cpu_s']) / ok:.3f}"
        cpu += ")"
    if sut == "kamailio":
        alloc = "-"
    elif row["edge_alloc_B_per_call"] == "n/a":
        alloc = "n/a"
    else:
        alloc = f"{row['edge_alloc_B_per_call']} B" + (f" (silos {row['silo_alloc_B_per_call']} B)" if sut.startswith("cluster") else "")
    print(f"| {label.get(sut, sut)} | {per_run} | {med_text} | {row['achieved_cps']} | {ms(row['p50_ms'])} | {ms(row['p99_ms'])} | {cpu} | {alloc} | {ratio} |")
print()

if kam:
    half = kam / 2
    for sut in suts:
        if sut == "kamailio" or not best[sut]:
            continue
        p50s, p99s, steps = [], [], []
        for run in best[sut]:
            mine = [r for r in rows if r["sut"] == sut and int(r["run"]) == run]
            if not mine:
                continue
            # The step closest to half of Kamailio's median highest rate (at or below it on a tie).
            row = min(mine, key=lambda r: (abs(int(r["rate"]) - half), int(r["rate"]) > half))
            steps.append(row["rate"])
            if num(row["adm_p50_ms"]) is not None and num(row["adm_p99_ms"]) is not None:
                p50s.append(num(row["adm_p50_ms"]))
                p99s.append(num(row["adm_p99_ms"]))
        if p50s:
            print(f"{sut}: admission (edge, callstate_sipedge_admission_duration_seconds) at {'/'.join(steps)} cps (half of Kamailio's median {kam:g} is {half:g}): "
                  f"p50 median {statistics.median(p50s):.3f} ms ({' / '.join(f'{v:.3f}' for v in p50s)}), "
                  f"p99 median {statistics.median(p99s):.3f} ms ({' / '.join(f'{v:.3f}' for v in p99s)})")

if precheck == "1":
    print("precheck (per-caller limit 2: 3 concurrent calls of one caller -> exactly one 486 with Reason Q.850;cause=17, "
          f"then 2 more after the BYEs -> both answered): passed by: {precheck_ok or 'none'}")
for sut in suts:
    for run in best[sut]:
        mine = [r for r in rows if r["sut"] == sut and int(r["run"]) == run]
        if mine and not passes(mine[-1]):
            last = mine[-1]
            print(f"{sut} run {run}: first failing step: {last['rate']} cps offered, {last['failed_pct']}% failed, "
                  f"{last['achieved_cps']} cps achieved, p99 {last['p99_ms']} ms")
print("ratio = median highest rate / Kamailio's median highest rate. Every run offers at most the rates listed; a system "
      "that passed the last one may go higher.")
PY

if ((${#overload[@]} > 0)); then
    echo
    echo "=== past capacity (CSV)"
    echo "$overload_header"
    cat "$overload_results"
    echo
    echo "Columns: multiple x rate = the peak times the multiple, offered for ${overload_s} s (sipp -m rate*${overload_s});"
    echo "offered_cps = calls sipp created per second while creating them (it may fall short of the rate); goodput_cps ="
    echo "successful calls (answered, BYE answered 200) per second of that offering; goodput_pct_of_x1 ="
    echo "goodput against the x 1 step's; unfinished = answered calls whose BYE got no 200; no_final = calls with no final"
    echo "answer (timed out at sipp); probes = OPTIONS to the proxy itself, ${probe_rate}/s during the step, one datagram"
    echo "each, answered = 200 within 2 s; probe_max_gap_ms = longest time between two answered probes; held_after ="
    echo "calls the system still counted after the step (Kamailio: dialog profile; CallState: user limits), zero_after_s ="
    echo "how long after the step it took to get there (40 s at most)."
    echo
    echo "| system | offered (x peak) | offered cps achieved by sipp | goodput cps | % of x 1 | refused | unfinished / no final answer | INVITE->200 p50 / p99 | OPTIONS answered | longest probe gap | held after |"
    echo "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
    while IFS=, read -r sut m rate off calls ok cps pct codes unf nof p50 p99 cpu busy ps pa pg held zt; do
        echo "| $(label "$sut") | $rate (x $m) | $off | $cps | $pct% | $codes | $unf / $nof | $p50 / $p99 ms | $pa of $ps | $pg ms | $held (after $zt s) |"
    done <"$overload_results"
fi
