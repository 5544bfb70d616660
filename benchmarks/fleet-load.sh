#!/usr/bin/env bash
# Fleet load (issue 16): N simulated vessels, each a real protocol client (enrolled keys, token,
# sealed X-Wing requests, its own partition and writes each way), exchanging against one release
# `fleetsync serve` process and one throwaway shore PostgreSQL 15, for each fleet size in turn.
# Usage: benchmarks/fleet-load.sh [fleetsync-fleet-load options]   (default: the curve
#        50,100,200,500,1000 vessels, 30 s each, an exchange every 5 s per vessel;
#        --mode long-poll: vessels long-poll as the daemon does by default)
# The release build of every dependency is long on a small machine; it runs under the shared
# build lock (/tmp/swift.lock), and the binaries are copied out (FLEET_LOAD_BIN, default a
# fresh temporary directory) so that the run holds no lock and a later build cannot replace
# them mid-run. FLEET_LOAD_SKIP_BUILD=1 runs the copies already in FLEET_LOAD_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/opt/swift/usr/bin:$PATH
out=${FLEET_LOAD_BIN:-$(mktemp -d /tmp/fleet-load-bin.XXXXXX)}
mkdir -p "$out"
if [ "${FLEET_LOAD_SKIP_BUILD:-0}" != 1 ]; then
  flock /tmp/swift.lock bash -c 'set -e
    for product in fleetsync fleetsync-fleet-load; do
      swift build -c release --product "$product" 2>&1 | grep -E "error|Build" | tail -5; done
    bin=$(swift build -c release --show-bin-path)
    cp "$bin/fleetsync" "$bin/fleetsync-fleet-load" "$1/"' _ "$out"
fi
# Each simulated vessel keeps its own connections open.
ulimit -n "$(ulimit -Hn)"
exec "$out/fleetsync-fleet-load" --fleetsync "$out/fleetsync" "$@"
