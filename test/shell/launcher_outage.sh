#!/usr/bin/env bash
# One provider down does not hold up the other databases: three databases
# with the extension, each with its own worker; the provider of one of them
# refuses connections (127.0.0.1 port 1, where nothing listens).  For 40 s
# the other two databases' auths (5-second tokens from the real OAuth2
# server) never expire, and the failing database's auths back off as the
# README says (10 s, doubling, times a random factor in [0.5, 1]): a few
# tries each, their old tokens left as they were.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
unset TV_DATA
TV_EXTRA_CONF="tokenvault.database = ''
tokenvault.refresh_lead = 2
max_worker_processes = 16" cluster_start
oidc_start ACCESS_TTL=5

for d in tv_up1 tv_up2 tv_down; do
	createdb "$d"
	q -d "$d" -c "CREATE EXTENSION tokenvault"
done
for d in tv_up1 tv_up2; do
	q -d "$d" -v url="$TV_OIDC_URL" -v secret="$TV_CLIENT_SECRET" -v pw="$TV_USER_PASSWORD" <<'SQL' >/dev/null
SELECT tokenvault.create_client('oidc', 'oidc', 'oauth2', jsonb_build_object(
    'grant', 'password', 'client_id', 'tv-pw', 'client_secret', :'secret',
    'allow_insecure_http', true, 'token_url', :'url' || '/token', 'scopes', '["openid", "offline_access"]'::jsonb)) AS c \gset
SELECT count(tokenvault.create_auth(tokenvault.create_user('user-' || i), :'c', 'auth ' || i,
                                    jsonb_build_object('username', 'alice', 'password', :'pw')))
  FROM generate_series(1, 50) i;
SQL
done
# tokens that expire in 3 s: due at once, and expired before long
q -d tv_down <<'SQL' >/dev/null
SELECT tokenvault.create_client('down', 'svc', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', 'http://127.0.0.1:1/a', 'allow_insecure_http', true,
    'token_url', 'http://127.0.0.1:1/token')) AS c \gset
SELECT count(tokenvault.create_auth(tokenvault.create_user('user-' || i), :'c', 'auth ' || i,
    jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text),
                       'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
                       'expires_at', now() + interval '3 seconds')))
  FROM generate_series(1, 50) i;
SQL
for d in tv_up1 tv_up2 tv_down; do
	is "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tokenvault worker' AND datname = '$d'")" 1 \
		"$d has its worker"
done
t0=$(q -c "SELECT now()")

lapsed() {
	local n=0 d
	for d in tv_up1 tv_up2; do
		n=$((n + $(q -d "$d" -c "SELECT count(*) FROM tokenvault.auths WHERE expires_at <= now() OR status <> 'active'")))
	done
	echo "$n"
}
stays_zero 40 "no auth of the two databases whose provider is up expired or stopped being active" lapsed
for d in tv_up1 tv_up2; do
	is "$(q -d "$d" -c "SELECT count(*) FROM tokenvault.auths WHERE last_refreshed_at > '$t0'::timestamptz + interval '30 seconds'")" 50 \
		"  ... $d's auths were still being refreshed at the end"
done
# the failing database: every auth tried, none more than its backoff allows
# (tries at 0, then after at least 5, 10, 20 s: at most 4 in 40 s)
read -r tried most < <(q -d tv_down -F ' ' -c "
    SELECT count(*) FILTER (WHERE failure_count >= 1), max(failure_count) FROM tokenvault.auths")
is "$tried" 50 "every auth of the database whose provider refuses connections was tried"
is "$([ "$most" -le 4 ] && echo yes || echo "$most tries")" yes "  ... and backed off: at most 4 tries each in 40 s (most: $most)"
is "$(q -d tv_down -c "SELECT count(*) FROM tokenvault.auths WHERE status = 'active' AND last_error ~* 'connect'")" 50 \
	"  ... each still active, its last_error naming the connection failure"
# (one whose backoff ends just now is due, not overdue: the tries above say it does not spin)
is "$(q -d tv_down -c "SELECT count(*) FROM tokenvault.auths WHERE refresh_at > now() - interval '5 seconds'")" 50 \
	"  ... and its next try scheduled (refresh_at), none left overdue"
done_testing
