INSERT INTO bare (payload) VALUES ('@PAYLOAD@');
