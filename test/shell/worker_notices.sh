#!/usr/bin/env bash
# Events from the background worker: an auth with no refresh token that
# expires within tokenvault.expiry_notice gets exactly one auth.expiring,
# whose row holds the exact payload; a LISTEN session hears its id and kind
# (test/shell/notify_open.sh shows why no more); a webhook receiver gets it,
# signed, after answering 500 twice; auth.expired when it passes; failed
# refreshes and deletions are announced too.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
unset TV_DATA
TV_EXTRA_CONF="tokenvault.database = tv_worker
tokenvault.expiry_notice = 1h" cluster_start
export PGDATABASE=tv_worker
createdb tv_worker
q -c "CREATE EXTENSION tokenvault"
worker_idle() { [ "$(q -c "SELECT worker_state FROM tokenvault.stats")" = idle ]; }
wait_until 15 "the worker comes up once the extension exists" worker_idle && ok "the worker serves the database once the extension exists"

fault_start
# its 200 comes with a page larger than tokenvault.max_response_size, which
# a delivery does not read
webhook_start FAIL_FIRST=2 OK_BODY_KB=2048
hook_secret="TVSECRET-wh-$(openssl rand -hex 16)"
q -v url="$TV_WEBHOOK_URL/hook" -v secret="$hook_secret" <<'SQL' >/dev/null
SELECT tokenvault.add_webhook(:'url', :'secret', '{auth.expiring}', allow_insecure_http => true);
SQL

listen_start
notified() {
	listen_poke
	grep -q "$1" "$TV_LISTEN_OUT"
}

q -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
SELECT tokenvault.create_client('Code', 'code-svc', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', :'url' || '/a', 'allow_insecure_http', true, 'token_url', :'url' || '/ok/token')) AS c \gset
SELECT tokenvault.create_user('ext-user-1', 'User One') AS u \gset
SELECT tokenvault.create_auth(:'u', :'c', 'Dies in half an hour', jsonb_build_object(
    'access_token', 'TVSECRET-at-' || md5(random()::text), 'expires_in', 1800));
SQL
auth=$(q -c "SELECT id FROM tokenvault.auths WHERE name = 'Dies in half an hour'")
count_events() { q -c "SELECT count(*) FROM tokenvault.events WHERE auth_id = '$1' AND kind = '$2'"; }
one_expiring() { [ "$(count_events "$auth" auth.expiring)" = 1 ]; }
wait_until 10 "auth.expiring is recorded" one_expiring && ok "an auth without a refresh token expiring within expiry_notice gets auth.expiring"

is "$(q <<'SQL'
SELECT e.payload = jsonb_build_object(
    'event', 'auth.expiring', 'authentication_name', a.name, 'service_name', a.service,
    'user_id', a.user_id, 'authId', a.id, 'external_user_id', 'ext-user-1',
    'expires_at', to_char(a.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
  FROM tokenvault.auths a JOIN tokenvault.events e ON e.auth_id = a.id AND e.kind = 'auth.expiring'
 WHERE a.name = 'Dies in half an hour';
SQL
)" t "  ... its row holds the exact payload: event, authentication_name, service_name, user_id, authId, external_user_id, expires_at (UTC)"
wait_until 10 "the LISTEN session gets auth.expiring" notified '"kind": "auth.expiring"'
payload=$(sed -n 's/^Asynchronous notification "tokenvault" with payload "\(.*\)" received from server process.*/\1/p' \
	"$TV_LISTEN_OUT" | grep '"auth.expiring"' | head -n 1)
is "$(q -v p="$payload" <<SQL
SELECT :'p'::jsonb = jsonb_build_object('id', id, 'kind', kind) FROM tokenvault.events WHERE kind = 'auth.expiring' AND auth_id = '$auth';
SQL
)" t "the LISTEN session hears the event's id and kind, nothing more"

# the webhook: 500, 500, then 200
received() { curl -sf "$TV_WEBHOOK_URL/_received"; }
field() { node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const r=JSON.parse(s).filter(x=>x.headers['x-tokenvault-event']==='auth.expiring');console.log($1)})"; }
accepted() { [ "$(received | field "r.filter(x=>x.status===200).length")" -ge 1 ]; }
wait_until 30 "the webhook receiver accepts auth.expiring" accepted && ok "the webhook receives auth.expiring after answering 500 twice (and a 2 MB page with its 200)"
is "$(received | field "r.map(x=>x.status).join(',')")" "500,500,200" "  ... three attempts: 500, 500, 200"
body=$(received | field "r[r.length-1].body")
ts=$(received | field "r[r.length-1].headers['x-tokenvault-timestamp']")
sig=$(received | field "r[r.length-1].headers['x-tokenvault-signature']")
want="v1=$(printf '%s.%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$hook_secret" | sed 's/^.*= //')"
is "$sig" "$want" "  ... signed: HMAC-SHA256 over timestamp.body with the webhook's secret verifies"
is "$(q -v p="$body" <<SQL
SELECT :'p'::jsonb = e.payload || jsonb_build_object('delivery_id', d.id, 'event_id', e.id)
  FROM tokenvault.events e JOIN tokenvault.webhook_deliveries d ON d.event_id = e.id
 WHERE e.kind = 'auth.expiring' AND e.auth_id = '$auth';
SQL
)" t "  ... the body is the event's payload with its delivery_id and event_id, which the signature covers"
is "$(received | field "r[r.length-1].headers['x-tokenvault-delivery']")" \
	"$(q -c "SELECT d.id FROM tokenvault.webhook_deliveries d JOIN tokenvault.events e ON e.id = d.event_id WHERE e.auth_id = '$auth'")" \
	"  ... with its delivery id"
ts_ok=$(($(date +%s) - ts < 60 && ts - $(date +%s) < 5))
is "$ts_ok" 1 "  ... and a current timestamp"
delivered() { [ "$(q -c "SELECT delivered_at IS NOT NULL FROM tokenvault.events WHERE kind = 'auth.expiring' AND auth_id = '$auth'")" = t ]; }
wait_until 10 "the event is marked delivered" delivered && ok "  ... and the event is marked delivered"

# another auth about to expire makes the worker scan again; still one notice for the first
q -v u="$(q -c "SELECT id FROM tokenvault.users")" -v c="$(q -c "SELECT id FROM tokenvault.clients")" <<'SQL' >/dev/null
SELECT tokenvault.create_auth(:'u', :'c', 'Dies in three seconds', jsonb_build_object(
    'access_token', 'TVSECRET-at-' || md5(random()::text), 'expires_in', 3));
SQL
short=$(q -c "SELECT id FROM tokenvault.auths WHERE name = 'Dies in three seconds'")
short_expiring() { [ "$(count_events "$short" auth.expiring)" = 1 ]; }
wait_until 10 "the second auth is announced" short_expiring
is "$(count_events "$auth" auth.expiring)" 1 "a later scan does not announce the first auth again"
short_expired() { [ "$(count_events "$short" auth.expired)" = 1 ]; }
wait_until 15 "auth.expired" short_expired && ok "an auth that could not be kept alive gets auth.expired when it expires"
is "$(q -c "SELECT status FROM tokenvault.auths WHERE id = '$short'")" expired "  ... and its status is expired"
wait_until 5 "the LISTEN session gets auth.expired" notified '"kind": "auth.expired"' && ok "  ... which LISTEN hears too"

# refreshes the worker makes, failing
q -v url="$TV_FAULT_URL" -v u="$(q -c "SELECT id FROM tokenvault.users")" <<'SQL' >/dev/null
SELECT tokenvault.create_client('Down', 'down-svc', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', :'url' || '/a', 'allow_insecure_http', true, 'token_url', :'url' || '/s500/token')) AS down \gset
SELECT tokenvault.create_client('Revoked', 'revoked-svc', 'oauth2', jsonb_build_object(
    'client_id', 'c', 'auth_url', :'url' || '/a', 'allow_insecure_http', true, 'token_url', :'url' || '/invalid_grant/token')) AS revoked \gset
SELECT tokenvault.create_auth(:'u', :'down', 'Provider down', jsonb_build_object(
    'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
    'expires_in', 2));
SELECT tokenvault.create_auth(:'u', :'revoked', 'Grant revoked', jsonb_build_object(
    'access_token', 'TVSECRET-at-' || md5(random()::text), 'refresh_token', 'TVSECRET-rt-' || md5(random()::text),
    'expires_in', 2));
SQL
down=$(q -c "SELECT id FROM tokenvault.auths WHERE name = 'Provider down'")
revoked=$(q -c "SELECT id FROM tokenvault.auths WHERE name = 'Grant revoked'")
failed_once() { [ "$(count_events "$down" auth.refresh_failed)" -ge 1 ]; }
wait_until 15 "auth.refresh_failed" failed_once && ok "a refresh the worker makes that fails with a 500 emits auth.refresh_failed"
is "$(q -c "SELECT refresh_at > now() AND failure_count >= 1 AND status = 'active' FROM tokenvault.auths WHERE id = '$down'")" t \
	"  ... and backs off, the auth still active"
reauth() { [ "$(count_events "$revoked" auth.needs_reauth)" = 1 ]; }
wait_until 15 "auth.needs_reauth" reauth && ok "invalid_grant emits auth.needs_reauth"
is "$(q -c "SELECT status || ' ' || (refresh_at IS NULL) FROM tokenvault.auths WHERE id = '$revoked'")" "needs_reauth true" \
	"  ... and the worker stops trying"
q -c "SELECT tokenvault.delete_auth('$down')" >/dev/null
is "$(count_events "$down" auth.deleted)" 1 "delete_auth emits auth.deleted"
# A secret rotation: deliveries carry a signature under each secret, the
# newest first, until the rotation is finished.
new_secret=$(q -c "SELECT tokenvault.rotate_webhook_secret((SELECT id FROM tokenvault.webhooks))")
is "${#new_secret}" 43 "rotate_webhook_secret() without a secret generates one (32 random bytes) and returns it"
expiring_delivery() { # NAME: the last accepted delivery of that auth's auth.expiring, as "ts body sig" lines
	local a
	a=$(q -c "SELECT id FROM tokenvault.auths WHERE name = '$1'")
	received | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{const r=JSON.parse(s).filter(x=>x.status===200&&x.body.includes('$a'));if(r.length)console.log(JSON.stringify(r[r.length-1]))})"
}
new_expiring() {
	q -v u="$(q -c "SELECT id FROM tokenvault.users")" -v c="$(q -c "SELECT id FROM tokenvault.clients WHERE type = 'api_key' LIMIT 1")" >/dev/null <<SQL
SELECT tokenvault.create_auth(:'u', (SELECT client_id FROM tokenvault.auths WHERE id = '$auth'), '$1', jsonb_build_object(
    'access_token', 'TVSECRET-at-' || md5(random()::text), 'expires_in', 1800));
SQL
	wait_until 30 "the receiver accepts the auth.expiring of $1" has_delivery "$1"
}
has_delivery() { [ -n "$(expiring_delivery "$1")" ]; }
sign() { printf '%s.%s' "$1" "$2" | openssl dgst -sha256 -hmac "$3" | sed 's/^.*= //'; }
check_signatures() { # NAME: prints what the Signature header holds, as "new,old" or "new"
	local d ts body sig out=""
	d=$(expiring_delivery "$1")
	ts=$(node -e "console.log(JSON.parse(process.argv[1]).headers['x-tokenvault-timestamp'])" "$d")
	body=$(node -e "process.stdout.write(JSON.parse(process.argv[1]).body)" "$d")
	sig=$(node -e "console.log(JSON.parse(process.argv[1]).headers['x-tokenvault-signature'])" "$d")
	[ "$sig" = "v1=$(sign "$ts" "$body" "$new_secret"),v1=$(sign "$ts" "$body" "$hook_secret")" ] && out=new,old
	[ "$sig" = "v1=$(sign "$ts" "$body" "$new_secret")" ] && out=new
	echo "${out:-neither}"
}
new_expiring "During rotation"
is "$(check_signatures "During rotation")" new,old \
	"during a rotation a delivery is signed with the new secret and the old: a receiver holding either verifies"
is "$(q -c "SELECT tokenvault.finish_webhook_rotation((SELECT id FROM tokenvault.webhooks))")" t "finish_webhook_rotation() ends it"
new_expiring "After rotation"
is "$(check_signatures "After rotation")" new "  ... after which only the new secret signs"
is "$(q -c "SELECT count(*) FROM tokenvault.events WHERE payload::text ~ 'TVSECRET'")" 0 "no event holds a secret"

listen_stop
done_testing
