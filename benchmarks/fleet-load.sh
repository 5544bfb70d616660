#!/usr/bin/env bash
# Fleet load (issue 16): N simulated vessels, each a real protocol client (enrolled keys, token,
# sealed X-Wing requests, its own partition and writes each way), exchanging against one release
# `fleetsync serve` process and one throwaway shore PostgreSQL 15, for each fleet size in turn.
# Usage: benchmarks/fleet-load.sh [fleetsync-fleet-load options]   (default: the curve
#        50,100,200,500,1000 vessels, 30 s each, an exchange every 5 s per vessel)
# The release build of every dependency is long on a small machine; it runs once, under the
# shared build lock (/tmp/swift.lock).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
flock /tmp/swift.lock bash -c 'for product in fleetsync fleetsync-fleet-load; do
  swift build -c release --product "$product" 2>&1 | grep -E "error|Build" | tail -5; done'

bin=$(swift build -c release --show-bin-path)
# Each simulated vessel keeps its own connections open.
ulimit -n "$(ulimit -Hn)"
exec "$bin/fleetsync-fleet-load" --fleetsync "$bin/fleetsync" "$@"
