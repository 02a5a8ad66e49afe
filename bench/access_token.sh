#!/usr/bin/env bash
# Benchmark: tokenvault.access_token() against two baselines,
#   plaintext: the same tokens in an ordinary table, and
#   pgcrypto:  the same tokens sealed with pgp_sym_encrypt (its default,
#              iterated-and-salted passphrase key derivation).
#
# 10 000 oauth2 auths are loaded, each workload is run with pgbench
# (prepared statements, 2 clients, 20 s) three times, interleaved, and the
# median TPS of each is compared.  The last line printed is the result:
#   access_token: <x> of plaintext TPS (target >= 0.8), <y>x pgcrypto (target >= 3)
#
# Exit status is 0 whether or not a target is met; non-zero means something
# broke (setup failed, pgbench failed, a token did not round-trip, or a
# token leaked into the output or the server log).
#
# Tunables (environment): BENCH_SECONDS (20), BENCH_RUNS (3), BENCH_AUTHS
# (10000).  BENCH_DIAG=1 adds two workloads that are not part of the result:
# select_id (the n -> id lookup and the round trip alone, no token) and
# plain_by_n (plaintext found by n, skipping the lookup by id).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${BENCH_SECONDS:-20}
RUNS=${BENCH_RUNS:-3}
AUTHS=${BENCH_AUTHS:-10000}
USERS=100					# a few users, AUTHS / USERS auths each

source bench/lib.sh
pgbench_cluster

# The passphrase for pgcrypto is made up now and never printed; it reaches
# the server only inside the pgbench script file, in the private directory.
pass=$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')

echo "== access_token: loading $AUTHS auths"
load_start=$(date +%s)
# Tokens are made up in SQL and carry the marker TVSECRET, so the scan at the
# end can tell a leak.  The marker is spelled in two halves here so that this
# statement text, if it were ever logged, is not mistaken for a leak.
# The passphrase goes to psql on stdin, not on its command line.
{ printf '\\set pass %s\n' "$pass"; cat; } <<'SQL' | psql_q -v auths="$AUTHS" -v users="$USERS"
CREATE EXTENSION tokenvault;
CREATE EXTENSION pgcrypto;

CREATE TEMP TABLE src AS
    SELECT n, 'TVSEC' || 'RET-' || md5(random()::text || n) AS token
      FROM generate_series(1, :auths) n;

CREATE TEMP TABLE bench_users AS
    SELECT u, tokenvault.create_user('bench-user-' || u) AS user_id
      FROM generate_series(0, :users - 1) u;

SELECT tokenvault.create_client('Bench', 'bench', 'oauth2',
       '{"client_id":"bench","auth_url":"https://example.invalid/a","token_url":"https://example.invalid/t"}')
       AS client_id \gset

-- n -> auth id: how each workload picks its row.  The tokens live 30 days,
-- beyond tokenvault.expiry_notice (7 days): a shorter life would have the
-- worker write an auth.expiring notice into every row after the VACUUM
-- below, and the reads would be measured through 10 000 dead row versions.
CREATE TABLE bench_ids (n int PRIMARY KEY, id uuid NOT NULL UNIQUE);
INSERT INTO bench_ids
    SELECT s.n, tokenvault.create_auth(bu.user_id, :'client_id', NULL,
                                       jsonb_build_object('access_token', s.token, 'expires_in', 2592000))
      FROM src s JOIN bench_users bu ON bu.u = s.n % :users
     ORDER BY s.n;

-- The baselines hold the same tokens under the same ids.
CREATE TABLE bench_plain (id uuid PRIMARY KEY, token text NOT NULL);
INSERT INTO bench_plain SELECT b.id, s.token FROM bench_ids b JOIN src s USING (n);

CREATE TABLE bench_pgcrypto (id uuid PRIMARY KEY, token bytea NOT NULL);
INSERT INTO bench_pgcrypto SELECT b.id, pgp_sym_encrypt(s.token, :'pass') FROM bench_ids b JOIN src s USING (n);
SQL

# Check that all three hold the same tokens before timing anything.  Only
# counts are printed.  pgcrypto's key derivation is slow, so it is sampled.
bad=$({ printf '\\set pass %s\n' "$pass"; cat; } <<'SQL' | psql_q -At
SELECT (SELECT count(*) FROM bench_ids b LEFT JOIN bench_plain p USING (id)
         WHERE tokenvault.access_token(b.id) IS DISTINCT FROM p.token
            OR p.token NOT LIKE 'TVSEC' || 'RET-%')
     + (SELECT count(*) FROM bench_ids b JOIN bench_plain p USING (id) LEFT JOIN bench_pgcrypto c USING (id)
         WHERE b.n % 20 = 0 AND pgp_sym_decrypt(c.token, :'pass') IS DISTINCT FROM p.token)
     + (SELECT abs(count(*) - (SELECT count(*) FROM bench_ids)) FROM tokenvault.auths);
SQL
)
if [ "$bad" != 0 ]; then
	echo "access_token: $bad token(s) do not round-trip; not benchmarking" >&2
	exit 1
fi
psql_q -c 'VACUUM (ANALYZE)' -c 'CHECKPOINT'
echo "loaded and checked in $(($(date +%s) - load_start)) s"

# The workloads.  An application holds the auth id and asks for its token:
#   plain       SELECT token FROM <its table> WHERE id = $1
#   tokenvault  SELECT tokenvault.access_token($1)
#   pgcrypto    SELECT pgp_sym_decrypt(token, $2) FROM <its table> WHERE id = $1
# pgbench cannot make up a uuid, so every workload first turns a random n
# into an id through the same primary-key lookup in bench_ids, in the same
# statement (one prepared statement, one round trip each).  That step costs
# the same in all three, so what differs is only how the token is fetched
# by id: the plaintext and pgcrypto tables are looked up by their uuid
# primary key, and access_token() looks the auth up itself.  (Giving the
# baseline tables an n column instead would let them skip the lookup by id
# that tokenvault still makes, which flatters the baselines by one index
# lookup; BENCH_DIAG=1 also runs that "plain_by_n" variant.)  pgbench
# does not print results.
cat >"$work/plain.sql" <<SQL
\set n random(1, $AUTHS)
SELECT p.token FROM bench_ids b JOIN bench_plain p ON p.id = b.id WHERE b.n = :n;
SQL
cat >"$work/tokenvault.sql" <<SQL
\set n random(1, $AUTHS)
SELECT tokenvault.access_token(b.id) FROM bench_ids b WHERE b.n = :n;
SQL
# The passphrase is a literal in the prepared statement: as cheap as a bind
# parameter, and it keeps it off pgbench's command line.
(umask 077 && cat >"$work/pgcrypto.sql") <<SQL
\set n random(1, $AUTHS)
SELECT pgp_sym_decrypt(c.token, '$pass') FROM bench_ids b JOIN bench_pgcrypto c ON c.id = b.id WHERE b.n = :n;
SQL
# Diagnostics: the n -> id step alone, and plaintext found by n directly.
cat >"$work/select_id.sql" <<SQL
\set n random(1, $AUTHS)
SELECT b.id FROM bench_ids b WHERE b.n = :n;
SQL
cat >"$work/plain_by_n.sql" <<SQL
\set n random(1, $AUTHS)
SELECT token FROM bench_plain_by_n WHERE n = :n;
SQL

workloads="plain tokenvault pgcrypto"
if [ -n "${BENCH_DIAG:-}" ]; then
	workloads="$workloads select_id plain_by_n"
	psql_q -c 'CREATE TABLE bench_plain_by_n (n int PRIMARY KEY, token text NOT NULL)' \
		-c 'INSERT INTO bench_plain_by_n SELECT b.n, p.token FROM bench_ids b JOIN bench_plain p USING (id)' \
		-c 'VACUUM (ANALYZE) bench_plain_by_n'
fi

pgbench_compare access_token "$RUNS" "$SECONDS_PER_RUN" $workloads

# No token may show up in what pgbench wrote or in the server log.
if grep -l TVSECRET "$work"/*.log "$TV_LOG" >&2; then
	echo "access_token: the marker TVSECRET shows up in the files above: a token leaked" >&2
	exit 1
fi

awk -v tv="${med[tokenvault]}" -v plain="${med[plain]}" -v pgc="${med[pgcrypto]}" 'BEGIN {
	printf "access_token: %.2f of plaintext TPS (target >= 0.8), %.1fx pgcrypto (target >= 3)\n", tv / plain, tv / pgc
}'
