#!/usr/bin/env bash
# courier-client's Worker against pgbench, side by side on one throwaway PostgreSQL 15 cluster
# with bench/run's settings and payload:
#
#   bench/worker.sh [--quick] [--out DIR]
#
#   A  the worker (empty handler, concurrency 8, batch size 1: lease 1 + ack) vs scenario 2's
#      pgbench script (bench/scripts/courier/consume.sql, 8 clients)
#   B  the worker (concurrency 4, batch size 100: lease 100 + ack_batch) vs scenario 4's
#      (consume_batch.sql, 4 clients)
#   C  an idle worker (concurrency 8, long-poll wait 10 s) on an empty queue: CPU of the worker
#      process and of its 8 backends over 30 s, from /proc/<pid>/stat
#
# Each throughput run drains the same backlog; pgbench and the worker alternate which goes
# first. Reports figures (and the load average around each run: the machine may be shared);
# asserts nothing. courier must be installed in PG_BINDIR's PostgreSQL (bin/install).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
source bin/lib/cluster.sh

QUICK=0
OUT="bench/results/worker-$(date -u +%Y-%m-%d)"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --out) OUT="$2"; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    RUNS=1; CONSUME_T=2000; CONSUME_BATCH_T=150; IDLE_SECONDS=10
else
    RUNS=3; CONSUME_T=8000; CONSUME_BATCH_T=1000; IDLE_SECONDS=30
fi
PAYLOAD='{"order_id": 1234567, "customer": "cust-000042", "currency": "EUR", "items": [{"sku": "SKU-12345", "qty": 2, "price": 19.99}, {"sku": "SKU-67890", "qty": 1, "price": 5.49}], "note": "leave at the door, ring twice"}'
DIR=/tmp/courier-bench-worker
PORT="${PORT:-54452}"
mkdir -p "$OUT"
RAW="$OUT/raw.jsonl"
: >"$RAW"
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/run.log"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

log "building courier-client-harness (release)"
cargo build --release -q -p courier-client-harness
TARGET=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
HARNESS="$TARGET/release/courier-client-harness"

cluster_destroy "$DIR" 2>/dev/null || true
cluster_start "$DIR" "$PORT" \
    "shared_buffers = 1GB" "shared_preload_libraries = 'courier'" \
    "fsync = on" "synchronous_commit = on" "max_connections = 200"
SCRIPTS=$(mktemp -d /tmp/courier-bench-worker-scripts.XXXXXX)
trap 'cluster_destroy "$DIR"; rm -rf "$SCRIPTS"' EXIT
export PGDATABASE=bench
createdb bench
q() { psql -X -qAt -v ON_ERROR_STOP=1 -c "$1"; }
q "CREATE EXTENSION courier"
q "SELECT courier.create_queue('bench', visibility_timeout => '30 seconds')" >/dev/null
CONNINFO="host=$DIR port=$PORT user=postgres dbname=bench"
for s in consume consume_batch; do
    sed "s|@PAYLOAD@|$PAYLOAD|g" "bench/scripts/courier/$s.sql" >"$SCRIPTS/$s.sql"
done

reset() {
    q "TRUNCATE courier.message, courier.dedup, courier.completed"
    q "VACUUM ANALYZE"
    q "CHECKPOINT"
}
fill() {
    local n=$(( ($1 + 999) / 1000 ))
    q "DO \$\$ BEGIN FOR i IN 1..$n LOOP PERFORM courier.enqueue_batch('bench', array_fill('$PAYLOAD'::jsonb, ARRAY[1000])); COMMIT; END LOOP; END \$\$"
    q "VACUUM ANALYZE"
    q "CHECKPOINT"
}
record() { # case system run msgs_per_s load_before load_after
    echo "{\"case\": \"$1\", \"system\": \"$2\", \"run\": $3, \"msgs_per_s\": $4, \"load_before\": \"$5\", \"load_after\": \"$6\"}" >>"$RAW"
    log "$1 run $3 $2: $(printf '%.0f' "$4") msg/s (load average before: $5, after: $6)"
}

# throughput CASE CLIENTS TRANSACTIONS PER_TX SCRIPT BATCH
throughput() {
    local case=$1 clients=$2 t=$3 per_tx=$4 script=$5 batch=$6
    local msgs=$(( clients * t * per_tx ))
    for run in $(seq "$RUNS"); do
        local order="pgbench worker"
        [ $((run % 2)) = 0 ] && order="worker pgbench"
        for system in $order; do
            reset
            fill $(( msgs + 1000 ))
            local before after rate out
            before=$(load)
            if [ "$system" = pgbench ]; then
                out=$(pgbench -n -M prepared -j 2 -c "$clients" -t "$t" -f "$SCRIPTS/$script.sql" 2>&1) || { echo "$out" >&2; exit 1; }
                rate=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
                rate=$(python3 -c "print($rate * $per_tx)")
            else
                out=$("$HARNESS" bench --conninfo "$CONNINFO" --queue bench --concurrency "$clients" \
                    --batch "$batch" --messages "$msgs")
                rate=$(echo "$out" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["msgs_per_s"])')
            fi
            after=$(load)
            record "$case" "$system" "$run" "$rate" "$before" "$after"
        done
    done
}

log "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(load)"
log "A: lease 1 + ack, 8 clients / concurrency 8, $(( 8 * CONSUME_T )) messages per run"
throughput A 8 "$CONSUME_T" 1 consume 1
log "B: lease 100 + ack_batch, 4 clients / concurrency 4 x batch 100, $(( 4 * CONSUME_BATCH_T * 100 )) messages per run"
throughput B 4 "$CONSUME_BATCH_T" 100 consume_batch 100

log "C: idle worker, concurrency 8, wait 10 s, empty queue, ${IDLE_SECONDS} s"
reset
"$HARNESS" bench --conninfo "$CONNINFO" --queue bench --concurrency 8 --batch 1 --messages 0 --wait-ms 10000 \
    >"$OUT/idle.out" 2>&1 &
idle=$!
sleep 3
ticks() { # pids... -> utime + stime, in clock ticks
    local total=0 pid
    for pid in "$@"; do
        # Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
        total=$(( total + $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}') ))
    done
    echo $total
}
backends=$(q "SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE application_name = 'courier-bench-worker'")
before_load=$(load)
w0=$(ticks "$idle"); b0=$(ticks $backends)
sleep "$IDLE_SECONDS"
w1=$(ticks "$idle"); b1=$(ticks $backends)
after_load=$(load)
kill -TERM "$idle"
wait "$idle" || true
hz=$(getconf CLK_TCK)
python3 - "$w0" "$w1" "$b0" "$b1" "$hz" "$IDLE_SECONDS" "$(echo $backends | wc -w)" "$before_load" "$after_load" >>"$RAW" <<'EOF'
import json, sys
w0, w1, b0, b1, hz, secs, n = map(int, sys.argv[1:8])
print(json.dumps({"case": "C", "seconds": secs, "backends": n,
                  "worker_cpu_s": (w1 - w0) / hz, "backends_cpu_s": (b1 - b0) / hz,
                  "worker_pct_of_core": 100.0 * (w1 - w0) / hz / secs,
                  "backends_pct_of_core": 100.0 * (b1 - b0) / hz / secs,
                  "load_before": sys.argv[8], "load_after": sys.argv[9]}))
EOF
log "C: worker $(( w1 - w0 )) ticks, its $(echo $backends | wc -w) backends $(( b1 - b0 )) ticks in ${IDLE_SECONDS} s ($hz ticks/s)"

python3 - "$RAW" >"$OUT/results.md" <<'EOF'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def rates(case, system):
    return [r["msgs_per_s"] for r in rows if r.get("case") == case and r.get("system") == system]
print("| case | pgbench (median msg/s) | worker (median msg/s) | worker / pgbench | runs |")
print("|---|---:|---:|---:|---:|")
names = {"A": "lease 1 + ack, 8 clients vs concurrency 8 (scenario 2)",
         "B": "lease 100 + ack_batch, 4 clients vs concurrency 4 x batch 100 (scenario 4)"}
for case in "AB":
    p, w = rates(case, "pgbench"), rates(case, "worker")
    if p and w:
        pm, wm = statistics.median(p), statistics.median(w)
        print(f"| {names[case]} | {pm:,.0f} ({min(p):,.0f}-{max(p):,.0f}) | {wm:,.0f} ({min(w):,.0f}-{max(w):,.0f}) | {wm / pm:.2f} | {len(p)} |")
for r in rows:
    if r.get("case") == "C":
        print()
        print(f"Idle worker (concurrency 8, wait 10 s, empty queue) over {r['seconds']} s: worker process "
              f"{r['worker_cpu_s']:.2f} CPU s ({r['worker_pct_of_core']:.3f} % of one core), its {r['backends']} "
              f"backends {r['backends_cpu_s']:.2f} CPU s ({r['backends_pct_of_core']:.3f} %); /proc counts in "
              f"clock ticks of 10 ms.")
loads = [float(r[k].split()[0]) for r in rows for k in ("load_before", "load_after")]
print()
print(f"1-minute load average around the runs: {min(loads):.2f} to {max(loads):.2f}, on {os.cpu_count()} cores.")
EOF
cat "$OUT/results.md"
