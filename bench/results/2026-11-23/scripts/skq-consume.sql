UPDATE skq.message m SET vt = clock_timestamp() + interval '30 seconds', attempts = m.attempts + 1 FROM (SELECT id FROM skq.message WHERE vt <= clock_timestamp() ORDER BY vt LIMIT 1 FOR UPDATE SKIP LOCKED) c WHERE m.id = c.id RETURNING m.id AS m \gset
DELETE FROM skq.message WHERE id = :m;
