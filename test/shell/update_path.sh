#!/usr/bin/env bash
# ALTER EXTENSION tokenvault UPDATE from 0.1.0 must give the same objects as
# a fresh install of the current version, and keep every secret readable.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
[ -n "${TV_DATA:-}" ] || cluster_start

old=tv_update_old_$$
new=tv_update_new_$$
createdb "$old"
createdb "$new"
q -d "$new" -c 'CREATE EXTENSION tokenvault'
q -d "$old" <<'SQL'
CREATE EXTENSION tokenvault VERSION '0.1.0';
CREATE TABLE expected AS SELECT 'TVSECRET-at-' || md5(random()::text) AS token;
SELECT tokenvault.create_user('upd-1') AS u \gset
SELECT tokenvault.create_client('Provider', 'provider', 'oauth2', jsonb_build_object(
           'client_id', 'upd', 'client_secret', 'TVSECRET-cs-' || md5(random()::text),
           'auth_url', 'https://provider.invalid/authorize', 'token_url', 'https://provider.invalid/token')) AS c \gset
SELECT tokenvault.create_auth(:'u', :'c', 'before the update',
           jsonb_build_object('access_token', token, 'expires_in', 3600)) AS a FROM expected \gset
ALTER EXTENSION tokenvault UPDATE;
SQL

# What an extension owns, described so that two databases can be compared.
describe() {
	q -d "$1" <<'SQL'
SELECT pg_describe_object(classid, objid, objsubid) FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'tokenvault')
 ORDER BY 1;
SELECT p.oid::regprocedure || ' ' || pg_get_function_result(p.oid) || ' ' || p.prosecdef || ' ' ||
       coalesce(array_to_string(p.proconfig, ','), '') || ' ' || coalesce(array_to_string(p.proacl, ','), '')
  FROM pg_proc p WHERE p.pronamespace = 'tokenvault'::regnamespace ORDER BY 1;
SELECT c.relname || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || ' ' ||
       coalesce(pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE c.relnamespace = 'tokenvault'::regnamespace ORDER BY c.relname, a.attname;
SELECT relname || ' ' || relkind::text || ' ' || coalesce(array_to_string(relacl, ','), '') || ' ' || relrowsecurity
  FROM pg_class WHERE relnamespace = 'tokenvault'::regnamespace ORDER BY 1;
SELECT tablename || ' ' || policyname || ' ' || cmd || ' ' || array_to_string(roles, ',') || ' ' ||
       coalesce(qual, '') || ' ' || coalesce(with_check, '')
  FROM pg_policies WHERE schemaname = 'tokenvault' ORDER BY 1;
SELECT conrelid::regclass || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
 WHERE connamespace = 'tokenvault'::regnamespace ORDER BY 1;
SQL
}
describe "$old" >"$TV_TMP/updated.txt"
describe "$new" >"$TV_TMP/fresh.txt"
if diff -u "$TV_TMP/fresh.txt" "$TV_TMP/updated.txt" >"$TV_TMP/update.diff"; then
	ok "0.1.0 updated to the current version has the objects of a fresh install"
else
	not_ok "0.1.0 updated to the current version differs from a fresh install"
	sed 's/^/# /' "$TV_TMP/update.diff" | head -40
fi
is "$(q -d "$old" -c "SELECT tokenvault.access_token(a.id) = e.token FROM tokenvault.auths a, expected e")" t \
	"a token stored before the update is still served"
is "$(q -d "$old" -c "SELECT extversion FROM pg_extension WHERE extname = 'tokenvault'")" \
	"$(sed -n "s/^default_version = '\(.*\)'/\1/p" tokenvault.control)" "the update reaches the default version"
dropdb "$old"
dropdb "$new"
done_testing
