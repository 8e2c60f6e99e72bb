#!/usr/bin/env bash
# Call setups per second, side by side: Kamailio 5.6 (stateful proxy, per-caller admission on a dialog profile)
# against CallState standalone (edge with the grains in process, SQLite) and CallState cluster (edge + 1 silo over
# the binary RPC, PostgreSQL), all under the same sipp load on loopback, in one run. See bench/compare/README.md.
#   bench/compare/run.sh [rates...]          e.g. bench/compare/run.sh 500 1000 2000
# Environment (defaults in brackets):
#   RATES ["250 500 1000 1500 1750 2000 2500 3000 3500 4000"]  offered calls per second, one step each (arguments win)
#   SECONDS_PER_RATE [10]   length of a step; calls per step = rate * SECONDS_PER_RATE
#   HOLD_MS [1000]          call length (sipp -d): INVITE, 180, 200, ACK, hold, BYE, 200
#   SUTS ["kamailio standalone cluster"]  which systems to run, in this order
#   PRECHECK [1]            before each ramp: per-caller limit 2, three concurrent calls of one user -> one 486
#   WARMUP_S [3]            an unmeasured step at the lowest rate before the ramp (JIT, pools, caches)
#   SETTLE_S [2]            pause after each step (its CPU is counted with the step)
#   KAM_CHILDREN [4]        Kamailio UDP worker processes
#   KAM_SHM_MB [2048]       Kamailio shared memory (-m); 512 ran out at 2,500 cps (transactions wait 5 s after they end)
#   USERS [100]             callers user1..userN (sipp -inf, SEQUENTIAL)
#   PG_PORT [55450]         the throwaway PostgreSQL (cluster only)
#   KEEP_WORK [0]           1: keep the temp directory with every log and sipp trace
# A step fails (and ends that system's ramp) when >= 1% of its calls did not complete with a 200 or when the achieved
# rate is below 90% of the offered rate.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
command_line="$0${*:+ $*}"
if (($# > 0)); then rates=("$@"); else read -r -a rates <<<"${RATES:-250 500 1000 1500 1750 2000 2500 3000 3500 4000}"; fi
per_rate=${SECONDS_PER_RATE:-10}
hold_ms=${HOLD_MS:-1000}
read -r -a suts <<<"${SUTS:-kamailio standalone cluster}"
precheck=${PRECHECK:-1}
warmup_s=${WARMUP_S:-3}
settle_s=${SETTLE_S:-2}
kam_children=${KAM_CHILDREN:-4}
kam_shm_mb=${KAM_SHM_MB:-2048}
users=${USERS:-100}
pg_port=${PG_PORT:-55450}
high=1000000

# Ports (loopback only).
kam_port=26060 uac_port=26061 edge_sip_port=26070 edge_http_port=26082 uas_port=26090
silo_http_port=26100 silo_rpc_port=26110

uac_xml=$repo/tests/Cluster.IntegrationTests/sipp/uac_rr.xml
uas_xml=$repo/tests/Cluster.IntegrationTests/sipp/uas_rr.xml
edge_dll=$repo/src/SipEdge/bin/Release/net10.0/CallState.SipEdge.dll
silo_dll=$repo/src/Silo/bin/Release/net10.0/CallState.Silo.dll

die() { echo "bench/compare/run.sh: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "run as root (installs packages, runs PostgreSQL as user postgres)"
for r in "${rates[@]}"; do [[ $r =~ ^[1-9][0-9]*$ ]] || die "rate '$r' is not a positive integer"; done
for s in "${suts[@]}"; do [[ $s =~ ^(kamailio|standalone|cluster)$ ]] || die "SUTS: unknown system '$s'"; done

# ---------------------------------------------------------------- prerequisites and build
missing=()
[[ -x /usr/sbin/kamailio ]] || missing+=(kamailio)
command -v sipp >/dev/null || missing+=(sip-tester)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
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

for p in $kam_port $uac_port $edge_sip_port $uas_port; do
    [[ -z $(ss -Hlun "sport = :$p") ]] || die "UDP port $p is in use"
done
for p in $edge_sip_port $edge_http_port $silo_http_port $silo_rpc_port $pg_port; do
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
# alloc_bytes PORT: GC.GetTotalAllocatedBytes of a CallState process from /api/runtime, or n/a.
alloc_bytes() {
    local body
    body=$(curl -sf --max-time 2 "http://127.0.0.1:$1/api/runtime" 2>/dev/null) || { echo n/a; return; }
    sed -n 's/.*"allocatedBytes"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p' <<<"$body" | grep . || echo n/a
}
wait_http() {  # wait_http PORT PID NAME
    local i
    for i in $(seq 1 300); do
        curl -sf --max-time 1 "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1 && return 0
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
# Each start_* sets sut_pid (the process whose tree is "the SUT" for Kamailio), edge_pid/silo_pid/pg_pid, target.
# $1 = per-caller limit.
edge_pid="" silo_pid="" pg_pid="" kam_pid="" uas_pid="" sut_pid=""
start_kamailio() {
    local limit=$1 rundir=$work/kamailio-run
    mkdir -p "$rundir"
    /usr/sbin/kamailio -DD -E -f "$here/kamailio.cfg" -Y "$rundir" -P "$rundir/kamailio.pid" -m "$kam_shm_mb" -M 32 \
        -l "udp:127.0.0.1:$kam_port" -A "CALLER_LIMIT=$limit" -A "UAS_URI=\"sip:127.0.0.1:$uas_port\"" \
        -A "CHILDREN=$kam_children" >"$work/kamailio.log" 2>&1 &
    kam_pid=$!; procs[$kam_pid]=kamailio
    wait_udp $kam_port $kam_pid kamailio
    target=127.0.0.1:$kam_port
}
# Limits: every user at $1 (total, inbound, outbound) except the callee "service", which stays high, so the
# precheck's refusal is the caller's limit (as in Kamailio) and the ramp never refuses.
callstate_limits() {
    echo --CallState:Limits:DefaultUser:Total="$1" --CallState:Limits:DefaultUser:Inbound="$1" \
        --CallState:Limits:DefaultUser:Outbound="$1" --CallState:Limits:Users:service:Total=$high \
        --CallState:Limits:Users:service:Inbound=$high --CallState:Limits:Users:service:Outbound=$high
}
instance=0
start_standalone() {  # arguments as in bench/sipp/proxy-throughput.sh ADMISSION=sqlite
    local -a limits; read -r -a limits <<<"$(callstate_limits "$1")"
    instance=$((instance + 1))
    (cd "$work" && exec dotnet "$edge_dll" --standalone "--CallState:Admission:Routes:1:Upstream=127.0.0.1:$uas_port" \
        "--CallState:Admission:Routes:2:Upstream=127.0.0.1:$uas_port" "${limits[@]}" \
        "--CallState:Storage:ConnectionString=Data Source=$work/callstate-$instance.db" \
        --urls="http://127.0.0.1:$edge_http_port" --CallState:Sip:Port=$edge_sip_port \
        --CallState:Sip:DefaultUpstream=127.0.0.1:$uas_port --Logging:LogLevel:Default=Warning) >"$work/edge.log" 2>&1 &
    edge_pid=$!; procs[$edge_pid]=edge
    wait_http $edge_http_port $edge_pid edge
    target=127.0.0.1:$edge_sip_port
}
start_cluster() {  # arguments as in bench/sipp/proxy-throughput.sh ADMISSION=cluster SILOS=1
    local -a limits; read -r -a limits <<<"$(callstate_limits "$1")"
    instance=$((instance + 1))
    [[ -n $pg_data ]] || start_postgres
    local schema="bench_${instance}_$(date +%s)"
    (cd "$work" && exec dotnet "$silo_dll" --urls="http://127.0.0.1:$silo_http_port" \
        --CallState:Storage:Provider=PostgreSql "--CallState:Storage:ConnectionString=$pg_conn" \
        "--CallState:Storage:Schema=$schema" --CallState:Cluster:Enabled=true --CallState:Cluster:SiloId=silo0 \
        --CallState:Cluster:ListenAddress=127.0.0.1 "--CallState:Cluster:Port=$silo_rpc_port" "${limits[@]}" \
        --Logging:LogLevel:Default=Warning) >"$work/silo.log" 2>&1 &
    silo_pid=$!; procs[$silo_pid]=silo
    wait_http $silo_http_port $silo_pid silo
    (cd "$work" && exec dotnet "$edge_dll" --CallState:Admission:LocalDomains:0=127.0.0.1 \
        --CallState:Admission:Routes:0:Prefix= "--CallState:Admission:Routes:0:Upstream=127.0.0.1:$uas_port" \
        "${limits[@]}" "--CallState:Cluster:Bootstrap:0=127.0.0.1:$silo_rpc_port" \
        --urls="http://127.0.0.1:$edge_http_port" --CallState:Sip:Port=$edge_sip_port \
        --CallState:Sip:DefaultUpstream=127.0.0.1:$uas_port --Logging:LogLevel:Default=Warning) >"$work/edge.log" 2>&1 &
    edge_pid=$!; procs[$edge_pid]=edge
    wait_http $edge_http_port $edge_pid edge
    target=127.0.0.1:$edge_sip_port
}
stop_sut() {  # the SUT's processes, not PostgreSQL (stopped at the end)
    [[ -n $edge_pid ]] && stop_pid "$edge_pid"
    [[ -n $silo_pid ]] && stop_pid "$silo_pid"
    [[ -n $kam_pid ]] && stop_pid "$kam_pid"
    edge_pid="" silo_pid="" kam_pid=""
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
# counts_field DIR NAME: the last value of column NAME in sipp's -trace_counts file (0 when absent).
counts_field() {
    cat "$1"/uac_rr_*_counts.csv 2>/dev/null | awk -F';' -v name="$2" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) col = i; next }
        col { v = $col } END { print v + 0 }'
}
# rejected DIR: final non-2xx responses to the INVITE (the scenario's 486/480/403/503/500 branches).
rejected() {
    local d=$1 n=0 c
    for c in 4_486_Recv 5_480_Recv 6_403_Recv 7_503_Recv 8_500_Recv; do n=$((n + $(counts_field "$d" "$c"))); done
    echo "$n"
}
rejected_codes() {  # rejected_codes DIR: e.g. "503x12/500x1", or "-"
    local d=$1 out="" c n
    for c in 486 480 403 503 500; do
        n=$(counts_field "$d" "$(case $c in 486) echo 4;; 480) echo 5;; 403) echo 6;; 503) echo 7;; 500) echo 8;; esac)_${c}_Recv")
        if ((n > 0)); then out+="${out:+/}${c}x$n"; fi
    done
    echo "${out:--}"
}
sipp_total() {  # sipp_total DIR "Successful call"|"Failed call"
    grep -E "$2" "$1/uac.log" | tail -1 | awk -F'|' '{gsub(/ /, "", $3); print $3 + 0}'
}

# ---------------------------------------------------------------- the precheck
precheck_ok=()
run_precheck() {  # run_precheck SUT: per-caller limit 2, three concurrent 6 s calls of one user
    local sut=$1 dir=$work/$1-precheck
    start_uas
    "start_$sut" 2
    printf 'SEQUENTIAL\nprecheck\n' >"$work/precheck.csv"
    run_uac "$dir" "$work/precheck.csv" 3 10 3 6000 -trace_msg
    local answered refused reason
    answered=$(counts_field "$dir" 9_200_Recv)
    refused=$(counts_field "$dir" 4_486_Recv)
    reason=$(grep -c '^Reason: Q.850;cause=17' "$dir"/uac_rr_*_messages.log 2>/dev/null || true)
    # Then, once those calls have ended (BYE), the caller's two slots must be free again.
    sleep 1
    run_uac "$dir-after" "$work/precheck.csv" 2 10 2 1000
    local again again_rejected
    again=$(counts_field "$dir-after" 9_200_Recv)
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
header="sut,rate,calls,successful,failed,failed_pct,rejected,achieved_cps,p50_ms,p99_ms,cpu_s,cpu_ms_per_call,edge_cpu_s,silo_cpu_s,pg_cpu_s,edge_alloc_B_per_call,silo_alloc_B_per_call,host_busy_pct,rejected_by_code,adm_p50_ms,adm_p99_ms"
ticks_per_s=$(getconf CLK_TCK)

snapshot() {  # prints: sut_ticks edge_ticks silo_ticks pg_ticks edge_alloc silo_alloc host_idle_ticks wall_s
    local s e=0 si=0 pg=0 ea=n/a sa=n/a
    if [[ -n $kam_pid ]]; then s=$(cpu_ticks "$kam_pid"); else
        e=$(cpu_ticks "$edge_pid"); ea=$(alloc_bytes $edge_http_port)
        [[ -n $silo_pid ]] && { si=$(cpu_ticks "$silo_pid"); sa=$(alloc_bytes $silo_http_port); }
        [[ -n $silo_pid && -n $pg_pid ]] && pg=$(cpu_ticks "$pg_pid")
        s=$((e + si + pg))
    fi
    echo "$s $e $si $pg $ea $sa $(host_ticks)"
}
# latency_snapshot FILE: the edge's admission durations so far (GET /api/admission/latency), for admission p50/p99.
latency_snapshot() { mkdir -p "$(dirname "$1")"; curl -sf --max-time 2 "http://127.0.0.1:$edge_http_port/api/admission/latency" >"$1" 2>/dev/null || : >"$1"; }
per_call() {  # per_call BEFORE AFTER CALLS: (AFTER - BEFORE) / CALLS, n/a when either is n/a
    [[ $1 == n/a || $2 == n/a || $3 -eq 0 ]] && { echo n/a; return; }
    awk -v a="$1" -v b="$2" -v c="$3" 'BEGIN {printf "%.0f", (b - a) / c}'
}

run_step() {  # run_step SUT RATE SECONDS DIR: one step; sets step_row (not a subshell: the trap must see sipp's pid)
    local sut=$1 rate=$2 secs=$3 dir=$4 calls limit
    calls=$((rate * secs))
    limit=$((rate * (hold_ms / 1000 + 4)))
    local -a b a
    [[ $sut != kamailio ]] && latency_snapshot "$dir/admission-before.json"
    read -r -a b <<<"$(snapshot)"
    local start end
    start=$(date +%s.%N)
    run_uac "$dir" "$work/users.csv" "$calls" "$rate" "$limit" "$hold_ms" -trace_rtt -rtt_freq 1
    end=$(date +%s.%N)
    sleep "$settle_s"
    read -r -a a <<<"$(snapshot)"
    local adm="-,-"
    if [[ $sut != kamailio ]]; then
        latency_snapshot "$dir/admission-after.json"
        adm=$(python3 "$repo/bench/admission-latency.py" "$dir/admission-before.json" "$dir/admission-after.json")
    fi
    local ok_total rej ok failed
    ok_total=$(sipp_total "$dir" "Successful call")
    rej=$(rejected "$dir")
    ok=$((ok_total - rej)); ((ok < 0)) && ok=0
    failed=$((calls - ok))
    # INVITE->200 response times (ms) and the times the 200s arrived, from sipp -trace_rtt.
    local rtt
    rtt=$(cat "$dir"/uac_rr_*_rtt.csv 2>/dev/null | awk -F';' 'NR > 1 && $2 ~ /^[0-9.]+$/ {print $1, $2}' | sort -k2,2n |
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
    local answered; answered=$(counts_field "$dir" 9_200_Recv)
    ((answered > 0)) && cps=$(awk -v c="$cps" -v o="$ok" -v a="$answered" 'BEGIN {printf "%.0f", c * (o < a ? o / a : 1)}')
    local codes; codes=$(rejected_codes "$dir")
    step_row=$(awk -v codes="$codes" -v sut="$sut" -v rate="$rate" -v calls="$calls" -v ok="$ok" -v failed="$failed" -v rej="$rej" \
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
            printf "%s,%d,%d,%d,%d,%.2f,%d,%d,%s,%s,%.2f,%s,%s,%s,%s,%s,%s,%.0f,%s,%s\n", sut, rate, calls, ok, failed,
                100 * failed / calls, rej, cps, p50, p99, cpu, (ok > 0 ? sprintf("%.3f", 1000 * cpu / ok) : "n/a"),
                (kam ? "-" : sprintf("%.2f", (e1 - e0) / hz)),
                (sut == "cluster" ? sprintf("%.2f", (i1 - i0) / hz) : "-"),
                (sut == "cluster" ? sprintf("%.2f", (g1 - g0) / hz) : "-"),
                (kam ? "-" : ea), (sut == "cluster" ? sa : "-"),
                host_busy(hb1 - hb0, ht1 - ht0), codes, adm
        }')
}
passes() {  # passes ROW: fewer than 1% failed and at least 90% of the offered rate achieved
    awk -F, '{exit !($6 < 1 && $8 >= 0.9 * $2)}' <<<"$1"
}

run_ramp() {
    local sut=$1 rate row min=${rates[0]} r
    for r in "${rates[@]}"; do if ((r < min)); then min=$r; fi; done
    start_uas
    "start_$sut" $high
    if ((warmup_s > 0)); then
        run_step "$sut" "$min" "$warmup_s" "$work/$sut-warmup"
        echo "warm-up (not counted): $step_row"
    fi
    echo "$header"
    for rate in "${rates[@]}"; do
        run_step "$sut" "$rate" "$per_rate" "$work/$sut-$rate"
        row=$step_row
        echo "$row"
        echo "$row" >>"$results"
        if ! passes "$row"; then
            echo "($sut: $rate cps failed the step criterion (>= 1% failed or < 90% of offered achieved); ramp stopped)"
            break
        fi
    done
    if ! kill -0 "${kam_pid:-${edge_pid}}" 2>/dev/null; then echo "($sut: the SUT process died; see its log)"; fi
    stop_sut; stop_uas
}

label() {
    case $1 in
        kamailio) echo "Kamailio 5.6 (tm + dialog profile CAC, $kam_children UDP workers)" ;;
        standalone) echo "CallState standalone (edge, grains in process, SQLite)" ;;
        cluster) echo "CallState cluster (edge + 1 silo over RPC, PostgreSQL)" ;;
    esac
}

# ---------------------------------------------------------------- main
printf 'SEQUENTIAL\n' >"$work/users.csv"
for i in $(seq 1 "$users"); do printf 'user%d\n' "$i" >>"$work/users.csv"; done

echo "=== bench/compare: call setups per second, Kamailio vs CallState"
echo "command:   $command_line"
echo "settings:  RATES='${rates[*]}' SECONDS_PER_RATE=$per_rate HOLD_MS=$hold_ms SUTS='${suts[*]}' PRECHECK=$precheck WARMUP_S=$warmup_s SETTLE_S=$settle_s KAM_CHILDREN=$kam_children KAM_SHM_MB=$kam_shm_mb USERS=$users"
echo "date:      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "host:      nproc=$(nproc), $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "software:  $(/usr/sbin/kamailio -v 2>/dev/null | head -1 | sed 's/^version: //'), $(sipp -v 2>/dev/null | grep -o 'SIPp v[^ ,]*' | head -1), dotnet $(dotnet --version), PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}')"
echo "callstate: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?') ($(git -C "$repo" rev-parse --abbrev-ref HEAD 2>/dev/null || echo '?'))$([[ -n $(git -C "$repo" status --porcelain 2>/dev/null) ]] && echo ', uncommitted changes')"
echo "udp:       net.core.rmem_max=$(cat /proc/sys/net/core/rmem_max), sipp -buff_size 4194304"
echo "load:      loadavg before start $(cut -d' ' -f1-3 /proc/loadavg)"
echo

for sut in "${suts[@]}"; do
    echo "=== $(label "$sut")"
    [[ $precheck == 1 ]] && run_precheck "$sut"
    run_ramp "$sut"
    echo
done
stop_postgres

echo "=== per-step results, all systems (CSV)"
echo "$header"
cat "$results"
echo
echo "Columns: successful = calls answered with 200 and ended with BYE/200; failed = calls - successful; achieved_cps ="
echo "successful calls over the window in which their 200s arrived; p50/p99 = INVITE->200 at the caller (sipp"
echo "-trace_rtt, 1 ms resolution); cpu_s = CPU seconds of the SUT during the step plus ${settle_s}s settle (Kamailio: main"
echo "process and all its children; CallState: edge + silo + PostgreSQL, also shown apart); *_alloc_B_per_call ="
echo "GC.GetTotalAllocatedBytes delta from /api/runtime per successful call (n/a when the endpoint is missing);"
echo "host_busy_pct = whole machine (all cores, including sipp and anyone else) not idle during the step;"
echo "adm_p50_ms/adm_p99_ms = admission durations measured by the edge itself (GET /api/admission/latency, bucket bounds)."
echo

echo "=== summary (highest offered rate with < 1% failed calls and >= 90% of it achieved)"
echo
echo "| system | highest rate (cps) | achieved cps | INVITE->200 p50 | p99 | CPU ms per call | edge allocated per call | vs Kamailio |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
kam_best=""
for sut in "${suts[@]}"; do
    best=""
    while IFS= read -r row; do
        [[ ${row%%,*} == "$sut" ]] || continue
        passes "$row" && best=$row
    done <"$results"
    if [[ $sut == kamailio && -n $best ]]; then kam_best=$(cut -d, -f2 <<<"$best"); fi
    if [[ -z $best ]]; then
        echo "| $(label "$sut") | none | | | | | | |"
        continue
    fi
    IFS=, read -r _ rate _ _ _ _ _ cps p50 p99 _ cpu_per_call edge_cpu silo_cpu pg_cpu edge_alloc silo_alloc _ _ <<<"$best"
    ok=$(cut -d, -f4 <<<"$best")
    split=""
    if [[ $sut != kamailio ]]; then
        split=$(awk -v e="$edge_cpu" -v s="$silo_cpu" -v g="$pg_cpu" -v ok="$ok" 'BEGIN {
            printf " (edge %.3f", 1000 * e / ok; if (s != "-") printf ", silo %.3f, pg %.3f", 1000 * s / ok, 1000 * g / ok; printf ")" }')
    fi
    ratio="1.00"
    if [[ $sut != kamailio ]]; then
        if [[ -n $kam_best ]]; then ratio=$(awk -v a="$rate" -v k="$kam_best" 'BEGIN {printf "%.2f", a / k}'); else ratio=n/a; fi
    fi
    case $sut in
        kamailio) alloc="-" ;;
        standalone) alloc=$([[ $edge_alloc == n/a ]] && echo n/a || echo "$edge_alloc B") ;;
        cluster) alloc=$([[ $edge_alloc == n/a ]] && echo n/a || echo "$edge_alloc B (silo $silo_alloc B)") ;;
    esac
    ms() { if [[ $1 == 0 ]]; then echo "<1 ms"; else echo "$1 ms"; fi; }
    echo "| $(label "$sut") | $rate | $cps | $(ms "$p50") | $(ms "$p99") | $cpu_per_call$split | $alloc | $ratio |"
done
echo
if [[ -n $kam_best ]]; then
    half=$((kam_best / 2))
    for sut in "${suts[@]}"; do
        [[ $sut == kamailio ]] && continue
        # The step closest to half of Kamailio's highest rate (at or below it when there is one).
        row=$(awk -F, -v s="$sut" -v h="$half" '$1 == s { d = h - $2; if (d < 0) d = -d * 1.001; if (best == "" || d < bd) { best = $0; bd = d } } END { print best }' "$results")
        [[ -z $row ]] && continue
        echo "$sut: admission (edge, /api/admission/latency) p50 $(cut -d, -f20 <<<"$row") ms, p99 $(cut -d, -f21 <<<"$row") ms at $(cut -d, -f2 <<<"$row") cps (half of Kamailio's $kam_best is $half)"
    done
fi
if [[ $precheck == 1 ]]; then
    echo "precheck (per-caller limit 2: 3 concurrent calls of one caller -> exactly one 486 with Reason Q.850;cause=17, then 2 more after the BYEs -> both answered): passed by: ${precheck_ok[*]:-none}"
fi
for sut in "${suts[@]}"; do
    last=$(grep "^$sut," "$results" | tail -1 || true)
    [[ -n $last ]] && ! passes "$last" && echo "$sut: first failing step: $(cut -d, -f2 <<<"$last") cps offered, $(cut -d, -f6 <<<"$last")% failed, $(cut -d, -f8 <<<"$last") cps achieved, p99 $(cut -d, -f10 <<<"$last") ms"
done
echo "ratio = highest rate / Kamailio's highest rate. Every run offers at most the rates listed; a system that passed the last one may go higher."
