SELECT receipt AS r FROM courier.lease('bench') \gset
SELECT courier.ack(:r::uuid);
