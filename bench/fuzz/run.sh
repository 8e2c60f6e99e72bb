#!/usr/bin/env bash
# The fuzz run for bench (docs/testing.md, "Fuzzing"): the in-process target (parser and stream framer) and the network
# target (a standalone edge over UDP and TCP) for about SECONDS in total instead of the CI variant's minute.
#   bench/fuzz/run.sh [seconds]            fixed seeds and today's, each target's share of the time split between them
#   CALLSTATE_FUZZ_SEED=n bench/fuzz/run.sh [seconds]                  one run seed only
#   CALLSTATE_FUZZ_SEED=n CALLSTATE_FUZZ_CASE=i bench/fuzz/run.sh      replay one case
# The figures (inputs, duration, findings) are printed per target; record them in docs/reliability.md ("Fuzzing").
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-600}"
export CALLSTATE_FUZZ_SECONDS="$seconds"
dotnet build tests/Sip.Tests/CallState.Sip.Tests.csproj -v q --nologo >/dev/null
dotnet build tests/Cluster.IntegrationTests/CallState.Cluster.IntegrationTests.csproj -v q --nologo >/dev/null
status=0
started=$(date +%s)
echo "fuzz run: ${seconds} s budget, $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)"
for target in "tests/Sip.Tests/CallState.Sip.Tests.csproj ParserFuzzTests" \
              "tests/Cluster.IntegrationTests/CallState.Cluster.IntegrationTests.csproj EdgeFuzzTests"; do
  set -- $target
  dotnet test "$1" --no-build --filter "FullyQualifiedName~$2" --logger "console;verbosity=detailed" 2>&1 \
    | grep -vE '^\s*$|xUnit.net|^Test run for|^A total of|\.dll$' || status=1
done
echo "wall time $(( $(date +%s) - started )) s"
exit $status
