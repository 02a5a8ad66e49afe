#!/usr/bin/env bash
# Attacks on URL templates: an auth's fields fill a client's token, refresh
# and revoke URLs, and those fields are written by every application that
# may update the auth and by the provider's token responses.  Neither may
# choose the host that receives the client secret and the refresh token.
#
# The legitimate provider is the fault peer on 127.0.0.1; an attacker's peer
# listens on 127.0.0.2, same port, and records whatever reaches it.  A second
# application role writes a template field of another application's auth to
# name the attacker (as a dotted address, a decimal integer, hex, a short
# form), and a provider answers a refresh with a field that names it; the
# attacker must receive nothing, while the hosts allowed_hosts lists keep
# working.  Everything stays on loopback.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
[ -n "${TV_DATA:-}" ] || TV_EXTRA_CONF="tokenvault.http_timeout = 5" cluster_start
fault_start
port=$TV_PEER_PORT
peer_start attacker test/peers/fault.mjs FAULT_HOST=127.0.0.2 FAULT_PORT="$port"
attacker="http://127.0.0.2:$port"

db=tv_hosts_$$
app1=tv_hosts_app1_$$
app2=tv_hosts_app2_$$
createdb "$db"
export PGDATABASE=$db
q -v port="$port" -v secret="$TV_CLIENT_SECRET" -v app1="$app1" -v app2="$app2" <<'SQL'
CREATE EXTENSION tokenvault;
CREATE ROLE :"app1" LOGIN IN ROLE tokenvault_app;
CREATE ROLE :"app2" LOGIN IN ROLE tokenvault_app;
SELECT tokenvault.admit(:'app1', 'app') AS admitted, tokenvault.admit(:'app2', 'app') AS admitted_too \gset
SELECT tokenvault.create_user('hosts-user') AS u \gset
-- the shape the README used to show for Salesforce: a field is the whole host
SELECT tokenvault.create_client('Whole host', 'tenant', 'oauth2', jsonb_build_object(
        'client_id', 'hosts-client', 'client_secret', :'secret',
        'auth_url', 'http://localhost:' || :'port' || '/authorize',
        'allow_insecure_http', true, 'token_url', 'http://{instance_host}:' || :'port' || '/ok/token',
        'revoke_url', 'http://{instance_host}:' || :'port' || '/revoke/token',
        'allowed_hosts', '["localhost"]'::jsonb)) AS w \gset
-- a provider that answers a refresh with a field naming the attacker
SELECT tokenvault.create_client('Provider field', 'tenant', 'oauth2', jsonb_build_object(
        'client_id', 'hosts-client', 'client_secret', :'secret',
        'auth_url', 'http://localhost:' || :'port' || '/authorize',
        'allow_insecure_http', true, 'token_url', 'http://{instance_host}:' || :'port' || '/fields/token?instance_host=127.0.0.2',
        'revoke_url', 'http://{instance_host}:' || :'port' || '/revoke/token',
        'allowed_hosts', '["localhost"]'::jsonb)) AS p \gset
-- the README's Salesforce shape: a field is one label of an allowed domain
SELECT tokenvault.create_client('Tenant label', 'tenant', 'oauth2', jsonb_build_object(
        'grant', 'client_credentials', 'client_id', 'hosts-client', 'client_secret', :'secret',
        'allow_insecure_http', true, 'token_url', 'http://{tenant}.localhost:' || :'port' || '/ok/token?org={org}',
        'allowed_hosts', '["*.localhost"]'::jsonb)) AS s \gset
CREATE TABLE ids (name text PRIMARY KEY, id uuid, refresh_token text);
GRANT SELECT ON ids TO :"app1", :"app2";
INSERT INTO ids VALUES ('user', :'u', NULL), ('whole', :'w', NULL), ('provider', :'p', NULL), ('label', :'s', NULL);
SQL
id() { q -c "SELECT id FROM ids WHERE name = '$1'"; }
as_app() { local who=$1; shift; PGUSER=$who "$@"; }
attacker_got() { curl -sf "$attacker/_count"; }
legit_count() { curl -sf "$TV_FAULT_URL/_count/$1"; }
last_request() { curl -sf "$TV_FAULT_URL/_last/$1" | sed "s/'/''/g"; }

# app1 stores a user's auth; its fields say the host is localhost
new_auth() {
	as_app "$app1" q -v c="$(id "$1")" -v u="$(id user)" -v name="$2" <<'SQL'
SELECT tokenvault.create_auth(:'u', :'c', :'name', jsonb_build_object(
        'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
        'expires_in', 3600, 'instance_host', 'localhost'));
SQL
}
a=$(new_auth whole victim)
q -c "INSERT INTO ids SELECT 'victim', id, tokenvault._open_auth(secret, id)->>'refresh_token' FROM tokenvault.auths WHERE id = '$a'"

# 1. A second application points the auth at the attacker, in each form a
# resolver reads as 127.0.0.2, and then asks for a refresh.
for host in attacker.localhost 2130706434 0x7f000002 127.2 127.0.0.2; do
	is "$(as_app "$app2" sqlstate "SELECT tokenvault.update_auth('$a', NULL,
	        tokenvault.credentials('$a') || jsonb_build_object('instance_host', '$host'))")" 22023 \
		"an application cannot make $host the token host of another's auth"
done
is "$(as_app "$app2" q -c "SELECT tokenvault.refresh_auth('$a') IS NOT NULL")" t \
	"the auth still refreshes"
is "$(attacker_got)" '{}' "neither the client secret nor the refresh token reached the attacker"
is "$(legit_count ok)" 1 "the refresh went to the host allowed_hosts lists"
is "$(q -c "SELECT (j->'headers'->>'host') = 'localhost:$port'
                   AND j->>'body' = 'grant_type=refresh_token&refresh_token=' || (SELECT refresh_token FROM ids WHERE name = 'victim')
                   AND j->'headers'->>'authorization' = 'Basic ' || translate(encode(convert_to('hosts-client:$TV_CLIENT_SECRET', 'UTF8'), 'base64'), E'\\n', '')
              FROM (SELECT '$(last_request ok)'::jsonb j) x")" t \
	"with the user's refresh token and the client's credentials"

# 2. A field that got past the checks of its day (stored before the client
# listed hosts, written by a superuser) is judged again before each request:
# the refresh and the revocation fail with a message that holds no secret.
a2=$(new_auth whole planted)
q -c "UPDATE tokenvault.auths SET secret = tokenvault._seal_auth(
          tokenvault._open_auth(secret, id) || '{\"instance_host\": \"2130706434\"}', id) WHERE id = '$a2'"
is "$(as_app "$app2" sqlstate "SELECT tokenvault.refresh_auth('$a2')")" 38000 \
	"a refresh to a planted address fails (38000)"
is "$(q -c "SELECT status || ': ' || last_error FROM tokenvault.auths WHERE id = '$a2'")" \
	"error: the host of token_url is an IP address, which allowed_hosts never admits" \
	"the auth records why, naming no value"
is "$(as_app "$app2" sqlstate "SELECT tokenvault.delete_auth('$a2', revoke => true)")" 38000 \
	"a revocation to a planted address fails, and the auth stays"
is "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE id = '$a2'")" 1 "the auth is still there"
is "$(attacker_got)" '{}' "the attacker still received nothing"

# 3. The provider answers a refresh with instance_host naming the attacker:
# the token is not stored, and the revocation that follows goes where the
# auth's fields said before.
b=$(new_auth provider from-provider)
is "$(as_app "$app1" sqlstate "SELECT tokenvault.refresh_auth('$b')")" 38000 \
	"a refresh whose answer would move the token host fails"
is "$(q -c "SELECT status || ' ' || (tokenvault.credentials(id)->>'instance_host') || ': ' || last_error
              FROM tokenvault.auths WHERE id = '$b'")" \
	"error localhost: the provider's token cannot be stored: field \"instance_host\" cannot fill the host of token_url: a value there is one label of a-z, 0-9 and -" \
	"the auth keeps its host and records why"
is "$(legit_count fields)" 1 "the refresh itself went to the allowed host"
is "$(as_app "$app1" sqlstate "SELECT tokenvault.delete_auth('$b', revoke => true)")" ok \
	"the auth is revoked and deleted"
is "$(legit_count revoke)" 1 "at the allowed host"
is "$(attacker_got)" '{}' "the attacker received nothing from the provider's field either"

# 4. A label of an allowed domain works, and a value in the query is
# percent-encoded.
c=$(as_app "$app1" q -c "SELECT tokenvault.create_auth((SELECT id FROM ids WHERE name = 'user'),
        (SELECT id FROM ids WHERE name = 'label'), 'label', '{\"tenant\": \"acme\", \"org\": \"a b&c=d/..\"}')")
is "$(q -c "SELECT (j->'headers'->>'host') = 'acme.localhost:$port' AND j->>'query' = '?org=a%20b%26c%3Dd%2F..'
              FROM (SELECT '$(last_request ok)'::jsonb j) x")" t \
	"a tenant label of *.localhost fetches the first token there, the query's value encoded"
is "$(as_app "$app2" sqlstate "SELECT tokenvault.update_auth('$c', NULL,
        tokenvault.credentials('$c') || '{\"tenant\": \"127.0.0.2\"}')")" 22023 \
	"the tenant cannot become an address"
is "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE last_error LIKE '%TVSECRET%'") $(q -c "SELECT count(*) FROM tokenvault.events WHERE payload::text LIKE '%TVSECRET%'")" \
	"0 0" "no secret in last_error or events"
is "$(attacker_got)" '{}' "in the end, nothing ever reached the attacker's host"

q -d postgres -c "DROP DATABASE $db WITH (FORCE)"
q -d postgres -c "DROP ROLE $app1" -c "DROP ROLE $app2"
done_testing
