#!/usr/bin/env bash
# Behind PgBouncer in transaction pooling mode (issue 17, item 3): 200
# client connections over 10 server connections call access_token() on 50
# auths whose 8-second tokens expire during the run (pgbench drives them).
# Every call returns a token the provider still accepts at that moment (the
# provider lists what it issued and until when), each token is refreshed
# once (the provider sees exactly as many refresh requests as tokenvault
# stored new tokens: single flight holds across pooled connections), and
# every call runs with the server's settings (nothing is kept in a session).
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] ||
	{ echo "not ok - pgbouncer is not installed"; exit 1; }
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
# callers, not the worker, refresh: the schedule's lead is a second, the
# callers ask for half a token's life
TV_EXTRA_CONF="tokenvault.refresh_lead = 1
max_connections = 40" cluster_start
oidc_start ACCESS_TTL=8
q -v url="$TV_OIDC_URL" -v secret="$TV_CLIENT_SECRET" -v pw="$TV_USER_PASSWORD" <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
CREATE ROLE app LOGIN IN ROLE tokenvault_app;
SELECT tokenvault.admit('app', 'app');
-- refresh tokens that do not rotate: a refresh made twice would show as
-- two tokens for one expiry, not as a revoked grant
SELECT tokenvault.create_client('oidc', 'oidc', 'oauth2', jsonb_build_object(
    'grant', 'password', 'client_id', 'tv-pw-keep', 'client_secret', :'secret',
    'allow_insecure_http', true, 'token_url', :'url' || '/token', 'scopes', '["openid", "offline_access"]'::jsonb)) AS c \gset
CREATE TABLE auth_numbers AS
SELECT i AS n, tokenvault.create_auth(tokenvault.create_user('pool-' || i), :'c', 'pool ' || i,
                                      jsonb_build_object('username', 'alice', 'password', :'pw')) AS id
  FROM generate_series(1, 50) i;
CREATE TABLE calls (token_md5 text, at double precision, min_validity text);
GRANT SELECT ON auth_numbers TO app;
GRANT INSERT ON calls TO app;
SQL
is "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE expires_at > now()")" 50 "50 auths with 8-second tokens"

# ---- PgBouncer, transaction pooling, 10 server connections ----
bouncer_dir="$TV_TMP/bouncer"
mkdir -p "$bouncer_dir"
bport=$((PGPORT + 1))
printf '"app" ""\n"postgres" ""\n' >"$bouncer_dir/userlist.txt"
cat >"$bouncer_dir/pgbouncer.ini" <<INI
[databases]
postgres = host=$TV_TMP port=$PGPORT dbname=postgres
[pgbouncer]
listen_addr =
listen_port = $bport
unix_socket_dir = $bouncer_dir
auth_type = trust
auth_file = $bouncer_dir/userlist.txt
pool_mode = transaction
default_pool_size = 10
max_client_conn = 400
logfile = $bouncer_dir/pgbouncer.log
pidfile = $bouncer_dir/pgbouncer.pid
INI
[ "$(id -u)" = 0 ] && chown -R postgres: "$bouncer_dir"
bouncer_stop() {
	[ -f "$bouncer_dir/pgbouncer.pid" ] && kill "$(cat "$bouncer_dir/pgbouncer.pid")" 2>/dev/null
	TV_SCAN_LOGS+=("$bouncer_dir/pgbouncer.log")
	return 0
}
tv_at_exit bouncer_stop
as_server_user "$PGBOUNCER" -d "$bouncer_dir/pgbouncer.ini"
wait_until 10 "pgbouncer listens" psql -X -At -h "$bouncer_dir" -p "$bport" -U app -c "SELECT 1"
viab() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$bouncer_dir" -p "$bport" -U app "$@"; }

# ---- 200 clients for 30 s ----
cat >"$TV_TMP/call.sql" <<'SQL'
\set a random(1, 50)
INSERT INTO calls SELECT md5(tokenvault.access_token(id)), extract(epoch FROM clock_timestamp()),
                         current_setting('tokenvault.min_validity') FROM auth_numbers WHERE n = :a;
SQL
q -c "SELECT sum(version) FROM tokenvault.auths" >"$TV_TMP/versions.before"
curl -sf -X POST "$TV_OIDC_URL/_reset" >/dev/null
as_server_user pgbench -n -h "$bouncer_dir" -p "$bport" -U app -c 200 -j 2 -T 30 -f "$TV_TMP/call.sql" postgres \
	>"$TV_TMP/pgbench.out" 2>&1 || true
grep -E '^(number of (clients|transactions actually processed|failed)|.*aborted)' "$TV_TMP/pgbench.out" | sed 's/^/# /'
is "$(grep -c 'aborted' "$TV_TMP/pgbench.out" || true)" 0 "no client of the 200 failed a call"
is "$(sed -n 's/^number of clients: //p' "$TV_TMP/pgbench.out")" 200 "  ... 200 clients were connected to pgbouncer at once"
servers=$(q -c "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
is "$([ "$servers" -le 10 ] && echo yes)" yes "  ... over at most 10 server connections ($servers)"

# ---- every token handed out was valid when it was ----
curl -sf "$TV_OIDC_URL/_issued" >"$TV_TMP/issued.txt"
q <<SQL >/dev/null
CREATE TABLE issued (token_md5 text, exp double precision);
\\copy issued FROM '$TV_TMP/issued.txt' WITH (DELIMITER ' ')
SQL
calls=$(q -c "SELECT count(*) FROM calls")
unknown=$(q -c "SELECT count(*) FROM calls c WHERE NOT EXISTS (SELECT FROM issued i WHERE i.token_md5 = c.token_md5)")
expired=$(q -c "SELECT count(*) FROM calls c JOIN issued i USING (token_md5) WHERE i.exp <= c.at")
echo "# $calls calls, $(wc -l <"$TV_TMP/issued.txt") tokens issued by the provider"
is "$([ "$calls" -ge 1000 ] && echo yes)" yes "at least a thousand calls went through the pooler ($calls)"
is "$unknown $expired" "0 0" "every call returned a token the provider had issued and not yet expired"
is "$(q -c "SELECT count(*) FROM calls WHERE min_validity <> '30s'")" 0 "  ... and every call ran with the server's min_validity"

# ---- one refresh per expiry ----
stored=$(($(q -c "SELECT sum(version) FROM tokenvault.auths") - $(cat "$TV_TMP/versions.before")))
sent=$(curl -sf "$TV_OIDC_URL/_count" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).by_grant.refresh_token??0))")
per_auth=$(q -c "SELECT min(n) || ' ' || max(n) FROM (SELECT count(*) n FROM tokenvault.events WHERE kind = 'auth.refreshed' GROUP BY auth_id) e")
echo "# refreshes: $sent requests at the provider, $stored new tokens stored; per auth $per_auth (min max) over 30 s of 8-second tokens"
is "$([ "$stored" -ge 100 ] && echo yes)" yes "the auths were refreshed as their tokens expired ($stored)"
is "$sent" "$stored" "refreshes per auth per expiry: exactly 1 (each request the provider saw became the auth's one new token)"
is "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE status <> 'active' OR failure_count > 0")" 0 \
	"  ... and no refresh failed"
done_testing
