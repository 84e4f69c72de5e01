-- Scenario 9: read 1 + delete from one of 1,000 queues, at random.
\set q random(1, 1000)
SELECT msg_id AS m FROM pgmq.read('m' || :q, 30, 1) \gset
SELECT pgmq.delete('m' || :q, :m::bigint);
