-- Nothing in courier is usable without a grant, and every SECURITY DEFINER function pins its
-- search_path.
CREATE ROLE regress_nobody;

SELECT p.proname
FROM pg_proc p
WHERE p.pronamespace = 'courier'::regnamespace
  AND has_function_privilege('regress_nobody', p.oid, 'EXECUTE')
ORDER BY 1;

SELECT c.relname
FROM pg_class c
WHERE c.relnamespace = 'courier'::regnamespace
  AND (has_table_privilege('regress_nobody', c.oid, 'SELECT')
       OR has_table_privilege('regress_nobody', c.oid, 'INSERT')
       OR has_table_privilege('regress_nobody', c.oid, 'UPDATE')
       OR has_table_privilege('regress_nobody', c.oid, 'DELETE'))
ORDER BY 1;

SELECT has_schema_privilege('regress_nobody', 'courier', 'USAGE') AS schema_usage;

SELECT p.proname
FROM pg_proc p
WHERE p.pronamespace = 'courier'::regnamespace
  AND p.prosecdef
  AND NOT EXISTS (SELECT FROM unnest(p.proconfig) AS c WHERE c LIKE 'search_path=%')
ORDER BY 1;

-- Functions that are not SECURITY DEFINER either pin search_path or have a body that was
-- resolved at creation time (BEGIN ATOMIC).
SELECT p.proname, p.prosecdef, p.prosqlbody IS NOT NULL AS atomic_body,
       array_to_string(p.proconfig, ',') AS config
FROM pg_proc p
WHERE p.pronamespace = 'courier'::regnamespace
ORDER BY 1;

SET ROLE regress_nobody;
SELECT regress.try($$SELECT courier.create_queue('p_q')$$);
SELECT regress.try($$SELECT courier.enqueue('p_q', '{}')$$);
SELECT regress.try($$SELECT * FROM courier.message$$);
RESET ROLE;

DROP ROLE regress_nobody;
