-- Scenario 7's mixed variant: pgmq has no priorities, so only the delays (one batch in ten, an
-- hour); the random draw for the priority is kept so that every system draws the same numbers.
\set r random(1, 100)
\set d random(1, 10)
SELECT count(*) FROM pgmq.send_batch('bench', array_fill('@PAYLOAD@'::jsonb, ARRAY[100]), CASE WHEN :d = 1 THEN 3600 ELSE 0 END);
