#!/usr/bin/env bash
# Rotation cannot lose a secret: a backend that read the key ring before a
# key was added seals with the new key (the newest key id is published in
# shared memory, and a key command's ring is read again), and drop_key()
# waits for transactions that may still have sealed with the old key.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
cluster_start

q -c "CREATE EXTENSION tokenvault" >/dev/null
q -c "SELECT tokenvault.create_client('API', 'api', 'api_key')" >/dev/null
secret() { echo "TVSECRET-rot-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"; }
new_auth() { echo "SELECT tokenvault.create_auth(tokenvault.create_user('$1'), (SELECT id FROM tokenvault.clients), NULL, jsonb_build_object('api_key', '$(secret)'));"; }
key_of() { q -c "SELECT tokenvault._key_id(secret) FROM tokenvault.auths a JOIN tokenvault.users u ON u.id = a.user_id WHERE u.external_user_id = '$1'"; }
all_open() { q -c "SELECT count(*) FILTER (WHERE tokenvault.access_token(id) LIKE 'TVSECRET-rot-%') || '/' || count(*) FROM tokenvault.auths"; }
new_key_line() { printf '%s %s\n' "$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')" "$(od -An -v -N32 -tx1 /dev/urandom | tr -d ' \n')"; }

# 1. With tokenvault.key_command: a long-lived backend learns of a new key.
ring="$TV_TMP/keys/command.ring"
as_server_user cp "$TV_KEYS" "$ring"
old_key=$(awk '/^[0-9]/ {print $1}' "$ring")
q -c "ALTER SYSTEM SET tokenvault.key_command = 'cat $ring'" -c "SELECT pg_reload_conf()" >/dev/null
wait_until 10 "the key command is in force" \
	sh -c "[ \"\$(psql -X -At -c \"SELECT key_id FROM tokenvault.key_ring()\")\" = $old_key ]"

coproc long { psql -X -q -At 2>/dev/null; }
long_pid=$long_PID
new_auth long-1 >&"${long[1]}"
read -r -t 30 _ <&"${long[0]}" || true
is "$(key_of long-1)" "$old_key" "a long-lived backend seals with the only key"

new_key_line | as_server_user tee -a "$ring" >/dev/null
new_key=$(awk '/^[0-9]/ {k = $1} END {print k}' "$ring")
is "$(q -c "SELECT key_id FROM tokenvault.key_ring() WHERE newest")" "$new_key" \
	"another session reads the command's new ring, its last key the newest"
new_auth long-2 >&"${long[1]}"
read -r -t 30 _ <&"${long[0]}" || true
is "$(key_of long-2)" "$new_key" "the long-lived backend now seals with the new key, not the one it read first"

q -c "SELECT tokenvault.rotate_key()" >/dev/null 2>&1
is "$(q -c "SELECT tokenvault.drop_key($old_key)" 2>&1 | grep -c 'seals no secret')" 1 \
	"drop_key() under a key command says the old key seals nothing (the command's output is the administrator's to change)"
as_server_user sed -i "/^$old_key /d" "$ring"
new_auth long-3 >&"${long[1]}"
read -r -t 30 _ <&"${long[0]}" || true
is "$(all_open)" "3/3" "with the old key gone from the command's output, every secret opens"
echo '\q' >&"${long[1]}"
wait "$long_pid" 2>/dev/null || true
# back to a key file, which now holds what the command printed
as_server_user cp "$ring" "$TV_KEYS"
q -c "ALTER SYSTEM RESET tokenvault.key_command" -c "SELECT pg_reload_conf()" >/dev/null
wait_until 10 "the key file is in force again" sh -c "[ -z \"\$(psql -X -At -c 'SHOW tokenvault.key_command')\" ]"

# 2. drop_key() waits for a transaction that sealed with the old key and
#    commits after rotate_key() passed.
first_key=$(q -c "SELECT key_id FROM tokenvault.key_ring() WHERE newest")
coproc sealer { psql -X -q -At 2>/dev/null; }
sealer_pid=$sealer_PID
echo "BEGIN;" >&"${sealer[1]}"
new_auth late-1 >&"${sealer[1]}"
echo "SELECT 'sealed';" >&"${sealer[1]}"
read -r -t 30 _ <&"${sealer[0]}" || true
read -r -t 30 sealed <&"${sealer[0]}" || sealed=none
is "$sealed" sealed "a transaction sealed a secret with the old key and stays open"

second_key=$(q -c "SELECT tokenvault.add_key()")
q -c "SELECT tokenvault.rotate_key()" >/dev/null 2>&1
(if q -c "SELECT tokenvault.drop_key($first_key)" >"$TV_TMP/drop.out" 2>&1; then echo 0; else echo 1; fi >"$TV_TMP/drop.rc") &
dropper=$!
if wait_until 30 "drop_key() waits for the open transaction" \
	sh -c "[ \"\$(psql -X -At -c \"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%drop_key%' AND wait_event = 'virtualxid'\")\" = 1 ]"; then
	ok "drop_key() waits for the transaction that may still seal with the old key"
fi
printf 'COMMIT;\n\\q\n' >&"${sealer[1]}"
wait "$sealer_pid" 2>/dev/null || true
wait "$dropper" || true
is "$(cat "$TV_TMP/drop.rc") $(grep -c "key $first_key still seals 1 secret" "$TV_TMP/drop.out")" "1 1" \
	"once it committed, drop_key() sees its secret and refuses"
q -c "SELECT tokenvault.rotate_key()" >/dev/null 2>&1
is "$(sqlstate "SELECT tokenvault.drop_key($first_key)")" ok "after another rotate_key(), the old key is dropped"
is "$(key_of late-1)" "$second_key" "the late secret is sealed with the new key"
is "$(all_open)" "4/4" "and every secret opens"

is "$(sqlstate "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT tokenvault.drop_key($second_key)")" 25001 \
	"drop_key() refuses a transaction snapshot, which would not see what committed while it waited"

done_testing
