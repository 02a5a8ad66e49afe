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
SELECT id, tokenvault._open_jsonb(secret, 'client:' || id)->>'client_secret' FROM tokenvault.clients WHERE secret IS NOT NULL;

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
SQL

pg_dump -Fc -f "$TV_TMP/$src.dump" "$src"
createdb "$dst"
pg_restore --exit-on-error -d "$dst" "$TV_TMP/$src.dump"
psql -X -q -v ON_ERROR_STOP=1 -d "$dst" -c 'CREATE EXTENSION pgtap'
pg_prove -d "$dst" test/pgtap-restore/*.sql
echo "ok - a dump restored into a new database opens every secret"
dropdb "$dst"
dropdb "$src"
