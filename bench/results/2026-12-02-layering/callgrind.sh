#!/usr/bin/env bash
# callgrind instructions per operation: (total at N2 - total at N1) / (N2 - N1), single-user backend
# usage: run.sh VERSION(base|after) OP N1 N2
set -euo pipefail
v=$1; op=$2; n1=$3; n2=$4
BIN=/opt/pg-$v/lib/postgresql/15/bin
D=/tmp/cg/$v-$op
measure() {
  local n=$1
  rm -rf $D; mkdir -p $D; chown postgres: $D
  runuser -u postgres -- $BIN/initdb -D $D/data -U postgres -A trust --no-sync >/dev/null
  echo "shared_preload_libraries = 'courier'" >> $D/data/postgresql.conf
  echo "courier.vacuum_threshold = 0" >> $D/data/postgresql.conf
  # setup
  runuser -u postgres -- $BIN/postgres --single -D $D/data postgres >/dev/null 2>&1 <<SQL
CREATE EXTENSION courier;
SELECT courier.create_queue('q');
SELECT count(*) FROM generate_series(1, 400) g, LATERAL courier.enqueue_batch('q', array_fill('{"order_id": 1234567, "customer": "cust-000042", "currency": "EUR", "items": [{"sku": "SKU-12345", "qty": 2}]}'::jsonb, ARRAY[1000])) e;
VACUUM ANALYZE courier.message;
CHECKPOINT;
SQL
  case $op in
    batch) body="SELECT count(*) FROM courier.enqueue_batch('q', array_fill('{\"order_id\": 1234567, \"customer\": \"cust-000042\", \"currency\": \"EUR\", \"items\": [{\"sku\": \"SKU-12345\", \"qty\": 2}]}'::jsonb, ARRAY[100]));" ;;
    one) body="SELECT courier.enqueue('q', '{\"order_id\": 1234567, \"customer\": \"cust-000042\"}');" ;;
    lease100) body="SELECT courier.ack_batch(ARRAY(SELECT receipt FROM courier.lease('q', 100)));" ;;
    lease1) body="SELECT courier.ack(receipt) FROM courier.lease('q');" ;;
  esac
  { for i in $(seq $n); do echo "$body"; done; } > $D/script.sql
  chown postgres: $D/script.sql
  runuser -u postgres -- valgrind --tool=callgrind --callgrind-out-file=$D/cg.out $BIN/postgres --single -D $D/data postgres < $D/script.sql >/dev/null 2>$D/vg.log
  grep -o "Collected : [0-9]*" $D/vg.log | awk '{print $3}'
}
a=$(measure $n1); b=$(measure $n2)
echo "$v $op per-op: $(( (b - a) / (n2 - n1) ))"
