-- Helpers for the regression tests (the database was created with courier loaded).
CREATE SCHEMA regress;
GRANT USAGE ON SCHEMA regress TO PUBLIC;

-- Runs a statement and reports "ok" or "SQLSTATE: message", so expected output pins both the
-- error code and its text. The statement runs in a subtransaction: a failure changes nothing.
CREATE FUNCTION regress.try(statement text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    -- Receipts are random: mask them so the expected output is stable.
    RETURN SQLSTATE || ': ' || regexp_replace(SQLERRM, '[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}', '<receipt>', 'g');
END
$$;

-- Every message row, for "a failed call changed nothing" checks.
CREATE FUNCTION regress.messages() RETURNS bigint
LANGUAGE sql AS $$ SELECT count(*) FROM courier.message $$;

-- The SQL objects and the library are the same version (courier.version() is the library's).
SELECT extname, extversion = courier.version() AS same_version FROM pg_extension WHERE extname = 'courier';
