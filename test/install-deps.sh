#!/usr/bin/env bash
# Install what building and testing tokenvault needs, skipping what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
	make gcc
	postgresql-15 postgresql-server-dev-15
	libcurl4-openssl-dev libssl-dev
	postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
	openssl curl
	gdb
	postgresql-15-auto-failover pgbouncer
)
# Node.js runs the test peers; a machine may have it from elsewhere (NodeSource).
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	echo "installing: ${missing[*]}"
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The test peers' npm packages, exactly as the lock file says; again only
# when the lock file changed since the last install.
stamp=test/node_modules/.installed-lock
if ! cmp -s test/package-lock.json "$stamp" 2>/dev/null; then
	npm ci --prefix test --no-audit --no-fund --loglevel=error
	cp test/package-lock.json "$stamp"
fi
