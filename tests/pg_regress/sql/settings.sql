-- Queue settings: defaults, create, alter, dead-letter queue rules, and bad values.
SELECT courier.create_queue('st_default');
SELECT queue, visibility_timeout, max_attempts, dead_letter_queue, retry_base, retry_max, retry_jitter,
       dedup_window, retention, created_at <= clock_timestamp() AS created
FROM courier.queues WHERE queue = 'st_default';

SELECT courier.create_queue('st_dlq');
SELECT courier.create_queue('st_full', visibility_timeout => '2 minutes', max_attempts => 5,
                            dead_letter_queue => 'st_dlq', retry_base => '5 seconds', retry_max => '1 hour',
                            retry_jitter => 0, dedup_window => '3 days', retention => '7 days');
SELECT queue, visibility_timeout, max_attempts, dead_letter_queue, retry_base, retry_max, retry_jitter,
       dedup_window, retention
FROM courier.queues WHERE queue = 'st_full';

-- alter_queue changes only what it is given.
SELECT courier.alter_queue('st_full', max_attempts => 0, retry_jitter => 0.5);
SELECT queue, visibility_timeout, max_attempts, dead_letter_queue, retry_jitter, retention
FROM courier.queues WHERE queue = 'st_full';
-- '' removes the dead-letter queue; '0' turns retention off.
SELECT courier.alter_queue('st_full', dead_letter_queue => '', retention => '0');
SELECT dead_letter_queue IS NULL AS no_dlq, retention IS NULL AS no_retention FROM courier.queues WHERE queue = 'st_full';
SELECT courier.alter_queue('st_full', dead_letter_queue => 'st_dlq');

-- Dead-letter queues must exist, differ from the queue and not form a cycle; a queue in use as
-- a dead-letter queue cannot be dropped.
SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.create_queue('st_x', dead_letter_queue => 'st_missing')$$),
    ($$SELECT courier.create_queue('st_x', dead_letter_queue => 'st_x')$$),
    ($$SELECT courier.create_queue('st_x', dead_letter_queue => 'bad name')$$),
    ($$SELECT courier.alter_queue('st_full', dead_letter_queue => 'st_full')$$),
    ($$SELECT courier.alter_queue('st_dlq', dead_letter_queue => 'st_full')$$),
    ($$SELECT courier.drop_queue('st_dlq')$$)
) AS v(statement);
-- A longer chain is fine; closing it into a loop is not.
SELECT courier.create_queue('st_last');
SELECT courier.alter_queue('st_dlq', dead_letter_queue => 'st_last');
SELECT regress.try($$SELECT courier.alter_queue('st_last', dead_letter_queue => 'st_full')$$);

-- Bad values are rejected and change nothing.
SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.create_queue('st_x', max_attempts => -1)$$),
    ($$SELECT courier.create_queue('st_x', max_attempts => 1000001)$$),
    ($$SELECT courier.create_queue('st_x', max_attempts => NULL)$$),
    ($$SELECT courier.create_queue('st_x', retry_base => '0')$$),
    ($$SELECT courier.create_queue('st_x', retry_base => '1 minute', retry_max => '30 seconds')$$),
    ($$SELECT courier.create_queue('st_x', retry_max => '400 days')$$),
    ($$SELECT courier.create_queue('st_x', retry_jitter => 1.01)$$),
    ($$SELECT courier.create_queue('st_x', retry_jitter => -0.1)$$),
    ($$SELECT courier.create_queue('st_x', retry_jitter => 'NaN')$$),
    ($$SELECT courier.create_queue('st_x', dedup_window => '0')$$),
    ($$SELECT courier.create_queue('st_x', dedup_window => '2 years')$$),
    ($$SELECT courier.create_queue('st_x', retention => '-1 day')$$),
    ($$SELECT courier.alter_queue('st_missing', max_attempts => 3)$$),
    ($$SELECT courier.alter_queue(NULL)$$),
    ($$SELECT courier.alter_queue('st_full', visibility_timeout => '0')$$),
    ($$SELECT courier.alter_queue('st_full', retry_base => '2 hours')$$),
    ($$SELECT courier.alter_queue('st_full', retry_jitter => 2)$$)
) AS v(statement);
SELECT count(*) AS queues FROM courier.queue WHERE name LIKE 'st\_%';
SELECT queue, visibility_timeout, max_attempts, retry_base, retry_max, retry_jitter
FROM courier.queues WHERE queue = 'st_full';

SELECT courier.alter_queue('st_full', dead_letter_queue => '');
SELECT courier.alter_queue('st_dlq', dead_letter_queue => '');
SELECT courier.drop_queue(q) FROM unnest(ARRAY['st_default', 'st_full', 'st_dlq', 'st_last']) AS q;

-- courier.durable_leases: off by default (transactions that only lease commit without waiting
-- for their WAL flush, see README), and any role may turn it on for its own sessions.
SHOW courier.durable_leases;
CREATE ROLE regress_settings_user;
SET ROLE regress_settings_user;
SET courier.durable_leases = on;
SHOW courier.durable_leases;
RESET courier.durable_leases;
RESET ROLE;
DROP ROLE regress_settings_user;
SELECT regress.try($$SET courier.durable_leases = 'sometimes'$$);
