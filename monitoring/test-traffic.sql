-- Known traffic for monitoring/test.sh: every message's fate is planned, and check.py asserts the
-- counts, the gauges and the event lines this leaves. Run by psql in database shop with
-- -v ids=FILE, where it writes the ids the checks need as JSON.

CREATE EXTENSION courier;

-- The exporter's role, as README.md's Monitoring section creates it.
\ir postgres_exporter/role.sql
-- An operator who may redrive and purge what it is given to manage.
CREATE ROLE ops LOGIN;
GRANT USAGE ON SCHEMA courier TO ops;
GRANT EXECUTE ON FUNCTION courier.redrive, courier.purge_queue TO ops;

SELECT courier.create_queue('orders.dead');
SELECT courier.create_queue('orders', max_attempts => 2, dead_letter_queue => 'orders.dead');
SELECT courier.create_queue('emails', max_attempts => 1);
SELECT courier.create_queue('scratch');
SELECT courier.create_queue('tmp');
SELECT courier.create_queue('ledger.dead');
SELECT courier.create_queue('ledger', dead_letter_queue => 'ledger.dead', group_on_dead => 'block');
SELECT courier.grant('orders.dead', 'manage', 'ops');
SELECT courier.grant('scratch', 'manage', 'ops');

-- orders: m1 acked, m2 in flight, m3 nacked for an hour, m4 lapses, is taken over and nacked
-- dead, m5 runs out of attempts and is redriven, m6 ready, m7 delayed; one duplicate enqueue.
SELECT courier.enqueue('orders', '{"n": 1}', dedup_key => 'order-1') AS m1 \gset
SELECT courier.enqueue('orders', '{"n": 2}') AS m2 \gset
SELECT courier.enqueue('orders', '{"n": 3}') AS m3 \gset
SELECT courier.enqueue('orders', '{"n": 4}') AS m4 \gset
SELECT courier.enqueue('orders', '{"n": 5}') AS m5 \gset
SELECT duplicate AS dup FROM courier.enqueue_unique('orders', '{"n": 1}', dedup_key => 'order-1') \gset
SELECT courier.enqueue('orders', '{"n": 7}', delay => '1 hour') AS m7 \gset
SELECT id AS l1, receipt AS r1 FROM courier.lease('orders', visibility_timeout => '1 hour') \gset
SELECT id AS l2 FROM courier.lease('orders', visibility_timeout => '1 hour') \gset
SELECT courier.ack(:'r1');
SELECT id AS l3, receipt AS r3 FROM courier.lease('orders', visibility_timeout => '1 hour') \gset
SELECT courier.nack(:'r3', retry_in => '1 hour', error => 'try later');
SELECT id AS l4 FROM courier.lease('orders', visibility_timeout => '0.2 seconds') \gset
SELECT pg_sleep(0.5);
SELECT id AS l5, receipt AS r5, attempt AS l5_attempt FROM courier.lease('orders', visibility_timeout => '1 hour') \gset
SELECT courier.nack(:'r5', dead => true, error => E'poison "pill"\non two lines');
SELECT id AS l6, receipt AS r6 FROM courier.lease('orders', visibility_timeout => '1 hour') \gset
SELECT courier.nack(:'r6', retry_in => '0', error => 'failing');
SELECT id AS l7, receipt AS r7 FROM courier.lease('orders', visibility_timeout => '1 hour') \gset
SELECT courier.nack(:'r7', retry_in => '0', error => 'still failing');
SET ROLE ops;
SELECT courier.redrive('orders.dead', message_ids => ARRAY[:m5]::bigint[]) AS redriven \gset
RESET ROLE;
SELECT courier.enqueue('orders', '{"n": 6}') AS m6 \gset

-- emails (one attempt each, no dead-letter queue): e1's lease lapses and the next lease finds it
-- out of attempts; e2 is nacked dead in a session that logs payloads.
SELECT courier.enqueue('emails', '{"to": "a@example.com"}') AS e1 \gset
SELECT count(*) FROM courier.lease('emails', visibility_timeout => '0.2 seconds');
SELECT pg_sleep(0.5);
SELECT courier.enqueue('emails', '{"to": "x@example.com"}') AS e2 \gset
SELECT id AS l8, receipt AS r8 FROM courier.lease('emails', visibility_timeout => '1 hour') \gset
SET courier.log_events = 'dead_letter, payloads';
SELECT courier.nack(:'r8', dead => true, error => 'bounced');
RESET courier.log_events;

-- scratch: purged by ops, once in a transaction that rolls back (no event), then for real.
SELECT count(*) FROM courier.enqueue_batch('scratch', ARRAY['1', '2', '3']::jsonb[]);
SET ROLE ops;
BEGIN;
SELECT courier.purge_queue('scratch');
ROLLBACK;
SELECT courier.purge_queue('scratch') AS purged \gset
RESET ROLE;

-- tmp: dropped with its two messages.
SELECT count(*) FROM courier.enqueue_batch('tmp', ARRAY['1', '2']::jsonb[]);
SELECT courier.drop_queue('tmp');

-- ledger (message groups, dead letters block their group): a1 leased and held, a2 waits behind
-- it, b1 nacked dead into ledger.dead, blocking group b.
SELECT courier.enqueue('ledger', '"a1"', group_key => 'a') AS a1 \gset
SELECT courier.enqueue('ledger', '"a2"', group_key => 'a') AS a2 \gset
SELECT courier.enqueue('ledger', '"b1"', group_key => 'b') AS b1 \gset
SELECT id AS l9 FROM courier.lease('ledger', visibility_timeout => '1 hour') \gset
SELECT id AS l10, receipt AS r10 FROM courier.lease('ledger', visibility_timeout => '1 hour') \gset
SELECT courier.nack(:'r10', dead => true, error => 'bad');

\pset format unaligned
\pset tuples_only on
\o :ids
SELECT pg_catalog.json_build_object(
    'm1', :m1, 'm2', :m2, 'm3', :m3, 'm4', :m4, 'm5', :m5, 'm6', :m6, 'm7', :m7, 'dup', :'dup'::boolean,
    'l1', :l1, 'l2', :l2, 'l3', :l3, 'l4', :l4, 'l5', :l5, 'l5_attempt', :l5_attempt, 'l6', :l6,
    'l7', :l7, 'redriven', :redriven, 'e1', :e1, 'e2', :e2, 'l8', :l8, 'purged', :purged,
    'a1', :a1, 'a2', :a2, 'b1', :b1, 'l9', :l9, 'l10', :l10);
\o
