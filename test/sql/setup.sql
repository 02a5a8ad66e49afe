-- Helpers for the other regression tests.
-- try(): run a statement and show its outcome as "SQLSTATE: message" (with
-- the hint), generated ids masked, so expected output stays the same.
CREATE FUNCTION try(statement text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    state text;
    message text;
    hint text;
BEGIN
    EXECUTE statement;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    message := state || ': ' || message || CASE WHEN hint <> '' THEN E'\nHINT: ' || hint ELSE '' END;
    message := regexp_replace(message, '[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}', '<id>', 'g');
    RETURN regexp_replace(message, 'key [0-9]+', 'key <id>', 'g');
END
$$;
