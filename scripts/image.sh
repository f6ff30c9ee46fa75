#!/usr/bin/env bash
# Builds the Shoal container image: the shoal binary, static
# (CGO_ENABLED=0), in an image FROM scratch (deploy/container/Dockerfile).
# Nothing is pulled. Uses podman, or docker where podman is missing
# (SHOAL_IMAGE_TOOL chooses).
#
#   scripts/image.sh [TAG]     TAG defaults to localhost/shoal:latest
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-localhost/shoal:latest}
tool=${SHOAL_IMAGE_TOOL:-}
if [ -z "$tool" ]; then
	for candidate in podman docker; do
		if command -v "$candidate" >/dev/null 2>&1; then
			tool=$candidate
			break
		fi
	done
fi
if [ -z "$tool" ]; then
	echo "image.sh: needs podman or docker to build the image (Debian: apt-get install podman)" >&2
	exit 1
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
mkdir "$context/data" # the image's /data, for the jobs a node coordinates
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$context/shoal" ./cmd/shoal

pull=()
if [ "$tool" = podman ]; then
	pull=(--pull=never) # FROM scratch has nothing to pull; say so
fi
"$tool" build "${pull[@]}" -t "$tag" -f deploy/container/Dockerfile "$context" >&2
echo "$tag"
