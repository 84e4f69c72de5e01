-- Deduplication keys: idempotent enqueue within a per-queue window that survives ack.
SELECT courier.create_queue('dd', dedup_window => '3 seconds');

SELECT * FROM courier.enqueue_unique('dd', '{"event": "evt_1"}', dedup_key => 'evt_1') \gset first_
SELECT :'first_duplicate' AS first_is_duplicate;
-- The same key again: nothing new, the original id, and a flag that says so.
SELECT id = :first_id AS same_id, duplicate FROM courier.enqueue_unique('dd', '{"event": "evt_1", "retry": 2}', dedup_key => 'evt_1');
SELECT courier.enqueue('dd', '{"event": "evt_1", "retry": 3}', dedup_key => 'evt_1') = :first_id AS plain_enqueue_same_id;
SELECT count(*) AS messages FROM courier.message m JOIN courier.queue q USING (queue_id) WHERE q.name = 'dd';

-- The key survives ack: a redelivered webhook after processing is still recognised.
SELECT courier.ack(receipt) AS acked FROM courier.lease('dd');
SELECT duplicate FROM courier.enqueue_unique('dd', '{"event": "evt_1", "retry": 4}', dedup_key => 'evt_1');
SELECT count(*) AS nothing_to_lease FROM courier.lease('dd');

-- Keys are per queue.
SELECT courier.create_queue('dd_other');
SELECT duplicate FROM courier.enqueue_unique('dd_other', '{}', dedup_key => 'evt_1');

-- After the window the key is free again.
SELECT pg_sleep(3.1);
SELECT id <> :first_id AS new_id, duplicate FROM courier.enqueue_unique('dd', '{"event": "evt_1", "late": true}', dedup_key => 'evt_1');
SELECT payload FROM courier.lease('dd');

-- A rolled-back enqueue does not reserve its key.
BEGIN;
SELECT duplicate FROM courier.enqueue_unique('dd', '"rolled back"', dedup_key => 'evt_2');
ROLLBACK;
SELECT duplicate FROM courier.enqueue_unique('dd', '"kept"', dedup_key => 'evt_2');

-- Batches take one key per message; repeats within the batch and keys already taken are
-- duplicates; NULL means no key.
SELECT ord, id IS NOT NULL AS has_id, duplicate
FROM courier.enqueue_batch('dd', ARRAY['"a"', '"b"', '"c"', '"d"', '"e"']::jsonb[],
                           dedup_keys => ARRAY['k_a', 'k_b', 'k_a', NULL, 'evt_2']) WITH ORDINALITY AS b(id, duplicate, ord);
SELECT array_agg(payload ORDER BY id) AS leased FROM courier.lease('dd', 10);

-- Bad keys change nothing.
SELECT regress.messages() AS before \gset
SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.enqueue_unique('dd', '{}', dedup_key => NULL)$$),
    ($$SELECT courier.enqueue_unique('dd', '{}', dedup_key => '')$$),
    ($$SELECT courier.enqueue('dd', '{}', dedup_key => repeat('k', 513))$$),
    ($$SELECT courier.enqueue_batch('dd', ARRAY['{}', '{}']::jsonb[], dedup_keys => ARRAY['k'])$$),
    ($$SELECT courier.enqueue_batch('dd', ARRAY['{}']::jsonb[], dedup_keys => ARRAY[''])$$),
    ($$SELECT courier.enqueue_batch('dd', ARRAY['{}']::jsonb[], dedup_keys => ARRAY[['k']])$$)
) AS v(statement);
SELECT regress.messages() - :before AS changed;
SELECT courier.enqueue('dd', '{}', dedup_key => repeat('k', 512)) > 0 AS longest_key_ok;

-- Expired keys are reclaimed: maintain() catches up on whatever the small sweeps left.
SELECT courier.alter_queue('dd', dedup_window => '1 second');
SELECT count(*) FROM courier.enqueue_batch('dd', (SELECT array_agg(to_jsonb(i)) FROM generate_series(1, 300) AS i),
                                           dedup_keys => (SELECT array_agg('bulk-' || i) FROM generate_series(1, 300) AS i));
SELECT pg_sleep(1.1);
SELECT expired_keys >= 300 AS reclaimed, expired_completed FROM courier.maintain();
SELECT count(*) AS keys_left FROM courier.dedup d JOIN courier.queue q USING (queue_id)
WHERE q.name = 'dd' AND d.expires_at <= clock_timestamp();

SELECT courier.drop_queue('dd'), courier.drop_queue('dd_other');
SELECT count(*) AS keys_after_drop FROM courier.dedup;
