-- courier storage. Only src/storage.rs reads or writes these tables; the SQL API is the functions.
--
-- One table holds the messages of every queue, so thousands of queues cost nothing but rows, and
-- leasing is a bounded index range scan on (queue_id, visible_at, id) whatever the backlog.

CREATE SEQUENCE courier.queue_id_seq AS integer;

CREATE TABLE courier.queue (
    queue_id           integer     NOT NULL DEFAULT nextval('courier.queue_id_seq'),
    -- "C" collation: names are ASCII by rule, and byte order keeps lookups collation-independent.
    name               text        COLLATE "C" NOT NULL,
    visibility_timeout interval    NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    CONSTRAINT queue_pkey PRIMARY KEY (queue_id),
    CONSTRAINT queue_name_key UNIQUE (name),
    CONSTRAINT queue_visibility_timeout_check CHECK (visibility_timeout > interval '0')
);

ALTER SEQUENCE courier.queue_id_seq OWNED BY courier.queue.queue_id;

CREATE SEQUENCE courier.message_id_seq;

-- visible_at is the one clock of a message: it is leasable when visible_at <= now. Enqueue sets it
-- to the enqueue time (plus any delay); a lease pushes it to the lease expiry; a nack sets it to
-- the retry time. lease_token belongs to the current lease and is NULL when nobody holds one.
CREATE TABLE courier.message (
    id           bigint      NOT NULL,
    visible_at   timestamptz NOT NULL,
    enqueued_at  timestamptz NOT NULL,
    lease_token  bigint,
    queue_id     integer     NOT NULL,
    attempt      integer     NOT NULL DEFAULT 0,
    headers      jsonb,
    payload      jsonb       NOT NULL,
    last_error   text,
    CONSTRAINT message_pkey PRIMARY KEY (id)
);

ALTER SEQUENCE courier.message_id_seq OWNED BY courier.message.id;

CREATE INDEX message_ready_idx ON courier.message (queue_id, visible_at, id);

-- Extension member tables are skipped by pg_dump unless marked; queues and messages are user data.
SELECT pg_catalog.pg_extension_config_dump('courier.queue', '');
SELECT pg_catalog.pg_extension_config_dump('courier.queue_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('courier.message', '');
SELECT pg_catalog.pg_extension_config_dump('courier.message_id_seq', '');
