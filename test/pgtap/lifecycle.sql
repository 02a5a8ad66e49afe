-- Users, clients and auths: what each call leaves behind, and every bad
-- input refused with its errcode and nothing half-written.
BEGIN;
SELECT plan(68);

SELECT tokenvault.create_user('tap-life-1', 'First') AS u1 \gset
SELECT tokenvault.create_user('tap-life-2') AS u2 \gset
SELECT tokenvault.create_client('API', 'api', 'api_key') AS k \gset
SELECT tokenvault.create_client('Basic', 'ftp', 'basic') AS b \gset
SELECT tokenvault.create_client('Open', 'open', 'noauth') AS n \gset
SELECT tokenvault.create_client('Provider', 'provider', 'oauth2', jsonb_build_object(
           'client_id', 'tap', 'auth_url', 'https://provider.invalid/authorize',
           'token_url', 'https://provider.invalid/token', 'scopes', '["read", "write"]'::jsonb,
           'token_lifetime', 7200)) AS c \gset
SELECT tokenvault.create_client('Password', 'pw', 'oauth2', jsonb_build_object(
           'client_id', 'tap', 'grant', 'password', 'token_url', 'https://provider.invalid/token')) AS pw \gset
SELECT 'TVSECRET-at-' || md5(random()::text) AS at, 'TVSECRET-rt-' || md5(random()::text) AS rt \gset

-- Users
SELECT is(tokenvault.find_user('tap-life-1'), :'u1'::uuid, 'find_user() finds a user by external id');
SELECT is(tokenvault.find_user('TAP-LIFE-1'), NULL, 'external ids are matched case-sensitively');
SELECT throws_ok('SELECT tokenvault.create_user(''tap-life-1'')', '23505',
                 'user with external id "tap-life-1" already exists', 'a duplicate external_user_id is refused');
SELECT throws_ok('SELECT tokenvault.create_user(NULL)', '22004', 'external_user_id must not be null',
                 'a NULL external_user_id is refused');
SELECT throws_ok('SELECT tokenvault.create_user('''')', '22023', NULL, 'an empty external_user_id is refused');
SELECT throws_ok(format('SELECT tokenvault.create_user(%L)', repeat('x', 1025)), '22023', NULL,
                 'an external_user_id over 1024 characters is refused');
SELECT throws_ok('SELECT tokenvault.delete_user(''00000000-0000-0000-0000-000000000000'')', '42704', NULL,
                 'deleting an unknown user is an error');
SELECT throws_ok('SELECT * FROM tokenvault.user_auths(NULL)', '22004', 'user id must not be null',
                 'user_auths(NULL) is an error');

-- Imports
SELECT tokenvault.create_auth(:'u1', :'c', 'Mail', jsonb_build_object(
           'access_token', :'at', 'refresh_token', :'rt', 'expires_in', 3600,
           'token_type', 'bearer', 'scope', 'read write', 'id_token', 'TVSECRET-id-' || md5(random()::text),
           'refresh_token_expires_in', '86400')) AS a1 \gset
SELECT results_eq(format($q$SELECT name, service, scopes, status, token_type, version,
                                   expires_at BETWEEN now() + interval '3599 s' AND now() + interval '3601 s',
                                   refresh_expires_at BETWEEN now() + interval '86399 s' AND now() + interval '86401 s'
                              FROM tokenvault.auths WHERE id = %L$q$, :'a1'),
                  $$VALUES ('Mail', 'provider', '{read,write}'::text[], 'active', 'bearer', 1::bigint, true, true)$$,
                  'an import fills the plain columns, expiry from expires_in');
SELECT is(tokenvault.access_token(:'a1'), :'at', 'access_token() returns the imported token');
SELECT tokenvault.create_auth(:'u1', :'c', NULL, jsonb_build_object(
           'access_token', :'at', 'expires_at', '2100-01-01T00:00:00Z', 'expires_in', 60)) AS a2 \gset
SELECT results_eq(format('SELECT name, expires_at, scopes FROM tokenvault.auths WHERE id = %L', :'a2'),
                  $$VALUES ('Provider', '2100-01-01T00:00:00Z'::timestamptz, '{read,write}'::text[])$$,
                  'expires_at wins over expires_in; the name and scopes default to the client''s');
SELECT tokenvault.create_auth(:'u1', :'c', NULL, jsonb_build_object('access_token', :'at'), '{only}') AS a3 \gset
SELECT results_eq(format($q$SELECT expires_at BETWEEN now() + interval '7199 s' AND now() + interval '7201 s', scopes
                              FROM tokenvault.auths WHERE id = %L$q$, :'a3'),
                  $$VALUES (true, '{only}'::text[])$$,
                  'no expiry falls back to the client''s token_lifetime; scopes given win');
SELECT tokenvault.create_auth(:'u1', :'k', 'Key', jsonb_build_object('api_key', 'TVSECRET-k-' || md5(random()::text),
                                                                      'expires_at', 1895666400)) AS ak \gset
SELECT is((SELECT expires_at FROM tokenvault.auths WHERE id = :'ak'), to_timestamp(1895666400),
          'expires_at may be seconds since the epoch');

SELECT count(*) AS before_auths FROM tokenvault.auths \gset
SELECT count(*) AS before_users FROM tokenvault.users \gset
CREATE TEMP TABLE bad (sql text, errcode text, what text);
INSERT INTO bad VALUES
 (format('SELECT tokenvault.create_auth(NULL, %L)', :'k'), '22004', 'a NULL user id'),
 (format('SELECT tokenvault.create_auth(%L, NULL)', :'u1'), '22004', 'a NULL client id'),
 (format('SELECT tokenvault.create_auth(%L, %L)', gen_random_uuid(), :'k'), '42704', 'an unknown user'),
 (format('SELECT tokenvault.create_auth(%L, %L)', :'u1', gen_random_uuid()), '42704', 'an unknown client'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''"a string"'')', :'u1', :'k'), '22023', 'data that is not an object'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''[1]'')', :'u1', :'k'), '22023', 'data that is an array'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, jsonb_build_object(''api_key'', ''k'', ''extra'', repeat(''x'', 70000)))', :'u1', :'c'),
  '54000', 'data over the 64 kB cap'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"access_token": "t", "expires_in": -1}'')', :'u1', :'c'), '22023', 'a negative expires_in'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"access_token": "t", "expires_in": "soon"}'')', :'u1', :'c'), '22023', 'an expires_in that is not a number'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"access_token": "t", "expires_in": 1e12}'')', :'u1', :'c'), '22023', 'an expires_in over 100 years'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"access_token": "t", "expires_at": "someday"}'')', :'u1', :'c'), '22007', 'a malformed expires_at'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"access_token": "t", "expires_at": true}'')', :'u1', :'c'), '22007', 'a boolean expires_at'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"access_token": ""}'')', :'u1', :'c'), '22023', 'an empty access_token'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"access_token": 42}'')', :'u1', :'c'), '22023', 'an access_token that is not a string'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"expires_in": 60}'')', :'u1', :'c'), '22023', 'an authorization_code import without tokens'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"access_token": "t", "password": "p"}'')', :'u1', :'c'), '22023', 'a password on a non-password oauth2 client'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"username": "u"}'')', :'u1', :'pw'), '22023', 'a password-grant import without a password'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{}'')', :'u1', :'k'), '22023', 'an api_key import without api_key'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"api_key": "k", "access_token": "t"}'')', :'u1', :'k'), '22023', 'an access_token on an api_key client'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"username": "u"}'')', :'u1', :'b'), '22023', 'a basic import without a password'),
 (format('SELECT tokenvault.create_auth(%L, %L, NULL, ''{"api_key": "k"}'')', :'u1', :'n'), '22023', 'data for a noauth client'),
 (format('SELECT tokenvault.create_auth(%L, %L, '''', ''{"api_key": "k"}'')', :'u1', :'k'), '22023', 'an empty name');
SELECT throws_ok(sql, errcode, NULL, 'create_auth refuses ' || what) FROM bad ORDER BY what;
SELECT is((SELECT count(*) FROM tokenvault.auths), :before_auths::bigint, 'no failed import left an auth behind');
SELECT is((SELECT count(*) FROM tokenvault.users), :before_users::bigint, 'nor a user');

-- access_token() on what it cannot serve
SELECT tokenvault.create_auth(:'u1', :'c', NULL, jsonb_build_object('access_token', :'at', 'expires_in', 10)) AS soon \gset
-- issued an hour ago: 10 s is less than half its life, so min_validity (30 s) holds uncapped
UPDATE tokenvault.auths SET last_refreshed_at = now() - interval '1 hour' WHERE id = :'soon';
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'soon'), '55000', NULL,
                 'a token valid for less than min_validity is not returned');
SET LOCAL tokenvault.min_validity = 0;
SELECT is(tokenvault.access_token(:'soon'), :'at', 'with min_validity 0 it is');
RESET tokenvault.min_validity;
SELECT tokenvault.create_auth(:'u1', :'c', NULL, jsonb_build_object('access_token', :'at', 'expires_at', '2001-01-01')) AS gone \gset
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'gone'), '55000', NULL, 'an expired token is an error');
SELECT tokenvault.create_auth(:'u1', :'c', NULL, jsonb_build_object('refresh_token', :'rt')) AS rt_only \gset
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'rt_only'), '55000', NULL,
                 'an auth with only a refresh token has no access token yet');
SELECT tokenvault.create_auth(:'u1', :'b', NULL, '{"username": "u", "password": "p"}') AS basic \gset
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'basic'), '42809', NULL,
                 'a basic auth has no access token');
SELECT throws_ok('SELECT tokenvault.access_token(NULL)', '22004', NULL, 'access_token(NULL) is an error');
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', gen_random_uuid()), '42704', NULL,
                 'access_token() of an unknown auth is an error');

-- update_auth and delete_auth
SELECT 'TVSECRET-at2-' || md5(random()::text) AS at2 \gset
SELECT tokenvault.update_auth(:'a1', 'Renamed', jsonb_build_object('access_token', :'at2', 'expires_in', 600));
SELECT results_eq(format('SELECT name, version, tokenvault.access_token(id) = %L FROM tokenvault.auths WHERE id = %L', :'at2', :'a1'),
                  $$VALUES ('Renamed', 2::bigint, true)$$, 'update_auth() replaces the credential and bumps the version');
SELECT ok(NOT tokenvault.credentials(:'a1') ? 'refresh_token', 'the new data replaced the old whole');
SELECT throws_ok(format('SELECT tokenvault.update_auth(%L, NULL, ''{"access_token": "t", "expires_in": -5}'')', :'a1'),
                 '22023', NULL, 'update_auth() refuses bad data');
SELECT is(tokenvault.access_token(:'a1'), :'at2', 'and keeps the credential it had');
SELECT throws_ok(format('SELECT tokenvault.update_auth(%L, '''')', :'a1'), '22023', NULL, 'update_auth() refuses an empty name');
SELECT throws_ok(format('SELECT tokenvault.update_auth(%L)', gen_random_uuid()), '42704', NULL, 'update_auth() of an unknown auth');
SELECT throws_ok(format('SELECT tokenvault.delete_auth(%L, revoke => true)', :'a1'), '55000', NULL,
                 'revoking needs the client''s revoke_url, and deletes nothing without it');
SELECT tokenvault.delete_auth(:'a3');
SELECT is((SELECT count(*) FROM tokenvault.auths WHERE id IN (:'a1', :'a3')), 1::bigint,
          'delete_auth() removes that auth alone');

-- delete_user and delete_user_auths
SELECT tokenvault.create_auth(:'u2', :'k', NULL, jsonb_build_object('api_key', 'TVSECRET-u2-' || md5(random()::text))) AS other \gset
SELECT count(*) AS u1_auths FROM tokenvault.auths WHERE user_id = :'u1' \gset
SELECT is((SELECT count(*) FROM tokenvault.user_auths(:'u1')), :u1_auths::bigint, 'user_auths() lists a user''s auths');
SELECT tokenvault.delete_user(:'u1');
SELECT is((SELECT count(*) FROM tokenvault.auths WHERE user_id = :'u1'), 0::bigint, 'delete_user() removes the user''s auths');
SELECT is((SELECT count(*) FROM tokenvault.users WHERE id = :'u1'), 0::bigint, 'and the user');
SELECT is((SELECT count(*) FROM tokenvault.auths WHERE id = :'other'), 1::bigint, 'and leaves other users'' auths alone');
SELECT is(tokenvault.delete_user_auths(:'u2'), 1, 'delete_user_auths() counts what it deleted');
SELECT is((SELECT count(*) FROM tokenvault.users WHERE id = :'u2'), 1::bigint, 'and keeps the user');

-- Clients
SELECT throws_ok('SELECT tokenvault.create_client(''X'', ''x'', ''saml'')', '22023', 'unknown client type "saml"',
                 'an unknown client type is refused');
SELECT throws_ok('SELECT tokenvault.create_client(''X'', ''x'', ''oauth2'', ''{"client_id": "a", "client_secert": "b"}'')',
                 '22023', 'unknown client setting "client_secert"', 'a misspelt setting is refused');
SELECT throws_ok('SELECT tokenvault.create_client(''X'', ''x'', ''oauth2'', ''{"client_id": "a"}'')', '22023',
                 'an oauth2 client needs a token_url', 'an oauth2 client without a token_url is refused');
SELECT throws_ok('SELECT tokenvault.create_client(''X'', ''x'', ''oauth2'', ''{"client_id": "a", "token_url": "ftp://x"}'')',
                 '22023', NULL, 'a token_url that is not http(s) is refused');
SELECT throws_ok('SELECT tokenvault.create_client(NULL, ''x'', ''noauth'')', '22004', NULL, 'a NULL client name is refused');
SELECT throws_ok(format('SELECT tokenvault.update_client(%L, ''{"token_url": null}'')', :'c'), '22023', NULL,
                 'a token_url cannot be cleared');
SELECT tokenvault.create_auth(:'u2', :'k', NULL, jsonb_build_object('api_key', 'TVSECRET-u2-' || md5(random()::text))) AS again \gset
SELECT throws_ok(format('SELECT tokenvault.delete_client(%L)', :'k'), '2BP01', NULL,
                 'a client with auths cannot be deleted');
SELECT tokenvault.delete_client(:'k', force => true);
SELECT is((SELECT count(*) FROM tokenvault.auths WHERE client_id = :'k'), 0::bigint,
          'delete_client(force => true) deletes its auths with it');

-- the library reads columns by name and type: a table that differs is refused, not misread
SELECT tokenvault.create_auth(tokenvault.create_user('tap-life-shape'), tokenvault.create_client('Shape', 'shape', 'api_key'),
           NULL, jsonb_build_object('api_key', 'TVSECRET-ak-' || md5(random()::text))) AS shape \gset
SAVEPOINT shape;
DROP TRIGGER auths_schedule ON tokenvault.auths;  -- it names the column
ALTER TABLE tokenvault.auths ALTER COLUMN expires_at TYPE timestamp;
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'shape'), '55000',
                 'table tokenvault.auths has no column "expires_at" of type timestamp with time zone',
                 'a column of another type than the library reads is refused, not misread');
ROLLBACK TO SAVEPOINT shape;
SELECT ok(tokenvault.access_token(:'shape') LIKE 'TVSECRET-ak-%', '... and read again once it is as the library reads it');

SELECT * FROM finish();
ROLLBACK;
