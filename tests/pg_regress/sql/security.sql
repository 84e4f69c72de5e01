-- Hostile search_path, SQL-looking input and huge input.

-- A schema ahead of pg_catalog and courier in search_path, full of look-alikes that record being
-- called: the operators and functions courier's statements use, and tables named like courier's
-- (also as temporary tables, which are searched first by default). None of them is ever used.
CREATE SCHEMA regress_evil;
CREATE TABLE regress_evil.calls (what text);
CREATE FUNCTION regress_evil.called(what text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO regress_evil.calls VALUES (what);
    RETURN true;
END
$$;
CREATE FUNCTION regress_evil.int8eq(a bigint, b bigint) RETURNS boolean LANGUAGE sql
    AS $$ SELECT regress_evil.called('=(bigint, bigint)') AND a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR regress_evil.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = regress_evil.int8eq);
CREATE FUNCTION regress_evil.int4eq(a integer, b integer) RETURNS boolean LANGUAGE sql
    AS $$ SELECT regress_evil.called('=(integer, integer)') AND a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR regress_evil.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = regress_evil.int4eq);
CREATE FUNCTION regress_evil.texteq(a text, b text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT regress_evil.called('=(text, text)') AND a OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR regress_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_evil.texteq);
CREATE FUNCTION regress_evil.tsle(a timestamptz, b timestamptz) RETURNS boolean LANGUAGE sql
    AS $$ SELECT regress_evil.called('<=(timestamptz, timestamptz)') AND a OPERATOR(pg_catalog.<=) b $$;
CREATE OPERATOR regress_evil.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = regress_evil.tsle);
CREATE FUNCTION regress_evil.now() RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT pg_catalog.now() WHERE regress_evil.called('now()') $$;
CREATE FUNCTION regress_evil.nextval(regclass) RETURNS bigint LANGUAGE sql
    AS $$ SELECT 1::bigint WHERE regress_evil.called('nextval(regclass)') $$;
CREATE FUNCTION regress_evil.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE sql
    AS $$ SELECT x FROM pg_catalog.unnest($1) AS x WHERE regress_evil.called('unnest(anyarray)') $$;
CREATE FUNCTION regress_evil.pg_notify(text, text) RETURNS void LANGUAGE sql
    AS $$ SELECT regress_evil.called('pg_notify(text, text)') $$;
CREATE TABLE regress_evil.message (id bigint, queue_id integer, payload jsonb);
CREATE TABLE regress_evil.queue (queue_id integer, name text);
CREATE TEMP TABLE message (id bigint, queue_id integer, payload jsonb);
CREATE TEMP TABLE queue (queue_id integer, name text);

-- This session's first courier calls run under the hostile path, so courier's statements are
-- prepared under it too.
SET search_path = regress_evil, pg_catalog, courier, public;
SELECT courier.create_queue('h_q', visibility_timeout => '1 hour', notify => true, retention => '1 hour');
SELECT courier.create_queue('h_dlq');
SELECT courier.alter_queue('h_q', dead_letter_queue => 'h_dlq', max_attempts => 2);
SELECT courier.enqueue('h_q', '{"n": 1}') > 0 AS enqueued;
SELECT count(*) AS enqueued FROM courier.enqueue_batch('h_q', ARRAY['{"n": 2}', '{"n": 3}', '{"n": 4}']::jsonb[],
                                                       dedup_keys => ARRAY['a', 'b', 'c']);
SELECT duplicate FROM courier.enqueue_unique('h_q', '{"n": 5}', 'a');
CREATE TEMP TABLE h_held AS SELECT payload, receipt FROM courier.lease('h_q', 4);
SELECT count(*) AS leased FROM h_held;
SELECT courier.ack((SELECT receipt FROM h_held WHERE payload = '{"n": 1}')) AS acked;
SELECT courier.ack_batch(ARRAY(SELECT receipt FROM h_held WHERE payload = '{"n": 2}')) AS acked;
SELECT courier.extend((SELECT receipt FROM h_held WHERE payload = '{"n": 3}'), '1 minute') AS extended;
SELECT courier.nack((SELECT receipt FROM h_held WHERE payload = '{"n": 3}'), retry_in => '0') AS nacked;
SELECT courier.nack_batch(ARRAY(SELECT receipt FROM h_held WHERE payload = '{"n": 4}'), dead => true) AS nacked;
SELECT courier.redrive('h_dlq') AS redriven;
SELECT queue, ready FROM courier.stats('h_q');
SELECT count(*) >= 0 AS ok FROM courier.queue_stats;
SELECT count(*) >= 0 AS ok FROM courier.dead_letters;
SELECT count(*) >= 0 AS ok FROM courier.completed_messages;
SELECT count(*) >= 0 AS ok FROM courier.queues;
SELECT courier.stats_reset('h_q') IS NOT NULL AS reset;
SELECT expired_keys >= 0 AS ok FROM courier.maintain();
SELECT courier.grant('h_q', 'enqueue', 'public');
SELECT courier.has_queue_privilege('h_q', 'consume') AS may_consume;
SELECT courier.revoke('h_q', 'enqueue', 'public');
SELECT courier.purge_queue('h_q') >= 0 AS purged;
SELECT courier.alter_queue('h_q', dead_letter_queue => '');
SELECT courier.drop_queue('h_q');
SELECT courier.drop_queue('h_dlq');
-- The control: an ordinary statement under this path does call the look-alike.
SELECT 1::bigint = 1::bigint AS control;
RESET search_path;
SELECT what, count(*) FROM regress_evil.calls GROUP BY what ORDER BY 1;
SELECT count(*) AS evil_rows FROM regress_evil.message;
SELECT count(*) AS temp_rows FROM pg_temp.message;
DROP TABLE pg_temp.message, pg_temp.queue, h_held;
DROP SCHEMA regress_evil CASCADE;

-- Queue names written as SQL are names that break the naming rule: refused, not run.
SELECT courier.create_queue('s_q');
SELECT regress.messages() AS before \gset
SELECT f, left(regress.try(format('SELECT courier.%s(%L)', f, n)), 90) AS result
FROM (VALUES ('create_queue'), ('purge_queue'), ('drop_queue')) AS fns(f),
     (VALUES ($n$x'; DROP TABLE courier.message; --$n$),
             ('s_q; SELECT 1'),
             ('$$'),
             ('s_q/* comment */'),
             ('s_q -- comment'),
             ('s_q"'),
             (E's_q\\'),
             ('ünïcödé'),
             ('日本語'),
             (E's_q\n'),
             (repeat('q', 10 * 1024 * 1024))) AS names(n)
ORDER BY f, n;
SELECT left(regress.try(format('SELECT courier.enqueue(%L, %L)', n, '{}')), 90) AS result
FROM (VALUES ($n$x'; DROP TABLE courier.message; --$n$), ('$$'), (repeat('q', 10 * 1024 * 1024))) AS names(n);
SELECT regress.messages() = :before AS nothing_changed;
SELECT count(*) AS queues FROM courier.queue;

-- Payloads, headers, dedup keys and error texts that look like SQL are data: stored and
-- returned byte for byte.
CREATE TEMP TABLE s_docs (k int, doc jsonb);
INSERT INTO s_docs VALUES
    (1, jsonb_build_object('sql', $s$'); DROP TABLE courier.message; --$s$)),
    (2, jsonb_build_object('dollars', '$$ $body$ $$', 'comment', '/* */ --')),
    (3, jsonb_build_object('unicode', 'ünïcödé 日本語 🚀', 'quote', '"''\')),
    (4, to_jsonb($s$; SELECT pg_sleep(10); --$s$::text));
SELECT courier.enqueue('s_q', doc, headers => jsonb_build_object('h', doc), dedup_key => doc::text) > 0 AS enqueued
FROM s_docs ORDER BY k;
CREATE TEMP TABLE s_got AS SELECT payload, headers, receipt FROM courier.lease('s_q', 10);
SELECT count(*) AS round_trips
FROM s_docs d JOIN s_got g ON g.payload = d.doc AND g.headers = jsonb_build_object('h', d.doc);
SELECT courier.nack(receipt, error => $e$'); DROP TABLE courier.message; --$e$, retry_in => '0') AS nacked
FROM s_got WHERE payload = (SELECT doc FROM s_docs WHERE k = 1);
SELECT last_error = $e$'); DROP TABLE courier.message; --$e$ AS error_kept
FROM courier.message WHERE payload = (SELECT doc FROM s_docs WHERE k = 1);
SELECT duplicate FROM s_docs, courier.enqueue_unique('s_q', doc, doc::text) ORDER BY k;

-- Ten-megabyte inputs: clean errors naming the argument, nothing stored, or (error texts)
-- truncated.
SELECT left(regress.try(statement), 120) AS result FROM (VALUES
    ($$SELECT courier.enqueue('s_q', to_jsonb(repeat('x', 10 * 1024 * 1024)))$$),
    ($$SELECT courier.enqueue('s_q', '{}', headers => jsonb_build_object('h', repeat('x', 10 * 1024 * 1024)))$$),
    ($$SELECT courier.enqueue('s_q', '{}', dedup_key => repeat('k', 10 * 1024 * 1024))$$),
    ($$SELECT courier.enqueue_batch('s_q', ARRAY[to_jsonb(repeat('x', 10 * 1024 * 1024))])$$),
    ($$SELECT courier.enqueue_batch('s_q', array_fill('{}'::jsonb, ARRAY[1000000]))$$),
    ($$SELECT * FROM courier.lease('s_q', 10000000)$$),
    ($$SELECT courier.ack_batch(array_fill('00000000-0000-8000-8000-000000000001'::uuid, ARRAY[1000000]))$$)
) AS t(statement);
SELECT courier.enqueue('s_q', '"to fail"') > 0 AS enqueued;
SELECT courier.nack(receipt, error => repeat('e', 10 * 1024 * 1024), retry_in => '0') AS nacked
FROM courier.lease('s_q', 10) WHERE payload = '"to fail"';
SELECT octet_length(last_error) AS error_bytes FROM courier.message WHERE payload = '"to fail"';
SELECT courier.drop_queue('s_q');
DROP TABLE s_docs, s_got;
