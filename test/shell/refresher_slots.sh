#!/usr/bin/env bash
# No background worker slot free for an on-demand refresher (a database the
# worker does not serve, max_worker_processes used up): access_token() does
# as when the provider is down, handing out a token still valid and
# refusing one that is not with 08000, and the server log says what to raise.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
# two slots: the tokenvault worker's and the logical replication launcher's
TV_EXTRA_CONF="max_worker_processes = 2" cluster_start
fault_start
createdb tv_app
export PGDATABASE=tv_app
q -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
SELECT tokenvault.create_client('API', 'api', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', :'url' || '/a', 'allow_insecure_http', true, 'token_url', :'url' || '/ok/token')) AS c \gset
SELECT tokenvault.create_user('slots-user') AS u \gset
SELECT tokenvault.create_auth(:'u', :'c', 'valid', jsonb_build_object(
    'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
    'expires_in', 600));
SELECT tokenvault.create_auth(:'u', :'c', 'expired', jsonb_build_object(
    'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
    'expires_at', now() - interval '1 minute'));
SQL
auth_of() { echo "(SELECT id FROM tokenvault.auths WHERE name = '$1')"; }

stored=$(q -c "SELECT md5(tokenvault.access_token($(auth_of valid)))")
is "$(q -c "SET statement_timeout = '10s'; SET tokenvault.min_validity = '15min';
            SELECT md5(tokenvault.access_token($(auth_of valid)))")" "$stored" \
	"with no worker slot free, access_token() hands out the token still valid for 10 minutes"
is "$(sqlstate "SET statement_timeout = '10s'; SELECT tokenvault.access_token($(auth_of expired))")" 08000 \
	"  ... and refuses an expired one with connection_exception"
grep -q 'could not start the tokenvault refresher' "$TV_LOG" && grep -q 'Raise max_worker_processes' "$TV_LOG" &&
	ok "  ... and the server log says to raise max_worker_processes" ||
	not_ok "  ... and the server log says to raise max_worker_processes"
is "$(curl -sf "$TV_FAULT_URL/_count/ok")" 0 "  ... no request was sent"
done_testing
