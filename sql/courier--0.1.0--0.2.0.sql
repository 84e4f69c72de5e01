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

-- Hidden diagnostics for the plan-shape test: the statements courier prepares, and the generic
-- plan each one runs. Not granted: only the owner of the extension may call them.
CREATE FUNCTION courier._statements() RETURNS text[]
    STRICT
    SET search_path TO pg_catalog, pg_temp
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'statements_wrapper';
CREATE FUNCTION courier._explain(name text) RETURNS text[]
    SET search_path TO pg_catalog, courier, pg_temp
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'explain_wrapper';
REVOKE ALL ON FUNCTION courier._statements(), courier._explain(text) FROM PUBLIC;

-- stats() counts at most 10,000 messages per priority level and gauge, and returns
-- counts_capped (last, so the other columns keep their positions). A function's result type
-- cannot be altered, so it and the view over it are created anew. What users granted on them
-- (README has admins granted both) is kept: saved before, granted again after, and recorded as
-- the user's grants, not the extension's, so that pg_dump still dumps them.
-- (Kept in a transaction-local setting: a temporary table would become a member of the
-- extension and could not be dropped.)
SELECT pg_catalog.set_config('courier_upgrade.kept_grants', pg_catalog.jsonb_build_array(
    pg_catalog.jsonb_build_object('object', 'FUNCTION courier.stats(text)', 'acl',
        (SELECT p.proacl::text FROM pg_catalog.pg_proc p WHERE p.oid = 'courier.stats(text)'::pg_catalog.regprocedure)),
    pg_catalog.jsonb_build_object('object', 'TABLE courier.queue_stats', 'acl',
        (SELECT c.relacl::text FROM pg_catalog.pg_class c WHERE c.oid = 'courier.queue_stats'::pg_catalog.regclass))
)::text, true);

DROP VIEW courier.queue_stats;
DROP FUNCTION courier.stats(text);

CREATE FUNCTION courier.stats(queue text) RETURNS TABLE (
    queue text,
    ready bigint,
    delayed bigint,
    in_flight bigint,
    dead bigint,
    oldest_ready_age interval,
    oldest_lease_age interval,
    enqueued_total bigint,
    deduplicated_total bigint,
    leased_total bigint,
    expired_total bigint,
    acked_total bigint,
    nacked_total bigint,
    dead_lettered_total bigint,
    counters_since timestamp with time zone,
    counts_capped boolean
)
    SET search_path TO pg_catalog, courier, pg_temp
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'stats_v2_wrapper';
REVOKE ALL ON FUNCTION courier.stats(text) FROM PUBLIC;

CREATE VIEW courier.queue_stats AS
    SELECT s.*
    FROM courier.queue q
    CROSS JOIN LATERAL courier.stats(q.name) AS s;

DO $kept$
DECLARE
    kept record;
    item record;
    object_oid oid;
    catalog oid;
    owner oid;
    initial aclitem[];
BEGIN
    FOR kept IN
        SELECT k.object, k.acl::aclitem[] AS acl
        FROM pg_catalog.jsonb_to_recordset(pg_catalog.current_setting('courier_upgrade.kept_grants')::jsonb)
             AS k(object text, acl text)
    LOOP
        IF kept.object LIKE 'FUNCTION %' THEN
            object_oid := pg_catalog.regprocedure(pg_catalog.substr(kept.object, 10));
            catalog := 'pg_catalog.pg_proc'::pg_catalog.regclass;
            SELECT p.proacl, p.proowner INTO initial, owner FROM pg_catalog.pg_proc p WHERE p.oid = object_oid;
        ELSE
            object_oid := pg_catalog.regclass(pg_catalog.substr(kept.object, 7));
            catalog := 'pg_catalog.pg_class'::pg_catalog.regclass;
            SELECT c.relacl, c.relowner INTO initial, owner FROM pg_catalog.pg_class c WHERE c.oid = object_oid;
        END IF;
        -- Every privilege the old object had beyond what the new one starts with was a user's.
        FOR item IN
            SELECT a.grantee, a.privilege_type, a.is_grantable
            FROM pg_catalog.aclexplode(COALESCE(kept.acl, pg_catalog.acldefault(
                (CASE WHEN kept.object LIKE 'FUNCTION %' THEN 'f' ELSE 'r' END)::"char", owner))) a
            EXCEPT
            SELECT e.grantee, e.privilege_type, e.is_grantable
            FROM pg_catalog.aclexplode(COALESCE(initial, pg_catalog.acldefault(
                (CASE WHEN kept.object LIKE 'FUNCTION %' THEN 'f' ELSE 'r' END)::"char", owner))) e
        LOOP
            EXECUTE pg_catalog.format('GRANT %s ON %s TO %s%s', item.privilege_type, kept.object,
                CASE WHEN item.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(item.grantee)) END,
                CASE WHEN item.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
        -- A GRANT inside an extension script is recorded as the extension's initial privilege,
        -- which pg_dump leaves out; put back what the extension itself gave.
        IF initial IS NULL THEN
            DELETE FROM pg_catalog.pg_init_privs i
            WHERE i.objoid = object_oid AND i.classoid = catalog AND i.objsubid = 0;
        ELSE
            UPDATE pg_catalog.pg_init_privs i SET initprivs = initial
            WHERE i.objoid = object_oid AND i.classoid = catalog AND i.objsubid = 0;
        END IF;
    END LOOP;
END
$kept$;
