SELECT array_agg(msg_id) AS ids FROM pgmq.read('bench', 30, 100) \gset
SELECT pgmq.delete('bench', :ids::bigint[]);
