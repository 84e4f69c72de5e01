#!/usr/bin/env bash
# Runs the application's regression tests (examples/pg_regress) with pg_regress, against a
# throwaway cluster that has courier installed (not preloaded: the application does not need it).
#
#   examples/pg_regress/run.sh WORKDIR PORT
#
# Against your own server instead, run pg_regress as below with --host/--port/--user (it
# creates the database --dbname afresh; with --use-existing it uses one, and teardown leaves it
# as it found it).
# Environment: PG_BINDIR (default: pg_config's), PG_REGRESS (default: PGXS's pg_regress).
set -euo pipefail
WORK=$(realpath -m "$1")
PORT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=bin/lib/cluster.sh
source "$HERE/../../bin/lib/cluster.sh"
PG_REGRESS="${PG_REGRESS:-$(dirname "$("$PG_BINDIR/pg_config" --pgxs)")/../test/regress/pg_regress}"

mkdir -p "$WORK"
chmod 755 "$WORK"
trap 'cluster_destroy "$WORK/pg" || true' EXIT
cluster_start "$WORK/pg" "$PORT"

regress() { # OUTPUTDIR [pg_regress options]
    local out="$1" status=0
    shift
    "$PG_REGRESS" --bindir="$PG_BINDIR" --inputdir="$HERE" --outputdir="$out" \
        --schedule="$HERE/schedule" --dbname=shop_regress \
        --host="$PGHOST" --port="$PGPORT" --user=postgres "$@" || status=$?
    if [ "$status" != 0 ]; then
        [ -f "$out/regression.diffs" ] && cat "$out/regression.diffs"
        exit "$status"
    fi
}
# pg_regress creates shop_regress afresh and runs CREATE EXTENSION courier in it.
regress "$WORK/results" --load-extension=courier
# Again in the same database: passes only if the first run left nothing behind.
regress "$WORK/results-again" --use-existing
