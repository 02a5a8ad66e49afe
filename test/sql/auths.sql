-- Auths: credentials imported for a user, sealed, and handed back on demand.
\set SHOW_CONTEXT never
-- Secrets are made up here and compared, never printed.
SELECT 'TVSECRET-at-' || md5(random()::text) AS access,
       'TVSECRET-rt-' || md5(random()::text) AS refresh,
       'TVSECRET-key-' || md5(random()::text) AS apikey,
       'TVSECRET-pw-' || md5(random()::text) AS password \gset

SELECT tokenvault.create_user('user-2001', 'Grace') AS grace \gset
SELECT tokenvault.create_client('GitHub', 'github', 'oauth2', '{"client_id": "gh", "auth_url": "https://github.com/login/oauth/authorize", "token_url": "https://github.com/login/oauth/access_token", "scopes": ["repo"]}') AS github \gset
SELECT tokenvault.create_client('Stripe', 'stripe', 'api_key', '{"api_key_header": "Authorization", "api_key_prefix": "Bearer"}') AS stripe \gset
SELECT tokenvault.create_client('Mailgun', 'mailgun', 'api_key') AS mailgun \gset
SELECT tokenvault.create_client('FTP', 'ftp', 'basic') AS ftp \gset
SELECT tokenvault.create_client('Weather', 'weather', 'noauth') AS weather \gset

-- import an OAuth2 token response as a provider sends it
SELECT tokenvault.create_auth(:'grace', :'github', 'Grace''s GitHub', jsonb_build_object(
    'access_token', :'access', 'refresh_token', :'refresh', 'token_type', 'bearer',
    'expires_in', '3600', 'scope', 'repo read:user', 'instance_url', 'https://api.example.com')) AS gh \gset
SELECT tokenvault.create_auth(:'grace', :'stripe', NULL, jsonb_build_object('api_key', :'apikey')) AS st \gset
SELECT tokenvault.create_auth(:'grace', :'mailgun', NULL, jsonb_build_object('api_key', :'apikey')) AS mg \gset
SELECT tokenvault.create_auth(:'grace', :'ftp', 'Company FTP', jsonb_build_object('username', 'grace', 'password', :'password')) AS ftp_auth \gset
SELECT tokenvault.create_auth(:'grace', :'weather') AS wx \gset

SELECT name, service, scopes, status, expires_at IS NOT NULL AS expires
  FROM tokenvault.user_auths(:'grace') ORDER BY name;
SELECT token_type, expires_at BETWEEN now() + interval '59 minutes' AND now() + interval '61 minutes' AS expires_in_an_hour
  FROM tokenvault.auths WHERE id = :'gh';

-- the token comes back; the credential holds the secret and the plain fields
SELECT tokenvault.access_token(:'gh') = :'access' AS access_token_ok;
SELECT tokenvault.access_token(:'st') = :'apikey' AS api_key_ok;
SELECT c->>'access_token' = :'access' AS access_ok, c->>'refresh_token' = :'refresh' AS refresh_ok,
       c - 'access_token' - 'refresh_token' - 'expires_at' AS rest
  FROM tokenvault.credentials(:'gh') c;
SELECT tokenvault.credentials(:'wx') AS noauth_credentials;

-- headers ready to send
SELECT tokenvault.http_headers(:'gh') = jsonb_build_object('Authorization', 'Bearer ' || :'access') AS bearer_ok;
SELECT tokenvault.http_headers(:'st') = jsonb_build_object('Authorization', 'Bearer ' || :'apikey') AS stripe_ok;
SELECT tokenvault.http_headers(:'mg') = jsonb_build_object('X-API-Key', :'apikey') AS mailgun_ok;
SELECT convert_from(decode(substr(tokenvault.http_headers(:'ftp_auth')->>'Authorization', 7), 'base64'), 'UTF8')
       = 'grace:' || :'password' AS basic_ok;
SELECT tokenvault.http_headers(:'wx') AS noauth_headers;

-- basic and noauth auths have no token to hand out
SELECT try(format('SELECT tokenvault.access_token(%L)', :'ftp_auth'));

-- an expired token is refused, naming the auth's state, not the token
SELECT tokenvault.create_auth(:'grace', :'github', 'old', jsonb_build_object(
    'access_token', :'access', 'expires_at', '2001-01-01T00:00:00Z')) AS old \gset
SELECT try(format('SELECT tokenvault.access_token(%L)', :'old'));
-- tokenvault.min_validity decides how much life a token must have left
SELECT tokenvault.update_auth(:'old', data => jsonb_build_object('access_token', :'access', 'expires_in', 20));
SELECT try(format('SELECT tokenvault.access_token(%L)', :'old'));
SET tokenvault.min_validity = '5s';
SELECT tokenvault.access_token(:'old') = :'access' AS valid_for_5s;
RESET tokenvault.min_validity;

-- update_auth: new data replaces the credential and bumps the version
SELECT version AS v0 FROM tokenvault.auths WHERE id = :'gh' \gset
SELECT tokenvault.update_auth(:'gh', 'Renamed', jsonb_build_object('access_token', :'refresh'));
SELECT name, version = :v0 + 1 AS version_bumped, expires_at IS NULL AS no_expiry_given
  FROM tokenvault.auths WHERE id = :'gh';
SELECT tokenvault.access_token(:'gh') = :'refresh' AS replaced;

-- data that does not fit the client, malformed or oversized data
SELECT tokenvault.create_auth(:'grace', :'ftp', NULL, '{"username": "x"}');
SELECT tokenvault.create_auth(:'grace', :'ftp', NULL, jsonb_build_object('username', 'x', 'password', 'y', 'api_key', 'z'));
SELECT tokenvault.create_auth(:'grace', :'weather', NULL, '{"token": "x"}');
SELECT tokenvault.create_auth(:'grace', :'github', NULL, '{"expires_in": 60}');
SELECT tokenvault.create_auth(:'grace', :'github', NULL, '{"access_token": "x", "password": "y"}');
SELECT tokenvault.create_auth(:'grace', :'github', NULL, '{"access_token": 42}');
SELECT tokenvault.create_auth(:'grace', :'github', NULL, '{"access_token": "x", "expires_in": -1}');
SELECT tokenvault.create_auth(:'grace', :'github', NULL, '{"access_token": "x", "expires_in": "soon"}');
SELECT tokenvault.create_auth(:'grace', :'github', NULL, '{"access_token": "x", "expires_at": "yesterday-ish"}');
SELECT tokenvault.create_auth(:'grace', :'github', NULL, '"x"');
SELECT tokenvault.create_auth(:'grace', :'github', NULL, jsonb_build_object('access_token', 'x', 'blob', repeat(md5(random()::text), 4000)));
SELECT tokenvault.create_auth(:'grace', :'github', '', '{"access_token": "x"}');
SELECT tokenvault.create_auth(NULL, :'github', NULL, '{"access_token": "x"}');
SELECT tokenvault.create_auth(:'grace', '00000000-0000-0000-0000-000000000001', NULL, '{"access_token": "x"}');
SELECT tokenvault.access_token('00000000-0000-0000-0000-000000000001');
SELECT tokenvault.access_token(NULL);
SELECT try(format('SELECT tokenvault.delete_auth(%L, revoke => true)', :'gh'));
SELECT count(*) AS auths_after_failures FROM tokenvault.auths;

-- deleting
SELECT tokenvault.delete_auth(:'wx');
SELECT try(format('SELECT tokenvault.delete_auth(%L)', :'wx'));
SELECT try(format('SELECT tokenvault.delete_client(%L)', :'ftp'));
SELECT tokenvault.delete_user_auths(:'grace') AS deleted;
SELECT count(*) FROM tokenvault.user_auths(:'grace');
SELECT tokenvault.delete_user(:'grace');
DELETE FROM tokenvault.clients;
