#!/usr/bin/env bash
# A refresh's answer is committed as synchronously as tokenvault says,
# whatever the application asks for; a commit whose synchronous-replication
# wait is cut short is not handed out as safe; a standby reads refreshed
# tokens at once with remote_apply, and never an expired one under load
# (issue 17, items 1 and 4).
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
# '*': whichever standby connects is the synchronous one
TV_EXTRA_CONF="synchronous_standby_names = '*'
tokenvault.http_timeout = 10" cluster_start
fault_start
oidc_start ACCESS_TTL=6

standby_create
sb_data=$TV_SB_DATA sb_port=$TV_SB_PORT
standby_start
sb() { PGPORT=$sb_port q "$@"; }
streaming() { [ "$(q -c "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync' AND state = 'streaming'")" = 1 ]; }
wait_until 30 "the standby streams, synchronously" streaming && ok "a synchronous standby streams from the test cluster"

# An application that asks for speed, in every way it can
q -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
ALTER DATABASE postgres SET synchronous_commit = off;
CREATE ROLE app LOGIN IN ROLE tokenvault_app;
ALTER ROLE app SET synchronous_commit = local;
SELECT tokenvault.admit('app', 'app');
SELECT tokenvault.create_client('Slow', 'slow', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', :'url' || '/a', 'allow_insecure_http', true,
    'token_url', :'url' || '/slow/token?ms=3000')) AS c \gset
SELECT tokenvault.create_auth(tokenvault.create_user('u1'), :'c', 'due', jsonb_build_object(
    'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
    'expires_in', 600));
SQL
auth="(SELECT id FROM tokenvault.auths WHERE name = 'due')"
wait_until 30 "the standby has the auth" sh -c "[ \"\$(PGPORT=$sb_port psql -X -At -c \"SELECT count(*) FROM tokenvault.auths\")\" = 1 ]"

# ---- a refresher terminated while it waits for the standby ----
# The app asks for a token that is due; while the provider answers, the
# standby goes away: the refresher's commit of the answer must wait for it
# (synchronous_commit off and local notwithstanding), and, terminated there,
# must not hand the token to its caller as if a failover could not lose it.
q -c "UPDATE tokenvault.auths SET expires_at = now() + interval '5 s', last_refreshed_at = now() - interval '1 hour' WHERE id = $auth" >/dev/null
wait_until 30 "the standby has the new expiry" sh -c "[ \"\$(PGPORT=$sb_port psql -X -At -c \"SELECT expires_at < now() + interval '1 min' FROM tokenvault.auths\")\" = t ]"
(PGUSER=app sqlstate "SELECT md5(tokenvault.access_token($auth))" >"$TV_TMP/caller.out") &
caller=$!
wait_until 30 "the refresh request reaches the provider" sh -c "[ \"\$(curl -sf $TV_FAULT_URL/_count/slow)\" -ge 1 ]"
standby_stop
waiting_sql="SELECT pid FROM pg_stat_activity WHERE backend_type IN ('tokenvault worker', 'tokenvault refresher') AND wait_event = 'SyncRep'"
wait_until 30 "the refresher waits for the synchronous standby to confirm the answer" \
	sh -c "[ -n \"\$(psql -X -At -c \"$waiting_sql\")\" ]" &&
	ok "the refresher's commit waits for the synchronous standby although the database and the role say off and local"
q -c "SELECT pg_terminate_backend(pid) FROM ($waiting_sql) w" >/dev/null
wait "$caller" || true
is "$(cat "$TV_TMP/caller.out")" 40003 \
	"the caller gets 40003, not the token the terminated refresher committed here alone"
is "$(q -c "SELECT refreshes_unconfirmed FROM tokenvault.stats")" 1 "  ... counted in tokenvault.stats (refreshes_unconfirmed)"
is "$(grep -c 'is committed on this server only' "$TV_LOG")" 1 "  ... and logged"
is "$(q -c "SELECT status = 'active' AND expires_at > now() + interval '30 min' FROM tokenvault.auths WHERE id = $auth")" t \
	"  ... while the commit itself stands on this server"

# ---- remote_apply: the standby reads the new token at once ----
# The standby applies commits a second late; with remote_apply the refresh
# is not over before the standby shows it.
echo "recovery_min_apply_delay = '1s'" >>"$sb_data/postgresql.conf"
standby_start
wait_until 30 "the standby streams again" streaming
q -c "ALTER SYSTEM SET tokenvault.synchronous_commit = remote_apply" -c "SELECT pg_reload_conf()" >/dev/null
q -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
SELECT tokenvault.update_client(id, jsonb_build_object('token_url', :'url' || '/ok/token')) FROM tokenvault.clients;
SQL
same=0
for i in 1 2 3; do
	# (refresh_auth() refreshes at most every min_refresh_interval)
	q -c "UPDATE tokenvault.auths SET last_refreshed_at = now() - interval '1 hour' WHERE id = $auth" >/dev/null
	q -c "SELECT tokenvault.refresh_auth($auth)" >/dev/null
	primary=$(q -c "SELECT md5(tokenvault.access_token($auth))")
	standby=$(sb -c "SELECT md5(tokenvault.access_token($auth))")
	[ "$primary" = "$standby" ] && same=$((same + 1))
done
is "$same" 3 "with tokenvault.synchronous_commit = remote_apply, the standby hands out the new token as soon as refresh_auth() returns (3 of 3)"

# ---- the standby under load never hands out an expired token ----
sed -i '/recovery_min_apply_delay/d' "$sb_data/postgresql.conf"
standby_stop
standby_start
wait_until 30 "the standby streams again" streaming
q -v url="$TV_OIDC_URL" -v secret="$TV_CLIENT_SECRET" -v pw="$TV_USER_PASSWORD" <<'SQL' >/dev/null
SELECT tokenvault.create_client('oidc', 'oidc', 'oauth2', jsonb_build_object(
    'grant', 'password', 'client_id', 'tv-pw', 'client_secret', :'secret',
    'allow_insecure_http', true, 'token_url', :'url' || '/token', 'scopes', '["openid", "offline_access"]'::jsonb)) AS c \gset
SELECT count(tokenvault.create_auth(tokenvault.create_user('load-' || i), :'c', 'load ' || i,
                                    jsonb_build_object('username', 'alice', 'password', :'pw')))
  FROM generate_series(1, 10) i;
SQL
wait_until 30 "the standby has the ten auths" sh -c "[ \"\$(PGPORT=$sb_port psql -X -At -c \"SELECT count(*) FROM tokenvault.auths WHERE name LIKE 'load %'\")\" = 10 ]"
calls=0 expired=0 errors=0
deadline=$(($(date +%s) + 20))
while [ "$(date +%s)" -lt "$deadline" ]; do
	for i in $(seq 1 10); do
		calls=$((calls + 1))
		if ! token=$(sb -c "SELECT tokenvault.access_token((SELECT id FROM tokenvault.auths WHERE name = 'load $i'))" 2>/dev/null); then
			errors=$((errors + 1))
			continue
		fi
		# the provider says whether it is still valid
		active=$(curl -sf -u "tv-pw:$TV_CLIENT_SECRET" --data-urlencode "token=$token" "$TV_OIDC_URL/token/introspection" |
			node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).active))")
		[ "$active" = true ] || expired=$((expired + 1))
	done
done
echo "# $calls calls on the standby over 20 s while the primary's worker refreshed 6-second tokens"
is "$expired" 0 "the standby never handed out a token the provider no longer accepts"
is "$errors" 0 "  ... and every call had a token to hand out"
done_testing
