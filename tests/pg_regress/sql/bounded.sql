-- What bounded walks mean for results (storage/gauges.rs, storage/lease.rs): stats counts at most
-- 10,000 messages per priority level and gauge and says so; a floor learning passes at most a
-- bounded run of messages in flight, and a lease still finds what lies beyond; a waiting lease
-- whose expiry lookup could not see every lease in flight still wakes when they expire.
SET client_min_messages = warning;
SELECT courier.create_queue('bound_big') AND courier.create_queue('bound_levels')
   AND courier.create_queue('bound_flight') AS created;

-- One level over the cap: the counts stop at 10,000 and say they are lower bounds.
-- (LATERAL with an argument that depends on g: a function scan with constant arguments would be
-- called once and rewound.)
SELECT count(*) FROM generate_series(1, 11) g,
    LATERAL courier.enqueue_batch('bound_big', array_fill(to_jsonb(g), ARRAY[1000]));
SELECT ready, delayed, in_flight, dead, counts_capped FROM courier.stats('bound_big');
-- Under the cap on each of two levels: exact, not capped, though the queue holds more than 10,000.
SELECT count(*) FROM generate_series(1, 12) g,
    LATERAL courier.enqueue_batch('bound_levels', array_fill(to_jsonb(g), ARRAY[1000]), priority => g % 2 + 1);
SELECT count(*) FROM courier.enqueue_batch('bound_levels', array_fill('{}'::jsonb, ARRAY[100]), delay => '1 hour');
SELECT ready, delayed, in_flight, dead, counts_capped FROM courier.stats('bound_levels');
-- Delayed past the cap on one level: capped again.
SELECT count(*) FROM generate_series(1, 10) g,
    LATERAL courier.enqueue_batch('bound_levels', array_fill(to_jsonb(g), ARRAY[1000]), delay => '1 hour');
SELECT ready >= 12000 AND delayed = 10000 AND counts_capped AS delayed_capped FROM courier.stats('bound_levels');

-- 1,500 messages, the first 1,400 in flight: more than one floor learning passes. After each
-- learning (due every 100 ms, and here after every lease), the remaining 100 are still found,
-- and nothing twice.
SHOW courier.floor_learn_after;
SELECT regress.try($$SET courier.floor_learn_after = 0$$);
SET courier.floor_learn_after = 1;
SELECT count(*) FROM courier.enqueue_batch('bound_flight', array_fill('{}'::jsonb, ARRAY[1000]));
SELECT count(*) FROM courier.enqueue_batch('bound_flight', array_fill('{}'::jsonb, ARRAY[500]));
SELECT count(*) FROM courier.lease('bound_flight', 1000, visibility_timeout => '2 seconds');
SELECT count(*) FROM courier.lease('bound_flight', 400, visibility_timeout => '2 seconds');
SELECT pg_sleep(0.2);
SELECT count(*) AS leased_beyond_the_walk FROM courier.lease('bound_flight', 60, visibility_timeout => '2 seconds');
SELECT pg_sleep(0.2);
SELECT count(*) AS the_rest FROM courier.lease('bound_flight', 1000, visibility_timeout => '2 seconds');
SELECT in_flight = 1500 AND ready = 0 AS all_in_flight FROM courier.stats('bound_flight');
-- A waiting lease: nothing is leasable until the leases above end, more of them than one expiry
-- lookup walks; it still wakes for them (within a second of their end) and leases.
SELECT count(*) AS woken_by_expiry FROM courier.lease('bound_flight', 10, wait => '5 seconds');

RESET courier.floor_learn_after;

-- A queue with several priorities whose top level was drained: 30,000 messages at priority 9
-- leased and acked, whose index entries stay until vacuum removes them. A lease of priority 0 then
-- scans level 9 from that level's floor (floor.rs, lease.rs's level_starts) and takes the levels
-- from the queue's priority range, where it walked every one of those entries, backwards to find
-- the next level and forwards to scan it (~450 buffers). The buffers the whole call touches, its
-- own statements included as EXPLAIN counts them, stay below 100. The least of three leases 150 ms
-- apart: the first learns level 9's floor past the acked entries, and one in 5 s relearns it from
-- the start.
SELECT courier.create_queue('bound_drained') AS created;
SELECT count(*) FROM generate_series(1, 30) g,
    LATERAL courier.enqueue_batch('bound_drained', array_fill(to_jsonb(g), ARRAY[1000]), priority => 9);
SELECT count(*) FROM courier.enqueue_batch('bound_drained', array_fill('{}'::jsonb, ARRAY[10]), priority => 0);
SELECT count(*) AS acked FROM generate_series(1, 30) g,
    LATERAL (SELECT courier.ack_batch(array_agg(receipt)) AS n
             FROM courier.lease('bound_drained', 1000 + 0 * g)) a WHERE a.n = 1000;
CREATE FUNCTION pg_temp.least_lease_buffers(queue text, leases int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    plan json;
    least bigint;
BEGIN
    FOR i IN 1..leases LOOP
        PERFORM pg_sleep(0.15);
        EXECUTE format('EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT count(*) FROM courier.lease(%L)', queue)
            INTO plan;
        least := LEAST(least, (plan->0->'Plan'->>'Shared Hit Blocks')::bigint
                              + (plan->0->'Plan'->>'Shared Read Blocks')::bigint);
    END LOOP;
    RETURN least;
END $$;
SELECT pg_temp.least_lease_buffers('bound_drained', 4) < 100 AS drained_level_not_walked;
SELECT ready = 6 AND in_flight = 4 AS four_taken_from_priority_0 FROM courier.stats('bound_drained');
-- stats() counts each listed level from its floor too (and finds the levels without the walk).
CREATE FUNCTION pg_temp.stats_buffers(queue text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    plan json;
BEGIN
    EXECUTE format('EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM courier.stats(%L)', queue)
        INTO plan;
    RETURN (plan->0->'Plan'->>'Shared Hit Blocks')::bigint + (plan->0->'Plan'->>'Shared Read Blocks')::bigint;
END $$;
SELECT pg_temp.stats_buffers('bound_drained') < 150 AS stats_not_walked;
SELECT courier.drop_queue('bound_drained') AS dropped;

-- A busy queue's floors keep up with it (floor.rs): besides every 100 ms, a level's floors are
-- learned once 1,024 messages were leased from it since the last learning, so a learning, and a
-- walk from the floor, passes about that many acked messages at most however fast the queue is
-- consumed. Five leases of 1,000, each acked in its own transaction (usually well within 100 ms),
-- then stats(), which never learns (it reads in the caller's snapshot) and counts from the floor
-- of all rows. A learning is due whenever the leases before it took 1,024, so at least every
-- other lease learns and stats() passes at most the last 2,000 acked entries (1,000 here: about
-- 2,000 buffers), not the 5,000 (about 10,000 buffers) it passed when learning waited for the
-- interval alone.
SELECT courier.create_queue('bound_busy') AS created;
SELECT count(*) FROM generate_series(1, 5) g,
    LATERAL courier.enqueue_batch('bound_busy', array_fill(to_jsonb(g), ARRAY[1000]));
SELECT courier.ack_batch(array_agg(receipt)) AS acked FROM courier.lease('bound_busy', 1000);
SELECT courier.ack_batch(array_agg(receipt)) AS acked FROM courier.lease('bound_busy', 1000);
SELECT courier.ack_batch(array_agg(receipt)) AS acked FROM courier.lease('bound_busy', 1000);
SELECT courier.ack_batch(array_agg(receipt)) AS acked FROM courier.lease('bound_busy', 1000);
SELECT courier.ack_batch(array_agg(receipt)) AS acked FROM courier.lease('bound_busy', 1000);
SELECT pg_temp.stats_buffers('bound_busy') < 5000 AS busy_floor_kept_up;
SELECT courier.drop_queue('bound_busy') AS dropped;

SELECT courier.drop_queue('bound_big') AND courier.drop_queue('bound_levels')
   AND courier.drop_queue('bound_flight') AS dropped;
