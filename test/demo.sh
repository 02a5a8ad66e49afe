#!/usr/bin/env bash
# make demo: a walk through tokenvault on a throwaway cluster.
# The tokens are made up here; the demo shows only their first characters.
set -euo pipefail
cd "$(dirname "$0")/.."
source test/cluster.sh
source test/peers.sh

echo "Starting a throwaway PostgreSQL 15 cluster with tokenvault preloaded,"
echo "and a real OAuth2 server (oidc-provider, on loopback, plain http) to play the provider..."
# the background worker serves another database, so that what happens here is
# what the steps below make happen
TV_EXTRA_CONF="tokenvault.database = demo_worker" cluster_start
oidc_start ACCESS_TTL=3
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

\echo '2. Create a client: how your application reaches GitHub. The provider catalogue knows GitHub'
\echo '   (and 77 other providers): its name, your app''s client id and secret are all it takes.'
SELECT count(*) AS providers, string_agg(key, ' ' ORDER BY key) FILTER (WHERE key LIKE 'g%') AS "for example"
  FROM tokenvault.providers;
\echo '   SELECT tokenvault.create_client(''GitHub'', ''github'', ''oauth2'','
\echo '          ''{"provider": "github_app", "client_id": "Iv1.demo", "client_secret": "…"}'');'
SELECT tokenvault.create_client('GitHub', 'github', 'oauth2', jsonb_build_object(
    'provider', 'github_app', 'client_id', 'Iv1.demo', 'client_secret', :'client_secret')) AS client_id \gset
\echo '   ->' :client_id
\echo 'Its settings came from the catalogue (GitHub answers errors inside a 200, and rotates refresh tokens):'
SELECT name, provider, grant_type, auth_url, token_url, reauth_errors FROM tokenvault.clients;
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

\echo '7. The key ring lives outside the database and its data directory (tokenvault.key_file):'
SELECT key_id, newest, secrets FROM tokenvault.key_usage();
SQL

echo
echo "8. OAuth2 for real, against the local server: authorize_url() sends the user to the provider..."
user=$(psql -X -q -At -c "SELECT id FROM tokenvault.users WHERE external_user_id = 'customer-42'")
client=$(psql -X -q -At -v url="$TV_OIDC_URL" -v secret="$TV_CLIENT_SECRET" <<'SQL'
SELECT tokenvault.create_client('Local OIDC', 'oidc', 'oauth2', jsonb_build_object(
    'client_id', 'tv-code', 'client_secret', :'secret',
    'auth_url', :'url' || '/auth', 'allow_insecure_http', true, 'token_url', :'url' || '/token',
    'scopes', '["openid", "offline_access", "api:read"]'::jsonb,
    'extra_params', '{"authorize": {"prompt": "consent"}}'::jsonb));
SQL
)
url=$(psql -X -q -At -c "SELECT tokenvault.authorize_url('$client', '$user', 'http://127.0.0.1/callback')")
echo "   $(cut -c1-110 <<<"$url")…"
echo "   ...where a browser (here test/peers/browser.mjs) signs in and consents; the provider"
echo "   redirects back with a code and the state, and complete_authorization() exchanges the code"
echo "   (with the PKCE verifier kept, sealed, beside the state):"
callback=$(node test/peers/browser.mjs "$url")
code=$(sed -n 's/.*[?&]code=\([^&]*\).*/\1/p' <<<"$callback")
state=$(sed -n 's/.*[?&]state=\([^&]*\).*/\1/p' <<<"$callback")
auth=$(psql -X -q -At -c "SELECT tokenvault.complete_authorization('$state', '$code')")
echo "   -> auth $auth"
echo

psql -X -q -v ON_ERROR_STOP=1 -v auth="$auth" <<'SQL'
\pset footer off
CREATE FUNCTION pg_temp.peek(secret text) RETURNS text LANGUAGE sql
    AS $$ SELECT left(secret, 6) || '… (' || length(secret) || ' characters)' $$;
CREATE VIEW pg_temp.state AS
SELECT status, expires_at - now() AS valid_for, pg_temp.peek(tokenvault._open_auth(secret, id)->>'refresh_token') AS refresh_token
  FROM tokenvault.auths WHERE id = :'auth';
\echo 'This server issues tokens that live 3 seconds; its refresh tokens rotate on every use.'
SELECT * FROM pg_temp.state;
\echo
\echo '9. Three seconds later the token has expired; access_token() refreshes it first, through the'
\echo '   refresher worker, which commits the new tokens on its own (a rollback here loses nothing):'
\o /dev/null
SELECT pg_sleep(3.1);
\o
SET tokenvault.min_validity = '1s';
BEGIN;
SELECT pg_temp.peek(tokenvault.access_token(:'auth')) AS access_token;
ROLLBACK;
SELECT * FROM pg_temp.state;
\echo '10. refresh_auth() refreshes now, whatever the expiry; a new refresh token again:'
SELECT tokenvault.refresh_auth(:'auth') > now() AS refreshed;
SELECT * FROM pg_temp.state;
SQL

echo "11. Twenty sessions ask for the token of the expired auth at once; the provider sees one request:"
curl -sf -X POST "$TV_OIDC_URL/_reset" >/dev/null
sleep 3.1
pids=()
for i in $(seq 1 20); do
	PGOPTIONS="-c tokenvault.min_validity=1" psql -X -q -At -c "SELECT md5(tokenvault.access_token('$auth'))" >"$TV_TMP/demo.$i" &
	pids+=($!)
done
wait "${pids[@]}"
echo "   distinct tokens handed out: $(sort -u "$TV_TMP"/demo.* | wc -l); token requests at the provider: $(curl -sf "$TV_OIDC_URL/_count" | sed -n 's/.*"token":\([0-9]*\).*/\1/p')"

echo

psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
\pset footer off
SELECT id AS user_id FROM tokenvault.users WHERE external_user_id = 'customer-42' \gset
SELECT id AS client_id FROM tokenvault.clients WHERE service = 'github' \gset
SELECT id AS auth_id FROM tokenvault.auths WHERE name = 'Ada''s GitHub' \gset
\echo '12. Embedding: a solution declares slots (an auth of the GitHub client with the scopes it'
\echo '    needs, a config value with a default); Ada''s instance fills them and is enabled:'
SELECT tokenvault.create_solution('GitHub > Slack digest') AS solution_id \gset
\o /dev/null
SELECT tokenvault.add_slot(:'solution_id', 'external_github', 'auth',
           jsonb_build_object('client_id', :'client_id', 'required', true, 'scopes', '["repo"]'::jsonb)),
       tokenvault.add_slot(:'solution_id', 'external_channel', 'config', '{"default": "#general"}');
SELECT tokenvault.create_instance(:'solution_id', :'user_id', 'Ada''s digest',
           jsonb_build_array(jsonb_build_object('externalId', 'external_github', 'authId', :'auth_id'))) AS instance_id \gset
SELECT tokenvault.update_instance(:'instance_id', enabled => true);
\o
SELECT jsonb_pretty(tokenvault.instance(:'instance_id')) AS "instance()";
\echo '    Deleting the auth now is refused, naming the instance:'
\set VERBOSITY terse
\set ON_ERROR_STOP off
SELECT tokenvault.delete_auth(:'auth_id');
\set ON_ERROR_STOP on
\echo

\echo '13. Private tokens: {relatedId, key, value} secrets of the calling role, sealed like the rest:'
\o /dev/null
SELECT tokenvault.put_private_token('project1', 'name', 'The project number one'),
       tokenvault.put_private_token('project1', 'key_words', '["eggs", "ham"]');
\o
SELECT * FROM tokenvault.list_private_tokens('project1');
SQL

echo
echo "Done; stopping the cluster."
