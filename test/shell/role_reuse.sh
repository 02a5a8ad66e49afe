#!/usr/bin/env bash
# A dropped role's private tokens and grants are never another role's: a
# dump restored into a cluster where the dropped role's OID names another
# role (made so with PostgreSQL's binary-upgrade OID setting) gives that
# role nothing, and the worker purges what dropped roles leave behind.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
cluster_start

secret() { echo "TVSECRET-reuse-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"; }
tok1=$(secret)
tok2=$(secret)

# Cluster A, database app: alice keeps a private token and a granted user token.
q -c "CREATE DATABASE app" >/dev/null
q -d app >/dev/null <<SQL
CREATE EXTENSION tokenvault;
CREATE ROLE alice LOGIN IN ROLE tokenvault_app;
SELECT tokenvault.admit('alice', 'app');
SELECT tokenvault.create_user('reuse-user') AS u \gset
SELECT tokenvault.grant_user_tokens(:'u', 'alice', 'write');
SET ROLE alice;
SELECT tokenvault.put_private_token('proj', 'k', '$tok1');
SELECT tokenvault.put_user_token(:'u', 'proj', 'k', '$tok2');
RESET ROLE;
SQL
user_id=$(q -d app -c "SELECT id FROM tokenvault.users WHERE external_user_id = 'reuse-user'")
alice_oid=$(q -c "SELECT oid FROM pg_roles WHERE rolname = 'alice'")
is "$(PGUSER=alice q -d app -c "SELECT tokenvault.get_private_token('proj', 'k') = '$tok1'")" t "alice reads her private token"
q -d app -c "SELECT tokenvault.dismiss('alice')" >/dev/null
q -c "DROP ROLE alice"
as_server_user pg_dump -d app -Fc -f "$TV_TMP/app.dump"

# Cluster B: mallory gets alice's OID, then the dump is restored there.
b_data="$TV_TMP/b"
b_port=$((PGPORT + 1))
as_server_user initdb -D "$b_data" -U postgres -A trust --no-sync >/dev/null
cat >>"$b_data/postgresql.conf" <<CONF
listen_addresses = ''
port = $b_port
unix_socket_directories = '$TV_TMP'
shared_preload_libraries = 'tokenvault'
tokenvault.key_file = '$TV_KEYS'
fsync = off
CONF
b_stop() { as_server_user pg_ctl -D "$b_data" -m immediate stop >/dev/null 2>&1 || true; }
tv_at_exit b_stop
as_server_user pg_ctl -D "$b_data" -o '-b' -l "$TV_TMP/b-upgrade.log" -w -t 60 start >/dev/null
PGPORT=$b_port q -c "SELECT binary_upgrade_set_next_pg_authid_oid($alice_oid)" -c "CREATE ROLE mallory LOGIN" >/dev/null
as_server_user pg_ctl -D "$b_data" -m fast -w -t 60 stop >/dev/null
as_server_user pg_ctl -D "$b_data" -l "$TV_TMP/b.log" -w -t 60 start >/dev/null
is "$(PGPORT=$b_port q -c "SELECT rolname FROM pg_roles WHERE oid = $alice_oid")" mallory \
	"in cluster B, alice's OID is mallory's"
PGPORT=$b_port q -c "CREATE DATABASE app" >/dev/null
PGPORT=$b_port as_server_user pg_restore -d app "$TV_TMP/app.dump" 2>"$TV_TMP/restore.err" || true
PGPORT=$b_port q -d app -c "SELECT tokenvault.admit('mallory', 'app')" >/dev/null
is "$(PGPORT=$b_port q -d app -c "SELECT count(*) FROM tokenvault.private_tokens WHERE owner::oid = $alice_oid")" 1 \
	"the restored private token names alice's OID, now mallory's"

as_mallory() { PGPORT=$b_port PGUSER=mallory q -d app -c "$1" 2>/dev/null || echo refused; }
is "$(as_mallory "SELECT coalesce(tokenvault.get_private_token('proj', 'k') = '$tok1', false)")" f \
	"mallory does not get alice's private token"
is "$(as_mallory "SELECT count(*) FROM tokenvault.list_private_tokens()")" 0 "nor lists it"
is "$(as_mallory "SELECT count(*) FROM tokenvault.private_tokens")" 0 "nor sees its row"
is "$(as_mallory "SELECT tokenvault.get_user_token('$user_id', 'proj', 'k') = '$tok2'")" refused \
	"nor reads the user token granted to alice"
is "$(as_mallory "SELECT count(*) FROM tokenvault.list_user_tokens('$user_id')")" refused "nor lists the user's tokens"
is "$(as_mallory "SELECT tokenvault.delete_private_token('proj', 'k')")" f "nor deletes alice's private token"

# In cluster A, the worker purges what a dropped role leaves behind.
q >/dev/null <<SQL
CREATE EXTENSION tokenvault;
CREATE ROLE bob LOGIN IN ROLE tokenvault_app;
SELECT tokenvault.admit('bob', 'app');
SELECT tokenvault.create_user('purge-user') AS u \gset
SELECT tokenvault.grant_user_tokens(:'u', 'bob', 'read');
SET ROLE bob;
SELECT tokenvault.put_private_token('proj', 'k', '$(secret)');
RESET ROLE;
SELECT tokenvault.dismiss('bob');
DROP ROLE bob;
SELECT tokenvault._wake_worker(now());
SQL
if wait_until 30 "the worker purges bob's private token and revokes his grant" \
	sh -c "[ \"\$(psql -X -At -c \"SELECT (SELECT count(*) FROM tokenvault.private_tokens) || '/' || (SELECT count(*) FROM tokenvault.user_token_grants WHERE revoked_at IS NULL)\")\" = 0/0 ]"; then
	ok "the worker purges a dropped role's private tokens and revokes its grants"
fi
is "$(q -c "SELECT count(*) FROM tokenvault.user_token_grants WHERE revoked_by = 'tokenvault: role dropped'")" 1 \
	"the grant's history stays, revoked by tokenvault"

done_testing
