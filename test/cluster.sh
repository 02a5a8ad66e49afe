# Throwaway PostgreSQL 15 cluster for tests, the demo and benchmarks.
# Source this file, then: cluster_start; ...; (cluster_stop runs on exit).
# tv_at_exit CMD runs CMD on exit too, before what was registered earlier.
# After cluster_start, PGHOST/PGPORT/PGUSER point at the new cluster,
# TV_DATA is its data directory and TV_KEYS its key file, which lives outside
# the data directory as the README recommends and is made here, at test time.  Under test/run-tests.sh, what a cluster
# leaves behind is kept for the run's leak scan as it stops (test/leaks.sh).

source "$(dirname "${BASH_SOURCE[0]}")/leaks.sh"

PG_BINDIR=${PG_BINDIR:-$(/usr/lib/postgresql/15/bin/pg_config --bindir)}
export PATH="$PG_BINDIR:$PATH"

TV_AT_EXIT=()
tv_at_exit() {
	TV_AT_EXIT=("$1" "${TV_AT_EXIT[@]}")
	trap tv_run_at_exit EXIT
}
tv_run_at_exit() {
	local cmd
	for cmd in "${TV_AT_EXIT[@]}"; do $cmd; done
	TV_AT_EXIT=()
}

# The server refuses to run as root; run it as postgres then.
as_server_user() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

cluster_start() {
	TV_TMP=$(mktemp -d "${TMPDIR:-/tmp}/tokenvault.XXXXXX")
	chmod 755 "$TV_TMP"
	[ "$(id -u)" = 0 ] && chown postgres: "$TV_TMP"
	TV_DATA="$TV_TMP/data"
	TV_LOG="$TV_TMP/server.log"
	export TV_TMP TV_DATA TV_LOG
	# A private socket directory means the port cannot clash with another server.
	export PGHOST="$TV_TMP" PGPORT=$((20000 + $$ % 10000)) PGUSER=postgres PGDATABASE=postgres
	tv_at_exit cluster_stop

	as_server_user initdb -D "$TV_DATA" -U postgres -A trust --no-sync >"$TV_TMP/initdb.log" 2>&1 ||
		{ cat "$TV_TMP/initdb.log"; return 1; }
	TV_KEYS="$TV_TMP/keys/tokenvault.keys"
	export TV_KEYS
	key_file_create "$TV_KEYS"
	cat >>"$TV_DATA/postgresql.conf" <<CONF
listen_addresses = ''
port = $PGPORT
unix_socket_directories = '$TV_TMP'
shared_preload_libraries = 'tokenvault'
tokenvault.key_file = '$TV_KEYS'
# the test peers are on loopback, which the host policy refuses unless listed
tokenvault.allowed_internal_hosts = '127.0.0.0/8, ::1'
fsync = off
log_min_messages = log
log_line_prefix = '%m [%p] %q%a '
# the suite's databases are served on demand unless a test names its worker's (launcher.sh: all)
tokenvault.database = 'postgres'
${TV_EXTRA_CONF:-}
CONF
	as_server_user pg_ctl -D "$TV_DATA" -l "$TV_LOG" -w -t 60 start >/dev/null ||
		{ cat "$TV_LOG"; return 1; }
}

# standby_create: a streaming standby of the running cluster, made from a
# base backup, in $TV_SB_DATA on port $TV_SB_PORT (PGPORT + 1); then
# standby_start and standby_stop (which also runs on exit).  Its log is kept
# for the leak scan.
standby_create() {
	TV_SB_DATA="$TV_TMP/standby"
	TV_SB_PORT=$((PGPORT + 1))
	as_server_user pg_basebackup -c fast -D "$TV_SB_DATA" -R -X stream >"$TV_TMP/basebackup.log" 2>&1 ||
		{ cat "$TV_TMP/basebackup.log"; return 1; }
	echo "port = $TV_SB_PORT" >>"$TV_SB_DATA/postgresql.conf"
	tv_at_exit standby_stop
	TV_SCAN_LOGS+=("$TV_TMP/standby.log")
}
standby_start() { as_server_user pg_ctl -D "$TV_SB_DATA" -l "$TV_TMP/standby.log" -w -t 60 start >/dev/null; }
standby_stop() { as_server_user pg_ctl -D "$TV_SB_DATA" -m immediate stop >/dev/null 2>&1 || true; }

# A key file with one new key, in a directory of its own that only the
# server's user reads (what tokenvault.create_key_file() writes).
key_file_create() {
	local dir id
	dir=$(dirname "$1")
	mkdir -p -m 700 "$dir"
	id=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
	[ "$id" != 0 ] || id=1
	(umask 077 && printf '%s %s\n' "$id" "$(od -An -v -N32 -tx1 /dev/urandom | tr -d ' \n')" >"$1")
	[ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
	return 0
}

cluster_stop() {
	[ -n "${TV_DATA:-}" ] || return 0
	leak_keep_cluster
	as_server_user pg_ctl -D "$TV_DATA" -m fast -w -t 30 stop >/dev/null 2>&1 ||
		as_server_user pg_ctl -D "$TV_DATA" -m immediate stop >/dev/null 2>&1 || true
	leak_keep_logs
	if [ -n "${TV_KEEP:-}" ]; then
		echo "cluster kept in $TV_TMP"
	else
		rm -rf "$TV_TMP"
	fi
	TV_DATA=""
}
