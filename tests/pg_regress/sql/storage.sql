-- How enqueue writes rows (src/storage/direct.rs): payloads big enough to be compressed and
-- stored out of line, batches, and the INSERT statements it falls back to when courier.message
-- is not the table it knows how to fill.
SELECT courier.create_queue('s_main');

-- Which path wrote the last enqueue's rows, as the session saw it (courier._last_enqueue_path()),
-- and which heap records the enqueues since an LSN wrote for courier.message: the direct path
-- writes a batch as MULTI_INSERT (one record per heap page) and a single message as one INSERT,
-- the INSERT statements one INSERT record per row, batch or not.
CREATE EXTENSION pg_walinspect;
CREATE FUNCTION regress.heap_records(since pg_lsn) RETURNS text[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(DISTINCT split_part(record_type, '+', 1)), '{}')
    FROM pg_get_wal_records_info(since, pg_current_wal_flush_lsn())
    WHERE resource_manager IN ('Heap', 'Heap2') AND record_type LIKE '%INSERT%'
      AND block_ref LIKE '%/' || pg_relation_filenode('courier.message') || ' %'
$$;
SELECT courier._last_enqueue_path() IS NULL AS nothing_yet;
SELECT pg_current_wal_insert_lsn() AS lsn \gset
SELECT courier.enqueue('s_main', '{"n": 0}') > 0 AS single;
SELECT courier._last_enqueue_path() AS single_path, regress.heap_records(:'lsn') AS single_records;
SELECT pg_current_wal_insert_lsn() AS lsn \gset
SELECT count(*) AS batch FROM courier.enqueue_batch('s_main', '{1, 2}'::jsonb[]);
SELECT courier._last_enqueue_path() AS batch_path, regress.heap_records(:'lsn') AS batch_records;
SELECT courier.purge_queue('s_main');

-- About 200 kB of JSON. Enqueued from a table column (the value arrives as a pointer into that
-- table's TOAST storage), computed, and inside a batch, it comes back exactly.
CREATE TABLE regress.big (p jsonb);
INSERT INTO regress.big
SELECT jsonb_build_object('blob', string_agg(md5(i::text), ' ')) FROM generate_series(1, 6000) AS i;
SELECT pg_column_size(p) > 100000 AS stored_compressed_out_of_line,
       octet_length(p::text) > 190000 AS large FROM regress.big;
SELECT courier.enqueue('s_main', p) > 0 AS from_column FROM regress.big;
SELECT courier.enqueue('s_main', (SELECT p || '{"copy": 2}' FROM regress.big)) > 0 AS computed;
SELECT count(*) AS batch
FROM courier.enqueue_batch('s_main', ARRAY['{"small": 1}', (SELECT p FROM regress.big), '{"small": 3}']);
SELECT m.payload = b.p AS same_as_column, m.payload - 'blob' AS rest
FROM courier.message m, regress.big b
WHERE m.queue_id = (SELECT queue_id FROM courier.queue WHERE name = 's_main') ORDER BY m.id;
SELECT count(*) AS leased, bool_and(l.payload = b.p OR l.payload = b.p || '{"copy": 2}'
                                     OR l.payload - 'small' = '{}') AS all_intact
FROM courier.lease('s_main', 10) AS l, regress.big AS b;
SELECT courier.purge_queue('s_main');

-- The ids of a batch follow its order, and its rows land in the ready index in that order.
SELECT array_agg(id ORDER BY id) = array_agg(id ORDER BY n) AS ids_in_input_order
FROM courier.enqueue_batch('s_main', (SELECT array_agg(jsonb_build_object('n', n) ORDER BY n)
                                      FROM generate_series(1, 500) AS n))
     WITH ORDINALITY AS b(id, duplicate, n);
SELECT array_agg((l.payload->>'n')::int ORDER BY l.id) = array_agg(n ORDER BY n) AS leased_in_order
FROM courier.lease('s_main', 500) AS l, generate_series(1, 500) AS n WHERE (l.payload->>'n')::int = n;
SELECT courier.purge_queue('s_main');

-- A row trigger on courier.message: the rows go through INSERT statements, so it fires for
-- every message, single and batched.
CREATE TABLE regress.seen (id bigint);
CREATE FUNCTION regress.note() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO regress.seen VALUES (NEW.id);
    RETURN NEW;
END
$$;
CREATE TRIGGER regress_note AFTER INSERT ON courier.message FOR EACH ROW EXECUTE FUNCTION regress.note();
SELECT pg_current_wal_insert_lsn() AS lsn \gset
SELECT courier.enqueue('s_main', '{"n": 1}') AS t1 \gset
SELECT courier._last_enqueue_path() AS single_path;
SELECT count(*) AS batch FROM courier.enqueue_batch('s_main', '{2, 3}'::jsonb[]);
SELECT courier._last_enqueue_path() AS batch_path;
SELECT count(*) AS fired, min(id) = :t1 AS first_is_single FROM regress.seen;
SELECT regress.heap_records(:'lsn') AS statements;
-- Once the trigger is gone the direct path is back (pg_class.relhastriggers stays set until a
-- vacuum; the relation's trigger list is what counts).
DROP TRIGGER regress_note ON courier.message;
SELECT courier.enqueue('s_main', '{"n": 1.5}') > 0 AS single;
SELECT courier._last_enqueue_path() AS single_path;

-- A column added with a default: the statements fill it in, the direct path steps aside.
ALTER TABLE courier.message ADD COLUMN regress_tag text NOT NULL DEFAULT 'tagged';
SELECT pg_current_wal_insert_lsn() AS lsn \gset
SELECT courier.enqueue('s_main', '{"n": 4}') AS t4 \gset
SELECT courier._last_enqueue_path() AS single_path;
SELECT count(*) AS batch FROM courier.enqueue_batch('s_main', '{5, 6}'::jsonb[]);
SELECT courier._last_enqueue_path() AS batch_path;
SELECT regress_tag, count(*) FROM courier.message WHERE id >= :t4 GROUP BY regress_tag;
SELECT regress.heap_records(:'lsn') AS statements;
-- Dropped, it leaves a hole in the row that the direct path leaves empty.
ALTER TABLE courier.message DROP COLUMN regress_tag;
SELECT courier.enqueue('s_main', '{"n": 7}') AS t7 \gset
SELECT courier._last_enqueue_path() AS single_path;
SELECT payload, attempt, priority, headers, lease_token IS NULL AS not_leased, dead_at IS NULL AS alive,
       visible_at = enqueued_at AS ready_at_once
FROM courier.message WHERE id = :t7;
SELECT payload, attempt FROM courier.lease('s_main', 10) ORDER BY id;

SELECT courier.purge_queue('s_main');

-- A rule on courier.message: writing rows directly would bypass it, so the statements do the
-- work and the rule applies to every message, single and batched.
DELETE FROM regress.seen;
CREATE RULE regress_rule AS ON INSERT TO courier.message DO ALSO INSERT INTO regress.seen VALUES (NEW.id);
SELECT pg_current_wal_insert_lsn() AS lsn \gset
SELECT courier.enqueue('s_main', '{"n": 1}') > 0 AS single;
SELECT courier._last_enqueue_path() AS single_path;
SELECT count(*) AS batch FROM courier.enqueue_batch('s_main', '{2, 3}'::jsonb[]);
SELECT courier._last_enqueue_path() AS batch_path;
SELECT count(*) AS rule_applied FROM regress.seen;
SELECT regress.heap_records(:'lsn') AS statements;
-- Once the rule is gone the direct path is back (pg_class.relhasrules stays set for good).
DROP RULE regress_rule ON courier.message;
SELECT courier.enqueue('s_main', '{"n": 4}') > 0 AS single;
SELECT courier._last_enqueue_path() AS single_path;
SELECT courier.purge_queue('s_main') AS purged;

-- enqueue and enqueue_batch are declared without SET search_path (src/search_path.rs), yet code
-- that runs during an enqueue still sees the pinned path, never the caller's: a trigger (the
-- statements), a CHECK constraint and an expression index (the direct path) say what they see.
CREATE SCHEMA regress_elsewhere;
CREATE FUNCTION regress.say_path(what text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RAISE NOTICE '% sees search_path %', what, current_setting('search_path');
    RETURN true;
END
$$;
CREATE FUNCTION regress.trigger_path() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE NOTICE 'trigger % sees search_path %', NEW.payload->>'n', current_setting('search_path');
    RETURN NEW;
END
$$;
SET search_path = regress_elsewhere, public;
CREATE TRIGGER regress_path BEFORE INSERT ON courier.message
    FOR EACH ROW EXECUTE FUNCTION regress.trigger_path();
SELECT courier.enqueue('s_main', '{"n": 1}') > 0 AS single;
SELECT count(*) AS batch FROM courier.enqueue_batch('s_main', ARRAY['{"n": 2}']::jsonb[]);
DROP TRIGGER regress_path ON courier.message;
ALTER TABLE courier.message ADD CONSTRAINT regress_path CHECK (regress.say_path('check ' || (payload->>'n'))) NOT VALID;
SELECT courier.enqueue('s_main', '{"n": 3}') > 0 AS single;
SELECT courier._last_enqueue_path() AS single_path;
SELECT count(*) AS batch FROM courier.enqueue_batch('s_main', ARRAY['{"n": 4}']::jsonb[]);
SELECT courier._last_enqueue_path() AS batch_path;
ALTER TABLE courier.message DROP CONSTRAINT regress_path;
SELECT courier.purge_queue('s_main') AS purged;
CREATE INDEX regress_path ON courier.message (regress.say_path('index ' || (payload->>'n')));
SELECT courier.enqueue('s_main', '{"n": 5}') > 0 AS single;
DROP INDEX courier.regress_path;
-- The caller's path is back after each call, and after an error raised while it was pinned.
SHOW search_path;
ALTER TABLE courier.message ADD CONSTRAINT regress_path CHECK (payload <> '{"n": 6}') NOT VALID;
SELECT regress.try($$SELECT courier.enqueue('s_main', '{"n": 6}')$$);
SHOW search_path;
ALTER TABLE courier.message DROP CONSTRAINT regress_path;
RESET search_path;
SELECT count(*) AS enqueued FROM courier.message
WHERE queue_id = (SELECT queue_id FROM courier.queue WHERE name = 's_main');
DROP FUNCTION regress.trigger_path(), regress.say_path(text);
DROP SCHEMA regress_elsewhere;

-- Partial indexes: the direct path enters every index a new message belongs in, and leaves out
-- only those no new message can enter (courier's dead-letter index, WHERE dead_at IS NOT NULL).
-- amcheck's heapallindexed check fails on a heap row missing from an index it belongs in. The
-- indexes are created after this session's enqueues above, so the path sees the change.
CREATE EXTENSION amcheck;
CREATE INDEX regress_fresh ON courier.message (id) WHERE dead_at IS NULL;
CREATE INDEX regress_headed ON courier.message (id) WHERE headers IS NOT NULL;
SELECT courier.enqueue('s_main', '{"n": 1}') > 0 AS single;
SELECT courier.enqueue('s_main', '{"n": 2}', headers => '{"h": 1}') > 0 AS single_with_headers;
SELECT courier._last_enqueue_path() AS single_path;
SELECT count(*) AS batch
FROM courier.enqueue_batch('s_main', '{3, 4}'::jsonb[], headers => ARRAY['{"h": 2}', NULL]::jsonb[]);
SELECT courier._last_enqueue_path() AS batch_path;
SELECT count(bt_index_check(i::regclass, true)) AS indexes_complete
FROM unnest(ARRAY['courier.regress_fresh', 'courier.regress_headed', 'courier.message_dead_idx',
                  'courier.message_pkey', 'courier.message_ready_idx']) AS i;
DROP INDEX courier.regress_fresh, courier.regress_headed;
DROP EXTENSION amcheck;

SELECT courier.drop_queue('s_main');
DROP TABLE regress.big, regress.seen;
DROP FUNCTION regress.note(), regress.heap_records(pg_lsn);
DROP EXTENSION pg_walinspect;
