-- What an administrator cannot take without a trace (README, "Clients" and
-- "Private tokens"): moving a client's token, refresh or revoke URL to a
-- host of its own needs the client secret again, and sharing a user's
-- tokens with itself, reading them and revoking the grant leaves the grant
-- in the history and both as events.  No request is sent here.
BEGIN;
SELECT plan(37);

CREATE ROLE tap_trace_admin IN ROLE tokenvault_admin;
SELECT tokenvault.admit('tap_trace_admin', 'admin');
CREATE ROLE tap_trace_app IN ROLE tokenvault_app;
SELECT tokenvault.admit('tap_trace_app', 'app');
SELECT 'TVSECRET-cs-' || md5(random()::text) AS secret, 'TVSECRET-cs-' || md5(random()::text) AS secret2,
       'TVSECRET-ut-' || md5(random()::text) AS user_secret \gset
SELECT tokenvault.create_client('Provider', 'provider', 'oauth2', jsonb_build_object(
           'client_id', 'trace', 'client_secret', :'secret',
           'auth_url', 'https://provider.invalid/authorize', 'token_url', 'https://provider.invalid/token')) AS c,
       tokenvault.create_client('Public', 'public', 'oauth2', jsonb_build_object(
           'client_id', 'trace-public',
           'auth_url', 'https://provider.invalid/authorize', 'token_url', 'https://provider.invalid/token')) AS pub \gset
CREATE TEMP TABLE before AS SELECT * FROM tokenvault.clients WHERE id = :'c';

-- The attack: the token URL (or the refresh or revoke URL) to a host of
-- the administrator's own, without the secret
SET LOCAL ROLE tap_trace_admin;
SELECT throws_ok(format($$SELECT tokenvault.update_client(%L, '{"allow_insecure_http": true, "token_url": "http://127.0.0.1:9/token"}')$$, :'c'),
                 '42501', NULL, 'an administrator cannot move the token URL to another host without the client secret');
SELECT throws_ok(format($$SELECT tokenvault.update_client(%L, '{"refresh_url": "http://127.0.0.1:9/token"}')$$, :'c'),
                 '42501', NULL, 'nor the refresh URL');
SELECT throws_ok(format($$SELECT tokenvault.update_client(%L, '{"revoke_url": "http://127.0.0.1:9/revoke"}')$$, :'c'),
                 '42501', NULL, 'nor set a revoke URL on another host');
SELECT throws_ok(format($$SELECT tokenvault.update_client(%L, '{"token_url": "https://provider.invalid@127.0.0.1/token"}')$$, :'c'),
                 '42501', NULL, 'a host after userinfo is the host');
SELECT throws_ok(format($$SELECT tokenvault.update_client(%L, '{"allow_insecure_http": true, "token_url": "http://provider.invalid/token"}')$$, :'c'),
                 '42501', NULL, 'another scheme is another place');
SELECT throws_ok(format($$SELECT tokenvault.update_client(%L, '{"token_url": "https://provider.invalid:8443/token"}')$$, :'c'),
                 '42501', NULL, 'and so is another port');
SELECT throws_ok(format($$SELECT tokenvault.update_client(%L, '{"token_url": "https://{host}.provider.invalid/token",
                                                                 "allowed_hosts": ["provider.invalid", "*.provider.invalid"]}')$$, :'c'),
                 '42501', NULL, 'and a template host');
SELECT throws_ok(format($$SELECT tokenvault.update_client(%L, '{"allowed_hosts": ["provider.invalid", "*.attacker.invalid"]}')$$, :'c'),
                 '42501', NULL, 'and so is allowing a new host for templates');
SELECT throws_ok(format($$SELECT tokenvault.update_client(%L, '{"allow_insecure_http": true, "token_url": "http://127.0.0.1:9/token", "client_secret": null}')$$, :'c'),
                 '42501', NULL, 'clearing the secret is not giving it');
SELECT throws_ok(format($$SELECT tokenvault.update_client(%L, %L)$$, :'pub',
                        jsonb_build_object('allow_insecure_http', true, 'token_url', 'http://127.0.0.1:9/token', 'client_secret', :'secret2')),
                 '42501', NULL, 'a client without a secret does not move at all (its refresh tokens are good alone)');
RESET ROLE;
SELECT is((SELECT row(c.*)::text FROM tokenvault.clients c WHERE c.id = :'c'), (SELECT row(b.*)::text FROM before b),
          'the client is as it was');
SELECT is((SELECT count(*) FROM tokenvault.events WHERE kind = 'client.urls_changed'), 0::bigint,
          'and nothing refused is announced');
SET LOCAL ROLE tap_trace_admin;

-- What stays allowed: another path, the same host written otherwise, a
-- revoke URL where the secret goes already
SELECT lives_ok(format($$SELECT tokenvault.update_client(%L, '{"token_url": "https://PROVIDER.invalid:443/oauth/token"}')$$, :'c'),
                'the same scheme, host and port (in any case, the default port written out) needs no secret');
SELECT lives_ok(format($$SELECT tokenvault.update_client(%L, '{"revoke_url": "https://provider.invalid/revoke", "refresh_url": "https://provider.invalid/refresh"}')$$, :'c'),
                'nor a refresh or revoke URL on a host that gets the secret already');
SELECT lives_ok(format($$SELECT tokenvault.update_client(%L, '{"auth_url": "https://login.invalid/authorize"}')$$, :'c'),
                'the authorize URL (which gets no secret) moves freely');
SELECT lives_ok(format($$SELECT tokenvault.update_client(%L, %L)$$, :'c',
                       jsonb_build_object('allow_insecure_http', true, 'token_url', 'http://127.0.0.1:9/token', 'refresh_url', NULL,
                                          'client_secret', :'secret2')),
                'with the client secret given again, the token URL moves');
RESET ROLE;
SELECT is(tokenvault._open_client(secret, id)->>'client_secret', :'secret2', '  ... and the secret given is the one kept')
  FROM tokenvault.clients WHERE id = :'c';
SELECT is((SELECT string_agg(e.payload->>'new_host', ',' ORDER BY e.id) FROM tokenvault.events e
            WHERE e.kind = 'client.urls_changed' AND e.payload->>'client_id' = :'c'), 'false,false,false,true',
          'each change of URLs is an event, saying whether a new host gets the secret');
SELECT is((SELECT e.payload - 'client_id' FROM tokenvault.events e
            WHERE e.kind = 'client.urls_changed' ORDER BY e.id DESC LIMIT 1),
          jsonb_build_object('event', 'client.urls_changed', 'client_name', 'Provider', 'service_name', 'provider',
                             'new_host', true, 'by', 'tap_trace_admin',
                             'urls', jsonb_build_object(
                                 'token_url', jsonb_build_object('old', 'https://PROVIDER.invalid:443/oauth/token',
                                                                 'new', 'http://127.0.0.1:9/token'),
                                 'refresh_url', jsonb_build_object('old', 'https://provider.invalid/refresh', 'new', NULL))),
          '  ... naming the URLs before and after, and who changed them');

-- Grants: share a user's tokens with oneself, read them, revoke the grant
SELECT tokenvault.create_user('tap-trace-user', 'Trace User') AS u \gset
SELECT tokenvault.grant_user_tokens(:'u', 'tap_trace_app', 'write');
SET LOCAL ROLE tap_trace_app;
SELECT tokenvault.put_user_token(:'u', 'bank', 'login', :'user_secret');
RESET ROLE;
SET LOCAL ROLE tap_trace_admin;
SELECT lives_ok(format($$SELECT tokenvault.grant_user_tokens(%L, 'tap_trace_admin', 'read')$$, :'u'),
                'an administrator grants itself a user''s tokens');
SELECT is(tokenvault.get_user_token(:'u', 'bank', 'login'), :'user_secret', '  ... reads them');
SELECT ok(tokenvault.revoke_user_tokens(:'u', 'tap_trace_admin'), '  ... and revokes its grant');
SELECT throws_ok(format($$SELECT tokenvault.get_user_token(%L, 'bank', 'login')$$, :'u'), '42501', NULL,
                 '  ... which then reads nothing');
SELECT is((SELECT count(*) FROM tokenvault.user_token_grants g
            WHERE g.user_id = :'u' AND g.grantee = 'tap_trace_admin'::regrole AND g.privilege = 'read'
              AND g.granted_by = 'tap_trace_admin' AND g.revoked_by = 'tap_trace_admin' AND g.revoked_at IS NOT NULL),
          1::bigint, 'the grant stays in user_token_grants, marked revoked by whom and when');
SELECT is((SELECT array_agg(e.payload - 'user_id' - 'external_user_id' ORDER BY e.id) FROM tokenvault.events e
            WHERE e.kind LIKE 'user_tokens.%' AND e.payload->>'grantee' = 'tap_trace_admin'),
          ARRAY[jsonb_build_object('event', 'user_tokens.granted', 'grantee', 'tap_trace_admin', 'privilege', 'read',
                                   'related_id', NULL, 'by', 'tap_trace_admin'),
                jsonb_build_object('event', 'user_tokens.revoked', 'grantee', 'tap_trace_admin', 'privilege', 'read',
                                   'related_id', NULL, 'by', 'tap_trace_admin')],
          'the grant and the revoke are events, naming the grantee, the privilege and who');
SELECT ok(NOT tokenvault.revoke_user_tokens(:'u', 'tap_trace_admin'), 'a second revoke finds nothing live');
-- a grant given again, and one that replaces another
SELECT tokenvault.grant_user_tokens(:'u', 'tap_trace_admin', 'read');
SELECT tokenvault.grant_user_tokens(:'u', 'tap_trace_admin', 'write');
SELECT is((SELECT string_agg(format('%s:%s', g.privilege, g.revoked_at IS NULL), ',' ORDER BY g.revoked_at NULLS LAST, g.privilege)
             FROM tokenvault.user_token_grants g WHERE g.user_id = :'u' AND g.grantee = 'tap_trace_admin'::regrole),
          'read:f,read:f,write:t', 'a grant given again adds a row; one live grant per role and related id');
SELECT is((SELECT e.payload->>'replaces' FROM tokenvault.events e
            WHERE e.kind = 'user_tokens.granted' AND e.payload->>'grantee' = 'tap_trace_admin' ORDER BY e.id DESC LIMIT 1),
          'read', '  ... the event of a grant that replaces one says which');
SELECT throws_ok(format($$UPDATE tokenvault.user_token_grants SET revoked_at = NULL WHERE user_id = %L$$, :'u'), '42501', NULL,
                 'an administrator rewrites no history');
SELECT throws_ok(format($$DELETE FROM tokenvault.user_token_grants WHERE user_id = %L$$, :'u'), '42501', NULL,
                 '  ... nor deletes it');
RESET ROLE;
SELECT ok(NOT has_table_privilege('tokenvault_app', 'tokenvault.user_token_grants', 'INSERT, UPDATE, DELETE, TRUNCATE')
          AND NOT has_table_privilege('tokenvault_admin', 'tokenvault.user_token_grants', 'INSERT, UPDATE, DELETE, TRUNCATE'),
          'only the functions write the grants');
SELECT throws_ok(format($$INSERT INTO tokenvault.user_token_grants (user_id, grantee, privilege, granted_by)
                          VALUES (%L, 'tap_trace_admin', 'read', 'x')$$, :'u'), '23505', NULL,
                 'even the tables'' owner cannot add a second live grant');

-- nor does deleting the user take the history along
SET LOCAL ROLE tap_trace_admin;
SELECT tokenvault.delete_user(:'u');
RESET ROLE;
SELECT is((SELECT string_agg(format('%s:%s:%s', g.grantee, g.privilege, g.revoked_by), ',' ORDER BY g.grantee::text, g.created_at, g.revoked_at)
             FROM tokenvault.user_token_grants g WHERE g.user_id = :'u'),
          'tap_trace_admin:read:tap_trace_admin,tap_trace_admin:read:tap_trace_admin,tap_trace_admin:write:tap_trace_admin,tap_trace_app:write:tap_trace_admin',
          'deleting the user ends the live grants and keeps them all as history');
SELECT is((SELECT count(*) FROM tokenvault.events e
            WHERE e.kind = 'user_tokens.revoked' AND e.payload->>'reason' = 'user deleted' AND e.payload->>'user_id' = :'u'),
          2::bigint, '  ... each ended grant an event');

-- those events are the administrators'
SET LOCAL ROLE tap_trace_app;
SELECT is((SELECT count(*) FROM tokenvault.events WHERE kind LIKE 'client.%' OR kind LIKE 'user_tokens.%'), 0::bigint,
          'an application reads no event of clients or grants');
RESET ROLE;
SET LOCAL ROLE tap_trace_admin;
SELECT is((SELECT count(DISTINCT kind) FROM tokenvault.events WHERE kind LIKE 'client.%' OR kind LIKE 'user_tokens.%'), 3::bigint,
          '  ... an administrator reads them');
RESET ROLE;

SELECT is((SELECT count(*) FROM tokenvault.events WHERE payload::text ~ 'TVSECRET'), 0::bigint, 'no event holds a secret');

SELECT * FROM finish();
ROLLBACK;
