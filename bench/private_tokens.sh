#!/usr/bin/env bash
# Benchmark: get_private_token() and list_private_tokens(related_id) for one
# role holding 100 000 tokens, against the same tokens in a plaintext table,
# first with that role's tokens alone in the store, then among 1 000 000
# (nine other roles holding 100 000 each).
#
# The role's tokens: 1 000 related ids of 100 keys, 64-character values.  A
# get reads one token; a list reads one related id's 100.  Each workload is
# run with pgbench as that role (prepared statements, 2 clients) three times,
# interleaved, and the median TPS of each is compared.  The last line
# printed is the result:
#   private_tokens: get <x> of plaintext TPS (target >= 0.8), list <y> (target >= 0.5);
#   list among 1 000 000 tokens at <a> of its speed among 100 000, plaintext at <b>: <a/b> (target >= 0.9)
# The last figure says whether the list slows down with the other roles'
# tokens more than reading a plaintext table does (a bigger index is a
# little slower for both).
#
# Exit status is 0 whether or not a target is met; non-zero means something
# broke (setup failed, pgbench failed, a value did not round-trip).
#
# Tunables (environment): BENCH_SECONDS (10), BENCH_RUNS (3).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
RUNS=${BENCH_RUNS:-3}

source bench/lib.sh
pgbench_cluster

# load ROLE...: 100 000 tokens for each role, sealed into the store and in
# plaintext into the baseline table, written straight in (the put function
# would take minutes for a million; it seals the same way).
load() {
	local r
	for r in "$@"; do
		psql_q -v role="$r" <<'SQL'
INSERT INTO tokenvault.private_tokens (owner, owner_name, related_id, key, value)
    SELECT tokenvault._role(:'role'), :'role', 'rel-' || r, 'key-' || k,
           tokenvault._seal_private(v, :'role', 'rel-' || r, 'key-' || k)
      FROM generate_series(1, 1000) r, generate_series(1, 100) k,
           LATERAL (SELECT md5(r || ':' || k || :'role') || md5(k || ':' || r) AS v) x;
INSERT INTO plain_tokens
    SELECT :'role', 'rel-' || r, 'key-' || k, md5(r || ':' || k || :'role') || md5(k || ':' || r)
      FROM generate_series(1, 1000) r, generate_series(1, 100) k;
SQL
	done
	psql_q -c 'VACUUM (ANALYZE)' -c 'CHECKPOINT'
}

echo "== private_tokens: 100 000 tokens of one role"
psql_q <<'SQL'
CREATE EXTENSION tokenvault;
CREATE ROLE bench_tok_0 LOGIN IN ROLE tokenvault_app;
SELECT tokenvault.admit('bench_tok_0', 'app');
CREATE TABLE plain_tokens (owner name, related_id text, key text, value text NOT NULL,
                           PRIMARY KEY (owner, related_id, key));
GRANT SELECT ON plain_tokens TO bench_tok_0;
SQL
load bench_tok_0

# Both stores hold the same values, checked through the role's own functions.
check() {
	local bad
	bad=$(PGUSER=bench_tok_0 psql_q -At <<'SQL'
SELECT (SELECT count(*) FROM plain_tokens p
         WHERE p.owner = current_user AND p.related_id IN ('rel-1', 'rel-500', 'rel-1000')
           AND tokenvault.get_private_token(p.related_id, p.key) IS DISTINCT FROM p.value)
     + (SELECT count(*) FROM tokenvault.list_private_tokens('rel-77') l
         FULL JOIN (SELECT * FROM plain_tokens WHERE owner = current_user AND related_id = 'rel-77') p USING (related_id, key)
        WHERE l.value IS DISTINCT FROM p.value);
SQL
)
	if [ "$bad" != 0 ]; then
		echo "private_tokens: $bad value(s) do not round-trip; not benchmarking" >&2
		exit 1
	fi
}
check

# The workloads, as the role: one token by related id and key, or one
# related id's 100 tokens, from the store or from the plaintext table.
cat >"$work/plain_get.sql" <<'SQL'
\set r random(1, 1000)
\set k random(1, 100)
SELECT value FROM plain_tokens WHERE owner = current_user AND related_id = 'rel-' || :r AND key = 'key-' || :k;
SQL
cat >"$work/tv_get.sql" <<'SQL'
\set r random(1, 1000)
\set k random(1, 100)
SELECT tokenvault.get_private_token('rel-' || :r, 'key-' || :k);
SQL
cat >"$work/plain_list.sql" <<'SQL'
\set r random(1, 1000)
SELECT related_id, key, value FROM plain_tokens WHERE owner = current_user AND related_id = 'rel-' || :r
 ORDER BY related_id, key;
SQL
cat >"$work/tv_list.sql" <<'SQL'
\set r random(1, 1000)
SELECT * FROM tokenvault.list_private_tokens('rel-' || :r);
SQL
workloads="plain_get tv_get plain_list tv_list"

declare -A alone
PGUSER=bench_tok_0 pgbench_compare "private_tokens (100 000 in all)" "$RUNS" "$SECONDS_PER_RUN" $workloads
for w in $workloads; do alone[$w]=${med[$w]}; done

echo "== private_tokens: 900 000 more, of nine other roles"
others=()
for i in $(seq 1 9); do
	psql_q -c "CREATE ROLE bench_tok_$i IN ROLE tokenvault_app" -c "SELECT tokenvault.admit('bench_tok_$i', 'app')"
	others+=("bench_tok_$i")
done
load "${others[@]}"
check
PGUSER=bench_tok_0 pgbench_compare "private_tokens (1 000 000 in all)" "$RUNS" "$SECONDS_PER_RUN" $workloads

declare -A among
for w in $workloads; do among[$w]=${med[$w]}; done
# The store's list among 1 000 000 tokens against its speed among 100 000,
# over the same for the plaintext table: a bigger index costs both alike,
# a list that read the other roles' tokens would fall far behind.
awk -v tg="${among[tv_get]}" -v pg="${among[plain_get]}" -v tl="${among[tv_list]}" -v pl="${among[plain_list]}" \
	-v tl0="${alone[tv_list]}" -v pl0="${alone[plain_list]}" 'BEGIN {
	printf "private_tokens: get %.2f of plaintext TPS (target >= 0.8), list %.2f (target >= 0.5); list among 1 000 000 tokens at %.2f of its speed among 100 000, plaintext at %.2f: %.2f (target >= 0.9)\n",
		tg / pg, tl / pl, tl / tl0, pl / pl0, (tl / tl0) / (pl / pl0)
}'
