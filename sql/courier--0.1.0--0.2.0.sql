-- courier 0.1.0 -> 0.2.0. Every change to the SQL surface between the two releases, in the
-- order it was made; tests/upgrade/run.sh checks that the result equals a fresh 0.2.0 install.
\echo Use "ALTER EXTENSION courier UPDATE TO '0.2.0'" to load this file. \quit

-- courier.version(): the library's version, next to pg_extension.extversion (the SQL's).
CREATE FUNCTION courier.version() RETURNS text
    STRICT STABLE PARALLEL SAFE
    SET search_path TO pg_catalog, pg_temp
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'version_wrapper';
-- As api.sql does for every function: nothing for PUBLIC but what is granted explicitly.
REVOKE ALL ON FUNCTION courier.version() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION courier.version() TO PUBLIC;
