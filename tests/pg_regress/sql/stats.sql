-- Stats: gauges from the queue itself, counters of committed work (this cluster preloads courier).
SELECT courier.create_queue('sx', max_attempts => 1);
SELECT queue, ready, delayed, in_flight, dead, oldest_ready_age, oldest_lease_age, enqueued_total, acked_total,
       counters_since IS NOT NULL AS preloaded
FROM courier.stats('sx');

SELECT count(*) FROM courier.enqueue_batch('sx', ARRAY['1', '2', '3', '4', '5', '6']::jsonb[]);
SELECT courier.enqueue('sx', '"delayed"', delay => '1 hour') > 0 AS enqueued;
SELECT count(*) FROM courier.lease('sx', 2, visibility_timeout => '1 hour');
SELECT courier.ack(receipt) FROM courier.lease('sx');
SELECT courier.nack(receipt, retry_in => '0') FROM courier.lease('sx');
SELECT duplicate FROM courier.enqueue_unique('sx', '"k"', 'key');
SELECT duplicate FROM courier.enqueue_unique('sx', '"k"', 'key');
-- Work that rolls back, wholly or to a savepoint, is not counted.
BEGIN;
SELECT courier.enqueue('sx', '"rolled back"') > 0 AS enqueued;
ROLLBACK;
BEGIN;
SAVEPOINT s;
SELECT courier.enqueue('sx', '"rolled back to savepoint"') > 0 AS enqueued;
ROLLBACK TO SAVEPOINT s;
SELECT courier.enqueue('sx', '"kept"') > 0 AS enqueued;
COMMIT;

SELECT queue, ready, delayed, in_flight, dead,
       oldest_ready_age >= interval '0' AS has_oldest_ready, oldest_lease_age >= interval '0' AS has_oldest_lease,
       enqueued_total, deduplicated_total, leased_total, expired_total, acked_total, nacked_total,
       dead_lettered_total, counters_since <= clock_timestamp() AS counting
FROM courier.queue_stats WHERE queue = 'sx';

-- Resetting one queue's counters leaves gauges alone.
SELECT courier.stats_reset('sx');
SELECT ready, enqueued_total, acked_total FROM courier.stats('sx');
SELECT regress.try($$SELECT courier.stats('nope')$$);
SELECT regress.try($$SELECT courier.stats(NULL)$$);
SELECT regress.try($$SELECT courier.stats_reset('nope')$$);
SELECT courier.drop_queue('sx');
