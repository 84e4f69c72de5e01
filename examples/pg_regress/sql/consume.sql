-- The worker ships each job once: the shipment and the strict ack commit together.
SELECT shop.ship_next() AS outcome;
SELECT shop.ship_next() AS outcome;
SELECT shop.ship_next() AS outcome;    -- nothing left

SELECT count(*) = 2 AS two_shipments, bool_and(attempt = 1) AS first_attempt FROM shop.shipments;
SELECT bool_and(status = 'shipped') AS all_shipped FROM shop.orders;
SELECT ready + delayed + in_flight + dead = 0 AS queue_empty FROM courier.stats('shop.ship');

-- A transaction that does the work but does not commit leaves the job where it was.
SELECT shop.place_order('edsger', '4 Semaphore Street') IS NOT NULL AS placed;
BEGIN;
SELECT shop.ship_next() AS outcome;
ROLLBACK;
SELECT ready = 1 AS job_back, in_flight = 0 AS not_leased FROM courier.stats('shop.ship');
SELECT shop.ship_next() AS outcome;
SELECT count(*) = 3 AS three_shipments, bool_and(attempt = 1) AS first_attempt FROM shop.shipments;
SELECT ready + delayed + in_flight + dead = 0 AS queue_empty FROM courier.stats('shop.ship');
