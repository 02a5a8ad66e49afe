#!/usr/bin/env bash
# An authorization state is single use, whatever becomes of the code
# exchange it was taken for (the attack: a state tried again after a failed
# or rolled-back exchange was accepted, over and over):
#  - a state whose exchange the provider refused is refused the second and
#    the third time (once the provider would accept), and no request goes
#    out for them;
#  - so is one whose exchange succeeded in a transaction that rolled back;
#  - five sessions completing one state at once: exactly one exchange is
#    sent, the four others are refused, whether the exchange fails or not;
#  - a caller cancelled while the state is being taken ends at once, takes
#    its consumer with it, and leaves the state unused.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
[ -n "${TV_DATA:-}" ] || cluster_start
fault_start

db=tv_state_$$
createdb "$db"
export PGDATABASE=$db
# a hanging provider fails the exchange after 2 s
export PGOPTIONS="-c tokenvault.http_timeout=2"
q -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
CREATE EXTENSION tokenvault;
SELECT tokenvault.create_client('Code', 'code', 'oauth2', jsonb_build_object(
    'client_id', 'state-test', 'auth_url', :'url' || '/authorize', 'allow_insecure_http', true, 'token_url', :'url' || '/invalid_grant/token'));
SELECT tokenvault.create_user('state-user');
SQL
provider() { q -c "UPDATE tokenvault.clients SET token_url = '$TV_FAULT_URL/$1/token' WHERE name = 'Code'"; }
new_state() {
	q -c "SELECT split_part(split_part(tokenvault.authorize_url(c.id, u.id, 'https://app.example/cb'), 'state=', 2), '&', 1)
	        FROM tokenvault.clients c, tokenvault.users u WHERE c.name = 'Code' AND u.external_user_id = 'state-user'"
}
complete() { echo "SELECT tokenvault.complete_authorization('$1', 'code')"; }
sent() { curl -sf "$TV_FAULT_URL/_count/$1"; }
auths() { q -c "SELECT count(*) FROM tokenvault.auths"; }
reset() { curl -sf -X POST "$TV_FAULT_URL/_reset" >/dev/null; }

# --- a failed exchange spends the state
provider invalid_grant
st=$(new_state)
is "$(sqlstate "$(complete "$st")")" 28000 "the provider refuses the first exchange"
is "$(sqlstate "$(complete "$st")")" 22023 "  ... the same state is refused the second time"
provider ok
is "$(sqlstate "$(complete "$st")")" 22023 "  ... and the third time, the provider now accepting"
is "$(sent invalid_grant)/$(sent ok)/$(auths)" "1/0/0" "  ... with one exchange sent in all, and no auth made"

# --- a rolled-back exchange spends it too
st=$(new_state)
q <<SQL >/dev/null
BEGIN;
$(complete "$st");
ROLLBACK;
SQL
is "$(sqlstate "$(complete "$st")")" 22023 "a state whose exchange succeeded in a transaction that rolled back is refused"
is "$(sent ok)/$(auths)" "1/0" "  ... with no second exchange"

# --- five at once: through a gate (an advisory lock held here) so that all
# read the state before any takes it
at_once() {
	local st=$1 i pids=()
	exec 3> >(psql -X -q -At >/dev/null)
	echo "SELECT pg_advisory_lock(4343);" >&3
	holding() { [ "$(q -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4343 AND granted")" = 1 ]; }
	wait_until 10 "the gate is closed" holding || return 1
	rm -f "$TV_TMP"/state.*
	for i in 1 2 3 4 5; do
		psql -X -q -At -v VERBOSITY=verbose \
			-c "SELECT tokenvault.complete_authorization('$st', 'code') FROM (SELECT pg_advisory_lock_shared(4343)) gate" \
			>"$TV_TMP/state.$i" 2>&1 &
		pids+=($!)
	done
	queued() { [ "$(q -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4343 AND NOT granted")" = 5 ]; }
	wait_until 30 "5 sessions wait at the gate" queued || return 1
	echo "SELECT pg_advisory_unlock(4343);" >&3
	exec 3>&-
	for i in "${pids[@]}"; do wait "$i" || true; done
}
# SQLSTATEs of the five, sorted and counted: "4 22023,1 08000"
outcomes() {
	for f in "$TV_TMP"/state.*; do
		sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\): .*/\1/p' "$f" | grep . || echo ok
	done | sort | uniq -c | sort -rn | awk '{printf "%s%s %s", (NR > 1 ? "," : ""), $1, $2}'
}
reset
provider hang
at_once "$(new_state)"
is "$(outcomes)" "4 22023,1 08000" "five sessions complete one state at once, the exchange failing: one goes to the provider, four are refused"
is "$(sent hang)" 1 "  ... and exactly one exchange is sent"
provider ok
at_once "$(new_state)"
is "$(outcomes)" "4 22023,1 ok" "five at once, the exchange succeeding: one auth, four refusals"
is "$(sent ok)/$(auths)" "1/1" "  ... with one exchange sent and one auth made"

# --- cancelled while the state is being taken: a session holds the state's
# row, so its consumer waits
st=$(new_state)
exec 4> >(psql -X -q -At >/dev/null)
echo "BEGIN; SELECT 1 FROM tokenvault.auth_states WHERE state = '$st' FOR UPDATE;" >&4
row_held() { [ "$(q -c "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                        WHERE c.relname = 'auth_states' AND l.mode = 'RowShareLock' AND l.granted")" = 1 ]; }
wait_until 10 "the state's row is held" row_held
PGAPPNAME=tv_state_cancel psql -X -q -At -v VERBOSITY=verbose -c "$(complete "$st")" >"$TV_TMP/cancel.out" 2>&1 &
caller=$!
consumer_waits() { [ "$(q -c "SELECT count(*) FROM pg_stat_activity
                              WHERE backend_type = 'tokenvault state consumer' AND wait_event_type = 'Lock'")" = 1 ]; }
wait_until 10 "the consumer waits for the row" consumer_waits
q -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'tv_state_cancel'" >/dev/null
wait "$caller" || true
is "$(sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\): .*/\1/p' "$TV_TMP/cancel.out")" 57014 "a caller cancelled while its state is taken ends with query_canceled"
no_consumer() { [ "$(q -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'tokenvault state consumer'")" = 0 ]; }
# well within the consumer's own lock_timeout (10 s): it went with its caller
wait_until 5 "the consumer ends with its caller" no_consumer && ok "  ... and its consumer ends with it"
echo "COMMIT;" >&4
exec 4>&-
is "$(q -c "SELECT count(*) FROM tokenvault.auth_states WHERE state = '$st'")" 1 "  ... leaving the state unused"
is "$(sqlstate "$(complete "$st")")" ok "  ... so that it completes afterwards"

dropdb --force "$db"
done_testing
