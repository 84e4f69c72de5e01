#!/usr/bin/env bash
# Upgrades from every released version (sql/courier--X.Y.Z.sql) to the current one, on a
# throwaway cluster with courier preloaded, and checks that
#   1. a database created at the old version keeps working with the new library before it is
#      updated (before.sql builds every kind of state, mixed.sql uses it);
#   2. after ALTER EXTENSION courier UPDATE the extension's catalog equals a fresh install's
#      (catalog.sql, compared with diff: a change to the SQL surface that its upgrade script
#      forgets fails here);
#   3. every piece of old state still works (after.sql), and the upgraded database survives a
#      pg_dump/pg_restore round trip with its receipts.
#   4. the locks the update takes on courier's relations are the documented ones (locks.sh).
# Expects courier installed with bin/install. Usage: tests/upgrade/run.sh WORK_DIR PORT
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK="$1"
PORT="$2"
# shellcheck source=bin/lib/cluster.sh
source bin/lib/cluster.sh
mkdir -p "$WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
cluster_start "$WORK/pg" "$PORT" "shared_preload_libraries = 'courier'"
trap 'cluster_destroy "$WORK/pg"' EXIT

fail() { echo "upgrade test: $*" >&2; exit 1; }
psql_() { psql -X -v ON_ERROR_STOP=1 -qAt "$@"; }
# Runs a check script: every row it returns must be t.
check() {
    local db="$1" file="$2" out bad
    shift 2
    out=$(psql_ -d "$db" "$@" -f "$file" 2>&1) || { echo "$out" >&2; fail "$file failed in $db"; }
    bad=$(echo "$out" | grep -v '^t$' | grep -v '^$' || true)
    [ -z "$bad" ] || { echo "$out" >&2; fail "$file: a check did not hold in $db"; }
    echo "  $(basename "$file"): $(echo "$out" | grep -c '^t$') checks hold"
}
snapshot() { # every row of courier's tables, in a stable order
    psql_ -d "$1" -c "
        SELECT 'queue', q.queue_id, q.name, q.visibility_timeout, q.max_attempts, q.dead_letter_queue_id,
               q.retry_base, q.retry_max, q.retry_jitter, q.dedup_window, q.retention, q.notify,
               q.min_priority, q.max_priority, q.owner FROM courier.queue q ORDER BY q.queue_id;
        SELECT 'message', m.* FROM courier.message m ORDER BY m.id;
        SELECT 'dedup', d.* FROM courier.dedup d ORDER BY d.queue_id, d.key;
        SELECT 'completed', c.* FROM courier.completed c ORDER BY c.id;
        SELECT 'grant', g.* FROM courier.queue_grant g ORDER BY 2, 3, 4;"
}

# Every C symbol any shipped script binds must exist in the installed library: a user replaces
# the package first and updates each database later, and meanwhile the old SQL calls the new
# library (mixed.sql exercises the common ones; this covers all of them).
library="$("$PG_BINDIR/pg_config" --pkglibdir)/courier.so"
for symbol in $(grep -ho "'MODULE_PATHNAME', '[A-Za-z0-9_]*'" sql/courier--*.sql | cut -d"'" -f4 | sort -u); do
    nm -D --defined-only "$library" | grep -q " ${symbol}\$" || fail "$library lacks $symbol, which a shipped script binds"
    nm -D --defined-only "$library" | grep -q " pg_finfo_${symbol}\$" || fail "$library lacks pg_finfo_$symbol"
done
echo "every symbol the shipped scripts bind is in $library"

new_version=$(psql_ -d postgres -c "SELECT default_version FROM pg_available_extensions WHERE name = 'courier'")
versions=$(ls sql/courier--*.sql | sed -n 's|^sql/courier--\([0-9][0-9.]*\)\.sql$|\1|p' | sort -V)
[ -n "$versions" ] || fail "no frozen install scripts in sql/"
psql_ -d postgres -c "CREATE DATABASE fresh" >/dev/null
psql_ -d fresh -c "CREATE EXTENSION courier" >/dev/null
psql_ -d fresh -f tests/upgrade/catalog.sql >"$WORK/fresh.catalog"

for old in $versions; do
    [ "$old" != "$new_version" ] || continue
    echo "upgrade from $old to $new_version"
    path=$(psql_ -d postgres -c "SELECT path FROM pg_extension_update_paths('courier')
                                 WHERE source = '$old' AND target = '$new_version'")
    [ -n "$path" ] || fail "no update path from $old to $new_version"

    # The catalog: a database that only installed the old version and updated.
    db="clean_${old//./_}"
    psql_ -d postgres -c "CREATE DATABASE $db" >/dev/null
    psql_ -d "$db" -c "CREATE EXTENSION courier VERSION '$old'" >/dev/null
    bash tests/upgrade/locks.sh "$db" "$old"
    psql_ -d "$db" -c "ALTER EXTENSION courier UPDATE" >/dev/null
    psql_ -d "$db" -f tests/upgrade/catalog.sql >"$WORK/$db.catalog"
    if ! diff -u "$WORK/fresh.catalog" "$WORK/$db.catalog" >"$WORK/$db.diff"; then
        cat "$WORK/$db.diff" >&2
        fail "after ALTER EXTENSION UPDATE from $old the catalog differs from a fresh install (- fresh, + upgraded)"
    fi
    echo "  catalog equals a fresh install's ($(wc -l <"$WORK/fresh.catalog") lines compared)"
    retired=$(psql_ -d "$db" -c "SELECT string_agg(p.oid::regprocedure::text, ', ' ORDER BY 1) FROM pg_proc p
                                 WHERE p.pronamespace = 'courier'::regnamespace AND p.proname LIKE '\_retired\_%'")
    echo "  retired (renamed for calls planned before the update; the next release drops them): ${retired:-none}"

    # A C symbol both versions bind must be declared alike by both: the old SQL keeps calling it
    # until the update, and a symbol whose arguments or result changed would be handed values it
    # does not expect. A changed declaration gets a new symbol (CONTRIBUTING.md).
    old_db="old_${old//./_}"
    psql_ -d postgres -c "CREATE DATABASE $old_db" >/dev/null
    psql_ -d "$old_db" -c "CREATE EXTENSION courier VERSION '$old'" >/dev/null
    declarations="SELECT p.prosrc || E'\\t' || pg_get_function_identity_arguments(p.oid) || ' -> '
                         || pg_get_function_result(p.oid) || ' strict=' || p.proisstrict
                  FROM pg_proc p WHERE p.probin = '\$libdir/courier' ORDER BY 1"
    psql_ -d "$old_db" -c "$declarations" | sort >"$WORK/$old_db.symbols"
    psql_ -d fresh -c "$declarations" | sort >"$WORK/fresh.symbols"
    changed=$(join -t $'\t' "$WORK/$old_db.symbols" "$WORK/fresh.symbols" \
              | awk -F'\t' '$2 != $3 {print "  " $1 ": " $2 "  became  " $3}')
    [ -z "$changed" ] || { echo "$changed" >&2; fail "symbols bound by $old and by $new_version with different declarations"; }
    echo "  the $(wc -l <"$WORK/$old_db.symbols") symbols $old binds keep their declarations or are not bound any more"

    # The state: a database that lived at the old version, then got the new library, then updated.
    db="state_${old//./_}"
    psql_ -d postgres -c "SET client_min_messages = warning; DROP ROLE IF EXISTS up_admin, up_producer, up_consumer" >/dev/null
    psql_ -d postgres -c "CREATE DATABASE $db" >/dev/null
    psql_ -d "$db" -c "CREATE EXTENSION courier VERSION '$old'" >/dev/null
    check "$db" tests/upgrade/before.sql
    check "$db" tests/upgrade/mixed.sql -v old_version="$old"
    psql_ -d "$db" -c "ALTER EXTENSION courier UPDATE" >/dev/null
    check "$db" tests/upgrade/after.sql -v new_version="$new_version"

    # pg_dump and pg_restore of the upgraded database: the same rows, and a receipt leased before
    # the upgrade still acks in the copy.
    pg_dump -Fc -f "$WORK/$db.dump" "$db" 2>"$WORK/$db.dump.err"
    [ ! -s "$WORK/$db.dump.err" ] || { cat "$WORK/$db.dump.err" >&2; fail "pg_dump printed warnings"; }
    psql_ -d postgres -c "CREATE DATABASE ${db}_restored" >/dev/null
    pg_restore -d "${db}_restored" --exit-on-error "$WORK/$db.dump"
    snapshot "$db" >"$WORK/$db.rows"
    snapshot "${db}_restored" >"$WORK/${db}_restored.rows"
    diff -u "$WORK/$db.rows" "$WORK/${db}_restored.rows" >&2 || fail "restored rows differ"
    [ "$(psql_ -d "${db}_restored" -c "SELECT courier.ack(receipt) FROM upgrade_state.receipt WHERE name = 'dump'")" = t ] \
        || fail "a receipt leased before the upgrade does not ack after pg_restore"
    # Grants users made survive the upgrade and then the dump (pg_dump leaves out only the
    # extension's own initial privileges).
    [ "$(psql_ -d "${db}_restored" -c "SELECT has_function_privilege('up_admin', 'courier.stats(text)', 'EXECUTE')
                                           AND has_table_privilege('up_admin', 'courier.queue_stats', 'SELECT')")" = t ] \
        || fail "the admin's grants on stats and queue_stats were lost by pg_dump/pg_restore"
    echo "  pg_dump/pg_restore: $(wc -l <"$WORK/$db.rows") rows equal, an old receipt acks in the copy"
done
echo "upgrade test: every released version upgrades to $new_version"
