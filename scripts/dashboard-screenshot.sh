#!/usr/bin/env bash
# Makes docs/dashboard.png, the README's picture of the dashboard: runs the
# dashboard's browser test (three node processes, a detached and an
# attached job, headless Chromium) with a minute of load before its
# screenshot, and copies the screenshot. Needs chromium (apt-get install
# chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
SHOAL_SCREENSHOT_DIR="$dir" SHOAL_SCREENSHOT_WARMUP="${SHOAL_SCREENSHOT_WARMUP:-60s}" \
	go test -count=1 -run '^TestDashboardInBrowser$' ./dashboard
cp "$dir/dashboard.png" docs/dashboard.png
echo "wrote docs/dashboard.png"
