-- enqueue and enqueue_batch.
SELECT courier.create_queue('e_main');
SELECT regress.messages() AS before \gset

SELECT courier.enqueue('e_main', '{"n": 1}') AS first_id \gset
SELECT courier.enqueue('e_main', '{"n": 2}', headers => '{"trace": "t-1"}') = :first_id + 1 AS next_id;

-- Any JSON value is a payload, including JSON null; SQL NULL is not.
SELECT courier.enqueue('e_main', payload) > 0 AS accepted, payload
FROM (VALUES ('null'::jsonb), ('"text"'), ('42'), ('[1, 2]'), ('{}')) AS v(payload);
SELECT regress.try($$SELECT courier.enqueue('e_main', NULL)$$);
SELECT regress.try($$SELECT courier.enqueue(NULL, '{}')$$);
SELECT regress.try($$SELECT courier.enqueue('', '{}')$$);
SELECT regress.try($$SELECT courier.enqueue('no_such', '{}')$$);

-- Headers are a JSON object or NULL.
SELECT regress.try(format('SELECT courier.enqueue(%L, %L, headers => %L)', 'e_main', '{}', h)) AS result
FROM (VALUES ('[1]'), ('"s"'), ('null'), ('1')) AS v(h);
SELECT courier.enqueue('e_main', '{}', headers => NULL) > 0 AS null_headers_ok;

-- Delays: zero or positive, at most a year.
SELECT regress.try(format('SELECT courier.enqueue(%L, %L, delay => %L::interval)', 'e_main', '{}', d)) AS result
FROM (VALUES ('-1 second'), ('366 days'), ('1 year 6 days'), ('365 days'), ('1 year 5 days')) AS v(d);
SELECT regress.try($$SELECT courier.enqueue('e_main', '{}', delay => NULL)$$);

-- Payload size: exactly the limit is accepted, one byte more is not, and neither are 10 MB.
-- A JSON string of n bytes is n + 8 bytes of jsonb.
SET courier.max_payload_size = 100;
SELECT courier.enqueue('e_main', to_jsonb(repeat('x', 92))) > 0 AS at_limit;
SELECT regress.try($$SELECT courier.enqueue('e_main', to_jsonb(repeat('x', 93)))$$);
SELECT regress.try($$SELECT courier.enqueue('e_main', '{}', headers => jsonb_build_object('k', repeat('x', 200)))$$);
RESET courier.max_payload_size;
SHOW courier.max_payload_size;
SELECT regress.try($$SELECT courier.enqueue('e_main', to_jsonb(repeat('x', 10 * 1024 * 1024)))$$);
SELECT courier.enqueue('e_main', to_jsonb(repeat('x', 1024 * 1024 - 8))) > 0 AS at_default_limit;
SELECT regress.try($$SET courier.max_payload_size = 0$$);

-- Only a superuser may change the limit.
CREATE ROLE regress_enqueue_user;
SET ROLE regress_enqueue_user;
SELECT regress.try($$SET courier.max_payload_size = '1GB'$$);
RESET ROLE;
DROP ROLE regress_enqueue_user;

SELECT regress.messages() - :before AS enqueued_so_far;

-- enqueue_batch returns ids in input order; headers are per message.
SELECT array_agg(id) AS ids FROM courier.enqueue_batch('e_main',
    ARRAY['{"b": 1}', '{"b": 2}', '{"b": 3}']::jsonb[],
    headers => ARRAY['{"h": 1}', NULL, '{"h": 3}']::jsonb[]) AS id \gset
SELECT :'ids'::bigint[] = (SELECT array_agg(x ORDER BY x) FROM unnest(:'ids'::bigint[]) AS x) AS ascending,
       cardinality(:'ids'::bigint[]) AS n;
SELECT m.payload, m.headers FROM courier.message m WHERE m.id = ANY (:'ids'::bigint[]) ORDER BY m.id;

-- Bad batches change nothing.
SELECT regress.messages() AS before_bad_batches \gset
SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.enqueue_batch('e_main', NULL)$$),
    ($$SELECT courier.enqueue_batch('e_main', '{}'::jsonb[])$$),
    ($$SELECT courier.enqueue_batch('e_main', ARRAY[['{}', '{}'], ['{}', '{}']]::jsonb[])$$),
    ($$SELECT courier.enqueue_batch('e_main', ARRAY['{}', NULL, '{}']::jsonb[])$$),
    ($$SELECT courier.enqueue_batch('e_main', (SELECT array_agg('{}'::jsonb) FROM generate_series(1, 1001)))$$),
    ($$SELECT courier.enqueue_batch('e_main', ARRAY['{}', '{}']::jsonb[], headers => ARRAY['{}']::jsonb[])$$),
    ($$SELECT courier.enqueue_batch('e_main', ARRAY['{}']::jsonb[], headers => ARRAY['[]']::jsonb[])$$),
    ($$SELECT courier.enqueue_batch('e_main', ARRAY['{}']::jsonb[], delay => '-1 s')$$),
    ($$SELECT courier.enqueue_batch('nope', ARRAY['{}']::jsonb[])$$),
    ($$SELECT courier.enqueue_batch('e_main', ARRAY['{}', to_jsonb(repeat('x', 2 * 1024 * 1024))])$$)
) AS v(statement);
SELECT regress.messages() - :before_bad_batches AS changed;
SELECT count(*) AS batch_of_1000 FROM courier.enqueue_batch('e_main',
    (SELECT array_agg(to_jsonb(i)) FROM generate_series(1, 1000) AS i));

-- Enqueue is part of the caller's transaction: rolled back, it never happened.
SELECT regress.messages() AS before_rollback \gset
BEGIN;
SELECT courier.enqueue('e_main', '{"rolled": "back"}') > 0 AS enqueued;
SELECT count(*) FROM courier.enqueue_batch('e_main', ARRAY['1', '2']::jsonb[]);
ROLLBACK;
SELECT regress.messages() - :before_rollback AS changed;

-- Delayed messages are invisible until due.
SELECT courier.create_queue('e_delay');
SELECT courier.enqueue('e_delay', '"later"', delay => '1 hour') > 0 AS enqueued;
SELECT courier.enqueue('e_delay', '"soon"', delay => '1 second') > 0 AS enqueued;
SELECT count(*) AS ready_now FROM courier.lease('e_delay', 10);
SELECT pg_sleep(1.1);
SELECT payload FROM courier.lease('e_delay', 10);

SELECT courier.drop_queue('e_main'), courier.drop_queue('e_delay');
