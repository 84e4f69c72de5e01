-- Every test cleans up after itself.
SELECT count(*) AS queues_left FROM courier.queue;
SELECT count(*) AS messages_left FROM courier.message;
DROP SCHEMA regress CASCADE;
