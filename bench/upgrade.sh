#!/usr/bin/env bash
# How long ALTER EXTENSION courier UPDATE takes on a database holding 1,000,000 messages, and
# whether it rewrites any of courier's relations.
#
#   bench/upgrade.sh [--messages N] [--from VERSION] [--port PORT] [--dir DIR] [--out DIR]
#
# On a throwaway cluster, builds a database at VERSION (default: the oldest release in sql/) with
# courier's own API, as that release's users would have: N messages in courier.message (default
# 1,000,000) — 70 % ready at three priorities, 10 % delayed by a day, 10 % in flight (leased for 12
# hours), 9 % dead in a dead-letter queue, 1 % enqueued with dedup keys (courier.dedup) — and N/100
# completed messages kept by retention (courier.completed). Then, after VACUUM ANALYZE and a
# CHECKPOINT:
#   - the same update on an empty database, for comparison;
#   - five updates rolled back (BEGIN; ALTER EXTENSION courier UPDATE; ROLLBACK), then the one
#     that commits, each timed by the server (psql's \timing), with the WAL it wrote;
#   - the relfilenode of every courier relation (tables, indexes, TOAST, sequences) before and
#     after: the script fails if one changed, since a rewrite holds an ACCESS EXCLUSIVE lock for
#     as long as it takes to copy the table.
# It reports figures and asserts none of them. Expects courier installed with bin/install (for
# another installation, PG_BINDIR names its bin directory).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bin/lib/cluster.sh
source bin/lib/cluster.sh

MESSAGES=1000000
FROM=$(ls sql/courier--*.sql | sed -n 's|^sql/courier--\([0-9][0-9.]*\)\.sql$|\1|p' | sort -V | head -1)
PORT=54460
DIR=/tmp/courier-bench-upgrade
OUT=
while [ $# -gt 0 ]; do
    case "$1" in
        --messages) MESSAGES="$2"; shift ;;
        --from) FROM="$2"; shift ;;
        --port) PORT="$2"; shift ;;
        --dir) DIR="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
# The same ~200-byte payload as bench/run.
PAYLOAD='{"order_id": 1234567, "customer": "cust-000042", "currency": "EUR", "items": [{"sku": "SKU-12345", "qty": 2, "price": 19.99}, {"sku": "SKU-67890", "qty": 1, "price": 5.49}], "note": "leave at the door, ring twice"}'

report=$(mktemp /tmp/courier-bench-upgrade.XXXXXX)
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
say() { echo "$*" | tee -a "$report"; }
q() { psql -X -v ON_ERROR_STOP=1 -qAt -d "${DB:-postgres}" "$@"; }

cluster_destroy "$DIR" 2>/dev/null || true
cluster_start "$DIR" "$PORT" "shared_preload_libraries = 'courier'" "shared_buffers = 1GB" \
    "max_wal_size = 4GB" "checkpoint_timeout = 30min"
trap 'cluster_destroy "$DIR"; rm -f "$report"' EXIT
to=$(q -c "SELECT default_version FROM pg_available_extensions WHERE name = 'courier'")
[ "$FROM" != "$to" ] || { echo "nothing to update: $FROM is the default version" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# The database at the old version. Batches of 1000 (the API's limit), a transaction each.
# ---------------------------------------------------------------------------------------------
pct() { echo $(( MESSAGES * $1 / 100 )); }
n_dead=$(pct 9) n_flight=$(pct 10) n_delayed=$(pct 10) n_keyed=$(pct 1)
n_ready=$(( MESSAGES - n_dead - n_flight - n_delayed - n_keyed ))
n_completed=$(( MESSAGES / 100 ))
q -c "CREATE DATABASE up"
export DB=up
q -c "CREATE EXTENSION courier VERSION '$FROM'"
q -c "SELECT courier.create_queue('orders_dlq');
      SELECT courier.create_queue('orders', max_attempts => 5, dead_letter_queue => 'orders_dlq',
                                  dedup_window => '7 days');
      SELECT courier.create_queue('kept', retention => '7 days')" >/dev/null
# enqueue QUEUE COUNT [ARGS]: COUNT messages in batches of 1000 (the last one shorter), each call
# with ARGS (SQL, may use i, the batch number).
enqueue() {
    q -c "DO \$\$ BEGIN
            FOR i IN 0..($2 - 1) / 1000 LOOP
                PERFORM courier.enqueue_batch('$1', array_fill('$PAYLOAD'::jsonb, ARRAY[least(1000, $2 - i * 1000)])${3:-});
                COMMIT;
            END LOOP;
          END \$\$"
}
# lease_then QUEUE COUNT STATEMENT: leases COUNT messages, 1000 at a time for 12 hours, and runs
# STATEMENT on each batch's receipts (r, a uuid[]).
lease_then() {
    q -c "DO \$\$ DECLARE r uuid[]; BEGIN
            FOR i IN 0..($2 - 1) / 1000 LOOP
                SELECT array_agg(receipt) INTO r FROM courier.lease('$1', least(1000, $2 - i * 1000), '12 hours');
                $3;
                COMMIT;
            END LOOP;
          END \$\$"
}
started=$(date +%s)
log "building $MESSAGES messages at $FROM: $n_dead dead, $n_flight in flight, $n_ready ready, $n_delayed delayed, $n_keyed with dedup keys; $n_completed completed"
# Oldest first: a lease takes the oldest ready messages, so the ones to kill and to hold go in first.
enqueue orders "$n_dead"
lease_then orders "$n_dead" "PERFORM courier.nack_batch(r, dead => true, error => 'cannot parse')"
enqueue orders "$n_flight"
lease_then orders "$n_flight" "NULL"
enqueue orders "$n_ready" ", priority => (i % 3) - 1"
enqueue orders "$n_delayed" ", delay => '1 day'"
enqueue orders "$n_keyed" ", dedup_keys => ARRAY(SELECT 'key-' || i || '-' || k FROM generate_series(1, least(1000, $n_keyed - i * 1000)) AS k)"
enqueue kept "$n_completed"
lease_then kept "$n_completed" "PERFORM courier.ack_batch(r)"
q -c "VACUUM ANALYZE" -c "CHECKPOINT"
built=$(( $(date +%s) - started ))

counts=$(q -F' ' -c "SELECT count(*) FILTER (WHERE dead_at IS NOT NULL),
                            count(*) FILTER (WHERE dead_at IS NULL AND leased_until > now()),
                            count(*) FILTER (WHERE dead_at IS NULL AND visible_at > now()),
                            count(*) FROM courier.message")
read -r c_dead c_flight c_delayed c_total <<<"$counts"
c_dedup=$(q -c "SELECT count(*) FROM courier.dedup")
c_completed=$(q -c "SELECT count(*) FROM courier.completed")
sizes=$(q -c "SELECT string_agg(format('%s %s', c.relname, pg_size_pretty(pg_total_relation_size(c.oid))), ', ' ORDER BY c.relname)
              FROM pg_class c WHERE c.relnamespace = 'courier'::regnamespace AND c.relkind = 'r'")

# Every relation of the extension with its relfilenode: its tables, their indexes and TOAST
# tables (and theirs, named by their table: their own names hold an OID), its sequences.
RELFILENODES="WITH RECURSIVE rel(oid) AS (
    SELECT objid FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND classid = 'pg_class'::regclass
      AND deptype = 'e' AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'courier')
    UNION
    SELECT x.oid FROM rel, LATERAL (SELECT indexrelid FROM pg_index WHERE indrelid = rel.oid
                                    UNION ALL
                                    SELECT reltoastrelid FROM pg_class WHERE oid = rel.oid AND reltoastrelid <> 0) AS x(oid))
SELECT CASE WHEN c.relnamespace = 'pg_toast'::regnamespace THEN COALESCE(
                (SELECT 'TOAST-of-' || o.oid::regclass FROM pg_class o WHERE o.reltoastrelid = c.oid),
                (SELECT 'TOAST-index-of-' || o.oid::regclass FROM pg_index i JOIN pg_class o ON o.reltoastrelid = i.indrelid
                 WHERE i.indexrelid = c.oid))
            ELSE c.oid::regclass::text END || ' ' || c.relfilenode
FROM rel JOIN pg_class c USING (oid)
WHERE c.relkind IN ('r', 'i', 't', 'S') ORDER BY 1"

# timed_update DB [ROLLBACK]: the server-side time of ALTER EXTENSION courier UPDATE in ms, and the
# WAL its transaction wrote in bytes.
timed_update() {
    DB="$1" q -f - <<EOF | awk '/^Time:/ {ms = $2} /^wal / {wal = $2} END {print ms, wal}'
SELECT pg_current_wal_insert_lsn() AS lsn0 \gset
BEGIN;
\timing on
ALTER EXTENSION courier UPDATE;
\timing off
${2:-COMMIT};
SELECT 'wal ' || pg_wal_lsn_diff(pg_current_wal_insert_lsn(), :'lsn0');
EOF
}

# An empty database, for comparison.
DB=postgres q -c "CREATE DATABASE empty"
DB=empty q -c "CREATE EXTENSION courier VERSION '$FROM'"
# Captured before read splits them: a failed update must stop the script (set -e), and a command
# substitution inside a here-string would lose its status.
out=$(timed_update empty)
read -r empty_ms empty_wal <<<"$out"

before=$(q -c "$RELFILENODES")
rolled_back=()
for _ in 1 2 3 4 5; do
    out=$(timed_update up ROLLBACK)
    read -r ms _ <<<"$out"
    rolled_back+=("$ms")
done
out=$(timed_update up)
read -r update_ms update_wal <<<"$out"
after=$(q -c "$RELFILENODES")
version=$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'courier'")
# Rewritten: a relation that existed before with another relfilenode after. Relations the update
# creates or drops are listed apart.
rewritten=$(join <(echo "$before") <(echo "$after") | awk '$2 != $3 {print $1 ": " $2 " -> " $3}')
created=$(join -v 2 <(echo "$before") <(echo "$after") | cut -d' ' -f1 | paste -sd ' ')
dropped=$(join -v 1 <(echo "$before") <(echo "$after") | cut -d' ' -f1 | paste -sd ' ')
sorted=$(printf "%s\n" "${rolled_back[@]}" | sort -g | paste -sd " ")

say "# ALTER EXTENSION courier UPDATE on $MESSAGES messages, $FROM -> $to"
say ""
say "$(date -u +%F), $(nproc) cores (load average $(cut -d' ' -f1-3 /proc/loadavg) when the report was written), PostgreSQL $(q -c 'SHOW server_version'), shared_buffers 1GB."
say ""
say "| | |"
say "|---|---|"
say "| courier.message | $c_total rows: $c_dead dead, $c_flight in flight, $c_delayed delayed, the rest ready |"
say "| courier.dedup, courier.completed | $c_dedup keys, $c_completed completed messages |"
say "| sizes (with indexes and TOAST) | $sizes |"
say "| built in | $built s (through courier's API, batches of 1000) |"
say "| **update that committed** | **$update_ms ms**, $update_wal bytes of WAL written in the cluster meanwhile |"
say "| 5 updates rolled back (sorted) | $sorted ms |"
say "| the same update on an empty database | $empty_ms ms, $empty_wal bytes of WAL |"
say "| extversion after | $version |"
if [ -z "$rewritten" ]; then
    say "| relations rewritten | none: the relfilenodes of all $(wc -l <<<"$before") of courier's relations (tables, indexes, TOAST, sequences) are unchanged |"
else
    say "| relations rewritten | **$(wc -l <<<"$rewritten")**: $(paste -sd ';' <<<"$rewritten") |"
fi
say "| relations the update created | ${created:-none} |"
say "| relations the update dropped | ${dropped:-none} |"
if [ -n "$OUT" ]; then
    mkdir -p "$OUT"
    cp "$report" "$OUT/results.md"
    { echo "before"; echo "$before"; echo "after"; echo "$after"; } >"$OUT/relfilenodes.txt"
fi
if [ -n "$rewritten" ]; then
    echo "bench/upgrade.sh: the update rewrote courier's relations (relation: relfilenode before -> after):" >&2
    echo "$rewritten" >&2
    exit 1
fi
[ "$version" = "$to" ] || { echo "bench/upgrade.sh: extversion is $version after the update, not $to" >&2; exit 1; }
