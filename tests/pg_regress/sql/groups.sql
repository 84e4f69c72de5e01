-- Message groups: per-key order, one holder per group, no cross-group blocking, dead letters
-- under 'skip' and 'block', redrive, and bad arguments. Payloads are {"n": "<name>"}; helpers
-- report what leases returned by name, never ids, receipts or times.

-- Leases one message at a time and acks it, until nothing is leasable: the delivery order.
CREATE FUNCTION regress.drain(q text, group_batch integer DEFAULT 1, batch integer DEFAULT 1) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    out text := '';
    r record;
    got boolean;
BEGIN
    LOOP
        got := false;
        FOR r IN SELECT * FROM courier.lease(q, batch, group_batch => group_batch) LOOP
            got := true;
            out := out || ' ' || (r.payload->>'n');
            PERFORM courier.ack(r.receipt);
        END LOOP;
        EXIT WHEN NOT got;
        out := out || ' |';
    END LOOP;
    RETURN btrim(out, ' |');
END
$$;

-- The names one lease returns (leases stay held), with their receipts kept for later.
CREATE TABLE regress.held (n text, receipt uuid, attempt integer, group_key text);
CREATE FUNCTION regress.take(q text, batch integer DEFAULT 1, group_batch integer DEFAULT 1,
                             vt interval DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    out text := '';
    r record;
BEGIN
    FOR r IN SELECT * FROM courier.lease(q, batch, vt, group_batch => group_batch) LOOP
        INSERT INTO regress.held VALUES (r.payload->>'n', r.receipt, r.attempt, r.group_key);
        out := out || ' ' || (r.payload->>'n');
    END LOOP;
    RETURN ltrim(out);
END
$$;
CREATE FUNCTION regress.receipt(name text) RETURNS uuid
LANGUAGE sql AS $$ SELECT receipt FROM regress.held WHERE n = name ORDER BY ctid DESC LIMIT 1 $$;

CREATE FUNCTION regress.put(q text, names text, grp text DEFAULT NULL, priority integer DEFAULT 0) RETURNS void
LANGUAGE sql AS $$
    SELECT courier.enqueue(q, jsonb_build_object('n', n), priority => priority, group_key => grp)
    FROM unnest(string_to_array(names, ' ')) WITH ORDINALITY AS u(n, i) ORDER BY i
$$;

-- 1. Order within a group, and the two ways of serving groups.
SELECT courier.create_queue('g_oldest');
SELECT courier.create_queue('g_fair', group_order => 'fair');
SELECT regress.put('g_oldest', 'A1 A2 A3', 'A'), regress.put('g_oldest', 'B1 B2 B3', 'B');
SELECT regress.put('g_fair', 'A1 A2 A3', 'A'), regress.put('g_fair', 'B1 B2 B3', 'B');
SELECT regress.drain('g_oldest') AS oldest, regress.drain('g_fair') AS fair;
-- Groups cost nothing once empty.
SELECT count(*) = 0 AS no_group_rows_left FROM courier.message_group;

-- 2. One holder per group; other groups and ungrouped messages are not blocked by it.
SELECT regress.put('g_oldest', 'A1 A2', 'A'), regress.put('g_oldest', 'B1', 'B'), regress.put('g_oldest', 'U1');
SELECT regress.take('g_oldest') AS first;
SELECT regress.take('g_oldest', 10) AS while_a_is_held;
SELECT regress.take('g_oldest', 10) AS nothing_more;
SELECT group_key, ready, in_flight, blocked, head_available_at > now() AS held
FROM courier.queue_groups WHERE queue = 'g_oldest' ORDER BY group_key;
SELECT courier.ack(regress.receipt('A1')) AS acked_a1;
SELECT regress.take('g_oldest', 10) AS after_ack;
SELECT courier.ack_batch(ARRAY[regress.receipt('A2'), regress.receipt('B1'), regress.receipt('U1')]) AS acked;
SELECT count(*) = 0 AS empty FROM courier.message_group;

-- 3. group_batch: a consecutive prefix of one group; the lease's column group_key.
TRUNCATE regress.held;
SELECT regress.put('g_oldest', 'A1 A2 A3 A4', 'A'), regress.put('g_oldest', 'B1 B2', 'B');
SELECT regress.take('g_oldest', 10, 3) AS prefixes;
SELECT n, attempt, group_key FROM regress.held WHERE n IN ('A1', 'A2', 'A3', 'B1', 'B2') ORDER BY n;
SELECT regress.take('g_oldest', 10, 3) AS nothing_while_held;

-- 4. A nack returns the message to the head of its group: the later messages its lease took go
-- back too, their receipts stop working and their deliveries do not count.
SELECT courier.nack(regress.receipt('A2'), retry_in => '0') AS nacked_a2;
SELECT courier.ack(regress.receipt('A3')) AS stale_a3_ack;
SELECT courier.ack(regress.receipt('A1')) AS a1_still_acks;
SELECT regress.take('g_oldest', 10, 5) AS redelivered;
SELECT n, attempt FROM regress.held WHERE n IN ('A2', 'A3', 'A4') ORDER BY ctid DESC LIMIT 3;
SELECT courier.ack_batch(ARRAY[regress.receipt('A2'), regress.receipt('A3'), regress.receipt('A4'),
                               regress.receipt('B1'), regress.receipt('B2')]) AS acked;

-- 5. Priority never reorders a group; a group competes with its head's priority.
SELECT regress.put('g_oldest', 'A1', 'A', 0), regress.put('g_oldest', 'A2', 'A', 10),
       regress.put('g_oldest', 'B1', 'B', 5), regress.put('g_oldest', 'U1', NULL, 3);
SELECT regress.drain('g_oldest') AS by_head_priority;

-- 6. A delayed head holds back its group, and only its group.
SELECT courier.enqueue('g_oldest', '{"n": "A1"}', delay => '1 hour', group_key => 'A') IS NOT NULL AS enqueued;
SELECT regress.put('g_oldest', 'A2', 'A'), regress.put('g_oldest', 'B1', 'B');
SELECT regress.drain('g_oldest') AS delayed_head;
SELECT ready, delayed, groups, groups_held, groups_blocked FROM courier.stats('g_oldest');
-- The ages count messages in groups: A2 waits behind its head; then a lease of C's head runs.
SELECT oldest_ready_age IS NOT NULL AS follower_waits, oldest_lease_age IS NULL AS no_lease
FROM courier.stats('g_oldest');
SELECT regress.put('g_oldest', 'C1', 'C');
SELECT count(*) AS leased FROM courier.lease('g_oldest');
SELECT oldest_lease_age IS NOT NULL AS lease_age_seen FROM courier.stats('g_oldest');
SELECT courier.purge_queue('g_oldest') AS purged;
SELECT count(*) = 0 AS purge_took_the_groups FROM courier.message_group;

-- 7. Batches: group keys per message (NULL: ungrouped), numbered in input order per group.
SELECT count(*) FROM courier.enqueue_batch('g_oldest',
    ARRAY['{"n": "A1"}', '{"n": "B1"}', '{"n": "U1"}', '{"n": "A2"}', '{"n": "B2"}']::jsonb[],
    group_keys => ARRAY['A', 'B', NULL, 'A', 'B']);
SELECT regress.drain('g_oldest', 2, 10) AS batch_order;
-- With dedup keys: a duplicate touches no group.
SELECT duplicate FROM courier.enqueue_batch('g_oldest',
    ARRAY['{"n": "A1"}', '{"n": "A2"}', '{"n": "A3"}']::jsonb[],
    dedup_keys => ARRAY['k1', 'k2', 'k1'], group_keys => ARRAY['A', 'A', 'A']);
SELECT duplicate FROM courier.enqueue_unique('g_oldest', '{"n": "A4"}', 'k2', group_key => 'A');
SELECT duplicate FROM courier.enqueue_unique('g_oldest', '{"n": "A4"}', 'k4', group_key => 'A');
SELECT regress.drain('g_oldest') AS dedup_order;

-- 8. Dead letters under 'skip' (the default): the next message becomes the head.
SELECT courier.create_queue('g_skip', max_attempts => 5);
SELECT regress.put('g_skip', 'A1 A2', 'A');
SELECT regress.take('g_skip') AS leased;
SELECT courier.nack(regress.receipt('A1'), dead => true, error => 'poison') AS dead;
SELECT queue, group_key, attempts, last_error FROM courier.dead_letters WHERE queue = 'g_skip';
SELECT regress.drain('g_skip') AS after_skip;
-- Redrive puts it back at the end of its group.
SELECT regress.put('g_skip', 'A3', 'A');
SELECT courier.redrive('g_skip') AS redriven;
SELECT regress.drain('g_skip') AS redrive_at_tail;

-- 9. Under 'block' the group waits for its dead letter; other groups do not.
SELECT courier.create_queue('g_block', group_on_dead => 'block');
SELECT regress.put('g_block', 'A1 A2', 'A'), regress.put('g_block', 'B1', 'B');
SELECT regress.take('g_block') AS leased;
SELECT courier.nack(regress.receipt('A1'), dead => true) AS dead;
SELECT regress.drain('g_block') AS blocked_a;
SELECT group_key, blocked, head_available_at IS NULL AS no_head_time FROM courier.queue_groups WHERE queue = 'g_block';
SELECT groups, groups_blocked, dead FROM courier.stats('g_block');
-- Redrive puts it back in place, at the head.
SELECT regress.put('g_block', 'A3', 'A');
SELECT courier.redrive('g_block') AS redriven;
SELECT regress.drain('g_block') AS redrive_in_place;

-- 10. 'block' with a dead-letter queue: the group remembers the dead letter that moved away and
-- waits until it is acked (or redriven, or purged) there.
SELECT courier.create_queue('g_dlq');
SELECT courier.alter_queue('g_block', dead_letter_queue => 'g_dlq');
SELECT regress.put('g_block', 'A1 A2', 'A');
SELECT regress.take('g_block') AS leased;
SELECT courier.nack(regress.receipt('A1'), dead => true) AS dead;
SELECT regress.take('g_block') AS blocked;
SELECT queue, group_key FROM courier.dead_letters;
SELECT regress.drain('g_dlq') AS dead_letter_acked_in_dlq;
SELECT regress.drain('g_block') AS unblocked;
-- Purging the dead-letter queue unblocks too.
SELECT regress.put('g_block', 'A1 A2', 'A');
SELECT regress.take('g_block') AS leased;
SELECT courier.nack(regress.receipt('A1'), dead => true) AS dead;
SELECT courier.purge_queue('g_dlq') AS purged;
SELECT regress.drain('g_block') AS unblocked_by_purge;
-- And redriving it from there puts it back in place.
SELECT regress.put('g_block', 'A1 A2', 'A');
SELECT regress.take('g_block') AS leased;
SELECT courier.nack(regress.receipt('A1'), dead => true) AS dead;
SELECT courier.redrive('g_dlq') AS redriven;
SELECT regress.drain('g_block') AS redriven_in_place;
SELECT courier.alter_queue('g_block', dead_letter_queue => '');

-- 11. A rolled-back lease, ack or enqueue leaves the group as it was.
SELECT regress.put('g_skip', 'A1 A2', 'A');
BEGIN;
SELECT regress.take('g_skip') AS leased_then_rolled_back;
ROLLBACK;
SELECT regress.take('g_skip') AS leased_again;
BEGIN;
SELECT courier.ack(regress.receipt('A1')) AS acked_then_rolled_back;
ROLLBACK;
SELECT regress.take('g_skip') AS still_held;
BEGIN;
SELECT courier.enqueue('g_skip', '{"n": "C1"}', group_key => 'C') IS NOT NULL AS enqueued_then_rolled_back;
ROLLBACK;
SELECT count(*) FILTER (WHERE group_key = 'C') = 0 AS no_group_c FROM courier.message_group;
SELECT courier.ack(regress.receipt('A1')) AS acked;
SELECT regress.drain('g_skip') AS rest;

-- 12. Extend keeps the group held; when the lease ends, the group's messages come again in
-- their order, and the receipts of the lease that ended stop working for what the next lease
-- took and for what it fenced.
TRUNCATE regress.held;
SELECT regress.put('g_skip', 'A1 A2 A3', 'A');
SELECT regress.take('g_skip', 10, 3, '100 milliseconds') AS leased;
CREATE TABLE regress.old_receipts AS SELECT n, receipt FROM regress.held;
SELECT courier.extend(regress.receipt('A1'), '10 minutes') AS extended;
SELECT head_available_at > now() + interval '5 minutes' AS held_for_the_extension
FROM courier.queue_groups WHERE queue = 'g_skip';
SELECT pg_sleep(0.2);
SELECT regress.take('g_skip', 10, 3) AS a2_a3_expired_but_a1_holds;
SELECT courier.extend(regress.receipt('A1'), '50 milliseconds') AS shortened;
SELECT pg_sleep(0.1);
SELECT regress.take('g_skip', 10, 1, '50 milliseconds') AS expired_taking_one;
SELECT n, courier.ack(receipt) AS old_receipt_acks FROM regress.old_receipts ORDER BY n;
SELECT pg_sleep(0.1);
SELECT regress.take('g_skip', 10, 3) AS expired_again_taking_all;
SELECT courier.ack_batch(ARRAY[regress.receipt('A1'), regress.receipt('A2'), regress.receipt('A3')]) AS fresh_receipts_ack;
SELECT n, attempt FROM regress.held ORDER BY ctid DESC LIMIT 3;
DROP TABLE regress.old_receipts;

-- 13. Bad arguments: an error naming the argument, and nothing changed.
SELECT regress.messages() AS before;
SELECT regress.try($$SELECT courier.enqueue('g_skip', '{}', group_key => '')$$);
SELECT regress.try($$SELECT courier.enqueue('g_skip', '{}', group_key => repeat('k', 513))$$);
SELECT regress.try($$SELECT courier.enqueue('g_skip', '{}', group_key => repeat('k', 512))$$);
SELECT regress.try($$SELECT * FROM courier.enqueue_unique('g_skip', '{}', 'key', group_key => '')$$);
SELECT regress.try($$SELECT * FROM courier.enqueue_batch('g_skip', ARRAY['{}']::jsonb[], group_keys => ARRAY['a', 'b'])$$);
SELECT regress.try($$SELECT * FROM courier.enqueue_batch('g_skip', ARRAY['{}', '{}']::jsonb[], group_keys => ARRAY['a', ''])$$);
SELECT regress.try($$SELECT * FROM courier.enqueue_batch('g_skip', ARRAY['{}']::jsonb[], group_keys => ARRAY[['a']])$$);
SELECT regress.try($$SELECT * FROM courier.lease('g_skip', group_batch => 0)$$);
SELECT regress.try($$SELECT * FROM courier.lease('g_skip', group_batch => 1001)$$);
SELECT regress.try($$SELECT * FROM courier.lease('g_skip', group_batch => NULL)$$);
SELECT regress.try($$SELECT courier.create_queue('g_bad', group_on_dead => 'drop')$$);
SELECT regress.try($$SELECT courier.create_queue('g_bad', group_order => NULL)$$);
SELECT regress.try($$SELECT courier.alter_queue('g_skip', group_order => 'random')$$);
SELECT regress.messages() - 1 AS after_minus_the_512_byte_key, count(*) AS groups FROM courier.message_group;
SELECT courier.purge_queue('g_skip') AS purged;

-- Many grouped leases in one transaction, past the subtransactions courier may keep in one
-- (xact.rs: each lease locks its candidates in one; after 32 it rolls them back and locks what it
-- takes again): each lease still takes one group's head, and no group twice. (That the
-- subtransactions kept stay bounded is the in-process test grouped_leases_keep_few_subtransactions.)
SELECT courier.create_queue('g_many');
SELECT count(*) AS enqueued FROM courier.enqueue_batch('g_many',
    (SELECT array_agg(jsonb_build_object('n', i / 50) ORDER BY i) FROM generate_series(0, 99) i),
    group_keys => (SELECT array_agg('k' || (i % 50) ORDER BY i) FROM generate_series(0, 99) i));
BEGIN;
SELECT count(*) AS leased, count(DISTINCT l.group_key) AS groups, bool_and((l.payload->>'n')::int = 0) AS heads_only
FROM generate_series(1, 60) i, LATERAL courier.lease('g_many', 1 + 0 * i) l;
COMMIT;
SELECT courier.drop_queue('g_many');

-- How a grouped enqueue writes: a group's first message through the statement that creates the
-- group's row (it becomes the head); a message behind others straight into the table, the row's
-- counter advanced in place (storage/direct.rs). A rolled-back enqueue leaves its number unused,
-- which changes nothing in the order.
SELECT courier.create_queue('g_path');
SELECT courier.enqueue('g_path', '{"n": 1}', group_key => 'k') > 0 AS enqueued, courier._last_enqueue_path() AS first_path;
SELECT courier.enqueue('g_path', '{"n": 2}', group_key => 'k') > 0 AS enqueued, courier._last_enqueue_path() AS behind_path;
BEGIN;
SELECT courier.enqueue('g_path', '{"n": "rolled back"}', group_key => 'k') > 0 AS enqueued;
ROLLBACK;
SELECT courier.enqueue('g_path', '{"n": 3}', group_key => 'k', delay => '1 hour') > 0 AS enqueued;
SELECT m.group_seq, m.payload, m.visible_at = 'infinity'::timestamptz OR m.visible_at > now() + interval '1000 years' AS parked,
       m.head_at IS NOT NULL AS head, m.group_ready_at > now() + interval '50 minutes' AS delayed
FROM courier.message m JOIN courier.queue q USING (queue_id) WHERE q.name = 'g_path' ORDER BY m.group_seq;
SELECT array_agg(payload->>'n') AS leased FROM courier.lease('g_path', 10, group_batch => 10);
SELECT courier.drop_queue('g_path');

-- The settings are in courier.queues.
SELECT queue, group_on_dead, group_order FROM courier.queues WHERE queue LIKE 'g\_%' ORDER BY queue;

SELECT courier.drop_queue(q) FROM unnest(ARRAY['g_oldest', 'g_fair', 'g_skip', 'g_block', 'g_dlq']) AS q;
SELECT count(*) = 0 AS no_groups_left FROM courier.message_group;
DROP FUNCTION regress.drain(text, integer, integer), regress.take(text, integer, integer, interval),
    regress.receipt(text), regress.put(text, text, text, integer);
DROP TABLE regress.held;
