#!/usr/bin/env bash
# Keys live apart from the data: with the settings at their defaults nothing
# writes a key into the data directory (the old default did, and every base
# backup and replica carried it), and a base backup of a cluster whose key
# file is elsewhere holds no key material.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
TV_EXTRA_CONF="tokenvault.key_file = ''" cluster_start

q -c "CREATE EXTENSION tokenvault" >/dev/null
q -c "SELECT tokenvault.create_client('API', 'api', 'api_key')" >/dev/null
token="TVSECRET-loc-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
seal="SELECT tokenvault.create_auth(tokenvault.create_user('u-' || md5(random()::text)), (SELECT id FROM tokenvault.clients), NULL, jsonb_build_object('api_key', '$token'))"

is "$(sqlstate "$seal")" F0000 "with no key file set, sealing is refused with an error saying so"
is "$(find "$TV_DATA" -newer "$TV_DATA/PG_VERSION" -type f -exec grep -lE '^[0-9]+ [0-9a-f]{64}' {} + 2>/dev/null | wc -l)" 0 \
	"and no key file was created in the data directory"

# where 0.6.0 kept it, the error says so (and still does not read it)
as_server_user sh -c "umask 077; : >'$TV_DATA/tokenvault.keys'"
is "$(psql -X -At -c "$seal" 2>&1 | grep -c 'key file of tokenvault 0.6.0 and earlier is')" 1 \
	"a key file left where 0.6.0 kept it is pointed at, to be moved out"
rm -f "$TV_DATA/tokenvault.keys"

q -c "ALTER SYSTEM SET tokenvault.key_file = '$TV_KEYS'" -c "SELECT pg_reload_conf()" >/dev/null
wait_until 10 "the key file setting is in force" sh -c "[ \"\$(psql -X -At -c 'SHOW tokenvault.key_file')\" = '$TV_KEYS' ]"
is "$(sqlstate "$seal")" ok "with tokenvault.key_file outside the data directory, secrets are sealed"
is "$(q -c "SELECT count(*) FROM tokenvault.auths WHERE tokenvault.access_token(id) = '$token'")" 1 "and open"

backup="$TV_TMP/backup"
as_server_user pg_basebackup -c fast -D "$backup" -X fetch --no-sync >/dev/null
# the key as hex (as in the file) and raw (as in memory)
found=$(python3 - "$backup" "$TV_KEYS" <<'PY'
import os, sys
hexkey = [l.split()[1] for l in open(sys.argv[2]) if l[:1].isdigit()][0]
needles = [hexkey.encode(), bytes.fromhex(hexkey)]
hits = 0
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        with open(os.path.join(root, f), 'rb') as fh:
            data = fh.read()
        hits += sum(n in data for n in needles)
print(hits)
PY
)
is "$found" 0 "a base backup holds no key, neither in hex nor raw"

done_testing
