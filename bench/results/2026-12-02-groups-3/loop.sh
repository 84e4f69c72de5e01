#!/usr/bin/env bash
# CPU cost of a lease + ack in one session, without the client round trips: a procedure leases
# one message and commits, acks it and commits, N times, on a grouped (1,000 groups) and an
# ungrouped queue of 200,000 messages each, alternately; synchronous_commit off. VARIANT names a
# relocated PostgreSQL under /opt/pg-VARIANT with the build to measure installed.
#   loop.sh VARIANT [N] [ROUNDS]
set -euo pipefail
v=$1; n=${2:-20000}; rounds=${3:-3}
export PG_BINDIR=/opt/pg-$v/lib/postgresql/15/bin
export PATH=$PG_BINDIR:$PATH
cd /work/main; source bin/lib/cluster.sh
D=/tmp/mb/l-$v
cluster_destroy $D >/dev/null 2>&1 || true; rm -rf $D
cluster_start $D 54391 "shared_preload_libraries = 'courier'" "synchronous_commit = off" "shared_buffers = 512MB" "max_wal_size = 4GB" >/dev/null
psql -qX -v ON_ERROR_STOP=1 <<SQL >/dev/null
CREATE EXTENSION courier;
SELECT courier.create_queue('g'); SELECT courier.create_queue('u');
DO \$\$ BEGIN FOR i IN 1..200 LOOP
  PERFORM courier.enqueue_batch('g', array_fill('{"a":1}'::jsonb, ARRAY[1000]), group_keys => (SELECT array_agg('k' || j) FROM generate_series(1,1000) j));
  PERFORM courier.enqueue_batch('u', array_fill('{"a":1}'::jsonb, ARRAY[1000]));
  COMMIT; END LOOP; END \$\$;
VACUUM ANALYZE;
CREATE PROCEDURE lp(q text, n int) LANGUAGE plpgsql AS \$\$
DECLARE r uuid; BEGIN
  FOR i IN 1..n LOOP
    SELECT receipt INTO r FROM courier.lease(q); COMMIT;
    PERFORM courier.ack(r); COMMIT;
  END LOOP; END \$\$;
SQL
for r in $(seq $rounds); do
  for q in g u; do
    psql -qXc "CHECKPOINT" >/dev/null
    ms=$(psql -qXAt -c "\\timing on" -c "CALL lp('$q', $n)" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p')
    echo "$v round $r $q: $(python3 -c "print(round($ms*1000/$n,1))") us per lease+ack"
  done
done
cluster_destroy $D >/dev/null 2>&1 || true
