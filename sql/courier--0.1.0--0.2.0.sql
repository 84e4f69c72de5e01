-- courier 0.1.0 -> 0.2.0. Every change to the SQL surface between the two releases, in the
-- order it was made; tests/upgrade/run.sh checks that the result equals a fresh 0.2.0 install.
\echo Use "ALTER EXTENSION courier UPDATE TO '0.2.0'" to load this file. \quit

-- The update needs ACCESS EXCLUSIVE on both tables and the views it re-creates. Taken one by one
-- as its statements come, it would hold courier.queue while waiting for courier.message, and a
-- nack (which locks them the other way round) could deadlock with it and be cancelled after
-- deadlock_timeout. So it takes them all first, and never waits for one while holding another
-- for long: each wait is bounded by a tenth of deadlock_timeout (at most 100 ms), and a lock it
-- cannot get in that time releases the ones it got (the block's subtransaction rolls back) and it
-- tries again a moment later. Producers and consumers then wait at most about half of
-- deadlock_timeout behind one try, and no cycle lives long enough for the deadlock detector. A
-- lock_timeout set by the caller bounds the whole: past it, the update fails with 55P03 and
-- changes nothing.
DO $locks$
DECLARE
    caller_setting text := pg_catalog.current_setting('lock_timeout');
    caller_timeout interval := caller_setting::pg_catalog.interval;
    try interval := LEAST(interval '100 ms',
        pg_catalog.current_setting('deadlock_timeout')::pg_catalog.interval / 10);
    deadline timestamptz;
    tries integer := 0;
BEGIN
    IF caller_timeout > interval '0' THEN
        deadline := pg_catalog.clock_timestamp() + caller_timeout;
        try := LEAST(try, caller_timeout);
    END IF;
    -- At least 1 ms: lock_timeout is set in whole milliseconds below, and 0 would mean no timeout.
    try := GREATEST(try, interval '1 ms');
    LOOP
        tries := tries + 1;
        BEGIN
            -- lock_timeout is read when a wait starts; set here, it is undone with the block when
            -- a lock times out, and restored below once all are held.
            PERFORM pg_catalog.set_config('lock_timeout',
                (extract(epoch FROM try) * 1000)::bigint::text || 'ms', true);
            -- Views first (a reader locks a view before the tables under it; locking a view also
            -- locks those tables), then the tables by name, so that both are held whatever the
            -- views come to select from.
            LOCK TABLE courier.queue_stats, courier.queues, courier.dead_letters IN ACCESS EXCLUSIVE MODE;
            LOCK TABLE courier.queue IN ACCESS EXCLUSIVE MODE;
            LOCK TABLE courier.message IN ACCESS EXCLUSIVE MODE;
            PERFORM pg_catalog.set_config('lock_timeout', caller_setting, true);
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            IF deadline IS NOT NULL AND pg_catalog.clock_timestamp() >= deadline THEN
                RAISE EXCEPTION 'could not lock courier''s tables for the update within lock_timeout (%)',
                    caller_setting
                    USING ERRCODE = 'lock_not_available',
                          DETAIL = pg_catalog.format('%s tries, each waiting at most %s.', tries, try),
                          HINT = 'Retry the update, or raise lock_timeout (0 tries until it succeeds).';
            END IF;
        END;
        -- Let the transactions that queued behind the released locks through.
        PERFORM pg_catalog.pg_sleep(0.01 + 0.04 * pg_catalog.random());
    END LOOP;
END
$locks$;

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

-- Functions and views whose result type or arguments change are created anew (a function's result
-- type cannot be altered, and new arguments would make a second function). The old functions are
-- renamed to courier._retired_0_1_0_*, not dropped: a call that another session planned before this
-- update commits (prepared, or in a transaction already open) still finds its function, instead of
-- failing with "cache lookup failed for function"; the next release's update drops them
-- (CONTRIBUTING.md).
-- What users granted or revoked on them is kept: saved before (by the new signature, with the
-- old one's privileges), applied again after (the DO block at the end), and recorded as the user's, not the extension's, so that pg_dump still
-- dumps it. (Kept in a transaction-local setting: a temporary table would become a member of
-- the extension and could not be dropped.)
SELECT pg_catalog.set_config('courier_upgrade.kept_grants', (
    SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('object', k.object, 'acl', k.acl))::text
    FROM (
        SELECT 'FUNCTION ' || f.now AS object,
               (SELECT p.proacl::text FROM pg_catalog.pg_proc p WHERE p.oid = f.was::pg_catalog.regprocedure) AS acl
        FROM (VALUES
            ('courier.stats(text)', 'courier.stats(text)'),
            ('courier.enqueue(text,jsonb,jsonb,interval,integer,timestamp with time zone,text)',
             'courier.enqueue(text,jsonb,jsonb,interval,integer,timestamp with time zone,text,text)'),
            ('courier.enqueue_unique(text,jsonb,text,jsonb,interval,integer,timestamp with time zone)',
             'courier.enqueue_unique(text,jsonb,text,jsonb,interval,integer,timestamp with time zone,text)'),
            ('courier.enqueue_batch(text,jsonb[],jsonb[],interval,integer,timestamp with time zone,text[])',
             'courier.enqueue_batch(text,jsonb[],jsonb[],interval,integer,timestamp with time zone,text[],text[])'),
            ('courier.lease(text,integer,interval,interval)', 'courier.lease(text,integer,interval,interval,integer)'),
            ('courier.create_queue(text,interval,integer,text,interval,interval,double precision,interval,interval,boolean,boolean)',
             'courier.create_queue(text,interval,integer,text,interval,interval,double precision,interval,interval,boolean,boolean,text,text)'),
            ('courier.alter_queue(text,interval,integer,text,interval,interval,double precision,interval,interval,boolean)',
             'courier.alter_queue(text,interval,integer,text,interval,interval,double precision,interval,interval,boolean,text,text)')
        ) AS f(was, now)
        UNION ALL
        SELECT 'TABLE courier.queue_stats',
               (SELECT c.relacl::text FROM pg_catalog.pg_class c WHERE c.oid = 'courier.queue_stats'::pg_catalog.regclass)
    ) k
), true);

-- stats() counts at most 10,000 messages per priority level and gauge, and returns
-- counts_capped, then the queue's message groups (last, so the other columns keep their
-- positions). It and the view over it are created anew.
DROP VIEW courier.queue_stats;
ALTER FUNCTION courier.stats(text)
    RENAME TO _retired_0_1_0_stats;

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
    counts_capped boolean,
    groups bigint,
    groups_held bigint,
    groups_blocked bigint
)
    SET search_path TO pg_catalog, courier, pg_temp
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'stats_v2_wrapper';
REVOKE ALL ON FUNCTION courier.stats(text) FROM PUBLIC;

CREATE VIEW courier.queue_stats AS
    SELECT s.*
    FROM courier.queue q
    CROSS JOIN LATERAL courier.stats(q.name) AS s;

-- Message groups (README: Message groups). The new columns go last; constant defaults and
-- nullable columns are added without rewriting either table.
ALTER TABLE courier.queue
    ADD COLUMN group_on_dead text COLLATE "C" NOT NULL DEFAULT 'skip',
    ADD COLUMN group_order text COLLATE "C" NOT NULL DEFAULT 'oldest',
    ADD COLUMN grouped boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT queue_group_on_dead_check CHECK (group_on_dead IN ('skip', 'block')),
    ADD CONSTRAINT queue_group_order_check CHECK (group_order IN ('oldest', 'fair'));

ALTER TABLE courier.message
    ADD COLUMN group_key text COLLATE "C",
    ADD COLUMN group_seq bigint,
    ADD COLUMN group_ready_at timestamptz,
    ADD COLUMN head_at timestamptz;

-- Each reads courier.message once (no message has a group key yet, so both are empty) and holds
-- off enqueues meanwhile; README's Upgrading section says how long per million messages.
CREATE INDEX message_group_idx ON courier.message (queue_id, group_key, group_seq)
    WHERE group_key IS NOT NULL;
CREATE INDEX message_head_idx ON courier.message (queue_id, priority, head_at, id)
    WHERE head_at IS NOT NULL;

CREATE TABLE courier.message_group (
    queue_id     integer NOT NULL,
    group_key    text    COLLATE "C" NOT NULL,
    next_seq     bigint  NOT NULL,
    blocked_by   bigint,
    blocked_seq  bigint,
    CONSTRAINT message_group_pkey PRIMARY KEY (queue_id, group_key)
);
SELECT pg_catalog.pg_extension_config_dump('courier.message_group', '');

-- enqueue, enqueue_unique and enqueue_batch take group keys; lease takes group_batch and
-- returns group_key (last); create_queue and alter_queue take group_on_dead and group_order.
ALTER FUNCTION courier.enqueue(text, jsonb, jsonb, interval, integer, timestamp with time zone, text)
    RENAME TO _retired_0_1_0_enqueue;
CREATE FUNCTION courier.enqueue(
    "queue" TEXT,
    "payload" jsonb,
    "headers" jsonb DEFAULT NULL,
    "delay" interval DEFAULT '0',
    "priority" INT DEFAULT 0,
    "not_before" timestamp with time zone DEFAULT NULL,
    "dedup_key" TEXT DEFAULT NULL,
    "group_key" TEXT DEFAULT NULL
) RETURNS bigint
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'enqueue_v2_wrapper';

ALTER FUNCTION courier.enqueue_unique(text, jsonb, text, jsonb, interval, integer, timestamp with time zone)
    RENAME TO _retired_0_1_0_enqueue_unique;
CREATE FUNCTION courier.enqueue_unique(
    queue text,
    payload jsonb,
    dedup_key text,
    headers jsonb DEFAULT NULL,
    delay interval DEFAULT '0',
    priority integer DEFAULT 0,
    not_before timestamptz DEFAULT NULL,
    group_key text DEFAULT NULL
) RETURNS TABLE (id bigint, duplicate boolean)
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, courier, pg_temp
    AS 'MODULE_PATHNAME', 'enqueue_unique_v2_wrapper';

ALTER FUNCTION courier.enqueue_batch(text, jsonb[], jsonb[], interval, integer, timestamp with time zone, text[])
    RENAME TO _retired_0_1_0_enqueue_batch;
CREATE FUNCTION courier.enqueue_batch(
    queue text,
    payloads jsonb[],
    headers jsonb[] DEFAULT NULL,
    delay interval DEFAULT '0',
    priority integer DEFAULT 0,
    not_before timestamptz DEFAULT NULL,
    dedup_keys text[] DEFAULT NULL,
    group_keys text[] DEFAULT NULL
) RETURNS TABLE (id bigint, duplicate boolean)
    LANGUAGE c VOLATILE
    AS 'MODULE_PATHNAME', 'enqueue_batch_v2_wrapper';

ALTER FUNCTION courier.lease(text, integer, interval, interval)
    RENAME TO _retired_0_1_0_lease;
CREATE FUNCTION courier.lease(
    queue text,
    batch_size integer DEFAULT 1,
    visibility_timeout interval DEFAULT NULL,
    wait interval DEFAULT '0',
    group_batch integer DEFAULT 1
) RETURNS TABLE (
    id bigint,
    receipt uuid,
    payload jsonb,
    headers jsonb,
    attempt integer,
    enqueued_at timestamptz,
    lease_expires_at timestamptz,
    priority smallint,
    last_error text,
    group_key text
)
    LANGUAGE c VOLATILE
    SET search_path = pg_catalog, courier, pg_temp
    AS 'MODULE_PATHNAME', 'lease_v2_wrapper';

ALTER FUNCTION courier.create_queue(text, interval, integer, text, interval, interval, double precision,
                                   interval, interval, boolean, boolean)
    RENAME TO _retired_0_1_0_create_queue;
CREATE FUNCTION courier.create_queue(
    "queue" TEXT,
    "visibility_timeout" interval DEFAULT '30 seconds',
    "max_attempts" INT DEFAULT 25,
    "dead_letter_queue" TEXT DEFAULT NULL,
    "retry_base" interval DEFAULT '1 second',
    "retry_max" interval DEFAULT '15 minutes',
    "retry_jitter" double precision DEFAULT 0.2,
    "dedup_window" interval DEFAULT '1 day',
    "retention" interval DEFAULT NULL,
    "notify" bool DEFAULT false,
    "if_not_exists" bool DEFAULT false,
    "group_on_dead" TEXT DEFAULT 'skip',
    "group_order" TEXT DEFAULT 'oldest'
) RETURNS bool
    SET search_path TO pg_catalog, courier, pg_temp
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'create_queue_v2_wrapper';

ALTER FUNCTION courier.alter_queue(text, interval, integer, text, interval, interval, double precision,
                                  interval, interval, boolean)
    RENAME TO _retired_0_1_0_alter_queue;
CREATE FUNCTION courier.alter_queue(
    "queue" TEXT,
    "visibility_timeout" interval DEFAULT NULL,
    "max_attempts" INT DEFAULT NULL,
    "dead_letter_queue" TEXT DEFAULT NULL,
    "retry_base" interval DEFAULT NULL,
    "retry_max" interval DEFAULT NULL,
    "retry_jitter" double precision DEFAULT NULL,
    "dedup_window" interval DEFAULT NULL,
    "retention" interval DEFAULT NULL,
    "notify" bool DEFAULT NULL,
    "group_on_dead" TEXT DEFAULT NULL,
    "group_order" TEXT DEFAULT NULL
) RETURNS void
    SET search_path TO pg_catalog, courier, pg_temp
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'alter_queue_v2_wrapper';

-- The extension's own privileges on them, as api.sql gives them.
REVOKE ALL ON FUNCTION courier.enqueue(text, jsonb, jsonb, interval, integer, timestamp with time zone, text, text),
    courier.enqueue_unique(text, jsonb, text, jsonb, interval, integer, timestamp with time zone, text),
    courier.enqueue_batch(text, jsonb[], jsonb[], interval, integer, timestamp with time zone, text[], text[]),
    courier.lease(text, integer, interval, interval, integer),
    courier.create_queue(text, interval, integer, text, interval, interval, double precision, interval, interval,
                         boolean, boolean, text, text),
    courier.alter_queue(text, interval, integer, text, interval, interval, double precision, interval, interval,
                        boolean, text, text)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION courier.enqueue(text, jsonb, jsonb, interval, integer, timestamp with time zone, text, text),
    courier.enqueue_unique(text, jsonb, text, jsonb, interval, integer, timestamp with time zone, text),
    courier.enqueue_batch(text, jsonb[], jsonb[], interval, integer, timestamp with time zone, text[], text[]),
    courier.lease(text, integer, interval, interval, integer)
    TO PUBLIC;

-- The views gain the new columns last.
CREATE OR REPLACE VIEW courier.queues AS
    SELECT q.name AS queue, q.visibility_timeout, q.max_attempts, d.name AS dead_letter_queue,
           q.retry_base, q.retry_max, q.retry_jitter, q.dedup_window, q.retention, q.notify, q.created_at,
           q.owner, q.group_on_dead, q.group_order
    FROM courier.queue q
    LEFT JOIN courier.queue d ON d.queue_id = q.dead_letter_queue_id;

CREATE OR REPLACE VIEW courier.dead_letters AS
    SELECT q.name AS queue, m.id, o.name AS origin_queue,
           COALESCE(m.origin_attempts, m.attempt) AS attempts, m.last_error,
           m.enqueued_at, m.dead_at, m.headers, m.payload, m.group_key
    FROM courier.message m
    JOIN courier.queue q ON q.queue_id = m.queue_id
    LEFT JOIN courier.queue o ON o.queue_id = m.origin_queue_id
    WHERE m.dead_at IS NOT NULL;

CREATE VIEW courier.queue_groups AS
    SELECT q.name AS queue, g.group_key, c.ready, c.in_flight,
           g.blocked_by IS NOT NULL OR COALESCE(f.dead_at IS NOT NULL, false) AS blocked,
           COALESCE(g.blocked_by, f.id) AS head_message_id,
           CASE WHEN g.blocked_by IS NULL AND f.head_at IS NOT NULL
                THEN GREATEST(f.head_at, f.leased_until) END AS head_available_at
    FROM courier.message_group g
    JOIN courier.queue q ON q.queue_id = g.queue_id
    LEFT JOIN LATERAL (
        SELECT m.id, m.dead_at, m.head_at, m.leased_until FROM courier.message m
        WHERE m.queue_id = g.queue_id AND m.group_key = g.group_key AND m.group_seq IS NOT NULL
        ORDER BY m.group_seq LIMIT 1) f ON true
    CROSS JOIN LATERAL (
        SELECT pg_catalog.count(*) FILTER (WHERE w.dead_at IS NULL AND w.group_ready_at <= pg_catalog.now()
                                             AND (w.leased_until IS NULL OR w.leased_until <= pg_catalog.now()))
                   AS ready,
               pg_catalog.count(*) FILTER (WHERE w.leased_until > pg_catalog.now()) AS in_flight
        FROM (SELECT m.dead_at, m.group_ready_at, m.leased_until FROM courier.message m
              WHERE m.queue_id = g.queue_id AND m.group_key = g.group_key AND m.group_seq IS NOT NULL
              ORDER BY m.group_seq LIMIT 10000) w) c;

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
        -- Every privilege the old object had beyond what the new one starts with was a user's grant,
        -- and every one it lacked was a user's revocation.
        FOR item IN
            SELECT e.grantee, e.privilege_type, e.is_grantable
            FROM pg_catalog.aclexplode(COALESCE(initial, pg_catalog.acldefault(
                (CASE WHEN kept.object LIKE 'FUNCTION %' THEN 'f' ELSE 'r' END)::"char", owner))) e
            EXCEPT
            SELECT a.grantee, a.privilege_type, a.is_grantable
            FROM pg_catalog.aclexplode(COALESCE(kept.acl, pg_catalog.acldefault(
                (CASE WHEN kept.object LIKE 'FUNCTION %' THEN 'f' ELSE 'r' END)::"char", owner))) a
        LOOP
            EXECUTE pg_catalog.format('REVOKE %s ON %s FROM %s', item.privilege_type, kept.object,
                CASE WHEN item.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(item.grantee)) END);
        END LOOP;
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

-- The retired functions keep whatever was granted on them (a call planned before the update runs
-- with the privileges it was checked with), but as the extension's initial privileges, so that
-- pg_dump does not dump grants on functions a restore into a fresh install will not have.
DO $retired$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT p.oid, p.proacl FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'courier'::pg_catalog.regnamespace AND p.proname LIKE '\_retired\_0\_1\_0\_%'
    LOOP
        DELETE FROM pg_catalog.pg_init_privs i
        WHERE i.objoid = f.oid AND i.classoid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND i.objsubid = 0;
        IF f.proacl IS NOT NULL THEN
            INSERT INTO pg_catalog.pg_init_privs (objoid, classoid, objsubid, privtype, initprivs)
            VALUES (f.oid, 'pg_catalog.pg_proc'::pg_catalog.regclass, 0, 'e', f.proacl);
        END IF;
    END LOOP;
END
$retired$;
