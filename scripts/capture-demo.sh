#!/usr/bin/env bash
# Sets up FleetSync on the example maritime schema and shows a captured change:
# builds fleetsync, starts a throwaway PostgreSQL 15 cluster, runs `fleetsync init`,
# makes a few writes and prints what capture recorded. Everything is removed at the end.
source "$(dirname "$0")/build-fleetsync.sh"

work=$(mktemp -d /tmp/fleetsync-demo-XXXXXX); chmod 777 "$work"
port=$(free_port)
cleanup() { as_pg "$pgbin/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
echo "==> starting a throwaway PostgreSQL 15 cluster on port $port"
as_pg "$pgbin/initdb" -D "$work/data" -U postgres -A trust --no-sync >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/data" -o "-p $port -k $work -c listen_addresses=127.0.0.1" -l "$work/log" -w start >/dev/null
psql() { command psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }
psql -d postgres -c 'CREATE DATABASE fleet_aurora'
psql -d fleet_aurora -f examples/schema.sql
sed "s#127.0.0.1:5432#127.0.0.1:$port#" examples/vessel.toml > "$work/vessel.toml"

echo "==> fleetsync init --config vessel.toml"
"$bin" init --config "$work/vessel.toml"
echo "==> running it again changes nothing"
"$bin" init --config "$work/vessel.toml"

echo "==> writes on the vessel"
psql -d fleet_aurora <<'SQL'
\set ON_ERROR_STOP 0
INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora');
INSERT INTO seafarer (vessel_code, full_name, rank) VALUES ('aurora', 'Ana Lima', 'Master');
UPDATE seafarer SET contact_number = '+351 912 345 678' WHERE full_name = 'Ana Lima';
UPDATE seafarer SET contact_number = '+351 912 345 678' WHERE full_name = 'Ana Lima';  -- changes nothing: captures nothing
DELETE FROM seafarer WHERE full_name = 'Ana Lima';                                      -- becomes a tombstone
SQL
echo "==> a write to a shore-owned column is refused on the vessel:"
psql -d fleet_aurora -c "UPDATE seafarer SET rank = 'Captain'" 2>&1 | sed 's/^/    /' || true
echo "==> the capture log now holds (only changed columns, with the row's logical version; the sequencer moves it into the outbox):"
psql -d fleet_aurora -c "SELECT seq, table_name, op, version, delta FROM fleetsync.capture_log ORDER BY seq"
psql -d fleet_aurora -c "SELECT full_name, contact_number, is_deleted, sync_version FROM seafarer"
