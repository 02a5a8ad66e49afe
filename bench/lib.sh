# Helpers for the benchmarks (sourced, not run: bench/run.sh skips it).

# median: the median of the numbers on stdin, one per line or space-separated.
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# run_pgbench WORKLOAD SECONDS TAG: one run of $work/WORKLOAD.sql (pgbench
# -M prepared, 2 clients), its log kept as $work/WORKLOAD.TAG.log; prints
# its TPS, or fails when pgbench reports an error.
run_pgbench() {
	local w=$1 secs=$2 log="$work/$1.$3.log"
	if ! pgbench -n -M prepared -c 2 -j 2 -T "$secs" -f "$work/$w.sql" >"$log" 2>&1; then
		echo "pgbench failed on $w:" >&2
		cat "$log" >&2
		return 1
	fi
	if grep -qiE 'aborted|error' "$log" || ! grep -q '^number of failed transactions: 0' "$log"; then
		echo "pgbench reported errors on $w:" >&2
		cat "$log" >&2
		return 1
	fi
	sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$log"
}

# pgbench_compare NAME RUNS SECONDS WORKLOAD...: a short warm-up of each
# workload (caches, hint bits), then RUNS runs of each, interleaved so that
# a slow minute of the machine falls on all of them; prints every run and
# a table, and leaves each workload's median TPS in med[WORKLOAD].
pgbench_compare() {
	local name=$1 runs=$2 secs=$3 w r t
	shift 3
	declare -gA med
	local -A tps
	for w in "$@"; do
		run_pgbench "$w" 3 warmup >/dev/null
	done
	echo "== $name: $runs x ${secs}s per workload, interleaved (pgbench -M prepared -c 2 -j 2)"
	for r in $(seq 1 "$runs"); do
		for w in "$@"; do
			t=$(run_pgbench "$w" "$secs" "$r")
			[ -n "$t" ] || { echo "no TPS for $w run $r" >&2; return 1; }
			t=$(printf '%.1f' "$t")
			tps[$w]="${tps[$w]:-} $t"
			printf '  run %d  %-10s %10s tps\n' "$r" "$w" "$t"
		done
	done
	echo
	printf '%-12s %12s   %s\n' workload "median tps" "each run"
	for w in "$@"; do
		med[$w]=$(echo "${tps[$w]}" | median)
		printf '%-12s %12.1f  %s\n' "$w" "${med[$w]}" "${tps[$w]}"
	done
	echo
}

# pgbench_cluster: a throwaway cluster for a read benchmark, and $work, a
# private scratch directory in it (scripts, pgbench logs) that goes with it.
# The tables are loaded once and then only read: autovacuum would have
# nothing to do but wake up in the middle of a run, so it is off.
pgbench_cluster() {
	export TV_EXTRA_CONF="autovacuum = off"
	source test/cluster.sh
	cluster_start
	work="$TV_TMP/bench"
	mkdir -m 700 "$work"
}

psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
