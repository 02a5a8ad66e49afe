-- The key ring: list it, add a key, re-seal under it, drop the old one.
\set SHOW_CONTEXT never
-- Key ids are random, so only their shape is shown.
SET client_min_messages = warning;
-- A key file of its own, beside the cluster's (outside the data directory).
SELECT set_config('tokenvault.key_file', regexp_replace(current_setting('tokenvault.key_file'), '[^/]*$', '')
                  || 'regress-ring-' || md5(random()::text), false) IS NOT NULL AS fresh_ring;
SELECT tokenvault.create_key_file() > 0 AS created;
SELECT split_part(try('SELECT tokenvault.create_key_file()'), ':', 1) AS create_again;
SELECT 'TVSECRET-' || md5(random()::text) AS token \gset
SELECT tokenvault.create_user('user-3001') AS u \gset
SELECT tokenvault.create_client('API', 'api', 'api_key') AS c \gset
SELECT count(tokenvault.create_auth(:'u', :'c', NULL, jsonb_build_object('api_key', :'token' || g))) AS auths
  FROM generate_series(1, 5) g;

SELECT count(*) AS keys, bool_and(newest) AS newest FROM tokenvault.key_ring();
SELECT key_id AS old_key FROM tokenvault.key_ring() \gset
SELECT tokenvault.add_key() AS new_key \gset
SELECT key_id = :new_key AS is_new, newest, secrets FROM tokenvault.key_usage() ORDER BY newest;

SELECT try(format('SELECT tokenvault.drop_key(%s)', :old_key));
SELECT tokenvault.rotate_key() AS resealed;
SELECT tokenvault.rotate_key() AS resealed_again;
SELECT key_id = :new_key AS is_new, newest, secrets FROM tokenvault.key_usage() ORDER BY newest;
SELECT tokenvault.drop_key(:old_key);
SELECT count(*) AS keys FROM tokenvault.key_ring();
SELECT count(*) FILTER (WHERE tokenvault.access_token(id) LIKE :'token' || '%') AS still_open
  FROM tokenvault.auths;
SELECT try(format('SELECT tokenvault.drop_key(%s)', :new_key));
SELECT tokenvault.drop_key(NULL);

-- a ring without the key that sealed a secret says which key is missing
SELECT set_config('tokenvault.key_command', 'echo 7 ' || repeat('0', 64), false) IS NOT NULL AS other_ring;
SELECT count(*) FROM tokenvault.key_ring();
SELECT try(format('SELECT tokenvault.access_token(%L)', id)) FROM tokenvault.auths LIMIT 1;
RESET tokenvault.key_command;
RESET tokenvault.key_file;
SELECT tokenvault.delete_user(:'u');
DELETE FROM tokenvault.clients;
