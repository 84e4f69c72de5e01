-- Remove the application, queues first (a dead-letter queue is dropped after the queue that
-- uses it), and check that nothing is left: the database can be reused with --use-existing.
SELECT courier.drop_queue('shop.ship') AS dropped;
SELECT courier.drop_queue('shop.ship.dead') AS dropped;
SET client_min_messages = warning;   -- no list of what the CASCADE drops
DROP SCHEMA shop CASCADE;
RESET client_min_messages;
SELECT count(*) = 0 AS no_queues_left FROM courier.queues;
SELECT count(*) = 0 AS no_dead_letters_left FROM courier.dead_letters;
SELECT count(*) = 0 AS no_app_schema_left FROM pg_namespace WHERE nspname = 'shop';
