-- After ALTER EXTENSION courier UPDATE: every piece of state the old version left still works.
-- Every row must be t.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
SELECT extversion = :'new_version' AS updated FROM pg_extension WHERE extname = 'courier';
SELECT courier.version() = :'new_version' AS library_version;

-- Receipts leased before the upgrade act, or are refused exactly as before.
SET ROLE up_consumer;
SELECT courier.extend(receipt, '5 minutes') AS old_receipt_extends FROM upgrade_state.receipt WHERE name = 'extend_after';
SELECT courier.ack(receipt) AS old_receipt_acks FROM upgrade_state.receipt WHERE name = 'ack_after';
SELECT NOT courier.ack(receipt) AS superseded_receipt_refused FROM upgrade_state.receipt WHERE name = 'stale';
SELECT courier.ack(receipt) AS newer_receipt_acks FROM upgrade_state.receipt WHERE name = 'relet';
SELECT NOT courier.ack(receipt) AS acked_receipt_refused FROM upgrade_state.receipt WHERE name = 'ack_after';
DO $$
BEGIN
    PERFORM courier.ack(receipt, strict => true) FROM upgrade_state.receipt WHERE name = 'stale';
    RAISE EXCEPTION 'strict ack of a superseded receipt did not fail';
EXCEPTION WHEN SQLSTATE 'QC001' THEN NULL;
END $$;
SELECT true AS strict_refusal_raises_qc001;
RESET ROLE;

-- Dedup keys still deduplicate; delayed and scheduled messages are still delayed.
SET ROLE up_producer;
SELECT duplicate AS dedup_key_kept FROM courier.enqueue_unique('up_orders', '{"n": "again"}', 'key-1');
RESET ROLE;
SELECT delayed >= 2 AS still_delayed FROM courier.stats('up_orders');

-- Grants hold: the producer may enqueue but not lease, the consumer lease but not enqueue.
SET ROLE up_producer;
SELECT courier.enqueue('up_orders', '{"n": "after"}') > 0 AS producer_enqueues;
DO $$
BEGIN
    PERFORM courier.lease('up_orders');
    RAISE EXCEPTION 'the producer could lease';
EXCEPTION WHEN insufficient_privilege THEN NULL;
END $$;
RESET ROLE;
SET ROLE up_consumer;
DO $$
BEGIN
    PERFORM courier.enqueue('up_orders', '{}');
    RAISE EXCEPTION 'the consumer could enqueue';
EXCEPTION WHEN insufficient_privilege THEN NULL;
END $$;
SELECT courier.has_queue_privilege('up_orders', 'consume') AS consumer_consumes;
RESET ROLE;
SET ROLE up_admin;
-- The grants on stats and queue_stats survived their re-creation.
SELECT count(*) = 1 AS admin_calls_stats FROM courier.stats('up_orders');
SELECT count(*) = 4 AS admin_reads_queue_stats FROM courier.queue_stats;
-- enqueue and consume on up_orders, and 'all' (three privileges) to public on up_prio.
SELECT count(*) = 5 AS privileges_listed FROM courier.queue_privileges;
RESET ROLE;

-- Dead letters redrive: back to the queue they came from, or revived in place.
SELECT courier.redrive('up_dlq') = 1 AS redriven_to_origin;
SELECT courier.redrive('up_parked') = 1 AS revived_in_place;
SELECT count(*) = 0 AS no_dead_letters_left FROM courier.dead_letters;
SELECT count(*) = 1 AS poison_back_home FROM courier.lease('up_orders') WHERE payload = '{"n": "poison"}';

-- Counters continue from where they were.
SELECT courier.enqueue('up_dlq', '{"n": "after"}') > 0 AS enqueued;
SELECT bool_and(courier.ack(receipt)) AS acked FROM courier.lease('up_dlq');
SELECT s.acked_total = v.value + 1 AS counters_continue
FROM courier.stats('up_dlq') s, upgrade_state.value v WHERE v.name = 'acked_total';
SELECT count(*) >= 2 AS completions_kept FROM courier.completed_messages WHERE queue = 'up_dlq';

-- Priorities kept their order; maintenance runs.
SELECT array_agg(priority) = '{2,1,0,-1,-2}' AS priorities_lease_in_order FROM courier.lease('up_prio', 10);
SELECT count(*) = 1 AS maintain FROM courier.maintain();

-- Message groups work on queues that existed before the update, with their defaults, and the
-- admin's grants on create_queue and alter_queue survived their re-creation.
SELECT group_on_dead = 'skip' AND group_order = 'oldest' AS group_defaults FROM courier.queues WHERE queue = 'up_prio';
SET ROLE up_admin;
SELECT true AS admin_alters_groups FROM courier.alter_queue('up_prio', group_order => 'fair');
SELECT courier.create_queue('up_grouped', group_on_dead => 'block') AS admin_creates_grouped;
RESET ROLE;
SELECT count(*) = 4 AS grouped_enqueued FROM (
    SELECT courier.enqueue('up_prio', jsonb_build_object('g', k, 'i', i), group_key => k)
    FROM unnest(ARRAY['a', 'a', 'b', 'b']) WITH ORDINALITY AS u(k, i) ORDER BY i) e;
SELECT array_agg(payload->>'i' ORDER BY payload->>'i') = '{1,2,3}' AS one_prefix_and_one_head
FROM courier.lease('up_prio', 3, group_batch => 2) WHERE group_key IS NOT NULL;
SELECT courier.purge_queue('up_prio') >= 4 AND courier.drop_queue('up_grouped') AS cleaned;
SELECT count(*) = 0 AS no_groups_left FROM courier.message_group;
