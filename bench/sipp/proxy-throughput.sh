#!/usr/bin/env bash
# Call setups per second through one SIP edge (no admission): sipp UAC -> edge -> sipp UAS on loopback, with
# Record-Route honoured so ACK and BYE cross the edge. For each rate it runs a bounded number of calls and prints
# successful/failed calls, the achieved rate and INVITE->200 response time percentiles (sipp -trace_rtt).
#   bench/sipp/proxy-throughput.sh [rates...]        e.g. bench/sipp/proxy-throughput.sh 500 1000 2000
# Environment: SECONDS_PER_RATE (default 10), TRANSPORT (u1 or t1, default u1), HOLD_MS (how long each call is held,
#   default 0: sipp's -d),
#   ADMISSION=sqlite|postgres: the edge runs standalone (grains in the process) and admits every call on the caller's
#   and the callee's user limits (limits set high enough never to refuse); postgres needs CALLSTATE_BENCH_POSTGRES
#   (an Npgsql connection string).
#   ADMISSION=cluster SILOS=N: N Orleans silo processes (membership and grain state on CALLSTATE_BENCH_POSTGRES in a
#   fresh schema, a fresh cluster id) and the edge as an Orleans client of their gateways; silos_cpu_s is then the CPU
#   seconds of all the silos, and the commit columns are summed over all of them.
#   SIPP_NICE: niceness of both sipp processes (default 0), so the edge can be measured with the load generator
#   yielding the shared cores to it,
#   EDGE_ARGS: more command-line settings for the edge (split on spaces), e.g. EDGE_ARGS=--CallState:Sip:T4=00:00:01
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
rates=("${@:-500 1000 2000}")
per_rate=${SECONDS_PER_RATE:-10}
transport=${TRANSPORT:-u1}
command -v sipp >/dev/null || { echo "sipp (Debian package sip-tester) is required" >&2; exit 1; }
dotnet build "$repo/src/SipEdge" -c Release --nologo -v q >/dev/null
work=$(mktemp -d /tmp/callstate-bench.XXXXXX)
edge_pid=""; uas_pid=""; silo_pids=()
cleanup() {
    [[ -n $uas_pid ]] && kill "$uas_pid" 2>/dev/null || true
    [[ -n $edge_pid ]] && kill "$edge_pid" 2>/dev/null || true
    for pid in "${silo_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ ${KEEP_WORK:-0} == 1 ]] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
printf 'SEQUENTIAL\n' >"$work/users.csv"
for i in $(seq 1 100); do printf 'user%d\n' "$i" >>"$work/users.csv"; done

edge_port=25060; uas_port=25090; uac_port=25061; http_port=25082; health_port=25084
# The admin API needs a token (docs/operations.md, "Admin API"); this run makes one up and gives it to every process.
bench_token="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
admin_auth=("--CallState:Admin:Tokens:bench:Token=$bench_token" --CallState:Admin:Tokens:bench:Role=Read)
auth=(-H "Authorization: Bearer $bench_token")
admission_args=(); silo_urls=()
# wait_ready URL PID NAME: until URL/health/ready (the health probes' port) answers (a silo: active in the cluster; an edge: SIP listening and,
# as a cluster client, connected to a gateway), at most 60 s; stops the run when the process exits or never gets ready.
wait_ready() {
    local i
    for i in $(seq 1 600); do
        curl -sf --max-time 1 "$1/health/ready" >/dev/null 2>&1 && return 0
        kill -0 "$2" 2>/dev/null || { tail -20 "$work/$3.log" >&2; echo "$3 exited during start-up" >&2; exit 1; }
        sleep 0.1
    done
    tail -20 "$work/$3.log" >&2; echo "$3 not ready after 60 s" >&2; exit 1
}
case ${ADMISSION:-} in
    "") ;;
    sqlite|postgres)
        admission_args=(--standalone "--CallState:Admission:Routes:1:Upstream=127.0.0.1:$uas_port"
            "--CallState:Admission:Routes:2:Upstream=127.0.0.1:$uas_port"
            --CallState:Limits:DefaultUser:Total=1000000 --CallState:Limits:DefaultUser:Inbound=1000000
            --CallState:Limits:DefaultUser:Outbound=1000000)
        if [[ $ADMISSION == sqlite ]]; then
            admission_args+=("--CallState:Storage:ConnectionString=Data Source=$work/callstate.db")
        else
            admission_args+=(--CallState:Storage:Provider=PostgreSql "--CallState:Storage:ConnectionString=${CALLSTATE_BENCH_POSTGRES:?set CALLSTATE_BENCH_POSTGRES}")
        fi
        ;;
    cluster)
        dotnet build "$repo/src/Silo" -c Release --nologo -v q >/dev/null
        schema="bench_$(date +%s)"
        cluster_id="bench-$(date +%s)-$$"
        limits=(--CallState:Limits:DefaultUser:Total=1000000 --CallState:Limits:DefaultUser:Inbound=1000000
            --CallState:Limits:DefaultUser:Outbound=1000000)
        admission_args=(--CallState:Admission:LocalDomains:0=127.0.0.1 --CallState:Admission:Routes:0:Prefix=
            "--CallState:Admission:Routes:0:Upstream=127.0.0.1:$uas_port" "${limits[@]}" "--CallState:Orleans:ClusterId=$cluster_id")
        # Silo i: admin API on 25100+i, silo-to-silo port 25110+i, gateway (where the edge connects) 25120+i. The silos
        # find each other through the membership table in the same PostgreSQL schema.
        for i in $(seq 0 $((${SILOS:-1} - 1))); do
            dotnet "$repo/src/Silo/bin/Release/net10.0/CallState.Silo.dll" --urls="http://127.0.0.1:$((25100 + i))" \
                "--CallState:Admin:HealthPort=$((25130 + i))" "${admin_auth[@]}" \
                --CallState:Storage:Provider=PostgreSql "--CallState:Storage:ConnectionString=${CALLSTATE_BENCH_POSTGRES:?set CALLSTATE_BENCH_POSTGRES}" \
                "--CallState:Storage:Schema=$schema" --CallState:Orleans:Clustering=Storage "--CallState:Orleans:ClusterId=$cluster_id" \
                --CallState:Orleans:AdvertisedAddress=127.0.0.1 "--CallState:Orleans:SiloPort=$((25110 + i))" \
                "--CallState:Orleans:GatewayPort=$((25120 + i))" "${limits[@]}" \
                --Logging:LogLevel:Default=Warning >"$work/silo$i.log" 2>&1 &
            silo_pids+=($!)
            admission_args+=("--CallState:Orleans:Gateways:$i=127.0.0.1:$((25120 + i))")
            silo_urls+=("http://127.0.0.1:$((25100 + i))")
            wait_ready "http://127.0.0.1:$((25130 + i))" "${silo_pids[-1]}" "silo$i"
        done
        ;;
    *) echo "ADMISSION must be sqlite, postgres or cluster" >&2; exit 1 ;;
esac
silos_cpu() {
    local total=0
    for pid in "${silo_pids[@]}"; do total=$((total + $(awk '{print $14+$15}' "/proc/$pid/stat"))); done
    echo "$total"
}
# The one sipp caller is a single source offering thousands of requests a second: unless a configuration names it a
# trusted peer it gets the default per-source budget (docs/architecture.md, "Overload control").
budget_args=(--CallState:Sip:Overload:Default:RequestsPerSecond=1000000 --CallState:Sip:Overload:Default:Burst=1000000
    --CallState:Sip:Overload:Default:MaxTransactions=1000000)
dotnet "$repo/src/SipEdge/bin/Release/net10.0/CallState.SipEdge.dll" "${admission_args[@]}" "${budget_args[@]}" --urls="http://127.0.0.1:$http_port" \
    "--CallState:Admin:HealthPort=$health_port" "${admin_auth[@]}" \
    --CallState:Sip:Port=$edge_port --CallState:Sip:DefaultUpstream=127.0.0.1:$uas_port \
    --Logging:LogLevel:Default=Warning ${EDGE_ARGS:-} >"$work/edge.log" 2>&1 &
edge_pid=$!
wait_ready "http://127.0.0.1:$health_port" "$edge_pid" edge
nice -n "${SIPP_NICE:-0}" sipp -sf "$repo/tests/Cluster.IntegrationTests/sipp/uas_rr.xml" -i 127.0.0.1 -p $uas_port -t "$transport" \
    -buff_size 4194304 -nostdin -default_behaviors all,-abortunexp >"$work/uas.log" 2>&1 &
uas_pid=$!
sleep 0.5

# The storage's group commit (GET /api/storage/commits) of the edge (standalone) or of every silo (cluster), summed:
# batches, writes and the histograms' counts bucket by bucket.
((${#silo_urls[@]} > 0)) || silo_urls=("http://127.0.0.1:$http_port")
commits() {  # commits FILE
    local i=0 url
    for url in "${silo_urls[@]}"; do
        curl -sf "${auth[@]}" "$url/api/storage/commits" >"$1.$i" 2>/dev/null || : >"$1.$i"
        i=$((i + 1))
    done
    python3 -c 'import json, sys
parts = []
for p in sys.argv[2:]:
    try:
        parts.append(json.load(open(p)))
    except (OSError, ValueError):
        sys.exit(0)  # a silo did not answer: no figure for this step
total = parts[0]
for part in parts[1:]:
    total["batches"] += part["batches"]
    total["writes"] += part["writes"]
    for h in ("commitDuration", "queueWait"):
        total[h]["counts"] = [a + b for a, b in zip(total[h]["counts"], part[h]["counts"])]
json.dump(total, open(sys.argv[1], "w"))' "$1" "$1".[0-9]*
    rm -f "$1".[0-9]*
}
# The edge's own runtime counters (GET /api/runtime): cumulative allocated bytes, thread-pool work items, lock contentions, gen0/gen2 GCs.
counters() { curl -sf "${auth[@]}" "http://127.0.0.1:$http_port/api/runtime" || echo '{}'; }
field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<<"$1"; }
# The silos' runtime counters (cluster only), summed over all of them as one JSON object; {} for a standalone edge.
silo_counters() {
    ((${#silo_pids[@]} > 0)) || { echo "{}"; return; }
    local url
    for url in "${silo_urls[@]}"; do curl -sf "${auth[@]}" "$url/api/runtime" || echo '{}'; echo; done | python3 -c 'import json, sys
total = {}
for line in sys.stdin:
    if line.strip():
        for k, v in json.loads(line).items():
            total[k] = total.get(k, 0) + v
print(json.dumps(total, separators=(",", ":")))'
}
echo "rate_offered,calls,successful,failed,achieved_cps,rtt_p50_ms,rtt_p99_ms,edge_cpu_s,silos_cpu_s,edge_alloc_b_per_call,edge_workitems_per_call,edge_contentions,edge_gen0,edge_gen2,edge_gc_pause_ms,edge_heap_mb,silos_contentions,silos_gc_pause_ms,silos_heap_mb,adm_p50_ms,adm_p99_ms,commit_p50_ms,commit_p99_ms,commit_wait_p99_ms,writes_per_batch,rejected"
set +e +o pipefail
for rate in ${rates[*]}; do
    calls=$((rate * per_rate))
    cpu_before=$(awk '{print $14+$15}' "/proc/$edge_pid/stat")
    silos_before=$(silos_cpu)
    rt_before=$(counters)
    silo_rt_before=$(silo_counters)
    curl -sf "${auth[@]}" "http://127.0.0.1:$http_port/api/admission/latency" >"$work/adm-before.json" 2>/dev/null || : >"$work/adm-before.json"
    : >"$work/commits-before.json"; commits "$work/commits-before.json"
    start=$(date +%s.%N)
    (cd "$work" && timeout $((per_rate * 3 + 60)) nice -n "${SIPP_NICE:-0}" sipp 127.0.0.1:$edge_port -sf "$repo/tests/Cluster.IntegrationTests/sipp/uac_rr.xml" \
        -inf "$work/users.csv" -i 127.0.0.1 -p $uac_port -t "$transport" -m "$calls" -r "$rate" -l $((rate * 4 + rate * ${HOLD_MS:-0} / 1000)) -d "${HOLD_MS:-0}" \
        -buff_size 4194304 -nostdin -default_behaviors all,-abortunexp -trace_rtt -rtt_freq 100 -trace_counts \
        >"$work/uac.log" 2>&1) || true
    end=$(date +%s.%N)
    cpu_after=$(awk '{print $14+$15}' "/proc/$edge_pid/stat")
    silos_after=$(silos_cpu)
    rt_after=$(counters)
    silo_rt_after=$(silo_counters)
    curl -sf "${auth[@]}" "http://127.0.0.1:$http_port/api/admission/latency" >"$work/adm-after.json" 2>/dev/null || : >"$work/adm-after.json"
    adm=$(python3 "$repo/bench/admission-latency.py" "$work/adm-before.json" "$work/adm-after.json")
    : >"$work/commits-after.json"; commits "$work/commits-after.json"
    commit=$(python3 "$repo/bench/admission-latency.py" "$work/commits-before.json" "$work/commits-after.json" commitDuration)
    commit_wait=$(python3 "$repo/bench/admission-latency.py" "$work/commits-before.json" "$work/commits-after.json" queueWait | cut -d, -f2)
    per_batch=$(python3 -c 'import json, sys
try:
    b, a = (json.load(open(p)) for p in sys.argv[1:3])
    print("%.1f" % ((a["writes"] - b["writes"]) / max(1, a["batches"] - b["batches"])))
except (OSError, ValueError, KeyError):
    print("n/a")' "$work/commits-before.json" "$work/commits-after.json")
    ok=$(grep -E "Successful call" "$work/uac.log" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
    failed=$(grep -E "Failed call" "$work/uac.log" | tail -1 | awk -F'|' '{gsub(/ /,"",$3); print $3}')
    # The scenario completes normally after a final non-2xx (486/480/403/503/500/408), so sipp counts those calls as
    # successful: they are moved to failed here and also shown apart.
    rejected=$(cat "$work"/uac_rr_*_counts.csv 2>/dev/null | awk -F';' '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+_(486|480|403|503|500|408)_Recv$/) cols[i] = 1; next }
        { last = $0 } END { n = split(last, v, ";"); t = 0; for (i in cols) t += v[i]; print t + 0 }')
    rm -f "$work"/uac_rr_*_counts.csv
    ok=$(( ${ok:-0} - rejected )); failed=$(( ${failed:-0} + rejected ))
    rtt=$(cat "$work"/uac_rr_*_rtt.csv 2>/dev/null | awk -F';' 'NR>1 && $2 ~ /^[0-9.]+$/ {print $2}' | sort -n |
        awk '{a[NR]=$1} END {if (NR==0) {print "n/a,n/a"} else {print a[int(NR*0.5)+ (NR*0.5==int(NR*0.5)?0:1)] "," a[int(NR*0.99)+ (NR*0.99==int(NR*0.99)?0:1)]}}')
    rm -f "$work"/uac_rr_*_rtt.csv
    cps=$(awk -v c="${ok:-0}" -v s="$start" -v e="$end" 'BEGIN {printf "%.0f", c/(e-s)}')
    cpu=$(awk -v a="$cpu_before" -v b="$cpu_after" 'BEGIN {printf "%.2f", (b-a)/100}')
    silos=$(awk -v a="$silos_before" -v b="$silos_after" 'BEGIN {printf "%.2f", (b-a)/100}')
    per_call() { awk -v a="$(field "$rt_before" "$1")" -v b="$(field "$rt_after" "$1")" -v n="$calls" 'BEGIN {if (a == "" || b == "") print "n/a"; else printf "%.0f", (b-a)/n}'; }
    # delta NAME [FACTOR]: how much a counter moved over the step, times FACTOR (1000: seconds to milliseconds).
    delta() { awk -v a="$(field "$rt_before" "$1")" -v b="$(field "$rt_after" "$1")" -v k="${2:-1}" 'BEGIN {if (a == "" || b == "") print "n/a"; else printf "%.0f", (b-a)*k}'; }
    silo_delta() { awk -v a="$(field "$silo_rt_before" "$1")" -v b="$(field "$silo_rt_after" "$1")" -v k="${2:-1}" 'BEGIN {if (a == "" || b == "") print "n/a"; else printf "%.0f", (b-a)*k}'; }
    mb() { awk -v h="$1" 'BEGIN {if (h == "") print "n/a"; else printf "%.0f", h/1048576}'; }
    echo "$rate,$calls,${ok:-0},${failed:-0},$cps,$rtt,$cpu,$silos,$(per_call allocatedBytes),$(per_call completedWorkItems),$(delta lockContentions),$(delta gen0Collections),$(delta gen2Collections),$(delta gcPauseSeconds 1000),$(mb "$(field "$rt_after" heapBytes)"),$(silo_delta lockContentions),$(silo_delta gcPauseSeconds 1000),$(mb "$(field "$silo_rt_after" heapBytes)"),$adm,$commit,$commit_wait,$per_batch,$rejected"
done
