#!/usr/bin/env bash
# No key and no secret in a core dump of a backend that sealed and opened
# secrets: the key ring lives in a page left out of core dumps, OpenSSL's
# key schedule lives only as long as one seal or open, and the plaintexts
# the code owns are wiped when their memory context goes.  The dump is taken
# with gdb's gcore, which leaves out what madvise(MADV_DONTDUMP) marks.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
cluster_start

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
SELECT 'done';
SQL
read -r -t 60 pid <&"${be[0]}" || pid=
out=
while read -r -t 60 line <&"${be[0]}"; do
	out="$out $line"
	[ "$line" = done ] && break
done
is "$out" " 20 t 20 20 done" "a second backend opened twenty secrets and sealed them again under a new key"

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
for what, ns in needles.items():
    print('%s: %d' % (what, sum(n in core for n in ns)))
PY
)
[ -n "${TV_KEEP_CORE:-}" ] || rm -f "$core.$pid"
is "$(grep -c 'key' <<<"$found")" 2 "the scan looked for the keys (two, after add_key)"
is "$found" "a key, raw: 0
a key, hex: 0
a secret: 0
a secret in base64: 0" "the core holds no key and no secret"

done_testing
