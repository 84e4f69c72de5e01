-- The application under test: a shop whose SQL uses courier. In a real project this is the
-- application's migration; the regression tests load it with \ir and drop it in teardown.
CREATE SCHEMA shop;

CREATE TABLE shop.orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer text NOT NULL,
    address text,                     -- an order without one cannot ship (yet)
    status text NOT NULL DEFAULT 'placed' CHECK (status IN ('placed', 'shipped'))
);

CREATE TABLE shop.shipments (
    order_id bigint PRIMARY KEY REFERENCES shop.orders,
    attempt integer NOT NULL
);

-- Three deliveries, then the job goes to shop.ship.dead for a human to look at.
SELECT courier.create_queue('shop.ship.dead');
SELECT courier.create_queue('shop.ship', max_attempts => 3, dead_letter_queue => 'shop.ship.dead',
                            visibility_timeout => '5 minutes');

-- Places an order and enqueues its shipping job in the caller's transaction: both or neither.
CREATE FUNCTION shop.place_order(customer text, address text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    order_id bigint;
BEGIN
    INSERT INTO shop.orders (customer, address) VALUES (customer, address) RETURNING id INTO order_id;
    PERFORM courier.enqueue('shop.ship', jsonb_build_object('order_id', order_id));
    RETURN order_id;
END
$$;

-- The handler: ships one order, or raises.
CREATE FUNCTION shop.ship_order(order_id bigint, attempt integer) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT o.address IS NULL FROM shop.orders o WHERE o.id = order_id) THEN
        RAISE EXCEPTION 'order has no address';
    END IF;
    INSERT INTO shop.shipments (order_id, attempt) VALUES (order_id, attempt);
    UPDATE shop.orders SET status = 'shipped' WHERE id = order_id;
END
$$;

-- The worker step: leases one job, runs the handler, and acks strictly in the same transaction
-- (the shipment and the ack commit together); if the handler fails, its writes are rolled back
-- to the savepoint and the job is nacked with the error, to come back after `retry_in` (the
-- queue's backoff when NULL). Returns what happened: 'shipped', 'failed' or 'idle'.
CREATE FUNCTION shop.ship_next(retry_in interval DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    job record;
BEGIN
    SELECT id, receipt, payload, attempt INTO job FROM courier.lease('shop.ship');
    IF NOT FOUND THEN
        RETURN 'idle';
    END IF;
    BEGIN
        PERFORM shop.ship_order((job.payload ->> 'order_id')::bigint, job.attempt);
    EXCEPTION WHEN raise_exception THEN
        PERFORM courier.nack(job.receipt, retry_in => ship_next.retry_in, error => SQLERRM);
        RETURN 'failed';
    END;
    PERFORM courier.ack(job.receipt, strict => true);
    RETURN 'shipped';
END
$$;
