#!/usr/bin/env bash
# Runs every FleetSync test. Tests start their own throwaway PostgreSQL 15 clusters.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
echo "==> building and running the tests (first build compiles all dependencies: several minutes)"
swift build --build-tests 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
swift test --skip-build 2>&1
