#!/usr/bin/env bash
# make demo: a walk through tokenvault on a throwaway cluster.
# The tokens are made up here; the demo shows only their first characters.
set -euo pipefail
cd "$(dirname "$0")/.."
source test/cluster.sh

echo "Starting a throwaway PostgreSQL 15 cluster with tokenvault preloaded..."
cluster_start
echo

psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
\pset footer off
CREATE EXTENSION tokenvault;
-- show a secret the way a person checks one: its start and its length
CREATE FUNCTION pg_temp.peek(secret text, shown int DEFAULT 8) RETURNS text LANGUAGE sql
    AS $$ SELECT left(secret, shown) || '… (' || length(secret) || ' characters)' $$;
CREATE FUNCTION pg_temp.peek(j jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_object_agg(key, CASE WHEN key IN ('access_token', 'refresh_token', 'api_key', 'password')
                                      THEN to_jsonb(pg_temp.peek(value #>> '{}')) ELSE value END)
      FROM jsonb_each(j) $$;
SELECT 'gho_' || md5(random()::text) AS access_token,
       'ghr_' || md5(random()::text) AS refresh_token,
       'demo-' || md5(random()::text) AS client_secret \gset

\echo '1. Create a user: one per user of your application, found by your own id.'
\echo '   SELECT tokenvault.create_user(''customer-42'', ''Ada Lovelace'');'
SELECT tokenvault.create_user('customer-42', 'Ada Lovelace') AS user_id \gset
\echo '   ->' :user_id
\echo

\echo '2. Create a client: how your application reaches GitHub (the secret is sealed at once).'
SELECT tokenvault.create_client('GitHub', 'github', 'oauth2', jsonb_build_object(
    'client_id', 'Iv1.demo', 'client_secret', :'client_secret',
    'auth_url', 'https://github.com/login/oauth/authorize',
    'token_url', 'https://github.com/login/oauth/access_token',
    'scopes', jsonb_build_array('repo', 'read:user'))) AS client_id \gset
\echo '   ->' :client_id
SELECT name, service, type, grant_type, scopes FROM tokenvault.clients;
\echo

\echo '3. Import the tokens GitHub issued for Ada (a token response, as the provider sent it).'
SELECT tokenvault.create_auth(:'user_id', :'client_id', 'Ada''s GitHub', jsonb_build_object(
    'access_token', :'access_token', 'refresh_token', :'refresh_token',
    'token_type', 'bearer', 'expires_in', 28800, 'scope', 'repo read:user')) AS auth_id \gset
\echo '   ->' :auth_id
SELECT name, service, scopes, status, expires_at FROM tokenvault.user_auths(:'user_id');
\echo 'What is stored is ciphertext (AES-256-GCM, bound to this row):'
SELECT length(secret) AS sealed_bytes, encode(substr(secret, 1, 24), 'hex') || '…' AS sealed_start
  FROM tokenvault.auths WHERE id = :'auth_id';
\echo

\echo '4. access_token(): a token valid for at least tokenvault.min_validity.'
SELECT pg_temp.peek(tokenvault.access_token(:'auth_id')) AS access_token;
\echo

\echo '5. credentials(): the whole credential, opened.'
SELECT jsonb_pretty(pg_temp.peek(tokenvault.credentials(:'auth_id'))) AS credentials;
\echo

\echo '6. http_headers(): ready to send.'
SELECT key AS header, pg_temp.peek(value #>> '{}', 15) AS value
  FROM jsonb_each(tokenvault.http_headers(:'auth_id'));
\echo

\echo '7. The key ring lives outside the database (tokenvault.key_file, in the data directory):'
SELECT key_id, newest, secrets FROM tokenvault.key_usage();
SQL

echo
echo "Done; stopping the cluster."
