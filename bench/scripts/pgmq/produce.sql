SELECT pgmq.send('bench', '@PAYLOAD@');
