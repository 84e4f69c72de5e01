-- Plan shapes: no statement courier runs may read courier.message in proportion to the table or
-- a queue, whatever plan PostgreSQL makes for it. courier keeps one generic plan per statement
-- and PostgreSQL re-plans it from whatever statistics exist whenever the table's pg_class entry
-- changes, so the test builds the states that push the planner hardest, with real API calls, and
-- asks for the plan each kept statement runs then (courier._explain, the statement's own text,
-- flags and cache entry):
--   A  the table vacuumed and analyzed while empty (pg_class: 0 pages, 0 rows);
--   B  1.1 million messages later, plans kept from A in the same session;
--   C  a new session planning against A's pg_class;
--   D  fresh ANALYZE after 50,000 acks (dead index entries) and 100,000 leases (in flight);
--   E  drained: purge, VACUUM (TRUNCATE false) as courier's own vacuum runs it (pg_class:
--      N pages, 0 rows), then a new backlog of a million and a new session.
-- Rules for every scan of courier.message: an Index Scan or Index Only Scan (no sequential or
-- bitmap scan), on an index the statement means to use; a primary-key scan bounded by id; any
-- other scan either bounded by id or under a Limit with no node between them that reads its
-- whole input (Aggregate, Sort, Hash, Materialize, ...); and no JIT. The same for
-- courier.message_group (message groups), where a scan is bounded by a group key or a Limit.
-- The purge and drop statements delete a whole queue by definition and are exempt.
SET client_min_messages = warning;

CREATE FUNCTION regress.intended(statement text) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN statement IN ('ACK', 'ACK_PLAIN', 'ACK_MANY', 'ACK_MANY_PLAIN', 'LOCK_FOR_NACK', 'EXTEND')
            THEN ARRAY['message_pkey', 'message_group_idx']
        WHEN statement IN ('RELEASE', 'DEAD_LETTER', 'REDRIVE', 'APPLY', 'REDRIVE_GROUPED') THEN ARRAY['message_pkey']
        WHEN statement IN ('FOLLOWERS', 'PROMOTE', 'HEAD_STATE', 'RELEASE_TAIL') THEN ARRAY['message_group_idx', 'message_pkey']
        WHEN statement IN ('PICK', 'PICK_ONE_LEVEL', 'PICK_HEADS', 'NEXT_HEAD') THEN ARRAY['message_ready_idx', 'message_head_idx']
        WHEN statement = 'GROUP_GAUGES' THEN ARRAY['message_group_idx']
        WHEN statement IN ('SET_HEAD', 'RELOCK') THEN ARRAY['message_pkey']
        WHEN statement IN ('LEASE', 'LEASE_LISTED', 'LEASE_ONE_LEVEL') THEN ARRAY['message_ready_idx', 'message_pkey']
        WHEN statement IN ('REDRIVE_CANDIDATES', 'REDRIVE_CANDIDATES_BY_ID') THEN ARRAY['message_dead_idx', 'message_pkey']
        ELSE ARRAY['message_ready_idx'] END
$$;

CREATE FUNCTION regress.plan_violations(statement text, node jsonb, limited boolean DEFAULT false)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    kind text := node->>'Node Type';
    child jsonb;
BEGIN
    IF kind = 'Limit' THEN
        limited := true;
    ELSIF kind IN ('Aggregate', 'Sort', 'Incremental Sort', 'Hash', 'Materialize', 'WindowAgg',
                   'Group', 'Unique', 'SetOp', 'Gather', 'Gather Merge', 'Memoize') THEN
        limited := false;
    END IF;
    IF (kind LIKE '%Scan' AND node->>'Relation Name' = 'message_group')
       OR (kind LIKE 'Bitmap Index%' AND node->>'Index Name' LIKE 'message\_group\_%') THEN
        -- A bitmap scan is bounded when its condition names the groups (= or = ANY).
        IF kind NOT IN ('Index Scan', 'Index Only Scan', 'Bitmap Heap Scan', 'Bitmap Index Scan') THEN
            RETURN NEXT format('%s: %s on message_group', statement, kind);
        ELSIF NOT limited AND coalesce(node->>'Index Cond', node->>'Recheck Cond', '') !~ 'group_key = ' THEN
            RETURN NEXT format('%s: %s using %s bounded by neither a group key nor a Limit', statement, kind,
                               node->>'Index Name');
        END IF;
    ELSIF (kind LIKE '%Scan' AND node->>'Relation Name' = 'message')
       OR (kind LIKE 'Bitmap Index%' AND node->>'Index Name' IN ('message_pkey', 'message_ready_idx',
                                                                  'message_dead_idx', 'message_group_idx',
                                                                  'message_head_idx')) THEN
        IF kind NOT IN ('Index Scan', 'Index Only Scan') THEN
            RETURN NEXT format('%s: %s on message', statement, kind);
        ELSIF NOT (node->>'Index Name' = ANY (regress.intended(statement))) THEN
            RETURN NEXT format('%s: %s using %s', statement, kind, node->>'Index Name');
        ELSIF node->>'Index Name' = 'message_pkey' AND coalesce(node->>'Index Cond', '') !~ '\(id = ' THEN
            RETURN NEXT format('%s: primary key scan without an id bound', statement);
        ELSIF NOT limited AND coalesce(node->>'Index Cond', '') !~ '\(id = ' THEN
            RETURN NEXT format('%s: %s using %s not bounded by a Limit', statement, kind, node->>'Index Name');
        END IF;
    END IF;
    FOR child IN SELECT jsonb_array_elements(coalesce(node->'Plans', '[]')) LOOP
        RETURN QUERY SELECT regress.plan_violations(statement, child, limited);
    END LOOP;
END
$$;

CREATE TABLE regress.plan_result (state text, violation text);

CREATE FUNCTION regress.check_plans(state text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    statement text;
    part text;
BEGIN
    FOREACH statement IN ARRAY courier._statements() LOOP
        CONTINUE WHEN statement IN ('DELETE_QUEUE_MESSAGES', 'DELETE_QUEUE_COMPLETED', 'DELETE_QUEUE_KEYS',
                                    'DELETE_QUEUE_GROUPS', 'GROUPS_OF_DEAD_LETTERS');
        FOREACH part IN ARRAY courier._explain(statement) LOOP
            IF part LIKE '{"jitFlags"%' THEN
                IF (part::jsonb->>'jitFlags')::int <> 0 THEN
                    INSERT INTO regress.plan_result VALUES (state, statement || ': compiled with JIT');
                END IF;
            ELSE
                INSERT INTO regress.plan_result
                SELECT state, v FROM regress.plan_violations(statement, part::jsonb->0->'Plan') v;
            END IF;
        END LOOP;
    END LOOP;
    RETURN (SELECT count(*) FROM regress.plan_result r WHERE r.state = check_plans.state);
END
$$;

-- A statement that does not exist, and a caller that may not look.
SELECT regress.try($$SELECT courier._explain('NO_SUCH_STATEMENT')$$);
SELECT regress.try($$SELECT courier._explain(NULL)$$);
CREATE ROLE regress_plan_viewer;
GRANT USAGE ON SCHEMA courier TO regress_plan_viewer;
SET ROLE regress_plan_viewer;
SELECT regress.try($$SELECT courier._explain('ACK')$$);
RESET ROLE;
DROP OWNED BY regress_plan_viewer;
DROP ROLE regress_plan_viewer;
SELECT count(*) > 40 AS every_statement_listed FROM unnest(courier._statements());

SELECT courier.create_queue('plan_big', visibility_timeout => '10 minutes')
   AND courier.create_queue('plan_multi')
   AND courier.create_queue('plan_groups', visibility_timeout => '10 minutes') AS created;
-- courier's vacuum worker would re-plan every backend in the middle of a state.
SET courier.vacuum_threshold = 0;

-- A
VACUUM ANALYZE courier.message;
VACUUM ANALYZE courier.message_group;
SELECT regress.check_plans('A: empty, vacuumed') AS violations;

-- B: a million messages in one queue in batches of 100; 100,000 over ten priorities; delayed ones.
DO $$ BEGIN FOR i IN 1..10000 LOOP
    PERFORM courier.enqueue_batch('plan_big', (SELECT array_agg(jsonb_build_object('n', i * 100 + g, 'pad', repeat('x', 180)))
                                               FROM generate_series(1, 100) g));
END LOOP; END $$;
DO $$ BEGIN FOR i IN 1..1000 LOOP
    PERFORM courier.enqueue_batch('plan_multi', (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 100) g),
                                  priority => i % 10);
END LOOP; END $$;
SELECT count(*) = 1000 AS delayed FROM courier.enqueue_batch('plan_big',
    (SELECT array_agg(jsonb_build_object('d', g)) FROM generate_series(1, 1000) g), delay => '1 hour');
-- 100,000 messages in 10,000 groups.
DO $$ BEGIN FOR i IN 1..1000 LOOP
    PERFORM courier.enqueue_batch('plan_groups', (SELECT array_agg(jsonb_build_object('n', g)) FROM generate_series(1, 100) g),
                                  group_keys => (SELECT array_agg('g' || ((i * 100 + g) % 10000)) FROM generate_series(1, 100) g));
END LOOP; END $$;
SELECT regress.check_plans('B: 1.1 million rows, plans kept from A') AS violations;

-- C
\c
SET client_min_messages = warning;
SET courier.vacuum_threshold = 0;
SELECT regress.check_plans('C: new session, pg_class from A') AS violations;

-- D: 50,000 acked (dead entries until vacuum), 100,000 in flight, 1,000 parked dead.
DO $$ BEGIN FOR i IN 1..50 LOOP
    PERFORM courier.ack_batch(array_agg(receipt)) FROM courier.lease('plan_big', 1000);
END LOOP; END $$;
DO $$ BEGIN FOR i IN 1..100 LOOP PERFORM count(*) FROM courier.lease('plan_big', 1000); END LOOP; END $$;
SELECT courier.nack_batch(array_agg(receipt), dead => true) = 1000 AS parked FROM courier.lease('plan_multi', 1000);
-- Groups: 2,000 messages acked, 3,000 in flight in leases of up to 3 messages of a group.
DO $$ BEGIN FOR i IN 1..2 LOOP
    PERFORM courier.ack_batch(array_agg(receipt)) FROM courier.lease('plan_groups', 1000);
END LOOP; END $$;
DO $$ BEGIN FOR i IN 1..3 LOOP
    PERFORM count(*) FROM courier.lease('plan_groups', 1000, group_batch => 3);
END LOOP; END $$;
SELECT count(*) = 3000 AS held FROM courier.message WHERE group_key IS NOT NULL AND leased_until > now();
ANALYZE courier.message;
ANALYZE courier.message_group;
SELECT regress.check_plans('D: fresh ANALYZE') AS violations;

-- E
SELECT courier.purge_queue('plan_big') > 0 AND courier.purge_queue('plan_multi') > 0
   AND courier.purge_queue('plan_groups') > 0 AS drained;
VACUUM (TRUNCATE false) courier.message;
VACUUM (TRUNCATE false) courier.message_group;
DO $$ BEGIN FOR i IN 1..10000 LOOP
    PERFORM courier.enqueue_batch('plan_big', (SELECT array_agg(jsonb_build_object('n', i * 100 + g, 'pad', repeat('x', 180)))
                                               FROM generate_series(1, 100) g));
END LOOP; END $$;
SELECT relpages > 10000 AND reltuples <= 0 AS pg_class_says_drained FROM pg_class WHERE oid = 'courier.message'::regclass;
\c
SET client_min_messages = warning;
SELECT regress.check_plans('E: new session, pg_class says drained') AS violations;

-- Every violation, if any (none expected).
SELECT state, violation FROM regress.plan_result ORDER BY state, violation;

-- Leave nothing behind.
SELECT courier.drop_queue('plan_big') AND courier.drop_queue('plan_multi') AND courier.drop_queue('plan_groups') AS dropped;
VACUUM courier.message;
DROP TABLE regress.plan_result;
DROP FUNCTION regress.check_plans(text), regress.plan_violations(text, jsonb, boolean), regress.intended(text);
