#!/usr/bin/env bash
# Benchmark: the worker's proactive refresh rate against the OAuth2 server's
# own rate for the same grant at the same concurrency, measured in the same
# run; and the worker's memory.
#
# 10 000 auths (password grant with refresh tokens, oidc-provider from
# test/peers) are made due at once; the worker refreshes them
# (refresh_token grant, max_concurrent_refreshes = 32) and its rate is
# 10 000 / (last last_refreshed_at - the commit that made them due).  The raw
# rate is autocannon's, 10 000 refresh_token requests at 32 connections, one
# with each auth's refresh token (the tv-pw-keep client's refresh tokens do
# not rotate, so they can be sent again).
# A warm-up round, then BENCH_ROUNDS (10) rounds of one worker run and one
# raw run each, back to back (which goes first alternates).  The ratio is
# the median of the rounds' own ratios: on a small shared machine the
# provider's own rate swings by a quarter from one minute to the next, and
# a round compares two runs made under the same conditions.
# The worker's private memory (RssAnon) is read after every round.  malloc
# gives freed memory back now and then, which makes single readings jump
# down, so growth is that of the highest reading so far, from the end of
# round 1 on, once libcurl's connections and malloc's arenas have settled.
# The catalog cache and plans still grow a little after that (by ~100 kB
# in all, over the next rounds, then stay put), which is why the growth is
# taken over 90 000 refreshes: over 40 000, a single step of 0.5 MB
# between two rounds (and none after) once read as 1.5 MB per 100 000.
#
# The question is whether the worker keeps the provider as busy as a load
# generator does.  On a small machine the provider and its caller fight over
# the same cores, and the ratio would measure how much CPU each caller takes
# instead (oidc-provider uses more than one core when it can have them).  So,
# as a load test puts its load generator on another machine, the provider
# gets core 0 to itself and its callers (PostgreSQL with the worker, or
# autocannon) share the other cores, alike in both measurements.  On a
# small VM the cores may still share a physical core or its caches: there,
# a busy core 1 slows the provider on core 0 (by about a quarter under a
# plain CPU burner), and PostgreSQL with the worker keeps core 1 far busier
# than autocannon does.  The provider's CPU per request printed for each
# run shows how much of the ratio that is.
# BENCH_PIN=0 lets everything share every core.
# The last line printed:
#   worker_throughput: worker <w>/s vs raw <r>/s (medians), median of the rounds' ratios <x> (target >= 0.9); worker RSS <+d> KiB per 100 000 refreshes (target < 1024); <c> refreshes per second of the worker's CPU against an instant provider
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_AUTHS:-10000}
ROUNDS=${BENCH_ROUNDS:-10}
CONC=32

export TV_EXTRA_CONF="tokenvault.database = tv_bench
tokenvault.max_concurrent_refreshes = $CONC"
source test/cluster.sh
source test/peers.sh
source bench/lib.sh
pin=0
ncpu=$(nproc)
if [ "${BENCH_PIN:-1}" = 1 ] && [ "$ncpu" -ge 2 ]; then
	pin=1
	taskset -pc "1-$((ncpu - 1))" $$ >/dev/null # what this script starts inherits it
fi
cluster_start
oidc_start ACCESS_TTL=3600
if [ $pin = 1 ]; then
	taskset -apc 0 "${TV_PEER_PIDS[-1]}" >/dev/null
	echo "the provider runs on core 0, PostgreSQL and autocannon on cores 1-$((ncpu - 1))"
else
	echo "the provider, PostgreSQL and autocannon share all $ncpu cores"
fi
export PGDATABASE=tv_bench
createdb tv_bench
psql_q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
psql_q -v url="$TV_OIDC_URL" -v secret="$TV_CLIENT_SECRET" <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
SELECT tokenvault.create_client('oidc', 'oidc', 'oauth2', jsonb_build_object(
    'grant', 'password', 'client_id', 'tv-pw-keep', 'client_secret', :'secret',
    'allow_insecure_http', true, 'token_url', :'url' || '/token', 'scopes', '["openid", "offline_access"]'::jsonb));
SQL

echo "creating $N auths (a password grant each, 4 sessions)..."
pids=()
for s in 0 1 2 3; do
	psql_q -v pw="$TV_USER_PASSWORD" -v s=$s -v n=$((N / 4)) <<'SQL' >/dev/null &
SELECT count(tokenvault.create_auth(tokenvault.create_user('bench-' || :s || '-' || i),
                                    (SELECT id FROM tokenvault.clients), 'bench',
                                    jsonb_build_object('username', 'alice', 'password', :'pw')))
  FROM generate_series(1, :n) i;
SQL
	pids+=($!)
done
wait "${pids[@]}"
n=$(psql_q -c "SELECT count(*) FROM tokenvault.auths")
for _ in $(seq 1 100); do
	[ "$(psql_q -c "SELECT worker_state FROM tokenvault.stats")" = idle ] && break
	sleep 0.1
done
worker=$(psql_q -c "SELECT worker_pid FROM tokenvault.stats")
rss() { sed -n 's/^RssAnon:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$worker/status"; }

refreshes_done() { psql_q -c "SELECT refreshes_succeeded + refreshes_failed FROM tokenvault.stats"; }
# wait_refreshes TARGET: until the worker has done TARGET refreshes in all, at
# most 2 minutes.  One session watches the worker's counters (shared memory)
# rather than a query of the table every 100 ms from a new psql: on a small
# machine the watching would take CPU from the side being measured.
wait_refreshes() {
	psql_q -v target="$1" <<'SQL' >/dev/null
SELECT set_config('bench.target', :'target', false);
DO $$
BEGIN
    FOR i IN 1..1200 LOOP
        EXIT WHEN (SELECT refreshes_succeeded + refreshes_failed FROM tokenvault.stats)
                  >= current_setting('bench.target')::bigint;
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;
SQL
}

# one worker round: all due at once; the rate from the commit to the last
# refresh.
worker_round() {
	local done0 t0
	done0=$(refreshes_done)
	t0=$(psql_q -c "WITH due AS (UPDATE tokenvault.auths SET refresh_at = now()) SELECT now()")
	wait_refreshes $((done0 + n))
	psql_q -c "SELECT round($n / extract(epoch FROM max(last_refreshed_at) - '$t0'::timestamptz))
                 FROM tokenvault.auths WHERE last_refreshed_at >= '$t0'
               HAVING count(*) = $n"
}

# one raw round: autocannon sends the same refresh_token requests the worker
# does, one per auth (the provider works harder for many grants than for one
# replayed), same client, Basic auth.  The refresh tokens go to a file only
# this user can read, removed with the cluster.
mkdir -m 700 "$TV_TMP/bench"
psql_q -c "SELECT tokenvault._open_auth(secret, id)->>'refresh_token' FROM tokenvault.auths" >"$TV_TMP/bench/rts"
raw_round() {
	RTS="$TV_TMP/bench/rts" URL="$TV_OIDC_URL/token" N="$n" CONC="$CONC" node -e '
const autocannon = require("./test/node_modules/autocannon");
const rts = require("fs").readFileSync(process.env.RTS, "utf8").trim().split("\n");
const basic = Buffer.from("tv-pw-keep:" + encodeURIComponent(process.env.TV_CLIENT_SECRET)).toString("base64");
// the rate from the start to the last response (autocannon itself ends a run on a whole second)
const n = Number(process.env.N);
const start = process.hrtime.bigint();
let done = 0, sent = 0, last = start;
const run = autocannon({
  url: process.env.URL, method: "POST", connections: Number(process.env.CONC), amount: n,
  headers: { "content-type": "application/x-www-form-urlencoded", authorization: "Basic " + basic },
  requests: [{ setupRequest: (req) => ({ ...req,
    body: "grant_type=refresh_token&refresh_token=" + encodeURIComponent(rts[sent++ % rts.length]) }) }],
}, (err, r) => {
  if (err || r.non2xx > 0 || r.errors > 0 || done !== n) { console.error("raw round failed:", err || `${r.non2xx} non-2xx, ${r.errors} errors, ${done} answers`); process.exit(1); }
  console.log(Math.round(n * 1e9 / Number(last - start)));
});
run.on("response", () => { done++; last = process.hrtime.bigint(); });'
}

hwm=0
rss_seen() { local x; x=$(rss); [ "$x" -gt "$hwm" ] && hwm=$x; echo "$x"; }
echo "warm-up round ($n refreshes by the worker): $(worker_round)/s"
rss_seen >/dev/null
w=()
r=()
q=()
# what the provider spent per request, and how busy it was: a caller that
# leaves the provider idle shows as a lower busy share, one that makes its
# requests dearer (its CPU use slowing the provider's core) as more CPU per
# request
provider=${TV_PEER_PIDS[-1]}
hz=$(getconf CLK_TCK)
provider_ticks() { awk '{print $14 + $15}' "/proc/$provider/stat"; }
# run_measured worker_round|raw_round: "<rate> <provider CPU ms per request> <provider busy %>"
run_measured() {
	local t0 rate
	t0=$(provider_ticks)
	rate=$($1)
	awk -v r="$rate" -v d="$(($(provider_ticks) - t0))" -v n="$n" -v hz="$hz" \
		'BEGIN {printf "%s %.2f %d", r, d * 1000 / hz / n, 100 * d / hz / (n / r)}'
}
for i in $(seq 1 "$ROUNDS"); do
	if [ $((i % 2)) = 1 ]; then
		wx=($(run_measured worker_round))
		rx=($(run_measured raw_round))
	else
		rx=($(run_measured raw_round))
		wx=($(run_measured worker_round))
	fi
	w+=("${wx[0]}")
	r+=("${rx[0]}")
	q+=("$(awk -v a="${w[-1]}" -v b="${r[-1]}" 'BEGIN {printf "%.3f", a / b}')")
	rss_seen >/dev/null
	echo "round $i: worker ${w[-1]}/s, raw ${r[-1]}/s, ratio ${q[-1]}; provider CPU per request ${wx[1]} vs ${rx[1]} ms, busy ${wx[2]} vs ${rx[2]} %; worker RssAnon $(rss) kB"
	if [ "$i" = 1 ]; then
		rss0=$hwm
		[ -n "${BENCH_LOG_MEMORY:-}" ] && psql_q -c "SELECT pg_log_backend_memory_contexts($worker)" >/dev/null
	fi
done
rss1=$hwm

# The worker's own cost per refresh, with next to nothing for a provider to
# do: the fault peer's instant "ok" token endpoint answers each refresh at
# once, and the worker's CPU time (utime + stime) over BENCH_CPU_ROUNDS (3)
# rounds of $N due auths gives its refreshes per second of its own CPU.
fault_start
[ $pin = 1 ] && taskset -apc 0 "${TV_PEER_PIDS[-1]}" >/dev/null
psql_q -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
SELECT tokenvault.create_client('instant', 'instant', 'oauth2', jsonb_build_object(
    'client_id', 'tv-instant', 'auth_url', :'url' || '/authorize', 'allow_insecure_http', true, 'token_url', :'url' || '/ok/token')) AS c \gset
SELECT count(tokenvault.create_auth(tokenvault.create_user('instant-' || i), :'c', 'instant',
           jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text),
                              'refresh_token', 'TVSECRET-rt-' || md5(random()::text), 'expires_in', 3600)))
  FROM generate_series(1, (SELECT count(*) FROM tokenvault.auths)) i;
SQL
worker_ticks() { awk '{print $14 + $15}' "/proc/$worker/stat"; }
cpu_round() {
	local done0 t0
	done0=$(refreshes_done)
	t0=$(worker_ticks)
	psql_q -c "UPDATE tokenvault.auths a SET refresh_at = now() FROM tokenvault.clients c
	            WHERE c.id = a.client_id AND c.service = 'instant'" >/dev/null
	wait_refreshes $((done0 + n))
	awk -v n="$n" -v d="$(($(worker_ticks) - t0))" -v hz="$hz" 'BEGIN {printf "%d", (d > 0 ? n * hz / d : 0)}'
}
c=()
for i in $(seq 1 "${BENCH_CPU_ROUNDS:-3}"); do
	c+=("$(cpu_round)")
	echo "instant provider round $i: $n refreshes, ${c[-1]} per second of the worker's CPU"
done
cpu=$(printf '%s\n' "${c[@]}" | median)
[ -n "${BENCH_LOG_MEMORY:-}" ] && psql_q -c "SELECT pg_log_backend_memory_contexts($worker)" >/dev/null && sleep 1 && cp "$TV_LOG" "$BENCH_LOG_MEMORY"
wm=$(printf '%s\n' "${w[@]}" | median)
rm_=$(printf '%s\n' "${r[@]}" | median)
measured=$((n * (ROUNDS - 1)))
per100k=$(( measured > 0 ? (rss1 - rss0) * 100000 / measured : 0 ))
psql_q -c "SELECT refreshes_succeeded, refreshes_failed, http_p50_ms::int, http_p99_ms::int FROM tokenvault.stats" |
	awk -F'|' '{print "worker stats: " $1 " refreshed, " $2 " failed, request p50 " $3 " ms, p99 " $4 " ms"}'
echo "worker RssAnon, highest so far: ${rss0} kB after round 1, ${rss1} kB after $measured more refreshes"
ratio=$(printf '%s\n' "${q[@]}" | median | awk '{printf "%.2f", $1}')
echo "worker_throughput: worker ${wm}/s vs raw ${rm_}/s (medians), median of the rounds' ratios ${ratio} (target >= 0.9); worker RSS $( [ $per100k -ge 0 ] && echo +)${per100k} KiB per 100 000 refreshes (target < 1024); ${cpu} refreshes per second of the worker's CPU against an instant provider"
