#!/usr/bin/env bash
# A streaming standby: its worker idles until promotion; an application that
# reads tokens there gets the replicated ones at once, since no refresh can
# happen there (the primary refreshes and replication brings the tokens); a
# refresh that is needed or asked for is refused with 25006 at once, in the
# worker's database and in another.  Once promoted, the worker serves.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
TV_EXTRA_CONF="tokenvault.http_timeout = 5" cluster_start
fault_start
createdb tv_app
for db in postgres tv_app; do
	q -d "$db" -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
SELECT tokenvault.create_client('API', 'api', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', :'url' || '/a', 'allow_insecure_http', true, 'token_url', :'url' || '/ok/token')) AS ok_client,
       tokenvault.create_client('Down', 'down', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', :'url' || '/a', 'allow_insecure_http', true, 'token_url', :'url' || '/s500/token')) AS down_client \gset
SELECT tokenvault.create_user('sb-user') AS u \gset
SELECT tokenvault.create_auth(:'u', :'ok_client', 'valid', jsonb_build_object(
    'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
    'expires_in', 600));
-- expired, and the primary cannot refresh it either (its provider answers 500)
SELECT tokenvault.create_auth(:'u', :'down_client', 'expired', jsonb_build_object(
    'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
    'expires_at', now() - interval '1 minute'));
SQL
done

standby_create
sb_data=$TV_SB_DATA sb_port=$TV_SB_PORT
standby_start
sb() { PGPORT=$sb_port q "$@"; }
sb_state() { PGPORT=$sb_port sqlstate "$1"; }
auth_of() { echo "(SELECT id FROM tokenvault.auths WHERE name = '$1')"; }
worker_state() { [ "$(sb -c "SELECT worker_state FROM tokenvault.stats")" = "$1" ]; }
replayed() { [ "$(sb -d tv_app -c "SELECT count(*) FROM tokenvault.auths")" = 2 ]; }

is "$(sb -c "SELECT pg_is_in_recovery()")" t "a standby of the test cluster runs"
wait_until 10 "the standby has the auths" replayed
wait_until 10 "the worker idles on the standby" worker_state standby && ok "on a standby the worker idles (state standby)"

for db in postgres tv_app; do
	export PGDATABASE=$db
	primary_token=$(q -c "SELECT md5(tokenvault.access_token($(auth_of valid)))")
	is "$(sb -c "SET statement_timeout = '3s'; SET tokenvault.min_validity = '15min';
	             SELECT md5(tokenvault.access_token($(auth_of valid)))")" "$primary_token" \
		"$db: access_token() on the standby hands out the replicated token, still valid, at once (no refresh can happen there)"
	is "$(sb_state "SET statement_timeout = '3s'; SELECT tokenvault.access_token($(auth_of expired))")" 25006 \
		"$db: an expired token is refused at once with read_only_sql_transaction"
	is "$(sb_state "SET statement_timeout = '3s'; SELECT tokenvault.refresh_auth($(auth_of valid))")" 25006 \
		"$db: so is refresh_auth()"
done
export PGDATABASE=postgres

# promoted, the worker serves its database: a token due soon is refreshed
as_server_user pg_ctl -D "$sb_data" -w -t 60 promote >/dev/null
wait_until 15 "the worker leaves its standby state" worker_state idle && ok "once promoted the worker serves (state idle)"
sb -c "UPDATE tokenvault.auths SET expires_at = now() + interval '3 s' WHERE name = 'valid'" >/dev/null
refreshed() { [ "$(sb -c "SELECT last_refreshed_at IS NOT NULL AND expires_at > now() + interval '30 min' FROM tokenvault.auths WHERE name = 'valid'")" = t ]; }
wait_until 20 "the promoted server's worker refreshes a token due" refreshed &&
	ok "  ... and refreshes a token that falls due"
is "$(sb_state "SELECT tokenvault.refresh_auth($(auth_of valid))")" ok "  ... and refresh_auth() works again"
is "$(PGDATABASE=tv_app sb_state "SELECT tokenvault.refresh_auth($(auth_of valid))")" ok \
	"  ... in another database too"
done_testing
