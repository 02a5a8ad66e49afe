#!/usr/bin/env bash
# Every grant end to end against a real OAuth2 server (oidc-provider, from
# npm; test/peers/oidc.mjs): authorization_code with PKCE driven as a
# browser would, refresh with rotation twice in a row, client_credentials
# fetched again after expiry, the password grant, revocation.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
[ -n "${TV_DATA:-}" ] || TV_EXTRA_CONF="tokenvault.http_timeout = 5" cluster_start
oidc_start ACCESS_TTL=3600
long=$TV_OIDC_URL
oidc_start ACCESS_TTL=2
short=$TV_OIDC_URL

db=tv_grants_$$
createdb "$db"
# every refresh_auth() here is meant to reach the provider: no rate limit (refresh_limits.sh tests it)
q -d "$db" -c "ALTER DATABASE $db SET tokenvault.min_refresh_interval = 0" >/dev/null
export PGDATABASE=$db
q -v long="$long" -v short="$short" -v secret="$TV_CLIENT_SECRET" <<'SQL'
CREATE EXTENSION tokenvault;
CREATE FUNCTION oidc_client(name text, url text, settings jsonb) RETURNS uuid LANGUAGE sql AS $$
    SELECT tokenvault.create_client(name, 'oidc', 'oauth2', jsonb_build_object(
        'auth_url', url || '/auth', 'allow_insecure_http', true, 'token_url', url || '/token', 'revoke_url', url || '/token/revocation',
        'client_secret', current_setting('test.secret')) || settings)
$$;
SELECT set_config('test.secret', :'secret', false) IS NOT NULL AS secret_set \gset
CREATE TABLE clients AS SELECT * FROM (VALUES
    ('code',      oidc_client('code', :'long', '{"client_id": "tv-code", "scopes": ["openid", "offline_access", "api:read"],
                                                 "extra_params": {"authorize": {"prompt": "consent"}}}')),
    ('code-post', oidc_client('code-post', :'long', '{"client_id": "tv-code-post", "client_auth": "post",
                                                 "scopes": ["openid", "offline_access"], "extra_params": {"authorize": {"prompt": "consent"}}}')),
    ('code-short', oidc_client('code-short', :'short', '{"client_id": "tv-code", "scopes": ["openid", "offline_access"],
                                                 "extra_params": {"authorize": {"prompt": "consent"}}}')),
    ('cc-short',  oidc_client('cc-short', :'short', '{"client_id": "tv-cc", "grant": "client_credentials", "scopes": ["api:read"]}')),
    ('pw',        oidc_client('pw', :'long', '{"client_id": "tv-pw", "grant": "password", "scopes": ["openid", "offline_access"]}'))
) v(name, id);
SELECT tokenvault.create_user('alice') AS u \gset
SQL
client() { q -c "SELECT id FROM clients WHERE name = '$1'"; }
user=$(q -c "SELECT id FROM tokenvault.users WHERE external_user_id = 'alice'")
count() { curl -sf "$1/_count" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const c=JSON.parse(s);console.log(eval('c.'+process.argv[1])??0)})" "$2"; }
reset() { curl -sf -X POST "$1/_reset" >/dev/null; }
# the auth's secret, opened (for comparing digests; never printed)
secret_md5() { q -c "SELECT md5(tokenvault._open_auth(secret, id)->>'$2') FROM tokenvault.auths WHERE id = '$1'"; }

# authorize CLIENT [AUTH_ID]: the whole authorization_code dance, as a browser:
# authorize_url, log in and consent at the provider, complete_authorization
# with the code and state read off the callback URL.  Prints the auth id.
authorize() {
	local url callback code state
	url=$(q -c "SELECT tokenvault.authorize_url('$(client "$1")', '$user', 'http://127.0.0.1/callback'${2:+, auth_id => '$2'})")
	callback=$(node test/peers/browser.mjs "$url") || return 1
	code=$(sed -n 's/.*[?&]code=\([^&]*\).*/\1/p' <<<"$callback")
	state=$(sed -n 's/.*[?&]state=\([^&]*\).*/\1/p' <<<"$callback")
	q -c "SELECT tokenvault.complete_authorization('$state', '$code')"
}

# --- authorization_code with PKCE
a=$(authorize code)
is "$(q -c "SELECT status || ' ' || (expires_at > now() + interval '59 min') || ' ' || (tokenvault._open_auth(secret, id) ? 'refresh_token')
             || ' ' || array_to_string(scopes, ' ') FROM tokenvault.auths WHERE id = '$a'")" \
	"active true true openid offline_access api:read" "authorization_code + PKCE: an auth with an access token, a refresh token and the granted scopes"
token=$(q -c "SELECT tokenvault.access_token('$a')")
is "$(curl -s -o /dev/null -w '%{http_code}' -H @- "$long/me" <<<"Authorization: Bearer $token")" 200 \
	"the provider accepts the access token (userinfo)"
is "$(sqlstate "SELECT tokenvault.complete_authorization('$(q -c "SELECT state FROM tokenvault.auth_states LIMIT 1")x', 'code')")" 22023 \
	"an unknown state is refused"

# --- refresh with rotation, twice in a row
reset "$long"
rt0=$(secret_md5 "$a" refresh_token)
q -c "SELECT tokenvault.refresh_auth('$a')" >/dev/null
rt1=$(secret_md5 "$a" refresh_token)
q -c "SELECT tokenvault.refresh_auth('$a')" >/dev/null
rt2=$(secret_md5 "$a" refresh_token)
is "$([ "$rt0" != "$rt1" ] && [ "$rt1" != "$rt2" ] && [ "$rt0" != "$rt2" ] && echo rotated)" rotated \
	"two refreshes in a row: each stores the new, rotated refresh token"
is "$(count "$long" by_grant.refresh_token)" 2 "  ... with one token request each"
token=$(q -c "SELECT tokenvault.access_token('$a')")
is "$(curl -s -o /dev/null -w '%{http_code}' -H @- "$long/me" <<<"Authorization: Bearer $token")" 200 \
	"  ... and the newest access token works"

# --- client_secret_post
b=$(authorize code-post)
is "$(q -c "SELECT status FROM tokenvault.auths WHERE id = '$b'")" active "client_auth post: the code is exchanged"
q -c "SELECT tokenvault.refresh_auth('$b')" >/dev/null && ok "  ... and the token refreshed"

# --- re-authorizing an auth in place keeps its id
before=$(secret_md5 "$b" refresh_token)
is "$(authorize code-post "$b")" "$b" "authorize_url(auth_id => ...) re-authorizes the auth in place"
[ "$(secret_md5 "$b" refresh_token)" != "$before" ] && ok "  ... with the new grant's tokens" || not_ok "  ... with the new grant's tokens"

# --- client_credentials: fetched at create_auth, fetched again after expiry
reset "$short"
c=$(q -c "SELECT tokenvault.create_auth('$user', '$(client cc-short)')")
is "$(count "$short" by_grant.client_credentials)" 1 "client_credentials: create_auth fetches the first token"
first=$(secret_md5 "$c" access_token)
expired() { [ "$(q -c "SELECT expires_at <= now() FROM tokenvault.auths WHERE id = '$1'")" = t ]; }
wait_until 10 "the client_credentials token expires" expired "$c"
is "$(PGOPTIONS="-c tokenvault.min_validity=0" q -c "SELECT md5(tokenvault.access_token('$c')) <> '$first'")" t \
	"  ... and after it expired access_token() fetches a new one"
is "$(count "$short" by_grant.client_credentials)" 2 "  ... with one more client_credentials request"

# --- password grant
p=$(q -v pw="$TV_USER_PASSWORD" <<<"SELECT tokenvault.create_auth('$user', '$(client pw)', 'alice at oidc',
        jsonb_build_object('username', 'alice', 'password', :'pw'))")
is "$(q -c "SELECT status || ' ' || (tokenvault._open_auth(secret, id) ?& ARRAY['access_token', 'refresh_token', 'password'])
             FROM tokenvault.auths WHERE id = '$p'")" "active true" \
	"password grant: create_auth fetches a token and keeps the credentials"
q -c "SELECT tokenvault.refresh_auth('$p')" >/dev/null && ok "  ... and refreshes it with its refresh token"
is "$(sqlstate "SELECT tokenvault.create_auth('$user', '$(client pw)', 'wrong', '{\"username\": \"alice\", \"password\": \"TVSECRET-pw-0123456789abcdef\"}')")" \
	28000 "a wrong password is refused as invalid_authorization_specification"
is "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE name = 'wrong'")" 0 "  ... and no auth is left behind"

# --- the provider's tokens are its own strings, without the marker the
# harness scans for: look for each one in the server log here
q -c "SELECT v FROM tokenvault.auths a, jsonb_each_text(tokenvault._open_auth(a.secret, a.id)) x(k, v)
       WHERE k IN ('access_token', 'refresh_token', 'id_token')" >"$TV_TMP/issued-tokens"
is "$(grep -cF -f "$TV_TMP/issued-tokens" "$TV_LOG" || true)" 0 \
	"none of the $(wc -l <"$TV_TMP/issued-tokens") tokens the provider issued appears in the server log"
rm -f "$TV_TMP/issued-tokens"

# --- revocation (RFC 7009)
reset "$long"
rt=$(q -c "SELECT tokenvault._open_auth(secret, id)->>'refresh_token' FROM tokenvault.auths WHERE id = '$a'")
q -c "SELECT tokenvault.delete_auth('$a', revoke => true)" >/dev/null
is "$(count "$long" revoke)" 1 "delete_auth(revoke => true) revokes at the provider"
is "$(curl -s -u "tv-code:$TV_CLIENT_SECRET" -d grant_type=refresh_token --data-urlencode "refresh_token@-" "$long/token" < <(printf %s "$rt") |
	node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).error))")" invalid_grant \
	"  ... after which the refresh token is refused"
is "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE id = '$a'")" 0 "  ... and the auth is gone"

[ -n "${TV_KEEP_DB:-}" ] || dropdb --force "$db"
done_testing
