#!/usr/bin/env bash
# A role admitted in one database gets nothing in another (issue 15,
# finding 5).  tokenvault_app is cluster-wide: without admissions, an
# application granted it for its own database read another tenant
# database's API key.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
cluster_start

q <<'SQL'
CREATE DATABASE tenant_a;
CREATE DATABASE tenant_b;
CREATE ROLE app_a LOGIN;
CREATE ROLE admin_a LOGIN;
SQL
for db in tenant_a tenant_b; do q -d "$db" -c 'CREATE EXTENSION tokenvault'; done
# each tenant's own: admit() grants the cluster-wide role and admits here only
q -d tenant_a -c "SELECT tokenvault.admit('app_a', 'app'), tokenvault.admit('admin_a', 'admin')" >/dev/null
is "$(q -c "SELECT pg_has_role('app_a', 'tokenvault_app', 'USAGE')")" t "admit() granted app_a the cluster-wide role"

# tenant B's secret, stored by its superuser
b_ids=$(q -d tenant_b <<'SQL'
SELECT tokenvault.create_user('b-user') AS u \gset
SELECT tokenvault.create_client('API', 'api', 'api_key') AS c \gset
SELECT tokenvault.create_auth(:'u', :'c', NULL, jsonb_build_object('api_key', 'TVSECRET-tb-' || md5(random()::text))) AS a \gset
SELECT tokenvault.put_private_token('r', 'k', 'TVSECRET-tp-' || md5(random()::text)) AS put \gset
SELECT :'u' || ' ' || :'a';
SQL
)
read -r b_user b_auth <<<"$b_ids"

# tenant A works for its own roles
is "$(PGUSER=app_a q -d tenant_a <<'SQL'
SELECT tokenvault.create_user('a-user') AS u \gset
SELECT 'ok' FROM tokenvault.users WHERE id = :'u';
SQL
)" ok "app_a uses tokenvault in its own database"

# and nothing in tenant B: the attack
export PGDATABASE=tenant_b
for call in "SELECT tokenvault.access_token('$b_auth')" \
	"SELECT tokenvault.credentials('$b_auth')" \
	"SELECT tokenvault.http_headers('$b_auth')" \
	"SELECT tokenvault.find_user('b-user')" \
	"SELECT tokenvault.user_auths('$b_user')" \
	"SELECT tokenvault.create_user('planted')" \
	"SELECT tokenvault.delete_auth('$b_auth')" \
	"SELECT tokenvault.get_private_token('r', 'k')"; do
	is "$(PGUSER=app_a sqlstate "$call")" 42501 "app_a is refused in tenant_b: ${call%%(*}"
done
is "$(PGUSER=admin_a sqlstate "SELECT tokenvault.create_client('X', 'x', 'api_key')")" 42501 \
	"admin_a is refused in tenant_b: create_client"
is "$(PGUSER=admin_a sqlstate "SELECT * FROM tokenvault.key_ring()")" 42501 \
	"admin_a is refused in tenant_b: key_ring"
is "$(PGUSER=app_a q -c 'SELECT (SELECT count(*) FROM tokenvault.users) + (SELECT count(*) FROM tokenvault.auths)
                              + (SELECT count(*) FROM tokenvault.clients) + (SELECT count(*) FROM tokenvault.events)
                              + (SELECT count(*) FROM tokenvault.stats)')" 0 \
	"app_a reads no row of tenant_b's tables"
is "$(q -c "SELECT count(*) FROM tokenvault.users WHERE external_user_id = 'planted'")" 0 "and wrote none"

# admitted later, it may; dismissed, it may not again (other backends too)
q -c "SELECT tokenvault.admit('app_a', 'app')" >/dev/null
is "$(PGUSER=app_a sqlstate "SELECT tokenvault.access_token('$b_auth')")" ok "admitted in tenant_b, app_a may"
coproc long { PGUSER=app_a psql -X -q -At 2>/dev/null; }
echo "SELECT length(tokenvault.access_token('$b_auth')) > 0;" >&"${long[1]}"
read -r -t 30 first <&"${long[0]}" || first=none
q -c "SELECT tokenvault.dismiss('app_a')" >/dev/null
echo "SELECT tokenvault.access_token('$b_auth') IS NOT NULL;" >&"${long[1]}"
echo "SELECT 'done';" >&"${long[1]}"
read -r -t 30 second <&"${long[0]}" || second=none
is "$first $second" "t done" "a session that was admitted is refused once dismissed, from another session"
exec {long[1]}>&-
wait "$long_PID" 2>/dev/null || true

# a repeatable-read transaction that began before the dismissal, too: the
# admission is read afresh, not with the transaction's old snapshot
q -c "SELECT tokenvault.admit('app_a', 'app')" >/dev/null
coproc rr { PGUSER=app_a psql -X -q -At 2>/dev/null; }
echo "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) > 0 FROM tokenvault.users;" >&"${rr[1]}"
read -r -t 30 first <&"${rr[0]}" || first=none
q -c "SELECT tokenvault.dismiss('app_a')" >/dev/null
echo "SELECT length(tokenvault.access_token('$b_auth')) > 0;" >&"${rr[1]}"
echo "ROLLBACK; SELECT length(tokenvault.access_token('$b_auth')) > 0;" >&"${rr[1]}"
echo "SELECT 'done';" >&"${rr[1]}"
read -r -t 30 second <&"${rr[0]}" || second=none
is "$first $second" "t done" "a repeatable-read transaction older than the dismissal is refused, and so is the session after it"
exec {rr[1]}>&-
wait "$rr_PID" 2>/dev/null || true

# and a role not admitted learns nothing of what exists here
is "$(PGUSER=app_a sqlstate "SELECT tokenvault.instance(gen_random_uuid())")" 42501 \
	"a role not admitted is refused before a lookup (instance of a made-up id)"
is "$(PGUSER=admin_a sqlstate "SELECT tokenvault.update_solution(gen_random_uuid(), 'x')")" 42501 \
	"  ... (update_solution of a made-up id)"

done_testing
