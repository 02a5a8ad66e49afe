-- Encryption at rest: what is stored, and what it takes to open it.
BEGIN;
SELECT plan(23);

-- a key ring of its own, so this file does not depend on the others
SELECT set_config('tokenvault.key_file', regexp_replace(current_setting('tokenvault.key_file'), '[^/]*$', '')
                  || 'tap-crypto-' || md5(random()::text), true) AS ring \gset
SELECT tokenvault.create_key_file() AS first_key \gset

CREATE TEMP TABLE made (n int, access_token text, refresh_token text, extra text);
INSERT INTO made
SELECT g, 'TVSECRET-at-' || md5(random()::text), 'TVSECRET-rt-' || md5(random()::text),
       'TVSECRET-x-' || md5(random()::text)
  FROM generate_series(1, 20) g;
SELECT 'TVSECRET-cs-' || md5(random()::text) AS client_secret \gset

SELECT tokenvault.create_user('tap-crypto-user') AS u \gset
SELECT tokenvault.create_client('Provider', 'provider', 'oauth2', jsonb_build_object(
           'client_id', 'tap-client', 'client_secret', :'client_secret',
           'auth_url', 'https://provider.invalid/authorize',
           'token_url', 'https://provider.invalid/token')) AS c \gset
SELECT tokenvault.create_client('API', 'api', 'api_key') AS k \gset

CREATE TEMP TABLE made_auths AS
SELECT m.*, tokenvault.create_auth(:'u', :'c', 'auth ' || m.n, jsonb_build_object(
           'access_token', m.access_token, 'refresh_token', m.refresh_token,
           'expires_in', 3600, 'provider_extra', m.extra)) AS id
  FROM made m;

-- What is stored
SELECT is((SELECT count(*) FROM tokenvault.auths a, made m
            WHERE position(convert_to(m.access_token, 'UTF8') IN a.secret) > 0
               OR position(convert_to(m.refresh_token, 'UTF8') IN a.secret) > 0
               OR position(convert_to(m.extra, 'UTF8') IN a.secret) > 0),
          0::bigint, 'no stored auth secret contains any token''s bytes');
SELECT is((SELECT count(*) FROM tokenvault.clients
            WHERE position(convert_to(:'client_secret', 'UTF8') IN secret) > 0),
          0::bigint, 'the stored client secret does not contain the client secret''s bytes');
SELECT is((SELECT count(*) FROM tokenvault.auths a, made m
            WHERE position(convert_to(substr(m.access_token, 13, 8), 'UTF8') IN a.secret) > 0),
          0::bigint, 'not even 8 bytes of a token appear in a stored secret');
SELECT is((SELECT count(DISTINCT get_byte(secret, 0)) || '/' || min(get_byte(secret, 0))
             FROM tokenvault.auths),
          '1/2', 'every sealed secret starts with format version 2');
SELECT is((SELECT count(*) FROM tokenvault.auths
            WHERE tokenvault._key_id(secret) <> (SELECT key_id FROM tokenvault.key_ring() WHERE newest)),
          0::bigint, 'every secret names the newest key as the one that sealed it');
SELECT is((SELECT count(DISTINCT substr(secret, 10, 12)) FROM tokenvault.auths),
          (SELECT count(*) FROM tokenvault.auths), 'every secret has its own nonce');

SELECT tokenvault.create_auth(:'u', :'k', 'same 1', jsonb_build_object('api_key', access_token)) AS same1,
       tokenvault.create_auth(:'u', :'k', 'same 2', jsonb_build_object('api_key', access_token)) AS same2
  FROM made WHERE n = 1 \gset
SELECT isnt((SELECT secret FROM tokenvault.auths WHERE id = :'same1'),
            (SELECT secret FROM tokenvault.auths WHERE id = :'same2'),
            'the same token sealed twice gives two different ciphertexts');

-- Round trips
SELECT is((SELECT count(*) FROM made_auths WHERE tokenvault.access_token(id) = access_token),
          20::bigint, 'every access token opens to what was imported');
SELECT is((SELECT count(*) FROM made_auths m
            WHERE tokenvault.credentials(m.id)->>'refresh_token' = m.refresh_token
              AND tokenvault.credentials(m.id)->>'provider_extra' = m.extra),
          20::bigint, 'refresh tokens and extra provider fields open too');

SELECT 'TVSECRET-ü€😀-' || md5(random()::text) AS odd \gset
SELECT tokenvault.create_auth(:'u', :'k', 'odd', jsonb_build_object('api_key', :'odd')) AS odd_id \gset
SELECT is(tokenvault.access_token(:'odd_id'), :'odd', 'a token outside ASCII comes back byte for byte');

SELECT tokenvault.create_auth(:'u', :'c', 'big', jsonb_build_object(
           'access_token', 'TVSECRET-big-' || md5(random()::text),
           'id_token', repeat(md5(random()::text), 1800))) AS big \gset
SELECT is(length(tokenvault.credentials(:'big')->>'id_token'), 57600,
          'a credential near the 64 kB cap seals and opens whole');

-- A ciphertext is bound to its row and to its bytes
SELECT id AS a1, access_token AS t1 FROM made_auths WHERE n = 1 \gset
SELECT id AS a2 FROM made_auths WHERE n = 2 \gset
UPDATE tokenvault.auths SET secret = (SELECT secret FROM tokenvault.auths WHERE id = :'a2') WHERE id = :'a1';
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'a1'), 'XX001', NULL,
                 'a secret copied onto another auth does not open');
SELECT throws_ok(format('SELECT tokenvault.credentials(%L)', :'a1'), 'XX001', NULL,
                 'nor does credentials() open it');

UPDATE tokenvault.auths SET secret = (SELECT secret FROM tokenvault.clients WHERE id = :'c') WHERE id = :'a1';
SELECT throws_ok(format('SELECT tokenvault.credentials(%L)', :'a1'), 'XX001', NULL,
                 'a client''s secret copied onto an auth does not open');

-- flip one bit in each part of a good ciphertext
CREATE TEMP TABLE good AS SELECT secret FROM tokenvault.auths WHERE id = :'a2';
CREATE FUNCTION pg_temp.flip(b bytea, byte int) RETURNS bytea LANGUAGE sql
    AS $$ SELECT set_byte(b, byte, get_byte(b, byte) # 1) $$;
UPDATE tokenvault.auths SET secret = pg_temp.flip((SELECT secret FROM good), 10) WHERE id = :'a2';
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'a2'), 'XX001', NULL,
                 'a flipped bit in the nonce is detected');
UPDATE tokenvault.auths SET secret = pg_temp.flip((SELECT secret FROM good), 25) WHERE id = :'a2';
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'a2'), 'XX001', NULL,
                 'a flipped bit in the ciphertext is detected');
UPDATE tokenvault.auths SET secret = pg_temp.flip((SELECT secret FROM good), length((SELECT secret FROM good)) - 1)
 WHERE id = :'a2';
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'a2'), 'XX001', NULL,
                 'a flipped bit in the tag is detected');
UPDATE tokenvault.auths SET secret = substr((SELECT secret FROM good), 1, 30) WHERE id = :'a2';
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'a2'), 'XX001',
                 'sealed secret is too short to be valid', 'a truncated secret is refused');
UPDATE tokenvault.auths SET secret = set_byte((SELECT secret FROM good), 0, 3) WHERE id = :'a2';
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'a2'), 'XX001',
                 'sealed secret has unknown format version 3', 'an unknown format version is refused');
UPDATE tokenvault.auths SET secret = pg_temp.flip((SELECT secret FROM good), 4) WHERE id = :'a2';
SELECT throws_like(format('SELECT tokenvault.access_token(%L)', :'a2'),
                   'key % needed to open this secret is not in the key ring',
                   'a changed key id asks for a key the ring does not have');
UPDATE tokenvault.auths SET secret = (SELECT secret FROM good) WHERE id = :'a2';
SELECT isnt(tokenvault.access_token(:'a2'), NULL, 'the untouched ciphertext still opens');

-- a ring holding another key under the right id: a key mismatch, not a moved secret
SELECT key_id AS sealing_key FROM tokenvault.key_ring() WHERE newest \gset
SELECT set_config('tokenvault.key_command', format('echo %s %s', :sealing_key, repeat('0', 64)), true) AS wrong \gset
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', :'a2'), '55000',
                 format('key %s in the key ring is not the key that sealed this secret', :sealing_key),
                 'another key under the sealing key''s id is reported as a key mismatch (key check value)');
SELECT set_config('tokenvault.key_command', '', true) AS right_again \gset
SELECT isnt(tokenvault.access_token(:'a2'), NULL, 'with the right ring it opens again');

SELECT * FROM finish();
ROLLBACK;
