#!/usr/bin/env bash
# What a Prometheus scrape of courier's metrics costs on a large backlog: QUEUES queues holding
# MESSAGES messages in all (default 100 and 10,000,000), read through Debian's postgres_exporter
# with monitoring/postgres_exporter/courier.yaml. A benchmark: it prints figures and asserts
# nothing.
#
#   monitoring/bench-scrape.sh [WORKDIR] [PORT]      (PORT and PORT+1, loopback)
#
# Each queue gets MESSAGES/QUEUES messages: 1% delayed by a day, the rest ready; then 1% are
# leased (in flight) and a tenth of those nacked dead. Prints, for each exporter query, its
# execution time (EXPLAIN ANALYZE, best and worst of 3 after a warm-up) and the wall time of 5
# whole scrapes of /metrics. KEEP=1 keeps the loaded cluster for another run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK="${1:-/tmp/courier-bench-scrape}"
PORT="${2:-55560}"
EXPORTER_PORT=$((PORT + 1))
QUEUES="${QUEUES:-100}"
MESSAGES="${MESSAGES:-10000000}"
PER_QUEUE=$((MESSAGES / QUEUES))
# shellcheck source=bin/lib/cluster.sh
source bin/lib/cluster.sh

exporter_pid=
cleanup() {
    [ -n "$exporter_pid" ] && kill "$exporter_pid" 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then cluster_stop "$WORK/pg"; else cluster_destroy "$WORK/pg"; fi
}
trap cleanup EXIT

fresh=0
[ -f "$WORK/pg/data/PG_VERSION" ] || fresh=1
cluster_start "$WORK/pg" "$PORT" "shared_preload_libraries = 'courier'" "listen_addresses = '127.0.0.1'" \
    "shared_buffers = '1GB'" "max_wal_size = '8GB'" "checkpoint_timeout = '30min'"
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }

if [ "$fresh" = 1 ]; then
    echo "loading $QUEUES queues x $PER_QUEUE messages"
    start=$(date +%s)
    psql -c "CREATE EXTENSION courier"
    psql -c "SELECT courier.create_queue(format('bench%s', q)) FROM generate_series(1, $QUEUES) q" >/dev/null
    delayed=$((PER_QUEUE / 100))
    ready=$((PER_QUEUE - delayed))
    for q in $(seq 1 "$QUEUES"); do
        psql <<SQL
SELECT count(*) FROM generate_series(1, $ready / 1000) b,
    LATERAL courier.enqueue_batch('bench$q', (SELECT array_agg(jsonb_build_object('b', b, 'n', i)) FROM generate_series(1, 1000) i));
SELECT count(*) FROM generate_series(1, $delayed / 1000) b,
    LATERAL courier.enqueue_batch('bench$q', (SELECT array_agg(jsonb_build_object('b', b, 'n', i)) FROM generate_series(1, 1000) i),
                                  delay => '1 day');
SELECT count(courier.nack(l.receipt, dead => true))
FROM courier.lease('bench$q', $delayed, visibility_timeout => '12 hours') l WHERE l.id % 10 = 0;
SQL
    done >/dev/null
    psql -c "VACUUM (ANALYZE) courier.message" -c "CHECKPOINT"
    echo "loaded in $(($(date +%s) - start)) s; table and indexes: $(psql -Atc "SELECT pg_size_pretty(pg_total_relation_size('courier.message'))")"
fi
psql -Atc "SELECT 'messages: ' || count(*) FROM courier.message"

echo
echo "== each exporter query: execution time in ms (EXPLAIN ANALYZE; min / max of 3 after a warm-up)"
/usr/bin/python3 - "$ROOT/monitoring/postgres_exporter/courier.yaml" >"$WORK/queries.tsv" <<'PY'
import sys, yaml
for key, spec in yaml.safe_load(open(sys.argv[1])).items():
    print(key + "\t" + " ".join(spec["query"].split()))
PY
while IFS=$'\t' read -r key query; do
    times=()
    for run in 0 1 2 3; do
        t=$(psql -Atc "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) $query" | /usr/bin/python3 -c 'import json,sys; print(round(json.load(sys.stdin)[0]["Execution Time"], 1))')
        [ "$run" = 0 ] || times+=("$t")
    done
    printf '%-28s %s\n' "$key" "$(printf '%s\n' "${times[@]}" | sort -n | sed -n '1p;$p' | paste -sd/)"
done <"$WORK/queries.tsv"

echo
echo "== whole scrapes of /metrics (prometheus-postgres-exporter 0.11.1, default metrics off), 20 s apart:"
echo "   the shipped file caches its queries for 30 s, so every other one runs them"
DATA_SOURCE_NAME="postgresql://postgres@127.0.0.1:$PORT/postgres?sslmode=disable" \
    prometheus-postgres-exporter --extend.query-path="$ROOT/monitoring/postgres_exporter/courier.yaml" \
    --disable-default-metrics --disable-settings-metrics \
    --web.listen-address="127.0.0.1:$EXPORTER_PORT" --log.level=warn >"$WORK/exporter.log" 2>&1 &
exporter_pid=$!
for _ in $(seq 50); do
    curl -sf -o /dev/null "http://127.0.0.1:$EXPORTER_PORT/" && break
    sleep 0.2
done
for run in 1 2 3 4 5; do
    wall=$(curl -sf -o "$WORK/metrics.txt" -w '%{time_total}' "http://127.0.0.1:$EXPORTER_PORT/metrics")
    echo "scrape $run: ${wall}s wall, exporter says $(grep '^pg_exporter_last_scrape_duration_seconds' "$WORK/metrics.txt" | awk '{print $2}') s, $(grep -c '^courier_' "$WORK/metrics.txt") courier samples"
    [ "$run" = 5 ] || sleep 20
done
grep -q '^courier_queue_message_counts_capped{.*} 1$' "$WORK/metrics.txt" && echo "(counts are capped: each count stops at 10,000 per priority level)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
