-- Redelivery without sleeping. A failed attempt is nacked with retry_in => '0', so the job is
-- due again at once (the queue's backoff would make the test wait); a consumer that crashes is
-- played by a lease with a visibility timeout of 1 microsecond, over before the next statement.

-- The handler fails (the order has no address yet): its writes roll back and the job comes
-- back at once, carrying the error.
SELECT shop.place_order('alan', NULL) IS NOT NULL AS placed;
SELECT shop.ship_next(retry_in => '0') AS outcome;
SELECT count(*) = 0 AS no_shipment FROM shop.shipments s JOIN shop.orders o ON o.id = s.order_id
WHERE o.customer = 'alan';
SELECT ready = 1 AS due_again, delayed = 0 AS not_delayed FROM courier.stats('shop.ship');
BEGIN;
SELECT attempt, last_error FROM courier.lease('shop.ship');
ROLLBACK;

-- The address is fixed; a consumer leases the job and crashes before it acks.
UPDATE shop.orders SET address = '5 Turing Test Lane' WHERE customer = 'alan';
SELECT receipt AS crashed_receipt, attempt AS crashed_attempt FROM courier.lease('shop.ship', visibility_timeout => '1 microsecond') \gset
SELECT :crashed_attempt = 2 AS crashed_on_second_attempt;

-- Its lease has run out: the worker gets the job on the third attempt and ships it.
SELECT shop.ship_next() AS outcome;
SELECT s.attempt FROM shop.shipments s JOIN shop.orders o ON o.id = s.order_id WHERE o.customer = 'alan';
-- The crashed consumer's receipt does nothing now.
SELECT courier.ack(:'crashed_receipt') AS late_ack;
SELECT ready + delayed + in_flight + dead = 0 AS queue_empty FROM courier.stats('shop.ship');
