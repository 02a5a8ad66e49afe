# Test peers on loopback, stopped on exit.  Source after test/cluster.sh.
#   oidc_start [VAR=value ...]   the real OAuth2 server (oidc-provider, test/peers/oidc.mjs);
#                                exports TV_OIDC_URL
#   fault_start                  the scriptable fault peer (test/peers/fault.mjs);
#                                exports TV_FAULT_URL
#   tls_make_ca                  a CA and a server certificate for 127.0.0.1, made now,
#                                in $TV_TLS (ca.pem, server.pem, server.key)
# The client secret and the test user's password are made up here, once per
# run, and carry the TVSECRET marker the leak scan looks for.

TV_CLIENT_SECRET=${TV_CLIENT_SECRET:-TVSECRET-cs-$(openssl rand -hex 16)}
TV_USER_PASSWORD=${TV_USER_PASSWORD:-TVSECRET-pw-$(openssl rand -hex 16)}
export TV_CLIENT_SECRET TV_USER_PASSWORD
TV_PEER_PIDS=()

peers_stop() {
	local pid
	for pid in "${TV_PEER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${TV_PEER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	TV_PEER_PIDS=()
}

# peer_start NAME SCRIPT [VAR=value ...]: start a node peer, wait (bounded)
# for the port it writes, into TV_PEER_PORT.
peer_start() {
	local name=$1 script=$2 portfile="$TV_TMP/$1.port" i
	shift 2
	rm -f "$portfile"
	[ ${#TV_PEER_PIDS[@]} -gt 0 ] || tv_at_exit peers_stop
	env PORT_FILE="$portfile" "$@" node "$script" >>"$TV_TMP/$name.log" 2>&1 &
	TV_PEER_PIDS+=($!)
	for i in $(seq 1 200); do
		[ -s "$portfile" ] && { TV_PEER_PORT=$(cat "$portfile"); return 0; }
		kill -0 $! 2>/dev/null || break
		sleep 0.1
	done
	echo "peer $name did not start; its log:" >&2
	cat "$TV_TMP/$name.log" >&2
	return 1
}

oidc_start() {
	local scheme=http
	case " $* " in *" TLS_CERT="*) scheme=https ;; esac
	peer_start oidc test/peers/oidc.mjs CLIENT_SECRET="$TV_CLIENT_SECRET" \
		USER_PASSWORD="$TV_USER_PASSWORD" "$@" || return 1
	export TV_OIDC_URL="$scheme://127.0.0.1:$TV_PEER_PORT"
}

fault_start() {
	peer_start fault test/peers/fault.mjs "$@" || return 1
	export TV_FAULT_URL="http://127.0.0.1:$TV_PEER_PORT"
}

# A CA made for this run, and a certificate it signs for 127.0.0.1; also a
# self-signed certificate no one trusts.
tls_make_ca() {
	export TV_TLS="$TV_TMP/tls"
	mkdir -p "$TV_TLS"
	(
		cd "$TV_TLS"
		openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=tokenvault test CA" \
			-keyout ca.key -out ca.pem
		openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
		printf 'subjectAltName = IP:127.0.0.1, DNS:localhost\n' >server.ext
		openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
			-extfile server.ext -out server.pem
		openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=127.0.0.1" \
			-addext "subjectAltName = IP:127.0.0.1" -keyout untrusted.key -out untrusted.pem
		chmod 644 ./*.pem
	) >"$TV_TMP/tls.log" 2>&1 || { cat "$TV_TMP/tls.log" >&2; return 1; }
}

# webhook_start [FAIL_FIRST=n] [OK_BODY_KB=n]: a webhook receiver (test/peers/webhook.mjs);
# exports TV_WEBHOOK_URL
webhook_start() {
	peer_start webhook test/peers/webhook.mjs "$@" || return 1
	export TV_WEBHOOK_URL="http://127.0.0.1:$TV_PEER_PORT"
}
