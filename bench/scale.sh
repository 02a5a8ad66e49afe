#!/usr/bin/env bash
# Benchmark: what a million auths cost against ten thousand.
#
# Two databases in one cluster: tv_small holds BENCH_SMALL (10 000) auths,
# tv_bench (the worker's, tokenvault.database) BENCH_USERS x BENCH_PER_USER
# (100 000 x 10 = 1 000 000); each has BENCH_USERS users (in tv_small only
# the first BENCH_SMALL / BENCH_PER_USER of them hold auths, 10 each).  Both
# are made the same way, with tokenvault's own create_user() and
# create_auth() (oauth2 auths of an authorization_code client, an access
# and a refresh token each, valid for 4 hours, so each is scheduled about
# 4 hours ahead), several sessions at once.  Two databases, rather than
# one grown from 10 000 to 1 000 000, let every comparison be made in
# interleaved runs: a slow minute of a noisy machine falls on both sizes.
# Measured:
#  (a) access_token() TPS, pgbench -M prepared, BENCH_CLIENTS (10) clients,
#      a random auth among all of the database's each call (as
#      access_token.sh, a random n turned into an auth id by a primary key
#      lookup in the same statement); BENCH_RUNS (5) x BENCH_SECONDS (20) s
#      per size, interleaved (which goes first alternates), after
#      pg_prewarm of both; the result is the median of the runs' own
#      ratios, 1M / 10k (target >= 0.9), the medians' ratio is printed too.
#  (b) the worker's CPU over 60 s (BENCH_IDLE_SECONDS) with its 1 000 000
#      auths all scheduled hours ahead: utime + stime of its pid from
#      /proc/<pid>/stat, before and after, as a share of a core (target <
#      1 %).  Nothing else runs meanwhile.
#  (c) how the worker finds due auths: EXPLAIN (ANALYZE, BUFFERS) of the
#      SELECT of tokenvault._worker_claim() (sql/worker.sql), with the
#      LIMIT the worker uses (192 at the default max_concurrent_refreshes:
#      src/flight.c), inside a transaction that is rolled back (it locks
#      what it finds; here nothing is due).  Its scan node at each size
#      (an index scan is expected, not a Seq Scan) and the ratio of the
#      median execution times.  The query for the next refresh_at, which
#      the worker runs after a claim that was not full, is shown too.
#  (d) user_auths() of one user (10 auths) among 100 000: median time of a
#      call over BENCH_CALLS (200) calls of random users holding auths,
#      timed in the server (clock_timestamp()), BENCH_RUNS rounds
#      interleaved; the ratio 1M / 10k.
# shared_buffers is BENCH_SHARED_BUFFERS (1GB: the million auths' table and
# indexes fit, as one would size it for them); autovacuum is off, as in
# access_token.sh: the tables are loaded once, vacuumed and analysed, then
# only read.  No token request is made (the client's token_url is a closed
# port on 127.0.0.1; the bench fails if any refresh happened).
# Disk: about 1.5 GB for the cluster, in $TMPDIR (/tmp) (printed after the load).
#
# Knobs (environment): BENCH_USERS (100000), BENCH_PER_USER (10),
# BENCH_SMALL (10000), BENCH_CLIENTS (10), BENCH_SECONDS (20), BENCH_RUNS
# (5), BENCH_CALLS (200), BENCH_IDLE_SECONDS (60), BENCH_LOAD_SESSIONS
# (nproc), BENCH_SHARED_BUFFERS (1GB).
# The last line printed:
#   scale: access_token TPS 1M/10k <x> (target >= 0.9); worker CPU <y>% of a core over 60 s (target < 1); due-auth lookup <plan node>, 1M/10k time <z>; user_auths 1M/10k <w>
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=${BENCH_USERS:-100000}
PER_USER=${BENCH_PER_USER:-10}
SMALL=${BENCH_SMALL:-10000}
CLIENTS=${BENCH_CLIENTS:-10}
SECS=${BENCH_SECONDS:-20}
RUNS=${BENCH_RUNS:-5}
CALLS=${BENCH_CALLS:-200}
IDLE=${BENCH_IDLE_SECONDS:-60}
SESSIONS=${BENCH_LOAD_SESSIONS:-$(nproc)}
BIG=$((USERS * PER_USER))
SMALL_USERS=$((SMALL / PER_USER))

export TV_EXTRA_CONF="tokenvault.database = tv_bench
autovacuum = off
shared_buffers = '${BENCH_SHARED_BUFFERS:-1GB}'
max_wal_size = '4GB'"
source test/cluster.sh
source bench/lib.sh
avail=$(df -Pk "${TMPDIR:-/tmp}" | awk 'NR == 2 {print int($4 / 1024 / 1024)}')
echo "disk: ${avail} GB free in ${TMPDIR:-/tmp}"
[ "$avail" -ge 3 ] || { echo "scale: fewer than 3 GB free in ${TMPDIR:-/tmp}" >&2; exit 1; }
cluster_start
work="$TV_TMP/bench"
mkdir -m 700 "$work"
psql_q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# setup_db DB: the extension, BENCH_USERS users (external ids u-1 ...), one
# client whose token_url nothing listens on.
setup_db() {
	createdb "$1"
	psql_q -d "$1" -v users="$USERS" <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
CREATE EXTENSION pg_prewarm;
CREATE TABLE bench_client AS
SELECT tokenvault.create_client('Scale', 'scale', 'oauth2', jsonb_build_object(
    'client_id', 'tv-scale', 'auth_url', 'http://127.0.0.1:9/authorize', 'allow_insecure_http', true,
    'token_url', 'http://127.0.0.1:9/token')) AS id;
SELECT count(tokenvault.create_user('u-' || i)) FROM generate_series(1, :users) i;
SQL
}

# load DB FIRST_USER LAST_USER: PER_USER auths for each of those users, in
# chunks of 2 000 users (one transaction each), SESSIONS chunks at once.
# Tokens carry the TVSECRET marker (spelled in two halves here).
load_chunk() {
	psql_q -d "$1" -v first="$2" -v last="$3" -v per="$PER_USER" <<'SQL' >/dev/null
SELECT count(tokenvault.create_auth(u.id, (SELECT id FROM bench_client), 'auth-' || k,
           jsonb_build_object('access_token', 'TVSEC' || 'RET-at-' || md5(random()::text),
                              'refresh_token', 'TVSEC' || 'RET-rt-' || md5(random()::text), 'expires_in', 14400)))
  FROM generate_series(:first, :last) i
  JOIN tokenvault.users u ON u.external_user_id = 'u-' || i
 CROSS JOIN generate_series(1, :per) k;
SQL
}
export -f load_chunk psql_q
export PER_USER
load() {
	local db=$1 first=$2 last=$3 s
	for ((s = first; s <= last; s += 2000)); do
		echo "$db $s $((s + 1999 < last ? s + 1999 : last))"
	done | xargs -P "$SESSIONS" -L 1 bash -c 'load_chunk "$@"' _
	# bench_ids: n -> auth id, how pgbench picks a random auth
	psql_q -d "$db" <<'SQL' >/dev/null
CREATE TABLE bench_ids AS SELECT row_number() OVER ()::int AS n, id FROM tokenvault.auths;
ALTER TABLE bench_ids ADD PRIMARY KEY (n);
-- the users that hold auths (in both databases: the first ones)
CREATE TABLE bench_users AS
SELECT row_number() OVER ()::int AS n, u.id FROM tokenvault.users u
 WHERE EXISTS (SELECT FROM tokenvault.auths a WHERE a.user_id = u.id);
ALTER TABLE bench_users ADD PRIMARY KEY (n);
VACUUM (ANALYZE);
CHECKPOINT;
SQL
}

t=$(date +%s)
setup_db tv_small
load tv_small 1 "$SMALL_USERS"
echo "tv_small: $(psql_q -d tv_small -c "SELECT count(*) FROM tokenvault.auths") auths, $USERS users, loaded in $(($(date +%s) - t)) s"
t=$(date +%s)
setup_db tv_bench
load tv_bench 1 "$USERS"
big=$(psql_q -d tv_bench -c "SELECT count(*) FROM tokenvault.auths")
[ "$big" = "$BIG" ] || { echo "expected $BIG auths in tv_bench, found $big" >&2; exit 1; }
echo "tv_bench: $big auths, $USERS users, loaded in $(($(date +%s) - t)) s; $(psql_q -d tv_bench -c "SELECT pg_size_pretty(pg_total_relation_size('tokenvault.auths'))") for tokenvault.auths"
echo "disk: tv_bench $(psql_q -d tv_bench -c "SELECT pg_size_pretty(pg_database_size('tv_bench'))"), the cluster $(du -sh "$TV_DATA" | cut -f1)"
psql_q -d tv_bench -c "SELECT 'scheduled from ' || date_trunc('second', min(refresh_at) - now()) || ' to ' || date_trunc('second', max(refresh_at) - now()) || ' ahead, ' || count(*) FILTER (WHERE refresh_at IS NULL) || ' unscheduled' FROM tokenvault.auths"

# ---- (a) access_token() TPS
cat >"$work/access.sql" <<'SQL'
\set n random(1, :count)
SELECT tokenvault.access_token(b.id) FROM bench_ids b WHERE b.n = :n;
SQL
tps_run() { # DB COUNT SECONDS TAG
	local log="$work/access.$1.$4.log"
	if ! pgbench -n -M prepared -c "$CLIENTS" -j "$(nproc)" -T "$3" -D count="$2" -f "$work/access.sql" "$1" >"$log" 2>&1 ||
		grep -qiE 'aborted|error' "$log" || ! grep -q '^number of failed transactions: 0' "$log"; then
		echo "pgbench reported errors on $1:" >&2
		cat "$log" >&2
		return 1
	fi
	sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$log"
}
for db in tv_small tv_bench; do
	psql_q -d "$db" -c "SELECT sum(pg_prewarm(c.oid))::bigint FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
	                     WHERE s.nspname IN ('tokenvault', 'public') AND c.relkind IN ('r', 'i', 't')" >/dev/null
done
tps_run tv_small "$SMALL" 5 warmup >/dev/null
tps_run tv_bench "$BIG" 5 warmup >/dev/null
echo "== (a) access_token(): $RUNS x ${SECS}s per size, interleaved (pgbench -M prepared -c $CLIENTS)"
small_tps=()
big_tps=()
tps_q=()
for r in $(seq 1 "$RUNS"); do
	if [ $((r % 2)) = 1 ]; then
		small_tps+=("$(tps_run tv_small "$SMALL" "$SECS" "$r")")
		big_tps+=("$(tps_run tv_bench "$BIG" "$SECS" "$r")")
	else
		big_tps+=("$(tps_run tv_bench "$BIG" "$SECS" "$r")")
		small_tps+=("$(tps_run tv_small "$SMALL" "$SECS" "$r")")
	fi
	tps_q+=("$(awk -v a="${big_tps[-1]}" -v b="${small_tps[-1]}" 'BEGIN {printf "%.3f", a / b}')")
	printf '  run %d: %s auths %.0f tps, %s auths %.0f tps, ratio %s\n' "$r" "$SMALL" "${small_tps[-1]}" "$BIG" "${big_tps[-1]}" "${tps_q[-1]}"
done
small_med=$(printf '%s\n' "${small_tps[@]}" | median)
big_med=$(printf '%s\n' "${big_tps[@]}" | median)
# the result is the median of the runs' own ratios: each compares two runs
# made back to back, under the same conditions
tps_ratio=$(printf '%s\n' "${tps_q[@]}" | median | awk '{printf "%.2f", $1}')
printf '  median tps: %.0f vs %.0f (%.2f); median of the runs'"'"' ratios %s\n' "$small_med" "$big_med" \
	"$(awk -v a="$big_med" -v b="$small_med" 'BEGIN {print a / b}')" "$tps_ratio"

# ---- (c) the due-auth lookup
# the SELECT of _worker_claim, its LIMIT as src/flight.c sets it: the
# smaller of max_concurrent_refreshes and (1024 - 256) / 4
limit=$(psql_q -d tv_bench -c "SELECT least(current_setting('tokenvault.max_concurrent_refreshes')::int, (1024 - 256) / 4)")
explain_due() { # DB: the plan, in a transaction rolled back
	psql_q -d "$1" <<SQL
BEGIN;
EXPLAIN (ANALYZE, BUFFERS)
SELECT id FROM tokenvault.auths
 WHERE refresh_at <= now() ORDER BY refresh_at LIMIT $limit FOR UPDATE SKIP LOCKED;
ROLLBACK;
SQL
}
exec_ms() { sed -n 's/^Execution Time: \([0-9.]*\) ms$/\1/p'; }
scan_node() { grep -m1 -oE '(Seq Scan|Parallel Seq Scan|Index Only Scan|Index Scan|Bitmap Heap Scan|Bitmap Index Scan)( Backward)?( using [a-z_]+)? on [a-z_.]+'; }
echo "== (c) due-auth lookup (LIMIT $limit), 7 runs per size, interleaved"
explain_due tv_small >/dev/null
explain_due tv_bench >/dev/null
small_ms=()
big_ms=()
for _ in 1 2 3 4 5 6 7; do
	small_ms+=("$(explain_due tv_small | exec_ms)")
	big_ms+=("$(explain_due tv_bench | exec_ms)")
done
plan_small=$(explain_due tv_small)
plan_big=$(explain_due tv_bench)
echo "  $SMALL auths:"
awk '{print "    " $0}' <<<"$plan_small"
echo "  $BIG auths:"
awk '{print "    " $0}' <<<"$plan_big"
node_small=$(scan_node <<<"$plan_small" || echo "no scan node?")
node_big=$(scan_node <<<"$plan_big" || echo "no scan node?")
due_small=$(printf '%s\n' "${small_ms[@]}" | median)
due_big=$(printf '%s\n' "${big_ms[@]}" | median)
due_ratio=$(awk -v a="$due_big" -v b="$due_small" 'BEGIN {printf "%.2f", a / b}')
echo "  scan: $node_small at $SMALL, $node_big at $BIG; median execution $due_small ms vs $due_big ms, ratio $due_ratio"
case $node_big in *"Seq Scan"*) echo "  the due-auth lookup scans the whole table at $BIG auths" ;; esac
echo "  the next refresh_at (after a claim that was not full), at $BIG auths:"
psql_q -d tv_bench -c "EXPLAIN (ANALYZE, BUFFERS) SELECT min(refresh_at) FROM tokenvault.auths WHERE refresh_at > now()" | sed 's/^/    /'

# ---- (d) user_auths()
# ua_median DB: the median time (ms) of a user_auths() call over BENCH_CALLS
# calls, a random user holding auths each
ua_median() {
	psql_q -d "$1" -v calls="$CALLS" <<'SQL'
SELECT set_config('bench.calls', :'calls', false);
CREATE TEMP TABLE ua_times (ms float8);
DO $$
DECLARE
    u uuid;
    t timestamptz;
    nusers int := (SELECT count(*) FROM bench_users);
    k int;
BEGIN
    FOR i IN 1..current_setting('bench.calls')::int LOOP
        k := 1 + floor(random() * nusers)::int;
        u := (SELECT id FROM bench_users WHERE bench_users.n = k);
        t := clock_timestamp();
        PERFORM count(*) FROM tokenvault.user_auths(u);
        INSERT INTO ua_times VALUES (extract(epoch FROM clock_timestamp() - t) * 1000);
    END LOOP;
END
$$;
SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 4) FROM ua_times;
SQL
}
echo "== (d) user_auths() of one user ($PER_USER auths) among $USERS: median of $CALLS calls, $RUNS rounds interleaved"
ua_median tv_small >/dev/null
ua_median tv_bench >/dev/null
ua_small=()
ua_big=()
for r in $(seq 1 "$RUNS"); do
	ua_small+=("$(ua_median tv_small | tail -n 1)")
	ua_big+=("$(ua_median tv_bench | tail -n 1)")
	echo "  round $r: $SMALL auths ${ua_small[-1]} ms, $BIG auths ${ua_big[-1]} ms"
done
# what a call reads: user_auths()'s query for one user, at each size
for db in tv_small tv_bench; do
	echo "  user_auths()'s query in $db:"
	psql_q -d "$db" -c "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
	    SELECT a.id, a.name, a.service, a.client_id, a.scopes, a.status, a.expires_at, a.created_at
	      FROM tokenvault.auths a WHERE a.user_id = (SELECT id FROM bench_users WHERE n = 1)
	     ORDER BY a.created_at, a.id" | awk '{print "    " $0}'
done
ua_s=$(printf '%s\n' "${ua_small[@]}" | median)
ua_b=$(printf '%s\n' "${ua_big[@]}" | median)
ua_ratio=$(awk -v a="$ua_b" -v b="$ua_s" 'BEGIN {printf "%.2f", a / b}')
echo "  medians: $ua_s ms vs $ua_b ms, ratio $ua_ratio"

# ---- (b) the worker's CPU while nothing is due (last: nothing else runs)
for _ in $(seq 1 300); do
	[ "$(psql_q -d tv_bench -c "SELECT worker_state FROM tokenvault.stats")" = idle ] && break
	sleep 0.2
done
worker=$(psql_q -d tv_bench -c "SELECT worker_pid FROM tokenvault.stats")
state=$(psql_q -d tv_bench -c "SELECT worker_state || ', ' || auths_due || ' due' FROM tokenvault.stats")
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$worker/stat"; }
echo "== (b) the worker (pid $worker, $state) over ${IDLE}s"
c0=$(ticks)
sleep "$IDLE"
c1=$(ticks)
cpu=$(awk -v d="$((c1 - c0))" -v hz="$hz" -v s="$IDLE" 'BEGIN {printf "%.2f", 100 * d / hz / s}')
echo "  $((c1 - c0)) ticks of 1/$hz s: ${cpu}% of a core"

refreshed=$(psql_q -d tv_bench -c "SELECT refreshes_succeeded + refreshes_failed FROM tokenvault.stats")
if [ "$refreshed" != 0 ]; then
	echo "scale: $refreshed refreshes were made; nothing should have been due" >&2
	exit 1
fi
if grep -l TVSECRET "$work"/*.log "$TV_LOG" >&2; then
	echo "scale: the marker TVSECRET shows up in the files above: a token leaked" >&2
	exit 1
fi

echo "scale: access_token TPS 1M/10k $tps_ratio (target >= 0.9); worker CPU ${cpu}% of a core over ${IDLE} s (target < 1); due-auth lookup ${node_big}, 1M/10k time $due_ratio; user_auths 1M/10k $ua_ratio"
