# Helpers for the shell-driven tests: TAP-style checks and bounded waits.
# Source after test/cluster.sh.  A check prints "ok - ..." or "not ok - ...";
# done_testing exits non-zero if any check failed.

TV_FAILED=0

ok() { echo "ok - $*"; }
not_ok() {
	echo "not ok - $*"
	TV_FAILED=$((TV_FAILED + 1))
}

# is GOT WANT DESCRIPTION.  GOT and WANT are printed on failure: compare
# digests or booleans, never a token.
is() {
	if [ "$1" = "$2" ]; then
		ok "$3"
	else
		not_ok "$3"
		printf '#      got: %s\n#     want: %s\n' "$1" "$2"
	fi
}

# q [psql args] SQL on stdin or -c: unaligned, tuples only, stops at the first error.
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# sqlstate SQL: run it, print the SQLSTATE it failed with, or "ok".
sqlstate() {
	local out
	if out=$(psql -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c "$1" 2>&1); then
		echo ok
	else
		sed -n 's/^[^:]*:  *\([0-9A-Z]\{5\}\): .*/\1/p' <<<"$out" | head -n 1
	fi
}

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s until it
# succeeds; fail the check (and return 1) when SECONDS pass first.
wait_until() {
	local limit=$1 what=$2 deadline
	shift 2
	deadline=$(($(date +%s%N) + limit * 1000000000))
	until "$@" >/dev/null 2>&1; do
		if [ "$(date +%s%N)" -gt "$deadline" ]; then
			not_ok "$what (not within ${limit} s)"
			return 1
		fi
		sleep 0.1
	done
}

# stays_zero SECONDS DESCRIPTION COMMAND...: run COMMAND (which prints a
# count of what must not be) about once a second for SECONDS; the check
# fails if any run printed more than 0.  (For a property over time, where
# wait_until is for a condition reached once.)
stays_zero() {
	local secs=$1 what=$2 checks=0 bad=0 n deadline
	shift 2
	deadline=$(($(date +%s) + secs))
	while [ "$(date +%s)" -lt "$deadline" ]; do
		n=$("$@")
		checks=$((checks + 1))
		[ "$n" = 0 ] || { bad=$((bad + 1)); echo "# check $checks: $n"; }
		sleep 1
	done
	is "$bad" 0 "$what, at each of $checks checks over $secs s"
}

# millis: a clock in milliseconds, to time what must be quick.
millis() { echo $(($(date +%s%N) / 1000000)); }

# listen_start [psql args]: a LISTEN tokenvault session, psql on a fifo,
# writing what it hears to $TV_LISTEN_OUT (kept for the run's leak scan);
# listen_poke makes it print what has arrived, listen_stop ends it.
listen_start() {
	local fifo
	fifo=$(mktemp -u "$TV_TMP/listen.XXXXXX")
	TV_LISTEN_OUT=$(if [ -n "${TV_SCAN_DIR:-}" ]; then leak_file notify; else mktemp "$TV_TMP/notify.XXXXXX"; fi)
	mkfifo "$fifo"
	psql -X -q -At "$@" <"$fifo" >"$TV_LISTEN_OUT" 2>&1 &
	TV_LISTEN_PID=$!
	exec 7>"$fifo"
	echo "LISTEN tokenvault;" >&7
}
listen_poke() { echo "SELECT 1;" >&7; }
# listen_stop: end the session once it has printed everything.
listen_stop() {
	listen_poke
	exec 7>&-
	wait "$TV_LISTEN_PID" 2>/dev/null || true
}

done_testing() {
	[ "$TV_FAILED" = 0 ] || echo "# $TV_FAILED check(s) failed"
	exit $((TV_FAILED > 0))
}
