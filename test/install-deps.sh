#!/usr/bin/env bash
# Install what building and testing tokenvault needs, skipping what is there.
set -euo pipefail

packages=(
	make gcc
	postgresql-15 postgresql-server-dev-15
	libcurl4-openssl-dev libssl-dev
	postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
)

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
