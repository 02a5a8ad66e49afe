-- Small helpers the other files use: the caller, NULL checks, settings, restores

CREATE FUNCTION _caller() RETURNS name
    LANGUAGE c STABLE AS 'MODULE_PATHNAME', 'tv_caller';

CREATE FUNCTION _require(value anyelement, what text) RETURNS anyelement
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be null', what USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RETURN value;
END
$$;

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
-- them.  Only the tables' owner can write them directly, and it could as
-- well disable the triggers.
CREATE FUNCTION _restoring() RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.current_setting('row_security') = 'off'
$$;
