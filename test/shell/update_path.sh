#!/usr/bin/env bash
# Releases and the update path (see README, "Shipping a change"):
# - no frozen release script (sql/releases/) or shipped delta
#   (sql/tokenvault--OLD--NEW.sql) changed since sql/releases/SHA256SUMS
#   recorded it, and each is recorded there;
# - when the current version is the last release, the built install script
#   is the frozen one: an edit to sql/ needs a version bump and a delta;
# - every release older than the current version, installed from its frozen
#   script, updates (ALTER EXTENSION tokenvault UPDATE) to the objects of a
#   fresh install (test/catalog.sql), and a secret stored before is served.
# Needs `make` (the built script) and the SQL files installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh

current=$(sed -n "s/^default_version = '\(.*\)'/\1/p" tokenvault.control)
built=sql/tokenvault--$current.sql
extdir=$(pg_config --sharedir)/extension
# versions newest last; $1 <= $2 as versions
releases=$(for f in sql/releases/tokenvault--*.sql; do [ -e "$f" ] && basename "$f" .sql | sed 's/^tokenvault--//'; done | sort -V)
last=$(tail -n 1 <<<"$releases")
version_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n 1)" = "$2" ]; }

## Frozen scripts and shipped deltas

if out=$(cd sql && sha256sum --quiet --strict -c releases/SHA256SUMS 2>&1); then
	ok "no frozen release script or shipped delta differs from sql/releases/SHA256SUMS"
else
	not_ok "a frozen release script or shipped delta was edited (or is missing): ship a new delta instead"
	sed 's/^/# /' <<<"$out"
fi
# A delta ships with the release it leads to; one to a version not yet
# frozen (the one under way) may still change.
unlisted=""
for f in sql/releases/tokenvault--*.sql sql/tokenvault--*--*.sql; do
	[ -e "$f" ] || continue
	name=${f#sql/}
	if [[ $name == tokenvault--*--*.sql ]]; then
		to=${name%.sql}
		to=${to##*--}
		[ -e "sql/releases/tokenvault--$to.sql" ] || continue
	fi
	awk -v n="$name" '$2 == n || $2 == "*" n { found = 1 } END { exit !found }' sql/releases/SHA256SUMS ||
		unlisted="$unlisted $name"
done
is "${unlisted:-none}" none "every frozen release script and shipped delta has its checksum in sql/releases/SHA256SUMS"

## The current version and the last release

if [ ! -e "$built" ]; then
	not_ok "$built is built (run make)"
elif [ "$current" = "$last" ]; then
	if cmp -s "$built" "sql/releases/tokenvault--$last.sql"; then
		ok "the built script of $current is the frozen release"
	else
		not_ok "the built script of $current differs from the frozen release: bump default_version and add sql/tokenvault--$last--NEW.sql"
		{ diff -u "sql/releases/tokenvault--$last.sql" "$built" || true; } | head -20 | sed 's/^/# /'
	fi
elif [ -n "$last" ] && version_le "$last" "$current"; then
	is "$(ls "sql/tokenvault--$last--$current.sql" 2>/dev/null)" "sql/tokenvault--$last--$current.sql" \
		"$current, not yet released, has a delta from the last release $last"
else
	not_ok "the current version $current is not newer than the last release $last"
fi

# What is installed is what this tree has (the tests below use it).
stale=""
for f in "$built" sql/releases/tokenvault--*.sql sql/tokenvault--*--*.sql tokenvault.control; do
	[ -e "$f" ] || continue
	cmp -s "$f" "$extdir/$(basename "$f")" || stale="$stale $(basename "$f")"
done
is "${stale:-none}" none "the extension's SQL files installed in $extdir are this tree's"

## Each older release updates to the current version

[ -n "${TV_DATA:-}" ] || cluster_start
describe() { q -d "$1" -f test/catalog.sql; }

new=tv_update_new_$$
createdb "$new"
q -d "$new" -c 'CREATE EXTENSION tokenvault'
describe "$new" >"$TV_TMP/fresh.txt"

older=0
for v in $releases; do
	[ "$v" != "$current" ] && version_le "$v" "$current" || continue
	older=$((older + 1))
	old=tv_update_${v//./_}_$$
	createdb "$old"
	if ! q -d "$old" -v v="$v" <<'SQL'; then
CREATE EXTENSION tokenvault VERSION :'v';
CREATE TABLE expected AS SELECT 'TVSECRET-at-' || md5(random()::text) AS token;
SELECT tokenvault.create_user('upd-1') AS u \gset
SELECT tokenvault.create_client('Provider', 'provider', 'oauth2', jsonb_build_object(
           'client_id', 'upd', 'client_secret', 'TVSECRET-cs-' || md5(random()::text),
           'auth_url', 'https://provider.invalid/authorize', 'token_url', 'https://provider.invalid/token')) AS c \gset
SELECT tokenvault.create_auth(:'u', :'c', 'before the update',
           jsonb_build_object('access_token', token, 'expires_in', 3600)) AS a FROM expected \gset
ALTER EXTENSION tokenvault UPDATE;
SQL
		not_ok "$v installs from its frozen script, takes data and updates to $current"
		dropdb "$old"
		continue
	fi
	describe "$old" >"$TV_TMP/updated.txt"
	if diff -u "$TV_TMP/fresh.txt" "$TV_TMP/updated.txt" >"$TV_TMP/update.diff"; then
		ok "$v updated to $current has the objects of a fresh install"
	else
		not_ok "$v updated to $current differs from a fresh install"
		sed 's/^/# /' "$TV_TMP/update.diff" | head -40
	fi
	is "$(q -d "$old" -c "SELECT tokenvault.access_token(a.id) = e.token FROM tokenvault.auths a, expected e")" t \
		"a token stored in $v is still served after the update"
	is "$(q -d "$old" -c "SELECT extversion FROM pg_extension WHERE extname = 'tokenvault'")" "$current" \
		"$v updates to the default version"
	is "$(q -d "$old" -c "SELECT md5(string_agg(to_jsonb(p)::text, '' ORDER BY key)) FROM tokenvault.providers p")" \
		"$(q -d "$new" -c "SELECT md5(string_agg(to_jsonb(p)::text, '' ORDER BY key)) FROM tokenvault.providers p")" \
		"$v updated to $current has the provider catalogue of a fresh install"
	dropdb "$old"
done
[ "$older" -gt 0 ] || echo "# no release older than $current: no update to test"

# Before 0.7.0 membership in tokenvault_app or tokenvault_admin was enough in
# every database; the update to 0.7.0 admits no one (that would give every
# tenant's roles every database again), and names the members to admit.
if [ -e sql/releases/tokenvault--0.6.0.sql ] && ! version_le "$current" 0.6.0; then
	mig=tv_update_admit_$$
	createdb "$mig"
	out=$(q -d "$mig" 2>&1 <<SQL
CREATE ROLE tv_upd_app_$$ IN ROLE tokenvault_app;
CREATE ROLE tv_upd_admin_$$ IN ROLE tokenvault_admin;
CREATE EXTENSION tokenvault VERSION '0.6.0';
ALTER EXTENSION tokenvault UPDATE;
SELECT count(*) FROM tokenvault.admissions;
SQL
)
	is "$(tail -n 1 <<<"$out")" 0 "the update from 0.6.0 admits no role in the database"
	grep -q "SELECT tokenvault.admit('tv_upd_admin_$$', 'admin'); SELECT tokenvault.admit('tv_upd_app_$$', 'app');" <<<"$out" &&
		ok "  ... and names the members to admit, at their level" ||
		{ not_ok "  ... and names the members to admit, at their level"; sed "s/^/# /" <<<"$out"; }
	dropdb "$mig"
	q -c "DROP ROLE tv_upd_app_$$; DROP ROLE tv_upd_admin_$$"
fi
dropdb "$new"
done_testing
