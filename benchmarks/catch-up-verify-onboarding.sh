#!/usr/bin/env bash
# Issue 18 at full size, with the release build, side by side in one run (throwaway PostgreSQL 15
# clusters with fsync off: one for the shore, one holding every vessel's database):
#
# 1. Onboarding: ROWS seafarers exist on the shore before `fleetsync init`, all routed to aurora.
#    Time of the shore's init (clocks for the pre-existing rows) and of aurora's first `sync` (a
#    catch-up of its whole partition), against a plain COPY of the same rows between the same two
#    clusters (COPY TO STDOUT piped into COPY FROM STDIN); rate ratio (target >= 0.5).
# 2. Verify of aurora's ROWS-row partition with no difference (target <= 64 KB, <= 10 s), then
#    with 7 rows changed behind capture (session_replication_role = replica): bytes, round trips,
#    time.
# 3. Catch-up against replay: borealis and cygnus each hold TOUCHED seafarers; the shore updates
#    every one of them ROUNDS times (TOUCHED x ROUNDS events per vessel). borealis syncs with every
#    event kept (replay); cygnus, silent past retention, finds them all pruned and is caught up
#    from table state. Bytes and time side by side.
#
#   bash benchmarks/catch-up-verify-onboarding.sh     (ROWS=1000000 TOUCHED=10000 ROUNDS=100 BATCH_EVENTS=1000
#                                                       BATCH_BYTES=67108864; catch-up pages: up to 16 MiB of it)
#   PARTS="onboard verify catchup" selects parts (verify needs onboard).
#   EVENTS=1 (default) onboards aurora a second time, its database made again, with catch-up pages
#   as events (FLEETSYNC_BULK_CATCH_UP=off: what a vessel before bulk pages gets), with a COPY of its own.
#   SERVE_LOG_LEVEL=info keeps the shore's log (with each catch-up page's time) in $work/serve.log;
#   KEEP=1 keeps $work (clusters stopped) for reading it.
#   PROFILE=file.data records a system-wide `perf record -a -g` during the onboarding sync.
# Builds the release binary only if it is missing (under /tmp/swift.lock, shared with other
# benchmarks); FLEETSYNC_BIN=path uses another.
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=${PARTS:-onboard verify catchup}
part() { [[ " $PARTS " == *" $1 "* ]]; }
ROWS=${ROWS:-1000000}; TOUCHED=${TOUCHED:-10000}; ROUNDS=${ROUNDS:-100}; BATCH_EVENTS=${BATCH_EVENTS:-1000}; BATCH_BYTES=${BATCH_BYTES:-67108864}
export PATH=/opt/swift/usr/bin:$PATH
release=.build/release/fleetsync
if [ -z "${FLEETSYNC_BIN:-}" ] && [ ! -x "$release" ]; then
  echo "==> building the release binary (flock /tmp/swift.lock)"
  flock /tmp/swift.lock swift build -c release --product fleetsync 2>&1 | grep -E "error|Compiling fleetsync|Build" || true
fi
work=$(mktemp -d /tmp/fleetsync-bench18-XXXXXX); chmod 777 "$work"
# A private copy: another agent may rebuild the shared release binary while this runs.
bin="$work/fleetsync"; cp "${FLEETSYNC_BIN:-$release}" "$bin"
pgbin=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
since() { python3 -c "print(round($(now) - $1, 2))"; }
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  for c in shore vessels; do as_pg "$pgbin/pg_ctl" -D "$work/$c" -m immediate stop >/dev/null 2>&1 || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
declare -A port
for c in shore vessels; do
  port[$c]=$(free_port)
  as_pg "$pgbin/initdb" -D "$work/$c" -U postgres -A trust --no-sync >/dev/null
  as_pg "$pgbin/pg_ctl" -D "$work/$c" -o "-p ${port[$c]} -k $work -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_wal_size=4GB -c shared_buffers=256MB" \
    -l "$work/$c.log" -w start >/dev/null
done
sql() { local c=$1 db=$2; shift 2; psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${port[$c]}" -U postgres -d "$db" "$@"; }
sql shore postgres -c "CREATE DATABASE fleet_shore"
sql shore fleet_shore -f examples/schema.sql
for v in aurora borealis cygnus copy; do sql vessels postgres -c "CREATE DATABASE fleet_$v"; sql vessels "fleet_$v" -f examples/schema.sql; done

echo "==> $ROWS seafarers on the shore before init (aurora), $TOUCHED each for borealis and cygnus"
sql shore fleet_shore <<SQL
INSERT INTO vessel (code, name) VALUES ('aurora', 'Aurora'), ('borealis', 'Borealis'), ('cygnus', 'Cygnus');
INSERT INTO seafarer (vessel_code, full_name, rank, notes) SELECT 'aurora', 'sailor ' || i, 'AB', 'note ' || i FROM generate_series(1, $ROWS) i;
INSERT INTO seafarer (vessel_code, full_name, rank, notes) SELECT v, 'crew ' || i, 'AB', 'note ' || i FROM generate_series(1, $TOUCHED) i, unnest(ARRAY['borealis', 'cygnus']) v;
CREATE INDEX IF NOT EXISTS seafarer_vessel_code ON seafarer (vessel_code);  -- the routing column (examples/schema.sql makes it too)
VACUUM ANALYZE;
SQL

http_port=$(free_port)
sed -e "s#127.0.0.1:5432/fleet_shore#127.0.0.1:${port[shore]}/fleet_shore#" -e "s#0.0.0.0:8080#127.0.0.1:$http_port#" \
    -e "s#/var/lib/fleetsync/keys#$work/keys-shore#" examples/shore.toml > "$work/shore.toml"
for v in aurora borealis cygnus; do
  sed -e "s#postgres://[^\"]*#postgres://postgres@127.0.0.1:${port[vessels]}/fleet_$v#" -e "s#^id = \"aurora\"#id = \"$v\"#" \
      -e "s#http://127.0.0.1:8080#http://127.0.0.1:$http_port#" -e "s#/var/lib/fleetsync/keys#$work/keys-$v#" \
      -e "s#/etc/fleetsync/shore-identity.pub#$work/keys-shore/identity.pub#" examples/vessel.toml > "$work/$v.toml"
done
for f in shore aurora borealis cygnus; do
  python3 - "$work/$f.toml" "$BATCH_EVENTS" "$BATCH_BYTES" <<'PY'
import re, sys
path, batch, size = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(path).read()
text = re.sub(r"(?m)^batch_events = \d+", f"batch_events = {batch}", text)
text = re.sub(r"(?m)^batch_bytes = \d+", f"batch_bytes = {size}", text)
open(path, "w").write(text)
PY
done

t=$(now); "$bin" init --config "$work/shore.toml" >/dev/null; shore_init=$(since "$t")
echo "shore init (clocks for $((ROWS + 2 * TOUCHED)) pre-existing rows): ${shore_init} s"
"$bin" keygen --config "$work/shore.toml" >/dev/null
for v in aurora borealis cygnus; do
  "$bin" init --config "$work/$v.toml" >/dev/null; "$bin" keygen --config "$work/$v.toml" >/dev/null
  "$bin" enroll --config "$work/shore.toml" --vessel "$v" --identity "$work/keys-$v/identity.pub" >/dev/null
done
FLEETSYNC_LOG_LEVEL=${SERVE_LOG_LEVEL:-warning} "$bin" serve --config "$work/shore.toml" > "$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do grep -q listening "$work/serve.log" 2>/dev/null && break; sleep 0.2; done
# Sums the bytes of `fleetsync sync` output lines: "bytes U up / D down".
bytes_of() { python3 -c 'import re,sys; u=d=n=0
for l in sys.stdin:
    m=re.search(r"bytes (\d+) up / (\d+) down", l)
    if m: u+=int(m[1]); d+=int(m[2]); n+=1
print(u, d, n)'; }

if part onboard; then
echo "==> 1. onboarding: aurora's first sync (catch-up of its whole partition) against a plain COPY"
perf_pid=""
if [ -n "${PROFILE:-}" ]; then perf record -a -g -o "$PROFILE" >/dev/null 2>&1 & perf_pid=$!; fi
t=$(now); "$bin" sync --config "$work/aurora.toml" > "$work/aurora-sync.log" 2> "$work/aurora-sync.err"; onboard=$(since "$t")
if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
read -r up down n < <(bytes_of < "$work/aurora-sync.log")
held=$(sql vessels fleet_aurora -At -c "SELECT count(*) FROM seafarer")
cols="id, vessel_code, full_name, rank, contact_number, notes"
sql vessels fleet_copy -c "INSERT INTO vessel (code, name) VALUES ('aurora', 'Aurora')"
t=$(now)
sql shore fleet_shore -c "\\copy (SELECT $cols FROM seafarer WHERE vessel_code = 'aurora') TO STDOUT" \
  | sql vessels fleet_copy -c "\\copy seafarer ($cols) FROM STDIN"
copy=$(since "$t")
echo "onboarding $held rows: fleetsync sync ${onboard} s ($n exchanges, $down bytes down), plain COPY ${copy} s; rate ratio $(python3 -c "print(round($copy / $onboard, 3))") (target >= 0.5); with the shore's init: $(python3 -c "print(round($copy / ($onboard + $shore_init), 3))")"
if [ "${EVENTS:-1}" = 1 ]; then
  # The same onboarding with catch-up pages as events (what a vessel before bulk pages gets):
  # aurora's database made again, empty, so that the shore starts its catch-up over.
  sql vessels postgres -c "DROP DATABASE fleet_aurora" -c "CREATE DATABASE fleet_aurora"
  sql vessels fleet_aurora -f examples/schema.sql; "$bin" init --config "$work/aurora.toml" >/dev/null
  t=$(now); FLEETSYNC_BULK_CATCH_UP=off "$bin" sync --config "$work/aurora.toml" > "$work/aurora-events.log"; events=$(since "$t")
  read -r eu ed en < <(bytes_of < "$work/aurora-events.log")
  held=$(sql vessels fleet_aurora -At -c "SELECT count(*) FROM seafarer")
  t=$(now)
  sql vessels fleet_copy -c "TRUNCATE seafarer CASCADE"
  sql shore fleet_shore -c "\\copy (SELECT $cols FROM seafarer WHERE vessel_code = 'aurora') TO STDOUT" \
    | sql vessels fleet_copy -c "\\copy seafarer ($cols) FROM STDIN"
  copy2=$(since "$t")
  echo "onboarding $held rows as event pages: fleetsync sync ${events} s ($en exchanges, $ed bytes down), plain COPY ${copy2} s; rate ratio $(python3 -c "print(round($copy2 / $events, 3))"); bulk pages against event pages: $(python3 -c "print(round($events / $onboard, 2))")x faster"
fi

fi
if part verify; then
echo "==> 2. verify of aurora's $held-row partition"
verify() { local t; t=$(now); "$bin" verify --config "$work/aurora.toml" --json "$@" > "$work/verify.json" || true; echo "$(since "$t") $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["differing"], r["bytes"], r["round_trips"], r["repaired"])' "$work/verify.json")"; }
read -r s d b r _ < <(verify); echo "no difference: ${s} s, $b bytes, $r round trip(s), $d differing (target <= 65536 bytes, <= 10 s)"
sql vessels fleet_aurora <<'SQL'
SET session_replication_role = replica;
UPDATE seafarer SET full_name = 'renamed by hand' WHERE id IN (SELECT id FROM seafarer ORDER BY md5(id::text) LIMIT 3);
UPDATE seafarer SET notes = 'note by hand' WHERE id IN (SELECT id FROM seafarer ORDER BY md5(id::text) OFFSET 3 LIMIT 2);
DELETE FROM seafarer WHERE id IN (SELECT id FROM seafarer ORDER BY md5(id::text) OFFSET 5 LIMIT 1);
INSERT INTO seafarer (id, vessel_code, full_name) VALUES ('018f0000-0000-7000-8000-000000000007', 'aurora', 'stowaway');
SQL
read -r s d b r _ < <(verify); echo "7 rows changed behind capture: ${s} s, $b bytes, $r round trip(s), $d differing"
read -r s d b r p < <(verify --repair); echo "verify --repair: ${s} s, $b bytes, $r round trip(s), $p repaired"
read -r s d b r _ < <(verify); echo "verify after the repair: ${s} s, $b bytes, $r round trip(s), $d differing"

fi
part catchup || exit 0
echo "==> 3. catch-up against replay: $TOUCHED rows x $ROUNDS updates per vessel"
"$bin" sync --config "$work/borealis.toml" >/dev/null; "$bin" sync --config "$work/cygnus.toml" >/dev/null
t=$(now)
for r in $(seq "$ROUNDS"); do echo "UPDATE seafarer SET rank = 'rank $r', notes = 'round $r' WHERE vessel_code IN ('borealis', 'cygnus');"; done | sql shore fleet_shore
echo "the shore's $((2 * TOUCHED * ROUNDS)) updates: $(since "$t") s"
# cygnus is silent past retention (and aurora idle): what borealis applies is pruned behind it.
sql shore fleet_shore -c "UPDATE fleetsync.sync_state SET last_success = now() - interval '40 days' WHERE peer IN ('cygnus', 'aurora')"
t=$(now); "$bin" sync --config "$work/borealis.toml" --max-exchanges 1000000 > "$work/borealis-sync.log"; replay=$(since "$t")
read -r ru rd rn < <(bytes_of < "$work/borealis-sync.log")
left=$(sql shore fleet_shore -At -c "SELECT format('%s events kept, pruned below %s of %s', (SELECT count(*) FROM fleetsync.outbox WHERE pos IS NOT NULL), pruned_below, last_pos) FROM fleetsync.outbox_counter")
echo "borealis replayed the events: ${replay} s, $rd bytes down, $ru up, $rn exchanges; then on the shore: $left"
t=$(now); "$bin" sync --config "$work/cygnus.toml" > "$work/cygnus-sync.log"; catchup=$(since "$t")
read -r cu cd cn < <(bytes_of < "$work/cygnus-sync.log")
same=$(for v in borealis cygnus; do sql vessels "fleet_$v" -At -c "SELECT count(*) FILTER (WHERE rank = 'rank $ROUNDS') FROM seafarer"; done | paste -sd/)
echo "cygnus caught up from table state: ${catchup} s, $cd bytes down, $cu up, $cn exchanges"
echo "catch-up against replay: time $(python3 -c "print(round($catchup / $replay, 4))")x, bytes down $(python3 -c "print(round($cd / max($rd, 1), 4))")x; rows at the final rank (borealis/cygnus): $same"
