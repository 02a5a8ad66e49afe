-- The schema is the installing superuser's alone: nothing in it that another role made or may make

-- The control file names the schema, and CREATE EXTENSION installs into one
-- that exists.  Whoever can create objects in it can put a function or an
-- operator there that the superuser-owned SECURITY DEFINER functions would
-- call, so a schema made beforehand by another role (a database owner can),
-- one where another role may create objects, or one that already holds
-- objects, is refused.  pg_dump's "CREATE SCHEMA tokenvault" (empty, owned
-- by the restoring superuser) passes.
DO $$
DECLARE
    schema_oid oid := '@extschema@'::regnamespace;
    owner_oid oid := (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.oid = schema_oid);
    others text := (SELECT pg_catalog.string_agg(DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                                                             ELSE a.grantee::regrole::text END, ', ')
                      FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
                     WHERE n.oid = schema_oid AND a.privilege_type = 'CREATE' AND a.grantee <> owner_oid);
BEGIN
    IF owner_oid <> (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'schema @extschema@ is owned by role %, not by %', owner_oid::regrole, current_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Drop the schema (or rename it), and CREATE EXTENSION tokenvault creates its own.';
    END IF;
    IF others IS NOT NULL THEN
        RAISE EXCEPTION 'other roles may create objects in schema @extschema@: %', others
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'REVOKE CREATE ON SCHEMA @extschema@ FROM them, or drop the schema.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_class WHERE relnamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_proc WHERE pronamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_type WHERE typnamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_operator WHERE oprnamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_collation WHERE collnamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_conversion WHERE connamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_opfamily WHERE opfnamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_ts_config WHERE cfgnamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_ts_dict WHERE dictnamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_ts_parser WHERE prsnamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_ts_template WHERE tmplnamespace = schema_oid
               UNION ALL SELECT FROM pg_catalog.pg_statistic_ext WHERE stxnamespace = schema_oid) THEN
        RAISE EXCEPTION 'schema @extschema@ already holds objects'
            USING ERRCODE = 'duplicate_schema',
                  HINT = 'Install into a schema of its own: drop or rename this one first.';
    END IF;
END
$$;
