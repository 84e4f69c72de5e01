-- Scenario 7's mixed variant: the table has no priorities, so only the delays (one batch in ten,
-- an hour).
\set r random(1, 100)
\set d random(1, 10)
INSERT INTO skq.message (payload, vt) SELECT p, clock_timestamp() + CASE WHEN :d = 1 THEN interval '1 hour' ELSE interval '0' END FROM unnest(array_fill('@PAYLOAD@'::jsonb, ARRAY[100])) AS p;
