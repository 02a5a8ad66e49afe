-- credentials() and http_headers(): the shapes an application sends on.
BEGIN;
SELECT plan(12);

SELECT tokenvault.create_user('tap-headers') AS u \gset
SELECT tokenvault.create_client('Provider', 'provider', 'oauth2', jsonb_build_object(
           'client_id', 'tap', 'auth_url', 'https://provider.invalid/authorize',
           'token_url', 'https://provider.invalid/token')) AS c \gset
SELECT tokenvault.create_client('API', 'api', 'api_key') AS k \gset
SELECT tokenvault.create_client('Custom API', 'custom', 'api_key',
           '{"api_key_header": "Authorization", "api_key_prefix": "Token"}') AS kc \gset
SELECT tokenvault.create_client('FTP', 'ftp', 'basic') AS b \gset
SELECT tokenvault.create_client('Open', 'open', 'noauth') AS n \gset
SELECT 'TVSECRET-at-' || md5(random()::text) AS at, 'TVSECRET-rt-' || md5(random()::text) AS rt,
       'TVSECRET-pw-ü€:' || md5(random()::text) || repeat('x', 80) AS pw \gset

SELECT tokenvault.create_auth(:'u', :'c', NULL, jsonb_build_object(
           'access_token', :'at', 'refresh_token', :'rt', 'expires_in', 3600,
           'scope', 'read write', 'provider_field', 42)) AS bearer \gset
SELECT is(tokenvault.http_headers(:'bearer'), jsonb_build_object('Authorization', 'Bearer ' || :'at'),
          'an oauth2 auth sends a Bearer header');
SELECT tokenvault.create_auth(:'u', :'c', NULL, jsonb_build_object(
           'access_token', :'at', 'token_type', 'bearer', 'expires_in', 3600)) AS lower \gset
SELECT is(tokenvault.http_headers(:'lower')->>'Authorization', 'Bearer ' || :'at',
          'a lower-case "bearer" from the provider is sent as "Bearer"');
SELECT tokenvault.create_auth(:'u', :'c', NULL, jsonb_build_object(
           'access_token', :'at', 'token_type', 'MAC', 'expires_in', 3600)) AS mac \gset
SELECT is(tokenvault.http_headers(:'mac')->>'Authorization', 'MAC ' || :'at',
          'another token type is sent as the provider named it');

SELECT tokenvault.create_auth(:'u', :'k', NULL, jsonb_build_object('api_key', :'at')) AS key \gset
SELECT is(tokenvault.http_headers(:'key'), jsonb_build_object('X-API-Key', :'at'),
          'an api_key auth sends X-API-Key by default');
SELECT tokenvault.create_auth(:'u', :'kc', NULL, jsonb_build_object('api_key', :'at')) AS custom \gset
SELECT is(tokenvault.http_headers(:'custom'), jsonb_build_object('Authorization', 'Token ' || :'at'),
          'or the client''s header, with its prefix');

SELECT tokenvault.create_auth(:'u', :'b', NULL, jsonb_build_object('username', 'ftp-user', 'password', :'pw')) AS basic \gset
SELECT is(convert_from(decode(substr(tokenvault.http_headers(:'basic')->>'Authorization', 7), 'base64'), 'UTF8'),
          'ftp-user:' || :'pw', 'a basic auth sends user:password in base64');
SELECT ok(tokenvault.http_headers(:'basic')->>'Authorization' ~ '^Basic [A-Za-z0-9+/]+=*$',
          'on one line, however long the password');
SELECT tokenvault.create_auth(:'u', :'n', NULL, '{}') AS open \gset
SELECT is(tokenvault.http_headers(:'open'), '{}'::jsonb, 'a noauth auth sends no header');

SELECT is(tokenvault.credentials(:'bearer') - 'expires_at',
          jsonb_build_object('access_token', :'at', 'refresh_token', :'rt', 'token_type', 'Bearer',
                             'scope', 'read write', 'provider_field', 42),
          'credentials() returns the opened secret with the plain fields');
SELECT is((tokenvault.credentials(:'bearer')->>'expires_at')::timestamptz,
          (SELECT expires_at FROM tokenvault.auths WHERE id = :'bearer'),
          'its expires_at is the plain column''s');
SELECT is(tokenvault.credentials(:'basic'), jsonb_build_object('username', 'ftp-user', 'password', :'pw'),
          'credentials() of a basic auth');

SELECT tokenvault.create_auth(:'u', :'c', NULL, jsonb_build_object('access_token', :'at', 'expires_in', 0)) AS dead \gset
SELECT throws_ok(format('SELECT tokenvault.http_headers(%L)', :'dead'), '55000', NULL,
                 'no header is made from an expired token');

SELECT * FROM finish();
ROLLBACK;
