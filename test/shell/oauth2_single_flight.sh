#!/usr/bin/env bash
# Single flight and durability against the real OAuth2 server, whose refresh
# tokens rotate and which revokes the whole grant when a used one comes back:
#  - 50 sessions calling access_token() on one expired auth cause exactly one
#    token request, and all get the same new token;
#  - a refresh made for a transaction that rolls back is kept, so the next
#    refresh (with the rotated refresh token) still succeeds.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
[ -n "${TV_DATA:-}" ] || cluster_start
oidc_start ACCESS_TTL=2

db=tv_flight_$$
createdb "$db"
export PGDATABASE=$db
# tokens live 2 s here: ask for 1 s of validity, not the default 30
export PGOPTIONS="-c tokenvault.min_validity=1"
q -v url="$TV_OIDC_URL" -v secret="$TV_CLIENT_SECRET" -v pw="$TV_USER_PASSWORD" <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
SELECT tokenvault.create_client('oidc', 'oidc', 'oauth2', jsonb_build_object(
    'grant', 'password', 'client_id', 'tv-pw', 'client_secret', :'secret',
    'allow_insecure_http', true, 'token_url', :'url' || '/token', 'scopes', '["openid", "offline_access"]'::jsonb)) AS c \gset
SELECT tokenvault.create_auth(tokenvault.create_user('alice'), :'c', 'alice',
    jsonb_build_object('username', 'alice', 'password', :'pw')) AS a \gset
SQL
auth=$(q -c "SELECT id FROM tokenvault.auths")
counts() { curl -sf "$TV_OIDC_URL/_count"; }
grant_count() { counts | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).by_grant['$1']??0))"; }
token_requests() { counts | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).token))"; }
expired() { [ "$(q -c "SELECT expires_at <= now() FROM tokenvault.auths WHERE id = '$auth'")" = t ]; }
md5_of() { q -c "SELECT md5(tokenvault._open_auth(secret, id)->>'$1') FROM tokenvault.auths WHERE id = '$auth'"; }

# --- 50 sessions at once on an expired auth
wait_until 10 "the token expires" expired
old=$(md5_of access_token)
curl -sf -X POST "$TV_OIDC_URL/_reset" >/dev/null
# each session queues on an advisory lock held here, so that all 50 call
# access_token() together once it is released
exec 3> >(psql -X -q -At >/dev/null)
echo "SELECT pg_advisory_lock(4242);" >&3
holding() { [ "$(q -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted")" = 1 ]; }
wait_until 10 "the gate is closed" holding
pids=()
for i in $(seq 1 50); do
	psql -X -q -At -c "SELECT md5(tokenvault.access_token('$auth')) FROM (SELECT pg_advisory_lock_shared(4242)) gate" \
		>"$TV_TMP/flight.$i" 2>&1 &
	pids+=($!)
done
queued() { [ "$(q -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted")" = 50 ]; }
wait_until 30 "50 sessions wait at the gate" queued
echo "SELECT pg_advisory_unlock(4242);" >&3
exec 3>&-
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
is "$failed" 0 "50 concurrent access_token() calls all succeed"
is "$(token_requests)" 1 "  ... with exactly one token request at the provider"
is "$(sort -u "$TV_TMP"/flight.* | grep -c .)" 1 "  ... and all 50 get the same token"
is "$(sort -u "$TV_TMP"/flight.* | head -n 1)" "$(md5_of access_token)" "  ... which is the new one, stored"
[ "$(md5_of access_token)" != "$old" ] && ok "  ... not the expired one" || not_ok "  ... not the expired one"

# --- a refresh is not rolled back with its caller
wait_until 10 "the token expires again" expired
rt_before=$(md5_of refresh_token)
q <<SQL >/dev/null
BEGIN;
SELECT tokenvault.access_token('$auth');
ROLLBACK;
SQL
rt_after=$(md5_of refresh_token)
[ "$rt_after" != "$rt_before" ] && ok "a refresh made for a transaction that rolled back is kept (rotated refresh token stored)" ||
	not_ok "a refresh made for a transaction that rolled back is kept (rotated refresh token stored)"
wait_until 10 "the token expires once more" expired
before=$(grant_count refresh_token)
q -c "SELECT tokenvault.access_token('$auth') IS NOT NULL" >/dev/null &&
	ok "  ... so the next refresh succeeds at a provider that revokes grants on refresh-token reuse" ||
	not_ok "  ... so the next refresh succeeds at a provider that revokes grants on refresh-token reuse"
is "$(grant_count refresh_token)" $((before + 1)) "  ... with one more refresh_token request"
is "$(q -c "SELECT status || ' ' || failure_count FROM tokenvault.auths WHERE id = '$auth'")" "active 0" \
	"  ... and the auth stays active"

dropdb --force "$db"
done_testing
