#!/usr/bin/env bash
# Token requests over TLS: the real OAuth2 server behind a certificate from a
# CA made for this run, trusted through tokenvault.ca_file (set with ALTER
# SYSTEM and a reload, as an administrator would); a server whose certificate
# no trusted CA signed is refused.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
[ -n "${TV_DATA:-}" ] || TV_EXTRA_CONF="log_min_error_statement = panic" cluster_start
tls_make_ca
oidc_start TLS_CERT="$TV_TLS/untrusted.pem" TLS_KEY="$TV_TLS/untrusted.key"
untrusted=$TV_OIDC_URL
oidc_start TLS_CERT="$TV_TLS/server.pem" TLS_KEY="$TV_TLS/server.key" ACCESS_TTL=3600
trusted=$TV_OIDC_URL

db=tv_tls_$$
createdb "$db"
# refresh_auth() here is meant to reach the provider: no rate limit (refresh_limits.sh tests it)
q -d "$db" -c "ALTER DATABASE $db SET tokenvault.min_refresh_interval = 0" >/dev/null
export PGDATABASE=$db
q -c "CREATE EXTENSION tokenvault"
client() { # NAME URL GRANT_CLIENT
	q -v url="$2" -v secret="$TV_CLIENT_SECRET" <<SQL
SELECT tokenvault.create_client('$1', 'oidc', 'oauth2', jsonb_build_object('grant', 'password',
    'client_id', 'tv-pw', 'client_secret', :'secret', 'allow_insecure_http', true, 'token_url', :'url' || '/token',
    'scopes', '["openid", "offline_access"]'::jsonb));
SQL
}
new_auth() { # CLIENT: the SQL that creates an auth of alice's at it
	echo "SELECT tokenvault.create_auth(tokenvault.create_user('alice-' || md5(random()::text)), '$1', NULL,
	          jsonb_build_object('username', 'alice', 'password', '$TV_USER_PASSWORD'))"
}
good=$(client trusted "$trusted")
bad=$(client untrusted "$untrusted")

is "$(sqlstate "$(new_auth "$good")")" 38000 "without the test CA the server's certificate is refused"
q -c "ALTER SYSTEM SET tokenvault.ca_file = '$TV_TLS/ca.pem'" -c "SELECT pg_reload_conf()" >/dev/null
reloaded() { [ "$(q -c "SHOW tokenvault.ca_file")" = "$TV_TLS/ca.pem" ]; }
wait_until 10 "the new ca_file is in effect" reloaded
is "$(sqlstate "$(new_auth "$good")")" ok "with tokenvault.ca_file naming the test CA, a token is fetched over TLS"
auth=$(q -c "SELECT id FROM tokenvault.auths LIMIT 1")
is "$(q -c "SELECT tokenvault.refresh_auth('$auth') > now()")" t "  ... and refreshed over TLS by the refresher"
out=$(psql -X -q -At -c "$(new_auth "$bad")" 2>&1 || true)
is "$(grep -c 'TLS' <<<"$out")" 1 "a certificate that no trusted CA signed is refused, the error saying TLS"
is "$(q -c "SELECT count(*) FROM tokenvault.users WHERE NOT EXISTS (SELECT FROM tokenvault.auths a WHERE a.user_id = users.id)")" 0 \
	"  ... and nothing of the failed statements is left behind"

q -c "ALTER SYSTEM RESET tokenvault.ca_file" -c "SELECT pg_reload_conf()" >/dev/null
dropdb --force "$db"
done_testing
