#!/usr/bin/env bash
# Twelve catalogue providers through a refresh, each against a peer that
# answers in that provider's documented shape (test/peers/providers.mjs),
# over TLS.  A client is made from the catalogue with its token URL pointed
# at the peer and nothing else set (a per-tenant host also names the
# loopback hosts it may make: *.localhost, which libcurl resolves to
# loopback itself); the peer refuses a request that is not as the provider
# documents it (client authentication, body format, the scope Microsoft
# wants again).  Then health checks: check_auth() against the peer, and the
# worker checking an opted-in client's auths on its own.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
[ -n "${TV_DATA:-}" ] || TV_EXTRA_CONF="tokenvault.http_timeout = 5" cluster_start
tls_make_ca
(
	cd "$TV_TLS"
	openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout providers.key -out providers.csr
	printf 'subjectAltName = IP:127.0.0.1, DNS:eu.zoho.localhost, DNS:acme.shop.localhost\n' >providers.ext
	openssl x509 -req -in providers.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
		-extfile providers.ext -out providers.pem
	chmod 644 providers.pem providers.key
) >"$TV_TMP/tls-providers.log" 2>&1
peer_start providers test/peers/providers.mjs TLS_CERT="$TV_TLS/providers.pem" TLS_KEY="$TV_TLS/providers.key"
port=$TV_PEER_PORT
peer="https://127.0.0.1:$port"
q -c "ALTER SYSTEM SET tokenvault.ca_file = '$TV_TLS/ca.pem'" -c "SELECT pg_reload_conf()" >/dev/null
reloaded() { [ "$(q -c "SHOW tokenvault.ca_file")" = "$TV_TLS/ca.pem" ]; }
wait_until 10 "the test CA is trusted" reloaded

db=tv_providers_$$
createdb "$db"
q -d "$db" -c "ALTER DATABASE $db SET tokenvault.min_refresh_interval = 0" >/dev/null
export PGDATABASE=$db
q -c "CREATE EXTENSION tokenvault"
q -c "SELECT tokenvault.create_user('alice')" >/dev/null

# client PROVIDER [EXTRA_SETTINGS]: a client from the catalogue, its token URL the peer's
client() {
	q -v key="$1" -v url="${3:-$peer/$1/token}" -v extra="${2:-{\}}" -v secret="$TV_CLIENT_SECRET" <<'SQL'
SELECT tokenvault.create_client(:'key', :'key', 'oauth2', jsonb_build_object('provider', :'key',
    'client_id', 'tv-' || :'key', 'client_secret', :'secret', 'token_url', :'url') || :'extra'::jsonb);
SQL
}
# auth CLIENT [FIELDS]: an auth of alice's with a made-up, expired token and a refresh token
auth() {
	q -v c="$1" -v fields="${2:-{\}}" <<'SQL'
SELECT tokenvault.create_auth((SELECT id FROM tokenvault.users WHERE external_user_id = 'alice'), :'c', NULL,
    jsonb_build_object('access_token', 'TVSECRET-old-' || md5(random()::text),
                       'refresh_token', 'TVSECRET-rt-' || md5(random()::text), 'expires_in', 0) || :'fields'::jsonb);
SQL
}
refresh() { sqlstate "SELECT tokenvault.refresh_auth('$1')"; }
field() { q -c "SELECT tokenvault.credentials('$1')->>'$2'"; }
digest() { q -c "SELECT md5(tokenvault.credentials('$1')->>'$2')"; }
last() { curl -s --cacert "$TV_TLS/ca.pem" "$peer/_last/$1" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s)['$2']))"; }
minutes_left() { q -c "SELECT round(extract(epoch FROM $2 - now()) / 60) FROM tokenvault.auths WHERE id = '$1'"; }

# Google: no new refresh token on refresh, the old one is kept; client secret in the body
c=$(client google); a=$(auth "$c"); rt=$(digest "$a" refresh_token)
is "$(refresh "$a")" ok "google: refreshed"
is "$(digest "$a" refresh_token)" "$rt" "google: the refresh token it did not replace is kept"
is "$(last google client_auth)" post "google: the client secret goes in the body"

# Microsoft: the scope again with each refresh, and rotation
c=$(client microsoft); a=$(auth "$c" '{"scope": "User.Read offline_access"}'); rt=$(digest "$a" refresh_token)
is "$(refresh "$a")" ok "microsoft: refreshed (the peer refuses a refresh without a scope)"
is "$(last microsoft scope)" "User.Read offline_access" "microsoft: the auth's scopes went with the refresh"
[ "$(digest "$a" refresh_token)" != "$rt" ] && ok "microsoft: the rotated refresh token replaced the old one" ||
	not_ok "microsoft: the rotated refresh token replaced the old one"
is "$(refresh "$a")" ok "microsoft: the new refresh token works in turn"

# Slack: the exchange nests the user token under authed_user; refreshes answer at the top; token_type "user" is no scheme
c=$(client slack)
url=$(q -c "SELECT tokenvault.authorize_url('$c', (SELECT id FROM tokenvault.users WHERE external_user_id = 'alice'), 'https://app.example.org/cb')")
state=$(sed -n 's/.*[?&]state=\([^&]*\).*/\1/p' <<<"$url")
a=$(q -c "SELECT tokenvault.complete_authorization('$state', 'code-' || md5(random()::text))")
is "$(field "$a" access_token | cut -d- -f2)" at "slack: the auth holds the user token from authed_user, not the bot token"
is "$(q -c "SELECT tokenvault.http_headers('$a')->>'Authorization'" | cut -d' ' -f1)" Bearer "slack: its header is Bearer"
is "$(refresh "$a")" ok "slack: a refresh (answered at the top level) works"
is "$(q -c "SELECT status || ' ' || (expires_at > now() + interval '11 hours') FROM tokenvault.auths WHERE id = '$a'")" "active true" \
	"slack: active, its 12-hour token stored"

# GitHub App user tokens: an error inside a 200, which says the user must authorize again
c=$(client github_app); a=$(auth "$c")
is "$(refresh "$a")" ok "github_app: refreshed"
is "$(minutes_left "$a" refresh_expires_at)" 263520 "github_app: its refresh token's own expiry (refresh_token_expires_in) kept"
bad=$(q -v c="$c" -c "SELECT tokenvault.create_auth((SELECT id FROM tokenvault.users WHERE external_user_id = 'alice'), '$c', NULL,
      jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-revoked-' || md5(random()::text), 'expires_in', 0))")
is "$(refresh "$bad")" 28000 "github_app: bad_refresh_token in a 200 is a refusal that needs the user again"
is "$(q -c "SELECT status FROM tokenvault.auths WHERE id = '$bad'")" needs_reauth "github_app: the auth needs the user"

# Salesforce: no expires_in, an issued_at in milliseconds, instance_url kept, no new refresh token
c=$(client salesforce); a=$(auth "$c"); rt=$(digest "$a" refresh_token)
is "$(refresh "$a")" ok "salesforce: refreshed"
is "$(field "$a" instance_url)" "https://acme.my.salesforce.com" "salesforce: instance_url kept"
is "$(digest "$a" refresh_token)" "$rt" "salesforce: the refresh token kept"
is "$(minutes_left "$a" expires_at)" 110 "salesforce: expires token_lifetime (2 h) after issued_at (10 minutes ago)"

# Zoho: the accounts server of the user's region
# (the loopback host pattern joins the provider's own, which its other URLs need)
hosts() { q -c "SELECT jsonb_build_object('allowed_hosts', to_jsonb(allowed_hosts || '{$2}'::text[])) FROM tokenvault.providers WHERE key = '$1'"; }
c=$(client zoho "$(hosts zoho '*.zoho.localhost')" "https://{region}.zoho.localhost:$port/zoho/token")
is "$(sqlstate "SELECT tokenvault.create_auth((SELECT id FROM tokenvault.users WHERE external_user_id = 'alice'), '$c', NULL, '{\"refresh_token\": \"TVSECRET-x\"}')")" 22023 \
	"zoho: an auth without its region is refused"
a=$(auth "$c" '{"region": "eu"}')
is "$(refresh "$a")" ok "zoho: refreshed"
is "$(last zoho host)" eu.zoho.localhost "zoho: at the region's accounts host"
is "$(field "$a" api_domain)" "https://www.zohoapis.eu" "zoho: api_domain kept"

# Shopify: the shop's own host; expiring offline tokens with a rotating refresh token of its own expiry
c=$(client shopify "$(hosts shopify '*.shop.localhost')" "https://{shop}.shop.localhost:$port/shopify/token")
a=$(auth "$c" '{"shop": "acme"}')
is "$(refresh "$a")" ok "shopify: refreshed"
is "$(last shopify host)" acme.shop.localhost "shopify: at the shop's host"
is "$(minutes_left "$a" refresh_expires_at)" 129600 "shopify: the refresh token's 90 days kept"
is "$(q -c "SELECT tokenvault.http_headers('$a') ? 'X-Shopify-Access-Token'")" t "shopify: the token goes in X-Shopify-Access-Token"

# QuickBooks: Basic client authentication, x_refresh_token_expires_in
c=$(client quickbooks); a=$(auth "$c")
is "$(refresh "$a")" ok "quickbooks: refreshed"
is "$(last quickbooks client_auth)" basic "quickbooks: the client authenticates with Basic"
is "$(minutes_left "$a" refresh_expires_at)" 145440 "quickbooks: x_refresh_token_expires_in (101 days) kept"

# Notion: a JSON body with Basic client authentication
c=$(client notion); a=$(auth "$c")
is "$(refresh "$a")" ok "notion: refreshed"
is "$(last notion content_type) $(last notion client_auth)" "json basic" "notion: a JSON body, Basic client authentication"

# Dropbox, HubSpot, Xero
c=$(client dropbox); a=$(auth "$c"); rt=$(digest "$a" refresh_token)
is "$(refresh "$a")" ok "dropbox: refreshed"
is "$(digest "$a" refresh_token)" "$rt" "dropbox: the refresh token kept"
is "$(minutes_left "$a" expires_at)" 240 "dropbox: a 4-hour token"
c=$(client hubspot); a=$(auth "$c")
is "$(refresh "$a")" ok "hubspot: refreshed"
is "$(last hubspot client_auth)" post "hubspot: the client secret goes in the body"
c=$(client xero); a=$(auth "$c"); rt=$(digest "$a" refresh_token)
is "$(refresh "$a")" ok "xero: refreshed"
is "$(last xero client_auth)" basic "xero: Basic client authentication"
[ "$(digest "$a" refresh_token)" != "$rt" ] && ok "xero: rotated" || not_ok "xero: rotated"

# an error field pointed at the token (past the settings' check, as a row saved otherwise would be) quotes no token.
# The client secret and refresh token here share no 8 bytes with the answer's tokens (TVSECRET-…), which a
# quote would otherwise be withheld for anyway.
c=$(TV_CLIENT_SECRET="cs-$(openssl rand -hex 16)" client google)
is "$(sqlstate "SELECT tokenvault.update_client('$c', '{\"error_field\": \"access_token\"}')")" 22023 \
	"error_field: naming the token field is refused"
q -c "UPDATE tokenvault.clients SET error_field = 'access_token' WHERE id = '$c'" >/dev/null
a=$(q -c "SELECT tokenvault.create_auth((SELECT id FROM tokenvault.users WHERE external_user_id = 'alice'), '$c', NULL,
      jsonb_build_object('access_token', 'old-' || md5(random()::text), 'refresh_token', 'rt-' || md5(random()::text), 'expires_in', 0))")
is "$(refresh "$a")" ok "error_field at the token: an answer with a token is a success whatever the field says"
is "$(q -c "SELECT last_error FROM tokenvault.auths WHERE id = '$a'" | grep -c TVSECRET)" 0 "error_field at the token: last_error quotes no token"
is "$(q -c "SELECT count(*) FROM tokenvault.events WHERE auth_id = '$a' AND payload::text LIKE '%TVSECRET%'")" 0 \
	"error_field at the token: nor does any event"

# ---- health checks ----
# an API key provider (Stripe) with its verify URL pointed at the peer
key() {
	q -v c="$1" -v k="TVSECRET-$2-$(openssl rand -hex 8)" <<'SQL'
SELECT tokenvault.create_auth((SELECT id FROM tokenvault.users WHERE external_user_id = 'alice'), :'c', NULL,
                              jsonb_build_object('api_key', :'k'));
SQL
}
stripe=$(q -c "SELECT tokenvault.create_client('Stripe', 'stripe', 'api_key',
                 '{\"provider\": \"stripe\", \"verify_url\": \"$peer/verify/stripe\"}')")
good=$(key "$stripe" live); revoked=$(key "$stripe" revoked); flaky=$(key "$stripe" flaky)
is "$(q -c "SELECT tokenvault.check_auth('$good')")" ok "check_auth: a working key is ok"
is "$(q -c "SELECT status || ' ' || last_check || ' ' || (last_checked_at > now() - interval '1 minute') FROM tokenvault.auths WHERE id = '$good'")" \
	"active ok true" "check_auth: it stays active, last_checked_at and last_check recorded"
is "$(q -c "SELECT tokenvault.check_auth('$revoked')")" refused "check_auth: a revoked key (401) is refused"
is "$(q -c "SELECT status FROM tokenvault.auths WHERE id = '$revoked'")" needs_reauth "check_auth: the revoked key's auth needs the user"
is "$(q -c "SELECT count(*) FROM tokenvault.events WHERE auth_id = '$revoked'")" 1 "check_auth: with one event"
is "$(q -c "SELECT kind FROM tokenvault.events WHERE auth_id = '$revoked'")" auth.check_failed "check_auth: auth.check_failed"
is "$(q -c "SELECT tokenvault.check_auth('$flaky')")" failed "check_auth: a 5xx is a failed check"
is "$(q -c "SELECT status || ' ' || last_check FROM tokenvault.auths WHERE id = '$flaky'")" "active failed" \
	"check_auth: a 5xx is no verdict: the auth stays active"
is "$(q -c "SELECT tokenvault.check_auth('$flaky')") $(q -c "SELECT count(*) FROM tokenvault.events WHERE auth_id = '$flaky'")" "failed 1" \
	"check_auth: failures in a row are announced once"
is "$(q -c "SELECT count(*) FROM tokenvault.events WHERE auth_id = '$flaky' AND kind = 'auth.recovered'")" 0 "check_auth: no recovery without a good check"
logged=$(grep -c "TVSECRET" "$TV_LOG" || true)
is "$logged" 0 "no credential in the server log"

# Slack's auth.test: a 200 whose "ok" is false refuses the token
c=$(client slack '{}' "$peer/slack/token")
q -c "SELECT tokenvault.update_client('$c', '{\"verify_url\": \"$peer/verify/slack\"}')" >/dev/null
s_ok=$(auth "$c"); s_bad=$(q -c "SELECT tokenvault.create_auth((SELECT id FROM tokenvault.users WHERE external_user_id = 'alice'), '$c', NULL,
      jsonb_build_object('access_token', 'TVSECRET-revoked-' || md5(random()::text), 'expires_in', 3600))")
is "$(q -c "SELECT tokenvault.check_auth('$s_ok')")" ok "slack: auth.test with \"ok\": true"
is "$(q -c "SELECT tokenvault.check_auth('$s_bad')")" refused "slack: auth.test with \"ok\": false is a refusal"

# the worker checks an opted-in client's auths on its own, spread over the interval
q -c "ALTER SYSTEM SET tokenvault.database = '$db'" -c "SELECT pg_reload_conf()" >/dev/null
worker_up() { [ -n "$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tokenvault worker' AND datname = '$db'")" ]; }
wait_until 30 "worker: this database's worker is up" worker_up
checked=$(q -c "SELECT tokenvault.create_client('Stripe checked', 'stripe', 'api_key',
                 '{\"provider\": \"stripe\", \"verify_url\": \"$peer/verify/stripe\", \"check_every\": 60}')")
w_good=$(key "$checked" live); w_bad=$(key "$checked" revoked)
is "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE client_id = '$checked' AND check_at BETWEEN now() AND now() + interval '60 seconds'")" 2 \
	"worker: the opted-in auths are scheduled within the first interval"
both_checked() { [ "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE client_id = '$checked' AND last_checked_at IS NOT NULL")" = 2 ]; }
wait_until 90 "worker: both auths checked without a call" both_checked
is "$(q -c "SELECT status FROM tokenvault.auths WHERE id = '$w_good'") $(q -c "SELECT status FROM tokenvault.auths WHERE id = '$w_bad'")" \
	"active needs_reauth" "worker: the working key stays active, the revoked one needs the user"
is "$(q -c "SELECT count(*) FROM tokenvault.events WHERE auth_id = '$w_bad' AND kind = 'auth.check_failed'")" 1 "worker: one event for the refusal"
is "$(q -c "SELECT (check_at BETWEEN last_checked_at + interval '59 seconds' AND last_checked_at + interval '61 seconds') FROM tokenvault.auths WHERE id = '$w_good'")" t \
	"worker: the next check is check_every after the last"
q -c "ALTER SYSTEM RESET tokenvault.database" -c "ALTER SYSTEM RESET tokenvault.ca_file" -c "SELECT pg_reload_conf()" >/dev/null
done_testing
