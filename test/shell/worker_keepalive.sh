#!/usr/bin/env bash
# The worker keeps tokens alive with nobody asking: with refresh_lead 2 s
# and 5-second tokens from the real OAuth2 server, 100 auths stay valid for
# 60 s without one access_token() call.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
unset TV_DATA
TV_EXTRA_CONF="tokenvault.database = tv_worker
tokenvault.refresh_lead = 2" cluster_start
export PGDATABASE=tv_worker
createdb tv_worker
oidc_start ACCESS_TTL=5
q -v url="$TV_OIDC_URL" -v secret="$TV_CLIENT_SECRET" -v pw="$TV_USER_PASSWORD" <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
SELECT tokenvault.create_client('oidc', 'oidc', 'oauth2', jsonb_build_object(
    'grant', 'password', 'client_id', 'tv-pw', 'client_secret', :'secret',
    'allow_insecure_http', true, 'token_url', :'url' || '/token', 'scopes', '["openid", "offline_access"]'::jsonb)) AS c \gset
SELECT count(tokenvault.create_auth(tokenvault.create_user('user-' || i), :'c', 'auth ' || i,
                                    jsonb_build_object('username', 'alice', 'password', :'pw')))
  FROM generate_series(1, 100) i;
SQL
is "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE expires_at > now() AND refresh_at IS NOT NULL")" 100 \
	"100 auths with 5-second tokens, each scheduled"
curl -sf -X POST "$TV_OIDC_URL/_reset" >/dev/null

# 60 s of checks, about one a second; nothing calls access_token()
stays_zero 60 "no auth expired or stopped being active" \
	q -c "SELECT count(*) FROM tokenvault.auths WHERE expires_at <= now() OR status <> 'active'"
refreshes=$(curl -sf "$TV_OIDC_URL/_count" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).by_grant.refresh_token??0))")
# each token is refreshed about every 3 s: 100 auths over 60 s is some 2000
is "$([ "$refreshes" -ge 1500 ] && echo yes || echo "only $refreshes")" yes \
	"the server saw the worker's refresh_token requests ($refreshes)"
is "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND query ~ 'access_token' AND pid <> pg_backend_pid()")" 0 \
	"  ... and no session asked for a token"
is "$(q -c "SELECT refreshes_failed FROM tokenvault.stats")" 0 "  ... none failed"
done_testing
