#!/usr/bin/env bash
# Benchmark: tokenvault.user_instances() against a hand-written join that
# builds the same document from the same tables.
#
# 10 000 users, each with 5 auths and 50 instances of 5 auth slots (10
# solutions): 500 000 instances, 2 500 000 auth values.  Each workload asks
# for a random user's document with pgbench (prepared statements, 2
# clients, 20 s) three times, interleaved, and the median TPS of each is
# compared.  The last line printed is the result:
#   user_instances: <x> of the hand-written join's TPS (target >= 0.8)
#
# Exit status is 0 whether or not the target is met; non-zero means something
# broke (setup failed, pgbench failed, the two documents differ).
#
# Tunables (environment): BENCH_SECONDS (20), BENCH_RUNS (3), BENCH_USERS
# (10000), BENCH_INSTANCES (50 per user).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${BENCH_SECONDS:-20}
RUNS=${BENCH_RUNS:-3}
USERS=${BENCH_USERS:-10000}
INSTANCES=${BENCH_INSTANCES:-50}

source bench/lib.sh
pgbench_cluster

echo "== user_instances: loading $USERS users with $INSTANCES instances of 5 slots each"
load_start=$(date +%s)
psql_q -v users="$USERS" -v instances="$INSTANCES" <<'SQL'
CREATE EXTENSION tokenvault;
-- Users, clients and solutions go through the API; auths are written
-- straight in, with a sealed empty credential that nothing here opens.
CREATE TABLE bench_users (n int PRIMARY KEY, id uuid NOT NULL);
INSERT INTO bench_users SELECT n, tokenvault.create_user('bench-' || n) FROM generate_series(1, :users) n;
CREATE TABLE bench_clients AS
    SELECT s, tokenvault.create_client('Service ' || s, 'svc' || s, 'api_key') AS id FROM generate_series(1, 5) s;
INSERT INTO tokenvault.auths (user_id, client_id, name, service, secret)
    SELECT u.id, c.id, 'svc' || c.s || ' of ' || u.n, 'svc' || c.s, tokenvault._seal_auth('{}', u.id)
      FROM bench_users u, bench_clients c ORDER BY u.n, c.s;
CREATE TABLE bench_solutions AS
    SELECT k, tokenvault.create_solution('Solution ' || k) AS id FROM generate_series(0, 9) k;
SELECT count(tokenvault.add_slot(sol.id, 'slot_' || c.s, 'auth', jsonb_build_object('service', 'svc' || c.s)))
  FROM bench_solutions sol, bench_clients c;
-- The 2.5 million values are written straight into the tables with the
-- triggers off (session_replication_role): made to fit the rules, they are
-- checked below against the rules' own query.
SET session_replication_role = replica;
INSERT INTO tokenvault.instances (solution_id, owner, name, enabled, created_at)
    SELECT sol.id, u.id, 'instance ' || i || ' of ' || u.n, true, now() + i * interval '1 ms'
      FROM bench_users u, generate_series(1, :instances) i, bench_solutions sol
     WHERE sol.k = i % 10 ORDER BY u.n, i;
INSERT INTO tokenvault.instance_auth_values (instance_id, solution_id, external_id, auth_id)
    SELECT i.id, i.solution_id, s.external_id, a.id
      FROM tokenvault.instances i
      JOIN tokenvault.slots s ON s.solution_id = i.solution_id
      JOIN tokenvault.auths a ON a.user_id = i.owner AND a.service = s.service;
RESET session_replication_role;
SQL

# Statistics first: without them the planner reads all 2.5 million values
# for one user.
psql_q -c 'VACUUM (ANALYZE)' -c 'CHECKPOINT'

# Every value fits its slot and owner, and the two workloads give the same
# document, before anything is timed.
bad=$(psql_q -At <<'SQL'
SELECT (SELECT count(*) FROM tokenvault.instance_auth_values v
          JOIN tokenvault.instances i ON i.id = v.instance_id JOIN tokenvault.auths a ON a.id = v.auth_id
          JOIN tokenvault.slots s ON s.solution_id = v.solution_id AND s.external_id = v.external_id
         WHERE a.user_id <> i.owner OR a.service <> s.service OR i.solution_id <> v.solution_id)
     + (SELECT count(*) FROM bench_users u WHERE u.n % 50 = 0 AND tokenvault.user_instances(u.id) IS DISTINCT FROM (
            SELECT jsonb_build_object(
                'solutionInstances', coalesce(jsonb_agg(x.doc ORDER BY x.created_at, x.id), '[]'),
                'authentications', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', a.id, 'name', a.name)
                                                              ORDER BY a.created_at, a.id), '[]')
                                      FROM tokenvault.auths a WHERE a.user_id = u.id))
              FROM (SELECT i.id, i.created_at, jsonb_build_object('id', i.id, 'name', i.name, 'authValues',
                               jsonb_agg(jsonb_build_object('externalId', v.external_id, 'authId', v.auth_id)
                                         ORDER BY v.external_id)) AS doc
                      FROM tokenvault.instances i JOIN tokenvault.instance_auth_values v ON v.instance_id = i.id
                     WHERE i.owner = u.id GROUP BY i.id) x))
     + (SELECT count(*) FROM (SELECT i.id, i.solution_id FROM tokenvault.instances i
                                JOIN bench_users u ON u.id = i.owner WHERE u.n % 50 = 0 OFFSET 0) i
         WHERE tokenvault._unfilled_slots(i.id, i.solution_id) IS NOT NULL);
SQL
)
if [ "$bad" != 0 ]; then
	echo "user_instances: $bad check(s) failed; not benchmarking" >&2
	exit 1
fi
echo "loaded and checked in $(($(date +%s) - load_start)) s"

# The workloads.  Both turn a random n into a user id by the same primary
# key lookup, in the same statement, then build the document:
#   tokenvault  tokenvault.user_instances(id)
#   join        instances joined to their auth values, grouped, plus the
#               user's auths: what an application would write by hand
cat >"$work/tokenvault.sql" <<SQL
\set n random(1, $USERS)
SELECT tokenvault.user_instances(u.id) FROM bench_users u WHERE u.n = :n;
SQL
cat >"$work/join.sql" <<SQL
\set n random(1, $USERS)
SELECT jsonb_build_object(
    'solutionInstances', coalesce(jsonb_agg(x.doc ORDER BY x.created_at, x.id), '[]'),
    'authentications', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', a.id, 'name', a.name)
                                                  ORDER BY a.created_at, a.id), '[]')
                          FROM tokenvault.auths a WHERE a.user_id = (SELECT id FROM bench_users WHERE n = :n)))
  FROM (SELECT i.id, i.created_at, jsonb_build_object('id', i.id, 'name', i.name, 'authValues',
                   jsonb_agg(jsonb_build_object('externalId', v.external_id, 'authId', v.auth_id)
                             ORDER BY v.external_id)) AS doc
          FROM tokenvault.instances i JOIN tokenvault.instance_auth_values v ON v.instance_id = i.id
         WHERE i.owner = (SELECT id FROM bench_users WHERE n = :n) GROUP BY i.id) x;
SQL

workloads="join tokenvault"
pgbench_compare user_instances "$RUNS" "$SECONDS_PER_RUN" $workloads

awk -v tv="${med[tokenvault]}" -v join="${med[join]}" 'BEGIN {
	printf "user_instances: %.2f of the hand-written join'"'"'s TPS (target >= 0.8)\n", tv / join
}'
