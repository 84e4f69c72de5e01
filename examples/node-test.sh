#!/usr/bin/env bash
# The TypeScript examples against a real courier database, and through PgBouncer:
#   npm ci (from the committed lockfile) -> tsc -b (type-check and build) -> a throwaway cluster
#   with courier preloaded on 127.0.0.1:PORT and Debian's PgBouncer on PORT+1 -> each example's
#   program and its tests (node's built-in test runner).
#
#   examples/node-test.sh WORKDIR PORT        (uses PORT and PORT+1)
#
# Environment: PG_BINDIR (default: pg_config's), NODE_TEST_SKIP_CI=1 keeps node_modules as it is.
set -euo pipefail
WORK=$(realpath -m "$1")
PORT=$2
BOUNCER_PORT=$((PORT + 1))
cd "$(dirname "$0")"
EXAMPLES=$PWD
# shellcheck source=bin/lib/cluster.sh
source ../bin/lib/cluster.sh
# shellcheck source=examples/pgbouncer/lib.sh
source pgbouncer/lib.sh

echo "node $(node --version), npm $(npm --version), $(pgbouncer --version | head -n 1)"
if [ "${NODE_TEST_SKIP_CI:-0}" != 1 ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
# The type-check: every example and every test compiles under strict settings, or nothing runs.
npx --no-install tsc -b node-postgres kysely drizzle

mkdir -p "$WORK"
chmod 755 "$WORK"
cleanup() {
    pgbouncer_stop "$WORK/pgbouncer"
    cluster_destroy "$WORK/pg" || true
}
trap cleanup EXIT
cluster_start "$WORK/pg" "$PORT" "listen_addresses = '127.0.0.1'" "shared_preload_libraries = 'courier'"
for db in shop_pg shop_pg_bouncer shop_kysely shop_drizzle bouncer; do
    "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $db"
    "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -d "$db" -c "CREATE EXTENSION courier"
done
# Transaction pooling with one server connection per database and user, so that what holds a
# server connection shows; `bouncer_session` is the same database in session pooling.
pgbouncer_start "$WORK/pgbouncer" "$BOUNCER_PORT" "$PORT" "default_pool_size = 1" \
    "db:bouncer_session = host=127.0.0.1 port=$PORT dbname=bouncer pool_mode=session"

direct="postgresql://postgres@127.0.0.1:$PORT"
bouncer="postgresql://postgres@127.0.0.1:$BOUNCER_PORT"

run_tests() { # NAME DATABASE_URL TEST_FILE...
    local name="$1" url="$2"
    shift 2
    echo "--- $name"
    DATABASE_URL="$url" node --test --test-reporter=spec "$@"
}

# Each program once, as a user would run it, then its tests (which start from an empty queue).
for example in node-postgres kysely drizzle; do
    db=shop_${example#node-}
    [ "$example" = node-postgres ] && db=shop_pg
    echo "--- $example: the program"
    DATABASE_URL="$direct/$db" node "$example/dist/src/main.js"
    run_tests "$example: tests" "$direct/$db" "$example/dist/test/shop.test.js"
done

run_tests "node-postgres through PgBouncer (transaction pooling)" "$bouncer/shop_pg_bouncer" \
    node-postgres/dist/test/shop.test.js
echo "--- PgBouncer: prepared statements, long-poll waits, the notify hint"
DATABASE_URL="$bouncer/bouncer" SESSION_DATABASE_URL="$bouncer/bouncer_session" DIRECT_DATABASE_URL="$direct/bouncer" \
    ADMIN_DATABASE_URL="$bouncer/pgbouncer" node --test --test-reporter=spec node-postgres/dist/test/pgbouncer.test.js
