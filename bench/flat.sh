#!/usr/bin/env bash
# Scenario 7's flatness target (issue 20: courier's figures at 10,000,000 messages within 1.5× of
# those at 10,000), measured in pairs. bench/run measures every figure once at each backlog, the
# two backlogs tens of minutes apart; on a shared machine whose speed drifts (the same build ran at
# 231,000 and 106,000 msg/s three hours apart on 2026-12-03) such a ratio mixes the code's cost
# with the machine's. Here the small and the big backlog each live on a cluster of their own, both
# running, and every figure is measured ROUNDS times at each, alternately (small then big, then big
# then small), a few seconds apart; the ratio of each pair is the cost of the backlog under one
# machine, and the report gives the median pair with the spread.
#
#   bench/flat.sh [--out DIR]
#
# Each backlog is built by 4 producers in batches of 100 (scenario 7's producers; mixed: priorities
# 0, 5 and 9 and one batch in ten delayed by an hour), then VACUUM ANALYZE and CHECKPOINT. A figure
# is what bench/run's s7_measure makes of it: lease 1 + ack or lease 100 + ack_batch, latency with
# 1 client, throughput with 4 and 8; each client's first transaction of a pgbench run left out
# (bench/logstats.py). Both measurements of a pair run the same number of transactions (sized by a
# one-second probe on the big backlog to about FLAT_SECONDS), in pgbench runs of at most the small
# backlog's size, each preceded by a top-up of what it takes: the small backlog never holds fewer
# leasable messages than its size nor more than twice as many, and both sides start sessions alike.
#
# Environment (defaults in brackets):
#   BENCH_PG_CONFIG     the PostgreSQL to build for, install into and run [Debian's 15]
#   BENCH_DIR, BENCH_PORT   clusters in $BENCH_DIR-small and -big, ports BENCH_PORT and +1
#                       [/tmp/courier-flat, 54460]
#   FLAT_SMALL, FLAT_BIG    the two backlogs [10000, 10000000]
#   FLAT_VARIANTS       in order, from plain, inflight (1,000 messages at the head leased for an
#                       hour), snapshot (a REPEATABLE READ snapshot held on both clusters) and
#                       mixed (priorities and delays) [plain mixed]
#   FLAT_SYSTEMS        courier, pgmq, skq (the SKIP LOCKED table) [courier pgmq]
#   FLAT_ROUNDS         pairs per figure [5]
#   FLAT_SECONDS        about how long each measurement runs [5]
#   FLAT_FIGURES        measure:batch:clients, e.g. "lat:1:1 tput:100:8"
#                       [lat:1:1 lat:100:1 tput:1:4 tput:1:8 tput:100:4 tput:100:8]
#   FLAT_SETTINGS       server settings added on every cluster, separated by ";", e.g.
#                       "max_wal_size = 8GB; checkpoint_timeout = 15min" [none]
#   FLAT_CLUSTERS       per-system: each system's two backlogs on clusters of their own
#                       ($BENCH_DIR-<system>-small and -big, two ports per system), so that one
#                       system's 10-million table, its vacuum and its dirty pages are not in another
#                       system's shared buffers and measurements; shared: every system on the same
#                       two clusters, as before 2026-12-04 [per-system]
#
# Each measurement also records what its pgbench runs cost the server (top-ups left out): WAL
# records, full-page images and bytes (pg_stat_wal), checkpoints begun (pg_stat_bgwriter) and
# blocks read from outside shared buffers (pg_stat_database); the report gives them per message.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH="$HOME/.cargo/bin:$PATH"
PG_CONFIG=${BENCH_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export PG_BINDIR
PG_BINDIR=$("$PG_CONFIG" --bindir)
export PATH="$PG_BINDIR:$PATH"
source bin/lib/cluster.sh

OUT="bench/results/$(date -u +%Y-%m-%d)-flat"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
SMALL=${FLAT_SMALL:-10000}
BIG=${FLAT_BIG:-10000000}
VARIANTS=${FLAT_VARIANTS:-plain mixed}
SYSTEMS=${FLAT_SYSTEMS:-courier pgmq}
ROUNDS=${FLAT_ROUNDS:-5}
SECONDS_EACH=${FLAT_SECONDS:-5}
FIGURES=${FLAT_FIGURES:-lat:1:1 lat:100:1 tput:1:4 tput:1:8 tput:100:4 tput:100:8}
BASE=${BENCH_DIR:-/tmp/courier-flat}
PORT=${BENCH_PORT:-54460}
CLUSTERS=${FLAT_CLUSTERS:-per-system}
case $CLUSTERS in per-system | shared) ;; *) echo "FLAT_CLUSTERS must be per-system or shared" >&2; exit 2 ;; esac
if [ "$CLUSTERS" = per-system ]; then CLUSTER_SYSTEMS=$SYSTEMS; else CLUSTER_SYSTEMS=all; fi
# The system whose cluster `on` and `qs` talk to (with per-system clusters); the loops over
# systems set it.
SYS=""
PAYLOAD='{"order_id": 1234567, "customer": "cust-000042", "currency": "EUR", "items": [{"sku": "SKU-12345", "qty": 2, "price": 19.99}, {"sku": "SKU-67890", "qty": 1, "price": 5.49}], "note": "leave at the door, ring twice"}'

mkdir -p "$OUT"
RAW="$OUT/raw.jsonl"
: >"$RAW"
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$OUT/run.log"; }
raw() { echo "$1" >>"$RAW"; }
now() { date +%s.%N; }

if ! /usr/bin/python3 -c "import matplotlib" 2>/dev/null; then
    log "installing python3-matplotlib for the chart"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-matplotlib >/dev/null
fi
log "building and installing courier (release) into $("$PG_CONFIG" --pkglibdir)"
bin/install "$PG_CONFIG" >/dev/null
(cd bench/tool && cargo build --release -q)
TOOL=$ROOT/bench/tool/target/release/courier-bench

# The settings of bench/run's cluster.
SETTINGS=("shared_buffers = 1GB" "shared_preload_libraries = 'courier'" "max_connections = 200"
    "log_autovacuum_min_duration = 0" "session_preload_libraries = 'auto_explain'"
    "auto_explain.log_min_duration = '250ms'" "auto_explain.log_nested_statements = on")
EXTRA=${FLAT_SETTINGS:-}
if [ -n "$EXTRA" ]; then
    IFS=';' read -r -a extra <<<"$EXTRA"
    for setting in "${extra[@]}"; do SETTINGS+=("$(echo "$setting" | xargs)"); done
fi
SCRIPTS=$(mktemp -d /tmp/courier-flat-scripts.XXXXXX)
# Compressed: auto_explain's plans make a run's log several MB; flatreport.py reads either form.
save_log() { # size (of SYS's cluster)
    local name=$1
    [ "$CLUSTERS" = per-system ] && name="$SYS-$1"
    gzip -9c "$(dir_of "$1")/server.log" >"$OUT/server-$name.log.gz" 2>/dev/null || rm -f "$OUT/server-$name.log.gz"
}
cleanup() {
    jobs -p | xargs -r kill 2>/dev/null || true
    local size
    for SYS in $CLUSTER_SYSTEMS; do
        for size in small big; do
            save_log "$size"
            cluster_destroy "$(dir_of "$size")"
        done
    done
    rm -rf "$SCRIPTS"
}
trap cleanup EXIT

# The clusters: one pair, or one pair per system (SYS picks it).
dir_of() { if [ "$CLUSTERS" = per-system ]; then echo "$BASE-$SYS-$1"; else echo "$BASE-$1"; fi; }
port_of() {
    local base=$PORT i=0 s
    if [ "$CLUSTERS" = per-system ]; then
        for s in $SYSTEMS; do
            [ "$s" = "$SYS" ] && base=$((PORT + 2 * i))
            i=$((i + 1))
        done
    fi
    if [ "$1" = small ]; then echo "$base"; else echo $((base + 1)); fi
}
on() { # size command...: the command against that cluster's bench database
    local size=$1
    shift
    PGHOST=$(dir_of "$size") PGPORT=$(port_of "$size") PGUSER=postgres PGDATABASE=bench "$@"
}
qs() { on "$1" psql -X -qAt -v ON_ERROR_STOP=1 -c "$2"; }
backlog_of() { if [ "$1" = small ]; then echo "$SMALL"; else echo "$BIG"; fi; }
table_of() { # system queue
    case $1 in courier) echo courier.message ;; pgmq) echo "pgmq.q_$2" ;; skq) echo skq.message ;; esac
}
queue_of() { # system variant: the SKIP LOCKED table is one queue
    if [ "$2" = mixed ] && [ "$1" != skq ]; then echo mixed; else echo bench; fi
}
script() { # system name queue -> a pgbench script with the payload and queue name filled in
    local f="$SCRIPTS/$1-$2-$3.sql"
    sed -e "s|@PAYLOAD@|$PAYLOAD|g" -e "s|'bench'|'$3'|g" "bench/scripts/$1/$2.sql" >"$f"
    echo "$f"
}
rotated() { # N word... -> the words rotated left by N-1
    local n=$(( ($1 - 1) % ($# - 1) ))
    shift
    local words=("$@")
    echo "${words[@]:n}" "${words[@]:0:n}"
}

# Every cluster gets every system's schema (bench/setup.sql), used or not.
for SYS in $CLUSTER_SYSTEMS; do
    for size in small big; do
        cluster_destroy "$(dir_of $size)" 2>/dev/null || true
        cluster_start "$(dir_of $size)" "$(port_of $size)" "${SETTINGS[@]}"
        PGHOST=$(dir_of $size) PGPORT=$(port_of $size) createdb bench
        "$TOOL" install-pgmq "$(dir_of $size)" "$(port_of $size)" postgres bench >/dev/null
        on $size psql -X -q -v ON_ERROR_STOP=1 -f bench/setup.sql >/dev/null
        qs $size "SELECT courier.create_queue('mixed', visibility_timeout => '30 seconds')" >/dev/null
        qs $size "SELECT pgmq.create('mixed')" >/dev/null
    done
done
SYS=$(echo "$CLUSTER_SYSTEMS" | awk '{print $1}')
raw "{\"kind\": \"machine\", \"date\": \"$(date -u +%Y-%m-%dT%H:%MZ)\", \"cpus\": $(nproc), \"cpu_model\": \"$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)\", \"postgres\": \"$(qs small 'SHOW server_version')\", \"courier\": \"$(qs small "SELECT extversion FROM pg_extension WHERE extname = 'courier'")\", \"commit\": \"$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src crates sql Cargo.toml Cargo.lock || echo '+dirty')\", \"small\": $SMALL, \"big\": $BIG, \"rounds\": $ROUNDS, \"seconds\": $SECONDS_EACH, \"settings\": \"$(echo "$EXTRA" | sed 's/"/\\\\"/g')\", \"clusters\": \"$CLUSTERS\"}"

declare -A LEFT # "size:system:queue" -> leasable messages (counted on the small cluster, else by arithmetic)

ready() { # size system queue: the messages leasable now, counted
    case $2 in
        courier) qs "$1" "SELECT count(*) FROM courier.message WHERE queue_id = (SELECT queue_id FROM courier.queue WHERE name = '$3')
                          AND visible_at <= now() AND (leased_until IS NULL OR leased_until <= now())" ;;
        *) qs "$1" "SELECT count(*) FROM $(table_of "$2" "$3") WHERE vt <= now()" ;;
    esac
}

# top_up size system variant target: 4 producers in batches of 100 until the queue holds at least
# `target` leasable messages (a tenth of the mixed variant's batches are delayed).
top_up() {
    local size=$1 system=$2 variant=$3 target=$4 queue key missing per_client producer=produce_batch share=100
    queue=$(queue_of "$system" "$variant")
    key="$size:$system:$queue"
    [ "$variant" = mixed ] && producer=produce_mixed && share=90
    while :; do
        missing=$((target - ${LEFT[$key]:-0}))
        [ "$missing" -le 0 ] && return 0
        per_client=$(((missing * 100 / share + 399) / 400))
        on "$size" pgbench -n -M prepared -c 4 -j 2 -t "$per_client" -f "$(script "$system" "$producer" "$queue")" \
            >"$SCRIPTS/topup.out" 2>&1 || { cat "$SCRIPTS/topup.out" >&2; return 1; }
        if [ "$size" = small ]; then
            LEFT[$key]=$(ready "$size" "$system" "$queue")
        else
            LEFT[$key]=$((${LEFT[$key]:-0} + per_client * 400 * share / 100))
        fi
    done
}

BUILT=""
build() { # variant: every system's two backlogs from empty tables
    local variant=$1 size system table t0 t1 t2
    LEFT=()
    BUILT=$variant
    for size in small big; do
        for SYS in $CLUSTER_SYSTEMS; do
            qs "$size" "TRUNCATE courier.message, courier.dedup, courier.completed, pgmq.q_bench, pgmq.a_bench, pgmq.q_mixed, pgmq.a_mixed, skq.message"
            qs "$size" "VACUUM"
        done
        for system in $SYSTEMS; do
            [ "$CLUSTERS" = per-system ] && SYS=$system
            table=$(table_of "$system" "$(queue_of "$system" "$variant")")
            t0=$(now)
            top_up "$size" "$system" "$variant" "$(backlog_of "$size")"
            t1=$(now)
            qs "$size" "VACUUM (ANALYZE) $table"
            t2=$(now)
            raw "{\"kind\": \"build\", \"variant\": \"$variant\", \"size\": \"$size\", \"system\": \"$system\", \"backlog\": $(backlog_of "$size"), \"build_s\": $(python3 -c "print(round($t1 - $t0, 2))"), \"vacuum_analyze_s\": $(python3 -c "print(round($t2 - $t1, 2))"), \"bytes\": $(qs "$size" "SELECT pg_total_relation_size('$table')")}"
            log "$variant $size $system: built in $(python3 -c "print(round($t1 - $t0, 1))") s"
        done
        for SYS in $CLUSTER_SYSTEMS; do qs "$size" "CHECKPOINT"; done
    done
}

# 1,000 messages at the head of each queue leased for an hour (inflight_begin), acked at the end.
inflight_begin() {
    local size system
    for size in small big; do
        for system in $SYSTEMS; do
            [ "$CLUSTERS" = per-system ] && SYS=$system
            qs "$size" "CREATE TABLE IF NOT EXISTS bench_inflight (system text NOT NULL, handle text NOT NULL)"
            top_up "$size" "$system" plain $(($(backlog_of "$size") + 1000))
            case $system in
                courier) qs "$size" "INSERT INTO bench_inflight SELECT 'courier', receipt::text FROM courier.lease('bench', 1000, visibility_timeout => '1 hour')" ;;
                pgmq) qs "$size" "INSERT INTO bench_inflight SELECT 'pgmq', msg_id::text FROM pgmq.read('bench', 3600, 1000)" ;;
                skq) qs "$size" "WITH c AS (SELECT id FROM skq.message WHERE vt <= clock_timestamp() ORDER BY vt LIMIT 1000 FOR UPDATE SKIP LOCKED),
                                     u AS (UPDATE skq.message m SET vt = clock_timestamp() + interval '1 hour', attempts = m.attempts + 1 FROM c WHERE m.id = c.id RETURNING m.id)
                                  INSERT INTO bench_inflight SELECT 'skq', id::text FROM u" ;;
            esac
            LEFT[$size:$system:bench]=$((LEFT[$size:$system:bench] - 1000))
        done
    done
}
inflight_end() {
    local size
    for size in small big; do
        for SYS in $CLUSTER_SYSTEMS; do
            qs "$size" "SELECT courier.ack_batch(array_agg(handle::uuid)) FROM bench_inflight WHERE system = 'courier' HAVING count(*) > 0" >/dev/null
            qs "$size" "SELECT count(*) FROM pgmq.delete('bench', (SELECT array_agg(handle::bigint) FROM bench_inflight WHERE system = 'pgmq' HAVING count(*) > 0))" >/dev/null
            qs "$size" "DELETE FROM skq.message WHERE id IN (SELECT handle::bigint FROM bench_inflight WHERE system = 'skq')"
            qs "$size" "TRUNCATE bench_inflight"
        done
    done
}

# A REPEATABLE READ transaction on each cluster holding its snapshot until release.
HOLDERS=()
hold() {
    local size
    for SYS in $CLUSTER_SYSTEMS; do for size in small big; do
        on "$size" env PGAPPNAME=bench_holder psql -X -q -c "BEGIN ISOLATION LEVEL REPEATABLE READ" -c "SELECT 1" \
            -c "SELECT pg_sleep(86400)" >/dev/null 2>&1 &
        HOLDERS+=($!)
        until [ "$(qs "$size" "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bench_holder' AND backend_xmin IS NOT NULL")" = 1 ]; do
            sleep 0.2
        done
    done; done
}
release() {
    local size
    for SYS in $CLUSTER_SYSTEMS; do for size in small big; do
        qs "$size" "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'bench_holder'" >/dev/null
    done; done
    wait "${HOLDERS[@]}" 2>/dev/null || true
    HOLDERS=()
}

# counters size: WAL records, full-page images, WAL bytes, checkpoints begun, blocks read (cluster-wide)
counters() {
    qs "$1" "SELECT w.wal_records, w.wal_fpi, w.wal_bytes, b.checkpoints_timed + b.checkpoints_req,
                    (SELECT sum(blks_read) FROM pg_stat_database)
             FROM pg_stat_wal w, pg_stat_bgwriter b" | tr '|' ' '
}

# measure size system variant batch clients txs round order: one run of `txs` transactions per
# client, written to raw.jsonl.
measure() {
    local size=$1 system=$2 variant=$3 batch=$4 clients=$5 txs=$6 round=$7 order=$8
    local queue consumer=consume backlog per_run chunk n runs=0 logs stats key before after t0
    local -a io=(0 0 0 0 0) b a
    [ "$CLUSTERS" = per-system ] && SYS=$system
    queue=$(queue_of "$system" "$variant")
    key="$size:$system:$queue"
    backlog=$(backlog_of "$size")
    [ "$batch" = 100 ] && consumer=consume_batch
    per_run=$((clients * batch))
    # Runs of at most the small backlog's size on both clusters: each run starts new sessions,
    # whose first transactions plan courier's statements afresh, and both sides pay that alike.
    chunk=$((SMALL / per_run))
    [ "$chunk" -lt 1 ] && chunk=1
    logs=$(mktemp -d "$SCRIPTS/logs.XXXXXX")
    t0=$(now)
    local total=$txs
    while [ "$total" -gt 0 ]; do
        n=$((total < chunk ? total : chunk))
        top_up "$size" "$system" "$variant" $((backlog + n * per_run))
        runs=$((runs + 1))
        before=$(counters "$size")
        on "$size" pgbench -n -M prepared -c "$clients" -j "$([ "$clients" -ge 2 ] && echo 2 || echo 1)" -t "$n" \
            -l --log-prefix="$logs/c$runs" -f "$(script "$system" "$consumer" "$queue")" >"$SCRIPTS/pgbench.out" 2>&1 ||
            { cat "$SCRIPTS/pgbench.out" >&2; return 1; }
        after=$(counters "$size")
        read -r -a b <<<"$before"
        read -r -a a <<<"$after"
        for i in 0 1 2 3 4; do io[i]=$((io[i] + a[i] - b[i])); done
        LEFT[$key]=$((LEFT[$key] - n * per_run))
        total=$((total - n))
    done
    stats=$(python3 bench/logstats.py "$logs" "$batch")
    rm -rf "$logs"
    raw "{\"kind\": \"flat\", \"variant\": \"$variant\", \"system\": \"$system\", \"size\": \"$size\", \"backlog\": $backlog, \"batch\": $batch, \"clients\": $clients, \"round\": $round, \"order\": $order, \"t0\": $t0, \"t\": $(now), \"wal_records\": ${io[0]}, \"wal_fpi\": ${io[1]}, \"wal_bytes\": ${io[2]}, \"checkpoints\": ${io[3]}, \"blks_read\": ${io[4]}, \"messages_run\": $((txs * clients * batch)), ${stats#\{}"
    log "$variant $system $size lease $batch × $clients, round $round: $(echo "$stats" | python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, {r['msgs_per_s']:,.0f} msg/s ({r['transactions']} tx)\")")"
}

# probe system variant batch clients: transactions per client that take about SECONDS_EACH on the
# big backlog (a one-second run, not counted).
probe() {
    local system=$1 variant=$2 batch=$3 clients=$4 queue consumer=consume out tps key
    [ "$CLUSTERS" = per-system ] && SYS=$system
    queue=$(queue_of "$system" "$variant")
    key="big:$system:$queue"
    [ "$batch" = 100 ] && consumer=consume_batch
    top_up big "$system" "$variant" $((BIG + 300000))
    out=$(on big pgbench -n -M prepared -c "$clients" -j "$([ "$clients" -ge 2 ] && echo 2 || echo 1)" -T 1 \
        -f "$(script "$system" "$consumer" "$queue")" 2>&1) || { echo "$out" >&2; return 1; }
    LEFT[$key]=$((LEFT[$key] - $(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p') * batch))
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    python3 -c "print(max(20, round(${tps:-0} * $SECONDS_EACH / $clients)))"
}

log "flat: $SYSTEMS at $SMALL and $BIG messages ($VARIANTS), $ROUNDS pairs per figure of about $SECONDS_EACH s"
turn=0
for variant in $VARIANTS; do
    case $variant in
        plain | mixed) build "$variant" ;;
        inflight) [ "$BUILT" = plain ] || build plain; inflight_begin ;;
        snapshot) [ "$BUILT" = plain ] || build plain; hold ;;
        *) echo "unknown variant $variant" >&2; exit 2 ;;
    esac
    for figure in $FIGURES; do
        IFS=: read -r measure batch clients <<<"$figure"
        declare -A TXS=()
        for system in $SYSTEMS; do TXS[$system]=$(probe "$system" "$variant" "$batch" "$clients"); done
        for round in $(seq "$ROUNDS"); do
            turn=$((turn + 1))
            for system in $(rotated "$turn" $SYSTEMS); do
                if [ $((round % 2)) = 1 ]; then sizes="small big"; else sizes="big small"; fi
                order=0
                for size in $sizes; do
                    order=$((order + 1))
                    measure "$size" "$system" "$variant" "$batch" "$clients" "${TXS[$system]}" "$round" "$order"
                done
            done
        done
        unset TXS
    done
    case $variant in
        inflight) inflight_end ;;
        snapshot) release ;;
    esac
done

# The report reads the servers' logs (autovacuum passes, slow statements) as they are by now.
for SYS in $CLUSTER_SYSTEMS; do for size in small big; do save_log "$size"; done; done
/usr/bin/python3 bench/flatreport.py "$OUT" | tee "$OUT/report.md"
log "results in $OUT"
