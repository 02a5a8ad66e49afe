#!/usr/bin/env bash
# What an application can make the refreshers do, and what it cannot (issue
# 15, findings 8 and 9), against the fault peer, which counts the requests:
#  (a) a role looping refresh_auth() and access_token() over 1100 auths that
#      need no request (more than the 1024 flights of the cluster) gets each
#      one answered, and meanwhile access_token() in another database still
#      has its token refreshed: the flights are freed once read, and an auth
#      that needs authorizing again files none;
#  (b) a role at its quota (tokenvault.max_refreshes_per_role) is refused a
#      flight with 53400, and handed a token still valid instead, never an
#      expired one; a database at its quota refuses another role; others
#      are served;
#  (c) access_token() and refresh_auth() of an auth in needs_reauth, error or
#      backoff (a 429 with Retry-After) send no request;
#  (d) tokenvault.min_validity, which any role may set, asks for half a
#      token's life at most: a day of it sends no request for a token just
#      refreshed, while a token past half its life is still refreshed;
#  (e) refresh_auth() twice in a row sends one request, the second call
#      answering with the first one's expiry (tokenvault.min_refresh_interval,
#      which an application cannot lower).
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
# a cluster of its own: roles and database settings are set here, and the
# flood must meet no other test's flights
unset TV_DATA
TV_EXTRA_CONF="tokenvault.http_timeout = 10" cluster_start
fault_start

# neither database is the worker's (postgres): every refresh here is one a caller asked for
createdb tv_lim_a
createdb tv_lim_b
for r in flood_app quota_app other_app third_app; do
	q -c "CREATE ROLE $r LOGIN"
done
for db in tv_lim_a tv_lim_b; do
	q -d "$db" -c "CREATE EXTENSION tokenvault" \
		-c "SELECT tokenvault.admit(r, 'app') FROM unnest('{flood_app,quota_app,other_app,third_app}'::regrole[]) r" >/dev/null
done
count() { curl -sf "$TV_FAULT_URL/_count/$1"; }
as() { local role=$1 db=$2; shift 2; PGUSER=$role PGDATABASE=$db "$@"; }
md5_of() { q -d "$1" -c "SELECT md5(tokenvault._open_auth(secret, id)->>'access_token') FROM tokenvault.auths WHERE name = '$2'"; }

# --- setup: database A, the flood's and the quotas'
q -d tv_lim_a -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
SELECT tokenvault.create_user('limits-user') AS u \gset
CREATE FUNCTION pg_temp.client(name text, path text) RETURNS uuid LANGUAGE sql AS $$
    SELECT tokenvault.create_client(name, 'svc', 'oauth2', jsonb_build_object(
        'client_id', 'c', 'auth_url', 'http://127.0.0.1:1/a', 'allow_insecure_http', true, 'token_url', current_setting('tv.url') || '/' || path))
$$;
SET tv.url = :'url';
CREATE FUNCTION pg_temp.auth(u uuid, c uuid, name text, expires_at timestamptz, refreshable boolean) RETURNS uuid
    LANGUAGE sql AS $$
    SELECT tokenvault.create_auth(u, c, name, jsonb_build_object(
        'access_token', 'TVSECRET-at-' || md5(random()::text), 'expires_at', expires_at)
        || CASE WHEN refreshable THEN jsonb_build_object('refresh_token', 'TVSECRET-rt-' || md5(random()::text))
                ELSE '{}' END)
$$;
-- (a) expired, and no refresh token to refresh with: no request can be sent
SELECT count(pg_temp.auth(:'u', pg_temp.client('No refresh', 'flood/token'), 'flood ' || i, now() - interval '1 minute', false))
  FROM generate_series(1, 1100) i;
-- (b) a provider that takes 8 s
SELECT pg_temp.client('Slow', 'slow/token?ms=8000') AS slow \gset
SELECT count(pg_temp.auth(:'u', :'slow', name, now() + interval '10 minutes', true))
  FROM unnest('{s1,s2,s3,s4,s7}'::text[]) name;
SELECT pg_temp.auth(:'u', :'slow', 's5', now() + interval '10 minutes', true),
       pg_temp.auth(:'u', :'slow', 's6', now() - interval '1 minute', true);
-- (c) expired, at providers that refuse the grant, refuse the request, rate-limit for 30 s
SELECT pg_temp.auth(:'u', pg_temp.client('Grant gone', 'invalid_grant/token'), 'reauth', now() - interval '1 minute', true),
       pg_temp.auth(:'u', pg_temp.client('Bad request', 'invalid_request/token'), 'error', now() - interval '1 minute', true),
       pg_temp.auth(:'u', pg_temp.client('Rate limited', 's429_date/token'), 'backoff', now() - interval '1 minute', true);
-- (d) and (e)
SELECT pg_temp.client('OK', 'ok/token') AS okc \gset
SELECT pg_temp.auth(:'u', :'okc', 'validity', now() + interval '10 minutes', true),
       pg_temp.auth(:'u', :'okc', 'twice', now() + interval '10 minutes', true);

-- the flood: every auth of the client, refresh_auth() or access_token(); what each call ended with
CREATE FUNCTION public.flood(call text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    a uuid;
    states text[] := '{}';
BEGIN
    FOR a IN SELECT id FROM tokenvault.auths WHERE name LIKE 'flood %' LOOP
        BEGIN
            IF call = 'refresh_auth' THEN
                PERFORM tokenvault.refresh_auth(a);
            ELSE
                PERFORM tokenvault.access_token(a);
            END IF;
            states := states || 'ok'::text;
        EXCEPTION WHEN OTHERS THEN
            states := states || SQLSTATE;
        END;
    END LOOP;
    RETURN (SELECT string_agg(s || ' x' || n, ', ' ORDER BY s)
              FROM (SELECT s, count(*) n FROM unnest(states) s GROUP BY s) x);
END
$$;
-- the flood, over and over until stopped; what the passes ended with
CREATE TABLE public.stop_flood ();
GRANT SELECT ON public.stop_flood TO flood_app;
CREATE FUNCTION public.flood_until_stopped() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    got text[] := '{}';
BEGIN
    LOOP
        got := got || flood('refresh_auth') || flood('access_token');
        EXIT WHEN EXISTS (SELECT FROM public.stop_flood);
    END LOOP;
    RETURN (SELECT string_agg(DISTINCT g, ' | ') FROM unnest(got) g);
END
$$;
SQL
# --- database B: a token that needs a refresh, and a slow provider
q -d tv_lim_b -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
SELECT tokenvault.create_user('b-user') AS u \gset
SELECT tokenvault.create_client('B', 'svc', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', 'http://127.0.0.1:1/a', 'allow_insecure_http', true, 'token_url', :'url' || '/rotate/token')) AS c,
       tokenvault.create_client('B slow', 'svc', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', 'http://127.0.0.1:1/a', 'allow_insecure_http', true, 'token_url', :'url' || '/slow/token?ms=8000')) AS slow \gset
SELECT tokenvault.create_auth(:'u', c, name, jsonb_build_object(
    'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
    'expires_at', now() - interval '1 minute'))
  FROM (VALUES (:'c'::uuid, 'b1'), (:'c'::uuid, 'b2'), (:'slow'::uuid, 'b slow')) v(c, name);
SQL
b_token() { as other_app tv_lim_b q -c "SELECT md5(tokenvault.access_token(id)) FROM tokenvault.auths WHERE name = '$1'"; }

# --- (a) the flood
is "$(as flood_app tv_lim_a q -c "SELECT flood('refresh_auth')")" "28000 x1100" \
	"a role's refresh_auth() over 1100 auths that cannot be refreshed: each is answered (28000), none refused for want of a flight"
is "$(as flood_app tv_lim_a q -c "SELECT flood('access_token')")" "28000 x1100" \
	"  ... and so is its access_token() over them (28000)"
is "$(count flood)" 0 "  ... without a request to their provider"
is "$(b_token b1)" "$(md5_of tv_lim_b b1)" "  ... after which access_token() in another database has its token refreshed"
# and while it goes on
as flood_app tv_lim_a q -c "SET statement_timeout = '120s'; SELECT flood_until_stopped()" >"$TV_TMP/flood.out" 2>&1 &
flood_pid=$!
flooding() { [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'flood_app' AND state = 'active'")" = 1 ]; }
wait_until 10 "the flood runs" flooding || true
is "$(b_token b2)" "$(md5_of tv_lim_b b2)" "  ... as it does while the flood goes on"
flooding && ok "  ... (the flood still going on)" || not_ok "  ... (the flood still going on)"
is "$(count rotate)" 2 "  ... each with its request"
q -d tv_lim_a -c "INSERT INTO public.stop_flood DEFAULT VALUES" >/dev/null
wait "$flood_pid" || true
is "$(cat "$TV_TMP/flood.out")" "28000 x1100" "  ... and the flood's calls are still each answered"
is "$(count flood)" 0 "  ... never with a request"

# --- (b) quotas
is "$(sqlstate "ALTER ROLE quota_app SET tokenvault.max_refreshes_per_role = 2")" ok \
	"a superuser sets a role's quota of refreshes under way"
is "$(sqlstate "ALTER DATABASE tv_lim_a SET tokenvault.max_refreshes_per_database = 3")" ok \
	"  ... and a database's"
id_of() { echo "(SELECT id FROM tokenvault.auths WHERE name = '$1')"; }
# s5's token was issued an hour ago: with 25 s left it wants a refresh for min_validity (30 s)
q -d tv_lim_a -c "UPDATE tokenvault.auths SET last_refreshed_at = now() - interval '1 hour',
                         expires_at = now() + interval '25 seconds' WHERE name = 's5'" >/dev/null
as quota_app tv_lim_a q -c "SELECT tokenvault.refresh_auth($(id_of s1)) > now()" >"$TV_TMP/s1.out" 2>&1 &
p1=$!
as quota_app tv_lim_a q -c "SELECT tokenvault.refresh_auth($(id_of s2)) > now()" >"$TV_TMP/s2.out" 2>&1 &
p2=$!
slow_at() { [ "$(count slow)" = "$1" ]; }
wait_until 10 "two refreshes of quota_app reach the slow provider" slow_at 2 || true
is "$(as quota_app tv_lim_a sqlstate "SELECT tokenvault.refresh_auth($(id_of s3))")" 53400 \
	"a role with two refreshes under way, its quota, is refused a third (53400)"
s5=$(md5_of tv_lim_a s5)
is "$(as quota_app tv_lim_a q -c "SELECT md5(tokenvault.access_token($(id_of s5)))")" "$s5" \
	"  ... while access_token() hands out a token still valid (for 25 s) instead of a refreshed one"
is "$(as quota_app tv_lim_a sqlstate "SELECT tokenvault.access_token($(id_of s6))")" 53400 \
	"  ... and refuses an expired one (53400), never handing it out"
as other_app tv_lim_a q -c "SELECT tokenvault.refresh_auth($(id_of s4)) > now()" >"$TV_TMP/s4.out" 2>&1 &
p4=$!
wait_until 10 "another role's refresh reaches the slow provider" slow_at 3 || true
is "$(as third_app tv_lim_a sqlstate "SELECT tokenvault.refresh_auth($(id_of s7))")" 53400 \
	"a database with three refreshes under way, its quota, refuses one more, of a third role"
is "$(as third_app tv_lim_b sqlstate "SELECT tokenvault.refresh_auth($(id_of 'b slow'))")" ok \
	"  ... while another database's refresh is served"
for p in $p1 $p2 $p4; do wait "$p" || true; done
is "$(cat "$TV_TMP/s1.out" "$TV_TMP/s2.out" "$TV_TMP/s4.out" | tr '\n' ' ')" "t t t " \
	"  ... and so are the refreshes within the quotas"
is "$(count slow)" 4 "  ... which alone reached the provider"

# --- (c) needs_reauth, error, backoff: no request on demand
calls() { # ROLE AUTH FUNCTION: ten calls, their SQLSTATEs
	as other_app tv_lim_a q -c "DO \$\$ BEGIN FOR i IN 1..10 LOOP BEGIN PERFORM tokenvault.$3($(id_of "$2"));
		RAISE NOTICE 'ok'; EXCEPTION WHEN OTHERS THEN RAISE NOTICE '%', SQLSTATE; END; END LOOP; END \$\$" 2>&1 |
		sed 's/^NOTICE: *//' | sort | uniq -c | awk '{print $2 " x" $1}' | tr '\n' ' '
}
for a in reauth error backoff; do
	as other_app tv_lim_a sqlstate "SELECT tokenvault.access_token($(id_of $a))" >/dev/null
done
is "$(q -d tv_lim_a -c "SELECT string_agg(name || ' ' || status || ' ' || failure_count, ', ' ORDER BY name)
                         FROM tokenvault.auths WHERE name IN ('reauth', 'error', 'backoff')")" \
	"backoff active 1, error error 1, reauth needs_reauth 1" "a first refresh fails: needs_reauth, error, a 429 backing off"
is "$(count invalid_grant)/$(count invalid_request)/$(count s429_date)" "1/1/1" "  ... one request each"
is "$(calls other_app reauth access_token)" "28000 x10 " "ten access_token() of the needs_reauth auth: 28000"
is "$(calls other_app error access_token)" "38000 x10 " "ten access_token() of the auth in error: 38000"
is "$(calls other_app backoff access_token)" "08000 x10 " "ten access_token() of the auth backing off (Retry-After 30 s): 08000"
is "$(calls other_app reauth refresh_auth)/$(calls other_app backoff refresh_auth)" "28000 x10 /08000 x10 " \
	"ten refresh_auth() of each of the needs_reauth and the backing-off auth: 28000, 08000"
is "$(count invalid_grant)/$(count invalid_request)/$(count s429_date)" "1/1/1" "  ... and not one more request"
is "$(as other_app tv_lim_a q -c "DO \$\$ BEGIN PERFORM tokenvault.access_token($(id_of backoff)); END \$\$" 2>&1 |
	grep -c 'not tried again before')" 1 "  ... the error saying when the next try may be"

# --- (d) min_validity asks for half a token's life at most
as other_app tv_lim_a q -c "SELECT tokenvault.refresh_auth($(id_of validity))" >/dev/null
is "$(count ok)" 1 "a token refreshed (it lives an hour)"
is "$(as other_app tv_lim_a q -c "SET tokenvault.min_validity = '1d';
                                  SELECT count(DISTINCT md5(tokenvault.access_token($(id_of validity)))) FROM generate_series(1, 10)")" 1 \
	"ten access_token() with tokenvault.min_validity = 1 day hand out the one token"
is "$(count ok)" 1 "  ... without a request: a day is more than half its life"
q -d tv_lim_a -c "UPDATE tokenvault.auths SET last_refreshed_at = now() - interval '50 minutes',
                         expires_at = now() + interval '10 minutes' WHERE name = 'validity'" >/dev/null
before=$(md5_of tv_lim_a validity)
[ "$(as other_app tv_lim_a q -c "SET tokenvault.min_validity = '15min'; SELECT md5(tokenvault.access_token($(id_of validity)))")" != "$before" ] &&
	ok "a token past half its life, with 10 minutes left, is refreshed for min_validity = 15 minutes" ||
	not_ok "a token past half its life, with 10 minutes left, is refreshed for min_validity = 15 minutes"
is "$(count ok)" 2 "  ... with one request"

# --- (e) refresh_auth() twice in a row
is "$(as other_app tv_lim_a q -c "SELECT count(DISTINCT tokenvault.refresh_auth($(id_of twice))) FROM generate_series(1, 2)")" 1 \
	"refresh_auth() twice in a row returns one expiry"
is "$(count ok)" 3 "  ... with one request"
is "$(as other_app tv_lim_a sqlstate "SET tokenvault.min_refresh_interval = 0")" 42501 \
	"an application cannot lower tokenvault.min_refresh_interval"
refreshed_again() {
	PGOPTIONS="-c tokenvault.min_refresh_interval=1" q -d tv_lim_a -c "SELECT tokenvault.refresh_auth($(id_of twice))" >/dev/null
	[ "$(count ok)" = 4 ]
}
wait_until 10 "refresh_auth() sends a request again once the interval (1 s here) has passed" refreshed_again &&
	ok "refresh_auth() sends a request again once the interval (1 s here) has passed"

done_testing
