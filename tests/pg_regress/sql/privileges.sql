-- Privileges. Three gates: USAGE on schema courier (granted to nobody by default), EXECUTE on
-- the administration functions (granted to nobody), and privileges on each queue (enqueue,
-- consume, manage), which the data-path functions check themselves.
CREATE ROLE regress_admin;
CREATE ROLE regress_admin2;
CREATE ROLE regress_producer;
CREATE ROLE regress_consumer;
CREATE ROLE regress_nobody;
CREATE ROLE regress_team;
CREATE ROLE regress_member IN ROLE regress_team;

-- What a role with no grants may execute: only the data path, which is useless without queue
-- privileges. No table is readable or writable.
SELECT p.proname
FROM pg_proc p
WHERE p.pronamespace = 'courier'::regnamespace
  AND has_function_privilege('regress_nobody', p.oid, 'EXECUTE')
ORDER BY 1;

SELECT c.relname
FROM pg_class c
WHERE c.relnamespace = 'courier'::regnamespace
  AND (has_table_privilege('regress_nobody', c.oid, 'SELECT')
       OR has_table_privilege('regress_nobody', c.oid, 'INSERT')
       OR has_table_privilege('regress_nobody', c.oid, 'UPDATE')
       OR has_table_privilege('regress_nobody', c.oid, 'DELETE'))
ORDER BY 1;

SELECT has_schema_privilege('regress_nobody', 'courier', 'USAGE') AS schema_usage;

-- No function runs with its owner's rights, and every one either pins search_path or has a
-- body resolved when it was created (BEGIN ATOMIC), except enqueue and enqueue_batch, which pin
-- it themselves before anything could resolve a name (src/search_path.rs; storage.sql checks).
SELECT p.proname, p.prosecdef, p.prosqlbody IS NOT NULL AS atomic_body,
       array_to_string(p.proconfig, ',') AS config
FROM pg_proc p
WHERE p.pronamespace = 'courier'::regnamespace
ORDER BY 1;

-- Without USAGE on the schema nothing resolves.
SELECT courier.create_queue('p_q');
SET ROLE regress_nobody;
SELECT regress.try($$SELECT courier.enqueue('p_q', '{}')$$);
RESET ROLE;
SELECT courier.drop_queue('p_q');

-- The set-up README recommends.
GRANT USAGE ON SCHEMA courier
    TO regress_admin, regress_admin2, regress_producer, regress_consumer, regress_nobody, regress_team;
GRANT EXECUTE ON FUNCTION courier.create_queue, courier.alter_queue, courier.drop_queue, courier.purge_queue,
    courier.redrive, courier.grant, courier.revoke, courier.stats_reset, courier.stats
    TO regress_admin, regress_admin2;
GRANT SELECT ON courier.queues, courier.queue_privileges, courier.queue_stats TO regress_admin, regress_admin2;

-- An admin creates queues (and owns them) and grants privileges on them.
SET ROLE regress_admin;
SELECT courier.create_queue('p_q', visibility_timeout => '1 hour');
SELECT courier.create_queue('p_dlq');
SELECT courier.grant('p_q', 'enqueue', 'regress_producer');
SELECT courier.grant('p_q', 'consume', 'regress_consumer');
SELECT courier.grant('p_q', 'CONSUME', 'regress_team');
SELECT courier.grant('p_q', 'consume', 'regress_team');
SELECT queue, owner FROM courier.queues WHERE queue LIKE 'p\_%' ORDER BY 1;
SELECT * FROM courier.queue_privileges ORDER BY 1, 2, 3;
RESET ROLE;

-- The producer enqueues to its queue, and can do nothing else.
SET ROLE regress_producer;
SELECT courier.enqueue('p_q', '{"n": 1}') > 0 AS enqueued;
SELECT count(*) AS enqueued FROM courier.enqueue_batch('p_q', ARRAY['{"n": 2}', '{"n": 3}', '{"n": 4}']::jsonb[]);
SELECT duplicate FROM courier.enqueue_unique('p_q', '{"n": 5}', 'k5');
SELECT courier.has_queue_privilege('p_q', 'enqueue') AS may_enqueue,
       courier.has_queue_privilege('p_q', 'consume') AS may_consume;
SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT * FROM courier.lease('p_q')$$),
    ($$SELECT courier.enqueue('p_dlq', '{}')$$),
    ($$SELECT courier.create_queue('p_mine')$$),
    ($$SELECT courier.purge_queue('p_q')$$),
    ($$SELECT courier.grant('p_q', 'consume', 'regress_producer')$$),
    ($$SELECT * FROM courier.message$$),
    ($$SELECT * FROM courier.queues$$),
    ($$SELECT * FROM courier.stats('p_q')$$)
) AS t(statement);
RESET ROLE;

-- The consumer leases, acks, nacks and extends, and can do nothing else.
SET ROLE regress_consumer;
CREATE TEMP TABLE p_held AS SELECT payload, receipt FROM courier.lease('p_q', 3);
SELECT count(*) AS leased FROM p_held;
SELECT courier.ack(receipt) AS acked FROM p_held WHERE payload = '{"n": 1}';
SELECT courier.ack_batch(array_agg(receipt)) AS acked FROM p_held WHERE payload = '{"n": 2}';
SELECT courier.extend(receipt, '2 hours') AS extended FROM p_held WHERE payload = '{"n": 3}';
SELECT courier.nack(receipt, retry_in => '0') AS nacked FROM p_held WHERE payload = '{"n": 3}';
SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.enqueue('p_q', '{}')$$),
    ($$SELECT * FROM courier.lease('p_dlq')$$),
    ($$SELECT courier.alter_queue('p_q', max_attempts => 1)$$),
    ($$SELECT courier.drop_queue('p_q')$$),
    ($$SELECT courier.redrive('p_q')$$)
) AS t(statement);
RESET ROLE;

-- Members of a role act with its grants.
SET ROLE regress_member;
SELECT count(*) AS leased FROM courier.lease('p_q', 1);
RESET ROLE;

-- A receipt carries no privilege: a role that may not consume from the queue cannot ack, nack
-- or extend with someone else's receipt, and its attempt changes nothing.
SET ROLE regress_consumer;
CREATE TEMP TABLE p_stolen AS SELECT receipt FROM courier.lease('p_q', 1);
GRANT SELECT ON p_stolen TO regress_producer;
RESET ROLE;
SET ROLE regress_producer;
SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.ack((SELECT receipt FROM p_stolen))$$),
    ($$SELECT courier.ack_batch(ARRAY[(SELECT receipt FROM p_stolen)])$$),
    ($$SELECT courier.nack((SELECT receipt FROM p_stolen))$$),
    ($$SELECT courier.nack_batch(ARRAY[(SELECT receipt FROM p_stolen)], dead => true)$$),
    ($$SELECT courier.extend((SELECT receipt FROM p_stolen), '1 second')$$)
) AS t(statement);
RESET ROLE;
SET ROLE regress_consumer;
SELECT courier.ack(receipt, strict => true) AS still_mine FROM p_stolen;
RESET ROLE;

-- A role with USAGE and nothing else: every data-path call is refused by the queue check, every
-- administration call by EXECUTE. Nothing changed.
SELECT regress.messages() AS before \gset
SET ROLE regress_nobody;
SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.enqueue('p_q', '{}')$$),
    ($$SELECT courier.enqueue_batch('p_q', ARRAY['{}']::jsonb[])$$),
    ($$SELECT courier.enqueue_unique('p_q', '{}', 'k')$$),
    ($$SELECT * FROM courier.lease('p_q')$$),
    ($$SELECT courier.create_queue('p_nobody')$$),
    ($$SELECT courier.alter_queue('p_q', max_attempts => 1)$$),
    ($$SELECT courier.purge_queue('p_q')$$),
    ($$SELECT courier.drop_queue('p_q')$$),
    ($$SELECT courier.redrive('p_q')$$),
    ($$SELECT courier.grant('p_q', 'all', 'regress_nobody')$$),
    ($$SELECT courier.revoke('p_q', 'all', 'regress_producer')$$),
    ($$SELECT * FROM courier.stats('p_q')$$),
    ($$SELECT courier.stats_reset('p_q')$$),
    ($$SELECT * FROM courier.maintain()$$),
    ($$SELECT * FROM courier.dead_letters$$),
    ($$SELECT courier.has_queue_privilege('p_q', 'manage')$$)
) AS t(statement);
RESET ROLE;
SELECT regress.messages() = :before AS nothing_changed;

-- Another admin may not alter, purge, drop or grant on a queue it does not own...
SET ROLE regress_admin2;
SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.alter_queue('p_q', max_attempts => 3)$$),
    ($$SELECT courier.purge_queue('p_q')$$),
    ($$SELECT courier.drop_queue('p_q')$$),
    ($$SELECT courier.grant('p_q', 'manage', 'regress_admin2')$$),
    ($$SELECT courier.stats_reset('p_q')$$),
    ($$SELECT courier.stats_reset()$$)
) AS t(statement);
RESET ROLE;
-- ...until the owner grants it manage, which covers alter, purge, redrive and stats_reset, but
-- not drop or grant. Naming a dead-letter queue also needs enqueue on it.
SET ROLE regress_admin;
SELECT courier.grant('p_q', 'manage', 'regress_admin2');
RESET ROLE;
SET ROLE regress_admin2;
SELECT courier.alter_queue('p_q', max_attempts => 3);
SELECT courier.stats_reset('p_q') IS NOT NULL AS reset;
SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.alter_queue('p_q', dead_letter_queue => 'p_dlq')$$),
    ($$SELECT courier.drop_queue('p_q')$$),
    ($$SELECT courier.grant('p_q', 'consume', 'regress_admin2')$$)
) AS t(statement);
RESET ROLE;
SET ROLE regress_admin;
SELECT courier.grant('p_dlq', 'enqueue', 'regress_admin2');
RESET ROLE;
SET ROLE regress_admin2;
SELECT courier.alter_queue('p_q', dead_letter_queue => 'p_dlq');
SELECT courier.purge_queue('p_q') >= 0 AS purged;
RESET ROLE;

-- Revoking takes effect at once, also in a session that has the queue cached.
SET ROLE regress_producer;
SELECT courier.enqueue('p_q', '{"n": 6}') > 0 AS enqueued;
RESET ROLE;
SET ROLE regress_consumer;
SELECT count(*) AS leased FROM courier.lease('p_q', 1);
RESET ROLE;
SET ROLE regress_admin;
SELECT courier.revoke('p_q', 'consume', 'regress_consumer');
SELECT courier.revoke('p_q', 'consume', 'regress_consumer');
RESET ROLE;
SET ROLE regress_consumer;
SELECT regress.try($$SELECT * FROM courier.lease('p_q', 1)$$);
RESET ROLE;

-- A grant to public reaches every role (that has USAGE on the schema).
SET ROLE regress_admin;
SELECT courier.grant('p_q', 'enqueue', 'PUBLIC');
RESET ROLE;
SET ROLE regress_nobody;
SELECT courier.enqueue('p_q', '{"from": "nobody"}') > 0 AS enqueued;
RESET ROLE;
SET ROLE regress_admin;
SELECT courier.revoke('p_q', 'enqueue', 'public');
RESET ROLE;

-- Bad grant and revoke arguments.
SET ROLE regress_admin;
SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.grant('p_q', 'select', 'regress_nobody')$$),
    ($$SELECT courier.grant('p_q', 'enqueue', 'regress_no_such_role')$$),
    ($$SELECT courier.grant('p_q', 'enqueue', '')$$),
    ($$SELECT courier.grant('p_q', NULL, 'regress_nobody')$$),
    ($$SELECT courier.grant('p_q', 'enqueue', NULL)$$),
    ($$SELECT courier.grant('p_nope', 'enqueue', 'regress_nobody')$$),
    ($$SELECT courier.revoke('p_q', 'everything', 'regress_nobody')$$),
    ($$SELECT courier.has_queue_privilege('p_q', 'drop')$$)
) AS t(statement);
SELECT * FROM courier.queue_privileges ORDER BY 1, 2, 3;

-- Only the owner drops; grants go with the queue.
SELECT courier.alter_queue('p_q', dead_letter_queue => '');
SELECT courier.drop_queue('p_q');
SELECT courier.drop_queue('p_dlq');
RESET ROLE;
SELECT count(*) AS grants_left FROM courier.queue_grant;

DROP TABLE p_held, p_stolen;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA courier FROM regress_admin, regress_admin2;
REVOKE ALL ON ALL TABLES IN SCHEMA courier FROM regress_admin, regress_admin2;
REVOKE USAGE ON SCHEMA courier
    FROM regress_admin, regress_admin2, regress_producer, regress_consumer, regress_nobody, regress_team;
DROP ROLE regress_admin, regress_admin2, regress_producer, regress_consumer, regress_nobody,
          regress_member, regress_team;
