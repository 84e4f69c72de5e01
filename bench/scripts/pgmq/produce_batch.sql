SELECT count(*) FROM pgmq.send_batch('bench', array_fill('@PAYLOAD@'::jsonb, ARRAY[100]));
