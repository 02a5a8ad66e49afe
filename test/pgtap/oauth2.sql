-- The OAuth2 engine's SQL side, without a network: authorization states
-- and PKCE, quirk settings, and how a refresh verdict is applied.
BEGIN;
SELECT plan(41);

SELECT tokenvault.create_user('tap-oauth2') AS u \gset
SELECT tokenvault.create_client('Code', 'code', 'oauth2', jsonb_build_object(
           'client_id', 'tap client', 'client_secret', 'TVSECRET-cs-' || md5(random()::text),
           'auth_url', 'https://provider.invalid/authorize?tenant=x',
           'token_url', 'https://provider.invalid/token', 'scopes', '["read", "write"]'::jsonb,
           'extra_params', '{"authorize": {"access_type": "offline"}}'::jsonb)) AS c \gset

-- authorize_url(): PKCE S256 and a state
SELECT tokenvault.authorize_url(:'c', :'u', 'https://app.example/callback?x=1') AS url \gset
CREATE TEMP TABLE q AS
SELECT split_part(kv, '=', 1) AS k, split_part(kv, '=', 2) AS v
  FROM regexp_split_to_table(split_part(:'url', '?', 2), '&') kv;
SELECT ok(:'url' LIKE 'https://provider.invalid/authorize?tenant=x&%', 'the URL extends the client''s auth_url');
SELECT is((SELECT v FROM q WHERE k = 'response_type'), 'code', 'response_type=code');
SELECT is((SELECT v FROM q WHERE k = 'client_id'), 'tap%20client', 'client_id, percent-encoded');
SELECT is((SELECT v FROM q WHERE k = 'redirect_uri'), 'https%3A%2F%2Fapp.example%2Fcallback%3Fx%3D1', 'redirect_uri, percent-encoded');
SELECT is((SELECT v FROM q WHERE k = 'scope'), 'read%20write', 'the client''s scopes, space separated');
SELECT is((SELECT v FROM q WHERE k = 'code_challenge_method'), 'S256', 'PKCE with S256');
SELECT is((SELECT v FROM q WHERE k = 'access_type'), 'offline', 'extra authorize parameters are added');
SELECT (SELECT v FROM q WHERE k = 'state') AS state, (SELECT v FROM q WHERE k = 'code_challenge') AS challenge \gset
SELECT ok(length(:'state') >= 32 AND :'state' ~ '^[A-Za-z0-9_-]+$', 'the state is long and URL-safe');
SELECT is((SELECT rtrim(translate(encode(sha256(convert_to(
                  tokenvault._open_state(verifier, state), 'UTF8')), 'base64'), E'+/\n', '-_'), '=')
             FROM tokenvault.auth_states WHERE state = :'state'),
          :'challenge', 'the challenge is the S256 of the verifier kept, sealed, with the state');
SELECT ok((SELECT expires_at BETWEEN now() + interval '599 s' AND now() + interval '601 s'
             FROM tokenvault.auth_states WHERE state = :'state'), 'a state lasts ten minutes');
SELECT isnt((SELECT v FROM q WHERE k = 'state'),
            (SELECT split_part(split_part(tokenvault.authorize_url(:'c', :'u', 'https://app.example/cb'), 'state=', 2), '&', 1)),
            'every authorization gets its own state');
SELECT tokenvault.update_client(:'c', '{"pkce": false, "scope_separator": ","}');
SELECT tokenvault.authorize_url(:'c', :'u', 'https://app.example/cb', scopes => '{a,b}') AS url2 \gset
SELECT ok(:'url2' NOT LIKE '%code_challenge%', 'pkce false leaves PKCE out');
SELECT ok(:'url2' LIKE '%scope=a%2Cb%', 'scope_separator "," joins scopes with a comma; scopes given win');

SELECT throws_ok(format('SELECT tokenvault.authorize_url(%L, %L, ''not a url'')', :'c', :'u'), '22023', NULL,
                 'a redirect_uri must be an absolute URL');
SELECT tokenvault.create_client('CC', 'cc', 'oauth2', '{"grant": "client_credentials", "client_id": "a",
           "token_url": "https://provider.invalid/token"}') AS cc \gset
SELECT throws_ok(format('SELECT tokenvault.authorize_url(%L, %L, ''https://app/cb'')', :'cc', :'u'), '42809', NULL,
                 'a client_credentials client has no authorize step');

-- complete_authorization(): states are single-use and expire
SELECT throws_ok('SELECT tokenvault.complete_authorization(''no-such-state'', ''code'')', '22023',
                 'unknown or already used authorization state', 'an unknown state is refused');
UPDATE tokenvault.auth_states SET expires_at = now() - interval '1 s' WHERE state = :'state';
SELECT throws_ok(format('SELECT tokenvault.complete_authorization(%L, ''code'')', :'state'), '22023', NULL,
                 'an expired state is refused');
SELECT throws_ok('SELECT tokenvault.complete_authorization(NULL, ''code'')', '22004', NULL, 'a NULL state is refused');

-- quirk settings
SELECT throws_ok(format('SELECT tokenvault.update_client(%L, ''{"body_format": "xml"}'')', :'c'), '22023', NULL,
                 'body_format is form or json');
SELECT throws_ok(format('SELECT tokenvault.update_client(%L, ''{"expires_in_unit": "hours"}'')', :'c'), '22023', NULL,
                 'expires_in_unit is seconds or milliseconds');
SELECT throws_ok(format('SELECT tokenvault.update_client(%L, ''{"extra_params": {"tokens": {}}}'')', :'c'), '22023', NULL,
                 'extra_params keys are authorize, token and refresh');
SELECT throws_ok(format('SELECT tokenvault.update_client(%L, ''{"pkce": "yes"}'')', :'c'), '22023', NULL,
                 'pkce is a boolean');
-- (a refresh URL on another host takes the client secret again)
SELECT tokenvault.update_client(:'c', '{"body_format": "json", "token_path": "authed_user",
    "expires_in_unit": "milliseconds", "refresh_url": "https://{subdomain}.provider.invalid/refresh",
    "allowed_hosts": ["provider.invalid", "*.provider.invalid"]}'::jsonb
    || jsonb_build_object('client_secret', 'TVSECRET-cs-' || md5(random()::text)));
SELECT results_eq(format('SELECT body_format, token_path, expires_in_unit, refresh_url FROM tokenvault.clients WHERE id = %L', :'c'),
                  $$VALUES ('json', 'authed_user', 'milliseconds', 'https://{subdomain}.provider.invalid/refresh')$$,
                  'quirks are stored as client columns');
SELECT tokenvault.update_client(:'c', '{"token_path": null, "expires_in_unit": null}');
SELECT results_eq(format('SELECT token_path, expires_in_unit FROM tokenvault.clients WHERE id = %L', :'c'),
                  $$VALUES (NULL::text, 'seconds')$$, 'a quirk set to null goes back to its default');

-- a token from a provider, normalized
SELECT is(tokenvault._normalize_token((SELECT cl FROM tokenvault.clients cl WHERE cl.id = :'c'), '{"access_token": "t", "expires_in": "3600"}'),
          '{"access_token": "t", "expires_in": 3600}', 'expires_in as a string becomes a number');
UPDATE tokenvault.clients SET expires_in_unit = 'milliseconds' WHERE id = :'c';
SELECT is(tokenvault._normalize_token((SELECT cl FROM tokenvault.clients cl WHERE cl.id = :'c'), '{"access_token": "t", "expires_in": 3600000}'),
          '{"access_token": "t", "expires_in": 3600}', 'expires_in in milliseconds becomes seconds');
SELECT is(tokenvault._normalize_token((SELECT cl FROM tokenvault.clients cl WHERE cl.id = :'c'), '{"access_token": "t", "expires_in": "soon", "refresh_token": ""}'),
          '{"access_token": "t"}', 'an unusable expires_in and an empty refresh token are dropped');

-- applying a refresh verdict
-- verdicts as oauth2.c makes them
CREATE FUNCTION pg_temp.done(token jsonb) RETURNS tokenvault.verdict LANGUAGE sql AS
    $$ SELECT ROW('done', 200, NULL, NULL, NULL, token)::tokenvault.verdict $$;
CREATE FUNCTION pg_temp.failed(outcome text, message text, error text DEFAULT NULL) RETURNS tokenvault.verdict
    LANGUAGE sql AS $$ SELECT ROW(outcome::tokenvault.outcome, 0, error, message, NULL, NULL)::tokenvault.verdict $$;
SELECT 'TVSECRET-at-' || md5(random()::text) AS at1, 'TVSECRET-rt-' || md5(random()::text) AS rt1,
       'TVSECRET-at-' || md5(random()::text) AS at2, 'TVSECRET-rt-' || md5(random()::text) AS rt2 \gset
UPDATE tokenvault.clients SET expires_in_unit = 'seconds', token_path = NULL WHERE id = :'c';
SELECT tokenvault.create_auth(:'u', :'c', NULL, jsonb_build_object('access_token', :'at1', 'refresh_token', :'rt1',
           'expires_in', 10, 'instance_url', 'https://eu.example', 'subdomain', 'eu')) AS a \gset
-- issued an hour ago: with 10 s left it is past half its life, so min_validity is not capped
UPDATE tokenvault.auths SET last_refreshed_at = now() - interval '1 hour' WHERE id = :'a';
SELECT tokenvault.create_auth(:'u', :'c', NULL, jsonb_build_object('access_token', :'at2', 'refresh_token', :'rt2',
           'expires_in', 3600, 'subdomain', 'eu')) AS fresh \gset
SELECT is((tokenvault._refresh_plan(:'a', false, 30)).params,
          jsonb_build_object('grant_type', 'refresh_token', 'refresh_token', :'rt1'),
          'a token about to expire plans a refresh_token grant');
SELECT is((tokenvault._refresh_plan(:'a', false, 5)).outcome, 'done', 'one valid for long enough needs none');
SELECT is((tokenvault._refresh_plan(:'fresh', false, 86400)).outcome, 'done',
          'one valid for half its life needs none, whatever min_validity asks');
SELECT is((tokenvault._refresh_plan(:'a', false, 30)).config#>>'{template_values,instance_url}', 'https://eu.example',
          'the auth''s fields fill URL templates');
SELECT is((SELECT outcome || ': ' || message FROM tokenvault._refresh_apply(:'a', 7, NULL, pg_temp.done('{"access_token": "x"}'))),
          'done: the auth was changed meanwhile', 'a verdict for an older version is not applied');
SELECT is((SELECT outcome || coalesce(': ' || message, '')
             FROM tokenvault._refresh_apply(:'a', 1, (tokenvault._refresh_plan(:'a', true, 30)).keep,
                      pg_temp.done(jsonb_build_object('access_token', :'at2', 'expires_in', 3600, 'token_type', 'bearer')))),
          'done', 'a verdict for the current version is applied');
SELECT results_eq(format($q$SELECT version, status, expires_at > now() + interval '59 min', last_refreshed_at IS NOT NULL,
                                   tokenvault.credentials(id)->>'access_token' = %L,
                                   tokenvault.credentials(id)->>'refresh_token' = %L,
                                   tokenvault.credentials(id)->>'instance_url'
                              FROM tokenvault.auths WHERE id = %L$q$, :'at2', :'rt1', :'a'),
                  $$VALUES (2::bigint, 'active', true, true, true, true, 'https://eu.example')$$,
                  'the new token is stored; an omitted refresh token keeps the old one; other fields stay');
SELECT tokenvault._refresh_apply(:'a', 2, NULL,
           pg_temp.done(jsonb_build_object('access_token', :'at1', 'refresh_token', :'rt2', 'expires_in', 60))) AS applied \gset
SELECT is(tokenvault.credentials(:'a')->>'refresh_token', :'rt2', 'a rotated refresh token replaces the old one');
SELECT is((tokenvault._refresh_apply(:'a', 3, NULL, pg_temp.failed('retryable', 'the provider answered HTTP 503'))).outcome,
          'retryable', 'a retryable failure is reported');
SELECT results_eq(format('SELECT status, failure_count, last_error, tokenvault.credentials(id)->>''access_token'' = %L FROM tokenvault.auths WHERE id = %L', :'at1', :'a'),
                  $$VALUES ('active', 1, 'the provider answered HTTP 503', true)$$,
                  'and keeps the token, counting the failure');
SELECT tokenvault._refresh_apply(:'a', 3, NULL, pg_temp.failed('needs_reauth', 'the provider refused the request: invalid_grant', 'invalid_grant')) AS applied \gset
SELECT is((SELECT status FROM tokenvault.auths WHERE id = :'a'), 'needs_reauth', 'invalid_grant marks the auth needs_reauth');

SELECT tokenvault.create_auth(:'u', :'c', NULL, jsonb_build_object('access_token', :'at1', 'expires_in', 1, 'subdomain', 'eu')) AS noref \gset
UPDATE tokenvault.auths SET last_refreshed_at = now() - interval '1 hour' WHERE id = :'noref';
SELECT is((tokenvault._refresh_plan(:'noref', false, 30)).outcome, 'needs_reauth',
          'an expiring token with no refresh token cannot be refreshed');

-- The refresher commits on its own and would wait for this transaction's
-- row lock while this transaction waits for it: refused at once instead.
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'noref'), '55000',
                 format('auth %s cannot be refreshed in a transaction that changed or locked it', :'noref'),
                 'access_token refuses to refresh an auth this transaction wrote');
SELECT throws_ok(format('SELECT tokenvault.refresh_auth(%L)', :'a'), '55000', NULL,
                 'so does refresh_auth');

SELECT * FROM finish();
ROLLBACK;
