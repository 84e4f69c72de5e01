-- The role an exporter connects as: it may call courier.stats() and read the two views the
-- queries read, and nothing else (no table, no queue privilege: stats needs none). Run it in
-- the database courier is installed in; give the role a password or another way to log in.
--
--   psql -d app -f monitoring/postgres_exporter/role.sql
CREATE ROLE courier_exporter LOGIN;
GRANT USAGE ON SCHEMA courier TO courier_exporter;
GRANT EXECUTE ON FUNCTION courier.stats TO courier_exporter;
GRANT SELECT ON courier.queue_stats, courier.queues TO courier_exporter;
