#!/usr/bin/env bash
# Run every test against a throwaway cluster, which is stopped however this ends.
#   pg_regress (test/sql/, test/expected/), pgTAP (test/pgtap/, by pg_prove), shell-driven
#   tests (test/shell/*.sh), then a scan for test secrets in every encoding of
#   what every cluster of the run left behind (server logs, events, NOTIFY
#   payloads) and of the test output (test/leaks.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
source test/cluster.sh

# Statements that fail on purpose in pg_regress carry secrets as literals;
# PostgreSQL itself would log them (see README, "Keeping secrets out of the
# log").  What is checked here is that tokenvault never logs one.
# The test peers speak plain http on loopback (but one, which checks TLS);
# a short timeout keeps the hanging-peer cases quick.
TV_EXTRA_CONF="log_min_error_statement = panic
tokenvault.http_timeout = 5"
cluster_start || exit 1
# what every cluster of the run leaves behind, for the leak scan (test/leaks.sh)
export TV_SCAN_DIR="$TV_TMP/scan"
mkdir -p "$TV_SCAN_DIR"

passed=0
failed=0
failures=()
count() { if [ "$1" = 0 ]; then passed=$((passed + $2)); else failed=$((failed + ${3:-1})); fi; }

echo "== pg_regress"
rm -rf test/results test/regression.diffs test/regression.out
make -s installcheck 2>&1 | tee "$TV_TMP/regress.out"
rc=${PIPESTATUS[0]}
n=$(grep -cE '^(test|ok) .* ok ' "$TV_TMP/regress.out")
count $rc "$n" "$(grep -cE '^(test|not ok) .* FAILED' "$TV_TMP/regress.out")"
[ $rc = 0 ] || { cat test/regression.diffs 2>/dev/null; failures+=("pg_regress: $(grep -E 'FAILED' "$TV_TMP/regress.out" | tr -s ' ' | tr '\n' ';')"); }

echo "== pgTAP"
createdb tokenvault_tap && psql -X -q -d tokenvault_tap -c 'CREATE EXTENSION pgtap; CREATE EXTENSION tokenvault;' || exit 1
pg_prove -d tokenvault_tap test/pgtap/*.sql | tee "$TV_TMP/prove.out"
rc=${PIPESTATUS[0]}
n=$(sed -n 's/.*Tests=\([0-9]*\).*/\1/p' "$TV_TMP/prove.out")
count $rc "${n:-0}"
[ $rc = 0 ] || failures+=("pgTAP: $(grep -E '^test/pgtap.*(Failed|Dubious)|^Failed' "$TV_TMP/prove.out" | tr '\n' ';')")

for t in test/shell/*.sh; do
	[ -e "$t" ] || continue
	echo "== $t"
	bash "$t" 2>&1 | tee "$TV_TMP/this.out"
	rc=${PIPESTATUS[0]}
	cat "$TV_TMP/this.out" >>"$TV_TMP/shell.out"
	# each "ok" line is a check; a script that fails counts at least once
	n=$(grep -c '^ok ' "$TV_TMP/this.out")
	bad=$(grep -c '^not ok ' "$TV_TMP/this.out")
	[ "$rc" = 0 ] || [ "$bad" -gt 0 ] || bad=1
	passed=$((passed + n))
	failed=$((failed + bad))
	[ "$bad" = 0 ] || failures+=("$t (exit $rc): $(grep -m3 '^not ok ' "$TV_TMP/this.out" | tr '\n' ';')")
done

echo "== no secret in any encoding in a server log, events, NOTIFY payloads or test output"
leak_keep_cluster
leak_keep_logs
if leak_scan "$TV_SCAN_DIR"/* test/results/*.out "$TV_TMP/prove.out" "$TV_TMP/shell.out"; then
	count 0 1
else
	count 1 0
	failures+=("the leak scan")
fi

# CI shows only the end of the output: name what failed there
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
