-- Batches of 100 with priorities and delays mixed in (scenario 7's mixed variant): 70 % of the
-- batches at priority 0, 20 % at 5, 10 % at 9; one batch in ten delayed by an hour.
\set r random(1, 100)
\set d random(1, 10)
SELECT count(*) FROM courier.enqueue_batch('bench', array_fill('@PAYLOAD@'::jsonb, ARRAY[100]), priority => CASE WHEN :r <= 70 THEN 0 WHEN :r <= 90 THEN 5 ELSE 9 END, delay => CASE WHEN :d = 1 THEN interval '1 hour' ELSE interval '0' END);
