-- courier storage. Only src/storage/ and the views in sql/api.sql read or write these tables; the
-- SQL API is the functions.
--
-- One table holds the messages of every queue, so thousands of queues cost nothing but rows, and
-- leasing is a bounded index range scan on (queue_id, priority, visible_at, id) whatever the
-- backlog.

CREATE SEQUENCE courier.queue_id_seq AS integer;

CREATE TABLE courier.queue (
    queue_id             integer     NOT NULL DEFAULT nextval('courier.queue_id_seq'),
    -- "C" collation: names are ASCII by rule, and byte order keeps lookups collation-independent.
    name                 text        COLLATE "C" NOT NULL,
    visibility_timeout   interval    NOT NULL,
    -- Deliveries before a message is dead-lettered; 0 = unlimited.
    max_attempts         integer     NOT NULL,
    -- No foreign key: a self-referencing one makes pg_dump warn on every dump. Name locks keep it
    -- valid instead (create/alter hold the dead-letter queue's name lock shared, drop_queue takes it
    -- exclusively and refuses while another queue points at it).
    dead_letter_queue_id integer,
    retry_base           interval    NOT NULL,
    retry_max            interval    NOT NULL,
    retry_jitter         float8      NOT NULL,
    dedup_window         interval    NOT NULL,
    -- How long acked messages are kept in courier.completed; NULL = not kept.
    retention            interval,
    -- Send NOTIFY courier, '<queue name>' when a transaction makes messages ready here.
    notify               boolean     NOT NULL DEFAULT false,
    -- The range of priorities ever enqueued here. While it is a single value, a lease scans one
    -- index range directly instead of walking the priority levels first.
    min_priority         smallint    NOT NULL DEFAULT 0,
    max_priority         smallint    NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- The role that created the queue. It, its members and superusers may do anything to the
    -- queue; other roles need a grant (courier.queue_grant). Kept by name, as pg_cron keeps job
    -- owners, so a dump restores into another cluster where role OIDs differ.
    owner                name        NOT NULL,
    -- Message groups (see courier.message_group): what a dead letter does to its group ('skip': it
    -- leaves it and the next message becomes the head; 'block': the group waits for it to be
    -- redriven, acked or purged), and which eligible group a lease serves first ('oldest': the
    -- oldest ready head; 'fair': the group served least recently). grouped: a message with a
    -- group key was ever enqueued here, so leases look for groups (a queue without never does).
    group_on_dead        text        COLLATE "C" NOT NULL DEFAULT 'skip',
    group_order          text        COLLATE "C" NOT NULL DEFAULT 'oldest',
    grouped              boolean     NOT NULL DEFAULT false,
    CONSTRAINT queue_pkey PRIMARY KEY (queue_id),
    CONSTRAINT queue_name_key UNIQUE (name),
    CONSTRAINT queue_dead_letter_not_self CHECK (dead_letter_queue_id <> queue_id),
    CONSTRAINT queue_visibility_timeout_check CHECK (visibility_timeout > interval '0'),
    CONSTRAINT queue_max_attempts_check CHECK (max_attempts >= 0),
    CONSTRAINT queue_retry_check CHECK (retry_base > interval '0' AND retry_max >= retry_base
                                        AND retry_jitter >= 0 AND retry_jitter <= 1),
    CONSTRAINT queue_dedup_window_check CHECK (dedup_window > interval '0'),
    CONSTRAINT queue_retention_check CHECK (retention > interval '0'),
    CONSTRAINT queue_group_on_dead_check CHECK (group_on_dead IN ('skip', 'block')),
    CONSTRAINT queue_group_order_check CHECK (group_order IN ('oldest', 'fair'))
);

ALTER SEQUENCE courier.queue_id_seq OWNED BY courier.queue.queue_id;

-- Each backend takes 32 ids at a time: nextval then touches the sequence's page once per 32
-- messages instead of locking it for every one, which every producer did, one after another.
-- Ids stay unique and increase within a session; across sessions they follow neither enqueue
-- nor commit order (commit order they never followed), and a session that ends leaves the rest
-- of its 32 unused. Delivery order is by ready time (visible_at), never by id.
CREATE SEQUENCE courier.message_id_seq CACHE 32;

-- A message is leasable when visible_at <= now and it is not leased: leased_until is NULL or past.
-- visible_at is when it became (or becomes) ready: the enqueue time, the scheduled time, the retry
-- time after a nack, 'infinity' for a message parked dead. A lease does not move it; it sets
-- lease_token, leased_at and leased_until, none of them indexed, so a lease is a HOT update: no
-- index entries, and its dead version is pruned on the page instead of waiting for vacuum.
-- lease_token belongs to the current lease and is NULL when nobody holds one.
CREATE TABLE courier.message (
    id              bigint      NOT NULL,
    visible_at      timestamptz NOT NULL,
    enqueued_at     timestamptz NOT NULL,
    lease_token     bigint,
    leased_at       timestamptz,
    leased_until    timestamptz,
    queue_id        integer     NOT NULL,
    attempt         integer     NOT NULL DEFAULT 0,
    priority        smallint    NOT NULL DEFAULT 0,
    -- Dead letters: when it died, where it came from (if it was moved to a dead-letter queue) and
    -- how many deliveries it had there. attempt restarts at 0 in the dead-letter queue.
    dead_at         timestamptz,
    origin_queue_id integer,
    origin_attempts integer,
    headers         jsonb,
    payload         jsonb       NOT NULL,
    last_error      text,
    -- Message groups: the message's group (NULL: ungrouped), its place in the group's order
    -- (NULL once it left the sequence: a dead letter under 'skip' or moved to a dead-letter
    -- queue), when it may be delivered (its delay, not_before or retry time), and, for the one
    -- message of its group that a lease may take first (its head), when that lease may happen.
    -- A message in a group's sequence has the far-future visible_at PARKED ('9999-12-31'), which
    -- keeps it out of every range an ungrouped lease, a due time or a gauge reads; leases find
    -- groups by their heads (message_head_idx).
    group_key       text        COLLATE "C",
    group_seq       bigint,
    group_ready_at  timestamptz,
    head_at         timestamptz,
    CONSTRAINT message_pkey PRIMARY KEY (id)
);
-- No fillfactor reserve, on purpose: leases are HOT updates with or without one. A lease finds
-- room on its page once pruning has reclaimed the acked rows before it; the few that do not move
-- to another page, and in doing so record the pruned page's free space in the free space map,
-- where the next inserts find it. With a reserve every lease fits, the map never hears of the
-- pruned pages, and inserts extend the table until autovacuum comes (bench/results/design).

ALTER SEQUENCE courier.message_id_seq OWNED BY courier.message.id;

-- id is in the key so that every entry is unique: a lease resumes exactly after the last message
-- it took ((visible_at, id) > hint, see lease.rs) even inside a batch, whose messages share one
-- visible_at. Without it, ties were stored as posting lists (deduplication), which cannot be
-- marked dead until every message in them is acked, so each lease re-read the acked head of its
-- batch from the heap (bench/results/design). With unique keys
-- deduplication can never merge anything, so it is off rather than tried on every page split.
CREATE INDEX message_ready_idx ON courier.message (queue_id, priority, visible_at, id)
    WITH (deduplicate_items = off);

-- Dead letters only (a partial index costs ordinary messages nothing): for the dead_letters view
-- and redrive.
CREATE INDEX message_dead_idx ON courier.message (queue_id, id) WHERE dead_at IS NOT NULL;

-- The messages of each group in order. Partial: ungrouped messages never enter it (and enqueue
-- does not even open it for them, see src/storage/direct.rs).
CREATE INDEX message_group_idx ON courier.message (queue_id, group_key, group_seq)
    WHERE group_key IS NOT NULL;

-- The heads of the groups, in the order leases serve them within a priority: the ready range of
-- grouped messages, as message_ready_idx is for the others.
CREATE INDEX message_head_idx ON courier.message (queue_id, priority, head_at, id)
    WHERE head_at IS NOT NULL;

-- One row per message group that holds messages, deleted when it empties: the counter that numbers
-- its messages, and the dead letter that blocks it from a dead-letter queue ('block'), with the
-- place in the sequence it goes back to when redriven. Producers lock the row until they commit
-- (so a group's messages are numbered in commit order); consumers lock it only to find out
-- whether a group emptied, and never update it, so its updates stay HOT (next_seq is not indexed).
-- A producer into a group that has a row advances next_seq in place (src/storage/direct.rs): any
-- statement that reads a row to write it back must lock the row first (FOR UPDATE, or the lock
-- of INSERT ... ON CONFLICT DO UPDATE), or it may write back a counter a producer advanced.
CREATE TABLE courier.message_group (
    queue_id     integer NOT NULL,
    group_key    text    COLLATE "C" NOT NULL,
    next_seq     bigint  NOT NULL,
    blocked_by   bigint,
    blocked_seq  bigint,
    CONSTRAINT message_group_pkey PRIMARY KEY (queue_id, group_key)
);

-- Deduplication keys, kept for the queue's dedup window from the first enqueue, whether or not the
-- message has been acked since. Expired keys are swept in small batches as new keys arrive.
CREATE TABLE courier.dedup (
    queue_id   integer     NOT NULL,
    key        text        COLLATE "C" NOT NULL,
    message_id bigint      NOT NULL,
    expires_at timestamptz NOT NULL,
    CONSTRAINT dedup_pkey PRIMARY KEY (queue_id, key)
);

CREATE INDEX dedup_expires_idx ON courier.dedup (expires_at);

-- Acked messages of queues with a retention: an audit trail of what was processed and when.
CREATE TABLE courier.completed (
    id           bigint      NOT NULL,
    queue_id     integer     NOT NULL,
    attempt      integer     NOT NULL,
    priority     smallint    NOT NULL,
    enqueued_at  timestamptz NOT NULL,
    completed_at timestamptz NOT NULL,
    headers      jsonb,
    payload      jsonb       NOT NULL,
    CONSTRAINT completed_pkey PRIMARY KEY (id)
);

CREATE INDEX completed_queue_idx ON courier.completed (queue_id, completed_at);

-- Queue privileges granted to roles other than the owner (see courier_core::access). grantee is a
-- role name, or 'public' for every role. No foreign key to courier.queue: drop_queue deletes a
-- queue's grants itself, and config tables dump without ordering constraints.
CREATE TABLE courier.queue_grant (
    queue_id  integer NOT NULL,
    grantee   name    NOT NULL,
    privilege text    COLLATE "C" NOT NULL,
    CONSTRAINT queue_grant_pkey PRIMARY KEY (queue_id, grantee, privilege),
    CONSTRAINT queue_grant_privilege_check CHECK (privilege IN ('enqueue', 'consume', 'manage'))
);

-- Extension member tables are skipped by pg_dump unless marked; queues and messages are user data.
SELECT pg_catalog.pg_extension_config_dump('courier.queue', '');
SELECT pg_catalog.pg_extension_config_dump('courier.queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('courier.message', '');
SELECT pg_catalog.pg_extension_config_dump('courier.message_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('courier.dedup', '');
SELECT pg_catalog.pg_extension_config_dump('courier.completed', '');
SELECT pg_catalog.pg_extension_config_dump('courier.queue_grant', '');
SELECT pg_catalog.pg_extension_config_dump('courier.message_group', '');
