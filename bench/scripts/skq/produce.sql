INSERT INTO skq.message (payload) VALUES ('@PAYLOAD@');
