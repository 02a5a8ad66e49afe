#!/usr/bin/env bash
# The rules that span rows, under concurrency.  In each race session A does
# something in a transaction it holds open and session B does what would
# break a rule if both went through: neither sees the other's uncommitted
# rows, so the checks alone would let both pass; a lock makes B wait for A
# and then refuse.
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

# race SQL_A SQL_B WHAT: session A runs SQL_A in a transaction it holds
# open, session B runs SQL_B meanwhile and must wait for A (the check WHAT),
# then A commits.  B's SQLSTATE, or "ok", is left in b_state.
race() {
	local a_pid b_pid
	rm -f "$TV_TMP/a.in" && mkfifo "$TV_TMP/a.in"
	psql -X -q -v ON_ERROR_STOP=1 -d "$db" <"$TV_TMP/a.in" >"$TV_TMP/a.out" 2>&1 &
	a_pid=$!
	exec 3>"$TV_TMP/a.in"
	echo "BEGIN; $1" >&3
	wait_until 10 "session A holds its transaction open" \
		q -d "$db" -c "SELECT 1/count(*) FROM pg_stat_activity WHERE datname = '$db' AND state = 'idle in transaction'"
	PGDATABASE=$db sqlstate "$2" >"$TV_TMP/b.state" &
	b_pid=$!
	if wait_until 10 "$3" \
		q -d "$db" -c "SELECT 1/count(*) FROM pg_stat_activity WHERE datname = '$db' AND wait_event_type = 'Lock'"; then
		ok "$3"
	fi
	echo "COMMIT;" >&3
	exec 3>&-
	wait "$a_pid"
	wait "$b_pid" || true
	b_state=$(cat "$TV_TMP/b.state")
}

# A takes the auth into the force-unique slot; B puts it into a plain slot
# of another instance (the lock: the auth's row).
race "SELECT tokenvault.update_instance('$unique', auth_values => '$(values)');" \
	"SELECT tokenvault.update_instance('$plain', auth_values => '$(values)')" \
	"a second instance taking the auth waits for the first"
is "$b_state" 23505 "and is refused once the first has it, with unique_violation"
is "$(q -d "$db" -c "SELECT count(*) FROM tokenvault.instance_auth_values WHERE auth_id = '$auth'")" 1 \
	"the auth fills one instance only"

# A enables an instance; B, the tables' owner, deletes a required value
# straight from the table (update_instance() would wait on the instance's
# row anyway; the trigger makes a direct write wait too: a share lock on
# the instance).
q -d "$db" >"$TV_TMP/race2.ids" <<SQL
SELECT tokenvault.create_solution('Required') AS s \\gset
SELECT tokenvault.add_slot(:'s', 'channel', 'config', '{"required": true}');
SELECT tokenvault.create_instance(:'s', (SELECT user_id FROM tokenvault.auths WHERE id = '$auth'), 'required one',
                                  config_values => '[{"externalId": "channel", "value": "#a"}]');
SQL
inst=$(tail -n 1 "$TV_TMP/race2.ids")
race "SELECT tokenvault.update_instance('$inst', enabled => true);" \
	"DELETE FROM tokenvault.instance_config_values WHERE instance_id = '$inst'" \
	"taking a required value away waits for the instance being enabled"
is "$b_state" 55000 "and is refused once it is: the enabled instance keeps its required value"
is "$(q -d "$db" -c "SELECT count(*) FROM tokenvault.instance_config_values WHERE instance_id = '$inst'")" 1 \
	"the value is still there"

# A enables the instance again; B, an administrator, adds a required slot to
# its solution (the lock: the solution's row, shared by enabling).
q -d "$db" -c "UPDATE tokenvault.instances SET enabled = false WHERE id = '$inst'"
sol=$(q -d "$db" -c "SELECT solution_id FROM tokenvault.instances WHERE id = '$inst'")
race "SELECT tokenvault.update_instance('$inst', enabled => true);" \
	"SELECT tokenvault.add_slot('$sol', 'topic', 'config', '{\"required\": true}')" \
	"a required slot added meanwhile waits for the instance being enabled"
is "$b_state" 55000 "and is refused once it is on: no enabled instance lacks a required slot"
dropdb "$db"
done_testing
