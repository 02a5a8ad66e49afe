#!/usr/bin/env bash
# A fast shutdown is not held up by requests in flight: 500 auths due at
# once, with room for all of them in flight (max_concurrent_refreshes at its
# highest, 1024), at a peer that never answers; pg_ctl stop -m fast within
# 5 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
unset TV_DATA
TV_EXTRA_CONF="tokenvault.database = tv_worker
tokenvault.http_timeout = 120
tokenvault.max_concurrent_refreshes = 1024" cluster_start
export PGDATABASE=tv_worker
createdb tv_worker
fault_start
q -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
SELECT tokenvault.create_client('Hangs', 'hangs', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', :'url' || '/a', 'allow_insecure_http', true, 'token_url', :'url' || '/hang/token')) AS c \gset
SELECT count(tokenvault.create_auth(tokenvault.create_user('user-' || i), :'c', 'auth ' || i, jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
           'expires_in', 30)))
  FROM generate_series(1, 500) i;
SQL
hanging() { [ "$(curl -sf "$TV_FAULT_URL/_count/hang")" -ge 500 ]; }
wait_until 30 "500 requests hang at the peer" hanging && ok "500 requests from the worker hang at the peer"
is "$(q -c "SELECT worker_state FROM tokenvault.stats")" working "  ... and says it is working"
start=$(millis)
as_server_user pg_ctl -D "$TV_DATA" -m fast -w -t 30 stop >/dev/null
took=$(($(millis) - start))
is "$([ "$took" -lt 5000 ] && echo yes || echo "$took ms")" yes "pg_ctl stop -m fast completes within 5 s ($took ms)"
is "$(grep -c 'terminating background worker "tokenvault worker" due to administrator command' "$TV_LOG")" 1 \
	"  ... the worker stopping on SIGTERM"
done_testing
