-- Describe everything the tokenvault extension owns, one object a block,
-- so that two databases can be compared with diff (test/shell/update_path.sh).
-- The extension's version is left out: the caller checks it on its own.
-- Run with psql -X -q -At; every list is in a fixed order.
\pset null '<null>'

-- the extension: owner, schema, configuration tables (in their order) and filters
SELECT 'extension ' || e.extname || ' owner=' || e.extowner::regrole || ' schema=' || e.extnamespace::regnamespace
       || ' relocatable=' || e.extrelocatable
       || ' config=' || coalesce((SELECT string_agg(c::regclass::text, ',' ORDER BY n)
                                    FROM unnest(e.extconfig) WITH ORDINALITY AS u(c, n)), '')
       || ' conditions=' || coalesce(array_to_string(e.extcondition, '|', '<null>'), '')
  FROM pg_extension e WHERE e.extname = 'tokenvault';

-- the schema
SELECT 'schema ' || n.nspname || ' owner=' || n.nspowner::regrole || ' acl=' || coalesce(n.nspacl::text, '<null>')
  FROM pg_namespace n WHERE n.nspname = 'tokenvault';

-- every member object of the extension
SELECT 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
  FROM pg_depend d
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'tokenvault')
 ORDER BY 1;

-- functions: signature, owner, security, settings, privileges and full definition
SELECT 'function ' || p.oid::regprocedure || ' kind=' || p.prokind::text || ' owner=' || p.proowner::regrole
       || ' secdef=' || p.prosecdef || ' leakproof=' || p.proleakproof || ' strict=' || p.proisstrict
       || ' volatile=' || p.provolatile::text || ' parallel=' || p.proparallel::text
       || ' cost=' || p.procost || ' rows=' || p.prorows
       || ' config=' || coalesce(array_to_string(p.proconfig, ','), '<null>')
       || ' acl=' || coalesce(p.proacl::text, '<null>') || E'\n'
       || CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) ELSE '' END
  FROM pg_proc p WHERE p.pronamespace = 'tokenvault'::regnamespace
 ORDER BY p.oid::regprocedure::text COLLATE "C";

-- relations: kind, owner, privileges, row level security, persistence, options
SELECT 'relation ' || c.relname || ' kind=' || c.relkind::text || ' owner=' || c.relowner::regrole
       || ' acl=' || coalesce(c.relacl::text, '<null>')
       || ' rls=' || c.relrowsecurity || ' force_rls=' || c.relforcerowsecurity
       || ' persistence=' || c.relpersistence::text || ' replident=' || c.relreplident::text
       || ' options=' || coalesce(array_to_string(c.reloptions, ','), '<null>')
       || ' of_type=' || coalesce(nullif(c.reloftype, 0)::regtype::text, '<null>')
  FROM pg_class c WHERE c.relnamespace = 'tokenvault'::regnamespace
 ORDER BY c.relname COLLATE "C";

-- columns in attribute number order (C code reads some tables by number)
SELECT 'column ' || c.relname || ' ' || a.attnum || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || ' notnull=' || a.attnotnull
       || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '<null>')
       || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text
       || ' collation=' || coalesce(nullif(a.attcollation, 0)::regcollation::text, '<null>')
       || ' storage=' || a.attstorage::text
       || ' acl=' || coalesce(a.attacl::text, '<null>')
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE c.relnamespace = 'tokenvault'::regnamespace
 ORDER BY c.relname COLLATE "C", a.attnum;

-- views
SELECT 'view ' || c.relname || E'\n' || pg_get_viewdef(c.oid)
  FROM pg_class c WHERE c.relnamespace = 'tokenvault'::regnamespace AND c.relkind IN ('v', 'm')
 ORDER BY c.relname COLLATE "C";

-- indexes
SELECT 'index ' || pg_get_indexdef(i.indexrelid)
       || CASE WHEN i.indisclustered THEN ' clustered' ELSE '' END
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
 WHERE c.relnamespace = 'tokenvault'::regnamespace
 ORDER BY 1;

-- constraints of tables and domains
SELECT 'constraint ' || coalesce(nullif(n.conrelid, 0)::regclass::text, nullif(n.contypid, 0)::regtype::text)
       || ' ' || n.conname || ' ' || n.contype::text
       || ' deferrable=' || n.condeferrable || ' deferred=' || n.condeferred || ' valid=' || n.convalidated
       || ' ' || pg_get_constraintdef(n.oid)
  FROM pg_constraint n WHERE n.connamespace = 'tokenvault'::regnamespace
 ORDER BY 1;

-- triggers (not those of foreign keys)
SELECT 'trigger ' || t.tgrelid::regclass || ' ' || t.tgname || ' enabled=' || t.tgenabled::text
       || ' ' || pg_get_triggerdef(t.oid)
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'tokenvault'::regnamespace AND NOT t.tgisinternal
 ORDER BY 1;

-- row level security policies
SELECT 'policy ' || p.tablename || ' ' || p.policyname || ' ' || p.permissive || ' ' || p.cmd
       || ' roles=' || array_to_string(p.roles, ',')
       || ' using=' || coalesce(p.qual, '<null>') || ' check=' || coalesce(p.with_check, '<null>')
  FROM pg_policies p WHERE p.schemaname = 'tokenvault'
 ORDER BY p.tablename COLLATE "C", p.policyname COLLATE "C";

-- rewrite rules other than views' own
SELECT 'rule ' || r.tablename || ' ' || r.rulename || ' ' || r.definition
  FROM pg_rules r WHERE r.schemaname = 'tokenvault'
 ORDER BY 1;

-- types (a table's row type shows as its relation): kind, owner, privileges,
-- enum labels in order, attributes of composite types, domains' base types
SELECT 'type ' || t.typname || ' kind=' || t.typtype::text || ' owner=' || t.typowner::regrole
       || ' acl=' || coalesce(t.typacl::text, '<null>')
       || CASE t.typtype::text
          WHEN 'e' THEN ' labels=' || (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                                        FROM pg_enum e WHERE e.enumtypid = t.oid)
          WHEN 'd' THEN ' base=' || format_type(t.typbasetype, t.typtypmod) || ' notnull=' || t.typnotnull
                        || ' default=' || coalesce(t.typdefault, '<null>')
          WHEN 'c' THEN ' attributes=' || (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod),
                                                              ', ' ORDER BY a.attnum)
                                            FROM pg_attribute a
                                           WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)
          ELSE '' END
  FROM pg_type t WHERE t.typnamespace = 'tokenvault'::regnamespace AND t.typname !~ '^_'
 ORDER BY t.typname COLLATE "C";

-- sequences: parameters and owning column
SELECT 'sequence ' || s.seqrelid::regclass || ' ' || format_type(s.seqtypid, NULL)
       || ' start=' || s.seqstart || ' increment=' || s.seqincrement || ' min=' || s.seqmin
       || ' max=' || s.seqmax || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle
       || ' owned_by=' || coalesce((SELECT d.refobjid::regclass || '.' || a.attname
                                      FROM pg_depend d
                                      JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                                     WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                                       AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')), '<null>')
  FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
 WHERE c.relnamespace = 'tokenvault'::regnamespace
 ORDER BY 1;

-- default privileges set in the schema
SELECT 'default acl ' || d.defaclrole::regrole || ' ' || d.defaclobjtype::text || ' ' || d.defaclacl::text
  FROM pg_default_acl d WHERE d.defaclnamespace = 'tokenvault'::regnamespace
 ORDER BY 1;

-- comments on the extension, the schema, its members and their columns
SELECT 'comment ' || pg_describe_object(d.classoid, d.objoid, d.objsubid) || ': ' || d.description
  FROM pg_description d
 WHERE (d.classoid = 'pg_extension'::regclass
        AND d.objoid = (SELECT oid FROM pg_extension WHERE extname = 'tokenvault'))
    OR (d.classoid = 'pg_namespace'::regclass AND d.objoid = 'tokenvault'::regnamespace)
    OR EXISTS (SELECT FROM pg_depend m
                WHERE m.classid = d.classoid AND m.objid = d.objoid AND m.deptype = 'e'
                  AND m.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'tokenvault'))
    OR (pg_identify_object(d.classoid, d.objoid, 0)).identity ~ '(^|\W)tokenvault\.'  -- indexes, constraints, triggers, policies
 ORDER BY 1;
