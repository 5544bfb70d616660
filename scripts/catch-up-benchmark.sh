#!/usr/bin/env bash
# Runs the catch-up, onboarding and verify end-to-end tests at the issue's full sizes (200,000
# pre-existing rows; 50,000 changes to 500 rows, all pruned; a 1,000,000-row partition for verify)
# and prints what they measure (bytes of catch-up against the final rows once, verify bytes and
# round trips). CI runs the same tests scaled down. The side-by-side comparisons at full size with
# the release build (verify time of 1,000,000 rows, catch-up against replaying 1,000,000 events,
# onboarding against a plain COPY) are benchmarks/catch-up-verify-onboarding.sh, run after these
# with FLEETSYNC_SIDE_BY_SIDE=1.
#   bash scripts/catch-up-benchmark.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
echo "==> building the tests"
swift build --build-tests 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
FLEETSYNC_FULL_SIZE=1 swift test --skip-build --filter 'CatchUpTests|VerifyTests' 2>&1 \
  | grep -E "catch-up|verify of|error|passed|failed|Executed" | tail -30
if [ "${FLEETSYNC_SIDE_BY_SIDE:-0}" = 1 ]; then
  bash benchmarks/catch-up-verify-onboarding.sh
fi
