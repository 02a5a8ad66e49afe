-- Who may do what: nothing for PUBLIC, tokens for tokenvault_app,
\set SHOW_CONTEXT never
-- clients and keys for tokenvault_admin.
SELECT 'TVSECRET-' || md5(random()::text) AS token \gset
CREATE ROLE regress_nobody;
CREATE ROLE regress_app IN ROLE tokenvault_app;
SELECT tokenvault.admit('regress_app', 'app');
CREATE ROLE regress_admin IN ROLE tokenvault_admin;
SELECT tokenvault.admit('regress_admin', 'admin');

SELECT tokenvault.create_user('user-4001') AS u \gset
SELECT tokenvault.create_client('API', 'api', 'api_key') AS c \gset
SELECT tokenvault.create_auth(:'u', :'c', NULL, jsonb_build_object('api_key', :'token')) AS a \gset

-- no grants: nothing at all
SET ROLE regress_nobody;
SELECT count(*) FROM tokenvault.auths;
SELECT try(format('SELECT tokenvault.access_token(%L)', :'a'));
RESET ROLE;

-- the application: users and tokens, never the sealed column, no clients or keys
SET ROLE regress_app;
SELECT tokenvault.access_token(:'a') = :'token' AS app_reads_token;
SELECT count(*) AS auths_visible FROM tokenvault.user_auths(:'u');
SELECT name, status FROM tokenvault.auths;
SELECT secret FROM tokenvault.auths;
SELECT tokenvault.create_client('X', 'x', 'noauth');
SELECT tokenvault.rotate_key();
SELECT tokenvault._open_auth('\x01'::bytea, gen_random_uuid());
UPDATE tokenvault.auths SET status = 'revoked';
RESET ROLE;

-- the administrator: clients and keys as well
SET ROLE regress_admin;
SELECT tokenvault.create_client('Admin made', 'x', 'noauth') IS NOT NULL AS admin_creates_clients;
SELECT count(*) > 0 AS admin_lists_keys FROM tokenvault.key_ring();   -- (how many depends on the cluster's past)
SELECT tokenvault.access_token(:'a') = :'token' AS admin_reads_token;
SELECT owner FROM tokenvault.clients WHERE name = 'Admin made';
RESET ROLE;

-- PUBLIC has nothing on any table or function of the schema
SELECT count(*) AS public_table_grants
  FROM pg_class c, aclexplode(c.relacl) a
 WHERE c.relnamespace = 'tokenvault'::regnamespace AND a.grantee = 0;
SELECT count(*) AS public_function_grants
  FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
 WHERE p.pronamespace = 'tokenvault'::regnamespace AND a.grantee = 0;
-- every function that opens a secret runs as its owner with a fixed search_path
SELECT proname, prosecdef, proconfig
  FROM pg_proc
 WHERE pronamespace = 'tokenvault'::regnamespace
   AND proname IN ('access_token', 'credentials', 'http_headers', 'rotate_key', 'create_auth')
 ORDER BY proname;

SELECT tokenvault.delete_user(:'u');
DELETE FROM tokenvault.clients;
DROP ROLE regress_nobody, regress_app, regress_admin;
