#!/usr/bin/env bash
# The monitoring end to end: alert rules and their unit tests (which must be able to fail), the
# dashboard's structure and PromQL, and a throwaway cluster with known traffic watched through
# Debian's prometheus-postgres-exporter and Prometheus on loopback, every event line, exported
# sample and dashboard expression checked (monitoring/check.py). Then the same cluster without
# courier preloaded: the counters disappear rather than turn NaN.
#
#   monitoring/test.sh WORKDIR PORT     uses PORT .. PORT+4 on 127.0.0.1
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK="$1"
PORT="$2"
EXPORTER_PORT=$((PORT + 1))
PROMETHEUS_PORT=$((PORT + 2))
EXPORTER2_PORT=$((PORT + 3))
QUERY_EXPORTER_PORT=$((PORT + 4))
CHECK=(python3 "$ROOT/monitoring/check.py")
# shellcheck source=bin/lib/cluster.sh
source bin/lib/cluster.sh

rm -rf "$WORK"
mkdir -p "$WORK"
chmod 755 "$WORK"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    cluster_destroy "$WORK/pg" || true
}
trap cleanup EXIT
say() { printf -- '-- %s\n' "$*"; }

say "alert rules: promtool check rules, promtool test rules, and planted faults the tests must catch"
promtool check rules monitoring/prometheus/courier-alerts.yml
(cd monitoring/prometheus && promtool test rules courier-alerts.test.yml)
"${CHECK[@]}" mutants monitoring/prometheus/courier-alerts.yml monitoring/prometheus/courier-alerts.test.yml "$WORK/mutants"

say "dashboard: structure, and every expression parsed by promtool"
"${CHECK[@]}" dashboard monitoring/grafana/courier.json "$WORK/dashboard-rules.yml"
promtool check rules "$WORK/dashboard-rules.yml"

say "a cluster with courier preloaded and every event logged, and known traffic"
cluster_start "$WORK/pg" "$PORT" "shared_preload_libraries = 'courier'" "listen_addresses = '127.0.0.1'" \
    "courier.log_events = 'all'"
psql -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE shop"
psql -X -q -v ON_ERROR_STOP=1 -d shop -v ids="$WORK/ids.json" -f monitoring/test-traffic.sql >/dev/null
# Only a superuser may change what is logged.
if psql -X -q -d shop -U ops -c "SET courier.log_events = 'none'" 2>"$WORK/set.err"; then
    echo "a non-superuser could turn event logging off" >&2
    exit 1
fi
grep -q 'permission denied to set parameter "courier.log_events"' "$WORK/set.err" || { cat "$WORK/set.err"; exit 1; }
"${CHECK[@]}" events "$WORK/pg/server.log" "$WORK/ids.json"

say "prometheus-postgres-exporter $(prometheus-postgres-exporter --version 2>&1 | awk 'NR==1 {print $3}') with courier.yaml, as a role with only the documented grants"
start_exporter() {
    DATA_SOURCE_NAME="postgresql://courier_exporter@127.0.0.1:$PORT/shop?sslmode=disable" \
        prometheus-postgres-exporter --extend.query-path="$ROOT/monitoring/postgres_exporter/courier.yaml" \
        --web.listen-address="127.0.0.1:$1" >"$WORK/exporter-$1.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        curl -sf -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    cat "$WORK/exporter-$1.log" >&2
    return 1
}
start_exporter "$EXPORTER_PORT"
curl -sf "http://127.0.0.1:$EXPORTER_PORT/metrics" >"$WORK/metrics.txt"
grep -q '^pg_up 1$' "$WORK/metrics.txt" || { cat "$WORK/exporter-$EXPORTER_PORT.log"; exit 1; }
"${CHECK[@]}" metrics "$WORK/metrics.txt" "$WORK/ids.json"
grep -E '^(# (HELP|TYPE) )?courier_' "$WORK/metrics.txt" >"$WORK/courier-metrics.txt"
lint=$(promtool check metrics <"$WORK/courier-metrics.txt" 2>&1) || { echo "$lint"; exit 1; }
[ -z "$lint" ] || { echo "promtool check metrics: $lint"; exit 1; }
echo "promtool check metrics: clean ($(grep -c '^# TYPE' "$WORK/courier-metrics.txt") metrics)"

say "Prometheus $(prometheus --version 2>&1 | awk 'NR==1 {print $3}') scraping the exporter, with the alert rules"
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/monitoring/prometheus/courier-alerts.yml
scrape_configs:
  - job_name: courier
    static_configs:
      - targets: ['127.0.0.1:$EXPORTER_PORT']
EOF
promtool check config "$WORK/prometheus.yml" >/dev/null
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus-data" \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" >"$WORK/prometheus.log" 2>&1 &
pids+=($!)
for _ in $(seq 150); do
    curl -sf -o /dev/null "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" && break
    sleep 0.2
done
"${CHECK[@]}" prometheus "http://127.0.0.1:$PROMETHEUS_PORT" monitoring/grafana/courier.json ||
    { tail -n 20 "$WORK/prometheus.log"; exit 1; }

say "query-exporter from PyPI (monitoring/query-exporter/requirements.txt) with its courier.yaml: the same samples"
python3 -m venv "$WORK/query-exporter"
"$WORK/query-exporter/bin/pip" install -q --disable-pip-version-check -r monitoring/query-exporter/requirements.txt
COURIER_DSN="postgresql://courier_exporter@127.0.0.1:$PORT/shop" "$WORK/query-exporter/bin/query-exporter" \
    --config monitoring/query-exporter/courier.yaml -H 127.0.0.1 -p "$QUERY_EXPORTER_PORT" \
    >"$WORK/query-exporter.log" 2>&1 &
pids+=($!)
# Its queries run when it starts, then every 30 s.
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$QUERY_EXPORTER_PORT/metrics" >"$WORK/metrics-query-exporter.txt" 2>/dev/null &&
        grep -q '^courier_queue_messages{' "$WORK/metrics-query-exporter.txt" &&
        grep -q '^courier_queue_dead_letter_sources{' "$WORK/metrics-query-exporter.txt" &&
        grep -q '^courier_queue_enqueued_total{' "$WORK/metrics-query-exporter.txt" && break
    sleep 0.2
done
"${CHECK[@]}" metrics "$WORK/metrics-query-exporter.txt" "$WORK/ids.json" || { tail -n 20 "$WORK/query-exporter.log"; exit 1; }

say "the same cluster without courier preloaded"
cluster_stop "$WORK/pg"
_as_owner "$PG_BINDIR/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -o "-c shared_preload_libraries=" -w -t 60 start >/dev/null
start_exporter "$EXPORTER2_PORT"
curl -sf "http://127.0.0.1:$EXPORTER2_PORT/metrics" >"$WORK/metrics-unpreloaded.txt"
"${CHECK[@]}" unpreloaded "$WORK/metrics-unpreloaded.txt"
