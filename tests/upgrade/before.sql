-- Run against a database where courier was just created at an OLD version: builds every kind of
-- state that version can hold, with only that version's API. Receipts and ids the later steps
-- need go to upgrade_state.*, a schema of the user's.
\set ON_ERROR_STOP on
SET client_min_messages = warning;

CREATE SCHEMA upgrade_state;
CREATE TABLE upgrade_state.receipt (name text PRIMARY KEY, receipt uuid NOT NULL, message_id bigint NOT NULL);
CREATE TABLE upgrade_state.value (name text PRIMARY KEY, value bigint);
GRANT USAGE ON SCHEMA upgrade_state TO PUBLIC;
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA upgrade_state TO PUBLIC;

-- Roles as README sets them up: an admin that owns the queues, a producer, a consumer.
CREATE ROLE up_admin;
CREATE ROLE up_producer;
CREATE ROLE up_consumer;
GRANT USAGE ON SCHEMA courier TO up_admin, up_producer, up_consumer;
GRANT EXECUTE ON FUNCTION courier.create_queue, courier.alter_queue, courier.drop_queue,
      courier.purge_queue, courier.redrive, courier.grant, courier.revoke,
      courier.stats, courier.stats_reset TO up_admin;
GRANT SELECT ON courier.queues, courier.queue_privileges, courier.queue_stats,
      courier.dead_letters TO up_admin;

SET ROLE up_admin;
-- A queue with every setting away from its default, and its dead-letter queue.
SELECT courier.create_queue('up_dlq', retention => '1 day');
SELECT courier.create_queue('up_orders', visibility_timeout => '10 minutes', max_attempts => 2,
                            dead_letter_queue => 'up_dlq', retry_base => '2 seconds',
                            retry_max => '1 hour', retry_jitter => 0.5, dedup_window => '3 days',
                            retention => '7 days', notify => true);
-- A queue that parks its dead letters in place, and one with several priorities.
SELECT courier.create_queue('up_parked', max_attempts => 1);
SELECT courier.create_queue('up_prio');
SELECT courier.grant('up_orders', 'enqueue', 'up_producer');
SELECT courier.grant('up_orders', 'consume', 'up_consumer');
SELECT courier.grant('up_prio', 'all', 'public');
RESET ROLE;

-- Ready, delayed and scheduled messages, with headers, priorities and dedup keys.
SET ROLE up_producer;
SELECT courier.enqueue('up_orders', '{"n": 1}', headers => '{"h": "one"}') > 0 AS enqueued;
SELECT count(*) = 3 AS enqueued FROM courier.enqueue_batch('up_orders', ARRAY['{"n": 2}', '{"n": 3}', '{"n": 4}']::jsonb[]);
SELECT courier.enqueue('up_orders', '{"n": 5}') > 0 AS enqueued;
SELECT courier.enqueue('up_orders', '{"n": 6}') > 0 AS enqueued;
SELECT courier.enqueue('up_orders', '{"n": "later"}', delay => '1 hour') > 0 AS delayed;
SELECT courier.enqueue('up_orders', '{"n": "scheduled"}', not_before => now() + interval '2 days') > 0 AS scheduled;
SELECT NOT duplicate AS first FROM courier.enqueue_unique('up_orders', '{"n": "keyed"}', 'key-1');
RESET ROLE;
SELECT courier.enqueue('up_prio', to_jsonb(p), priority => p) > 0 AS prioritised FROM generate_series(-2, 2) AS p;

-- Leased messages whose receipts outlive the library change or the upgrade.
SET ROLE up_consumer;
INSERT INTO upgrade_state.receipt SELECT 'ack_mixed', receipt, id FROM courier.lease('up_orders', visibility_timeout => '1 hour');
INSERT INTO upgrade_state.receipt SELECT 'nack_mixed', receipt, id FROM courier.lease('up_orders', visibility_timeout => '1 hour');
INSERT INTO upgrade_state.receipt SELECT 'ack_after', receipt, id FROM courier.lease('up_orders', visibility_timeout => '1 hour');
INSERT INTO upgrade_state.receipt SELECT 'extend_after', receipt, id FROM courier.lease('up_orders', visibility_timeout => '1 hour');
INSERT INTO upgrade_state.receipt SELECT 'dump', receipt, id FROM courier.lease('up_orders', visibility_timeout => '1 hour');
-- A lease that expires and is taken over by a newer one: its receipt must stay refused.
INSERT INTO upgrade_state.receipt SELECT 'stale', receipt, id FROM courier.lease('up_orders', visibility_timeout => '1 second');
SELECT pg_sleep(1.2);
INSERT INTO upgrade_state.receipt SELECT 'relet', receipt, id FROM courier.lease('up_orders', visibility_timeout => '1 hour');
SELECT (SELECT message_id FROM upgrade_state.receipt WHERE name = 'stale')
     = (SELECT message_id FROM upgrade_state.receipt WHERE name = 'relet') AS relet_the_stale_one;
-- A message nacked for a retry: it waits out its backoff with its error kept.
SELECT courier.nack(receipt, retry_in => '1 hour', error => 'upstream timeout') AS nacked
FROM courier.lease('up_orders');
RESET ROLE;

-- A completed message kept by retention, a message parked dead in its own queue, and one moved
-- to a dead-letter queue.
SELECT courier.enqueue('up_dlq', '{"n": "kept"}') > 0 AS enqueued;
SELECT courier.ack(receipt) AS acked FROM courier.lease('up_dlq') WHERE payload = '{"n": "kept"}';
SELECT courier.enqueue('up_parked', '{"n": "parked"}') > 0 AS enqueued;
SELECT courier.nack(receipt, dead => true, error => 'poison') AS parked FROM courier.lease('up_parked');
SET ROLE up_producer;
SELECT courier.enqueue('up_orders', '{"n": "poison"}', priority => 5) > 0 AS enqueued;
RESET ROLE;
SELECT courier.nack(receipt, dead => true, error => 'cannot parse') AS dead_lettered
FROM courier.lease('up_orders') WHERE payload = '{"n": "poison"}';

-- Counters (with courier preloaded) as they stand before the upgrade.
INSERT INTO upgrade_state.value
SELECT 'acked_total', acked_total FROM courier.stats('up_dlq');
INSERT INTO upgrade_state.value
SELECT 'enqueued_total', enqueued_total FROM courier.stats('up_orders');
