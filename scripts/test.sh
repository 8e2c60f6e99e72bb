#!/usr/bin/env bash
# Builds the solution and runs every test against real peers (a throwaway PostgreSQL, sipp, sipsak, openssl, Kamailio), all on
# loopback inside a private network namespace. Extra arguments go to `dotnet test`:
#   scripts/test.sh --filter FullyQualifiedName~Storage
# Runs as root on Debian 12; installs the Debian packages it needs when they are missing.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [[ $EUID -ne 0 ]]; then
    echo "scripts/test.sh: run as root (it installs packages, creates a network namespace and runs PostgreSQL as user postgres)" >&2
    exit 1
fi

if ! command -v dotnet >/dev/null; then
    echo "scripts/test.sh: the .NET SDK (see global.json) is not installed" >&2
    exit 1
fi

missing=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v sipp >/dev/null || missing+=(sip-tester)
# The TLS peer of the SIP-over-TLS test (Debian's sipp is built without TLS; sipsak has it, through GnuTLS).
command -v sipsak >/dev/null || missing+=(sipsak)
# The scanners of the flood test (svmap, svwar).
command -v svwar >/dev/null || missing+=(sipvicious)
# The TLS client that presents a trunk's client certificate (sipsak 0.9.8.1 never sends one).
command -v openssl >/dev/null || missing+=(openssl)
# The TLS next hop of the TLS next-hop test: Kamailio with its TLS module (a separate Debian package).
command -v kamailio >/dev/null || missing+=(kamailio)
compgen -G '/usr/lib/*/kamailio/modules/tls.so' >/dev/null || missing+=(kamailio-tls-modules)
command -v ip >/dev/null || missing+=(iproute2)
# promtool checks the alert rules in deploy/prometheus (the telemetry test).
command -v promtool >/dev/null || missing+=(prometheus)
# kubectl renders the kustomize overlays of deploy/k8s offline (KustomizeTests, ContainerImageTests).
command -v kubectl >/dev/null || missing+=(kubectl)
# The dashboard's browser test (Microsoft.Playwright drives it; it downloads no browser of its own).
command -v chromium >/dev/null || missing+=(chromium)
{ command -v unshare && command -v runuser; } >/dev/null || missing+=(util-linux)
if ((${#missing[@]} > 0)); then
    echo "scripts/test.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

# The newest installed PostgreSQL (Debian 12 ships 15 in /usr/lib/postgresql/15/bin).
pg_bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
if [[ ! -x $pg_bin/initdb ]]; then
    echo "scripts/test.sh: no PostgreSQL server binaries under /usr/lib/postgresql" >&2
    exit 1
fi

# The test host and the CLI write under HOME and TMPDIR; CI may start us without a usable HOME.
if [[ -z ${HOME:-} || ! -w ${HOME:-/nonexistent} ]]; then
    HOME=$(mktemp -d)
    export HOME
fi
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

# Restore needs the network, so build out here; the namespace below has loopback only.
# No build servers: a compiler server left running would outlive this script (and a CI step).
dotnet build Cluster.sln -c Release --disable-build-servers

export CALLSTATE_PG_BIN=$pg_bin
# Every test project must run tests: one that discovers none (a broken reference, a filter gone wrong) fails the run.
CALLSTATE_TEST_PROJECTS=$(find tests -mindepth 2 -maxdepth 2 -name '*.csproj' | wc -l)
export CALLSTATE_TEST_PROJECTS
# shellcheck disable=SC2016 # expanded by the inner shell
unshare -n bash -c '
set -euo pipefail
ip link set lo up

pg_dir=$(mktemp -d /tmp/callstate-pg.XXXXXX)
log=$(mktemp /tmp/callstate-test.XXXXXX)
stop_postgres() {
    if [[ -f $pg_dir/data/postmaster.pid ]]; then
        (cd "$pg_dir" && runuser -u postgres -- "$CALLSTATE_PG_BIN/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null) || true
    fi
    rm -rf "$pg_dir" "$log"
}
trap stop_postgres EXIT

chown postgres "$pg_dir"
(
    cd "$pg_dir"
    runuser -u postgres -- "$CALLSTATE_PG_BIN/initdb" -D "$pg_dir/data" -A trust -U callstate >"$pg_dir/initdb.log" 2>&1 \
        || { cat "$pg_dir/initdb.log" >&2; exit 1; }
    runuser -u postgres -- "$CALLSTATE_PG_BIN/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w start \
        -o "-p 55432 -k $pg_dir -c listen_addresses=127.0.0.1" >/dev/null \
        || { cat "$pg_dir/postgres.log" >&2; exit 1; }
)
export CALLSTATE_TEST_POSTGRES="Host=127.0.0.1;Port=55432;Username=callstate;Database=postgres"

# A test that hangs is stopped (and reported) instead of eating the whole CI budget.
status=0
dotnet test Cluster.sln -c Release --no-build --logger "console;verbosity=normal" \
    --blame-hang-timeout 10m --blame-hang-dump-type none "$@" 2>&1 | tee "$log" || status=$?

# One closing line over all test projects, in the plain "N passed, N failed" form.
read -r passed failed skipped total < <(awk "
    /^Total tests: [0-9]+/ { block = 1; total += \$3; next }
    block && /^ +Passed: [0-9]+/ { passed += \$2; next }
    block && /^ +Failed: [0-9]+/ { failed += \$2; next }
    block && /^ +Skipped: [0-9]+/ { skipped += \$2; next }
    block && /Total time:/ { block = 0 }
    END { printf \"%d %d %d %d\\n\", passed, failed, skipped, total }" "$log")
# CI keeps only the end of the output, so every failed test is repeated here with the first lines
# of its message and stack trace.
if ((failed > 0)); then
    echo "failed tests:"
    awk "
        /^ +Failed [A-Za-z_]/ { shown = 0; keep = 1; print; next }
        /^ +(Passed|Skipped) [A-Za-z_]/ || /^Total tests:/ || /^\\[xUnit/ { keep = 0 }
        keep && shown < 30 { print; shown++ }" "$log"
fi
summary="tests: $passed passed, $failed failed"
if ((skipped > 0)); then summary+=", $skipped skipped"; fi
echo "$summary"
if ((status == 0 && total == 0)); then
    echo "scripts/test.sh: no test ran" >&2
    status=1
fi
# A filtered run (arguments given) may leave projects without tests; a full run may not.
ran=$(grep -cE "^Total tests: [1-9]" "$log" || true)
if ((status == 0 && $# == 0 && ran < CALLSTATE_TEST_PROJECTS)); then
    echo "scripts/test.sh: only $ran of $CALLSTATE_TEST_PROJECTS test projects ran tests" >&2
    status=1
fi
exit "$status"
' bash "$@"
