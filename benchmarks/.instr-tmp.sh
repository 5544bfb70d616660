#!/usr/bin/env bash
# Instructions per single-row UPDATE with and without capture, counted by callgrind: machine noise
# does not move them, so they show where capture's time goes (docs/BENCHMARKS.md).
#
#   bash benchmarks/capture-instructions.sh plain
#   bash benchmarks/capture-instructions.sh captured [VARIANT.sql]
#
# It makes a throwaway cluster with the 12-column, 100,000-row table of capture-overhead.sh, either
# with the tracking columns and no trigger (plain) or after `fleetsync init` (captured); a variant
# file (benchmarks/capture-variants/) then replaces the capture function (psql variable
# :capture_function names it). The server is stopped and a single-user backend (postgres --single)
# runs 300 and then 1,300 single-row UPDATE transactions under callgrind; the difference of the two
# totals divided by 1,000 is printed. Needs valgrind (apt-get install -y valgrind) and, for
# captured, a fleetsync binary (FLEETSYNC_BIN, default .build-release/release/fleetsync).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?plain or captured}; variant=${2:-}
bin=${FLEETSYNC_BIN:-.build-release/release/fleetsync}
pgbin=/usr/lib/postgresql/15/bin
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install -y valgrind" >&2; exit 1; }
[ "$mode" = plain ] || [ -x "$bin" ] || { echo "no fleetsync binary at $bin (set FLEETSYNC_BIN)" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
work=$(mktemp -d "${TMPDIR:-/tmp}/fleetsync-instr-XXXXXX"); chmod 777 "$work"
trap 'as_pg $pgbin/pg_ctl -D $work/data -m immediate stop >/dev/null 2>&1 || true; rm -rf $work' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg $pgbin/initdb -D $work/data -U postgres -A trust --no-sync >/dev/null
as_pg $pgbin/pg_ctl -D $work/data -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c fsync=off" -l $work/log -w start >/dev/null
psql() { command psql -X -q -v ON_ERROR_STOP=1 -h $work -p $port -U postgres "$@"; }
psql -d postgres -c "CREATE DATABASE b"
psql -d b -v rows=100000 -f benchmarks/bench-table.sql
if [ "$mode" = plain ]; then
  psql -d b -c "ALTER TABLE bench_item ADD COLUMN sync_version bigint NOT NULL DEFAULT 0, ADD COLUMN is_deleted boolean NOT NULL DEFAULT false, ADD COLUMN sync_clock jsonb NOT NULL DEFAULT '{}'"
else
  printf '[node]\nrole = "vessel"\nid = "bench"\n[database]\nurl = "postgres://postgres@127.0.0.1:%s/b"\n[vessel]\nshore_url = "http://127.0.0.1:9"\n[[table]]\nname = "bench_item"\nroute = "broadcast"\ndefault_owner = "shared"\n' "$port" > $work/c.toml
  "$bin" init --config $work/c.toml >/dev/null
  if [ -n "$variant" ]; then
    psql -d b -v capture_function="$(psql -d b -Atc "SELECT 'fleetsync.capture_update_' || 'bench_item'::regclass::oid")" -f "$variant" >/dev/null
  fi
fi
psql -d b -c "UPDATE bench_item SET hits = hits + 1" -c "VACUUM ANALYZE bench_item"
as_pg $pgbin/pg_ctl -D $work/data -m fast stop >/dev/null
count() {
  python3 -c "
import random; random.seed(7)
for i in range($1): print(f'UPDATE bench_item SET hits = hits + 1 WHERE k = {random.randint(1, 100000)};')" > $work/s$1.sql
  chmod 644 $work/s$1.sql
  as_pg valgrind --tool=callgrind --callgrind-out-file=$work/cg$1 $pgbin/postgres --single -D $work/data -c fsync=off -c synchronous_commit=off b < $work/s$1.sql > /dev/null 2>$work/vg$1
  awk '/^(summary|totals):/ { print $2; exit }' $work/cg$1
}
a=$(count 300); b=$(count 1300); cp $work/cg300 $work/cg1300 /tmp/var/
echo "$mode${variant:+ $variant}: $(( (b - a) / 1000 )) instructions per UPDATE"
