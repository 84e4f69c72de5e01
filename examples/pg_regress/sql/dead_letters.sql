-- Dead-lettering without sleeping: every attempt fails and is nacked with retry_in => '0'; the
-- third delivery (max_attempts => 3) moves the job to shop.ship.dead.
SELECT shop.place_order('barbara', NULL) IS NOT NULL AS placed;
SELECT shop.ship_next(retry_in => '0') AS outcome;
SELECT shop.ship_next(retry_in => '0') AS outcome;
SELECT shop.ship_next(retry_in => '0') AS outcome;
SELECT shop.ship_next(retry_in => '0') AS outcome;    -- nothing left to lease

SELECT ready + delayed + in_flight + dead = 0 AS ship_queue_empty FROM courier.stats('shop.ship');
SELECT ready = 1 AS one_dead_letter FROM courier.stats('shop.ship.dead');
SELECT d.queue, d.origin_queue, d.attempts, d.last_error,
       (d.payload ->> 'order_id')::bigint = o.id AS carries_the_order
FROM courier.dead_letters d, shop.orders o WHERE o.customer = 'barbara';
SELECT count(*) = 0 AS no_shipment FROM shop.shipments s JOIN shop.orders o ON o.id = s.order_id
WHERE o.customer = 'barbara';

-- Fixed by hand and redriven: back in shop.ship with its attempts reset, and shipped.
UPDATE shop.orders SET address = '6 Difference Engine Row' WHERE customer = 'barbara';
SELECT courier.redrive('shop.ship.dead') AS redriven;
SELECT shop.ship_next() AS outcome;
SELECT s.attempt FROM shop.shipments s JOIN shop.orders o ON o.id = s.order_id WHERE o.customer = 'barbara';

SELECT count(*) = 0 AS no_dead_letters FROM courier.dead_letters;
SELECT bool_and(ready + delayed + in_flight + dead = 0) AS queues_empty FROM courier.queue_stats WHERE queue LIKE 'shop.%';
-- Every order shipped exactly once.
SELECT count(*) AS orders, count(s.order_id) AS shipped, bool_and(o.status = 'shipped') AS all_shipped
FROM shop.orders o LEFT JOIN shop.shipments s ON s.order_id = o.id;
