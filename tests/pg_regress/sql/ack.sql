-- ack, nack, extend and their batch and strict forms.
SELECT courier.create_queue('a_main', visibility_timeout => '1 minute');
SELECT count(*) FROM courier.enqueue_batch('a_main', ARRAY['1', '2', '3', '4', '5', '6']::jsonb[]);
CREATE TEMP TABLE held AS SELECT * FROM courier.lease('a_main', 6);
CREATE FUNCTION pg_temp.r(n int) RETURNS uuid LANGUAGE sql AS
    $$ SELECT receipt FROM held WHERE payload = to_jsonb(n) $$;

-- ack removes the message; a second ack with the same receipt does nothing.
SELECT courier.ack(pg_temp.r(1)) AS first, courier.ack(pg_temp.r(1)) AS second;
SELECT count(*) AS gone FROM courier.message WHERE payload = '1';
SELECT regress.try($$SELECT courier.ack(pg_temp.r(1), strict => true)$$);

-- extend pushes the lease out from now; nack releases it (retry_in => '0': at once, instead of
-- after the queue's backoff, which retry.sql covers).
SELECT courier.extend(pg_temp.r(2), '50 minutes') AS extended;
SELECT leased_until BETWEEN clock_timestamp() + '49 minutes' AND clock_timestamp() + '50 minutes' AS pushed
FROM courier.message WHERE payload = '2';
SELECT courier.nack(pg_temp.r(2), retry_in => '0', error => 'worker crashed') AS nacked;
SELECT courier.nack(pg_temp.r(2)) AS nack_again;
SELECT courier.extend(pg_temp.r(2), '1 minute') AS extend_after_nack;
SELECT regress.try($$SELECT courier.extend(pg_temp.r(2), '1 minute', strict => true)$$);
SELECT regress.try($$SELECT courier.nack(pg_temp.r(2), strict => true)$$);
SELECT payload, attempt FROM courier.lease('a_main');
SELECT last_error FROM courier.message WHERE payload = '2';

-- nack with a delay hides the message until then.
SELECT courier.nack(pg_temp.r(3), retry_in => '1 hour') AS nacked;
SELECT visible_at > clock_timestamp() + '59 minutes' AS hidden_for_an_hour FROM courier.message WHERE payload = '3';

-- Batch ack: duplicates count once, stale receipts are skipped, strict is all-or-nothing.
SELECT courier.ack_batch(ARRAY[pg_temp.r(4), pg_temp.r(4), pg_temp.r(1)]) AS acked;
SELECT regress.try($$SELECT courier.ack_batch(ARRAY[pg_temp.r(5), pg_temp.r(4)], strict => true)$$);
SELECT count(*) AS five_still_there FROM courier.message WHERE payload = '5';
SELECT courier.ack_batch(ARRAY[pg_temp.r(5)], strict => true) AS acked;
SELECT courier.nack_batch(ARRAY[pg_temp.r(6), pg_temp.r(5)], retry_in => '0', error => 'batch failed') AS nacked;
SELECT regress.try($$SELECT courier.nack_batch(ARRAY[pg_temp.r(6)], strict => true)$$);

-- Old and new receipts of one message in one batch, the stale one first: the current one wins.
SELECT courier.enqueue('a_main', '"twice"') > 0 AS enqueued;
CREATE TEMP TABLE old_lease AS SELECT receipt FROM courier.lease('a_main', 10) WHERE payload = '"twice"';
SELECT courier.nack(receipt, retry_in => '0') AS nacked FROM old_lease;
CREATE TEMP TABLE new_lease AS SELECT receipt FROM courier.lease('a_main', 10) WHERE payload = '"twice"';
SELECT courier.nack_batch(ARRAY[(SELECT receipt FROM old_lease), (SELECT receipt FROM new_lease)],
                          retry_in => '0') AS nacked;
TRUNCATE new_lease;
INSERT INTO new_lease SELECT receipt FROM courier.lease('a_main', 10) WHERE payload = '"twice"';
SELECT courier.ack_batch(ARRAY[(SELECT receipt FROM old_lease), (SELECT receipt FROM new_lease),
                               (SELECT receipt FROM old_lease)]) AS acked;
SELECT count(*) AS twice_gone FROM courier.message WHERE payload = '"twice"';

-- Long error texts are kept, truncated to 8 kB on a character boundary.
SELECT courier.enqueue('a_main', '"long error"') > 0 AS enqueued;
SELECT courier.nack(receipt, error => repeat(chr(233), 5000)) AS nacked
FROM courier.lease('a_main', 10) WHERE payload = '"long error"';
SELECT octet_length(last_error) AS bytes, length(last_error) AS chars FROM courier.message WHERE payload = '"long error"';

-- Malformed and NULL arguments are errors that change nothing.
SELECT regress.messages() AS before \gset
SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.ack(NULL)$$),
    ($$SELECT courier.ack('not-a-uuid')$$),
    ($$SELECT courier.ack('0e3b8d2c-9a3f-4c1e-8b7a-2f1d0c9e8a7b')$$),
    ($$SELECT courier.ack('00000000-0000-0000-0000-000000000000')$$),
    ($$SELECT courier.ack('00000000-0000-8000-8000-000000000000')$$),
    ($$SELECT courier.ack(pg_temp.r(6), strict => NULL)$$),
    ($$SELECT courier.ack_batch(NULL)$$),
    ($$SELECT courier.ack_batch('{}')$$),
    ($$SELECT courier.ack_batch(ARRAY[pg_temp.r(6), NULL])$$),
    ($$SELECT courier.ack_batch(ARRAY[[pg_temp.r(6)], [pg_temp.r(5)]])$$),
    ($$SELECT courier.ack_batch(ARRAY[pg_temp.r(6), '0e3b8d2c-9a3f-4c1e-8b7a-2f1d0c9e8a7b'])$$),
    ($$SELECT courier.ack_batch((SELECT array_agg(pg_temp.r(6)) FROM generate_series(1, 1001)))$$),
    ($$SELECT courier.nack(pg_temp.r(6), dead => NULL)$$),
    ($$SELECT courier.nack(pg_temp.r(6), retry_in => '-1 second')$$),
    ($$SELECT courier.nack(pg_temp.r(6), retry_in => '400 days')$$),
    ($$SELECT courier.nack_batch(ARRAY[pg_temp.r(6)], retry_in => '-1 second')$$),
    ($$SELECT courier.extend(pg_temp.r(6), NULL)$$),
    ($$SELECT courier.extend(pg_temp.r(6), '0')$$),
    ($$SELECT courier.extend(pg_temp.r(6), '12 hours 1 second')$$),
    ($$SELECT courier.extend(NULL, '1 minute')$$)
) AS v(statement);
SELECT regress.messages() - :before AS changed;

-- Exactly-once processing: the consumer acks in the same transaction as its own writes.
CREATE TABLE regress.processed (payload jsonb);
SELECT courier.create_queue('a_once', visibility_timeout => '200 milliseconds');
SELECT courier.enqueue('a_once', '{"order": 42}') > 0 AS enqueued;
CREATE TEMP TABLE slow AS SELECT * FROM courier.lease('a_once');
SELECT pg_sleep(0.3);
-- The lease expired and another consumer took the message over.
CREATE TEMP TABLE fast AS SELECT * FROM courier.lease('a_once', visibility_timeout => '1 minute');
-- The slow consumer's transaction fails at the ack (QC001), taking its write with it.
\set VERBOSITY sqlstate
BEGIN;
INSERT INTO regress.processed SELECT payload FROM slow;
SELECT courier.ack(receipt, strict => true) FROM slow;
COMMIT;
\set VERBOSITY default
-- The current holder's transaction commits both.
BEGIN;
INSERT INTO regress.processed SELECT payload FROM fast;
SELECT courier.ack(receipt, strict => true) FROM fast;
COMMIT;
SELECT payload FROM regress.processed;
SELECT count(*) AS left_in_queue FROM courier.message m JOIN courier.queue q USING (queue_id) WHERE q.name = 'a_once';

SELECT courier.drop_queue('a_main'), courier.drop_queue('a_once');
DROP TABLE regress.processed;
