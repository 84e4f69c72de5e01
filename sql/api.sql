-- The parts of the SQL API that are not generated from Rust: wrappers that add strict mode, the
-- queue listing, and privileges. Runs after every generated function exists (finalize).

-- Set-returning functions that return their rows in materialize mode (src/srf.rs): one call per
-- statement instead of one per row. pgrx only generates value-per-call declarations, so these
-- are declared here.

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
    -- No SET search_path: the function pins it itself when it needs it (src/search_path.rs).
    AS 'MODULE_PATHNAME', 'enqueue_batch_v2_wrapper';

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

-- Raises QC001 (lease lost) for a strict ack/nack/extend whose receipt no longer holds a lease.
-- It lives in SQL because pgrx can only raise SQLSTATEs from its fixed list; the message and
-- detail were left by the Rust function that detected the failure.
CREATE FUNCTION courier._raise_lease_lost(result anyelement) RETURNS anyelement
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    report text[] := courier._lease_lost_report();
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'QC001',
        MESSAGE = report[1],
        DETAIL  = report[2],
        HINT    = 'Roll back the work done under this lease; the message is, or will be, delivered again.';
    RETURN result;
END
$$;

-- The wrappers are SQL-standard bodies: resolved once at CREATE time (so immune to the caller's
-- search_path) and inlined into the calling query, so they cost nothing over the inner call.

CREATE FUNCTION courier.ack(receipt uuid, strict boolean DEFAULT false) RETURNS boolean
    LANGUAGE sql
BEGIN ATOMIC
    SELECT COALESCE(courier._ack(receipt, strict), courier._raise_lease_lost(NULL::boolean));
END;

CREATE FUNCTION courier.ack_batch(receipts uuid[], strict boolean DEFAULT false) RETURNS integer
    LANGUAGE sql
BEGIN ATOMIC
    SELECT COALESCE(courier._ack_batch(receipts, strict), courier._raise_lease_lost(NULL::integer));
END;

CREATE FUNCTION courier.nack(receipt uuid, retry_in interval DEFAULT NULL, error text DEFAULT NULL,
                             dead boolean DEFAULT false, strict boolean DEFAULT false) RETURNS boolean
    LANGUAGE sql
BEGIN ATOMIC
    SELECT COALESCE(courier._nack(receipt, retry_in, error, dead, strict), courier._raise_lease_lost(NULL::boolean));
END;

CREATE FUNCTION courier.nack_batch(receipts uuid[], retry_in interval DEFAULT NULL, error text DEFAULT NULL,
                                   dead boolean DEFAULT false, strict boolean DEFAULT false) RETURNS integer
    LANGUAGE sql
BEGIN ATOMIC
    SELECT COALESCE(courier._nack_batch(receipts, retry_in, error, dead, strict),
                    courier._raise_lease_lost(NULL::integer));
END;

CREATE FUNCTION courier.extend(receipt uuid, visibility_timeout interval, strict boolean DEFAULT false)
    RETURNS boolean
    LANGUAGE sql
BEGIN ATOMIC
    SELECT COALESCE(courier._extend(receipt, visibility_timeout, strict), courier._raise_lease_lost(NULL::boolean));
END;

CREATE VIEW courier.queues AS
    SELECT q.name AS queue, q.visibility_timeout, q.max_attempts, d.name AS dead_letter_queue,
           q.retry_base, q.retry_max, q.retry_jitter, q.dedup_window, q.retention, q.notify, q.created_at,
           q.owner, q.group_on_dead, q.group_order
    FROM courier.queue q
    LEFT JOIN courier.queue d ON d.queue_id = q.dead_letter_queue_id;

-- Privileges granted on queues (owners have every privilege on their queues without a grant).
CREATE VIEW courier.queue_privileges AS
    SELECT q.name AS queue, g.grantee, g.privilege
    FROM courier.queue_grant g
    JOIN courier.queue q ON q.queue_id = g.queue_id;

CREATE VIEW courier.queue_stats AS
    SELECT s.*
    FROM courier.queue q
    CROSS JOIN LATERAL courier.stats(q.name) AS s;

-- Dead letters: parked in their own queue (no dead-letter queue configured) or moved to one.
CREATE VIEW courier.dead_letters AS
    SELECT q.name AS queue, m.id, o.name AS origin_queue,
           COALESCE(m.origin_attempts, m.attempt) AS attempts, m.last_error,
           m.enqueued_at, m.dead_at, m.headers, m.payload, m.group_key
    FROM courier.message m
    JOIN courier.queue q ON q.queue_id = m.queue_id
    LEFT JOIN courier.queue o ON o.queue_id = m.origin_queue_id
    WHERE m.dead_at IS NOT NULL;

-- Message groups that hold messages: how many of each group's first 10,000 messages are ready
-- (in themselves: they are delivered in order) and in flight, whether a dead letter blocks the
-- group, its first message (or the dead letter that blocks it from a dead-letter queue), and when
-- a lease may take the group next (NULL while blocked; after the lease that holds it ends).
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

-- Acked messages of queues with a retention.
CREATE VIEW courier.completed_messages AS
    SELECT q.name AS queue, c.id, c.attempt, c.priority, c.enqueued_at, c.completed_at, c.headers, c.payload
    FROM courier.completed c
    JOIN courier.queue q ON q.queue_id = c.queue_id;

-- Administration and monitoring are granted explicitly (EXECUTE, SELECT on the views). The data
-- path checks each queue's privileges itself (src/access.rs), so every role may execute it: a
-- role still needs USAGE on the schema, which nobody has by default, and a privilege on the queue.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA courier FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    courier.enqueue, courier.enqueue_batch, courier.enqueue_unique,
    courier.lease, courier.ack, courier.ack_batch, courier.nack, courier.nack_batch, courier.extend,
    courier._ack, courier._ack_batch, courier._nack, courier._nack_batch, courier._extend,
    courier._raise_lease_lost, courier._lease_lost_report, courier.has_queue_privilege,
    courier.version
    TO PUBLIC;
