-- Scenario 9: lease 1 + ack from one of 1,000 queues, at random.
\set q random(1, 1000)
SELECT receipt AS r FROM courier.lease('m' || :q) \gset
SELECT courier.ack(:r::uuid);
