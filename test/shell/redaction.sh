#!/usr/bin/env bash
# A hostile provider quotes the token request back (the fault peer's quote
# cases: body, Authorization header and every value, raw, percent-encoded in
# either hex case, form-encoded, JSON-escaped, base64) in its error,
# error_description, or the odd fields of a 200.
# (a) The redaction is bounded: a code that is part of "[redacted]" ('cted')
#     and secrets quoted thousands of times return at once with the
#     provider's error; the backend's memory stays small; nothing restarts.
# (b) Secrets with characters that every encoding treats differently (space
#     + / & = " \ % and non-ASCII), as client secret (Basic, in a form body,
#     in a JSON body), refresh token, code and password, refreshed by the
#     worker and on demand (refresh_auth, access_token) and exchanged by
#     complete_authorization: none shows, in any encoding, in last_error,
#     events, NOTIFY payloads, the raised errors or the server log.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
# A cluster of its own: its worker serves this test's database, and its
# address space is capped (the soft limit, raised again once it runs) so
# that a redaction that runs away fails with 53200 rather than taking the
# machine down.
unset TV_DATA
ulimit -S -v 1572864
TV_EXTRA_CONF="tokenvault.http_timeout = 5
tokenvault.database = tv_redact
log_min_error_statement = panic" cluster_start
ulimit -S -v unlimited
fault_start

# UTF-8 databases, so that \u escapes decode: the worker's and one it does
# not serve, for the calls on demand
createdb -E UTF8 -T template0 --locale=C tv_redact
createdb -E UTF8 -T template0 --locale=C tv_redact_od
# every refresh_auth() is to reach the provider, even just after the import
# of a token: no rate limit per auth (refresh_limits.sh tests it)
q -c "ALTER DATABASE tv_redact_od SET tokenvault.min_refresh_interval = 0" >/dev/null
for db in tv_redact tv_redact_od; do q -d "$db" -c "CREATE EXTENSION tokenvault"; done
export PGDATABASE=tv_redact_od

# ---- (a) bounded ----

q -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
SELECT tokenvault.create_user('redact-user') AS u \gset
CREATE TABLE attack (name text, client uuid, state text, code text);
INSERT INTO attack (name, client, code)
SELECT n, tokenvault.create_client(n, 'quoting', 'oauth2', jsonb_build_object(
           'client_id', 'cid', 'client_secret', 'TVSECRET-cs-' || md5(random()::text), 'client_auth', 'post',
           'auth_url', :'url' || '/authorize', 'allow_insecure_http', true, 'token_url', :'url' || path)), code
  FROM (VALUES ('cted', '/quote/token', 'cted'),
               ('repeated', '/quote/token?as=raw&repeat=1000', 'TVSECRET-co-' || md5(random()::text)))
       v(n, path, code);
UPDATE attack SET state = substring(tokenvault.authorize_url(client, :'u', 'http://127.0.0.1:1/cb') FROM '[?&]state=([^&]+)');
SQL

# one session: the attack, timed, then how far the backend's peak resident
# memory grew (VmHWM, read by the backend itself)
attack() {
	q -v name="$1" <<'SQL'
CREATE TEMP TABLE hwm AS SELECT substring(pg_read_file('/proc/self/status') FROM 'VmHWM:\s*(\d+)')::bigint AS kb;
SELECT clock_timestamp() AS t0, pg_postmaster_start_time() AS pm \gset
SET my.name = :'name';
DO $$
BEGIN
    PERFORM tokenvault.complete_authorization(state, code) FROM attack WHERE name = current_setting('my.name');
EXCEPTION WHEN OTHERS THEN
    CREATE TEMP TABLE got AS SELECT SQLSTATE AS state;
END
$$;
SELECT coalesce((SELECT state FROM got), 'none'),
       round(extract(epoch FROM clock_timestamp() - :'t0') * 1000) < 5000,
       (substring(pg_read_file('/proc/self/status') FROM 'VmHWM:\s*(\d+)')::bigint - (SELECT kb FROM hwm)) < 65536,
       pg_postmaster_start_time() = :'pm'
SQL
}
pm_before=$(q -c "SELECT pg_postmaster_start_time()")
for name in cted repeated; do
	IFS='|' read -r state quick small same <<<"$(attack "$name" 2>&1 | tail -n 1)"
	is "$state" 28000 "$name: complete_authorization against a provider quoting the request fails with the provider's invalid_grant (28000)"
	is "$quick" t "  ... within 5 s"
	is "$small" t "  ... and the backend's peak memory grows by less than 64 MB"
	is "$same" t "  ... and the server did not restart"
done
is "$(q -c "SELECT pg_postmaster_start_time()")" "$pm_before" "the postmaster never restarted"

# ---- (b) encoded secrets ----

# made up now, the marker first, then characters each encoding treats
# differently between random digits
odd() { echo "TVSECRET-$1-$(openssl rand -hex 4) +/&=\"\\%é$(openssl rand -hex 2)€ +%2B$(openssl rand -hex 2)"; }
cs=$(odd cs) rt=$(odd rt) code=$(odd co) pw=$(odd pw)

# one client per way of sending the client secret, place of the quote and
# encoding; per client, on demand: an auth to refresh_auth(), an expired one
# for access_token(), a state for complete_authorization(); with the
# password grant an auth to refresh_auth(); in the worker's database, an
# auth due at once.  quote200 answers 200 with the quote in its fields.
setup() {
	q -d "$1" -v url="$TV_FAULT_URL" -v cs="$cs" -v rt="$rt" -v pw="$pw" <<'SQL' >/dev/null
SELECT tokenvault.create_user('redact-user-b') AS u \gset
CREATE TABLE quoting (client uuid, grant_type text, refresh uuid, expired uuid, state text);
WITH c AS (
    SELECT g, place || '?as=' || enc AS path, style
      FROM unnest('{quote,quote_error}'::text[]) place,
           unnest('{all,raw,percent,percent_lower,form,form_lower,json,json_ascii,base64,base64url}'::text[]) enc,
           unnest('{basic,post,json}'::text[]) style,
           unnest('{authorization_code,password}'::text[]) g
     WHERE g = 'authorization_code' OR style = 'post'
    UNION ALL
    SELECT 'authorization_code', 'quote200?as=' || enc, style
      FROM unnest('{all,percent,base64}'::text[]) enc, unnest('{basic,post,json}'::text[]) style)
INSERT INTO quoting (client, grant_type)
SELECT tokenvault.create_client(format('%s %s %s', g, path, style), 'quoting', 'oauth2', jsonb_build_object(
           'grant', g, 'client_id', 'cid+/ x', 'client_secret', :'cs',
           'client_auth', CASE style WHEN 'basic' THEN 'basic' ELSE 'post' END,
           'body_format', CASE style WHEN 'json' THEN 'json' ELSE 'form' END,
           'auth_url', :'url' || '/authorize', 'allow_insecure_http', true, 'token_url', :'url' || '/' || split_part(path, '?', 1) || '/token?'
           || split_part(path, '?', 2))), g
  FROM c;
UPDATE quoting SET refresh = tokenvault.create_auth(:'u', client, 'refresh',
    CASE grant_type WHEN 'password' THEN jsonb_build_object('username', 'user+/ x', 'password', :'pw',
                                                            'access_token', 'TVSECRET-at-' || md5(random()::text),
                                                            'expires_in', 1)
                    ELSE jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text),
                                            'refresh_token', :'rt', 'expires_in', 1) END);
UPDATE quoting SET expired = tokenvault.create_auth(:'u', client, 'expired', jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', :'rt',
           'expires_at', '2000-01-01T00:00:00Z')),
       state = substring(tokenvault.authorize_url(client, :'u', 'http://127.0.0.1:1/cb') FROM '[?&]state=([^&]+)')
 WHERE grant_type = 'authorization_code';
SQL
}

# the worker's refreshes, heard by a LISTEN session
listen_start -d tv_redact
worker_notify=$TV_LISTEN_OUT
setup tv_redact
all_failed() { [ "$(q -d tv_redact -c "SELECT count(*) FILTER (WHERE failure_count = 0) FROM tokenvault.auths")" = 0 ]; }
wait_until 60 "the worker tries every auth" all_failed && ok "the worker refreshed every auth against the quoting provider, and each failed"
listen_stop
is "$(grep -c '^Asynchronous notification' "$worker_notify")" "$(q -d tv_redact -c "SELECT count(*) FROM tokenvault.events")" \
	"  ... the LISTEN session heard every event"

# on demand: each call's error as psql shows it (message, detail, hint, context)
listen_start -d tv_redact_od
setup tv_redact_od
q -v code="$code" >"$TV_TMP/calls.sql" <<'SQL'
SELECT format('SELECT tokenvault.refresh_auth(%L);', refresh) FROM quoting
UNION ALL SELECT format('SELECT tokenvault.access_token(%L);', expired) FROM quoting WHERE expired IS NOT NULL
UNION ALL SELECT format('SELECT tokenvault.complete_authorization(%L, %L);', state, :'code') FROM quoting WHERE state IS NOT NULL;
SQL
psql -X -q -At -v VERBOSITY=verbose -f "$TV_TMP/calls.sql" >/dev/null 2>"$TV_TMP/errors.out" || true
listen_stop
is "$(grep -c '^psql:.*ERROR:' "$TV_TMP/errors.out")" "$(wc -l <"$TV_TMP/calls.sql")" "every call on demand failed with an error"
is "$(grep -c 'withheld: it quotes a secret of the request' "$TV_TMP/errors.out")" \
	"$(grep -c '^psql:.*ERROR: .*the provider refused the request' "$TV_TMP/errors.out")" \
	"  ... and where the provider's error is quoted, it is withheld"

# what is left: last_error, events, NOTIFY payloads, errors, server log
for db in tv_redact tv_redact_od; do
	q -d "$db" -c "SELECT payload::text FROM tokenvault.events UNION ALL SELECT last_error FROM tokenvault.auths" \
		>"$TV_TMP/rows.$db.out"
	is "$(q -d "$db" -c "SELECT count(*) FROM tokenvault.auths WHERE last_error IS NULL AND failure_count > 0")" 0 \
		"$db: every failed auth has a last_error"
done
for f in "$TV_TMP"/rows.*.out "$worker_notify" "$TV_LISTEN_OUT" "$TV_TMP/errors.out" "$TV_LOG"; do
	is "$(leak_scan "$f" >/dev/null && echo none || echo "a secret shows")" none \
		"no secret, in any encoding, in $(basename "$f")"
done
# the secrets themselves, in the peer's encodings, everywhere
have() { grep -qF -- "$1" "$TV_TMP"/rows.*.out "$worker_notify" "$TV_LISTEN_OUT" "$TV_TMP/errors.out" "$TV_LOG"; }
shown=0
for s in "$cs" "$rt" "$code" "$pw"; do
	for form in "$s" "$(node -e 'process.stdout.write(encodeURIComponent(process.argv[1]))' "$s")" \
		"$(node -e 'process.stdout.write(new URLSearchParams({v: process.argv[1]}).toString().slice(2))' "$s")" \
		"$(node -e 'process.stdout.write(JSON.stringify(process.argv[1]).slice(1, -1))' "$s")" \
		"$(node -e 'process.stdout.write(Buffer.from(process.argv[1]).toString("base64").slice(4, -4))' "$s")"; do
		have "$form" && shown=$((shown + 1))
	done
done
is "$shown" 0 "none of the four secrets shows raw, percent-, form-, JSON- or base64-encoded anywhere"

dropdb --force tv_redact_od
done_testing
