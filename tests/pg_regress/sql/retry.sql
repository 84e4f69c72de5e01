-- Retries with backoff, max attempts, dead letters and redrive.
SELECT courier.create_queue('rt_dlq');
SELECT courier.create_queue('rt', max_attempts => 3, dead_letter_queue => 'rt_dlq',
                            retry_base => '10 seconds', retry_max => '25 seconds', retry_jitter => 0);

-- nack without retry_in follows the queue's backoff: 10 s, 20 s, then the 25 s cap.
SELECT courier.enqueue('rt', '"flaky"') AS flaky \gset
CREATE FUNCTION pg_temp.fail_once(expect_delay interval) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r record;
    delay interval;
BEGIN
    UPDATE courier.message SET visible_at = clock_timestamp() WHERE payload = '"flaky"';   -- skip the wait
    SELECT * INTO r FROM courier.lease('rt');
    PERFORM courier.nack(r.receipt, error => 'attempt ' || r.attempt || ' failed');
    SELECT visible_at - clock_timestamp() INTO delay FROM courier.message WHERE id = r.id;
    RETURN format('attempt %s: retry in about %s s: %s', r.attempt, extract(epoch FROM expect_delay),
                  delay BETWEEN expect_delay - interval '1 second' AND expect_delay);
END $$;
SELECT pg_temp.fail_once('10 seconds');
SELECT pg_temp.fail_once('20 seconds');
-- The third attempt was the last: its nack dead-letters the message.
UPDATE courier.message SET visible_at = clock_timestamp() WHERE id = :flaky;
SELECT attempt, courier.nack(receipt, error => 'third strike') AS nacked FROM courier.lease('rt');
SELECT queue, id = :flaky AS same_id, origin_queue, attempts, last_error, dead_at IS NOT NULL AS dead
FROM courier.dead_letters;
-- In the dead-letter queue it is an ordinary ready message, starting again at attempt 1.
CREATE TEMP TABLE dlq_lease AS SELECT * FROM courier.lease('rt_dlq', visibility_timeout => '1 minute');
SELECT payload, attempt, last_error FROM dlq_lease;

-- Jitter only ever shortens the delay: 100 nacks with jitter 0.5 land between 5 and 10 s.
SELECT courier.create_queue('rt_jitter', retry_base => '10 seconds', retry_jitter => 0.5, max_attempts => 0);
SELECT count(*) FROM courier.enqueue_batch('rt_jitter', (SELECT array_agg(to_jsonb(i)) FROM generate_series(1, 100) AS i));
SELECT courier.nack_batch(array_agg(receipt)) FROM courier.lease('rt_jitter', 100);
SELECT bool_and(visible_at - clock_timestamp() BETWEEN interval '4 seconds' AND interval '10 seconds') AS within_bounds,
       count(DISTINCT date_trunc('second', visible_at)) > 1 AS spread_out
FROM courier.message m JOIN courier.queue q USING (queue_id) WHERE q.name = 'rt_jitter';

-- retry_in overrides the policy; dead => true dead-letters at once whatever the attempt count.
SELECT courier.enqueue('rt', '"poison"') > 0 AS enqueued;
SELECT courier.nack(receipt, dead => true, error => 'unparseable') AS nacked FROM courier.lease('rt');
SELECT origin_queue, attempts, last_error FROM courier.dead_letters WHERE payload = '"poison"';

-- Attempts also run out through lease expiry, without any nack.
SELECT courier.create_queue('rt_expire', max_attempts => 2, dead_letter_queue => 'rt_dlq');
SELECT courier.enqueue('rt_expire', '"stuck"') > 0 AS enqueued;
SELECT attempt FROM courier.lease('rt_expire', visibility_timeout => '100 milliseconds');
SELECT pg_sleep(0.15);
SELECT attempt FROM courier.lease('rt_expire', visibility_timeout => '100 milliseconds');
SELECT pg_sleep(0.15);
SELECT count(*) AS not_delivered_a_third_time FROM courier.lease('rt_expire');
SELECT origin_queue, attempts FROM courier.dead_letters WHERE payload = '"stuck"';

-- Without a dead-letter queue a dead message stays where it is, out of reach of lease, until
-- redriven or purged.
SELECT courier.create_queue('rt_park', max_attempts => 1);
SELECT courier.enqueue('rt_park', '"parked"') > 0 AS enqueued;
SELECT courier.nack(receipt, retry_in => '0') AS nacked FROM courier.lease('rt_park');
SELECT count(*) AS leasable FROM courier.lease('rt_park');
SELECT queue, origin_queue IS NULL AS in_place, attempts FROM courier.dead_letters WHERE payload = '"parked"';
SELECT ready, dead FROM courier.stats('rt_park');

-- Redrive never takes a message a consumer holds: "flaky" is leased in the dead-letter queue.
SELECT courier.redrive('rt_dlq', message_ids => ARRAY[:flaky]::bigint[]);
SELECT courier.nack(receipt, retry_in => '0') AS released FROM dlq_lease;
-- Now a filtered redrive moves just that one back, attempts reset; then the rest.
SELECT courier.redrive('rt_dlq', message_ids => ARRAY[:flaky]::bigint[]);
SELECT payload, attempt FROM courier.lease('rt', visibility_timeout => '1 minute');
SELECT payload, origin_queue FROM courier.dead_letters ORDER BY id;
SELECT courier.redrive('rt_dlq');
SELECT courier.redrive('rt_park');
SELECT q.name AS queue, array_agg(m.payload ORDER BY m.id) AS ready
FROM courier.message m JOIN courier.queue q USING (queue_id)
WHERE q.name LIKE 'rt%' AND m.lease_token IS NULL AND q.name <> 'rt_jitter'
GROUP BY q.name ORDER BY q.name;
SELECT count(*) AS dead_letters_left FROM courier.dead_letters;
SELECT payload, attempt FROM courier.lease('rt_park');

-- Dead letters whose origin queue is gone stay put.
SELECT courier.enqueue('rt_expire', '"orphan"') > 0 AS enqueued;
SELECT courier.nack(receipt, dead => true) FROM courier.lease('rt_expire', 10) WHERE payload = '"orphan"';
SELECT courier.alter_queue('rt_expire', dead_letter_queue => '');
SELECT courier.drop_queue('rt_expire');
SELECT courier.redrive('rt_dlq');
SELECT origin_queue IS NULL AS origin_gone FROM courier.dead_letters WHERE payload = '"orphan"';

SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.redrive(NULL)$$),
    ($$SELECT courier.redrive('rt_none')$$),
    ($$SELECT courier.redrive('rt_dlq', message_ids => ARRAY[1, NULL]::bigint[])$$),
    ($$SELECT courier.redrive('rt_dlq', max_messages => 0)$$),
    ($$SELECT courier.redrive('rt_dlq', max_messages => 10001)$$),
    ($$SELECT courier.nack_batch(ARRAY['00000000-0000-8000-8400-000000000001']::uuid[], dead => NULL)$$)
) AS v(statement);

SELECT courier.alter_queue('rt', dead_letter_queue => '');
SELECT courier.drop_queue(q) FROM unnest(ARRAY['rt', 'rt_dlq', 'rt_jitter', 'rt_park']) AS q;
