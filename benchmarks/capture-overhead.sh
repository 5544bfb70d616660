#!/usr/bin/env bash
# Capture overhead: single-row, single-column UPDATE throughput on a 12-column table with
# FleetSync capture installed, against the same table without it, measured alternately in one
# run with pgbench. The target is captured/plain >= 0.8.
#
# It starts a throwaway PostgreSQL 15 cluster (fsync=off, synchronous_commit=off, as the peers we
# compare with were measured), creates two databases holding the same 100,000-row table, runs
# `fleetsync init` on one of them, and gives the other the same tracking columns (sync_version,
# is_deleted, sync_clock) without the triggers, so the only difference is capture. Then it runs
# pgbench on each in turn: plain, captured, plain, captured, ...  The cluster is removed at the end.
#
# Settings (environment):
#   ROUNDS=3            alternating rounds; each round runs plain, then captured
#   SECONDS_PER_RUN=10  length of each pgbench run
#   WARMUP_SECONDS=3    one uncounted run on each database first (0 to skip)
#   CLIENTS=2           pgbench clients (-c) and threads (-j)
#   ROWS=100000         rows in each table
#   PGBENCH_MODE=simple pgbench query protocol (-M): simple (pgbench's default), extended or prepared;
#                       prepared takes parse and plan out of each UPDATE, so capture weighs more
#   SERVER_SETTINGS     extra server settings for the cluster of both databases (e.g. "-c wal_level=logical")
#   DRAIN_SQL           SQL run on the captured database every DRAIN_INTERVAL seconds (default 0.5)
#                       during captured runs, to measure capture while its reader drains it
#                       (benchmarks/capture-variants/drain-*.sql hold the statements used)
#   CAPTURED_SQL        a SQL file run on the captured database after `fleetsync init`, e.g. to try
#                       another capture function; psql variable :capture_function names the installed one
#   FLEETSYNC_BIN       the fleetsync binary (default: .build/release, then .build/debug)
#   TMPDIR              where the throwaway cluster is made (default /tmp)
#
# The capture log is not drained while the benchmark runs: every captured UPDATE adds one row to
# fleetsync.capture_log, so it grows from round to round (the script prints its size). That is what a
# vessel does between exchanges.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
WARMUP_SECONDS=${WARMUP_SECONDS:-3}
CLIENTS=${CLIENTS:-2}
ROWS=${ROWS:-100000}
PGBENCH_MODE=${PGBENCH_MODE:-simple}
pgbin=/usr/lib/postgresql/15/bin

echo "command: ${DRAIN_SQL:+DRAIN_SQL=\"$DRAIN_SQL\" }ROUNDS=$ROUNDS SECONDS_PER_RUN=$SECONDS_PER_RUN WARMUP_SECONDS=$WARMUP_SECONDS CLIENTS=$CLIENTS ROWS=$ROWS PGBENCH_MODE=$PGBENCH_MODE${SERVER_SETTINGS:+ SERVER_SETTINGS=\"$SERVER_SETTINGS\"}${CAPTURED_SQL:+ CAPTURED_SQL=$CAPTURED_SQL} benchmarks/capture-overhead.sh"

# --- the fleetsync binary -------------------------------------------------------------------
bin=${FLEETSYNC_BIN:-}
if [ -z "$bin" ]; then
  for candidate in .build/release/fleetsync .build/debug/fleetsync; do
    if [ -x "$candidate" ]; then bin=$candidate; break; fi
  done
fi
if [ -z "$bin" ]; then
  source scripts/install-deps.sh
  echo "==> building fleetsync"
  swift build --product fleetsync 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
  bin="$(swift build --show-bin-path)/fleetsync"
fi
[ -x "$bin" ] || { echo "fleetsync binary not found at $bin" >&2; exit 1; }
[ -x "$pgbin/initdb" ] && command -v pgbench >/dev/null && command -v psql >/dev/null \
  || { echo "PostgreSQL 15 server and client are needed (scripts/install-deps.sh installs them)" >&2; exit 1; }

# --- a throwaway cluster --------------------------------------------------------------------
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
work=$(mktemp -d "${TMPDIR:-/tmp}/fleetsync-bench-XXXXXX"); chmod 777 "$work"
cleanup() {
  as_pg "$pgbin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT; trap 'exit 143' TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$pgbin/initdb" -D "$work/data" -U postgres -A trust --no-sync >/dev/null
settings=(
  -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off
  -c shared_buffers=256MB -c max_wal_size=4GB -c checkpoint_timeout=30min
)
# SERVER_SETTINGS adds settings for both databases' server, e.g. "-c wal_level=logical".
read -r -a extra_settings <<<"${SERVER_SETTINGS:-}"
settings+=("${extra_settings[@]}")
as_pg "$pgbin/pg_ctl" -D "$work/data" -o "-p $port -k $work ${settings[*]}" -l "$work/log" -w start >/dev/null
psql() { command psql -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres "$@"; }
echo "==> PostgreSQL $(psql -d postgres -Atc 'SHOW server_version') on port $port, $(nproc) cores, settings: ${settings[*]}"

# --- two databases with the same table ------------------------------------------------------
table=bench_item
for db in bench_plain bench_captured; do
  psql -d postgres -c "CREATE DATABASE $db"
  psql -d "$db" -v rows="$ROWS" -f benchmarks/bench-table.sql
done

# The plain copy gets the tracking columns init adds, with the same definitions, and no triggers.
psql -d bench_plain <<SQL
ALTER TABLE $table ADD COLUMN sync_version bigint NOT NULL DEFAULT 0;
ALTER TABLE $table ADD COLUMN is_deleted boolean NOT NULL DEFAULT false;
ALTER TABLE $table ADD COLUMN sync_clock jsonb NOT NULL DEFAULT '{}';
SQL

cat > "$work/bench.toml" <<TOML
[node]
role = "vessel"
id = "bench"

[database]
url = "postgres://postgres@127.0.0.1:$port/bench_captured"

[vessel]
shore_url = "http://127.0.0.1:9"

[[table]]
name = "$table"
route = "broadcast"
default_owner = "shared"
TOML
echo "==> $bin init --config bench.toml (on bench_captured)"
"$bin" init --config "$work/bench.toml" | sed 's/^/    /'
capture_function=$(psql -d bench_captured -Atc "SELECT 'fleetsync.capture_update_' || '$table'::regclass::oid")
if [ -n "${CAPTURED_SQL:-}" ]; then
  echo "==> applying $CAPTURED_SQL to bench_captured (capture function $capture_function)"
  psql -d bench_captured -v capture_function="$capture_function" -f "$CAPTURED_SQL"
fi

# Every row updated once, so that captured rows carry their clock as they would after a while in
# service (a row's first captured update makes it wider); then both tables are vacuumed.
for db in bench_plain bench_captured; do
  psql -d "$db" -c "UPDATE $table SET hits = hits + 1" -c "VACUUM (ANALYZE) $table"
done
columns() { psql -d "$1" -Atc "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '$table'::regclass AND attnum > 0 AND NOT attisdropped"; }
triggers() { psql -d "$1" -Atc "SELECT coalesce(string_agg(tgname, ', ' ORDER BY tgname), 'none') FROM pg_trigger WHERE tgrelid = '$table'::regclass AND NOT tgisinternal"; }
for db in bench_plain bench_captured; do
  [ "$(columns bench_plain)" = "$(columns "$db")" ] || { echo "the two tables differ:"; columns bench_plain; columns "$db"; exit 1; }
  echo "    $db.$table: $(psql -d "$db" -Atc "SELECT count(*) FROM $table") rows; triggers: $(triggers "$db")"
done
echo "    columns of both: $(columns bench_plain)"

# --- the workload ---------------------------------------------------------------------------
# One row chosen at random by its unique key; one column changes, and its value is new every time.
cat > "$work/update.sql" <<SQL
\set k random(1, $ROWS)
UPDATE $table SET hits = hits + 1 WHERE k = :k;
SQL
echo "==> pgbench script:"; sed 's/^/    /' "$work/update.sql"
pgbench_args=(-n -M "$PGBENCH_MODE" -c "$CLIENTS" -j "$CLIENTS" -f "$work/update.sql")
echo "==> each run: pgbench ${pgbench_args[*]/#$work\//} -T $SECONDS_PER_RUN <database>"

run() {  # run DB SECONDS: prints the run's TPS
  psql -d "$1" -c CHECKPOINT
  local out drainer=
  if [ "$1" = bench_captured ] && [ -n "${DRAIN_SQL:-}" ]; then
    # Capture is measured with its reader draining it, as an exchange would (its cost counts).
    ( end=$((SECONDS + $2)); while [ $SECONDS -lt $end ]; do psql -d bench_captured -Atc "$DRAIN_SQL" >/dev/null; sleep "${DRAIN_INTERVAL:-0.5}"; done ) &
    drainer=$!
  fi
  out=$(pgbench -h "$work" -p "$port" -U postgres "${pgbench_args[@]}" -T "$2" "$1" 2>&1) \
    || { echo "pgbench failed on $1:" >&2; echo "$out" >&2; exit 1; }
  [ -z "$drainer" ] || wait "$drainer"
  awk '/^tps = / { print $3; exit }' <<<"$out"
}
outbox() { psql -d bench_captured -Atc "SELECT count(*) || ' rows, ' || pg_size_pretty(pg_total_relation_size('fleetsync.capture_log')) FROM fleetsync.capture_log"; }

if [ "$WARMUP_SECONDS" -gt 0 ]; then
  printf '==> warm-up (%ss each, not counted): plain %.0f tps, captured %.0f tps\n' "$WARMUP_SECONDS" \
    "$(run bench_plain "$WARMUP_SECONDS")" "$(run bench_captured "$WARMUP_SECONDS")"
fi

echo "==> $ROUNDS rounds of ${SECONDS_PER_RUN}s runs, plain then captured"
plain=(); captured=(); ratios=()
for round in $(seq 1 "$ROUNDS"); do
  p=$(run bench_plain "$SECONDS_PER_RUN"); plain+=("$p")
  printf '    round %d  plain     %8.0f tps\n' "$round" "$p"
  c=$(run bench_captured "$SECONDS_PER_RUN"); captured+=("$c")
  ratios+=("$(awk -v c="$c" -v p="$p" 'BEGIN { print c / p }')")
  printf '    round %d  captured  %8.0f tps   (%.2f of the plain run before it; capture log now %s)\n' \
    "$round" "$c" "${ratios[-1]}" "$(outbox)"
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
plain_median=$(median "${plain[@]}")
captured_median=$(median "${captured[@]}")
printf '==> plain:    median %8.0f tps (runs:%s)\n' "$plain_median" "$(printf ' %.0f' "${plain[@]}")"
printf '==> captured: median %8.0f tps (runs:%s)\n' "$captured_median" "$(printf ' %.0f' "${captured[@]}")"
printf '    per-round captured/plain: %s; their median %.2f (less sensitive to drift in machine speed)\n' \
  "$(printf '%.2f ' "${ratios[@]}")" "$(median "${ratios[@]}")"
echo "    (the capture log was not drained: it grew to $(outbox) during the runs)"
awk -v c="$captured_median" -v p="$plain_median" -v n="$ROUNDS" \
  'BEGIN { printf "capture overhead: captured/plain = %.2f (median of %d alternating runs each; target >= 0.8)\n", c / p, n }'
