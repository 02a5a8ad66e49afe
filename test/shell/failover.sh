#!/usr/bin/env bash
# A failover under pg_auto_failover loses no committed rotation and names
# the refreshes that were in flight (issue 17, item 2).
#
# A monitor and two nodes on loopback, each node with tokenvault preloaded;
# the real OAuth2 server issues 10-second tokens whose refresh tokens rotate
# on every use (a reused one revokes the grant), and holds each token
# answer 300 ms so that a batch is always in flight.  200 auths are kept
# alive by the primary's worker; the link to the standby stalls (its
# walsender stopped) until the primary has 16 kB of WAL the standby lacks
# or, with a synchronous standby, its worker waits for it;
# then the primary's keeper, its postmaster and the postmaster's processes
# are killed with kill -9 in the middle of a batch; the monitor promotes the
# secondary.  Then:
#   - every refresh seen committed on the primary before the kill is on the
#     new primary (no auth's version went back);
#   - the auths whose refresh was in flight end needs_reauth with an
#     auth.refresh_lost event that says so, and they are exactly those whose
#     grants the provider revoked for a reused refresh token;
#   - within 30 s of the promotion the new primary's worker refreshes, and it
#     waited for the read-only moment on its latch (no error loop);
#   - no other auth is expired or stops being active over the next 60 s.
# TV_FAILOVER_REPLICATION=async runs the same with asynchronous replication
# (the standby out of the write quorum) and reports what was lost there.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
mode=${TV_FAILOVER_REPLICATION:-sync}
N=200

command -v pg_autoctl >/dev/null || { echo "not ok - pg_autoctl is not installed (postgresql-15-auto-failover)"; exit 1; }

TV_TMP=$(mktemp -d "${TMPDIR:-/tmp}/tokenvault.XXXXXX")
chmod 755 "$TV_TMP"
export TV_TMP
base=$((20000 + $$ % 10000))
mon_port=$base n1_port=$((base + 1)) n2_port=$((base + 2))
mon="$TV_TMP/monitor" n1="$TV_TMP/node1" n2="$TV_TMP/node2"
TV_KEYS="$TV_TMP/keys/tokenvault.keys"
key_file_create "$TV_KEYS"
# pg_autoctl keeps its state under XDG directories: this test's own
export XDG_CONFIG_HOME="$TV_TMP/xdg/config" XDG_DATA_HOME="$TV_TMP/xdg/data" XDG_RUNTIME_DIR="$TV_TMP/xdg/run"
mkdir -p "$XDG_CONFIG_HOME" "$XDG_DATA_HOME" "$XDG_RUNTIME_DIR"
[ "$(id -u)" = 0 ] && chown -R postgres: "$TV_TMP"
export PGHOST=127.0.0.1 PGUSER=postgres PGDATABASE=postgres
autoctl() { as_server_user env PG_CONFIG="$PG_BINDIR/pg_config" pg_autoctl "$@"; }
monitor_uri="postgres://autoctl_node@127.0.0.1:$mon_port/pg_auto_failover?sslmode=disable"

KEEPERS=()
teardown() {
	local pid dir
	set +e
	# the new primary's events and errors, for the run's leak scan
	PGPORT=$n2_port leak_keep_cluster
	for pid in "${KEEPERS[@]}"; do kill -9 $(descendants "$pid") "$pid" 2>/dev/null || true; done
	for dir in "$n1" "$n2" "$mon"; do
		[ -f "$dir/postmaster.pid" ] && as_server_user "$PG_BINDIR/pg_ctl" -D "$dir" -m immediate stop >/dev/null 2>&1
	done
	for dir in "$n1" "$n2" "$mon"; do
		pid=$(head -n 1 "$dir/postmaster.pid" 2>/dev/null) && kill -9 "$pid" 2>/dev/null
	done
	TV_LOG=""
	TV_SCAN_LOGS+=("$n1"/log/*.log "$n2"/log/*.log "$mon"/log/*.log "$TV_TMP"/*.log)
	leak_keep_logs
	[ -n "${TV_KEEP:-}" ] && echo "kept in $TV_TMP" || rm -rf "$TV_TMP"
}
tv_at_exit teardown
descendants() {
	local c
	for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do
		echo "$c"
		descendants "$c"
	done
}
keeper_run() {
	as_server_user env PG_CONFIG="$PG_BINDIR/pg_config" XDG_CONFIG_HOME="$XDG_CONFIG_HOME" \
		XDG_DATA_HOME="$XDG_DATA_HOME" XDG_RUNTIME_DIR="$XDG_RUNTIME_DIR" \
		pg_autoctl run --pgdata "$1" >>"$TV_TMP/$(basename "$1").keeper.log" 2>&1 &
	KEEPERS+=($!)
	disown	# (its kill -9 is the test's, not news)
}
monq() { psql -X -q -At -p "$mon_port" -d pg_auto_failover -c "$1"; }
state_of() { monq "SELECT reportedstate FROM pgautofailover.node WHERE nodename = '$1'"; }
node_is() { [ "$(state_of "$1")" = "$2" ] && [ "$(monq "SELECT goalstate FROM pgautofailover.node WHERE nodename = '$1'")" = "$2" ]; }

# ---- the monitor, quick to see a node gone ----
autoctl create monitor --pgdata "$mon" --pgport "$mon_port" --hostname 127.0.0.1 --auth trust --no-ssl \
	--pgctl "$PG_BINDIR/pg_ctl" >"$TV_TMP/create-monitor.log" 2>&1 ||
	{ cat "$TV_TMP/create-monitor.log"; exit 1; }
cat >>"$mon/postgresql.conf" <<CONF
pgautofailover.health_check_period = 1000
pgautofailover.health_check_timeout = 1000
pgautofailover.health_check_max_retries = 1
pgautofailover.health_check_retry_delay = 500
pgautofailover.node_considered_unhealthy_timeout = 3000
pgautofailover.primary_demote_timeout = 5000
CONF
keeper_run "$mon"
wait_until 60 "the monitor runs" monq "SELECT 1"

# ---- two nodes, tokenvault preloaded on both ----
node_conf() {
	cat >>"$1/postgresql.conf" <<CONF
shared_preload_libraries = 'tokenvault'
tokenvault.key_file = '$TV_KEYS'
tokenvault.allowed_internal_hosts = '127.0.0.0/8, ::1'
tokenvault.http_timeout = 5
tokenvault.max_concurrent_refreshes = 64
log_min_messages = log
log_line_prefix = '%m [%p] %q%a '
CONF
}
autoctl create postgres --pgdata "$n1" --pgport "$n1_port" --hostname 127.0.0.1 --listen 127.0.0.1 --name node1 \
	--auth trust --no-ssl --monitor "$monitor_uri" --pgctl "$PG_BINDIR/pg_ctl" >"$TV_TMP/create-node1.log" 2>&1 ||
	{ cat "$TV_TMP/create-node1.log"; exit 1; }
node_conf "$n1"
keeper_run "$n1"
wait_until 90 "node1 is the single primary" node_is node1 single
autoctl create postgres --pgdata "$n2" --pgport "$n2_port" --hostname 127.0.0.1 --listen 127.0.0.1 --name node2 \
	--auth trust --no-ssl --monitor "$monitor_uri" --pgctl "$PG_BINDIR/pg_ctl" >"$TV_TMP/create-node2.log" 2>&1 ||
	{ cat "$TV_TMP/create-node2.log"; exit 1; }
grep -q "^shared_preload_libraries = 'tokenvault'" "$n2/postgresql.conf" || node_conf "$n2"
keeper_run "$n2"
wait_until 120 "node2 is node1's secondary" node_is node2 secondary
wait_until 60 "node1 is the primary" node_is node1 primary
if [ "$mode" = async ]; then
	autoctl set node replication-quorum false --pgdata "$n2" >"$TV_TMP/set-quorum.log" 2>&1 ||
		{ cat "$TV_TMP/set-quorum.log"; exit 1; }
	wait_until 60 "the primary replicates asynchronously" \
		sh -c "[ -z \"\$(psql -X -At -p $n1_port -c 'SHOW synchronous_standby_names')\" ]"
fi
n1q() { psql -X -q -At -v ON_ERROR_STOP=1 -p "$n1_port" "$@"; }
n2q() { psql -X -q -At -v ON_ERROR_STOP=1 -p "$n2_port" "$@"; }
ssn=$(n1q -c "SHOW synchronous_standby_names")
if [ "$mode" = sync ]; then
	is "$([ -n "$ssn" ] && echo set)" set "pg_auto_failover made node2 a synchronous standby ($ssn)"
else
	is "$ssn" "" "replication is asynchronous (node2 out of the write quorum)"
fi

# ---- 200 auths kept alive by node1's worker ----
oidc_start ACCESS_TTL=10 TOKEN_DELAY_MS=300
# an application that asks for speed: tokenvault's own commits are not weakened by it
n1q -c "ALTER DATABASE postgres SET synchronous_commit = off" >/dev/null
n1q -v url="$TV_OIDC_URL" -v secret="$TV_CLIENT_SECRET" -v pw="$TV_USER_PASSWORD" -v n=$N <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
SELECT tokenvault.create_client('oidc', 'oidc', 'oauth2', jsonb_build_object(
    'grant', 'password', 'client_id', 'tv-pw', 'client_secret', :'secret',
    'allow_insecure_http', true, 'token_url', :'url' || '/token', 'scopes', '["openid", "offline_access"]'::jsonb)) AS c \gset
SELECT count(tokenvault.create_auth(tokenvault.create_user('user-' || i), :'c', 'auth ' || i,
                                    jsonb_build_object('username', 'alice', 'password', :'pw')))
  FROM generate_series(1, :n) i;
SQL
alive() { [ "$(n1q -c "SELECT count(*) FROM tokenvault.auths WHERE status = 'active' AND expires_at > now() AND refresh_at IS NOT NULL")" = $N ]; }
wait_until 60 "the $N auths have tokens" alive
rotating() { [ "$(n1q -c "SELECT count(*) FROM tokenvault.auths WHERE version >= 3")" = $N ]; }
wait_until 60 "node1's worker has refreshed each auth twice" rotating &&
	ok "node1's worker keeps $N auths alive on 10-second tokens"
is "$(curl -sf "$TV_OIDC_URL/_count" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).grants_revoked))")" 0 \
	"  ... and the provider has revoked no grant"

# ---- the kill, in the middle of a batch ----
in_flight() { curl -sf "$TV_OIDC_URL/_count" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>process.exit(JSON.parse(s).in_flight>=5?0:1))"; }
wait_until 30 "token requests are in flight" in_flight
# The link to the standby stalls first (node1's walsender stopped), as a
# network does now and then, until node1 has WAL the standby lacks: with a
# synchronous standby the commits wait; asynchronous, they are acknowledged.
walsender=$(n1q -c "SELECT pid FROM pg_stat_replication")
kill -STOP $walsender
# (asynchronous: 16 kB of acknowledged commits; synchronous: the worker
# waiting for the standby, which stops it)
stalled() {
	[ "$(n1q -c "SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), sent_lsn) > 16384 FROM pg_stat_replication")" = t ] ||
		[ "$(n1q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tokenvault worker' AND wait_event = 'SyncRep'")" = 1 ]
}
wait_until 10 "node1 has WAL its standby lacks" stalled
# what node1 shows as committed just before the kill
n1q -c "SELECT id || ' ' || version FROM tokenvault.auths ORDER BY id" >"$TV_TMP/before.txt"
pm=$(head -n 1 "$n1/postmaster.pid")
kill -9 $(descendants "${KEEPERS[1]}" | while read -r p; do [ "$(ps -o comm= -p "$p")" = pg_autoctl ] && echo "$p"; done) "${KEEPERS[1]}" 2>/dev/null || true
# the postmaster, and with it at once its processes, as when the machine
# fails: children left running would finish the batch and stream it first
kill -9 "$pm" $(ps -o pid= --ppid "$pm")
kill_ms=$(millis)
kill_at=$(date -u +'%Y-%m-%d %H:%M:%S.%N+00')
ok "node1's keeper and postmaster were killed (kill -9) with token requests in flight"

promoted() { [ "$(n2q -c "SELECT pg_is_in_recovery()")" = f ]; }
wait_until 90 "node2 is promoted" promoted || { done_testing; }
promoted_ms=$(millis)
writable() { node_is node2 wait_primary || node_is node2 primary; }
refreshing() { [ "$(n2q -c "SELECT count(*) FROM tokenvault.auths WHERE last_refreshed_at > '$kill_at'")" -gt 0 ]; }
wait_until 30 "node2's worker refreshes within 30 s of the promotion" refreshing &&
	ok "node2's worker refreshes within 30 s of its promotion"
first_ms=$(millis)
readonly_errors=$(cat "$n2"/log/*.log "$TV_TMP"/node2.keeper.log 2>/dev/null | grep -c 'read-only transaction' || true)
is "$([ "$readonly_errors" -le 5 ] && echo waited)" waited \
	"  ... having waited for the read-only moment on its latch ($readonly_errors read-only errors logged)"

# ---- what the failover kept, and what it lost ----
settled() { [ "$(n2q -c "SELECT count(*) FROM tokenvault.auths WHERE refresh_lost IS NOT NULL OR refresh_sent_at < now() - interval '10 s'")" = 0 ]; }
wait_until 60 "the refreshes lost in the failover are settled" settled
n2q -c "SELECT id || ' ' || version FROM tokenvault.auths ORDER BY id" >"$TV_TMP/after.txt"
went_back=$(join <(sort "$TV_TMP/before.txt") <(sort "$TV_TMP/after.txt") | awk '$3 < $2' | wc -l)

# What node1 had committed when it died, exactly: its data directory
# recovered on its own, on a socket only this test knows (no keeper, no
# tokenvault, no network), read, and stopped.
as_server_user "$PG_BINDIR/pg_ctl" -D "$n1" -l "$TV_TMP/node1-recovered.log" -w -t 120 start \
	-o "-c port=$((base + 3)) -c listen_addresses='' -c unix_socket_directories='$TV_TMP' -c shared_preload_libraries='' -c synchronous_standby_names='' -c logging_collector=off" \
	>/dev/null 2>&1 || cat "$TV_TMP/node1-recovered.log"
psql -X -q -At -h "$TV_TMP" -p $((base + 3)) -c "SELECT id || ' ' || version || ' ' || (refresh_sent_at IS NOT NULL) FROM tokenvault.auths ORDER BY id" >"$TV_TMP/node1.txt"
as_server_user "$PG_BINDIR/pg_ctl" -D "$n1" -m immediate stop >/dev/null 2>&1 || true
is "$(wc -l <"$TV_TMP/node1.txt")" $N "node1's data directory, recovered on its own, shows what it had committed"
# A rotation in node1's WAL that node2 lacks.  With a synchronous standby
# its commit was still waiting for the standby at the kill: never
# acknowledged, never visible, in flight.  Asynchronous, it was acknowledged
# and visible: a committed rotation the failover lost.
committed_lost=$(join <(sort "$TV_TMP/node1.txt") <(sort "$TV_TMP/after.txt") | awk '$4 < $2' | wc -l)
# a refresh marked sent on node1 and never answered there: in flight at the kill
# (a mark whose own commit still waited for the standby sent nothing: such
# an auth is simply refreshed again on node2)
in_flight_at_kill=$(awk '$3 == "true"' "$TV_TMP/node1.txt" | wc -l)
[ "$mode" = sync ] && in_flight_at_kill=$((in_flight_at_kill + committed_lost))
# the auths node1 itself says were in flight: marked sent and unanswered, or
# answered in a commit still waiting for the standby
{ awk '$3 == "true" { print $1 }' "$TV_TMP/node1.txt"
  join <(sort "$TV_TMP/node1.txt") <(sort "$TV_TMP/after.txt") | awk '$4 < $2 { print $1 }'; } | sort -u >"$TV_TMP/in_flight.ids"
n2q -c "SELECT DISTINCT auth_id FROM tokenvault.events WHERE kind = 'auth.refresh_lost'" | sort >"$TV_TMP/named.ids"
named_not_in_flight=$(comm -13 "$TV_TMP/in_flight.ids" "$TV_TMP/named.ids" | wc -l)
lost_named=$(n2q -c "SELECT count(DISTINCT auth_id) FROM tokenvault.events WHERE kind = 'auth.refresh_lost'")
lost_failover=$(n2q -c "SELECT count(*) FROM tokenvault.auths WHERE status = 'needs_reauth' AND last_error LIKE 'a refresh was in flight when the server failed over%'")
lost_promotion=$(n2q -c "SELECT count(*) FROM tokenvault.auths WHERE status = 'needs_reauth' AND last_error LIKE 'the provider refused the refresh token at its first refresh since this server was promoted%'")
needs_reauth=$(n2q -c "SELECT count(*) FROM tokenvault.auths WHERE status = 'needs_reauth'")
revoked=$(curl -sf "$TV_OIDC_URL/_count" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).grants_revoked))")
unconfirmed_warnings=$(cat "$n1"/log/*.log | grep -c 'is committed on this server only' || true)
if [ "$mode" = sync ]; then
	echo "# sync replication: committed rotations lost $went_back (of those seen committed before the kill); refreshes marked in flight at the kill $in_flight_at_kill (of which $committed_lost answered in node1's WAL, still waiting for the standby), answered by the provider and named by auth.refresh_lost: $lost_named;"
else
	echo "# async replication: committed rotations lost $committed_lost (in node1's WAL, not on node2; of those seen before the kill: $went_back); refreshes in flight at the kill $in_flight_at_kill, named by auth.refresh_lost: $lost_named;"
fi
echo "# needs_reauth $needs_reauth (of which 'in flight when the server failed over' $lost_failover, 'first refresh since the promotion' $lost_promotion); grants revoked by the provider $revoked;"
echo "# seconds from the kill: to the promotion $(((promoted_ms - kill_ms) / 1000)).$(((promoted_ms - kill_ms) % 1000 / 100)), to the first refresh on node2 $(((first_ms - kill_ms) / 1000)).$(((first_ms - kill_ms) % 1000 / 100));"
echo "# commits node1 made after its postmaster died that no standby confirmed (logged there): $unconfirmed_warnings"
n2q -c "SELECT '#   ' || left(last_error, 160) FROM tokenvault.auths WHERE status = 'needs_reauth' LIMIT 3"
if [ "$mode" = sync ]; then
	is "$went_back" 0 "every refresh committed on node1 before the kill is on node2 (no auth's version went back)"
	is "$named_not_in_flight" 0 "each auth named by an auth.refresh_lost event had a refresh in flight at the kill, by node1's own record"
	is "$lost_named" "$revoked" "  ... and every refresh in flight that the provider answered (its refresh token then refused as reused) is named"
	is "$lost_failover" "$lost_named" "each auth whose refresh was in flight ends needs_reauth with an auth.refresh_lost event saying it was lost in the failover"
	is "$needs_reauth" "$lost_named" "  ... and no other auth needs authorizing again"
	is "$revoked" "$lost_named" "the provider saw a refresh token used twice only for those ($revoked grants revoked)"
else
	# a committed rotation lost is not known to the new primary, which has
	# the older row; the provider's refusal at the first refresh since the
	# promotion still names the likely cause
	is "$needs_reauth $((lost_failover + lost_promotion))" "$lost_named $lost_named" \
		"asynchronous replication: $committed_lost committed rotations lost; each of the $needs_reauth auths that need authorizing again has an auth.refresh_lost event and a last_error that says why"
	is "$([ "$needs_reauth" -le $((in_flight_at_kill + committed_lost)) ] && echo accounted)" accounted \
		"  ... and each is one lost in flight or lost committed"
fi

# ---- the others stay alive ----
others_sql="SELECT count(*) FROM tokenvault.auths a WHERE NOT EXISTS (SELECT FROM tokenvault.events e WHERE e.auth_id = a.id AND e.kind = 'auth.refresh_lost') AND status <> 'needs_reauth'"
caught_up() { [ "$(n2q -c "$others_sql AND (expires_at <= now() OR status <> 'active')")" = 0 ]; }
wait_until 30 "node2's worker has caught up with the tokens that expired during the failover" caught_up
others=$(n2q -c "$others_sql")
stays_zero 60 "none of the other $others auths is expired or inactive" \
	n2q -c "$others_sql AND (expires_at <= now() OR status <> 'active')"
done_testing
