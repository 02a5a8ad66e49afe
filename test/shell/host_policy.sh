#!/usr/bin/env bash
# Requests cannot be aimed inward: every address a token or webhook request
# is about to connect to is judged by the host policy after DNS, so a name
# that resolves to a loopback address is refused like the address itself,
# unless tokenvault.allowed_internal_hosts lists the name or a network
# holding the address.  The peers here listen on 127.0.0.1; what is refused
# never reaches them.  (Private, link-local and metadata addresses are shown
# refused by the policy check alone, in test/pgtap/host_policy.sql: tests
# send nothing off loopback.)
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
TV_EXTRA_CONF="tokenvault.allowed_internal_hosts = '127.0.0.2'" cluster_start
fault_start
fault_port=${TV_FAULT_URL##*:}
webhook_start
hook_port=${TV_WEBHOOK_URL##*:}
export TV_CLIENT_SECRET="TVSECRET-cs-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

allow() {
	q -c "ALTER SYSTEM SET tokenvault.allowed_internal_hosts = '$1'" -c "SELECT pg_reload_conf()" >/dev/null
	wait_until 10 "tokenvault.allowed_internal_hosts is '$1'" \
		sh -c "[ \"\$(psql -X -At -c 'SHOW tokenvault.allowed_internal_hosts')\" = '$1' ]"
}
count() { curl -sf "$TV_FAULT_URL/_count/$1"; }
client() { # NAME URL: a client_credentials client whose token URL is URL
	q -c "SELECT tokenvault.create_client('$1', 'fault', 'oauth2', jsonb_build_object(
	          'grant', 'client_credentials', 'client_id', 'fault-client', 'client_secret', '$TV_CLIENT_SECRET',
	          'allow_insecure_http', true, 'token_url', '$2'))"
}
auth_state() { # CLIENT: create an auth, print the SQLSTATE
	sqlstate "SELECT tokenvault.create_auth(tokenvault.create_user('u-' || md5(random()::text)), '$1')"
}
q -c "CREATE EXTENSION tokenvault" >/dev/null

# Only 127.0.0.2 allowed: "localhost" resolves to 127.0.0.1 (and ::1), both refused at connect time.
by_name=$(client by-name "http://localhost:$fault_port/ok/token")
is "$(auth_state "$by_name") $(count ok)" "38000 0" \
	"a name that resolves to a loopback address not on the allow-list is refused, and the peer hears nothing"
is "$(grep -c 'tokenvault refused to connect: host "localhost" is at 127.0.0.1, a loopback address' "$TV_LOG")" 1 \
	"  ... the log says which host, which address and why"
is "$(psql -X -At -c "SELECT tokenvault.create_auth(tokenvault.create_user('u-x'), '$by_name')" 2>&1 | grep -c 'refused by the host policy')" 1 \
	"  ... and so does the error"
by_address=$(client by-address "http://127.0.0.1:$fault_port/ok/token")
is "$(auth_state "$by_address") $(count ok)" "38000 0" "a loopback address not on the allow-list is refused"

# The reverse: only the name "localhost" allowed.  The address itself is not.
allow localhost
is "$(auth_state "$by_address") $(count ok)" "38000 0" \
	"with only the name localhost allowed, the address 127.0.0.1 is still refused"
is "$(auth_state "$by_name")" ok "... while a request for localhost goes through"
is "$(count ok)" 1 "  ... and reaches the peer once"

# By network
allow 127.0.0.0/8
is "$(auth_state "$by_address") $(count ok)" "ok 2" "an allowed network admits its addresses"

# A webhook to a loopback address not on the allow-list is refused the same way.
allow 127.0.0.2
refusals() { grep -c 'tokenvault refused to connect: host "127.0.0.1" is at 127.0.0.1' "$TV_LOG" || true; }
before=$(refusals)
q >/dev/null <<SQL
SELECT tokenvault.add_webhook('http://127.0.0.1:$hook_port/hook', 'TVSECRET-wh-' || md5(random()::text), NULL, true);
SELECT tokenvault.delete_auth(id) FROM tokenvault.auths LIMIT 1;
SQL
wait_until 30 "the webhook's refusal is logged" sh -c "[ \$(grep -c 'host \"127.0.0.1\" is at 127.0.0.1' '$TV_LOG') -gt $before ]" &&
	ok "a webhook delivery to a loopback address not on the allow-list is refused at connect time"
is "$(curl -sf "$TV_WEBHOOK_URL/_received" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" 0 \
	"  ... and the receiver got nothing"
allow 127.0.0.1
q -c "SELECT tokenvault._wake_worker(now())" >/dev/null
wait_until 60 "once allowed, the delivery arrives" \
	sh -c "[ \"\$(curl -sf '$TV_WEBHOOK_URL/_received' | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')\" -ge 1 ]" &&
	ok "once its address is allowed, the webhook is delivered"

done_testing
