WITH c AS (SELECT id FROM skq.message WHERE vt <= clock_timestamp() ORDER BY vt LIMIT 100 FOR UPDATE SKIP LOCKED), u AS (UPDATE skq.message m SET vt = clock_timestamp() + interval '30 seconds', attempts = m.attempts + 1 FROM c WHERE m.id = c.id RETURNING m.id) SELECT array_agg(id) AS ids FROM u \gset
DELETE FROM skq.message WHERE id = ANY (:ids::bigint[]);
