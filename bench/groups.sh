#!/usr/bin/env bash
# Message groups, side by side in one run: what a group key costs producers and consumers, how a
# head lease scales with groups and messages, and pgmq 1.13's grouped read on the same backlog.
#
#   bench/groups.sh [--quick] [--out DIR] [--port PORT] [--dir DIR]
#   (RUNS and STEADY_S in the environment override the number of runs and the steady state's
#   seconds of a full run; PARTS, e.g. "G1 G2", runs only those parts)
#
#   G1  consume, lease 1 + ack (separate transactions), 8 clients, a backlog spread round-robin
#       over 1,000 groups: courier grouped, courier ungrouped, pgmq read_grouped_head + delete
#       (group in the `x-pgmq-group` header, pgmq's GIN fifo index created); RUNS runs, rotated.
#   G2  produce, 1 message per transaction, 8 clients, a random one of 1,000 groups per message:
#       courier grouped, courier ungrouped, pgmq send with the group header; RUNS runs, rotated.
#   G3  head lease latency, 1 client, lease 1 + ack: 10 / 1,000 / 100,000 groups holding
#       100,000 messages, and 10,000 / 100,000 / 1,000,000 messages in 1,000 groups.
#   G4  the steady state (bench/run's scenario 5) with every message in one of 1,000 groups:
#       producers at RATE msg/s, 4 consumers that wait when nothing is eligible; the table's size
#       and dead tuples sampled every SAMPLE_EVERY seconds.
# Each throughput figure also records the WAL bytes and commits per message (pg_stat_database
# and pg_current_wal_lsn around the run), which is what the per-group bookkeeping costs.
#
# It reports figures and asserts none of them. courier must be installed in the PostgreSQL whose
# bin directory is PG_BINDIR (default: pg_config's), e.g. with bin/install. Results: raw.jsonl and
# results.md in --out (default bench/results/<date>-groups).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:$PATH"
# shellcheck source=bin/lib/cluster.sh
source bin/lib/cluster.sh

QUICK=0
OUT=
PORT=54470
DIR=/tmp/courier-bench-groups
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --out) OUT="$2"; shift ;;
        --port) PORT="$2"; shift ;;
        --dir) DIR="$2"; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
OUT=${OUT:-bench/results/$(date -u +%Y-%m-%d)-groups}
if [ "$QUICK" = 1 ]; then
    RUNS=1; DURATION=5; BACKLOG=50000; STEADY_S=60; LAT_T=500
    SHAPES_GROUPS="10 1000 100000"; GROUPS_MSGS=100000; SHAPES_MSGS="10000 100000"
else
    RUNS=${RUNS:-3}; DURATION=20; BACKLOG=200000; STEADY_S=${STEADY_S:-300}; LAT_T=3000
    SHAPES_GROUPS="10 1000 100000"; GROUPS_MSGS=100000; SHAPES_MSGS="10000 100000 1000000"
fi
PARTS=${PARTS:-G1 G2 G3 G4}
part() { [[ " $PARTS " == *" $1 "* ]]; }
NGROUPS=1000  # not GROUPS: bash owns that name (the caller's group ids)
RATE=600
SAMPLE_EVERY=15
PAYLOAD='{"order_id": 1234567, "customer": "cust-000042", "currency": "EUR", "items": [{"sku": "SKU-12345", "qty": 2, "price": 19.99}, {"sku": "SKU-67890", "qty": 1, "price": 5.49}], "note": "leave at the door, ring twice"}'

mkdir -p "$OUT"
RAW="$OUT/raw.jsonl"
: >"$RAW"
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }
raw() { echo "$1" >>"$RAW"; }

log "building courier-bench (installs pgmq 1.13 from its crate)"
(cd bench/tool && cargo build --release -q)
TOOL=$ROOT/bench/tool/target/release/courier-bench

cluster_destroy "$DIR" 2>/dev/null || true
cluster_start "$DIR" "$PORT" "shared_buffers = 1GB" "shared_preload_libraries = 'courier'" \
    "max_wal_size = 4GB"
export PGDATABASE=bench
createdb bench
SCRIPTS=$(mktemp -d /tmp/courier-bench-groups-scripts.XXXXXX)
trap 'cluster_destroy "$DIR"; rm -rf "$SCRIPTS"' EXIT
"$TOOL" install-pgmq "$DIR" "$PORT" postgres bench >/dev/null
q() { psql -X -qAt -v ON_ERROR_STOP=1 -c "$1"; }
q "CREATE EXTENSION IF NOT EXISTS courier"
q "SELECT courier.create_queue('g'), courier.create_queue('u'), courier.create_queue('lat')" >/dev/null
q "SELECT pgmq.create('gq'); SELECT pgmq.create_fifo_index('gq')" >/dev/null
raw "{\"kind\": \"machine\", \"date\": \"$(date -u +%Y-%m-%dT%H:%MZ)\", \"cpus\": $(nproc), \"commit\": \"$(git rev-parse --short HEAD)\", \"postgres\": \"$(q 'SHOW server_version')\", \"courier\": \"$(q "SELECT extversion FROM pg_extension WHERE extname = 'courier'")\", \"pgmq\": \"$(q "SELECT max(version) FROM pgmq.__pgmq_migrations")\", \"quick\": $QUICK, \"backlog\": $BACKLOG, \"groups\": $NGROUPS, \"runs\": $RUNS, \"duration_s\": $DURATION}"

# The pgbench scripts. A consumer's lease and ack are separate transactions, as in bench/run.
cat >"$SCRIPTS/consume-courier-g.sql" <<'EOF'
SELECT receipt AS r FROM courier.lease('g') \gset
SELECT courier.ack(:r::uuid);
EOF
sed 's/lease(.g.)/lease('"'"'u'"'"')/' "$SCRIPTS/consume-courier-g.sql" >"$SCRIPTS/consume-courier-u.sql"
sed 's/lease(.g.)/lease('"'"'lat'"'"')/' "$SCRIPTS/consume-courier-g.sql" >"$SCRIPTS/consume-lat.sql"
cat >"$SCRIPTS/consume-pgmq-g.sql" <<'EOF'
SELECT msg_id AS m FROM pgmq.read_grouped_head('gq', 30, 1) \gset
SELECT pgmq.delete('gq', :m::bigint);
EOF
cat >"$SCRIPTS/produce-courier-g.sql" <<EOF
\set k random(0, $((NGROUPS - 1)))
SELECT courier.enqueue('g', '$PAYLOAD', group_key => 'k' || :k);
EOF
cat >"$SCRIPTS/produce-courier-u.sql" <<EOF
SELECT courier.enqueue('u', '$PAYLOAD');
EOF
cat >"$SCRIPTS/produce-pgmq-g.sql" <<EOF
\set k random(0, $((NGROUPS - 1)))
SELECT pgmq.send('gq', '$PAYLOAD', jsonb_build_object('x-pgmq-group', 'k' || :k));
EOF
cat >"$SCRIPTS/steady-consume.sql" <<'EOF'
SELECT count(*) AS n, coalesce(max(receipt::text), '') AS r FROM courier.lease('g', wait => '1 second') \gset
\if :n > 0
SELECT courier.ack(:r::uuid);
\endif
EOF
cp "$SCRIPTS/produce-courier-g.sql" "$SCRIPTS/steady-produce.sql"

# fill SYSTEM QUEUE MESSAGES GROUPS: MESSAGES in batches of 1,000, message i in group i % GROUPS
# (GROUPS 0: ungrouped), then VACUUM ANALYZE and a checkpoint so each run starts alike.
fill() {
    local system=$1 queue=$2 n=$3 groups=$4 keys headers
    keys="NULL"
    [ "$groups" -gt 0 ] && keys="(SELECT array_agg('k' || ((i * 1000 + j) % $groups) ORDER BY j) FROM generate_series(0, least(1000, $n - i * 1000) - 1) j)"
    headers="(SELECT array_agg(jsonb_build_object('x-pgmq-group', 'k' || ((i * 1000 + j) % $groups)) ORDER BY j) FROM generate_series(0, least(1000, $n - i * 1000) - 1) j)"
    case $system in
        courier) q "DO \$\$ BEGIN FOR i IN 0..($n - 1) / 1000 LOOP
                      PERFORM courier.enqueue_batch('$queue', array_fill('$PAYLOAD'::jsonb, ARRAY[least(1000, $n - i * 1000)]), group_keys => $keys);
                      COMMIT; END LOOP; END \$\$" ;;
        pgmq) q "DO \$\$ BEGIN FOR i IN 0..($n - 1) / 1000 LOOP
                   PERFORM pgmq.send_batch('$queue', array_fill('$PAYLOAD'::jsonb, ARRAY[least(1000, $n - i * 1000)]), $headers);
                   COMMIT; END LOOP; END \$\$" ;;
    esac
    q "VACUUM ANALYZE"
    q "CHECKPOINT"
}
# As bench/run: emptied by TRUNCATE, so that no run inherits the bloat of the one before.
reset_all() {
    q "TRUNCATE courier.message, courier.message_group, courier.dedup, courier.completed, pgmq.q_gq, pgmq.a_gq"
    q "VACUUM ANALYZE"
    q "CHECKPOINT"
}
counters() { q "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, xact_commit FROM pg_stat_database WHERE datname = current_database()"; }
rotated() {
    local n=$(( ($1 - 1) % ($# - 1) ))
    shift
    local words=("$@")
    echo "${words[@]:n}" "${words[@]:0:n}"
}
# run SCENARIO VARIANT RUN pgbench-args...: one pgbench run, its figures as a raw line.
run() {
    local scenario=$1 variant=$2 nrun=$3 before after out tps lat
    shift 3
    before=$(counters)
    out=$(pgbench -n -M prepared -j 2 "$@" 2>&1) || { echo "$out" >&2; return 1; }
    after=$(counters)
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
    lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
    raw "$(python3 - "$scenario" "$variant" "$nrun" "$tps" "$lat" "$before" "$after" "$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')" <<'EOF'
import json, sys
scenario, variant, run, tps, lat, before, after, n = sys.argv[1:]
wal0, c0 = map(int, before.split("|")); wal1, c1 = map(int, after.split("|"))
n = max(int(n), 1)
print(json.dumps({"kind": "throughput", "scenario": scenario, "variant": variant, "run": int(run),
                  "msgs_per_s": float(tps), "latency_ms": float(lat or "nan"), "messages": n,
                  "wal_bytes_per_msg": (wal1 - wal0) / n, "commits_per_msg": (c1 - c0) / n}))
EOF
)"
    log "$scenario run $nrun $variant: $(printf '%.0f' "$tps") msg/s"
}

part G1 && log "G1: consume, lease 1 + ack, 8 clients, $BACKLOG messages in $NGROUPS groups"
part G1 && for r in $(seq $RUNS); do
    for variant in $(rotated "$r" courier-g courier-u pgmq-g); do
        reset_all
        case $variant in
            courier-g) fill courier g "$BACKLOG" "$NGROUPS" ;;
            courier-u) fill courier u "$BACKLOG" 0 ;;
            pgmq-g) fill pgmq gq "$BACKLOG" "$NGROUPS" ;;
        esac
        run G1 "$variant" "$r" -c 8 -T "$DURATION" -f "$SCRIPTS/consume-$variant.sql"
    done
done

part G2 && log "G2: produce, 1 message per transaction, 8 clients, $NGROUPS groups"
part G2 && for r in $(seq $RUNS); do
    for variant in $(rotated "$r" courier-g courier-u pgmq-g); do
        reset_all
        run G2 "$variant" "$r" -c 8 -T "$DURATION" -f "$SCRIPTS/produce-$variant.sql"
    done
done

# lat SERIES GROUPS MESSAGES: the latency of lease 1 + ack, one client, over LAT_T transactions, from
# pgbench's per-transaction log (p50, p99) and its per-statement averages (-r).
lat() {
    local series=$1 groups=$2 msgs=$3 out logs
    reset_all
    fill courier lat "$msgs" "$groups"
    logs=$(mktemp -d "$SCRIPTS/log.XXXXXX")
    chmod 777 "$logs"
    out=$(cd "$logs" && pgbench -n -M prepared -c 1 -j 1 -t "$LAT_T" -r -l -f "$SCRIPTS/consume-lat.sql" 2>&1) || { echo "$out" >&2; return 1; }
    raw "$(python3 - "$series" "$groups" "$msgs" "$logs" "$out" <<'EOF'
import glob, json, re, statistics, sys
series, groups, msgs, logs, out = sys.argv[1:]
lat = sorted(int(line.split()[2]) / 1000 for f in glob.glob(logs + "/pgbench_log.*") for line in open(f))
stmt = [float(m.group(1)) for m in re.finditer(r"^\s+([0-9.]+)\s+\d+\s+SELECT", out, re.M)]
print(json.dumps({"kind": "latency", "series": series, "groups": int(groups), "messages": int(msgs), "n": len(lat),
                  "p50_ms": statistics.median(lat), "p99_ms": lat[int(0.99 * (len(lat) - 1))],
                  "lease_avg_ms": stmt[0] if stmt else None, "ack_avg_ms": stmt[1] if len(stmt) > 1 else None}))
EOF
)"
    log "G3 $groups groups, $msgs messages: $(tail -1 "$RAW")"
}
if part G3; then
    log "G3: head lease latency"
    for g in $SHAPES_GROUPS; do lat groups "$g" "$GROUPS_MSGS"; done
    for m in $SHAPES_MSGS; do lat messages "$NGROUPS" "$m"; done
fi

if part G4; then
    log "G4: steady state, $RATE msg/s into $NGROUPS groups, ${STEADY_S} s"
    reset_all
    pgbench -n -M prepared -j 2 -c 4 -T "$STEADY_S" -f "$SCRIPTS/steady-consume.sql" >"$OUT/g4-consumers.log" 2>&1 &
    consumers=$!
    pgbench -n -M prepared -j 1 -c 2 -R "$RATE" -T "$STEADY_S" -f "$SCRIPTS/steady-produce.sql" >"$OUT/g4-producers.log" 2>&1 &
    producers=$!
    t0=$(date +%s)
    while kill -0 $consumers 2>/dev/null; do
        s=$(q "SELECT pg_total_relation_size('courier.message'), pg_total_relation_size('courier.message_group'),
                      (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'courier.message'::regclass),
                      (SELECT count(*) FROM courier.message_group),
                      (SELECT count(*) FROM courier.message m JOIN courier.queue q ON q.queue_id = m.queue_id WHERE q.name = 'g')")
        IFS='|' read -r size gsize dead grows msgs <<<"$s"
        raw "{\"kind\": \"steady\", \"t\": $(( $(date +%s) - t0 )), \"message_bytes\": $size, \"group_bytes\": $gsize, \"dead_tuples\": $dead, \"group_rows\": $grows, \"messages\": $msgs}"
        sleep "$SAMPLE_EVERY"
    done
    wait $producers || true
    wait $consumers || true
fi

python3 - "$RAW" >"$OUT/results.md" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
m = rows[0]
print(f"# Message groups, {m['date']} (commit {m['commit']}, PostgreSQL {m['postgres']}, courier {m['courier']}, pgmq {m['pgmq']}, {m['cpus']} CPUs{', quick' if m['quick'] else ''})\n")
def med(s, v, key="msgs_per_s"):
    xs = [r[key] for r in rows if r["kind"] == "throughput" and r["scenario"] == s and r["variant"] == v]
    return statistics.median(xs) if xs else float("nan"), (min(xs) if xs else 0), (max(xs) if xs else 0)
names = {"courier-g": "courier, grouped", "courier-u": "courier, ungrouped", "pgmq-g": "pgmq 1.13, grouped"}
for s, title in (("G1", f"G1 consume, lease 1 + ack, 8 clients, {m['backlog']:,} messages in {m['groups']:,} groups"),
                 ("G2", f"G2 produce, 1 message per transaction, 8 clients, {m['groups']:,} groups")):
    print(f"## {title}\n\n| | msg/s (median of {m['runs']}; min–max) | WAL bytes/msg | commits/msg |\n|---|---|---|---|")
    for v in ("courier-g", "courier-u", "pgmq-g"):
        t, lo, hi = med(s, v); w = med(s, v, "wal_bytes_per_msg")[0]; c = med(s, v, "commits_per_msg")[0]
        print(f"| {names[v]} | {t:,.0f} ({lo:,.0f}–{hi:,.0f}) | {w:,.0f} | {c:.2f} |")
    g, u, p = med(s, "courier-g")[0], med(s, "courier-u")[0], med(s, "pgmq-g")[0]
    print(f"\ngrouped / ungrouped: **{g / u:.2f}×**; courier grouped / pgmq grouped: **{g / p:.1f}×**\n")
lat = [r for r in rows if r["kind"] == "latency"]
print("## G3 head lease latency, 1 client, lease 1 + ack\n\n| groups | messages | p50 ms | p99 ms | lease avg ms | ack avg ms |\n|---|---|---|---|---|---|")
for r in lat:
    print(f"| {r['groups']:,} | {r['messages']:,} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['lease_avg_ms']:.3f} | {r['ack_avg_ms']:.3f} |")
by_groups = [r for r in lat if r["series"] == "groups"]
by_msgs = [r for r in lat if r["series"] == "messages"]
if len(by_groups) > 1:
    print(f"\np50 at {by_groups[-1]['groups']:,} groups / at {by_groups[0]['groups']:,}: **{by_groups[-1]['p50_ms'] / by_groups[0]['p50_ms']:.2f}×**", end="")
if len(by_msgs) > 1:
    print(f"; at {by_msgs[-1]['messages']:,} messages / at {by_msgs[0]['messages']:,}: **{by_msgs[-1]['p50_ms'] / by_msgs[0]['p50_ms']:.2f}×**")
st = [r for r in rows if r["kind"] == "steady"]
if st:
    print("\n## G4 steady state, grouped\n\n| s | courier.message bytes | message_group bytes | dead tuples | group rows | messages waiting |\n|---|---|---|---|---|---|")
    for r in st:
        print(f"| {r['t']} | {r['message_bytes']:,} | {r['group_bytes']:,} | {r['dead_tuples']:,} | {r['group_rows']:,} | {r['messages']:,} |")
EOF
cat "$OUT/results.md"
