#!/usr/bin/env bash
# Crashes mid-batch lose nothing: kill -9 of the worker, then an immediate
# restart of the server, each while refreshes are in flight.  The worker is
# back within 10 s, and every auth ends refreshed and active, none lost,
# none stuck.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
unset TV_DATA
TV_EXTRA_CONF="tokenvault.database = tv_worker" cluster_start
export PGDATABASE=tv_worker
createdb tv_worker
fault_start
# the peer answers with a new token after 1.5 s: a batch is in flight a while
q -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
SELECT tokenvault.create_client('Slow', 'slow', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', :'url' || '/a', 'allow_insecure_http', true, 'token_url', :'url' || '/slow/token?ms=1500')) AS c \gset
SELECT count(tokenvault.create_auth(tokenvault.create_user('user-' || i), :'c', 'auth ' || i, jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
           'expires_in', 30)))
  FROM generate_series(1, 200) i;
SQL
ids=$(q -c "SELECT md5(string_agg(id::text, ',' ORDER BY id)) FROM tokenvault.auths")
worker_pid() { psql -X -At -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tokenvault worker'" 2>/dev/null; }
in_flight() { [ "$(curl -sf "$TV_FAULT_URL/_count/slow")" -ge "$1" ]; }
new_worker() { local p; p=$(worker_pid); [ -n "$p" ] && [ "$p" != "$1" ]; }
all_refreshed() {
	[ "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE status = 'active' AND expires_at > now() + interval '30 min'")" = 200 ]
}
check_after() {
	local what=$1
	wait_until 60 "every auth refreshed after $what" all_refreshed && ok "  ... then every auth is refreshed and active"
	is "$(q -c "SELECT md5(string_agg(id::text, ',' ORDER BY id)) FROM tokenvault.auths")" "$ids" "  ... none lost"
	is "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE status NOT IN ('active') OR refresh_at IS NULL")" 0 \
		"  ... none stuck or unscheduled"
}

# kill -9 of the worker (the postmaster restarts every backend)
wait_until 20 "refreshes in flight" in_flight 10
old=$(worker_pid)
kill -9 "$old"
start=$(millis)
wait_until 10 "the worker is back after kill -9" new_worker "$old" &&
	ok "after kill -9 mid-batch the worker is back within 10 s ($(($(millis) - start)) ms)"
check_after "kill -9"

# an immediate restart of the server, mid-batch
q -c "UPDATE tokenvault.auths SET expires_at = now() + interval '10 s'" >/dev/null
before=$(curl -sf "$TV_FAULT_URL/_count/slow")
wait_until 20 "refreshes in flight again" in_flight $((before + 10))
old=$(worker_pid)
start=$(millis)
as_server_user pg_ctl -D "$TV_DATA" -l "$TV_LOG" -m immediate -w -t 60 restart >/dev/null
wait_until 10 "the worker is back after an immediate restart" new_worker "$old" &&
	ok "after pg_ctl restart -m immediate mid-batch the worker is back within 10 s ($(($(millis) - start)) ms)"
check_after "an immediate restart"
done_testing
