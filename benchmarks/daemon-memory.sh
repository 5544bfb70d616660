#!/usr/bin/env bash
# The vessel daemon's resident memory while idle (issue 19 target: <= 32 MB after 1,000 idle
# exchanges, <= 64 MB peak): a shore and a vessel on throwaway PostgreSQL 15 clusters, `fleetsync
# serve`, and `fleetsync run` with interval_seconds = 1 and long_poll = false, so that it exchanges
# once a second with nothing to send. Prints the resident size every 100 exchanges, then the
# resident and peak sizes at the end. EXTRA_SED='s#...#...#' edits the vessel's configuration
# further (e.g. wake_on_change = false).
#
#   bash benchmarks/daemon-memory.sh [EXCHANGES]      (default 1000; needs a release build:
#   swift build -c release --product fleetsync)
set -euo pipefail
cd "$(dirname "$0")/.."
EXCHANGES=${1:-1000}
bin=${FLEETSYNC_BIN:-.build/release/fleetsync}
[ -x "$bin" ] || { echo "no $bin: run swift build -c release --product fleetsync first" >&2; exit 1; }
pgbin=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d /tmp/fleetsync-daemon-memory-XXXXXX); chmod 777 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for node in shore aurora; do as_pg "$pgbin/pg_ctl" -D "$work/$node" -m immediate stop >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
declare -A port
for node in shore aurora; do
  port[$node]=$(free_port)
  as_pg "$pgbin/initdb" -D "$work/$node" -U postgres -A trust --no-sync >/dev/null
  as_pg "$pgbin/pg_ctl" -D "$work/$node" -o "-p ${port[$node]} -k $work -c listen_addresses=127.0.0.1 -c fsync=off" -l "$work/$node.log" -w start >/dev/null
  psql -X -q -h 127.0.0.1 -p "${port[$node]}" -U postgres -d postgres -c "CREATE DATABASE fleet_$node"
  psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${port[$node]}" -U postgres -d "fleet_$node" -f examples/schema.sql
done
http_port=$(free_port)
sed -e "s#127.0.0.1:5432#127.0.0.1:${port[shore]}#" -e "s#0.0.0.0:8080#127.0.0.1:$http_port#" \
    -e "s#/var/lib/fleetsync/keys#$work/keys-shore#" examples/shore.toml > "$work/shore.toml"
sed -e "s#127.0.0.1:5432#127.0.0.1:${port[aurora]}#" -e "s#http://127.0.0.1:8080#http://127.0.0.1:$http_port#" \
    -e "s#/var/lib/fleetsync/keys#$work/keys-aurora#" -e "s#/etc/fleetsync/shore-identity.pub#$work/shore-identity.pub#" \
    -e "s#^interval_seconds = 30#interval_seconds = 1#" -e "s#^long_poll = true#long_poll = false#" \
    -e "s#^verify_interval_seconds = 86400#verify_interval_seconds = 0#" ${EXTRA_SED:+-e "$EXTRA_SED"} examples/vessel.toml > "$work/vessel.toml"
for c in shore vessel; do "$bin" init --config "$work/$c.toml" >/dev/null; "$bin" keygen --config "$work/$c.toml" >/dev/null; done
cp "$work/keys-shore/identity.pub" "$work/shore-identity.pub"
"$bin" enroll --config "$work/shore.toml" --vessel aurora --identity "$work/keys-aurora/identity.pub" >/dev/null
psql -X -q -h 127.0.0.1 -p "${port[shore]}" -U postgres -d fleet_shore -c "INSERT INTO vessel (code, name) VALUES ('aurora', 'MV Aurora')"
FLEETSYNC_LOG_LEVEL=warning "$bin" serve --config "$work/shore.toml" > "$work/serve.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do grep -q listening "$work/serve.log" 2>/dev/null && break; sleep 0.2; done
"$bin" sync --config "$work/vessel.toml" >/dev/null
kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
log="$work/daemon.log"
FLEETSYNC_LOG_LEVEL=info "$bin" run --config "$work/vessel.toml" > "$log" 2>&1 & daemon=$!; pids+=($daemon)
next=100
while :; do
  n=$(grep -c "exchange done" "$log" || true)
  if [ "$n" -ge "$next" ] || [ "$n" -ge "$EXCHANGES" ]; then
    echo "after $n idle exchanges: resident $(( $(kb $daemon VmRSS) / 1024 )) MB"
    next=$((next + 100))
  fi
  [ "$n" -ge "$EXCHANGES" ] && break
  sleep 1
done
echo "vessel daemon after $EXCHANGES idle exchanges: $(( $(kb $daemon VmRSS) / 1024 )) MB resident, peak $(( $(kb $daemon VmHWM) / 1024 )) MB"
kill -TERM $daemon; wait $daemon 2>/dev/null || true
