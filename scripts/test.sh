#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Go: installs what
# the tests need (gcc, memcached, iproute2, podman, python3-msgpack,
# chromium), checks formatting, vets, runs every test
# under the race detector, fuzzes the RPC message reader briefly and
# measures a node's memory under huge calls and a client's over a large
# job without the race detector.
set -euo pipefail
cd "$(dirname "$0")/.."

# need COMMAND PACKAGE installs PACKAGE with apt-get when COMMAND is missing.
need() {
	command -v "$1" >/dev/null 2>&1 && return 0
	echo "test.sh: $1 is missing; installing Debian package $2" >&2
	local sudo=""
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 || { echo "test.sh: run as root or install $2 yourself" >&2; exit 1; }
		sudo="sudo"
	fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2" >/dev/null
}

command -v go >/dev/null 2>&1 || { echo "test.sh: Go is required (https://go.dev/doc/install)" >&2; exit 1; }
need gcc gcc             # the race detector needs cgo
need memcached memcached # the cache tests run real memcached servers
need prlimit util-linux  # the descriptor test runs a node under prlimit
need ip iproute2         # the multi-host tests make network namespaces (ip, tc)
need podman podman       # the container tests build the image and run a grid of it
need runc runc           # ... with runc, which starts where crun refuses hybrid cgroups
need chromium chromium   # the dashboard's test drives it headless
# The Python client's test runs Debian's python3 with Debian's msgpack.
if ! /usr/bin/python3 -c 'import msgpack' >/dev/null 2>&1; then
	echo "test.sh: python3-msgpack is missing; installing it" >&2
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3 python3-msgpack >/dev/null
fi

echo "== gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi

echo "== go vet"
go vet ./...
(cd deploy && go vet ./...)

# A count, not a duration: with -fuzztime 10s, Go 1.26's fuzz coordinator
# can report its own deadline as a failure ("context deadline exceeded",
# golang/go#75804, fixed in Go 1.27) when a loaded machine slows a worker.
echo "== fuzz the RPC message reader (${SHOAL_FUZZTIME:=50000x} per target)"
go test -run '^$' -fuzz '^FuzzMessageReader$' -fuzztime "$SHOAL_FUZZTIME" ./rpc
go test -run '^$' -fuzz '^FuzzServerConn$' -fuzztime "$SHOAL_FUZZTIME" ./rpc

echo "== go test -race"
go test -race -count=1 -timeout 8m ./...

# deploy/ is a module of its own, so that the Kubernetes API types it
# checks the manifests against stay out of Shoal's dependencies.
echo "== Kubernetes manifests (deploy/)"
(cd deploy && go test -count=1 ./...)

# The race detector's shadow memory would be measured with the processes'
# own, so the memory-bound tests are built without it (memory_test.go is
# !race).
echo "== node and client memory bounds (without the race detector)"
go test -count=1 -run '^(TestNodeMemoryBoundedUnderHugeCalls|TestSubmitMemoryIsFlat|TestDetachedJobMemoryIsFlat)$' ./cmd/shoal
