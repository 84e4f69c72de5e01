SELECT msg_id AS m FROM pgmq.read('bench', 30, 1) \gset
SELECT pgmq.delete('bench', :m::bigint);
