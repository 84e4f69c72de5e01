-- An order and its shipping job commit together, or neither does.
SELECT shop.place_order('ada', '1 Analytical Way') IS NOT NULL AS placed;
SELECT shop.place_order('grace', '2 Compiler Court') IS NOT NULL AS placed;

-- A checkout that fails after placing the order: the rollback takes the job with it.
BEGIN;
SELECT shop.place_order('mallory', '3 Nowhere') IS NOT NULL AS placed;
ROLLBACK;

SELECT count(*) = 2 AS two_orders FROM shop.orders;
SELECT ready = 2 AS two_jobs_ready, delayed = 0 AND in_flight = 0 AND dead = 0 AS nothing_else
FROM courier.stats('shop.ship');

-- Each job carries its order. Reading the jobs with a lease inside a transaction that rolls
-- back leaves them untouched: a rolled-back lease never happened, attempt counts included.
BEGIN;
SELECT array_agg((payload ->> 'order_id')::bigint ORDER BY 1) = (SELECT array_agg(id ORDER BY id) FROM shop.orders)
       AS one_job_per_order,
       bool_and(attempt = 1) AS first_attempt
FROM courier.lease('shop.ship', batch_size => 10);
ROLLBACK;
SELECT ready = 2 AS still_two_ready FROM courier.stats('shop.ship');
