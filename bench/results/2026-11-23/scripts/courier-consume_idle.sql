-- A worker that waits for work when the queue is empty (in the server, woken by commits).
SELECT count(*) AS n, coalesce(max(receipt::text), '') AS r, coalesce(max(extract(epoch FROM clock_timestamp() - enqueued_at) * 1000), 0) AS lat FROM courier.lease('bench', wait => '1 second') \gset
\if :n > 0
SELECT courier.ack(:r::uuid);
\set s random(1, 10)
\if :s = 1
INSERT INTO bench_latency VALUES ('courier', :lat);
\endif
\endif
