-- Admissions: the roles a superuser lets use tokenvault in this database

-- tokenvault_app and tokenvault_admin carry the privileges on the functions
-- and tables, but they are cluster-wide: a member of either would reach
-- every database with the extension.  So each database admits its roles,
-- and every entry point checks (common.sql, _admit_app).  Only superusers
-- admit and dismiss: these two are granted to no one.
CREATE FUNCTION admit(role regrole, level text DEFAULT 'app') RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    carrier name := CASE level WHEN 'app' THEN 'tokenvault_app' WHEN 'admin' THEN 'tokenvault_admin' END;
BEGIN
    PERFORM tokenvault._refuse_null(role IS NULL, 'role'::text);
    IF carrier IS NULL THEN
        RAISE EXCEPTION 'admission level must be app or admin'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'An app uses tokens; an admin also manages clients, keys, webhooks and solutions.';
    END IF;
    IF NOT pg_has_role(role::oid, carrier, 'USAGE') THEN
        EXECUTE format('GRANT %I TO %s', carrier, role);
    END IF;
    INSERT INTO tokenvault.admissions (role, level, admitted_by)
    VALUES (admit.role, admit.level, tokenvault._caller())
    ON CONFLICT ON CONSTRAINT admissions_pkey
        DO UPDATE SET level = EXCLUDED.level, admitted_by = EXCLUDED.admitted_by, admitted_at = now();
END
$$;

-- The role keeps its membership in the cluster-wide role, which other
-- databases may have admitted; here it may no longer use tokenvault.
CREATE FUNCTION dismiss(role regrole) RETURNS boolean
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM tokenvault._refuse_null(role IS NULL, 'role'::text);
    DELETE FROM tokenvault.admissions a WHERE a.role = dismiss.role;
    RETURN FOUND;
END
$$;

-- Backends keep each role's level and each client's owner (src/access.c);
-- a change to either table makes them forget.
CREATE TRIGGER admissions_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON admissions
    FOR EACH STATEMENT EXECUTE FUNCTION _table_changed();
CREATE TRIGGER clients_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION _table_changed();
