#!/usr/bin/env bash
# NOTIFY is open to every role that can connect: PostgreSQL has no privilege
# on LISTEN or on pg_notify().  So a notification on channel tokenvault
# carries an event's id and kind only, and a consumer (README, "Events and
# webhooks") acts on the row of tokenvault.events that it names, read under
# its grants.  Here a role with no grant at all listens while real events
# happen (two refreshes the provider refuses, the rows holding user ids,
# names and the error): no payload holds more than id and kind.  It then forges notifications, and the
# README's consumer logic, run by an application that listens too, acts on
# the real events once each and on no forged one.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
[ -n "${TV_DATA:-}" ] || TV_EXTRA_CONF="tokenvault.http_timeout = 5" cluster_start
fault_start

db=tv_notify_$$
snoop=tv_snoop_$$
app=tv_consumer_$$
createdb "$db"
export PGDATABASE=$db
# roles are the cluster's: gone at the end, whether the checks pass or not
drop_roles() {
	for pid in ${snoop_pid:-} ${app_pid:-}; do kill "$pid" 2>/dev/null || true; done
	for pid in ${snoop_pid:-} ${app_pid:-}; do wait "$pid" 2>/dev/null || true; done
	dropdb --if-exists --force --maintenance-db=postgres "$db" >/dev/null 2>&1 || true
	psql -X -q -d postgres -c "DROP ROLE IF EXISTS $snoop" -c "DROP ROLE IF EXISTS $app" >/dev/null 2>&1 || true
}
tv_at_exit drop_roles
q <<SQL >/dev/null
CREATE EXTENSION tokenvault;
CREATE ROLE $snoop LOGIN;   -- connects (PUBLIC may), and holds no grant of tokenvault
CREATE ROLE $app LOGIN IN ROLE tokenvault_app;
SELECT tokenvault.admit('$app', 'app');
SQL

# listen_as ROLE NAME: a LISTEN session as ROLE, psql on a fifo; poke_NAME
# asks it a cheap query so that it prints what has arrived
listen_as() {
	mkfifo "$TV_TMP/$2.in"
	psql -X -q -At -U "$1" <"$TV_TMP/$2.in" >"$TV_TMP/$2.out" 2>&1 &
	eval "${2}_pid=$!"
	eval "exec {${2}_fd}>\"\$TV_TMP/$2.in\""
	echo "LISTEN tokenvault;" >&"$(eval echo "\$${2}_fd")"
}
poke() { echo "SELECT 1;" >&"$(eval echo "\$${1}_fd")"; }
payloads() {
	sed -n 's/^Asynchronous notification "tokenvault" with payload "\(.*\)" received from server process.*/\1/p' "$TV_TMP/$1.out"
}
heard() { poke "$1"; [ "$(payloads "$1" | wc -l)" -ge "$2" ]; }
listen_as "$snoop" snoop
listen_as "$app" app
q -U "$snoop" -c "SELECT 1 FROM tokenvault.events" >/dev/null 2>&1 &&
	not_ok "the listening role reads no event" || ok "the listening role has no grant: it reads no event"

# Real events: two refreshes the provider refuses (auth.refresh_failed, with
# the error in the row)
q -v url="$TV_FAULT_URL" -v secret="$TV_CLIENT_SECRET" <<'SQL' >/dev/null
SELECT tokenvault.create_user('ext-notify-' || md5(random()::text), 'Notify Person') AS u \gset
SELECT tokenvault.create_client('Down', 'notify-svc', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'client_secret', :'secret', 'auth_url', :'url' || '/a', 'allow_insecure_http', true, 'token_url', :'url' || '/s500/token')) AS c \gset
SELECT tokenvault.create_auth(:'u', :'c', 'Notify auth name ' || n, jsonb_build_object(
    'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
    'expires_in', 3600))
  FROM generate_series(1, 2) n;
SQL
for auth in $(q -c "SELECT id FROM tokenvault.auths WHERE name LIKE 'Notify auth name %'"); do
	q -c "SELECT tokenvault.refresh_auth('$auth')" >/dev/null 2>&1 || true
done
is "$(q -c "SELECT string_agg(kind, ',' ORDER BY id) FROM tokenvault.events")" "auth.refresh_failed,auth.refresh_failed" \
	"two failed refreshes are recorded"
is "$(q -c "SELECT bool_and(payload ? 'user_id' AND payload ? 'external_user_id') AND bool_or(payload->>'error' <> '') FROM tokenvault.events")" t \
	"  ... their rows hold user ids, names and the error, for those with grants"

wait_until 10 "the role with no grant hears both" heard snoop 2 && ok "a role with no grant hears the notifications"
is "$(payloads snoop | q -c "
    CREATE TEMP TABLE heard (p text);
    COPY heard FROM STDIN;
    SELECT count(*) FILTER (WHERE (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(p::jsonb) k) = '{id,kind}'
                              AND jsonb_typeof(p::jsonb->'id') = 'number')
      FROM heard")" 2 "  ... each an object of exactly id (a number) and kind"
is "$(payloads snoop | q -c "
    CREATE TEMP TABLE heard (p text);
    COPY heard FROM STDIN;
    SELECT count(*) FROM heard h JOIN tokenvault.events e ON e.id = (h.p::jsonb->>'id')::bigint AND e.kind = h.p::jsonb->>'kind'")" 2 \
	"  ... naming the events rows"
leaked=$(q -c "SELECT DISTINCT v FROM tokenvault.events e,
               LATERAL (VALUES (e.payload->>'user_id'), (e.payload->>'external_user_id'), (e.payload->>'authentication_name'),
               (e.payload->>'service_name'), (e.payload->>'authId'), (e.payload->>'error')) x(v)
               WHERE v IS NOT NULL" | while read -r v; do
	[ -n "$v" ] && payloads snoop | grep -qF -- "$v" && echo "$v"
done || true)
is "${leaked:+leaked}" "" "  ... and no payload holds a user id, external id, name, service, auth id or error text"
is "$(payloads snoop | grep -c 'Notify Person\|Notify auth name\|refused\|ext-notify-' || true)" 0 \
	"  ... (nor the user's or auth's name, or the error, by value)"

# Forgeries, sent by the role with no grant: an id that is no event, a real
# id with another kind, a payload of the old shape (everything inline, no
# id), something that is not JSON, and a replay of a real notification
real_failed=$(q -c "SELECT jsonb_build_object('id', id, 'kind', kind) FROM tokenvault.events WHERE kind = 'auth.refresh_failed' ORDER BY id LIMIT 1")
q -U "$snoop" -v failed="$real_failed" -v auth="$auth" <<'SQL' >/dev/null
SELECT pg_notify('tokenvault', '{"id": 999999999, "kind": "auth.expiring"}');
SELECT pg_notify('tokenvault', jsonb_build_object('id', (:'failed'::jsonb->'id'), 'kind', 'auth.needs_reauth')::text);
SELECT pg_notify('tokenvault', jsonb_build_object('event', 'auth.expiring', 'authId', :'auth',
                                                   'expires_at', '2000-01-01T00:00:00Z')::text);
SELECT pg_notify('tokenvault', 'not json');
SELECT pg_notify('tokenvault', :'failed');
SQL
wait_until 10 "the application hears the 2 events and the 5 forgeries" heard app 7 && ok "the application hears the forgeries too"

# The README's consumer: a notification is a hint; act on the row of
# tokenvault.events with its id and kind, each event once.  Run as the
# application, one read per notification, in the order heard; one that
# fails (no JSON, an id that is no number) is ignored, as the README's
# Python does.
declare -A handled=()
acted=()
while IFS= read -r note; do
	row=$(q -U "$app" -v note="$note" <<'SQL' 2>/dev/null || true
SELECT e.id FROM tokenvault.events e
 WHERE e.id = (:'note'::jsonb->>'id')::bigint AND e.kind = :'note'::jsonb->>'kind';
SQL
)
	[ -n "$row" ] || continue
	[ -z "${handled[$row]:-}" ] || continue
	handled[$row]=1
	acted+=("$row")
done < <(payloads app)
is "${acted[*]}" "$(q -c "SELECT string_agg(id::text, ' ' ORDER BY id) FROM tokenvault.events")" \
	"the README's consumer acts on the two real events, once each, and on none of the forgeries"

done_testing
