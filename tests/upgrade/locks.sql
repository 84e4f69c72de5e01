-- The heavyweight locks ALTER EXTENSION courier UPDATE holds when it has run, in a stable form:
-- one line per lock, sorted, without OIDs, pids or transaction ids. A relation lock is held to
-- the end of the transaction, so on courier's relations this is every lock the update took, held
-- from the statement that took it until the update commits (catalog locks that the server
-- releases early may be missing; they block nobody that matters). Row locks (an UPDATE of
-- courier's rows) are not in pg_locks at all.
--
-- Run against a database at an old version; the update is rolled back. Columns:
--   scope    courier: a relation of courier's that existed before the update (its tables, their
--            indexes and TOAST tables, its sequences and views), named "(dropped)" if the update
--            dropped it; new: one the update created, which no other session can see before it
--            commits; other: anything else (the extension, its schema, functions, catalogs)
--   locktype, object, mode
--   blocks   what waits while the lock is held: on a relation, the statements that take a
--            conflicting mode; on another object, the conflicting modes
-- With -v extra='<SQL>', that SQL runs after the update, in its transaction (the control in
-- locks.sh takes a lock the list does not document).
\set ON_ERROR_STOP on
\pset format unaligned
\pset tuples_only on
\pset footer off
\if :{?extra}
\else
\set extra ''
\endif
-- regclass prints schema-qualified names.
SET search_path = pg_catalog, pg_temp;
-- A relation's name, a TOAST table or index named by its table (its own name has an OID in it).
-- Created before the update's transaction, whose locks it would otherwise join.
CREATE FUNCTION pg_temp.relname(rel oid) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN c.relnamespace = 'pg_toast'::regnamespace THEN COALESCE(
                    (SELECT 'TOAST table of ' || o.oid::regclass FROM pg_class o WHERE o.reltoastrelid = c.oid),
                    (SELECT 'TOAST index of ' || o.oid::regclass FROM pg_index i JOIN pg_class o ON o.reltoastrelid = i.indrelid
                     WHERE i.indexrelid = c.oid),
                    c.oid::regclass::text)
                ELSE c.oid::regclass::text END
    FROM pg_class c WHERE c.oid = rel
$$;

-- courier's relations: the extension's members, their indexes and TOAST tables, and the TOAST
-- tables' indexes.
\set courier_relations 'WITH RECURSIVE courier_relations(oid) AS (SELECT d.objid FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid WHERE d.refclassid = ''pg_extension''::regclass AND d.classid = ''pg_class''::regclass AND d.deptype = ''e'' AND e.extname = ''courier'' UNION SELECT x.oid FROM courier_relations r, LATERAL (SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = r.oid UNION ALL SELECT c.reltoastrelid FROM pg_class c WHERE c.oid = r.oid AND c.reltoastrelid <> 0) AS x(oid))'

-- Before the update, in a transaction of its own (whose locks end with it): courier's relations,
-- and every object in schema courier with its description, by OID, to name what the update drops.
:courier_relations
SELECT json_build_object(
    'relations', (SELECT COALESCE(json_object_agg(oid, pg_temp.relname(oid)), '{}') FROM courier_relations),
    'objects', (SELECT COALESCE(json_object_agg(k, d), '{}') FROM (
        SELECT 'pg_proc:' || p.oid AS k, pg_describe_object('pg_proc'::regclass, p.oid, 0) AS d
        FROM pg_proc p WHERE p.pronamespace = 'courier'::regnamespace
        UNION ALL
        SELECT 'pg_type:' || t.oid, pg_describe_object('pg_type'::regclass, t.oid, 0)
        FROM pg_type t WHERE t.typnamespace = 'courier'::regnamespace
        UNION ALL
        SELECT 'pg_rewrite:' || w.oid, pg_describe_object('pg_rewrite'::regclass, w.oid, 0)
        FROM pg_rewrite w JOIN pg_class c ON c.oid = w.ev_class WHERE c.relnamespace = 'courier'::regnamespace
    ) AS o)) AS before \gset

BEGIN;
ALTER EXTENSION courier UPDATE;
:extra
-- The snapshot reads pg_locks and nothing else: the query below reads catalogs, and takes locks
-- of its own.
SELECT COALESCE(json_agg(json_build_object('locktype', locktype, 'relation', relation, 'classid', classid,
                                           'objid', objid, 'objsubid', objsubid, 'page', page,
                                           'tuple', tuple, 'mode', mode)), '[]') AS snapshot
FROM pg_locks
WHERE pid = pg_backend_pid() AND granted AND locktype NOT IN ('virtualxid', 'transactionid')
  AND relation IS DISTINCT FROM 'pg_locks'::regclass \gset
:courier_relations,
-- PostgreSQL's conflict table (the "Conflicting Lock Modes" table of the manual).
conflicts(mode, other) AS (
    SELECT m, unnest(o) FROM (VALUES
        ('AccessShareLock', '{AccessExclusiveLock}'::text[]),
        ('RowShareLock', '{ExclusiveLock,AccessExclusiveLock}'),
        ('RowExclusiveLock', '{ShareLock,ShareRowExclusiveLock,ExclusiveLock,AccessExclusiveLock}'),
        ('ShareUpdateExclusiveLock', '{ShareUpdateExclusiveLock,ShareLock,ShareRowExclusiveLock,ExclusiveLock,AccessExclusiveLock}'),
        ('ShareLock', '{RowExclusiveLock,ShareUpdateExclusiveLock,ShareRowExclusiveLock,ExclusiveLock,AccessExclusiveLock}'),
        ('ShareRowExclusiveLock', '{RowExclusiveLock,ShareUpdateExclusiveLock,ShareLock,ShareRowExclusiveLock,ExclusiveLock,AccessExclusiveLock}'),
        ('ExclusiveLock', '{RowShareLock,RowExclusiveLock,ShareUpdateExclusiveLock,ShareLock,ShareRowExclusiveLock,ExclusiveLock,AccessExclusiveLock}'),
        ('AccessExclusiveLock', '{AccessShareLock,RowShareLock,RowExclusiveLock,ShareUpdateExclusiveLock,ShareLock,ShareRowExclusiveLock,ExclusiveLock,AccessExclusiveLock}')
    ) AS t(m, o)
),
-- Who takes each mode of a relation lock, in courier's terms (nextval takes RowExclusiveLock on
-- its sequence).
takers(mode, rank, who) AS (VALUES
    ('AccessShareLock', 1, 'reads'),
    ('RowShareLock', 2, 'SELECT FOR UPDATE/SHARE (lease, every call''s queue lookup)'),
    ('RowExclusiveLock', 3, 'writes (enqueue, lease, ack, nack, extend, nextval)'),
    ('ShareUpdateExclusiveLock', 4, 'VACUUM, ANALYZE'),
    ('ShareLock', 5, 'CREATE INDEX'),
    ('ShareRowExclusiveLock', 6, 'triggers, ALTER SEQUENCE'),
    ('ExclusiveLock', 7, 'REFRESH MATERIALIZED VIEW CONCURRENTLY'),
    ('AccessExclusiveLock', 8, 'ALTER TABLE, DROP, TRUNCATE, VACUUM FULL')
),
before AS (SELECT :'before'::json AS b),
locks AS (
    SELECT l.*, EXISTS (SELECT FROM pg_class c WHERE c.oid = l.relation) AS relation_exists,
           (SELECT b -> 'relations' ->> l.relation::text FROM before) AS relation_before
    FROM json_populate_recordset(NULL::record, :'snapshot')
         AS l(locktype text, relation oid, classid oid, objid oid, objsubid int2, page int4, tuple int2, mode text)
),
held AS (
    SELECT CASE WHEN l.relation_before IS NOT NULL THEN 'courier'
                WHEN l.relation IN (SELECT oid FROM courier_relations) THEN 'new'
                ELSE 'other' END AS scope,
           l.locktype,
           CASE WHEN l.relation IS NOT NULL AND l.relation_exists THEN pg_temp.relname(l.relation)
                WHEN l.relation IS NOT NULL THEN COALESCE(l.relation_before || ' (dropped)', 'a dropped relation')
                WHEN l.classid IS NOT NULL THEN COALESCE(
                    pg_describe_object(l.classid, l.objid, l.objsubid),
                    (SELECT b -> 'objects' ->> (l.classid::regclass::text || ':' || l.objid) FROM before) || ' (dropped)',
                    'a dropped object of ' || l.classid::regclass)
                ELSE concat_ws(' ', l.page, l.tuple) END AS object,
           l.mode
    FROM locks l
)
SELECT concat_ws('|', h.scope, h.locktype, h.object, h.mode,
                 COALESCE((SELECT string_agg(CASE WHEN h.locktype = 'relation' THEN t.who ELSE t.mode END, '; '
                                             ORDER BY t.rank)
                           FROM conflicts c JOIN takers t ON t.mode = c.other WHERE c.mode = h.mode), '-'))
FROM held h
ORDER BY h.scope, h.locktype, h.object, h.mode;
ROLLBACK;
