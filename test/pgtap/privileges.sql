-- Privileges: nothing for PUBLIC, tokens for tokenvault_app, clients and
-- keys for tokenvault_admin.
BEGIN;
SELECT plan(32);

SELECT has_role('tokenvault_app', 'the extension made the role tokenvault_app');
SELECT has_role('tokenvault_admin', 'the extension made the role tokenvault_admin');
SELECT is_member_of('tokenvault_app', 'tokenvault_admin', 'an admin can do what the app can');

CREATE ROLE tap_nobody;
CREATE ROLE tap_app IN ROLE tokenvault_app;
SELECT tokenvault.admit('tap_app', 'app');
CREATE ROLE tap_admin IN ROLE tokenvault_admin;
SELECT tokenvault.admit('tap_admin', 'admin');
CREATE TEMP TABLE tables AS
SELECT c.oid::regclass AS tbl FROM pg_class c
 WHERE c.relnamespace = 'tokenvault'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm');
CREATE TEMP TABLE functions AS
SELECT p.oid::regprocedure AS fn, p.proname::text AS name, p.prosecdef, p.proconfig, p.prolang
  FROM pg_proc p WHERE p.pronamespace = 'tokenvault'::regnamespace;
GRANT SELECT ON tables, functions TO PUBLIC;
SELECT 'TVSECRET-' || md5(random()::text) AS token \gset
SELECT tokenvault.create_user('tap-priv-user') AS u \gset
SELECT tokenvault.create_client('API', 'api', 'api_key') AS k \gset
SELECT tokenvault.create_auth(:'u', :'k', NULL, jsonb_build_object('api_key', :'token')) AS a \gset

-- The catalog says it
SELECT is((SELECT count(*) FROM tables t, unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE',
                  'TRUNCATE', 'REFERENCES', 'TRIGGER']) priv
            WHERE has_table_privilege('tap_nobody', t.tbl, priv)
               OR has_any_column_privilege('tap_nobody', t.tbl, 'SELECT')),
          0::bigint, 'a role with no grants has no privilege on any tokenvault table');
SELECT is((SELECT count(*) FROM functions WHERE has_function_privilege('tap_nobody', fn, 'EXECUTE')),
          0::bigint, 'nor on any tokenvault function');
SELECT is((SELECT count(*) FROM tables t, unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) priv
            WHERE has_table_privilege('tap_app', t.tbl, priv)),
          0::bigint, 'the app writes tables only through the functions');
SELECT is((SELECT count(*) FROM tables t JOIN pg_attribute a ON a.attrelid = t.tbl AND a.attname = 'secret'
            WHERE has_column_privilege('tap_app', t.tbl, a.attnum, 'SELECT')),
          0::bigint, 'no role but the owner can read a sealed column');
SELECT is((SELECT array_agg(fn::text ORDER BY fn::text) FROM functions WHERE name LIKE '\_%' AND (
                  has_function_privilege('tap_app', fn, 'EXECUTE')
                  OR has_function_privilege('tap_admin', fn, 'EXECUTE'))),
          ARRAY['tokenvault._admitted_admin()', 'tokenvault._admitted_app()',
                'tokenvault._client_visible(uuid)', 'tokenvault._worker_stats()'],
          'internal functions (seal, open, key ring) are granted to no one but the checks the policies and the stats view call');
SELECT is((SELECT array_agg(name ORDER BY name) FROM functions
            WHERE name IN ('access_token', 'credentials', 'http_headers', 'create_auth', 'update_auth',
                           'create_client', 'update_client', 'rotate_key', 'key_usage', 'key_ring',
                           'add_key', 'drop_key', 'put_private_token', 'get_private_token',
                           'list_private_tokens', 'put_user_token', 'get_user_token', 'list_user_tokens')
              AND NOT prosecdef),
          NULL, 'every function that touches secrets or keys is SECURITY DEFINER');
SELECT is((SELECT array_agg(fn::text) FROM functions
            WHERE prosecdef AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (proconfig), false)),
          NULL, 'every SECURITY DEFINER function fixes search_path to pg_catalog, pg_temp');
SELECT is((SELECT array_agg(name ORDER BY name) FROM functions
            WHERE name IN ('create_client', 'update_client', 'delete_client', 'rotate_key', 'add_key',
                           'drop_key', 'key_ring', 'key_usage', 'create_solution', 'update_solution',
                           'delete_solution', 'add_slot', 'update_slot', 'delete_slot',
                           'grant_user_tokens', 'revoke_user_tokens')
              AND has_function_privilege('tap_app', fn, 'EXECUTE')),
          NULL, 'the app cannot manage clients, keys, solutions or grants on user tokens');

-- And it holds when tried
SET LOCAL ROLE tap_nobody;
SELECT throws_ok('SELECT 1 FROM tokenvault.users', '42501', NULL, 'no-grant role: users is closed');
SELECT throws_ok('SELECT 1 FROM tokenvault.clients', '42501', NULL, 'no-grant role: clients is closed');
SELECT throws_ok('SELECT 1 FROM tokenvault.auths', '42501', NULL, 'no-grant role: auths is closed');
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'a'), '42501', NULL,
                 'no-grant role: access_token() is refused');
SELECT throws_ok(format('SELECT tokenvault.credentials(%L)', :'a'), '42501', NULL,
                 'no-grant role: credentials() is refused');
SELECT throws_ok('SELECT tokenvault.create_user(''x'')', '42501', NULL,
                 'no-grant role: create_user() is refused');
RESET ROLE;

SET LOCAL ROLE tap_app;
SELECT is(tokenvault.access_token(:'a'), :'token', 'the app reads a token');
SELECT is(tokenvault.http_headers(:'a')->>'X-API-Key', :'token', 'and its headers');
SELECT is((SELECT status FROM tokenvault.auths WHERE id = :'a'), 'active', 'the app sees an auth''s plain columns');
SELECT throws_ok('SELECT secret FROM tokenvault.auths', '42501', NULL, 'but not its sealed column');
SELECT throws_ok('SELECT * FROM tokenvault.clients', '42501', NULL, 'nor a client''s sealed secret');
SELECT throws_ok(format('SELECT tokenvault._open_auth(secret, id) FROM tokenvault.auths'),
                 '42501', NULL, 'the app cannot open a sealed value itself');
SELECT throws_ok('UPDATE tokenvault.auths SET status = ''revoked''', '42501', NULL,
                 'the app cannot write a table directly');
SELECT throws_ok('SELECT tokenvault.create_client(''X'', ''x'', ''noauth'')', '42501', NULL,
                 'the app cannot create a client');
SELECT throws_ok('SELECT tokenvault.rotate_key()', '42501', NULL, 'the app cannot rotate keys');
SELECT throws_ok('SELECT tokenvault.key_ring()', '42501', NULL, 'the app cannot list keys');
RESET ROLE;

SET LOCAL ROLE tap_admin;
SELECT tokenvault.create_client('Private', 'private', 'api_key', '{"visibility": "private"}') AS p \gset
SELECT is((SELECT owner::text FROM tokenvault.clients WHERE id = :'p'), 'tap_admin',
          'an admin creates clients, owned by its role');
SELECT isnt((SELECT count(*) FROM tokenvault.key_ring()), 0::bigint, 'an admin lists keys');
SELECT is(tokenvault.access_token(:'a'), :'token', 'an admin reads tokens too');
RESET ROLE;

SET LOCAL ROLE tap_app;
SELECT throws_ok(format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"api_key": "k"}'')', :'u', :'p'),
                 '42501', NULL, 'a private client takes auths only from its owner''s roles');
-- a function planted earlier in the search path is not what the API calls
CREATE FUNCTION pg_temp.gen_random_uuid() RETURNS uuid LANGUAGE sql
    AS $$ SELECT '00000000-0000-0000-0000-000000000001'::uuid $$;
SET LOCAL search_path = pg_temp, public;
SELECT isnt(tokenvault.create_user('tap-priv-planted'), '00000000-0000-0000-0000-000000000001'::uuid,
            'a function planted in pg_temp does not hijack the API');
RESET search_path;
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
