-- Behaviour that depends on one session's state: kept plans, large and compressed payloads,
-- isolation levels.

-- Plans are prepared once per backend and kept. Dropping and re-creating the extension in the
-- same session gives the tables new OIDs; the kept plans must follow them.
SELECT courier.create_queue('s_plans');
SELECT courier.enqueue('s_plans', '"before"') > 0 AS enqueued;
SELECT payload FROM courier.lease('s_plans');
DROP EXTENSION courier;
CREATE EXTENSION courier;
SELECT courier.create_queue('s_plans');
SELECT courier.enqueue('s_plans', '"after"') > 0 AS enqueued;
SELECT payload, courier.ack(receipt) AS acked FROM courier.lease('s_plans');

-- Payloads that PostgreSQL compresses or moves out of line (TOAST) come back byte for byte.
CREATE TEMP TABLE big AS
    SELECT jsonb_build_object('text', repeat('compressible ', 20000), 'random',
                              (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 5000) AS i)) AS doc;
SELECT pg_column_size(doc) < octet_length(doc::text) AS stored_compressed FROM big;
SELECT courier.enqueue('s_plans', doc) > 0 AS enqueued FROM big;
SELECT l.payload = b.doc AS identical, courier.ack(l.receipt) AS acked FROM courier.lease('s_plans') AS l, big AS b;

-- A lease loop inside one transaction keeps working (plans reused, results copied out of SPI).
BEGIN;
SELECT count(*) FROM courier.enqueue_batch('s_plans', (SELECT array_agg(to_jsonb(i)) FROM generate_series(1, 500) AS i));
CREATE FUNCTION pg_temp.drain_one_by_one(queue text) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    acked integer := 0;
    r uuid;
BEGIN
    LOOP
        SELECT receipt INTO r FROM courier.lease(queue);
        EXIT WHEN NOT FOUND;
        IF courier.ack(r) THEN
            acked := acked + 1;
        END IF;
    END LOOP;
    RETURN acked;
END
$$;
SELECT pg_temp.drain_one_by_one('s_plans') AS acked_one_by_one;
SELECT count(*) AS nothing_left FROM courier.lease('s_plans', 1000);
COMMIT;

-- At REPEATABLE READ and SERIALIZABLE: enqueue and lease work; drop_queue refuses, because its
-- snapshot could miss messages committed after it was taken.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT courier.enqueue('s_plans', '"rr"') > 0 AS enqueued;
SELECT payload FROM courier.lease('s_plans');
SELECT regress.try($$SELECT courier.drop_queue('s_plans')$$);
COMMIT;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT regress.try($$SELECT courier.drop_queue('s_plans')$$);
ROLLBACK;
SELECT courier.drop_queue('s_plans');
