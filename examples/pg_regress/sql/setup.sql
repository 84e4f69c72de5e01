-- pg_regress created this database and ran CREATE EXTENSION courier (--load-extension=courier).
-- Load the application under test, as its migration would: quietly (its errors still show),
-- so that expected/setup.out does not copy the application's SQL. pg_regress tells psql where
-- the test files are in PG_ABS_SRCDIR (PostgreSQL 15 and later).
\getenv abs_srcdir PG_ABS_SRCDIR
\set app :abs_srcdir '/app/shop.sql'
\set ECHO none
\o /dev/null
\i :app
\o
\set ECHO all
SELECT count(*) = 2 AS queues_created FROM courier.queues WHERE queue LIKE 'shop.%';
SELECT count(*) = 3 AS functions_created FROM pg_proc WHERE pronamespace = 'shop'::regnamespace;
