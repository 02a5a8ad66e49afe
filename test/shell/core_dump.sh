#!/usr/bin/env bash
# No key and no secret in a core dump of a backend that sealed and opened
# secrets: the key ring lives in a page left out of core dumps, OpenSSL's
# key schedule lives only as long as one seal or open, and the plaintexts
# the code owns are wiped when their memory context goes.  The dump is taken
# with gdb's gcore, which leaves out what madvise(MADV_DONTDUMP) marks.
#
# What PostgreSQL, PL/pgSQL and libcurl copy and free unwiped (a token
# request's body and answer in the backend that exchanges a code, and in
# the worker that refreshes) is kept from the kernel's core files instead:
# a process that loaded the key ring or sent a token request is not
# dumpable.  The second half crashes backends and the worker (SIGSEGV) on a
# server allowed to write cores, and finds a core only for the backend that
# never held a secret.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
source test/peers.sh
TV_EXTRA_CONF="tokenvault.http_timeout = 5" cluster_start
fault_start

if ! command -v gcore >/dev/null; then
	not_ok "gcore (Debian's gdb) is not installed: make test installs it"
	done_testing
fi

q -c "CREATE EXTENSION tokenvault" >/dev/null
# The secrets are made by the server, so no statement text (which stays in
# shared memory for pg_stat_activity) carries one.
secrets=$(q <<'SQL'
SELECT tokenvault.create_client('API', 'api', 'api_key') AS c \gset
CREATE TEMP TABLE made AS
SELECT tokenvault.create_auth(tokenvault.create_user('core-' || g), :'c', NULL,
                              jsonb_build_object('api_key', 'TVSECRET-core-' || md5(random()::text))) AS id
  FROM generate_series(1, 20) g;
SELECT tokenvault.access_token(id) FROM made;
SQL
)
is "$(wc -l <<<"$secrets")" 20 "twenty secrets sealed by one session"

# Older keys ahead of the sealing one, so that the key file add_key() reads
# and writes back is larger than a buffer's first allocation.
keys=$(cat "$TV_KEYS")
for i in $(seq 1 13); do
	printf '%s %s\n' "$((1000 + i))" "$(od -An -v -N32 -tx1 /dev/urandom | tr -d ' \n')"
done >"$TV_KEYS"
printf '%s\n' "$keys" >>"$TV_KEYS"

# Another backend opens them all and seals them again, returning none.
coproc be { psql -X -q -At 2>/dev/null; }
be_pid=$be_PID
cat >&"${be[1]}" <<'SQL'
SELECT pg_backend_pid();
SELECT count(*) FROM tokenvault.auths WHERE tokenvault.access_token(id) IS NOT NULL;
SELECT tokenvault.add_key() IS NOT NULL;
SET client_min_messages = warning;
SELECT tokenvault.rotate_key();
SELECT count(*) FROM tokenvault.auths WHERE tokenvault.access_token(id) IS NOT NULL;
SELECT tokenvault.add_key() IS NOT NULL;
SELECT 'done';
SQL
read -r -t 60 pid <&"${be[0]}" || pid=
out=
while read -r -t 60 line <&"${be[0]}"; do
	out="$out $line"
	[ "$line" = done ] && break
done
is "$out" " 20 t 20 20 t done" "a second backend opened twenty secrets, sealed them again under a new key, and added another"

core="$TV_TMP/backend.core"
if gcore -o "$core" "$pid" >"$TV_TMP/gcore.log" 2>&1 && [ -s "$core.$pid" ]; then
	ok "gcore took a core of that backend"
else
	not_ok "gcore could not take a core of backend $pid (ptrace not allowed here?)"
	sed 's/^/# /' "$TV_TMP/gcore.log" | tail -5
fi
echo '\q' >&"${be[1]}"
wait "$be_pid" 2>/dev/null || true

# What to look for: every key, raw and as hex, and every secret raw and in base64.
found=$(python3 - "$core.$pid" "$TV_KEYS" <<PY
import base64, sys
core = open(sys.argv[1], 'rb').read()
keys = [l.split()[1] for l in open(sys.argv[2]) if l[:1].isdigit()]
secrets = """$secrets""".split()
needles = {}
for k in keys:
    needles['a key, raw'] = needles.get('a key, raw', []) + [bytes.fromhex(k)]
    needles['a key, hex'] = needles.get('a key, hex', []) + [k.encode()]
for s in secrets:
    needles.setdefault('a secret', []).append(s.encode())
    needles.setdefault('a secret in base64', []).append(base64.b64encode(s.encode())[:24])
print('keys: %d' % len(keys))
for what, ns in needles.items():
    print('%s: %d' % (what, sum(n in core for n in ns)))
PY
)
[ -n "${TV_KEEP_CORE:-}" ] || rm -f "$core.$pid"
is "$(head -n 1 <<<"$found")" "keys: 16" "the scan looked for every key of the ring (sixteen, after two add_key)"
is "$(tail -n +2 <<<"$found")" "a key, raw: 0
a key, hex: 0
a secret: 0
a secret in base64: 0" "the core holds no key and no secret"


# ---- the kernel's core files ----

# A token request sent by a backend (a code exchanged) and by the worker (a
# refresh): the client secret, the code and the tokens pass through memory
# tokenvault does not own.
q -c "ALTER DATABASE postgres SET tokenvault.min_refresh_interval = 0" >/dev/null
q -v url="$TV_FAULT_URL" <<'SQL' >/dev/null
SELECT tokenvault.create_client('fault', 'fault', 'oauth2', jsonb_build_object(
           'client_id', 'cid', 'client_secret', 'TVSECRET-cs-' || md5(random()::text),
           'auth_url', :'url' || '/authorize', 'allow_insecure_http', true, 'token_url', :'url' || '/ok/token')) AS c \gset
CREATE TABLE flow AS
SELECT substring(tokenvault.authorize_url(:'c', (SELECT id FROM tokenvault.users LIMIT 1), 'http://127.0.0.1:1/cb')
                 FROM '[?&]state=([^&]+)') AS state;
SQL

# The server may write cores (pg_ctl -c lifts the soft limit) into its data
# directory, if the kernel writes them where the process stands.
as_server_user pg_ctl -D "$TV_DATA" -l "$TV_LOG" -c -w -t 60 restart >/dev/null
pattern=$(cat /proc/sys/kernel/core_pattern)
case "$pattern" in
	'|'* | /*) not_ok "the kernel writes cores to \"$pattern\", not where the process stands: this test cannot see them" ;;
esac

# crash PID: SIGSEGV it, wait for the server to be back from the crash, and
# print the cores the data directory got
crash() {
	kill -SEGV "$1"
	wait_until 60 "the crashed process $1 is gone" test ! -e "/proc/$1"
	wait_until 120 "the server is back after the crash of $1" q -c "SELECT 1"
	find "$TV_DATA" -maxdepth 1 -name 'core*' -newer "$TV_LOG.mark" | wc -l
	find "$TV_DATA" -maxdepth 1 -name 'core*' -delete
}
# the last session's psql, whose backend crashed, ends at \q (if it is not gone already)
session_end() {
	[ -z "${cs_PID:-}" ] || { echo '\q' >&"${cs[1]}" && wait "$cs_PID"; } 2>/dev/null || true
}
# session SQL: a backend kept open (into $pid) that has run SQL
session() {
	local line
	session_end
	coproc cs { psql -X -q -At 2>/dev/null; }
	printf 'SELECT pg_backend_pid();\n%s\nSELECT '"'"'done'"'"';\n' "$1" >&"${cs[1]}"
	read -r -t 60 pid <&"${cs[0]}" || pid=
	while read -r -t 60 line <&"${cs[0]}"; do [ "$line" = done ] && break; done
}
touch "$TV_LOG.mark"

session "SELECT 1;"
is "$(stat -c %U "/proc/$pid/status")" postgres "a backend that held no secret is dumpable (its /proc files are the server user's)"
is "$(crash "$pid")" 1 "it leaves a core when it crashes: cores are written here"

session "SELECT count(*) FROM tokenvault.auths WHERE tokenvault.access_token(id) IS NOT NULL;"
is "$(stat -c %U "/proc/$pid/status")" root "a backend that opened secrets is not dumpable"
is "$(crash "$pid")" 0 "it leaves no core when it crashes"

session "SELECT tokenvault.complete_authorization(state, 'TVSECRET-co-' || md5(random()::text)) IS NOT NULL FROM flow;"
is "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE client_id = (SELECT id FROM tokenvault.clients WHERE name = 'fault')")" 1 \
	"a backend exchanged a code for tokens"
is "$(stat -c %U "/proc/$pid/status")" root "a backend that exchanged a code is not dumpable"
is "$(crash "$pid")" 0 "it leaves no core when it crashes"

worker() { q -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'tokenvault worker'"; }
worker_up() { [ -n "$(worker)" ]; }
wait_until 60 "the worker is back" worker_up
q -c "SELECT tokenvault.refresh_auth(a.id) FROM tokenvault.auths a JOIN tokenvault.clients c ON c.id = a.client_id
       WHERE c.name = 'fault'" >/dev/null
is "$(curl -sf "$TV_FAULT_URL/_count/ok")" 2 "the provider got two token requests: the code exchanged, then a refresh"
pid=$(worker)
is "$(stat -c %U "/proc/$pid/status")" root "the worker, which sent the refresh, is not dumpable"
is "$(crash "$pid")" 0 "it leaves no core when it crashes"
session_end

done_testing
