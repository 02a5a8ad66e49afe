#!/usr/bin/env bash
# Benchmark: on-demand refresh latency, tokenvault.refresh_auth(), against one
# raw curl round trip to the same OAuth2 server (oidc-provider, test/peers)
# with the same grant: refresh_token with rotation, each request using the
# refresh token the previous one returned.
#
# The two run interleaved in blocks, BENCH_REFRESHES (600) of each; each
# tokenvault refresh is timed inside the server (clock_timestamp() around
# the call: the hand-off to the refresher, the request, and the commit of the
# result), each raw one by curl's own time_total.  The last line printed:
#   refresh_latency: p50 <t> ms vs raw <r> ms = <x>x (target <= 1.2); p99 <t> ms vs raw <r> ms
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_REFRESHES:-600}
BLOCK=50

# every refresh_auth() is to send its request: no rate limit per auth
export TV_EXTRA_CONF="tokenvault.min_refresh_interval = 0"
source test/cluster.sh
source test/peers.sh
cluster_start
oidc_start ACCESS_TTL=3600
work="$TV_TMP/bench"
mkdir -m 700 "$work"

psql_q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
psql_q -v url="$TV_OIDC_URL" -v secret="$TV_CLIENT_SECRET" -v pw="$TV_USER_PASSWORD" <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
SELECT tokenvault.create_client('oidc', 'oidc', 'oauth2', jsonb_build_object(
    'grant', 'password', 'client_id', 'tv-pw', 'client_secret', :'secret',
    'allow_insecure_http', true, 'token_url', :'url' || '/token', 'scopes', '["openid", "offline_access"]'::jsonb)) AS c \gset
SELECT tokenvault.create_auth(tokenvault.create_user('bench'), :'c', 'bench',
    jsonb_build_object('username', 'alice', 'password', :'pw')) AS a \gset
CREATE TABLE timings (ms float8);
CREATE PROCEDURE refresh_block(a uuid, n int) LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
BEGIN
    FOR i IN 1..n LOOP
        t0 := clock_timestamp();
        PERFORM tokenvault.refresh_auth(a);
        INSERT INTO timings VALUES (extract(epoch FROM clock_timestamp() - t0) * 1000);
        COMMIT;
    END LOOP;
END
$$;
SQL
auth=$(psql_q -c "SELECT id FROM tokenvault.auths WHERE name = 'bench'")

# The raw side gets a grant of its own from the same client; curl reads the
# client credentials and the refresh token from a config file, not argv.
curl_cfg="$work/curl.cfg"
first=$(printf 'user = "tv-pw:%s"\ndata = "grant_type=password&username=alice&scope=openid%%20offline_access"\ndata-urlencode = "password=%s"\n' \
	"$TV_CLIENT_SECRET" "$TV_USER_PASSWORD" | curl -sf -K - "$TV_OIDC_URL/token")
refresh_token=$(node -e 'console.log(JSON.parse(process.argv[1]).refresh_token)' "$first")
raw_block() {
	local i out
	for ((i = 0; i < $1; i++)); do
		printf 'user = "tv-pw:%s"\ndata = "grant_type=refresh_token"\ndata-urlencode = "refresh_token=%s"\n' \
			"$TV_CLIENT_SECRET" "$refresh_token" >"$curl_cfg"
		out=$(curl -sf -K "$curl_cfg" -w '\n%{time_total}' "$TV_OIDC_URL/token")
		refresh_token=$(sed -n '1s/.*"refresh_token":"\([^"]*\)".*/\1/p' <<<"$out")
		[ -n "$refresh_token" ] || { echo "raw refresh failed" >&2; return 1; }
		awk -v t="$(tail -n 1 <<<"$out")" 'BEGIN { print t * 1000 }' >>"$work/raw.ms"
	done
}

done_n=0
while [ "$done_n" -lt "$N" ]; do
	n=$((N - done_n < BLOCK ? N - done_n : BLOCK))
	psql_q -c "CALL refresh_block('$auth', $n)"
	raw_block "$n"
	done_n=$((done_n + n))
done

psql_q -c "CREATE TABLE raw (ms float8)"
psql_q -c "\\copy raw FROM '$work/raw.ms'"
psql_q -F ' ' <<'SQL' >"$work/result"
WITH p AS (
    SELECT (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM timings) AS t50,
           (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FROM timings) AS t99,
           (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM raw) AS r50,
           (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FROM raw) AS r99,
           (SELECT count(*) FROM timings) AS n_tv, (SELECT count(*) FROM raw) AS n_raw)
SELECT n_tv, n_raw, round(t50::numeric, 2), round(r50::numeric, 2), round((t50 / r50)::numeric, 2),
       round(t99::numeric, 2), round(r99::numeric, 2) FROM p;
SQL
read -r n_tv n_raw t50 r50 ratio t99 r99 <"$work/result"
echo "refreshes: tokenvault $n_tv, raw $n_raw (interleaved blocks of $BLOCK)"
if grep -rqE 'TVSECRET[-a-z]*[0-9a-f]{8}' "$TV_LOG"; then
	echo "a secret leaked into the server log" >&2
	exit 1
fi
echo "refresh_latency: p50 $t50 ms vs raw $r50 ms = ${ratio}x (target <= 1.2); p99 $t99 ms vs raw $r99 ms"
