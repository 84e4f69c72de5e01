-- Retention: an audit trail of acked messages, off by default, bounded by a retention interval.
SELECT courier.create_queue('rn_off');
SELECT courier.create_queue('rn', retention => '1 hour');
SELECT courier.enqueue('rn', '{"order": 1}', headers => '{"trace": "t1"}', priority => 2) AS kept_id \gset
SELECT courier.enqueue('rn_off', '{"order": 2}') > 0 AS enqueued;
SELECT courier.ack(receipt) FROM courier.lease('rn');
SELECT courier.ack(receipt) FROM courier.lease('rn_off');
SELECT queue, id = :kept_id AS same_id, attempt, priority, headers, payload,
       completed_at >= enqueued_at AS completed_after_enqueue
FROM courier.completed_messages;
-- Batch acks are kept too; nacks and dead letters are not completions.
SELECT count(*) FROM courier.enqueue_batch('rn', ARRAY['"b1"', '"b2"', '"b3"']::jsonb[]);
SELECT courier.ack_batch(array_agg(receipt)) FROM courier.lease('rn', 2);
SELECT courier.nack(receipt, dead => true) FROM courier.lease('rn');
SELECT array_agg(payload ORDER BY id) FROM courier.completed_messages WHERE queue = 'rn';

-- Shorter retention: older completions go at the next sweep.
SELECT courier.alter_queue('rn', retention => '1 second');
SELECT pg_sleep(1.1);
SELECT expired_completed FROM courier.maintain();
SELECT count(*) AS kept FROM courier.completed_messages;
-- Turning retention off stops keeping them.
SELECT courier.enqueue('rn', '"after"') > 0 AS enqueued;
SELECT courier.alter_queue('rn', retention => '0');
SELECT courier.ack(receipt) FROM courier.lease('rn');
SELECT count(*) AS kept FROM courier.completed_messages;

SELECT regress.try($$SELECT courier.alter_queue('rn', retention => '-1 hour')$$);
SELECT regress.try($$SELECT courier.maintain(0)$$);
SELECT courier.drop_queue('rn'), courier.drop_queue('rn_off');
SELECT count(*) AS completed_after_drop FROM courier.completed;
