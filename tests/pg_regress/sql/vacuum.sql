-- courier vacuums courier.message itself once enough messages were acked or nacked
-- (src/vacuum.rs): a short-lived background worker runs VACUUM and exits. Only a VACUUM that is
-- not autovacuum moves pg_stat's vacuum_count, and these tests run none of their own.
SELECT courier.create_queue('v_main');

CREATE FUNCTION regress.vacuums() RETURNS bigint LANGUAGE sql AS $$
    SELECT pg_stat_get_vacuum_count('courier.message'::regclass)
$$;

-- Waits until no worker runs and the vacuum count has not moved for half a second (a worker an
-- earlier test launched may still be starting), then returns it.
CREATE FUNCTION regress.quiet_vacuums() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    seen bigint := -1;
    now_seen bigint;
BEGIN
    FOR i IN 1..600 LOOP
        PERFORM pg_stat_clear_snapshot();
        now_seen := regress.vacuums();
        IF now_seen = seen AND NOT EXISTS (
            SELECT FROM pg_stat_activity WHERE backend_type = 'courier vacuum') THEN
            RETURN now_seen;
        END IF;
        seen := now_seen;
        PERFORM pg_sleep(0.5);
    END LOOP;
    RAISE EXCEPTION 'courier vacuum workers did not settle';
END
$$;

-- Waits up to 60 s for the vacuum count to pass `before`.
CREATE FUNCTION regress.vacuumed_since(before bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..600 LOOP
        PERFORM pg_stat_clear_snapshot();
        IF regress.vacuums() > before THEN
            RETURN true;
        END IF;
        PERFORM pg_sleep(0.1);
    END LOOP;
    RETURN false;
END
$$;

CREATE FUNCTION regress.churn(n integer) RETURNS integer LANGUAGE sql AS $$
    SELECT count(*) FROM courier.enqueue_batch('v_main', array_fill('{}'::jsonb, ARRAY[n]));
    SELECT courier.ack_batch(array_agg(receipt)) FROM courier.lease('v_main', n);
$$;

-- Bounds: a threshold of 0 turns it off; the naptime is 1 s to a day.
SELECT regress.try('SET courier.vacuum_threshold = -1');
SELECT regress.try('SET courier.vacuum_naptime = 0');
SELECT regress.try('SET courier.vacuum_naptime = ''2 days''');

-- Off: acks launch nothing.
SET courier.vacuum_threshold = 0;
SET courier.vacuum_naptime = 1;
SELECT regress.quiet_vacuums() AS before \gset
SELECT regress.churn(200) AS acked;
SELECT pg_sleep(1.5);
SELECT pg_stat_clear_snapshot();
SELECT regress.vacuums() = :before AS no_vacuum_when_off;

-- Below the threshold: nothing yet. The 200 acks above do not count: they were not counted.
SET courier.vacuum_threshold = 300;
SELECT regress.churn(200) AS acked;
SELECT pg_sleep(1.5);
SELECT pg_stat_clear_snapshot();
SELECT regress.vacuums() = :before AS no_vacuum_below_threshold;

-- Crossing it launches one worker. These acks roll back (they count all the same), so every dead
-- row in the table belongs to a committed transaction, and the vacuum leaves none: the statistics
-- of the statements before are flushed first, so nothing arrives after the vacuum's report.
SELECT pg_stat_get_vacuum_count('courier.message_group'::regclass) AS group_before \gset
SELECT count(*) AS enqueued FROM courier.enqueue_batch('v_main', array_fill('{}'::jsonb, ARRAY[200]));
SELECT array_agg(receipt) AS receipts FROM courier.lease('v_main', 200) \gset
SELECT pg_stat_force_next_flush();
BEGIN;
SELECT courier.ack_batch(:'receipts') AS acked;
ROLLBACK;
SELECT regress.vacuumed_since(:before) AS vacuumed;
SELECT regress.quiet_vacuums() AS after \gset
-- The same worker vacuums the group table, which turns over with the messages.
SELECT pg_stat_get_vacuum_count('courier.message_group'::regclass) > :group_before AS group_table_vacuumed;
SELECT pg_stat_get_dead_tuples('courier.message'::regclass) = 0 AS no_dead_rows_left;
SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE backend_type = 'courier vacuum') AS worker_gone;

-- Nacks count as well (a retry moves the row in the ready index). Launches are at least the
-- naptime apart, and only an ack or nack can launch one: wait that out first.
SET courier.vacuum_threshold = 100;
SELECT pg_sleep(1.1);
SELECT count(*) AS enqueued FROM courier.enqueue_batch('v_main', array_fill('{}'::jsonb, ARRAY[150]));
SELECT courier.nack_batch(array_agg(receipt), retry_in => '1 hour') AS nacked FROM courier.lease('v_main', 150);
SELECT regress.vacuumed_since(:after) AS vacuumed_after_nacks;
SELECT regress.quiet_vacuums() > :after AS settled;

RESET courier.vacuum_threshold;
RESET courier.vacuum_naptime;
-- The defaults README documents: 1000 rows, and 5 s (10 s let the table grow for minutes at
-- 600 messages/s; see bench/results/2026-12-01b/notes.md).
SHOW courier.vacuum_threshold;
SHOW courier.vacuum_naptime;
SELECT courier.drop_queue('v_main');
DROP FUNCTION regress.churn(integer), regress.vacuumed_since(bigint), regress.quiet_vacuums(), regress.vacuums();
