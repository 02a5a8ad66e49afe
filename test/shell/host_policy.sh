#!/usr/bin/env bash
# Requests cannot be aimed inward: every address a token or webhook request
# is about to connect to is judged by the host policy after DNS, so a name
# that resolves to a loopback address is refused like the address itself,
# unless tokenvault.allowed_internal_hosts lists the name or a network
# holding the address.  The peers here listen on 127.0.0.1; what is refused
# never reaches them: not through a connection opened while the list still
# admitted it, nor through a proxy the server's environment names.  (Private, link-local and metadata addresses are shown
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
# idle connections kept long, as a receiver behind a load balancer may keep them
webhook_start KEEP_ALIVE_MS=600000
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
is "$(psql -X -At -c "SELECT tokenvault.create_auth(tokenvault.create_user('u-x'), '$by_name')" 2>&1 |
	grep -cE 'refused by the host policy|^HINT:.*tokenvault.allowed_internal_hosts')" 2 \
	"  ... and so does the error, whose hint names the setting"
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

# The worker keeps that connection for the next delivery.  Once the list no
# longer admits the address, no request goes over it.
received() { curl -sf "$TV_WEBHOOK_URL/_received" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
wait_until 60 "every delivery made" sh -c "[ \"\$(psql -X -At -c 'SELECT count(*) FROM tokenvault.webhook_deliveries WHERE delivered_at IS NULL')\" = 0 ]"
imported=$(q -c "SELECT tokenvault.create_auth(tokenvault.create_user('u-kept'), '$by_address', 'kept',
                     jsonb_build_object('access_token', 'TVSECRET-at-' || md5(random()::text)))")
wait_until 60 "its event delivered" sh -c "[ \"\$(psql -X -At -c 'SELECT count(*) FROM tokenvault.webhook_deliveries WHERE delivered_at IS NULL')\" = 0 ]"
had=$(received)
allow 127.0.0.2
before=$(refusals)
q -c "SELECT tokenvault.delete_auth('$imported')" >/dev/null
wait_until 30 "the next delivery's refusal is logged" sh -c "[ \$(grep -c 'host \"127.0.0.1\" is at 127.0.0.1' '$TV_LOG') -gt $before ]" &&
	ok "a connection opened while the allow-list admitted the address is not reused once it does not"
is "$(received)" "$had" "  ... and the receiver got nothing more"

# Malformed entries are refused, not read as something wider: "127.0.0.2/"
# once read as 127.0.0.2/0, every IPv4 address.
for bad in 127.0.0.2/ 127.0.0.2/x ::1/129 ::ffff:127.0.0.1/95 'local host' 127.0.0.2:80; do
	is "$(sqlstate "ALTER SYSTEM SET tokenvault.allowed_internal_hosts = '$bad'")" 22023 \
		"the allow-list entry '$bad' is refused"
done
long="a-host-name-longer-than-an-identifier-$(printf 'x%.0s' $(seq 1 40)).internal.example"
allow "$long, Upper.Example"
is "$(q -c "SELECT tokenvault.host_policy('$long', '127.0.0.1') IS NULL,
                   tokenvault.host_policy('upper.example', '127.0.0.1') IS NULL,
                   tokenvault.host_policy('other.example', '127.0.0.1') IS NULL")" "t|t|f" \
	"a name longer than 63 characters is kept whole, names match in any case, others do not"

# A proxy named by the server's environment would connect for tokenvault,
# to the address the URL names, past the policy.  Here it is the fault peer
# on 127.0.0.1, which the list admits; the URL's 127.0.0.3 is not admitted.
allow 127.0.0.1
as_server_user pg_ctl -D "$TV_DATA" -m fast -w -t 60 stop >/dev/null
env http_proxy="$TV_FAULT_URL" HTTPS_PROXY="$TV_FAULT_URL" ALL_PROXY="$TV_FAULT_URL" \
	bash -c "$(declare -f as_server_user); as_server_user pg_ctl -D '$TV_DATA' -l '$TV_LOG' -w -t 60 start" >/dev/null
proxied=$(client proxied "http://127.0.0.3:$fault_port/ok/token")
had=$(count ok)
is "$(auth_state "$proxied") $(count ok)" "38000 $had" \
	"a proxy from the server's environment is not used: the request is refused, and the proxy hears nothing"

done_testing
