#!/usr/bin/env bash
# A step of the worker that fails does not take the worker down, nor spin:
# (a) recording a webhook's answer fails (a trigger of the test's raises in
# _webhook_result): the worker keeps its pid, and the refreshes it has in
# flight at that moment (refresh_auth() calls) complete, one request each; (b) the webhook step
# fails every time (a trigger raises on every claim): over 20 s the error is
# logged a handful of times, each with its SQLSTATE, while refreshes that
# come due meanwhile still happen; (c) a claim returns a row of another shape
# than the library reads (its SQL and library differ): refused with 55000,
# not misread, and the worker carries on.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
unset TV_DATA
TV_EXTRA_CONF="tokenvault.database = tv_worker
log_error_verbosity = verbose" cluster_start
export PGDATABASE=tv_worker
createdb tv_worker
q -c "CREATE EXTENSION tokenvault"
worker_idle() { [ "$(q -c "SELECT worker_state FROM tokenvault.stats")" = idle ]; }
wait_until 15 "the worker comes up once the extension exists" worker_idle && ok "the worker serves the database"
worker_pid() { q -c "SELECT worker_pid FROM tokenvault.stats"; }
pid=$(worker_pid)

fault_start
webhook_start
hook_secret="TVSECRET-wh-$(openssl rand -hex 16)"
q -v url="$TV_WEBHOOK_URL/hook" -v secret="$hook_secret" -v fault="$TV_FAULT_URL" <<'SQL' >/dev/null
SELECT tokenvault.add_webhook(:'url', :'secret', '{auth.deleted}', allow_insecure_http => true);
SELECT tokenvault.create_client('Slow', 'slow-svc', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', :'fault' || '/a', 'allow_insecure_http', true, 'token_url', :'fault' || '/slow/token?ms=4000'));
SELECT tokenvault.create_client('Quick', 'quick-svc', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', :'fault' || '/a', 'allow_insecure_http', true, 'token_url', :'fault' || '/ok/token'));
SELECT tokenvault.create_user('ext-user-1', 'User One');
-- auths to delete: their auth.deleted is the webhook's event
SELECT tokenvault.create_auth(u.id, c.id, 'to delete ' || i, jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'expires_in', 86400))
  FROM tokenvault.users u, tokenvault.clients c, generate_series(1, 2) i
 WHERE u.external_user_id = 'ext-user-1' AND c.name = 'Quick';
SQL
# five auths of a client; expires_in 4 makes them due (by the schedule) in seconds
make_auths() {
	q -v client="$1" -v prefix="$2" -v ttl="$3" <<'SQL' >/dev/null
SELECT tokenvault.create_auth(u.id, c.id, :'prefix' || i, jsonb_build_object(
           'access_token', 'TVSECRET-at-' || md5(random()::text), 'expires_in', :ttl,
           'refresh_token', 'TVSECRET-rt-' || md5(random()::text)))
  FROM tokenvault.users u, tokenvault.clients c, generate_series(1, 5) i
 WHERE u.external_user_id = 'ext-user-1' AND c.name = :'client';
SQL
}
refreshed() { [ "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE name LIKE '$1%' AND expires_at > now() + interval '30 minutes'")" = 5 ]; }
delete_one() { q -c "SELECT tokenvault.delete_auth(id) FROM tokenvault.auths WHERE name = '$1'" >/dev/null; }

# (a) recording a delivery's answer raises, while refreshes are in flight
q <<'SQL' >/dev/null
CREATE FUNCTION public.refuse_result() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'test trigger refuses to record a webhook result' USING ERRCODE = 'TVW01';
END $$;
CREATE TRIGGER refuse_result BEFORE UPDATE ON tokenvault.webhook_deliveries FOR EACH ROW
    WHEN (NEW.last_status IS DISTINCT FROM OLD.last_status OR NEW.delivered_at IS DISTINCT FROM OLD.delivered_at)
    EXECUTE FUNCTION public.refuse_result();
SQL
make_auths Slow "slow " 86400
curl -sf -X POST "$TV_FAULT_URL/_reset" >/dev/null
succeeded=$(q -c "SELECT refreshes_succeeded FROM tokenvault.stats")
# five sessions have the worker refresh an auth each; the provider answers in 4 s
for i in 1 2 3 4 5; do
	(
		rc=0
		q -c "SELECT tokenvault.refresh_auth(id) > now() + interval '30 minutes' FROM tokenvault.auths WHERE name = 'slow $i'" \
			>"$TV_TMP/refresh.$i.out" 2>&1 || rc=$?
		echo "$rc" >"$TV_TMP/refresh.$i.rc"
	) &
done
slow_requests() { [ "$(curl -sf "$TV_FAULT_URL/_count/slow")" -ge 5 ]; }
wait_until 10 "the worker sends the five refreshes" slow_requests
# meanwhile a webhook is answered at once, and its answer cannot be recorded
delete_one "to delete 1"
logged_a() { grep -q 'TVW01' "$TV_LOG"; }
wait_until 10 "the failed recording is logged" logged_a &&
	ok "a delivery's answer that cannot be recorded is logged, with its SQLSTATE"
all_answered() { [ "$(ls "$TV_TMP"/refresh.*.rc 2>/dev/null | wc -l)" = 5 ]; }
wait_until 40 "the five refresh_auth() calls return" all_answered
is "$(cat "$TV_TMP"/refresh.*.rc | tr -d '\n')$(cat "$TV_TMP"/refresh.*.out | tr -d '\n')" "00000ttttt" \
	"the refreshes in flight when the recording failed complete, each refresh_auth() with a new token"
is "$(worker_pid)" "$pid" "  ... and the worker is the same process (pid $pid)"
is "$(curl -sf "$TV_FAULT_URL/_count/slow")" 5 "  ... with one request each"
is "$(q -c "SELECT refreshes_succeeded - $succeeded FROM tokenvault.stats")" 5 "  ... counted as succeeded"

# (b) the webhook step fails every time: each claim of a delivery raises
q <<'SQL' >/dev/null
DROP TRIGGER refuse_result ON tokenvault.webhook_deliveries;
CREATE FUNCTION public.refuse_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'test trigger refuses to claim a webhook delivery' USING ERRCODE = 'TVW02';
END $$;
CREATE TRIGGER refuse_claim BEFORE UPDATE ON tokenvault.webhook_deliveries FOR EACH ROW
    EXECUTE FUNCTION public.refuse_claim();
SQL
# the delivery of (a) is claimed until its lease runs out; a new one is due at once
delete_one "to delete 2"
logged_b() { grep -q 'TVW02' "$TV_LOG"; }
wait_until 10 "the failing claim is logged" logged_b
offset=$(stat -c %s "$TV_LOG")
start=$(millis)
make_auths Quick "quick " 4
wait_until 10 "refreshes due meanwhile happen" refreshed "quick " &&
	ok "refreshes that come due while the webhook step keeps failing happen"
# the window the error is counted over: 20 s from the first line counted
left=$((20000 - ($(millis) - start)))
[ "$left" -le 0 ] || sleep "$(awk -v ms="$left" 'BEGIN { printf "%.1f", ms / 1000 }')"
lines=$(tail -c +"$((offset + 1))" "$TV_LOG" | grep -c 'test trigger refuses to claim' || true)
with_state=$(tail -c +"$((offset + 1))" "$TV_LOG" | grep 'test trigger refuses to claim' | grep -c 'LOG:  TVW02: tokenvault worker: ' || true)
is "$([ "$lines" -ge 1 ] && [ "$lines" -le 10 ] && echo yes || echo "$lines lines")" yes \
	"a step that keeps failing is logged at most 10 times in 20 s (here $lines), not in a loop"
is "$with_state" "$lines" "  ... each line with its SQLSTATE"
is "$(worker_pid)" "$pid" "  ... and the worker is still the same process"

# (c) the claim's row is not what the library reads
q <<'SQL' >/dev/null
ALTER EXTENSION tokenvault DROP FUNCTION tokenvault._worker_claim(integer);
DROP FUNCTION tokenvault._worker_claim(integer);
CREATE FUNCTION tokenvault._worker_claim(n integer, OUT ids text[], OUT next_at timestamptz)
    LANGUAGE sql AS $$ SELECT ARRAY(SELECT id::text FROM tokenvault.auths WHERE refresh_at <= now()), NULL::timestamptz $$;
SQL
make_auths Quick "shape " 4
logged_c() { grep -q 'LOG:  55000: tokenvault worker: what tokenvault._worker_claim returns is not of the shape' "$TV_LOG"; }
wait_until 15 "the claim of another shape is refused" logged_c &&
	ok "a claim whose row is not of the shape the library reads is refused with 55000"
is "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE name LIKE 'shape %' AND last_refreshed_at IS NOT NULL")" 0 \
	"  ... and nothing of it is taken for auth ids"
is "$(worker_pid)" "$pid" "  ... and the worker is the same process"

if grep -q 'TVSECRET' "$TV_LOG"; then not_ok "no secret in the server log"; else ok "no secret in the server log"; fi
done_testing
