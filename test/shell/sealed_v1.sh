#!/usr/bin/env bash
# Secrets sealed before 0.7.0 (format 1, without a key check) still open,
# and rotate_key() re-seals them in the current format.  A format-1 value
# is made here as 0.6.0 made it, with Node's AES-256-GCM, under the test's
# own key.
set -euo pipefail
cd "$(dirname "$0")/../.."
source test/cluster.sh
source test/lib.sh
cluster_start

secret="TVSECRET-v1-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
q -c "CREATE EXTENSION tokenvault" >/dev/null
hook=$(q -c "SELECT tokenvault.add_webhook('https://hooks.invalid/v1', '$secret')")
read -r key_id key_hex < <(awk '/^[0-9]/ {print $1, $2; exit}' "$TV_KEYS")
v1=$(node - "$key_id" "$key_hex" "$hook" "$secret" <<'JS'
const crypto = require('node:crypto');
const [keyId, keyHex, id, plain] = process.argv.slice(2);
const header = Buffer.alloc(17);
header[0] = 1;                                   // format 1: version, key id, nonce
header.writeUInt32BE(Number(keyId), 1);
crypto.randomBytes(12).copy(header, 5);
const c = crypto.createCipheriv('aes-256-gcm', Buffer.from(keyHex, 'hex'), header.subarray(5));
c.setAAD(Buffer.concat([header, Buffer.from('t'), Buffer.from('webhook:' + id)]));
const body = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
console.log('\\x' + Buffer.concat([header, body, c.getAuthTag()]).toString('hex'));
JS
)
q -c "UPDATE tokenvault.webhooks SET secret = '$v1'::bytea WHERE id = '$hook'" >/dev/null
is "$(q -c "SELECT get_byte(secret, 0) FROM tokenvault.webhooks WHERE id = '$hook'")" 1 "a secret sealed in format 1, as before 0.7.0"
is "$(q -c "SELECT tokenvault._open_webhook(secret, id) = '$secret' FROM tokenvault.webhooks WHERE id = '$hook'")" t "  ... opens"
is "$(q -c "SET client_min_messages = warning; SELECT tokenvault.rotate_key()")" 1 "rotate_key() re-seals it"
is "$(q -c "SELECT get_byte(secret, 0) || ' ' || (tokenvault._open_webhook(secret, id) = '$secret') FROM tokenvault.webhooks WHERE id = '$hook'")" "2 true" \
	"  ... in format 2, with a key check, and it still opens"
is "$(q -c "SET client_min_messages = warning; SELECT tokenvault.rotate_key()")" 0 "  ... once"

done_testing
