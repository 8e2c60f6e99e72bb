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
    --CallState:Sip:Overload:Default:MaxTransactions=1000000
    # Stopped by SIGTERM between runs: no drain (docs/operations.md, "Draining an edge"), nothing is in progress then.
    --CallState:Sip:DrainTimeout=00:00:00)
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

# Snapshots of the Prometheus endpoint (GET /metrics, docs/operations.md "Metrics"), read by bench/metrics.py: the
# edge's own (runtime counters, admission durations) and the storage's, of the edge (standalone) or of every silo
# (cluster, one file each, summed by bench/metrics.py).
((${#silo_urls[@]} > 0)) || silo_urls=("http://127.0.0.1:$http_port")
scrape() {  # scrape URL FILE: the snapshot, or an empty file when the process did not answer
    curl -sf "${auth[@]}" "$1/metrics" >"$2" 2>/dev/null || : >"$2"
}
storage_snapshot() {  # storage_snapshot PREFIX: one file per silo; prints them joined by commas
    local i=0 url files=()
    for url in "${silo_urls[@]}"; do
        scrape "$url" "$1.$i"
        files+=("$1.$i")
        i=$((i + 1))
    done
    (IFS=,; echo "${files[*]}")
}
metric() { python3 "$repo/bench/metrics.py" "$@"; }
echo "rate_offered,calls,successful,failed,achieved_cps,rtt_p50_ms,rtt_p99_ms,edge_cpu_s,silos_cpu_s,edge_alloc_b_per_call,edge_workitems_per_call,edge_contentions,edge_gen0,edge_gen2,edge_gc_pause_ms,edge_heap_mb,silos_contentions,silos_gc_pause_ms,silos_heap_mb,adm_p50_ms,adm_p99_ms,commit_p50_ms,commit_p99_ms,commit_wait_p99_ms,writes_per_batch,rejected"
set +e +o pipefail
for rate in ${rates[*]}; do
    calls=$((rate * per_rate))
    cpu_before=$(awk '{print $14+$15}' "/proc/$edge_pid/stat")
    silos_before=$(silos_cpu)
    scrape "http://127.0.0.1:$http_port" "$work/edge-before.prom"
    commits_before=$(storage_snapshot "$work/storage-before.prom")
    start=$(date +%s.%N)
    (cd "$work" && timeout $((per_rate * 3 + 60)) nice -n "${SIPP_NICE:-0}" sipp 127.0.0.1:$edge_port -sf "$repo/tests/Cluster.IntegrationTests/sipp/uac_rr.xml" \
        -inf "$work/users.csv" -i 127.0.0.1 -p $uac_port -t "$transport" -m "$calls" -r "$rate" -l $((rate * 4 + rate * ${HOLD_MS:-0} / 1000)) -d "${HOLD_MS:-0}" \
        -buff_size 4194304 -nostdin -default_behaviors all,-abortunexp -trace_rtt -rtt_freq 100 -trace_counts \
        >"$work/uac.log" 2>&1) || true
    end=$(date +%s.%N)
    cpu_after=$(awk '{print $14+$15}' "/proc/$edge_pid/stat")
    silos_after=$(silos_cpu)
    scrape "http://127.0.0.1:$http_port" "$work/edge-after.prom"
    commits_after=$(storage_snapshot "$work/storage-after.prom")
    eb="$work/edge-before.prom" ea="$work/edge-after.prom"
    adm=$(metric quantiles "$eb" "$ea" callstate_sipedge_admission_duration_seconds)
    commit=$(metric quantiles "$commits_before" "$commits_after" callstate_storage_commit_duration_seconds callstate_outcome=committed)
    commit_wait=$(metric quantiles "$commits_before" "$commits_after" callstate_storage_queue_duration_seconds | cut -d, -f2)
    per_batch=$(metric ratio "$commits_before" "$commits_after" callstate_storage_writes_total callstate_storage_commit_duration_seconds_count)
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
    # The edge's runtime counters (System.Runtime meter) over the step: allocated bytes and thread-pool work items per
    # call, lock contentions, collections (gen0: all of them, as every collection collects gen0; gen2: full ones),
    # GC pause, and the heap after the last collection.
    alloc=$(metric delta "$eb" "$ea" dotnet_gc_heap_total_allocated_bytes_total --per "$calls")
    items=$(metric delta "$eb" "$ea" dotnet_thread_pool_work_item_count_total --per "$calls")
    contentions=$(metric delta "$eb" "$ea" dotnet_monitor_lock_contentions_total)
    gen0=$(metric delta "$eb" "$ea" dotnet_gc_collections_total)
    gen2=$(metric delta "$eb" "$ea" dotnet_gc_collections_total gc_heap_generation=gen2)
    pause=$(metric delta "$eb" "$ea" dotnet_gc_pause_time_seconds_total --scale 1000)
    heap=$(metric value "$ea" dotnet_gc_last_collection_heap_size_bytes | awk '$1 == "n/a" {print; next} {printf "%.0f", $1/1048576}')
    # The same of the silos (cluster only; their scrapes are the storage snapshots), summed over all of them.
    silo_figures="n/a,n/a,n/a"
    if ((${#silo_pids[@]} > 0)); then
        silo_figures="$(metric delta "$commits_before" "$commits_after" dotnet_monitor_lock_contentions_total),$(metric delta "$commits_before" "$commits_after" dotnet_gc_pause_time_seconds_total --scale 1000),$(metric value "$commits_after" dotnet_gc_last_collection_heap_size_bytes | awk '$1 == "n/a" {print; next} {printf "%.0f", $1/1048576}')"
    fi
    echo "$rate,$calls,${ok:-0},${failed:-0},$cps,$rtt,$cpu,$silos,$alloc,$items,$contentions,$gen0,$gen2,$pause,$heap,$silo_figures,$adm,$commit,$commit_wait,$per_batch,$rejected"
done
