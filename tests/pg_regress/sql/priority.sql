-- Priorities and scheduling.
SELECT courier.create_queue('pr');

-- Higher priority first; FIFO within a priority.
SELECT count(*) FROM (
    SELECT courier.enqueue('pr', to_jsonb(label), priority => p)
    FROM (VALUES ('low-1', -5), ('normal-1', 0), ('high-1', 10), ('normal-2', 0), ('high-2', 10),
                 ('low-2', -5), ('top', 32767), ('bottom', -32768)) AS v(label, p)) s;
SELECT payload, priority FROM courier.lease('pr', 3);
SELECT payload, priority FROM courier.lease('pr', 10);

-- A high-priority message that is not ready does not hold back lower ones.
SELECT courier.enqueue('pr', '"later but urgent"', priority => 100, delay => '1 hour') > 0 AS enqueued;
SELECT courier.enqueue('pr', '"now"', priority => 1) > 0 AS enqueued;
SELECT payload FROM courier.lease('pr', 10);

-- Priorities in a batch.
SELECT count(*) FROM courier.enqueue_batch('pr', ARRAY['"b1"', '"b2"']::jsonb[], priority => 3);
SELECT courier.enqueue('pr', '"single"', priority => 4) > 0 AS enqueued;
SELECT payload, priority FROM courier.lease('pr', 10);

-- not_before: an absolute time. In the past it means now.
SELECT courier.enqueue('pr', '"in the past"', not_before => now() - interval '1 day') > 0 AS enqueued;
SELECT courier.enqueue('pr', '"soon"', not_before => clock_timestamp() + interval '1 second') > 0 AS enqueued;
SELECT payload FROM courier.lease('pr', 10);
SELECT pg_sleep(1.1);
SELECT payload FROM courier.lease('pr', 10);
-- A future not_before is kept to the microsecond.
SELECT (clock_timestamp() + interval '30 days')::text AS far \gset
SELECT courier.enqueue('pr', '"far"', not_before => :'far') AS far_id \gset
SELECT visible_at = :'far'::timestamptz AS scheduled_exactly FROM courier.message WHERE id = :far_id;
SELECT courier.purge_queue('pr');

SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.enqueue('pr', '{}', priority => 32768)$$),
    ($$SELECT courier.enqueue('pr', '{}', priority => -32769)$$),
    ($$SELECT courier.enqueue('pr', '{}', priority => NULL)$$),
    ($$SELECT courier.enqueue('pr', '{}', delay => '1 minute', not_before => clock_timestamp())$$),
    ($$SELECT courier.enqueue('pr', '{}', not_before => 'infinity')$$),
    ($$SELECT courier.enqueue('pr', '{}', not_before => '-infinity')$$),
    ($$SELECT courier.enqueue('pr', '{}', not_before => clock_timestamp() + interval '400 days')$$),
    ($$SELECT courier.enqueue_batch('pr', ARRAY['{}']::jsonb[], priority => 99999)$$)
) AS v(statement);
SELECT count(*) AS nothing_left FROM courier.lease('pr', 10);

SELECT courier.drop_queue('pr');
