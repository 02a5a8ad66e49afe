#!/usr/bin/env bash
# pg_dump of a database using tokenvault, restored into a new database of
# the same cluster (so beside the same key ring): every secret must open.
# The checks are pgTAP, in test/pgtap-restore/.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
# run inside make test's cluster, or start one when run alone
[ -n "${TV_DATA:-}" ] || cluster_start

src=tv_dump_src_$$
dst=tv_dump_dst_$$
createdb "$src"
# Secrets under two keys; what each should open to is kept in a plain table
# that the dump carries along.
psql -X -q -v ON_ERROR_STOP=1 -d "$src" <<'SQL'
CREATE EXTENSION tokenvault;
CREATE TABLE expected (auth_id uuid, kind text, token text);
CREATE TABLE expected_client (client_id uuid, client_secret text);
SELECT tokenvault.create_client('Provider', 'provider', 'oauth2', jsonb_build_object(
           'client_id', 'dump', 'client_secret', 'TVSECRET-cs-' || md5(random()::text),
           'auth_url', 'https://provider.invalid/authorize', 'token_url', 'https://provider.invalid/token')) AS c,
       tokenvault.create_client('API', 'api', 'api_key') AS k,
       tokenvault.create_client('FTP', 'ftp', 'basic') AS b \gset
INSERT INTO expected_client
SELECT id, tokenvault._open_client(secret, id)->>'client_secret' FROM tokenvault.clients WHERE secret IS NOT NULL;

CREATE FUNCTION make_auths(n int, c uuid, k uuid, b uuid) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    u uuid;
    t text;
BEGIN
    FOR i IN 1..n LOOP
        u := tokenvault.create_user('dump-' || md5(random()::text));
        t := 'TVSECRET-at-' || md5(random()::text);
        INSERT INTO expected SELECT tokenvault.create_auth(u, c, NULL, jsonb_build_object(
            'access_token', t, 'refresh_token', 'TVSECRET-rt-' || md5(random()::text), 'expires_in', 86400)), 'oauth2', t;
        t := 'TVSECRET-key-' || md5(random()::text);
        INSERT INTO expected SELECT tokenvault.create_auth(u, k, NULL, jsonb_build_object('api_key', t)), 'api_key', t;
        t := 'TVSECRET-pw-' || md5(random()::text);
        INSERT INTO expected SELECT tokenvault.create_auth(u, b, NULL, jsonb_build_object('username', 'u' || i, 'password', t)), 'basic', t;
    END LOOP;
END
$$;
SELECT make_auths(50, :'c', :'k', :'b') AS made \gset
SELECT tokenvault.add_key() IS NOT NULL AS added \gset
SELECT make_auths(50, :'c', :'k', :'b') AS made \gset

-- A solution with every kind of slot and enabled instances: a restore loads
-- instances before their values and slots, which must not trip the rules.
SELECT tokenvault.create_solution('Dump solution') AS sol \gset
SELECT tokenvault.add_slot(:'sol', 'api', 'auth', '{"service": "api", "required": true}'),
       tokenvault.add_slot(:'sol', 'ftp', 'auth', jsonb_build_object('service', 'ftp', 'static_auth_id',
                               (SELECT id FROM tokenvault.auths WHERE service = 'ftp' ORDER BY created_at LIMIT 1))),
       tokenvault.add_slot(:'sol', 'channel', 'config', '{"required": true}'),
       tokenvault.add_slot(:'sol', 'limit', 'config', '{"default": 10, "required": true}');
SELECT count(tokenvault.update_instance(tokenvault.create_instance(:'sol', a.user_id, 'instance of ' || a.name,
           jsonb_build_array(jsonb_build_object('externalId', 'api', 'authId', a.id)),
           '[{"externalId": "channel", "value": "#dump"}]'), enabled => true))
  FROM (SELECT * FROM tokenvault.auths WHERE service = 'api' ORDER BY created_at LIMIT 10) a;
CREATE TABLE expected_instances AS SELECT id, tokenvault.instance(id) AS doc FROM tokenvault.instances;

-- Private and user tokens: their values are sealed to owner, related id and key.
CREATE TABLE expected_tokens AS
    SELECT 'rel-' || i AS related_id, 'key.' || i AS key, 'TVSECRET-pt-' || md5(random()::text) AS value
      FROM generate_series(1, 20) i;
SELECT count(tokenvault.put_private_token(related_id, key, value)) FROM expected_tokens;
SELECT tokenvault.create_user('dump-tokens') AS tu \gset
SELECT tokenvault.grant_user_tokens(:'tu', current_user, 'write');
SELECT count(tokenvault.put_user_token(:'tu', related_id, key, value)) FROM expected_tokens;
SQL

pg_dump -Fc -f "$TV_TMP/$src.dump" "$src"
createdb "$dst"
pg_restore --exit-on-error -d "$dst" "$TV_TMP/$src.dump"
psql -X -q -v ON_ERROR_STOP=1 -d "$dst" -c 'CREATE EXTENSION pgtap'
pg_prove -d "$dst" test/pgtap-restore/*.sql
echo "ok - a dump restored into a new database opens every secret"
dropdb "$dst"
dropdb "$src"
