#!/usr/bin/env bash
# What a misbehaving provider does to an auth: every fault of the scriptable
# peer (test/peers/fault.mjs) yields its documented error class, SQLSTATE and
# auth status (README, "When the provider fails"), the previous token stays
# in use while it is valid, and a cancelled request returns within a second.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
[ -n "${TV_DATA:-}" ] || TV_EXTRA_CONF="tokenvault.http_timeout = 5" cluster_start
fault_start

db=tv_faults_$$
createdb "$db"
# every refresh_auth() here is meant to reach the peer: no rate limit (refresh_limits.sh tests it)
q -d "$db" -c "ALTER DATABASE $db SET tokenvault.min_refresh_interval = 0" >/dev/null
export PGDATABASE=$db
q -v url="$TV_FAULT_URL" -v secret="$TV_CLIENT_SECRET" <<'SQL'
CREATE EXTENSION tokenvault;
SELECT tokenvault.create_user('fault-user') AS u \gset

-- One client and one auth per fault case, the auth holding a token valid for
-- ten minutes and a refresh token, both made up now.
CREATE TABLE cases (name text PRIMARY KEY, path text, settings jsonb, want_state text, want_status text,
                    want_error text, client_id uuid, auth_id uuid, old_token text, old_refresh text);
INSERT INTO cases (name, path, settings, want_state, want_status, want_error) VALUES
    -- retryable: the token stays, the auth stays active
    ('s500',                's500',                '{}', '08000', 'active', 'refused the request: server_error$'),
    ('s502',                's502',                '{}', '08000', 'active', 'answered HTTP 502$'),
    ('s503 + Retry-After',  's503',                '{}', '08000', 'active', 'answered HTTP 503, retry after 5 s$'),
    ('s429 + Retry-After',  's429',                '{}', '08000', 'active', 'rate_limited, retry after 7 s$'),
    ('s429 + HTTP date',    's429_date',           '{}', '08000', 'active', 'retry after ([12][0-9]|3[01]) s$'),
    ('html error page',     'html',                '{}', '08000', 'active', 'answered HTTP 500$'),
    ('slow beyond timeout', 'slow/token?ms=9000',  '{}', '08000', 'active', 'timed out'),
    ('hanging',             'hang',                '{}', '08000', 'active', 'timed out'),
    ('dribbling body',      'dribble',             '{}', '08000', 'active', 'timed out'),
    ('connection refused',  'ok',                  '{"allow_insecure_http": true, "token_url": "http://127.0.0.1:1/token"}', '08000', 'active', 'could not connect'),
    -- the grant is gone: the user must authorize again
    ('invalid_grant',       'invalid_grant',       '{}', '28000', 'needs_reauth', 'invalid_grant: Token has been expired or revoked.$'),
    ('invalid_client',      'invalid_client',      '{}', '28000', 'needs_reauth', 'invalid_client$'),
    ('unauthorized_client', 'unauthorized_client', '{}', '28000', 'needs_reauth', 'unauthorized_client$'),
    ('error in a 200',      'error200',            '{}', '28000', 'needs_reauth', 'invalid_grant: The refresh token is invalid$'),
    ('secrets echoed back', 'leaky',               '{}', '28000', 'needs_reauth', 'invalid_grant \(its error_description is withheld: it quotes a secret of the request\)$'),
    -- anything else is an error that retrying will not mend
    ('invalid_request',     'invalid_request',     '{}', '38000', 'error', 'invalid_request: Missing parameter$'),
    ('html login page',     'html200',             '{}', '38000', 'error', 'neither JSON nor form-encoded \(content type text/html\)$'),
    ('malformed JSON',      'malformed',           '{}', '38000', 'error', 'not valid JSON$'),
    ('JSON not an object',  'not_object',          '{}', '38000', 'error', 'has no access_token$'),
    ('JSON nested deeply',  'deep',                '{}', '38000', 'error', 'not valid JSON$'),
    ('empty body',          'empty',               '{}', '38000', 'error', 'is empty$'),
    ('invalid UTF-8',       'bad_utf8',            '{}', '38000', 'error', 'not valid JSON$'),
    ('\u0000 in a token',   'nul',                 '{}', '38000', 'error', 'not valid JSON$'),
    ('10 MB body',          'huge',                '{}', '38000', 'error', 'larger than'),
    ('302 redirect',        'redirect',            '{}', '38000', 'error', 'redirect \(HTTP 302\), which is not followed$'),
    ('307 redirect',        'redirect307',         '{}', '38000', 'error', 'redirect \(HTTP 307\), which is not followed$'),
    ('token not at path',   'expires_string',      '{"token_path": "data.token"}', '38000', 'error', 'no access_token under "data.token"$'),
    ('expires_at no date',  'bad_expires_at',      '{}', '38000', 'error', 'cannot be stored: "expires_at" must be a timestamp or seconds since the epoch$'),
    ('scope an object',     'scope_object',        '{}', '38000', 'error', 'cannot be stored: field "scope" must be a non-empty string$'),
    ('CRLF in token_type',  'crlf_type',           '{}', '38000', 'error', 'cannot be stored: .*token_type'),
    -- odd but well-formed answers
    ('plain',               'ok',                  '{}', 'ok', 'active', NULL),
    ('slow within timeout', 'slow/token?ms=1500',  '{}', 'ok', 'active', NULL),
    ('nested token',        'nested',              '{"token_path": "data.token"}', 'ok', 'active', NULL),
    ('expires_in string',   'expires_string',      '{}', 'ok', 'active', NULL),
    ('expires_in in ms',    'expires_ms',          '{"expires_in_unit": "milliseconds"}', 'ok', 'active', NULL),
    ('no expires_in',       'no_expiry',           '{"token_lifetime": 1234}', 'ok', 'active', NULL),
    ('refresh expiry',      'rt_expiry',           '{}', 'ok', 'active', NULL),
    ('extra fields',        'extra',               '{}', 'ok', 'active', NULL),
    ('form-encoded',        'form',                '{}', 'ok', 'active', NULL),
    ('form as text/plain',  'text_form',           '{}', 'ok', 'active', NULL),
    ('no refresh token',    'no_refresh',          '{}', 'ok', 'active', NULL),
    ('scope as an array',   'scope_array',         '{}', 'ok', 'active', NULL),
    ('empty fields',        'empty_fields',        '{}', 'ok', 'active', NULL);

UPDATE cases SET client_id = tokenvault.create_client(name, 'fault', 'oauth2', jsonb_build_object(
        'client_id', 'fault-client', 'client_secret', :'secret',
        'auth_url', :'url' || '/authorize', 'allow_insecure_http', true, 'token_url', :'url' || '/' || path) || settings);
UPDATE cases SET old_token = 'TVSECRET-at-' || md5(random()::text), old_refresh = 'TVSECRET-rt-' || md5(random()::text);
UPDATE cases SET auth_id = tokenvault.create_auth(:'u', client_id, name, jsonb_build_object(
        'access_token', old_token, 'refresh_token', old_refresh, 'expires_in', 600));

-- refresh_auth() as SQLSTATE and message, or 'ok'
CREATE FUNCTION try_refresh(a uuid) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tokenvault.refresh_auth(a);
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
CREATE TABLE outcomes AS SELECT name, try_refresh(auth_id) AS got FROM cases ORDER BY name;
SQL
# The cases with a fault are made now, once per case: routes with a path
# ("slow/token?ms=") share a counter, so count by the first segment.
q <<'SQL' >"$TV_TMP/faults.out"
SELECT format('%s - %s: %s', CASE WHEN ok THEN 'ok' ELSE 'not ok' END, c.name, detail)
  FROM cases c JOIN outcomes o USING (name),
       tokenvault.auths a,
       LATERAL (SELECT coalesce(split_part(o.got, ' ', 1) = c.want_state
                                AND a.status = c.want_status
                                AND (c.want_error IS NULL OR (o.got ~ c.want_error AND a.last_error ~ c.want_error))
                                AND (c.want_state = 'ok') = (a.failure_count = 0)
                                AND position('TVSECRET' IN o.got) = 0
                                AND position('TVSECRET' IN coalesce(a.last_error, '')) = 0, false) AS ok,
               format('%s, status %s, %s failure(s)', CASE WHEN c.want_state = 'ok' THEN o.got
                      ELSE replace(o.got, 'TVSECRET', '<secret>') END, a.status, a.failure_count) AS detail) d
 WHERE a.id = c.auth_id
 ORDER BY c.name;
SQL
cat "$TV_TMP/faults.out"
grep -q '^not ok' "$TV_TMP/faults.out" && TV_FAILED=$((TV_FAILED + 1))

# Every failed refresh kept the old token, which access_token() still hands out
# while it is valid: here it must be valid for 15 minutes, so each call tries a
# refresh first, fails, and falls back.
is "$(q <<'SQL'
SET tokenvault.min_validity = '15min';
SELECT count(*) FILTER (WHERE tokenvault.access_token(auth_id) = old_token) || '/' || count(*)
  FROM cases c WHERE want_state <> 'ok' AND path NOT IN ('hang', 'dribble') AND path NOT LIKE 'slow%';
SQL
)" "$(q -c "SELECT count(*) || '/' || count(*) FROM cases WHERE want_state <> 'ok' AND path NOT IN ('hang', 'dribble') AND path NOT LIKE 'slow%'")" \
	"after a failed refresh access_token() hands out the previous token while it is valid"
is "$(q -c "SELECT count(*) FROM cases c JOIN tokenvault.auths a ON a.id = c.auth_id
             WHERE want_state <> 'ok' AND tokenvault._open_auth(a.secret, a.id)->>'refresh_token' <> old_refresh")" 0 \
	"no failure touched a refresh token"

# The odd answers that work, field by field.
check_sql() { is "$(q -c "$1")" t "$2"; }
tok() { echo "(SELECT tokenvault._open_auth(a.secret, a.id) FROM cases c JOIN tokenvault.auths a ON a.id = c.auth_id WHERE c.name = '$1')"; }
exp_in() { echo "(SELECT round(extract(epoch FROM a.expires_at - a.last_refreshed_at)) FROM cases c JOIN tokenvault.auths a ON a.id = c.auth_id WHERE c.name = '$1')"; }
check_sql "SELECT bool_and(t->>'access_token' LIKE 'TVSECRET-at-%' AND t->>'access_token' <> old_token)
             FROM cases c JOIN tokenvault.auths a ON a.id = c.auth_id,
                  LATERAL (SELECT tokenvault._open_auth(a.secret, a.id) t) x WHERE want_state = 'ok'" \
	"every well-formed answer replaced the access token"
check_sql "SELECT $(exp_in 'plain') = 3600 AND $(exp_in 'expires_in string') = 3600 AND $(exp_in 'expires_in in ms') = 3600" \
	"expires_in as a number, a string, or milliseconds (expires_in_unit) gives one hour"
check_sql "SELECT $(exp_in 'no expires_in') = 1234" "a missing expires_in falls back to the client's token_lifetime"
check_sql "SELECT round(extract(epoch FROM refresh_expires_at - last_refreshed_at)) = 7776000 FROM tokenvault.auths a JOIN cases c ON a.id = c.auth_id WHERE c.name = 'refresh expiry'" \
	"refresh_token_expires_in is recorded as refresh_expires_at"
check_sql "SELECT $(tok 'extra fields')->>'instance_url' = 'https://eu12.example.com' AND $(tok 'extra fields')->'team'->>'name' = 'Acme'" \
	"extra response fields are kept in the credential"
check_sql "SELECT $(tok 'no refresh token')->>'refresh_token' = (SELECT old_refresh FROM cases WHERE name = 'no refresh token')" \
	"an answer without a refresh token keeps the old one"
check_sql "SELECT $(tok 'plain')->>'refresh_token' LIKE 'TVSECRET-rt-%' AND $(tok 'plain')->>'refresh_token' <> (SELECT old_refresh FROM cases WHERE name = 'plain')" \
	"a rotated refresh token replaces the old one"
check_sql "SELECT scopes = '{read,write}' FROM tokenvault.auths a JOIN cases c ON a.id = c.auth_id WHERE c.name = 'scope as an array'" \
	"a scope sent as an array is read as the list it is"
check_sql "SELECT a.token_type = 'Bearer' AND NOT $(tok 'empty fields') ? 'id_token'
                  AND $(tok 'empty fields')->>'refresh_token' = (SELECT old_refresh FROM cases WHERE name = 'empty fields')
             FROM tokenvault.auths a JOIN cases c ON a.id = c.auth_id WHERE c.name = 'empty fields'" \
	"empty or null token_type, id_token and refresh_token are taken for none"
check_sql "SELECT $(tok 'form-encoded') ?& ARRAY['access_token', 'refresh_token'] AND $(exp_in 'form-encoded') = 3600
                  AND $(tok 'form as text/plain') ?& ARRAY['access_token', 'refresh_token']" \
	"form-encoded answers are read, whatever their content type"

# What the provider saw: a form body with Basic client authentication by
# default, a JSON body with the secret in it when asked (compared, not printed).
last_request() { curl -sf "$TV_FAULT_URL/_last/$1" | sed "s/'/''/g"; }
check_sql "SELECT (j->'headers'->>'content-type') = 'application/x-www-form-urlencoded'
                  AND j->'headers'->>'authorization' = 'Basic ' || translate(encode(convert_to('fault-client:$TV_CLIENT_SECRET', 'UTF8'), 'base64'), E'\\n', '')
                  AND j->>'body' LIKE 'grant_type=refresh_token&refresh_token=TVSECRET-rt-%'
                  AND j->'headers'->>'user-agent' LIKE 'tokenvault/% (libcurl)'
             FROM (SELECT '$(last_request s500)'::jsonb j) x" \
	"by default: a form body, Basic client authentication, a User-Agent naming tokenvault"
q -v url="$TV_FAULT_URL" -v secret="$TV_CLIENT_SECRET" <<'SQL'
SELECT tokenvault.create_client('JSON body', 'fault', 'oauth2', jsonb_build_object(
        'client_id', 'fault-client', 'client_secret', :'secret', 'body_format', 'json', 'client_auth', 'post',
        'extra_params', '{"refresh": {"audience": "api"}}'::jsonb,
        'auth_url', :'url' || '/authorize', 'allow_insecure_http', true, 'token_url', :'url' || '/ok/token')) AS c \gset
SELECT tokenvault.create_auth((SELECT id FROM tokenvault.users LIMIT 1), :'c', NULL,
        jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text),
                           'refresh_token', 'TVSECRET-rt-' || md5(random()::text))) AS a \gset
SELECT tokenvault.refresh_auth(:'a') IS NOT NULL AS refreshed \gset
SQL
check_sql "SELECT (j->'headers'->>'content-type') = 'application/json' AND b->>'client_secret' = '$TV_CLIENT_SECRET'
                  AND b->>'client_id' = 'fault-client' AND b->>'grant_type' = 'refresh_token' AND b->>'audience' = 'api'
                  AND NOT (j->'headers') ? 'authorization'
             FROM (SELECT '$(last_request ok)'::jsonb j) x, LATERAL (SELECT (j->>'body')::jsonb b) y" \
	"body_format json with client_auth post: one JSON object with the client's credentials and extra parameters"

# An error tokenvault does not foresee, here an application's trigger that
# refuses the new token, is recorded as a failed refresh like any other:
# announced, backed off, shown in last_error, instead of the auth coming
# back unseen each time its lease runs out.
q -v url="$TV_FAULT_URL" -v secret="$TV_CLIENT_SECRET" <<'SQL' >"$TV_TMP/refused.out"
SELECT tokenvault.create_client('Refused', 'fault', 'oauth2', jsonb_build_object(
        'client_id', 'fault-client', 'client_secret', :'secret',
        'auth_url', :'url' || '/authorize', 'allow_insecure_http', true, 'token_url', :'url' || '/ok/token')) AS c \gset
SELECT tokenvault.create_auth((SELECT id FROM tokenvault.users LIMIT 1), :'c', 'refused',
        jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text),
                           'refresh_token', 'TVSECRET-rt-' || md5(random()::text), 'expires_in', 600)) AS a \gset
CREATE FUNCTION refuse_new_token() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is full';
END
$$;
CREATE TRIGGER refuse_new_token BEFORE UPDATE ON tokenvault.auths FOR EACH ROW
    WHEN (NEW.name = 'refused' AND NEW.version <> OLD.version) EXECUTE FUNCTION refuse_new_token();
SELECT try_refresh(:'a');
SELECT format('%s|%s|%s|%s', status, failure_count, refresh_at > now(), last_error)
  FROM tokenvault.auths WHERE id = :'a';
SELECT count(*) FROM tokenvault.events WHERE kind = 'auth.refresh_failed' AND auth_id = :'a';
DROP TRIGGER refuse_new_token ON tokenvault.auths;
SQL
is "$(sed -n 1p "$TV_TMP/refused.out" | cut -d' ' -f1)" 38000 "a refresh whose token cannot be stored for a reason tokenvault did not foresee fails"
is "$(sed -n 2p "$TV_TMP/refused.out")" "error|1|t|the audit log is full" \
	"  ... and is recorded on the auth: status error, one failure, backed off, the reason in last_error"
is "$(sed -n 3p "$TV_TMP/refused.out")" 1 "  ... and announced as auth.refresh_failed"

# Cancelling: statement_timeout, and pg_cancel_backend from another session,
# interrupt a request within a second, on the refresher's path and on the
# direct one (create_auth fetching a client_credentials token).
q <<SQL
SELECT tokenvault.create_client('slow cc', 'fault', 'oauth2', jsonb_build_object(
    'grant', 'client_credentials', 'client_id', 'fault-client', 'client_secret', '$TV_CLIENT_SECRET',
    'allow_insecure_http', true, 'token_url', '$TV_FAULT_URL/slow/token?ms=4000')) AS slow_cc \gset
SQL
slow_auth=$(q -c "SELECT auth_id FROM cases WHERE name = 'slow within timeout'")
slow_cc=$(q -c "SELECT id FROM tokenvault.clients WHERE name = 'slow cc'")
cancelled_within() { # SQL: runs it under a 300 ms statement_timeout, prints ms taken and SQLSTATE
	local start state
	start=$(millis)
	state=$(PGOPTIONS="-c statement_timeout=300" sqlstate "$1")
	echo "$(($(millis) - start)) $state"
}
for sql in "SELECT tokenvault.refresh_auth('$slow_auth')" \
	"SELECT tokenvault.create_auth(tokenvault.create_user('cancel-1'), '$slow_cc')"; do
	read -r took state < <(cancelled_within "$sql")
	is "$state" 57014 "statement_timeout cancels ${sql:18:24}..."
	[ "$took" -lt 1000 ] && ok "  ... within a second (${took} ms)" || not_ok "  ... took ${took} ms"
done
# pg_cancel_backend once the request has reached the peer
slow_count() { curl -sf "$TV_FAULT_URL/_count/slow"; }
before=$(slow_count)
psql -X -q -At -c "SELECT tokenvault.create_auth(tokenvault.create_user('cancel-2'), '$slow_cc')" >"$TV_TMP/cancel.out" 2>&1 &
waiter=$!
slow_arrived() { [ "$(slow_count)" -gt "$before" ]; }
wait_until 5 "the token request reaches the peer" slow_arrived || true
cancel_at=$(millis)
q -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%cancel-2%' AND pid <> pg_backend_pid()" >/dev/null
wait "$waiter" || true
took=$(($(millis) - cancel_at))
grep -q 'canceling statement due to user request' "$TV_TMP/cancel.out" && ok "pg_cancel_backend cancels a token request" ||
	not_ok "pg_cancel_backend cancels a token request: $(head -c 200 "$TV_TMP/cancel.out")"
[ "$took" -lt 1000 ] && ok "  ... within a second (${took} ms)" || not_ok "  ... took ${took} ms"
is "$(q -c "SELECT count(*) FROM tokenvault.users WHERE external_user_id LIKE 'cancel-%'")" 0 \
	"a cancelled create_auth leaves nothing behind"

# Refreshes of different auths wanted at the same time go out together:
# five sessions, each refreshing its own auth at a peer that takes 1.5 s.
curl -sf -X POST "$TV_FAULT_URL/_reset" >/dev/null
q -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
SELECT tokenvault.create_client('slow refresh', 'fault', 'oauth2', jsonb_build_object(
    'client_id', 'fault-client', 'auth_url', :'url' || '/authorize', 'allow_insecure_http', true, 'token_url', :'url' || '/slow/token?ms=1500')) AS c \gset
CREATE TABLE together AS
SELECT tokenvault.create_auth(tokenvault.create_user('together-' || i), :'c', NULL, jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text))) AS id
  FROM generate_series(1, 5) i;
SQL
pids=()
for a in $(q -c "SELECT id FROM together"); do
	q -c "SELECT tokenvault.refresh_auth('$a')" >/dev/null &
	pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
is "$failed" 0 "five refreshes of five auths at once all succeed"
peak=$(curl -sf "$TV_FAULT_URL/_peak/slow")
[ "$peak" -ge 2 ] && ok "  ... sent together: $peak at once at the peer" || not_ok "  ... sent together: $peak at once at the peer"

# Plain http is the client's own choice: without it, a plain-http provider is refused.
q -c "UPDATE tokenvault.clients SET allow_insecure_http = false WHERE id = '$slow_cc'"
is "$(sqlstate "SELECT tokenvault.create_auth(tokenvault.create_user('http-1'), '$slow_cc')")" 38000 \
	"with the client's allow_insecure_http off a plain-http provider is refused"

dropdb "$db" --force 2>/dev/null || dropdb "$db"
done_testing
