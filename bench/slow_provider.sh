#!/usr/bin/env bash
# Benchmark: the worker's proactive refresh rate against a slow provider,
# and how long access_token() callers wait meanwhile.
#
# A provider that takes 100 ms (then 300 ms) to answer each token request
# leaves the worker with nothing to do but keep many requests in flight: at
# tokenvault.max_concurrent_refreshes = 256 and latency L, Little's law
# bounds the rate at 256 / L (2 560/s at 100 ms).  The question is how
# close the worker gets to that bound, i.e. whether it really keeps 256
# requests in flight while it claims, sends and stores.
#
# The provider is the fault peer's /slow/token?ms=L (a valid token after
# L ms; test/peers/fault.mjs), on loopback.  BENCH_AUTHS (20 000) auths of
# a refresh-token client (tokens handed in at create_auth, as
# worker_throughput.sh does for its instant provider) are made due at once
# (UPDATE ... SET refresh_at = now()); the rate is BENCH_AUTHS / (the last
# last_refreshed_at - the commit that made them due), printed as a share
# of 256 / L (target >= 0.8).  The fault peer's /_peak/slow (most requests
# in progress at once during the run) is printed beside it: a rate well
# under the bound with a peak well under 256 means the worker did not keep
# its places busy.
#
# Then the same batch again with callers mixed in: while the worker works
# through it, BENCH_CALLERS (4) pgbench clients call access_token() on
# other auths of the same client whose token has expired.  Those auths are
# kept out of the worker's batch (refresh_at a day ahead, expires_at in
# the past), so only the callers refresh them, on demand, each one once
# (a sequence hands each call the next auth).  Each call's wait is read
# from pgbench -l; their p99 is printed against 2 x L (target: p99 <= 2 x
# latency: a caller's flight goes before the schedule's, so it should wait
# for about one request, not for the batch).  The rate of that run is
# printed too, for information.
#
# Before the measured runs, one warm-up batch at the first latency (libcurl
# opens its connections, PostgreSQL warms its caches); BENCH_WARMUP=0
# skips it.
#
# Knobs (environment): BENCH_AUTHS (20000), BENCH_LATENCIES ("100 300", in
# ms), BENCH_CALLERS (4), BENCH_CALLER_AUTHS (BENCH_AUTHS / 20, at least
# 500), BENCH_WARMUP (1).
# The last line printed:
#   slow_provider: rate/(256/latency) <x> at 100 ms, <y> at 300 ms (target >= 0.8); callers' p99 <a> ms at 100 ms (<= 200), <b> ms at 300 ms (<= 600)
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_AUTHS:-20000}
LATENCIES=${BENCH_LATENCIES:-100 300}
CALLERS=${BENCH_CALLERS:-4}
CALLER_AUTHS=${BENCH_CALLER_AUTHS:-$((N / 20 > 500 ? N / 20 : 500))}
CONC=256

export TV_EXTRA_CONF="tokenvault.database = tv_bench
tokenvault.max_concurrent_refreshes = $CONC"
source test/cluster.sh
source test/peers.sh
source bench/lib.sh
cluster_start
# shellcheck disable=SC2119  # fault_start takes no arguments here
fault_start
work="$TV_TMP/bench"
mkdir -m 700 "$work"
export PGDATABASE=tv_bench
createdb tv_bench
psql_q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

first_latency=${LATENCIES%% *}
# One client; its token_url is changed for each latency.  Tokens are made up
# in SQL (TVSECRET marker, in two halves so this text is not taken for a
# leak if logged).  "batch" auths are the worker's; "caller" auths are
# refreshed by the callers only; bench_callers numbers them.
psql_q -v url="$TV_FAULT_URL" -v ms="$first_latency" <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
CREATE TABLE bench_client AS
SELECT tokenvault.create_client('slow', 'slow', 'oauth2', jsonb_build_object(
    'client_id', 'tv-slow', 'auth_url', :'url' || '/authorize', 'allow_insecure_http', true,
    'token_url', :'url' || '/slow/token?ms=' || :'ms')) AS id;
CREATE SEQUENCE bench_caller_seq;
CREATE TABLE bench_callers (n int PRIMARY KEY, id uuid NOT NULL);
SQL

echo "creating $N batch auths and $CALLER_AUTHS caller auths (2 sessions)..."
load_start=$(date +%s)
create_auths() { # NAME COUNT FIRST
	psql_q -v name="$1" -v n="$2" -v first="$3" <<'SQL' >/dev/null
SELECT count(tokenvault.create_auth(tokenvault.create_user(:'name' || '-' || i), (SELECT id FROM bench_client), :'name',
           jsonb_build_object('access_token', 'TVSEC' || 'RET-at-' || md5(random()::text),
                              'refresh_token', 'TVSEC' || 'RET-rt-' || md5(random()::text), 'expires_in', 3600)))
  FROM generate_series(:first, :first + :n - 1) i;
SQL
}
create_auths batch $((N / 2)) 1 &
p1=$!
create_auths batch $((N - N / 2)) $((N / 2 + 1)) &
p2=$!
wait $p1
wait $p2
create_auths caller "$CALLER_AUTHS" 1
psql_q -c "INSERT INTO bench_callers SELECT row_number() OVER (ORDER BY id), id FROM tokenvault.auths WHERE name = 'caller'" \
	-c "VACUUM (ANALYZE)" >/dev/null
n=$(psql_q -c "SELECT count(*) FROM tokenvault.auths WHERE name = 'batch'")
[ "$n" = "$N" ] || { echo "expected $N batch auths, found $n" >&2; exit 1; }
echo "created in $(($(date +%s) - load_start)) s"
for _ in $(seq 1 100); do
	[ "$(psql_q -c "SELECT worker_state FROM tokenvault.stats")" = idle ] && break
	sleep 0.1
done

refreshes_done() { psql_q -c "SELECT refreshes_succeeded + refreshes_failed FROM tokenvault.stats"; }
# wait_refreshes TARGET SECONDS: until the worker's counters (shared memory,
# all refreshers) reach TARGET, at most SECONDS; one session watches, so the
# watching takes little CPU from what is measured.
wait_refreshes() {
	psql_q -v target="$1" -v ticks="$(($2 * 10))" <<'SQL' >/dev/null
SELECT set_config('bench.target', :'target', false), set_config('bench.ticks', :'ticks', false);
DO $$
BEGIN
    FOR i IN 1..current_setting('bench.ticks')::int LOOP
        EXIT WHEN (SELECT refreshes_succeeded + refreshes_failed FROM tokenvault.stats)
                  >= current_setting('bench.target')::bigint;
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
SQL
}
# batch_done T0 SECONDS: until every batch auth was refreshed since T0, at
# most SECONDS (callers' refreshes count in the counters too, so the table
# has the last word)
batch_done() {
	for _ in $(seq 1 $(($2 * 5))); do
		[ "$(psql_q -c "SELECT count(*) FROM tokenvault.auths WHERE name = 'batch' AND last_refreshed_at >= '$1'")" = "$n" ] && return 0
		sleep 0.2
	done
	echo "the worker did not refresh all $n batch auths within $2 s" >&2
	psql_q -c "SELECT status, count(*), max(last_error) FROM tokenvault.auths WHERE name = 'batch' GROUP BY 1" >&2
	return 1
}

hz=$(getconf CLK_TCK)
worker_ticks() { awk '{print $14 + $15}' "/proc/$(psql_q -c "SELECT worker_pid FROM tokenvault.stats")/stat"; }
failed() { psql_q -c "SELECT refreshes_failed FROM tokenvault.stats"; }

# worker_run L WITH_CALLERS: one batch at latency L; prints
# "<rate> <peak> <worker CPU % of a core> <failed> <requests the provider
# received> <refreshes the counters saw> [<callers' p99 ms> <calls>]"
worker_run() {
	local ms=$1 callers=$2 done0 t0 bound secs pg rate peak p99 calls c0 f0 cpu
	done0=$(refreshes_done)
	f0=$(failed)
	c0=$(worker_ticks)
	# generous: ten times Little's bound, at least two minutes
	bound=$((N * ms * 10 / CONC / 1000))
	[ "$bound" -ge 120 ] || bound=120
	curl -sf -X POST "$TV_FAULT_URL/_reset" >/dev/null
	if [ "$callers" = 1 ]; then
		# expired, and a day away from the worker's schedule
		psql_q -c "UPDATE tokenvault.auths SET refresh_at = now() + interval '1 day', expires_at = now() - interval '1 minute'
		            WHERE name = 'caller'" -c "SELECT setval('bench_caller_seq', 1, false)" >/dev/null
	fi
	# the time taken as the UPDATE is done, right before its commit
	t0=$(psql_q -c "WITH due AS (UPDATE tokenvault.auths SET refresh_at = now() WHERE name = 'batch' RETURNING 1)
	                SELECT clock_timestamp() FROM (SELECT count(*) FROM due) x")
	if [ "$callers" = 1 ]; then
		# the callers for most of the batch's expected time (at Little's bound)
		secs=$((N * ms * 8 / 10 / CONC / 1000))
		[ "$secs" -ge 2 ] || secs=2
		rm -f "$work"/pgbench_log.*
		(cd "$work" && pgbench -n -M prepared -c "$CALLERS" -j "$CALLERS" -T "$secs" -l -f "$work/caller.sql" \
			>"$work/callers.$ms.log" 2>&1) &
		pg=$!
	fi
	wait_refreshes $((done0 + n)) "$bound"
	batch_done "$t0" "$bound"
	rate=$(psql_q -c "SELECT round($n / extract(epoch FROM max(last_refreshed_at) - '$t0'::timestamptz))
	                    FROM tokenvault.auths WHERE name = 'batch'")
	peak=$(curl -sf "$TV_FAULT_URL/_peak/slow")
	# the worker's CPU over the batch, as a share of one core
	cpu=$(psql_q -c "SELECT round(100 * $(($(worker_ticks) - c0)) / $hz.0 / extract(epoch FROM max(last_refreshed_at) - '$t0'::timestamptz))
	                   FROM tokenvault.auths WHERE name = 'batch'")
	if [ "$callers" = 1 ]; then
		wait "$pg" || { echo "pgbench (callers) failed:" >&2; cat "$work/callers.$ms.log" >&2; return 1; }
		if grep -qiE 'aborted|error' "$work/callers.$ms.log" || ! grep -q '^number of failed transactions: 0' "$work/callers.$ms.log"; then
			echo "pgbench (callers) reported errors:" >&2
			cat "$work/callers.$ms.log" >&2
			return 1
		fi
		# per-transaction log: client, transaction, latency (us), script, epoch, us
		read -r p99 calls < <(cat "$work"/pgbench_log.* | awk '{print $3 / 1000}' | sort -g |
			awk '{v[NR] = $1} END {i = int(NR * 0.99 + 0.999); if (i < 1) i = 1; printf "%.0f %d\n", v[i], NR}')
		echo "$rate $peak $cpu $(($(failed) - f0)) $(curl -sf "$TV_FAULT_URL/_count/slow") $(($(refreshes_done) - done0)) $p99 $calls"
	else
		echo "$rate $peak $cpu $(($(failed) - f0)) $(curl -sf "$TV_FAULT_URL/_count/slow") $(($(refreshes_done) - done0))"
	fi
}

# each call takes the next caller auth; one statement, one round trip
cat >"$work/caller.sql" <<'SQL'
SELECT tokenvault.access_token((SELECT id FROM bench_callers WHERE n = (SELECT nextval('bench_caller_seq')))) IS NOT NULL;
SQL

set_latency() {
	psql_q -v url="$TV_FAULT_URL" -v ms="$1" >/dev/null <<'SQL'
SELECT tokenvault.update_client((SELECT id FROM bench_client), jsonb_build_object('token_url', :'url' || '/slow/token?ms=' || :'ms'));
SQL
}

if [ "${BENCH_WARMUP:-1}" = 1 ]; then
	set_latency "$first_latency"
	out=$(worker_run "$first_latency" 0)
	read -r rate peak cpu nfailed received tries <<<"$out"
	echo "warm-up at $first_latency ms: $rate/s, peak $peak in flight, worker CPU $cpu% of a core; $tries refreshes ($nfailed failed), $received requests received by the provider"
fi
declare -A ratio p99s
for ms in $LATENCIES; do
	set_latency "$ms"
	bound=$((CONC * 1000 / ms))
	out=$(worker_run "$ms" 0)
	read -r rate peak cpu nfailed received tries <<<"$out"
	ratio[$ms]=$(awk -v r="$rate" -v b="$bound" 'BEGIN {printf "%.2f", r / b}')
	echo "$ms ms: worker alone $rate/s of Little's bound $bound/s (${ratio[$ms]}); requests in flight at the provider: peak $peak, mean $((rate * ms / 1000)) (rate x latency); worker CPU $cpu% of a core; $tries refreshes ($nfailed failed), $received requests received by the provider"
	out=$(worker_run "$ms" 1)
	read -r rate peak cpu nfailed received tries p99 calls <<<"$out"
	p99s[$ms]=$p99
	left=$(psql_q -c "SELECT count(*) FROM tokenvault.auths a JOIN bench_callers b USING (id) WHERE a.expires_at < now()")
	echo "$ms ms: with $CALLERS callers, worker $rate/s, peak $peak in flight, worker CPU $cpu% of a core, $tries refreshes ($nfailed failed), $received requests received; $calls access_token() calls of expired auths, p99 ${p99} ms (2 x latency: $((2 * ms)) ms); $left caller auths still expired"
done
psql_q -c "SELECT refreshes_succeeded, refreshes_failed, http_p50_ms::int, http_p99_ms::int FROM tokenvault.stats" |
	awk -F'|' '{print "worker stats: " $1 " refreshed, " $2 " failed, request p50 " $3 " ms, p99 " $4 " ms (last 1024)"}'
# why refreshes failed, if any did: the auth.refresh_failed events (a
# failed auth's last_error is cleared by its next, successful try), in
# tokenvault's own words, never a secret
psql_q -c "SELECT count(*) || ' x ' || coalesce(payload->>'error', '?') FROM tokenvault.events
            WHERE kind = 'auth.refresh_failed' GROUP BY payload->>'error'" | sed 's/^/failed: /'

if grep -l TVSECRET "$work"/*.log "$TV_LOG" >&2; then
	echo "slow_provider: the marker TVSECRET shows up in the files above: a token leaked" >&2
	exit 1
fi

line="slow_provider: rate/(256/latency)"
sep=""
for ms in $LATENCIES; do line+="$sep ${ratio[$ms]} at $ms ms"; sep=","; done
line+=" (target >= 0.8); callers' p99"
sep=""
for ms in $LATENCIES; do line+="$sep ${p99s[$ms]} ms at $ms ms (<= $((2 * ms)))"; sep=","; done
echo "$line"
