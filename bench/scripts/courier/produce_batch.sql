SELECT count(*) FROM courier.enqueue_batch('bench', array_fill('@PAYLOAD@'::jsonb, ARRAY[100]));
