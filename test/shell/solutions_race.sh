#!/usr/bin/env bash
# Force-unique slots under concurrency: two sessions put one auth into two
# instances at once, one slot forcing it unique.  Neither sees the other's
# uncommitted row, so the check alone would let both through; the lock on
# the auth's row makes the second wait for the first and then refuse.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
[ -n "${TV_DATA:-}" ] || cluster_start

db=tv_race_$$
createdb "$db"
q -d "$db" >"$TV_TMP/race.ids" <<'SQL'
CREATE EXTENSION tokenvault;
SELECT tokenvault.create_user('race') AS u \gset
SELECT tokenvault.create_client('Chat', 'chat', 'api_key') AS c \gset
SELECT tokenvault.create_auth(:'u', :'c', 'shared', jsonb_build_object('api_key', 'TVSECRET-ak-' || md5(random()::text))) AS a \gset
SELECT tokenvault.create_solution('Unique') AS s1 \gset
SELECT tokenvault.create_solution('Plain') AS s2 \gset
SELECT tokenvault.add_slot(:'s1', 'chat', 'auth', '{"service": "chat", "force_unique": true}'),
       tokenvault.add_slot(:'s2', 'chat', 'auth', '{"service": "chat"}');
SELECT :'a', tokenvault.create_instance(:'s1', :'u', 'unique one'), tokenvault.create_instance(:'s2', :'u', 'plain one');
SQL
IFS='|' read -r auth unique plain < <(tail -n 1 "$TV_TMP/race.ids")
values() { printf '[{"externalId": "chat", "authId": "%s"}]' "$auth"; }

# Session A takes the auth into the force-unique slot and holds its transaction open.
rm -f "$TV_TMP/a.in" && mkfifo "$TV_TMP/a.in"
psql -X -q -v ON_ERROR_STOP=1 -d "$db" <"$TV_TMP/a.in" >"$TV_TMP/a.out" 2>&1 &
a_pid=$!
exec 3>"$TV_TMP/a.in"
echo "BEGIN; SELECT tokenvault.update_instance('$unique', auth_values => '$(values)');" >&3
wait_until 10 "session A holds the auth" \
	q -d "$db" -c "SELECT 1/count(*) FROM pg_stat_activity WHERE datname = '$db' AND state = 'idle in transaction'"

# Session B puts the same auth into a plain slot of another instance: it must wait.
(if psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -d "$db" \
	-c "SELECT tokenvault.update_instance('$plain', auth_values => '$(values)')" >"$TV_TMP/b.out" 2>&1
 then echo 0; else echo 1; fi >"$TV_TMP/b.rc") &
b_pid=$!
if wait_until 10 "session B waits for session A" \
	q -d "$db" -c "SELECT 1/count(*) FROM pg_stat_activity WHERE datname = '$db' AND wait_event_type = 'Lock'"; then
	ok "session B waits for session A's lock on the auth"
fi

echo "COMMIT;" >&3
exec 3>&-
wait "$a_pid"
wait "$b_pid"
is "$(cat "$TV_TMP/b.rc")" 1 "once A commits, B is refused"
is "$(sed -n 's/^[^:]*:  *\([0-9A-Z]\{5\}\): .*/\1/p' "$TV_TMP/b.out" | head -n 1)" 23505 "with unique_violation"
is "$(q -d "$db" -c "SELECT count(*) FROM tokenvault.instance_auth_values WHERE auth_id = '$auth'")" 1 \
	"the auth fills one instance only"

# The other way round: session A enables an instance and holds its
# transaction open; session B, the tables' owner, deletes a required value
# straight from the table meanwhile.  (update_instance() would wait on the
# instance's row anyway; the trigger must make a direct write wait too.)
q -d "$db" >"$TV_TMP/race2.ids" <<SQL
SELECT tokenvault.create_solution('Required') AS s \\gset
SELECT tokenvault.add_slot(:'s', 'channel', 'config', '{"required": true}');
SELECT tokenvault.create_instance(:'s', (SELECT user_id FROM tokenvault.auths WHERE id = '$auth'), 'required one',
                                  config_values => '[{"externalId": "channel", "value": "#a"}]');
SQL
inst=$(tail -n 1 "$TV_TMP/race2.ids")
rm -f "$TV_TMP/a.in" && mkfifo "$TV_TMP/a.in"
psql -X -q -v ON_ERROR_STOP=1 -d "$db" <"$TV_TMP/a.in" >"$TV_TMP/a.out" 2>&1 &
a_pid=$!
exec 3>"$TV_TMP/a.in"
echo "BEGIN; SELECT tokenvault.update_instance('$inst', enabled => true);" >&3
wait_until 10 "session A enables the instance" \
	q -d "$db" -c "SELECT 1/count(*) FROM pg_stat_activity WHERE datname = '$db' AND state = 'idle in transaction'"
(if psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -d "$db" \
	-c "DELETE FROM tokenvault.instance_config_values WHERE instance_id = '$inst'" >"$TV_TMP/b.out" 2>&1
 then echo 0; else echo 1; fi >"$TV_TMP/b.rc") &
b_pid=$!
if wait_until 10 "session B waits for session A" \
	q -d "$db" -c "SELECT 1/count(*) FROM pg_stat_activity WHERE datname = '$db' AND wait_event_type = 'Lock'"; then
	ok "taking a required value away waits for the instance being enabled"
fi
echo "COMMIT;" >&3
exec 3>&-
wait "$a_pid"
wait "$b_pid"
is "$(sed -n 's/^[^:]*:  *\([0-9A-Z]\{5\}\): .*/\1/p' "$TV_TMP/b.out" | head -n 1)" 55000 \
	"and is refused once it is: the enabled instance keeps its required value"
is "$(q -d "$db" -c "SELECT count(*) FROM tokenvault.instance_config_values WHERE instance_id = '$inst'")" 1 \
	"the value is still there"

# An administrator adds a required slot while an instance of the solution is
# being enabled: the slot waits, and is refused once the instance is on.
q -d "$db" -c "UPDATE tokenvault.instances SET enabled = false WHERE id = '$inst'"
rm -f "$TV_TMP/a.in" && mkfifo "$TV_TMP/a.in"
psql -X -q -v ON_ERROR_STOP=1 -d "$db" <"$TV_TMP/a.in" >"$TV_TMP/a.out" 2>&1 &
a_pid=$!
exec 3>"$TV_TMP/a.in"
echo "BEGIN; SELECT tokenvault.update_instance('$inst', enabled => true);" >&3
wait_until 10 "session A enables the instance again" \
	q -d "$db" -c "SELECT 1/count(*) FROM pg_stat_activity WHERE datname = '$db' AND state = 'idle in transaction'"
sol=$(q -d "$db" -c "SELECT solution_id FROM tokenvault.instances WHERE id = '$inst'")
(if psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -d "$db" \
	-c "SELECT tokenvault.add_slot('$sol', 'topic', 'config', '{\"required\": true}')" >"$TV_TMP/b.out" 2>&1
 then echo 0; else echo 1; fi >"$TV_TMP/b.rc") &
b_pid=$!
if wait_until 10 "session B waits for session A" \
	q -d "$db" -c "SELECT 1/count(*) FROM pg_stat_activity WHERE datname = '$db' AND wait_event_type = 'Lock'"; then
	ok "a required slot added meanwhile waits for the instance being enabled"
fi
echo "COMMIT;" >&3
exec 3>&-
wait "$a_pid"
wait "$b_pid"
is "$(sed -n 's/^[^:]*:  *\([0-9A-Z]\{5\}\): .*/\1/p' "$TV_TMP/b.out" | head -n 1)" 55000 \
	"and is refused once it is on: no enabled instance lacks a required slot"
dropdb "$db"
done_testing
