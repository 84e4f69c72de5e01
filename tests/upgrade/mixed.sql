-- The new library with the OLD SQL still in place (the package was replaced, ALTER EXTENSION
-- UPDATE has not run yet): the core API must work, old receipts included. Every row must be t.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
SELECT extversion = :'old_version' AS still_old FROM pg_extension WHERE extname = 'courier';

SET ROLE up_producer;
SELECT courier.enqueue('up_orders', '{"n": "mixed"}') > 0 AS enqueue;
SELECT count(*) = 2 AS enqueue_batch FROM courier.enqueue_batch('up_orders', ARRAY['{"n": "m1"}', '{"n": "m2"}']::jsonb[]);
SELECT duplicate AS dedup_key_kept FROM courier.enqueue_unique('up_orders', '{"n": "again"}', 'key-1');
RESET ROLE;

SET ROLE up_consumer;
SELECT courier.ack(receipt) AS old_receipt_acks FROM upgrade_state.receipt WHERE name = 'ack_mixed';
SELECT courier.nack(receipt, retry_in => '0', error => 'mixed') AS old_receipt_nacks
FROM upgrade_state.receipt WHERE name = 'nack_mixed';
-- Ready now: the three just enqueued and the one just nacked.
SELECT count(*) = 3 AND bool_and(courier.ack(receipt)) AS lease_and_ack
FROM courier.lease('up_orders', 3);
WITH l AS (SELECT receipt FROM courier.lease('up_orders', 10))
SELECT courier.ack_batch(ARRAY(SELECT receipt FROM l)) = (SELECT count(*) FROM l)
       AND (SELECT count(*) FROM l) = 1 AS lease_batch_and_ack_batch;
RESET ROLE;

SELECT enqueued_total IS NOT NULL AND acked_total IS NOT NULL AS stats FROM courier.stats('up_orders');
SELECT count(*) = 4 AS queue_stats FROM courier.queue_stats;
