-- Queue catalog: create, list, purge, drop, and the naming rule.
SELECT courier.create_queue('q_basic');
SELECT courier.create_queue('q_vt', visibility_timeout => '5 minutes');
SELECT queue, visibility_timeout FROM courier.queues WHERE queue LIKE 'q\_%' ORDER BY queue;

-- Creating an existing queue is an error unless asked to be idempotent; the existing settings
-- are kept either way.
SELECT regress.try($$SELECT courier.create_queue('q_vt')$$);
SELECT courier.create_queue('q_vt', visibility_timeout => '1 hour', if_not_exists => true);
SELECT visibility_timeout FROM courier.queues WHERE queue = 'q_vt';

-- Names that follow the rule: ASCII letters, digits and _ - . : /, at most 63 bytes.
SELECT name, regress.try(format('SELECT courier.create_queue(%L)', name)) AS result
FROM (VALUES ('a'), ('Billing/Invoices'), ('email:high'), ('v1.events'), ('_tmp'), ('0day'),
             ('a-b_c.d:e/f'), (repeat('x', 63))) AS v(name);
-- Names are case-sensitive.
SELECT courier.create_queue('A');

-- Names that break it are rejected and never reach SQL text: quotes, semicolons, spaces,
-- comment markers, dollar quotes, unicode, control characters, leading punctuation, length.
SELECT regress.try(format('SELECT courier.create_queue(%L)', name)) AS result
FROM (VALUES (''), (repeat('x', 64)), (repeat(chr(233), 32)), ('a b'), ('a''b'), ('a"b'), ('a;b'),
             ('x; DROP TABLE courier.message; --'), ('a$$b'), ('caf' || chr(233)), ('tab' || chr(9)),
             ('-lead'), ('.dot'), ('/slash'), ('a\b')) AS v(name);
SELECT count(*) AS queues FROM courier.queue;

-- NULL and out-of-range arguments.
SELECT regress.try($$SELECT courier.create_queue(NULL)$$);
SELECT regress.try($$SELECT courier.create_queue('q_x', NULL)$$);
SELECT regress.try($$SELECT courier.create_queue('q_x', if_not_exists => NULL)$$);
SELECT vt, regress.try(format('SELECT courier.create_queue(%L, %L::interval)', 'q_x' || n, vt)) AS result
FROM (VALUES (1, '0'), (2, '-1 second'), (3, '12 hours 1 microsecond'), (4, '1 month'),
             (5, '-1 day 25 hours'), (6, '1 microsecond'), (7, '12 hours')) AS v(n, vt);
-- Stored as plain durations: a month counts 30 days and a day 24 hours, as PostgreSQL compares them.
SELECT queue, visibility_timeout FROM courier.queues WHERE queue LIKE 'q\_x%' ORDER BY queue;

-- Every function reports an unknown queue the same way (42704).
SELECT regress.try(statement) AS result FROM (VALUES
    ($$SELECT courier.enqueue('missing', '{}')$$),
    ($$SELECT courier.enqueue_batch('missing', ARRAY['{}']::jsonb[])$$),
    ($$SELECT courier.lease('missing')$$),
    ($$SELECT courier.purge_queue('missing')$$),
    ($$SELECT courier.drop_queue('missing')$$)) AS v(statement);
SELECT courier.drop_queue('missing', if_exists => true);

-- purge removes every message (ready, delayed and leased) and says how many.
SELECT count(*) FROM courier.enqueue_batch('q_basic', ARRAY['1', '2', '3']::jsonb[]);
SELECT courier.enqueue('q_basic', '4', delay => '1 hour') > 0 AS delayed;
SELECT count(*) AS leased FROM courier.lease('q_basic', 2);
SELECT courier.enqueue('q_vt', '{}') > 0 AS other_queue;
SELECT courier.purge_queue('q_basic');
SELECT courier.purge_queue('q_basic');
SELECT count(*) AS untouched_in_q_vt FROM courier.lease('q_vt', 10);

-- Thousands of queues are just rows.
SELECT count(*) FILTER (WHERE courier.create_queue('many-' || i)) AS created
FROM generate_series(1, 2000) AS i;
SELECT count(*) FILTER (WHERE courier.enqueue('many-' || i, to_jsonb(i)) > 0) AS enqueued
FROM generate_series(1, 2000) AS i;
SELECT bool_and((SELECT payload FROM courier.lease('many-' || i)) = to_jsonb(i)) AS each_queue_has_its_own
FROM generate_series(1, 2000) AS i;

-- drop_queue removes the queue and its messages.
SELECT count(*) FILTER (WHERE courier.drop_queue(queue)) AS dropped FROM courier.queues;
SELECT count(*) AS queues, (SELECT count(*) FROM courier.message) AS messages FROM courier.queue;
