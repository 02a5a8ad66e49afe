# The whole run's secret-leak scan: what a test run leaves behind, scanned
# for test secrets in every encoding.  Sourced by test/cluster.sh.
#
# Every secret a test makes up carries the marker TVSECRET, a label, then
# hex digits ('TVSECRET-rt-' || md5(...)).  The marker is letters only, so it
# survives percent-, form- and JSON-encoding as it is; base64 scatters it,
# but at each of the three byte alignments the same ten characters appear
# (VFZTRUNSRV, RWU0VDUkVU, UVlNFQ1JFV, in both alphabets).  So one pattern
# list finds every test secret in every encoding without a test having to
# name its secrets.
#
# test/run-tests.sh sets TV_SCAN_DIR.  Then every cluster a test starts
# leaves its server log(s), its events and auths.last_error of every
# database (kept before dropdb, and when the cluster stops) and the NOTIFY
# payloads its LISTEN sessions captured (listen_start, test/lib.sh) there,
# and the run scans it all at the end (leak_scan).

leak_patterns() {
	printf '%s\n' 'TVSECRET[-a-z]*[0-9a-f]{8}' VFZTRUNSRV RWU0VDUkVU UVlNFQ1JFV
}

# leak_scan FILE...: print where a test secret shows (file:line, not the
# line, which would put it in the test output), fail if one does.
leak_scan() {
	local hits
	hits=$(grep -nEH -f <(leak_patterns) "$@" 2>/dev/null | cut -d: -f1,2)
	[ -z "$hits" ] && return 0
	echo "$hits" | head -n 10
	return 1
}

# leak_file KIND: a new file in TV_SCAN_DIR for the scan to read.
leak_file() { mktemp "$TV_SCAN_DIR/$1.XXXXXX"; }

# leak_keep_db DB: keep DB's events and last errors for the scan.
leak_keep_db() {
	[ -n "${TV_SCAN_DIR:-}" ] || return 0
	psql -X -q -At -d "$1" >"$(leak_file "events.$1")" 2>/dev/null <<'SQL' || true
SELECT payload::text FROM tokenvault.events;
SELECT last_error FROM tokenvault.auths WHERE last_error IS NOT NULL;
SQL
}

# leak_keep_cluster: the same for every database of the running cluster.
leak_keep_cluster() {
	local db
	[ -n "${TV_SCAN_DIR:-}" ] || return 0
	for db in $(psql -X -q -At -d postgres -c "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate" 2>/dev/null); do
		leak_keep_db "$db"
	done
}

# Server logs besides $TV_LOG (a standby's) are added here to be kept too.
TV_SCAN_LOGS=()
leak_keep_logs() {
	local log
	[ -n "${TV_SCAN_DIR:-}" ] || return 0
	for log in "$TV_LOG" "${TV_SCAN_LOGS[@]}"; do
		[ -f "$log" ] && cat "$log" >"$(leak_file "log.$(basename "$log")")"
	done
	TV_SCAN_LOGS=()
}

# A database a test drops takes its events with it: keep them first.
dropdb() {
	local arg db=
	for arg in "$@"; do
		case $arg in -*) ;; *) db=$arg ;; esac
	done
	[ -z "$db" ] || leak_keep_db "$db"
	command dropdb "$@"
}
