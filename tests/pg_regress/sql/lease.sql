-- lease: order, visibility timeout, redelivery, and bad arguments.
SELECT courier.create_queue('l_main', visibility_timeout => '10 minutes');
SELECT array_agg(id ORDER BY id) AS ids FROM courier.enqueue_batch('l_main',
    ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}', '{"n": 5}']::jsonb[]) AS id \gset

-- Oldest first, in enqueue order; each lease is attempt 1 with a version-8 UUID receipt.
CREATE TEMP TABLE first_lease AS SELECT * FROM courier.lease('l_main', 2);
SELECT payload, attempt, substr(receipt::text, 15, 1) AS uuid_version,
       enqueued_at <= clock_timestamp() AS enqueued_in_past,
       lease_expires_at BETWEEN clock_timestamp() + '9 minutes' AND clock_timestamp() + '10 minutes' AS queue_timeout
FROM first_lease ORDER BY id;
SELECT array_agg(id ORDER BY id) = (:'ids'::bigint[])[1:2] AS first_two FROM first_lease;
SELECT count(DISTINCT receipt) AS distinct_receipts FROM first_lease;

-- Leased messages are invisible; the rest come next, still in order.
SELECT payload FROM courier.lease('l_main', 10);
SELECT count(*) AS nothing_left FROM courier.lease('l_main', 10);

-- A lease that expires makes the message leasable again: attempt 2, a new receipt.
SELECT courier.create_queue('l_expiry');
SELECT courier.enqueue('l_expiry', '"again"') AS expiry_id \gset
CREATE TEMP TABLE lease1 AS SELECT * FROM courier.lease('l_expiry', visibility_timeout => '1 second');
SELECT count(*) AS still_leased FROM courier.lease('l_expiry');
SELECT pg_sleep(1.1);
CREATE TEMP TABLE lease2 AS SELECT * FROM courier.lease('l_expiry');
SELECT l2.id = l1.id AS same_message, l2.attempt, l2.receipt <> l1.receipt AS new_receipt,
       l2.lease_expires_at BETWEEN clock_timestamp() + '29 seconds' AND clock_timestamp() + '30 seconds' AS default_timeout
FROM lease1 l1, lease2 l2;
-- The first receipt is now stale; the second one works.
SELECT courier.ack(receipt) AS stale_ack FROM lease1;
SELECT courier.ack(receipt) AS current_ack FROM lease2;

-- Batch bounds.
SELECT count(*) FROM courier.enqueue_batch('l_expiry', (SELECT array_agg(to_jsonb(i)) FROM generate_series(1, 1000) AS i));
SELECT count(*) FROM courier.enqueue_batch('l_expiry', (SELECT array_agg(to_jsonb(i)) FROM generate_series(1001, 1200) AS i));
SELECT count(*) AS max_batch FROM courier.lease('l_expiry', 1000);
SELECT count(*) AS rest FROM courier.lease('l_expiry', 1000);

-- Bad arguments change nothing.
SELECT courier.enqueue('l_expiry', '"untouched"') > 0 AS enqueued;
SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.lease(NULL)$$),
    ($$SELECT courier.lease('')$$),
    ($$SELECT courier.lease('bad;name')$$),
    ($$SELECT courier.lease('no_such_queue')$$),
    ($$SELECT courier.lease('l_expiry', NULL)$$),
    ($$SELECT courier.lease('l_expiry', 0)$$),
    ($$SELECT courier.lease('l_expiry', -1)$$),
    ($$SELECT courier.lease('l_expiry', 1001)$$),
    ($$SELECT courier.lease('l_expiry', 2147483647)$$),
    ($$SELECT courier.lease('l_expiry', visibility_timeout => '0')$$),
    ($$SELECT courier.lease('l_expiry', visibility_timeout => '-5 seconds')$$),
    ($$SELECT courier.lease('l_expiry', visibility_timeout => '13 hours')$$),
    ($$SELECT courier.lease('l_expiry', visibility_timeout => '1000 years')$$)
) AS v(statement);
SELECT payload, attempt FROM courier.lease('l_expiry');

-- A rolled-back lease leaves the message as it was.
SELECT courier.enqueue('l_expiry', '"rollback"') > 0 AS enqueued;
BEGIN;
SELECT payload, attempt FROM courier.lease('l_expiry');
ROLLBACK;
SELECT payload, attempt FROM courier.lease('l_expiry');

-- An empty queue leases nothing.
SELECT count(*) AS empty FROM courier.lease('l_main');

SELECT courier.drop_queue('l_main'), courier.drop_queue('l_expiry');
