#!/usr/bin/env bash
# Runs the seeded end-to-end fleet test (shore + two vessels on throwaway PostgreSQL 15 clusters,
# batches of 7 events, random writes, transfers, child-first trees, long numbers, deep jsonb,
# 5 MiB values) on more seeds than CI does.
#   bash scripts/seeded-fleet.sh [SEEDS] [FIRST_SEED]      (default 200 seeds from 1)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
seeds=${1:-200}
first=${2:-1}
echo "==> building the tests"
swift build --build-tests 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
# Seeds run in groups of 20 (each group on a fresh fleet, so later seeds stay as fast as the first).
for ((start = first; start < first + seeds; start += 20)); do
  n=$(( first + seeds - start < 20 ? first + seeds - start : 20 ))
  echo "==> seeds $start to $((start + n - 1))"
  FLEETSYNC_SEEDS=$n FLEETSYNC_FIRST_SEED=$start swift test --skip-build --filter SeededFleetTests 2>&1 | grep -E "error|Executed|passed|failed" | tail -5
done
