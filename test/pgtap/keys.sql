-- The key ring: where keys come from, rotation, and what happens without them.
BEGIN;
SELECT plan(32);

-- a key file of its own, beside the cluster's, outside the data directory
SELECT regexp_replace(current_setting('tokenvault.key_file'), '[^/]*$', '') || 'tap-keys-' || md5(random()::text) AS ring \gset
SELECT set_config('tokenvault.key_file', :'ring', true) AS ring_set \gset

-- A shell command run by the server, from its data directory.
CREATE TEMP TABLE sh_out (line text);
CREATE FUNCTION pg_temp.sh(command text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE sh_out;
    EXECUTE format('COPY sh_out FROM PROGRAM %L', command);
    RETURN (SELECT string_agg(line, E'\n') FROM sh_out);
END
$$;

-- The key file is made by create_key_file() alone, readable by the server alone
SELECT is(pg_temp.sh(format('test -e %s && echo present || echo absent', :'ring')), 'absent',
          'no key file before first use');
SELECT throws_ok('SELECT * FROM tokenvault.key_ring()', '58P01', format('key file "%s" does not exist', :'ring'),
                 'a missing key file is an error naming it');
SELECT is(pg_temp.sh(format('test -e %s && echo present || echo absent', :'ring')), 'absent',
          '... and is not created behind our back');
SELECT cmp_ok(tokenvault.create_key_file(), '>', 0::bigint, 'create_key_file() makes the first ring');
SELECT is((SELECT count(*) FROM tokenvault.key_ring() WHERE newest), 1::bigint,
          'a ring with one key, the newest');
SELECT throws_ok('SELECT tokenvault.create_key_file()', '42710', format('key file "%s" already exists', :'ring'),
                 'an existing key file is never overwritten');
SELECT is(pg_temp.sh(format('stat -c %%a %s', :'ring')), '600', 'the new key file has mode 0600');
SELECT is(pg_temp.sh(format('grep -c "^[0-9]" %s', :'ring')), '1', 'it holds one key line');

SELECT key_id AS old_key FROM tokenvault.key_ring() \gset
SELECT throws_ok(format('SELECT tokenvault.drop_key(%s)', :old_key), '55000',
                 'cannot drop the only key in the key ring', 'the only key cannot be dropped');

-- Secrets under the first key: more than one rotation batch of them
SELECT tokenvault.create_user('tap-keys-user') AS u \gset
SELECT tokenvault.create_client('API', 'api', 'api_key') AS k \gset
SELECT tokenvault.create_client('Provider', 'provider', 'oauth2', jsonb_build_object(
           'client_id', 'tap', 'client_secret', 'TVSECRET-cs-' || md5(random()::text),
           'grant', 'client_credentials', 'token_url', 'https://provider.invalid/token')) AS c \gset
CREATE TEMP TABLE made AS
SELECT t.token, tokenvault.create_auth(:'u', :'k', NULL, jsonb_build_object('api_key', t.token)) AS id
  FROM (SELECT 'TVSECRET-key-' || md5(random()::text) AS token FROM generate_series(1, 2100)) t;

SELECT tokenvault.add_key() AS new_key \gset
SELECT isnt(:new_key::bigint, :old_key::bigint, 'add_key() makes a key with a new id');
SELECT results_eq('SELECT key_id, newest FROM tokenvault.key_ring() ORDER BY newest',
                  format('VALUES (%s::bigint, false), (%s::bigint, true)', :old_key, :new_key),
                  'the added key is the newest; the old one stays to open');
SELECT is(pg_temp.sh(format('stat -c %%a %s', :'ring')), '600', 'the rewritten key file keeps mode 0600');
SELECT tokenvault.create_auth(:'u', :'k', 'after add', jsonb_build_object('api_key', 'TVSECRET-new-' || md5(random()::text))) AS after_add \gset
SELECT is(tokenvault._key_id(secret), :new_key::bigint, 'new secrets are sealed with the newest key')
  FROM tokenvault.auths WHERE id = :'after_add';
SELECT is((SELECT count(*) FROM made WHERE tokenvault.access_token(id) = token), 2100::bigint,
          'secrets under the older key still open');
SELECT throws_ok(format('SELECT tokenvault.drop_key(%s)', :old_key), '2BP01',
                 format('key %s still seals 2101 secret(s)', :old_key),
                 'a key that still seals secrets cannot be dropped');

-- Rotation
SELECT is(tokenvault.rotate_key(), 2101::bigint, 'rotate_key() re-seals every secret under the old key and counts them');
SELECT results_eq('SELECT key_id, secrets FROM tokenvault.key_usage() ORDER BY newest',
                  format('VALUES (%s::bigint, 0::bigint), (%s::bigint, 2102::bigint)', :old_key, :new_key),
                  'afterwards the old key seals nothing');
SELECT is(tokenvault.rotate_key(), 0::bigint, 'a second rotation has nothing to do');
SELECT lives_ok(format('SELECT tokenvault.drop_key(%s)', :old_key), 'the old key can then be dropped');
SELECT is(pg_temp.sh(format('grep -c "^%s " %s || true', :old_key, :'ring')), '0',
          'its line is gone from the key file');
SELECT results_eq('SELECT key_id FROM tokenvault.key_ring()', format('VALUES (%s::bigint)', :new_key),
                  'the ring holds the new key alone');
SELECT is((SELECT count(*) FROM made WHERE tokenvault.access_token(id) = token), 2100::bigint,
          'and every secret still opens');
SELECT throws_ok('SELECT tokenvault.drop_key(12345)', '42704', 'key 12345 is not in the key ring',
                 'dropping a key that is not there is an error');
SELECT throws_ok('SELECT tokenvault.drop_key(NULL)', '22004', 'key id must not be null',
                 'drop_key(NULL) is an error');

-- A ring without the key a secret needs
SELECT set_config('tokenvault.key_command', 'echo 7 ' || repeat('0', 64), true) AS other \gset
SELECT is((SELECT count(*) FROM tokenvault.key_ring()), 1::bigint, 'another ring holds a key of its own');
SELECT throws_ok(format('SELECT tokenvault.access_token(%L)', (SELECT id FROM made LIMIT 1)), '55000',
                 format('key %s needed to open this secret is not in the key ring', :new_key),
                 'a secret whose key is missing names that key');
SELECT set_config('tokenvault.key_command', '', true) AS back \gset
SELECT is((SELECT count(*) FROM made WHERE tokenvault.access_token(id) = token), 2100::bigint,
          'with the key file back, everything opens again');

-- The key ring from a command's output
SELECT set_config('tokenvault.key_command', format('cat %s', :'ring'), true) AS cmd \gset
SELECT results_eq('SELECT key_id FROM tokenvault.key_ring()', format('VALUES (%s::bigint)', :new_key),
                  'tokenvault.key_command supplies the ring');
SELECT is((SELECT count(*) FROM made WHERE tokenvault.access_token(id) = token), 2100::bigint,
          'secrets open with keys from the command');
SELECT throws_ok('SELECT tokenvault.add_key()', '55000', NULL,
                 'keys cannot be added while a command supplies them');
SELECT set_config('tokenvault.key_command', 'echo keys-are-elsewhere; exit 3', true) AS cmd \gset
SELECT throws_like('SELECT tokenvault.key_ring()', 'tokenvault.key_command failed: child process exited with exit code 3',
                   'a failing key command is an error saying so');
SELECT set_config('tokenvault.key_command', 'echo 42 not-hex', true) AS cmd \gset
SELECT throws_ok('SELECT tokenvault.key_ring()', 'F0000',
                 'invalid key ring from tokenvault.key_command: line 1 has a key shorter than 64 hex digits',
                 'a malformed ring is refused, naming the line but not quoting it');

SELECT * FROM finish();
ROLLBACK;
