#!/usr/bin/env bash
# A worker for every database that has the extension (launcher.c): started
# when CREATE EXTENSION commits, each refreshing its own database's auths
# with nobody asking; stopped by DROP EXTENSION; out of DROP DATABASE's way
# at once; back after a crash; bounded by tokenvault.max_databases, past
# which the databases left without one are named in the log; and no role
# that does not own a database can stop its worker.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
unset TV_DATA
TV_EXTRA_CONF="tokenvault.database = ''
tokenvault.max_databases = 3
max_worker_processes = 16" cluster_start
fault_start

worker_of() { q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tokenvault worker' AND datname = '$1'"; }
has_worker() { [ -n "$(worker_of "$1")" ]; }
no_worker() { [ -z "$(worker_of "$1")" ]; }

# an auth whose token expires in 4 s (due at half its life), at the fault peer's "ok"
make_auth() {
	q -d "$1" -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
SELECT tokenvault.create_auth(tokenvault.create_user('u'),
    tokenvault.create_client('ok', 'svc', 'oauth2', jsonb_build_object(
        'client_id', 'c', 'auth_url', 'http://127.0.0.1:1/a', 'allow_insecure_http', true,
        'token_url', :'url' || '/ok/token')),
    'kept alive', jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text),
        'refresh_token', 'TVSECRET-rt-' || md5(random()::text), 'expires_at', now() + interval '4 seconds'));
SQL
}
refreshed() { [ "$(q -d "$1" -c "SELECT count(*) FROM tokenvault.auths WHERE last_refreshed_at IS NOT NULL AND expires_at > now() + interval '10 minutes'")" = 1 ]; }

for d in tv_a tv_b tv_c tv_d; do createdb "$d"; done
is "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tokenvault worker'")" 0 \
	"no worker where the extension is not"

for d in tv_a tv_b tv_c; do
	t0=$(millis)
	q -d "$d" -c "CREATE EXTENSION tokenvault"
	wait_until 10 "a worker in $d" has_worker "$d" && ok "a worker in $d within 10 s of CREATE EXTENSION ($(($(millis) - t0)) ms)"
done
for d in tv_a tv_b tv_c; do
	is "$(q -d "$d" -c "SELECT worker_pid = $(worker_of "$d") AND worker_state IN ('idle', 'working') FROM tokenvault.stats")" t \
		"  ... $d's stats show its own worker"
	make_auth "$d"
done
for d in tv_a tv_b tv_c; do
	wait_until 10 "$d's auth refreshed" refreshed "$d" && ok "$d's auth is refreshed by its worker, with no access_token() call" ||
		q -d "$d" -c "SELECT status, expires_at - now(), refresh_at - now(), last_refreshed_at, last_error, failure_count FROM tokenvault.auths" -c "SELECT * FROM tokenvault.stats"
done
is "$(curl -sf "$TV_FAULT_URL/_count/ok")" 3 "  ... one request each"

# a fourth database past tokenvault.max_databases = 3: named in the log
q -d tv_d -c "CREATE EXTENSION tokenvault"
wait_until 10 "the log names tv_d" grep -q 'max_databases (3) reached: no tokenvault worker for database "tv_d"' "$TV_LOG" &&
	ok "past tokenvault.max_databases, a LOG line names the database left without a worker"
grep -A1 'max_databases (3) reached' "$TV_LOG" | grep -q 'HINT:  Raise tokenvault.max_databases' &&
	ok "  ... with a hint" || not_ok "  ... with a hint"
is "$(worker_of tv_d)" "" "  ... and it has none"

# a role that does not own tv_c cannot stop its worker by trying to drop it
q -c "CREATE ROLE mallory LOGIN CREATEDB"
pid=$(worker_of tv_c)
for stmt in "DROP DATABASE tv_c" "ALTER DATABASE tv_c RENAME TO tv_x" "CREATE DATABASE tv_copy TEMPLATE tv_c"; do
	q -U mallory -c "$stmt" 2>/dev/null && not_ok "mallory: $stmt succeeded" || true
done
is "$(worker_of tv_c)" "$pid" "a role that does not own a database cannot stop its worker (DROP, RENAME, TEMPLATE)"

# DROP EXTENSION stops the worker; its slot goes to tv_d
pid=$(worker_of tv_a)
q -d tv_a -c "DROP EXTENSION tokenvault CASCADE"
wait_until 10 "tv_a's worker gone" no_worker tv_a && ok "DROP EXTENSION stops the database's worker"
wait_until 10 "tv_d gets the free slot" has_worker tv_d && ok "  ... and the database left without one gets it"
grep -q "tokenvault worker leaves database \"tv_a\": the extension is not there" "$TV_LOG" &&
	ok "  ... the worker saying why it left" || not_ok "  ... the worker saying why it left"

# a plain DROP DATABASE is not held up by the worker (PostgreSQL waits 5 s for it, then fails)
t0=$(millis)
if q -c "DROP DATABASE tv_b"; then
	ms=$(($(millis) - t0))
	is "$([ "$ms" -lt 2000 ] && echo quick || echo "$ms ms")" quick "DROP DATABASE of a database with a worker succeeds at once ($ms ms)"
else
	not_ok "DROP DATABASE of a database with a worker succeeds at once"
fi
# and one that fails gives the database its worker back
q -c "CREATE ROLE tv_c_owner LOGIN" -c "ALTER DATABASE tv_c OWNER TO tv_c_owner"
psql -X -q -d tv_c -c "SELECT pg_sleep(30)" &
sleeper=$!
session_in_tv_c() { [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE datname = 'tv_c' AND backend_type = 'client backend'")" = 1 ]; }
wait_until 10 "a session in tv_c" session_in_tv_c
q -U tv_c_owner -d postgres -c "DROP DATABASE tv_c" 2>/dev/null && not_ok "DROP DATABASE with a session in it succeeded" || true
kill "$sleeper" 2>/dev/null || true
wait "$sleeper" 2>/dev/null || true
wait_until 20 "tv_c's worker back" has_worker tv_c && ok "a DROP DATABASE that fails leaves the database with its worker again"

# a worker killed with -9 (the server restarts its processes) is back
pid=$(worker_of tv_c)
t0=$(millis)
kill -9 "$pid"
back() { local p; p=$(worker_of tv_c 2>/dev/null) && [ -n "$p" ] && [ "$p" != "$pid" ]; }
wait_until 10 "a new worker in tv_c" back && ok "a worker killed with -9 is back within 10 s ($(($(millis) - t0)) ms)"
wait_until 10 "tv_d's worker back" has_worker tv_d && ok "  ... and the other databases' too"

# tokenvault.database, when set, limits the workers to that database (on reload)
q -c "ALTER SYSTEM SET tokenvault.database = 'tv_d'" -c "SELECT pg_reload_conf()" >/dev/null
wait_until 10 "only tv_d served" no_worker tv_c && ok "tokenvault.database limits the workers to that database"
has_worker tv_d && ok "  ... which keeps its worker" || not_ok "  ... which keeps its worker"
q -c "ALTER SYSTEM RESET tokenvault.database" -c "SELECT pg_reload_conf()" >/dev/null
wait_until 10 "tv_c served again" has_worker tv_c && ok "  ... and reset, every database has its worker again"

# a database without a worker whose refresher was started on demand: DROP DATABASE is not held up by it either
q -c "ALTER SYSTEM SET tokenvault.database = 'tv_d'" -c "SELECT pg_reload_conf()" >/dev/null
wait_until 10 "tv_c's worker gone again" no_worker tv_c
q -d tv_c -c "SELECT tokenvault.refresh_auth(id) FROM tokenvault.auths" >/dev/null
is "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tokenvault refresher' AND datname = 'tv_c'")" 1 \
	"a refresh asked for where no worker runs starts a refresher there"
t0=$(millis)
if q -c "DROP DATABASE tv_c"; then
	ms=$(($(millis) - t0))
	is "$([ "$ms" -lt 2000 ] && echo quick || echo "$ms ms")" quick "  ... and DROP DATABASE is not held up by it ($ms ms)"
else
	not_ok "  ... and DROP DATABASE is not held up by it"
fi

# a name that is no database is said, not silently served by nobody
q -c "ALTER SYSTEM SET tokenvault.database = 'tv_nope'" -c "SELECT pg_reload_conf()" >/dev/null
wait_until 10 "the log says tv_nope is no database" grep -q 'tokenvault.database is "tv_nope", which is no database' "$TV_LOG" &&
	ok "tokenvault.database naming no database is logged"
done_testing
