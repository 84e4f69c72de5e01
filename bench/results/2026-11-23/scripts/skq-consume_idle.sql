-- A worker that sleeps 50 ms when the queue is empty.
WITH c AS (SELECT id FROM skq.message WHERE vt <= clock_timestamp() ORDER BY vt LIMIT 1 FOR UPDATE SKIP LOCKED), u AS (UPDATE skq.message m SET vt = clock_timestamp() + interval '30 seconds', attempts = m.attempts + 1 FROM c WHERE m.id = c.id RETURNING m.id, m.enqueued_at) SELECT count(*) AS n, coalesce(max(id), 0) AS m, coalesce(max(extract(epoch FROM clock_timestamp() - enqueued_at) * 1000), 0) AS lat FROM u \gset
\if :n > 0
DELETE FROM skq.message WHERE id = :m;
\set s random(1, 10)
\if :s = 1
INSERT INTO bench_latency VALUES ('skq', :lat);
\endif
\else
\sleep 50 ms
\endif
