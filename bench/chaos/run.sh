#!/usr/bin/env bash
# The chaos soak (docs/reliability.md, "Chaos soak"): runs the integration test ChaosSoakTests for longer than CI does.
# Mixed sipp traffic through 2 edges and 3 silos on a PostgreSQL of the test's own while silos and edges are SIGKILLed
# and SIGSTOPped and PostgreSQL is restarted in a seeded random order; then checks that no caller ever had more calls
# up at the callee than its limit and that every limit counts 0 once the leases have lapsed.
#   bench/chaos/run.sh [seconds] [seed]      e.g. bench/chaos/run.sh 600 42   (defaults: 600 s, a fresh seed)
# CONFIGURATION: the build to run (Release unless set, e.g. Debug to reuse a developer's build).
# Writes to $CHAOS_OUT/callstate-chaos-<date>-<seed>/ (CHAOS_OUT defaults to /tmp): summary.md (calls attempted, reaching the callee, refused and failed per
# kind; faults by kind with their log; violations; leaked slots; stored holds), test.log, and logs/ (every silo's and
# edge's output and the callee's call log). The test starts and kills only its own processes.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
seconds=${1:-600}
seed=${2:-$(( (RANDOM << 15 | RANDOM) + 1 ))}
command -v sipp >/dev/null || { echo "sipp (Debian package sip-tester) is required" >&2; exit 1; }
command -v unshare >/dev/null || { echo "unshare (util-linux) is required" >&2; exit 1; }
pg_bin=${CALLSTATE_PG_BIN:-$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
[[ -x $pg_bin/initdb ]] || { echo "PostgreSQL server binaries not found (set CALLSTATE_PG_BIN)" >&2; exit 1; }

out="${CHAOS_OUT:-/tmp}/callstate-chaos-$(date -u +%Y%m%dT%H%M%SZ)-$seed"
mkdir -p "$out"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
configuration=${CONFIGURATION:-Release}
dotnet build "$repo/tests/Cluster.IntegrationTests/CallState.Cluster.IntegrationTests.csproj" -c "$configuration" --nologo -v q --disable-build-servers >/dev/null

echo "chaos soak: $seconds s, seed $seed, output in $out"
status=0
export CALLSTATE_PG_BIN=$pg_bin CALLSTATE_CHAOS_SECONDS=$seconds CALLSTATE_CHAOS_SEED=$seed \
    CALLSTATE_CHAOS_SUMMARY="$out/summary.md" CALLSTATE_CHAOS_LOGS="$out/logs" CHAOS_PROJECT="$repo/tests/Cluster.IntegrationTests/CallState.Cluster.IntegrationTests.csproj" CHAOS_CONFIGURATION=$configuration
# In a network namespace of its own with only loopback, as scripts/test.sh runs the tests: the rig restarts silos and
# edges on their own ports, which another test run on the machine (same port range) could otherwise take meanwhile.
# shellcheck disable=SC2016 # expanded by the inner shell
unshare -n bash -c 'ip link set lo up && exec dotnet test "$CHAOS_PROJECT" -c "$CHAOS_CONFIGURATION" --no-build --nologo \
    --filter "FullyQualifiedName~ChaosSoakTests" --logger "console;verbosity=detailed"' >"$out/test.log" 2>&1 || status=$?

{
    echo
    echo "command: CONFIGURATION=$configuration bench/chaos/run.sh $seconds $seed; $(date -u +%Y-%m-%d); $(nproc) cores, $(uname -m); test exit $status"
} >>"$out/summary.md" 2>/dev/null || true
if [[ -s $out/summary.md ]]; then cat "$out/summary.md"; else tail -n 60 "$out/test.log"; fi
exit "$status"
