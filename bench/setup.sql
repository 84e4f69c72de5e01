-- The three systems side by side in one database. pgmq itself is installed by courier-bench
-- from the pgmq crate's embedded SQL before this runs.
CREATE EXTENSION courier;
SELECT courier.create_queue('bench', visibility_timeout => '30 seconds');
SELECT pgmq.create('bench');

-- The hand-written queue a competent developer would write: index on visibility time,
-- UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED) to lease, DELETE to ack.
CREATE SCHEMA skq;
CREATE TABLE skq.message (
    id          bigserial PRIMARY KEY,
    vt          timestamptz NOT NULL DEFAULT clock_timestamp(),
    enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts    integer NOT NULL DEFAULT 0,
    payload     jsonb NOT NULL
);
CREATE INDEX ON skq.message (vt);

-- The physical ceiling for producers: a bare single-row insert.
CREATE TABLE bare (id bigserial PRIMARY KEY, payload jsonb NOT NULL);

-- Below it, the floor of any design that stores a row per message: a durable row and nothing
-- else, no index and no sequence. Not a queue (nothing could find a message in it again), but no
-- queue that writes a row per message and commits it can produce faster than this.
CREATE TABLE heap_only (payload jsonb NOT NULL);

-- Sampled enqueue-to-lease latencies of the steady-state consumers (unlogged: no WAL).
CREATE UNLOGGED TABLE bench_latency (system text NOT NULL, ms float8 NOT NULL);
