#!/usr/bin/env bash
# Sets up a shore and a vessel on throwaway PostgreSQL 15 clusters and syncs changes both ways:
# builds fleetsync, initializes both nodes on the example maritime schema, starts `fleetsync
# serve`, makes edits on both sides, runs `fleetsync sync --once` on the vessel and shows that
# both databases hold the same rows. Everything is stopped and removed at the end.
source "$(dirname "$0")/build-fleetsync.sh"

work=$(mktemp -d /tmp/fleetsync-demo-XXXXXX); chmod 777 "$work"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  for node in shore aurora; do as_pg "$pgbin/pg_ctl" -D "$work/$node" -m fast stop >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
declare -A port
for node in shore aurora; do
  port[$node]=$(free_port)
  echo "==> starting the $node's PostgreSQL 15 cluster on port ${port[$node]}"
  as_pg "$pgbin/initdb" -D "$work/$node" -U postgres -A trust --no-sync >/dev/null
  as_pg "$pgbin/pg_ctl" -D "$work/$node" -o "-p ${port[$node]} -k $work -c listen_addresses=127.0.0.1" -l "$work/$node.log" -w start >/dev/null
  command psql -X -q -h 127.0.0.1 -p "${port[$node]}" -U postgres -d postgres -c "CREATE DATABASE fleet_$node"
  command psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${port[$node]}" -U postgres -d "fleet_$node" -f examples/schema.sql
done
sql() { local node=$1; shift; command psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${port[$node]}" -U postgres -d "fleet_$node" "$@"; }
http_port=$(free_port)
sed -e "s#127.0.0.1:5432#127.0.0.1:${port[shore]}#" -e "s#0.0.0.0:8080#127.0.0.1:$http_port#" \
    -e "s#/var/lib/fleetsync/keys#$work/keys-shore#" examples/shore.toml > "$work/shore.toml"
sed -e "s#127.0.0.1:5432#127.0.0.1:${port[aurora]}#" -e "s#http://127.0.0.1:8080#http://127.0.0.1:$http_port#" \
    -e "s#/var/lib/fleetsync/keys#$work/keys-aurora#" \
    -e "s#/etc/fleetsync/shore-identity.pub#$work/shore-identity.pub#" examples/vessel.toml > "$work/vessel.toml"

echo "==> fleetsync init on both nodes"
"$bin" init --config "$work/shore.toml" | tail -1
"$bin" init --config "$work/vessel.toml" | tail -1
echo "==> fleetsync keygen on both nodes: ML-DSA-65 identity and X-Wing sealing keys (private files mode 0600)"
"$bin" keygen --config "$work/shore.toml" | head -2
"$bin" keygen --config "$work/vessel.toml" | head -2
echo "==> the vessel pins the shore's public identity; the shore enrolls the vessel's"
cp "$work/keys-shore/identity.pub" "$work/shore-identity.pub"
"$bin" enroll --config "$work/shore.toml" --vessel aurora --identity "$work/keys-aurora/identity.pub"

echo "==> fleetsync serve (shore, port $http_port)"
FLEETSYNC_LOG_LEVEL=warning "$bin" serve --config "$work/shore.toml" > "$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 50); do grep -q listening "$work/serve.log" 2>/dev/null && break; sleep 0.2; done

echo "==> on the shore: the fleet list, a certificate type, and a seafarer assigned to the aurora"
sql shore <<'SQL'
INSERT INTO vessel (code, name, flag) VALUES ('aurora', 'MV Aurora', 'PT'), ('borealis', 'MV Borealis', 'NO');
INSERT INTO certificate_type (code, title, validity_months) VALUES ('BST', 'Basic safety training', 60);
INSERT INTO seafarer (vessel_code, full_name, rank) VALUES ('aurora', 'Ana Lima', 'Chief Officer');
INSERT INTO seafarer (vessel_code, full_name, rank) VALUES ('borealis', 'Bo Berg', 'Master');
INSERT INTO certificate (seafarer_id, certificate_type_id, number, issued_on, expires_on)
  SELECT s.id, t.id, 'BST-0042', '2024-03-01', '2029-03-01' FROM seafarer s, certificate_type t WHERE s.full_name = 'Ana Lima';
SQL
echo "==> fleetsync sync --once (vessel)"
"$bin" sync --once --config "$work/vessel.toml"
echo "==> the vessel now holds its partition (Bo Berg serves on the borealis and is not here):"
sql aurora -c "SELECT full_name, rank, vessel_code FROM seafarer ORDER BY full_name"

echo "==> at sea: the crew member updates her phone number and a note; ashore HR promotes her"
sql aurora -c "UPDATE seafarer SET contact_number = '+351 912 345 678', notes = 'prefers morning watch' WHERE full_name = 'Ana Lima'"
sql shore -c "UPDATE seafarer SET rank = 'Master' WHERE full_name = 'Ana Lima'"
"$bin" sync --once --config "$work/vessel.toml"
echo "==> shore:"
sql shore -c "SELECT full_name, rank, contact_number, notes FROM seafarer WHERE vessel_code = 'aurora'"
echo "==> vessel:"
sql aurora -c "SELECT full_name, rank, contact_number, notes FROM seafarer"
echo "==> status on both sides:"
"$bin" status --config "$work/vessel.toml"
"$bin" status --config "$work/shore.toml"
