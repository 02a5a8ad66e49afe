#!/usr/bin/env bash
# Run every benchmark, bench/*.sh other than this one, in turn; `make bench`
# builds and installs the extension first.  Each benchmark prints its result
# as its last line; those lines are repeated at the end.  Fails if any
# benchmark fails (a missed target is not a failure).
set -uo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp -d "${TMPDIR:-/tmp}/tokenvault-bench.XXXXXX")
trap 'rm -rf "$out"' EXIT

failed=()
results=()
for b in bench/*.sh; do
	case $b in bench/run.sh | bench/lib.sh) continue ;; esac
	name=$(basename "$b" .sh)
	echo "=== $b"
	start=$(date +%s)
	bash "$b" 2>&1 | tee "$out/$name.out"
	rc=${PIPESTATUS[0]}
	took=$(($(date +%s) - start))
	if [ "$rc" = 0 ]; then
		results+=("$(tail -n 1 "$out/$name.out")  [${took}s]")
	else
		failed+=("$b")
		results+=("$name: FAILED (exit status $rc)  [${took}s]")
	fi
done

echo
echo "=== results"
printf '%s\n' "${results[@]}"
if [ ${#failed[@]} -gt 0 ]; then
	echo "failed: ${failed[*]}" >&2
	exit 1
fi
