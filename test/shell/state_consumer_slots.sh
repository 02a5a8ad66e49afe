#!/usr/bin/env bash
# No background worker slot free (max_worker_processes used up) to take an
# authorization state apart from the caller's transaction:
# complete_authorization() fails with 53400 and a hint, sends nothing, and
# leaves the state unused, so that it completes once a slot is free.
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
SELECT tokenvault.create_client('Code', 'code', 'oauth2', jsonb_build_object(
    'client_id', 'slots', 'auth_url', :'url' || '/authorize', 'allow_insecure_http', true, 'token_url', :'url' || '/ok/token')) AS c \gset
SELECT tokenvault.create_user('slots-user') AS u \gset
SQL
st=$(q -c "SELECT split_part(split_part(tokenvault.authorize_url(c.id, u.id, 'https://app.example/cb'), 'state=', 2), '&', 1)
             FROM tokenvault.clients c, tokenvault.users u")
out=$(psql -X -q -At -v VERBOSITY=verbose -c "SET statement_timeout = '10s';
        SELECT tokenvault.complete_authorization('$st', 'code')" 2>&1 || true)
is "$(sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\): .*/\1/p' <<<"$out")" 53400 \
	"with no worker slot free, complete_authorization() fails with configuration_limit_exceeded"
grep -q '^HINT:  Raise max_worker_processes' <<<"$out" && ok "  ... and a hint to raise max_worker_processes" ||
	not_ok "  ... and a hint to raise max_worker_processes"
is "$(curl -sf "$TV_FAULT_URL/_count/ok")" 0 "  ... no exchange was sent"
is "$(q -c "SELECT count(*) FROM tokenvault.auth_states WHERE state = '$st'")" 1 "  ... and the state is unused"

as_server_user pg_ctl -D "$TV_DATA" -l "$TV_LOG" -o "-c max_worker_processes=8" -w -t 60 restart >/dev/null
a=$(q -c "SELECT tokenvault.complete_authorization('$st', 'code')" || true)
is "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE id::text = '$a'")" 1 \
	"  ... so that it completes once a slot is free"
done_testing
