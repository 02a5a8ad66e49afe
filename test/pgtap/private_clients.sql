-- A private client's auths are its owner's alone, for every operation
-- (issue 15, finding 6): another application role reads, refreshes,
-- changes, deletes, revokes and lists none of them, through the functions
-- or the tables; deleting their user is refused rather than taking them.
BEGIN;
SELECT plan(36);

CREATE ROLE tap_pc_owner IN ROLE tokenvault_app;
CREATE ROLE tap_pc_other IN ROLE tokenvault_app;
CREATE ROLE tap_pc_admin IN ROLE tokenvault_admin;
SELECT tokenvault.admit('tap_pc_owner', 'app'), tokenvault.admit('tap_pc_other', 'app'), tokenvault.admit('tap_pc_admin', 'admin');

SELECT tokenvault.create_user('tap-pc-user') AS u, tokenvault.create_user('tap-pc-user-2') AS u2 \gset
SELECT tokenvault.create_client('Private API', 'papi', 'api_key', '{"visibility": "private"}') AS pc,
       tokenvault.create_client('Shared API', 'sapi', 'api_key') AS sc,
       tokenvault.create_client('Private OAuth', 'poauth', 'oauth2',
           '{"visibility": "private", "client_id": "tap-pc", "auth_url": "https://127.0.0.1:9/a", "token_url": "https://127.0.0.1:9/t"}') AS po \gset
-- an administrator made them; the owner is the application that uses them
UPDATE tokenvault.clients SET owner = 'tap_pc_owner' WHERE id IN (:'pc', :'po');
SELECT tokenvault.create_solution('Private slots') AS sol \gset
SELECT tokenvault.add_slot(:'sol', 'api', 'auth', '{"service": "papi"}') IS NULL AS slot \gset

SET LOCAL ROLE tap_pc_owner;
SELECT tokenvault.create_auth(:'u', :'pc', 'mine', jsonb_build_object('api_key', 'TVSECRET-pc-' || md5(random()::text))) AS pa,
       tokenvault.create_auth(:'u', :'sc', 'shared', jsonb_build_object('api_key', 'TVSECRET-sc-' || md5(random()::text))) AS sa,
       tokenvault.create_auth(:'u2', :'pc', 'mine too', jsonb_build_object('api_key', 'TVSECRET-pc-' || md5(random()::text))) AS pa2 \gset
SELECT ok(tokenvault.access_token(:'pa') LIKE 'TVSECRET-pc-%', 'the owner reads its private auth');
SELECT is((SELECT count(*) FROM tokenvault.user_auths(:'u')), 2::bigint, 'and lists it');
SELECT is((SELECT count(*) FROM tokenvault.auths WHERE user_id = :'u'), 2::bigint, 'and sees it in the table');
RESET ROLE;

-- the other application
SET LOCAL ROLE tap_pc_other;
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'pa'), '42501', NULL, 'another role does not read it: access_token');
SELECT throws_ok(format('SELECT tokenvault.credentials(%L)', :'pa'), '42501', NULL, 'nor credentials');
SELECT throws_ok(format('SELECT tokenvault.http_headers(%L)', :'pa'), '42501', NULL, 'nor http_headers');
SELECT throws_ok(format('SELECT tokenvault.refresh_auth(%L)', :'pa'), '42501', NULL, 'nor refreshes it');
SELECT throws_ok(format('SELECT tokenvault.update_auth(%L, ''renamed'')', :'pa'), '42501', NULL, 'nor renames it');
SELECT throws_ok(format('SELECT tokenvault.update_auth(%L, data => ''{"api_key": "TVSECRET-x-00000000"}'')', :'pa'),
                 '42501', NULL, 'nor overwrites its credential');
SELECT throws_ok(format('SELECT tokenvault.delete_auth(%L)', :'pa'), '42501', NULL, 'nor deletes it');
SELECT throws_ok(format('SELECT tokenvault.delete_auth(%L, revoke => true)', :'pa'), '42501', NULL, 'nor revokes it');
SELECT throws_ok(format('SELECT tokenvault.create_auth(%L, %L, ''x'', ''{"api_key": "TVSECRET-x-00000000"}'')', :'u', :'pc'),
                 '42501', NULL, 'nor creates one');
SELECT throws_ok(format('SELECT tokenvault.authorize_url(%L, %L, ''https://app.example/cb'')', :'po', :'u'),
                 '42501', NULL, 'nor authorizes one');
SELECT is((SELECT array_agg(id) FROM tokenvault.user_auths(:'u')), ARRAY[:'sa'::uuid], 'user_auths lists only the shared auth');
SELECT is((SELECT array_agg(id) FROM tokenvault.auths WHERE user_id = :'u'), ARRAY[:'sa'::uuid], 'and so does the table');
SELECT is((SELECT count(*) FROM tokenvault.clients WHERE id IN (:'pc', :'po')), 0::bigint, 'the private clients are not listed');
SELECT throws_ok(format('SELECT tokenvault.delete_user_auths(%L)', :'u'), '42501', NULL,
                 'delete_user_auths does not take the private auth along');
SELECT throws_ok(format('SELECT tokenvault.delete_user(%L)', :'u2'), '42501', NULL, 'nor does delete_user');
SELECT ok(tokenvault.access_token(:'sa') LIKE 'TVSECRET-sc-%', 'a shared auth is every admitted application''s');
-- nor through an instance of its own, or the mapping query
SELECT throws_ok(format('SELECT tokenvault.create_instance(%L, %L, ''theirs'', %L)', :'sol', :'u',
                        jsonb_build_array(jsonb_build_object('externalId', 'api', 'authId', :'pa'))),
                 '42501', NULL, 'nor puts it into an instance');
SELECT is((SELECT array_agg(e->>'id') FROM jsonb_array_elements(tokenvault.user_instances(:'u')->'authentications') e),
          ARRAY[:'sa'], 'user_instances lists only the shared auth');
RESET ROLE;
-- another administrator manages no private client of another role: making
-- it shared would hand its auths to every application
SET LOCAL ROLE tap_pc_admin;
SELECT throws_ok(format('SELECT tokenvault.update_client(%L, ''{"visibility": "shared"}'')', :'pc'),
                 '42501', NULL, 'another administrator does not make it shared');
SELECT throws_ok(format('SELECT tokenvault.delete_client(%L, true)', :'pc'), '42501', NULL, 'nor deletes it');
SELECT throws_ok(format('SELECT tokenvault.credentials(%L)', :'pa'), '42501', NULL, 'nor reads its auths');
RESET ROLE;
SELECT is((SELECT count(*) FROM tokenvault.auths WHERE id IN (:'pa', :'pa2')), 2::bigint, 'the private auths are all still there');
SELECT is((SELECT name FROM tokenvault.auths WHERE id = :'pa'), 'mine', 'unchanged');

-- the owner's own role may, and a client made shared is everyone's again
SET LOCAL ROLE tap_pc_owner;
SELECT lives_ok(format('SELECT tokenvault.update_auth(%L, ''renamed'')', :'pa'), 'the owner renames it');
RESET ROLE;
SELECT tokenvault.update_client(:'pc', '{"visibility": "shared"}');
SET LOCAL ROLE tap_pc_other;
SELECT ok(tokenvault.access_token(:'pa') LIKE 'TVSECRET-pc-%', 'once the client is shared, another role reads it at once');
RESET ROLE;
SELECT tokenvault.update_client(:'pc', '{"visibility": "private"}');
SET LOCAL ROLE tap_pc_other;
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'pa'), '42501', NULL, 'and made private again, no longer');
RESET ROLE;

-- user tokens: deleting a user takes its tokens only with a write grant on them
SELECT tokenvault.grant_user_tokens(:'u2', 'tap_pc_owner', 'write') IS NULL AS granted \gset
SET LOCAL ROLE tap_pc_owner;
SELECT tokenvault.put_user_token(:'u2', 'crm', 'k', 'TVSECRET-ut-' || md5(random()::text)) IS NULL AS put \gset
RESET ROLE;
UPDATE tokenvault.clients SET visibility = 'shared' WHERE id = :'pc';
SET LOCAL ROLE tap_pc_other;
SELECT throws_ok(format('SELECT tokenvault.delete_user(%L)', :'u2'), '42501', NULL,
                 'delete_user refuses a user whose tokens the caller may not write');
RESET ROLE;
SELECT is((SELECT count(*) FROM tokenvault.user_tokens WHERE user_id = :'u2'), 1::bigint, 'and the token is still there');
SELECT tokenvault.grant_user_tokens(:'u2', 'tap_pc_other', 'write') IS NULL AS granted \gset
SET LOCAL ROLE tap_pc_other;
SELECT lives_ok(format('SELECT tokenvault.delete_user(%L)', :'u2'), 'with a write grant it deletes the user');
RESET ROLE;

-- events: a deleted private auth's stay its owner's; a deleted shared auth's are everyone's
UPDATE tokenvault.clients SET visibility = 'private' WHERE id = :'pc';
SET LOCAL ROLE tap_pc_admin;
SELECT tokenvault.add_webhook('http://127.0.0.1:9/admin-hook', 'TVSECRET-wh-' || md5(random()::text), allow_insecure_http => true) AS admin_hook \gset
RESET ROLE;
SELECT tokenvault.add_webhook('http://127.0.0.1:9/superuser-hook', 'TVSECRET-wh-' || md5(random()::text), allow_insecure_http => true) AS su_hook \gset
SET LOCAL ROLE tap_pc_owner;
SELECT tokenvault.delete_auth(:'pa') IS NULL AS deleted, tokenvault.delete_auth(:'sa') IS NULL AS deleted_too \gset
RESET ROLE;
SELECT is((SELECT array_agg(e.auth_id ORDER BY e.auth_id = :'pa') FROM tokenvault.webhook_deliveries d
             JOIN tokenvault.events e ON e.id = d.event_id WHERE d.webhook_id = :'admin_hook' AND e.kind = 'auth.deleted'),
          ARRAY[:'sa'::uuid], 'another administrator''s webhook hears of the shared auth only');
SELECT is((SELECT count(*) FROM tokenvault.webhook_deliveries d JOIN tokenvault.events e ON e.id = d.event_id
            WHERE d.webhook_id = :'su_hook' AND e.kind = 'auth.deleted' AND e.auth_id IN (:'pa', :'sa')),
          2::bigint, 'a webhook of a member of the owner (a superuser''s) hears of both');
SET LOCAL ROLE tap_pc_owner;
SELECT is((SELECT count(*) FROM tokenvault.events WHERE auth_id = :'pa' AND kind = 'auth.deleted'), 1::bigint,
          'the owner reads the deletion of its private auth');
RESET ROLE;
SET LOCAL ROLE tap_pc_other;
SELECT is((SELECT array_agg(auth_id) FROM tokenvault.events WHERE kind = 'auth.deleted' AND auth_id IN (:'pa', :'sa')),
          ARRAY[:'sa'::uuid], 'another role reads that of the shared auth only');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
