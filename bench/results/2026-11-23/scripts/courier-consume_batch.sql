SELECT array_agg(receipt) AS rs FROM courier.lease('bench', 100) \gset
SELECT courier.ack_batch(:rs::uuid[]);
