#!/usr/bin/env bash
# courier-client's tests against a throwaway cluster:
#   clients/rust/test.sh WORKDIR PORT
# unit tests and doctests (the examples in the docs run against the cluster), then the worker
# scenarios (courier-client-harness scenarios): worker processes killed with SIGKILL, stopped
# with SIGTERM (once and twice), overrunning their timeout, kept alive by the heartbeat, frozen
# with SIGSTOP, failing and poisoned, disconnected with pg_terminate_backend and by a server
# restart; and the two examples (the axum shop on PORT+1, the email worker). Every scenario
# checks what happened to each of its messages.
#
# Uses the PostgreSQL of PG_BINDIR (default: pg_config's), which must have courier installed.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 WORKDIR PORT" >&2; exit 2; }
cd "$(dirname "$0")/../.."
ROOT=$PWD
WORK=$(mkdir -p "$1" && cd "$1" && pwd)
PORT=$2
export PATH="$HOME/.cargo/bin:$PATH"
# shellcheck source=bin/lib/cluster.sh
source bin/lib/cluster.sh

started=$(date +%s)
echo "building courier-client, its examples and the harness"
cargo build -q -p courier-client -p courier-client-harness --examples --bins
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

PGDIR="$WORK/pg"
cleanup() { cluster_destroy "$PGDIR" || true; }
trap cleanup EXIT
cluster_destroy "$PGDIR" 2>/dev/null || true
cluster_start "$PGDIR" "$PORT" "shared_preload_libraries = 'courier'" "max_connections = 200"
createdb courier_client_test
psql -X -q -v ON_ERROR_STOP=1 -d courier_client_test -c "CREATE EXTENSION courier"
CONNINFO="host=$PGDIR port=$PORT user=postgres dbname=courier_client_test"

echo "unit tests and doctests"
COURIER_TEST_URL="$CONNINFO" cargo test -q -p courier-client 2>&1 | grep -Ev '^$|^running 0 tests|^test result: ok. 0 passed'

echo "worker scenarios"
mkdir -p "$WORK/logs"
# The restart scenario stops and starts the server with the same settings.
RESTART="source '$ROOT/bin/lib/cluster.sh'; PG_BINDIR='$PG_BINDIR'; cluster_stop '$PGDIR' fast && cluster_start '$PGDIR' '$PORT'"
"$TARGET/debug/courier-client-harness" scenarios --conninfo "$CONNINFO" --dir "$WORK/logs" \
    --examples-dir "$TARGET/debug/examples" --http-port $((PORT + 1)) --restart-cmd "$RESTART" \
    ${COURIER_CLIENT_SCENARIOS:+--only "$COURIER_CLIENT_SCENARIOS"}

# No backend of the cluster crashed along the way.
if grep -E "terminated by signal|PANIC" "$PGDIR/server.log"; then
    echo "the server log shows a crashed backend" >&2
    exit 1
fi
echo "courier-client tests passed in $(( $(date +%s) - started )) s"
