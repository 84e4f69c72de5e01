SELECT count(*) FROM pgmq.read('bench', 30, 1);
