#!/usr/bin/env bash
# FleetSync side by side with native logical replication and Bucardo (issue 19), in one run.
#
#   bash benchmarks/side-by-side.sh            # 100,000 rows and transactions per workload, ~12 minutes
#   bash benchmarks/side-by-side.sh --quick    # 10,000, to try it (~4 minutes)
#   bash benchmarks/side-by-side.sh --only native,fleetsync --pg-setting jit=off --idle 0 --out /tmp/sbs
#   bash benchmarks/side-by-side.sh --only native,fleetsync --idle 0 --workloads bulk --repeat 3
#
# Per contender, two throwaway PostgreSQL 15 clusters (initdb as the postgres user, free loopback
# ports, fsync off, synchronous_commit off, wal_level logical), the 12-column table of
# benchmarks/bench-table.sql, and three workloads (benchmarks/side-by-side/workloads.py): 100,000
# single-row UPDATE transactions from two pgbench clients while replication runs (and, before, on an
# unreplicated copy of the table in the same cluster, for the source throughput ratio); one
# transaction updating every row; a 100,000-change backlog drained after replication was paused.
# FleetSync runs both directions between one shore (`fleetsync serve`) and one vessel (`fleetsync
# run`), sealed with keys as scripts/exchange-demo.sh sets them up. Prints the figures, FleetSync
# against the issue's targets, and writes results.md, results.json and lag.png (lag over time) to
# --out (default /tmp/fleetsync-side-by-side). Not part of the test suite.
#
# Settings: FLEETSYNC_BIN (default .build/release/fleetsync, built if missing), --batch-events N
# (FleetSync's batch_events, default 1000), --idle N (idle exchanges of the vessel daemon before its
# resident memory is read; default 120, 20 with --quick; the target is about 1,000), --pg-setting
# NAME=VALUE (an extra server setting for every cluster, repeatable), --perf (profiles each stream:
# perf record system wide, pg_stat_statements, auto_explain of statements over 100 ms into the
# clusters' logs, copied to --out with the sync processes' logs; slows everything, so its figures are not comparable),
# --workloads stream,bulk,drain (only those, e.g. --workloads bulk for the one-transaction workload
# in a couple of minutes, native in the same run), --repeat N (the bulk workload N times, median).
# Results and what they show: docs/BENCHMARKS.md, "Side by side with native logical replication".
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: the clusters are made as the postgres user through runuser" >&2; exit 1; }
missing=()
[ -x /usr/lib/postgresql/15/bin/initdb ] && command -v pgbench >/dev/null || missing+=(postgresql-15 postgresql-client-15)
/usr/bin/python3 -c 'import psycopg2' 2>/dev/null || missing+=(python3-psycopg2)
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || missing+=(python3-matplotlib)
[[ ",${*}," == *bucardo* ]] || [[ "$*" != *--only* ]] && { command -v bucardo >/dev/null || missing+=(bucardo postgresql-plperl-15); }
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  apt-get install -y "${missing[@]}" >/dev/null
fi
export PATH=/opt/swift/usr/bin:$PATH
bin=${FLEETSYNC_BIN:-.build/release/fleetsync}
if [ ! -x "$bin" ]; then
  echo "==> building $bin (swift build -c release --product fleetsync, under /tmp/swift.lock)"
  flock /tmp/swift.lock swift build -c release --product fleetsync 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
fi
[ -x "$bin" ] || { echo "no fleetsync binary at $bin" >&2; exit 1; }
args=("$@")
[[ " $* " == *" --out "* ]] || args+=(--out /tmp/fleetsync-side-by-side)
echo "command: bash benchmarks/side-by-side.sh $* (fleetsync $bin, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'))"
PYTHONDONTWRITEBYTECODE=1 exec /usr/bin/python3 benchmarks/side-by-side/run.py --bin "$(realpath "$bin")" "${args[@]}"
