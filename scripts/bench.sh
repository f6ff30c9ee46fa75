#!/usr/bin/env bash
# The figures of the README's Performance section, regenerated: runs every
# scenario of `shoal bench` on this machine, writes docs/bench.json (every
# figure), docs/bench.svg (the plot) and docs/bench.txt (the table), and
# puts the table into README.md in place of the one after its
# "<!-- bench table -->" line. Extra arguments go to `shoal bench`, e.g.
# --quick for a look in about a minute (then README.md is left alone).
# The dask scenario needs a python3 that imports distributed
# (apt-get install -y python3-distributed); without it the table says so.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/shoal" ./cmd/shoal

if [ "$#" -gt 0 ]; then
	exec "$tmp/shoal" bench all "$@"
fi
"$tmp/shoal" bench all --json docs/bench.json --plot docs/bench.svg >docs/bench.txt
cat docs/bench.txt

# Replace the fenced block that follows the marker with the new table.
awk -v table=docs/bench.txt '
	/^<!-- bench table -->$/ { print; marker = 1; found = 1; next }
	marker == 1 && /^```/ { print "```text"; while ((getline line < table) > 0) print line; print "```"; marker = 2; next }
	marker == 2 { if (/^```$/) marker = 0; next }
	{ print }
	END { if (!found || marker != 0) exit 1 }
' README.md >"$tmp/README.md" || { echo "bench.sh: README.md has no \"<!-- bench table -->\" line followed by a fenced block" >&2; exit 1; }
cp "$tmp/README.md" README.md
echo "bench.sh: wrote docs/bench.json, docs/bench.svg, docs/bench.txt and the table in README.md" >&2
