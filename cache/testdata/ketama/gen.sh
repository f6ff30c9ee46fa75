#!/usr/bin/env bash
# Regenerates the ketama placement vectors with libmemcached itself.
# Needs Debian's libmemcached-dev and gcc: apt-get install -y libmemcached-dev gcc
# Run from this directory: ./gen.sh
set -euo pipefail
cd "$(dirname "$0")"
bin=$(mktemp)
trap 'rm -f "$bin"' EXIT
gcc -O2 -o "$bin" gen.c $(pkg-config --cflags --libs libmemcached)
keys() { for i in $(seq 0 999); do echo "key-$i"; done; echo "shoal:1:square:5f2b"; echo "a"; echo "Z"; }
# One file per server list; the first line of each names the servers.
gen() {
	local out=$1; shift
	{ echo "# servers: $*"; keys | "$bin" "$@"; } > "$out"
}
gen three-default-port.tsv 10.0.0.1:11211 10.0.0.2:11211 10.0.0.3:11211
gen three-other-ports.tsv 127.0.0.1:21001 127.0.0.1:21002 127.0.0.1:21003
gen four.tsv 127.0.0.1:21001 127.0.0.1:21002 127.0.0.1:21003 127.0.0.1:21004
gen five.tsv 127.0.0.1:21001 127.0.0.1:21002 127.0.0.1:21003 127.0.0.1:21004 127.0.0.1:21005
gen one.tsv cache.example:11211
dpkg-query -W -f='# made with libmemcached ${Version} (Debian package libmemcached-dev)\n' libmemcached-dev > VERSION
