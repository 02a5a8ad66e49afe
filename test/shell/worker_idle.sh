#!/usr/bin/env bash
# An idle worker costs nothing: with 100 000 auths scheduled hours ahead it
# uses under 1 % CPU over 30 s and runs no statement more than once a second.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
unset TV_DATA
TV_EXTRA_CONF="tokenvault.database = tv_worker
shared_preload_libraries = 'pg_stat_statements, tokenvault'
pg_stat_statements.track = all" cluster_start
export PGDATABASE=tv_worker
createdb tv_worker
q <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
CREATE EXTENSION pg_stat_statements;
SELECT tokenvault.create_client('Hours', 'hours', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', 'https://provider.invalid/a', 'token_url', 'https://provider.invalid/token')) AS c \gset
SELECT count(tokenvault.create_auth(tokenvault.create_user('user-' || i), :'c', 'auth ' || i, jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
           'expires_in', 4 * 3600 + i % 3600)))
  FROM generate_series(1, 100000) i;
SQL
is "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE refresh_at > now() + interval '3 hours'")" 100000 \
	"100 000 auths scheduled hours ahead"
idle() { [ "$(q -c "SELECT worker_state FROM tokenvault.stats")" = idle ]; }
wait_until 10 "the worker is idle" idle
pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tokenvault worker'")
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
q -c "SELECT pg_stat_statements_reset()" >/dev/null
t0=$(cpu)
start=$(millis)
sleep 30    # the measuring window itself
t1=$(cpu)
elapsed=$(($(millis) - start))
hz=$(getconf CLK_TCK)
# percent of one core, in hundredths
pct100=$(((t1 - t0) * 100 * 100 * 1000 / hz / elapsed))
is "$([ "$pct100" -lt 100 ] && echo yes || echo "$pct100/100 %")" yes \
	"the worker used $((pct100 / 100)).$(printf '%02d' $((pct100 % 100))) % CPU over 30 s (under 1 %)"
max_calls=$(q -c "SELECT coalesce(max(calls), 0) FROM pg_stat_statements WHERE query !~* 'pg_stat_statements'")
is "$([ "$max_calls" -le 30 ] && echo yes || echo "$max_calls calls")" yes \
	"no statement ran more than once a second (the most: $max_calls in 30 s)"
is "$(kill -0 "$pid" && echo alive)" alive "  ... and the worker is still the same process"
done_testing
