#!/usr/bin/env bash
# Nothing grows without bound: a webhook that stops answering loses its
# oldest waiting events past a count and an age (an event says so) and is
# disabled after failing long enough (an event says so); a claim reads the
# due heads of the queues alone; states of authorizations never completed
# are purged by the worker; and past a share of the NOTIFY queue, events are
# recorded without a NOTIFY, so a refresh's COMMIT cannot fail on a full
# queue.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
TV_EXTRA_CONF="tokenvault.min_refresh_interval = 0" cluster_start
fault_start
export TV_CLIENT_SECRET="TVSECRET-cs-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

set_conf() {
	q -c "ALTER SYSTEM SET $1 = '$2'" -c "SELECT pg_reload_conf()" >/dev/null
	wait_until 10 "$1 is $2" sh -c "[ \"\$(psql -X -At -c 'SHOW $1')\" = '$2' ]"
}
wake() { q -c "SELECT tokenvault._wake_worker(now())" >/dev/null; }
pending() { q -c "SELECT count(*) FROM tokenvault.webhook_deliveries WHERE delivered_at IS NULL"; }
events_of() { q -c "SELECT count(*) FROM tokenvault.events WHERE kind = '$1' AND payload->>'reason' IS NOT DISTINCT FROM ${2:-NULL}"; }
q >/dev/null <<'SQL'
CREATE EXTENSION tokenvault;
-- a receiver that never answers: nothing listens on port 1
SELECT tokenvault.add_webhook('http://127.0.0.1:1/hook', 'TVSECRET-wh-' || md5(random()::text), NULL, true);
SELECT tokenvault.create_client('API', 'api', 'api_key') AS c \gset
CREATE FUNCTION pg_temp.events(n int, per_auth int DEFAULT 1) RETURNS void LANGUAGE plpgsql AS $$
DECLARE a uuid;
BEGIN
    FOR i IN 1..n LOOP
        a := tokenvault.create_auth(tokenvault.create_user('g-' || md5(random()::text)),
                                    (SELECT id FROM tokenvault.clients WHERE service = 'api'), NULL,
                                    jsonb_build_object('api_key', 'TVSECRET-k-' || md5(random()::text)));
        PERFORM tokenvault.delete_auth(a);
    END LOOP;
END $$;
SELECT pg_temp.events(30);
SQL
is "$(pending)" 30 "thirty events wait for a webhook that never answers"

# A claim reads the heads alone: one waiting delivery per (webhook, auth) is due, the rest wait at infinity.
q >/dev/null <<'SQL'
INSERT INTO tokenvault.events (kind, auth_id, payload) SELECT 'auth.deleted', '00000000-0000-0000-0000-000000000001', '{}' FROM generate_series(1, 500);
INSERT INTO tokenvault.webhook_deliveries (webhook_id, event_id, auth_id, next_attempt_at)
SELECT (SELECT id FROM tokenvault.webhooks), e.id, e.auth_id, 'infinity' FROM tokenvault.events e
 WHERE e.auth_id = '00000000-0000-0000-0000-000000000001';
SQL
q -c "SELECT tokenvault._publish('auth.deleted', '00000000-0000-0000-0000-000000000002', '{}')" >/dev/null
q -c "SELECT tokenvault._publish('auth.deleted', '00000000-0000-0000-0000-000000000002', '{}')" >/dev/null
wake
wait_until 30 "the worker's claim puts the second behind the first" sh -c "[ \"\$(psql -X -At -c \"SELECT string_agg((next_attempt_at = 'infinity')::text, ' ' ORDER BY id) FROM tokenvault.webhook_deliveries WHERE auth_id = '00000000-0000-0000-0000-000000000002'\")\" = 'false true' ]" &&
	ok "an auth's second waiting event waits behind its first, not due"
is "$(q -c "EXPLAIN SELECT id FROM tokenvault.webhook_deliveries WHERE delivered_at IS NULL AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 10" | grep -c 'webhook_deliveries_due_idx')" 1 \
	"the due deliveries are found by index, not by walking the backlog"
q -c "DELETE FROM tokenvault.events WHERE auth_id IN ('00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000002')" >/dev/null

# Count: at most tokenvault.webhook_max_backlog wait.
set_conf tokenvault.webhook_max_backlog 10
wake
wait_until 30 "the backlog is cut to 10" sh -c "[ \$(psql -X -At -c 'SELECT count(*) FROM tokenvault.webhook_deliveries WHERE delivered_at IS NULL') = 10 ]" &&
	ok "past tokenvault.webhook_max_backlog the oldest waiting events are dropped"
is "$(q -c "SELECT payload->>'dropped' FROM tokenvault.events WHERE kind = 'webhook.events_dropped' AND payload->>'reason' LIKE 'more than%'")" 20 \
	"  ... and an event says how many, for which webhook and why"

# Age: events older than tokenvault.webhook_max_age are dropped.
q -c "UPDATE tokenvault.events SET created_at = now() - interval '4 days' WHERE delivered_at IS NULL" >/dev/null
wake
wait_until 30 "old events are dropped" sh -c "[ \$(psql -X -At -c 'SELECT count(*) FROM tokenvault.webhook_deliveries WHERE delivered_at IS NULL') = 0 ]" &&
	ok "events older than tokenvault.webhook_max_age are dropped"
is "$(q -c "SELECT payload->>'dropped' FROM tokenvault.events WHERE kind = 'webhook.events_dropped' AND payload->>'reason' LIKE 'older%'")" 10 \
	"  ... with an event saying so"
is "$(q -c "SELECT count(*) FROM tokenvault.events WHERE delivered_at IS NULL")" 0 "  ... and their events count as delivered, to be deleted in time"

# Failing for tokenvault.webhook_disable_after: disabled, with an event.
wait_until 30 "the webhook has failed" sh -c "[ \"\$(psql -X -At -c 'SELECT failing_since IS NOT NULL FROM tokenvault.webhooks')\" = t ]" &&
	ok "a failing webhook records since when it fails"
q -c "UPDATE tokenvault.webhooks SET failing_since = now() - interval '4 days'" >/dev/null
wake
wait_until 30 "the webhook is disabled" sh -c "[ \"\$(psql -X -At -c 'SELECT enabled FROM tokenvault.webhooks')\" = f ]" &&
	ok "a webhook failing for tokenvault.webhook_disable_after is disabled"
is "$(q -c "SELECT count(*) FROM tokenvault.events WHERE kind = 'webhook.disabled' AND (payload->>'webhook_id')::uuid = (SELECT id FROM tokenvault.webhooks) AND NOT payload ? 'url'")" 1 \
	"  ... with an event saying so (naming the webhook by id, not by its URL, which may hold a token)"
q -c "SELECT tokenvault.create_auth(tokenvault.create_user('after'), (SELECT id FROM tokenvault.clients), NULL, jsonb_build_object('api_key', 'TVSECRET-k-' || md5(random()::text)))" >/dev/null
is "$(pending)" 0 "  ... and gets no more events"

# Abandoned authorizations: their states are purged by the worker.
q >/dev/null <<SQL
SELECT tokenvault.create_client('Code', 'code', 'oauth2', jsonb_build_object('client_id', 'c', 'auth_url', '$TV_FAULT_URL/a',
    'allow_insecure_http', true, 'token_url', '$TV_FAULT_URL/ok/token')) AS c \gset
SELECT tokenvault.authorize_url(:'c', tokenvault.create_user('abandoning'), 'http://127.0.0.1/cb') IS NOT NULL;
UPDATE tokenvault.auth_states SET expires_at = now() - interval '2 days';
SQL
is "$(q -c "SELECT count(*) FROM tokenvault.auth_states")" 1 "an authorization was begun and abandoned long ago"
wake
wait_until 30 "abandoned states are purged" sh -c "[ \$(psql -X -At -c 'SELECT count(*) FROM tokenvault.auth_states') = 0 ]" &&
	ok "the worker purges the state of an authorization abandoned long ago"

# NOTIFY: a listener idle in a transaction pins the queue; past the set
# share, events are recorded without a NOTIFY and a refresh still stores.
q -c "ALTER SYSTEM SET tokenvault.notify_max_queue_usage = 0.000001" -c "SELECT pg_reload_conf()" >/dev/null
wait_until 10 "the NOTIFY limit is in force" \
	sh -c "[ \"\$(psql -X -At -c \"SELECT current_setting('tokenvault.notify_max_queue_usage')::float8 < 0.001\")\" = t ]"
# (what it prints, 2 MB of notifications at the end, goes nowhere: no pipe fills)
coproc pin { psql -X -q -At -o /dev/null 2>/dev/null; }
pin_pid=$pin_PID
echo "LISTEN filler; BEGIN; SELECT 'pinned';" >&"${pin[1]}"
pinned=none
wait_until 30 "the listener is idle in a transaction" \
	sh -c "[ \"\$(psql -X -At -c \"SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND query LIKE '%pinned%'\")\" = 1 ]" &&
	pinned=pinned
q -c "SELECT pg_notify('filler', g || repeat('x', 7000)) FROM generate_series(1, 300) g" >/dev/null
is "$(q -c "SELECT pg_notification_queue_usage() > 0.000001") $pinned" "t pinned" \
	"a listener idle in a transaction holds notifications in the queue"
listen_start
q >/dev/null <<SQL
SELECT tokenvault.create_client('CC', 'cc', 'oauth2', jsonb_build_object('grant', 'client_credentials', 'client_id', 'fault-client',
    'client_secret', '$TV_CLIENT_SECRET', 'allow_insecure_http', true, 'token_url', '$TV_FAULT_URL/ok/token')) AS c \gset
SELECT tokenvault.create_auth(tokenvault.create_user('notify-user'), :'c');
SQL
cc_auth=$(q -c "SELECT a.id FROM tokenvault.auths a JOIN tokenvault.clients c ON c.id = a.client_id WHERE c.service = 'cc'")
before=$(q -c "SELECT md5(secret::text) FROM tokenvault.auths WHERE id = '$cc_auth'")
is "$(sqlstate "SELECT tokenvault.refresh_auth('$cc_auth')")" ok "with the queue past tokenvault.notify_max_queue_usage, a refresh succeeds"
is "$(q -c "SELECT md5(secret::text) <> '$before' FROM tokenvault.auths WHERE id = '$cc_auth'")" t "  ... and its result is stored"
is "$(q -c "SELECT count(*) FROM tokenvault.events WHERE kind = 'auth.refreshed' AND auth_id = '$cc_auth'")" 1 "  ... and its event recorded"
listen_stop
is "$(grep -c 'auth.refreshed' "$TV_LISTEN_OUT" || true)" 0 "  ... without a NOTIFY, which the full queue could have refused at COMMIT"
printf 'ROLLBACK;\n\\q\n' >&"${pin[1]}"
wait "$pin_pid" 2>/dev/null || true

# A delivery made to wait by a publisher whose snapshot predates the
# delivery of the one before it would wait for ever: an application's
# repeatable-read transaction publishes after the worker delivered the head.
webhook_start
hook=$(q -c "SELECT tokenvault.add_webhook('http://127.0.0.1:1/late', 'TVSECRET-wh-' || md5(random()::text), NULL, true)")
late=00000000-0000-0000-0000-000000000003
q -c "SELECT tokenvault._publish('auth.deleted', '$late', '{}')" >/dev/null
wait_until 30 "the first delivery fails" sh -c "[ \$(psql -X -At -c \"SELECT count(*) FROM tokenvault.webhook_deliveries WHERE webhook_id = '$hook' AND last_error IS NOT NULL\") = 1 ]"
mkfifo "$TV_TMP/rr.fifo"
psql -X -q -At <"$TV_TMP/rr.fifo" >"$TV_TMP/rr.out" 2>&1 &
rr_pid=$!
exec 9>"$TV_TMP/rr.fifo"
echo "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 'snapshot', count(*) FROM tokenvault.webhook_deliveries;" >&9
wait_until 30 "the repeatable-read snapshot is taken" grep -q snapshot "$TV_TMP/rr.out"
q -c "UPDATE tokenvault.webhooks SET url = '$TV_WEBHOOK_URL/late' WHERE id = '$hook'" \
  -c "UPDATE tokenvault.webhook_deliveries SET next_attempt_at = now() WHERE webhook_id = '$hook'" >/dev/null
wake
wait_until 30 "the first event is delivered" sh -c "[ \$(psql -X -At -c \"SELECT count(*) FROM tokenvault.webhook_deliveries WHERE webhook_id = '$hook' AND delivered_at IS NOT NULL\") = 1 ]"
echo "SELECT tokenvault._publish('auth.deleted', '$late', '{}'); COMMIT; SELECT 'published';" >&9
wait_until 30 "the second event is published" grep -q published "$TV_TMP/rr.out"
exec 9>&-
wait "$rr_pid" 2>/dev/null || true
wait_until 30 "the event published under the older snapshot is delivered" \
	sh -c "[ \$(psql -X -At -c \"SELECT count(*) FROM tokenvault.webhook_deliveries WHERE webhook_id = '$hook' AND delivered_at IS NULL\") = 0 ]" &&
	ok "an event published under a snapshot older than its predecessor's delivery is delivered, not left waiting"

done_testing
