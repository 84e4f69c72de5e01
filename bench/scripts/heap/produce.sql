INSERT INTO heap_only (payload) VALUES ('@PAYLOAD@');
