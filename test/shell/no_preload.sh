#!/usr/bin/env bash
# The SQL API must work when tokenvault is not in shared_preload_libraries:
# the library then loads on the first call, settings included.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
TV_EXTRA_CONF="shared_preload_libraries = ''"
cluster_start

out=$(psql -X -q -At -v ON_ERROR_STOP=1 <<'SQL'
SHOW shared_preload_libraries;
SET tokenvault.min_validity = '10s';   -- a placeholder until the library loads
CREATE EXTENSION tokenvault;
SELECT 'TVSECRET-' || md5(random()::text) AS token \gset
SELECT tokenvault.create_user('np-1') AS u \gset
SELECT tokenvault.create_client('API', 'api', 'api_key') AS c \gset
SELECT tokenvault.create_auth(:'u', :'c', NULL, jsonb_build_object('api_key', :'token')) AS a \gset
SELECT tokenvault.access_token(:'a') = :'token';
SHOW tokenvault.min_validity;
SELECT worker_state || ' ' || (worker_pid IS NULL) FROM tokenvault.stats;
SQL
)
expected=$'\nt\n10s\nabsent true'
if [ "$out" != "$expected" ]; then
	echo "not ok - without preloading: got $(printf %q "$out")"
	exit 1
fi
echo "ok - CREATE EXTENSION and access_token work without shared_preload_libraries, and stats says the worker is absent"
