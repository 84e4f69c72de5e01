-- A worker that waits for work when the queue is empty (pgmq's own poll loop, default interval).
SELECT count(*) AS n, coalesce(max(msg_id), 0) AS m, coalesce(max(extract(epoch FROM clock_timestamp() - enqueued_at) * 1000), 0) AS lat FROM pgmq.read_with_poll('bench', 30, 1, 1, 100) \gset
\if :n > 0
SELECT pgmq.delete('bench', :m::bigint);
\set s random(1, 10)
\if :s = 1
INSERT INTO bench_latency VALUES ('pgmq', :lat);
\endif
\endif
