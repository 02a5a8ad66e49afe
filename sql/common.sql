-- Small helpers the other files use: the caller, admission and private clients, NULL checks, settings, restores

CREATE FUNCTION _caller() RETURNS name
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'tv_caller';

-- Internal helpers take exact types, never polymorphic ones, and are called
-- with them: a call then resolves to the one function meant.
CREATE FUNCTION _refuse_null(missing boolean, what text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF missing THEN
        RAISE EXCEPTION '% must not be null', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
END
$$;

-- Who may use tokenvault in this database (admissions.sql): each entry point
-- asks first.  The level is kept per backend; the admissions table's
-- trigger makes every backend forget it.
CREATE FUNCTION _admit_app() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_admit_app';
CREATE FUNCTION _admit_admin() RETURNS void
    LANGUAGE c VOLATILE AS 'MODULE_PATHNAME', 'tv_admit_admin';
-- for the row level security policies, which run as the caller
CREATE FUNCTION _admitted_app() RETURNS boolean
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'tv_admitted_app';
CREATE FUNCTION _admitted_admin() RETURNS boolean
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'tv_admitted_admin';

-- A private client, and each auth of it, is its owner's alone.
CREATE FUNCTION _client_visible(client_id uuid) RETURNS boolean
    LANGUAGE c STABLE STRICT AS 'MODULE_PATHNAME', 'tv_client_visible';
CREATE FUNCTION _require_client_access(client_id uuid, auth_id uuid) RETURNS void
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'tv_require_client_access_sql';

-- A statement trigger on the tables whose rows the checks above keep.
CREATE FUNCTION _table_changed() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'tv_table_changed';

-- A setting in seconds (they show as '60s', '2min', '7d') as an interval.
-- (No SET search_path on this and the other one-line helpers, so that they
-- are inlined; every name in them is qualified.)
CREATE FUNCTION _setting_interval(name text) RETURNS interval
    LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.current_setting(name)::pg_catalog.interval
$$;

-- pg_dump's scripts set row_security off, and a restore loads each table
-- whole in foreign-key order: instances before their values, slots after
-- the instances.  The checks that span tables (required slots filled) hold
-- for what was dumped and would refuse it half loaded, so a restore skips
-- them.  Any role may set row_security off, so the setting alone proves
-- nothing: only a restore by a role that could as well disable the
-- triggers (a superuser, or one with the tables' owner's privileges) skips
-- them.  The role asked is the session's (_caller), not current_user, which
-- inside the SECURITY DEFINER functions is their owner.
CREATE FUNCTION _restoring() RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.current_setting('row_security') = 'off'
       AND pg_catalog.pg_has_role(tokenvault._caller(),
                                  (SELECT c.relowner FROM pg_catalog.pg_class c
                                    WHERE c.oid = 'tokenvault.instances'::pg_catalog.regclass),
                                  'USAGE')
$$;
