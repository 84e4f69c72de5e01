INSERT INTO heap_only (payload) SELECT p FROM unnest(array_fill('@PAYLOAD@'::jsonb, ARRAY[100])) AS p;
