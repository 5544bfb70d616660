#!/usr/bin/env bash
# Two measurements behind two choices of the data path, side by side in one run on a throwaway
# PostgreSQL 15 cluster (fsync off):
#
# 1. Queue page with statistics gathered when the outbox was nearly empty, BACKLOG events waiting
#    (half for the vessel, half broadcast): the former single-condition page (WHERE vessel IN
#    (v, '*') ... ORDER BY pos LIMIT) against the page FleetSync now runs (one ordered, limited
#    index scan per source, merged). Prints milliseconds per read (median of READS) and the ratio.
# 2. Waking the vessel daemon: single-row UPDATE throughput (pgbench, CLIENTS clients) on a plain
#    table against the same table with a statement trigger that sends NOTIFY (what a LISTEN-based
#    wake would need), alternating ROUNDS times. FleetSync instead watches the capture log.
#
#   bash benchmarks/queue-and-wake.sh        (BACKLOG=100000 READS=21 ROUNDS=3 SECONDS_PER_RUN=8 CLIENTS=2)
set -euo pipefail
BACKLOG=${BACKLOG:-100000}; READS=${READS:-21}; ROUNDS=${ROUNDS:-3}; SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}; CLIENTS=${CLIENTS:-2}
BIN=/usr/lib/postgresql/15/bin
dir=$(mktemp -d /tmp/fleetsync-bench-XXXXXX); chown postgres "$dir"
port=$((20000 + RANDOM % 20000))
as_pg() { runuser -u postgres -- "$@"; }
as_pg $BIN/initdb -D "$dir/data" -A trust -U postgres >/dev/null
as_pg $BIN/pg_ctl -D "$dir/data" -o "-p $port -k $dir -c fsync=off -c synchronous_commit=off -c listen_addresses=''" -l "$dir/log" -w start >/dev/null
trap 'as_pg $BIN/pg_ctl -D "$dir/data" -m immediate stop >/dev/null 2>&1; rm -rf "$dir"' EXIT
q() { psql -X -q -h "$dir" -p "$port" -U postgres -d postgres "$@"; }
q <<SQL
CREATE TABLE outbox (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, pos bigint, table_name text NOT NULL, row_id uuid NOT NULL,
  op "char" NOT NULL, version bigint NOT NULL, base_version bigint NOT NULL, delta jsonb NOT NULL, origin text, vessel text, clocks jsonb);
CREATE INDEX outbox_pos ON outbox (pos);
CREATE INDEX outbox_vessel_pos ON outbox (vessel, pos);
ALTER TABLE outbox SET (autovacuum_enabled = false);
ANALYZE outbox;
INSERT INTO outbox (pos, table_name, row_id, op, version, base_version, delta, vessel)
  SELECT i, 't', gen_random_uuid(), 'U', i, i, '{"name": "x"}', CASE WHEN i % 2 = 0 THEN 'aurora' ELSE '*' END FROM generate_series(1, $BACKLOG) i;
SQL
window='SELECT pos, delta::text, (octet_length(delta::text) + 48) AS bytes, row_number() OVER w AS n, sum(octet_length(delta::text) + 48) OVER w - (octet_length(delta::text) + 48) AS before'
old="SELECT * FROM ($window FROM outbox WHERE pos > 0 AND pos <= $BACKLOG AND vessel IN ('aurora', '*') AND origin IS DISTINCT FROM 'aurora' WINDOW w AS (ORDER BY pos) ORDER BY pos LIMIT 1001) q WHERE n <= 2 OR before <= 1048576 ORDER BY pos"
new="SELECT * FROM ($window FROM ((SELECT * FROM outbox WHERE vessel = 'aurora' AND pos > 0 AND pos <= $BACKLOG AND origin IS DISTINCT FROM 'aurora' ORDER BY pos LIMIT 1001) UNION ALL (SELECT * FROM outbox WHERE vessel = '*' AND pos > 0 AND pos <= $BACKLOG AND origin IS DISTINCT FROM 'aurora' ORDER BY pos LIMIT 1001)) o WINDOW w AS (ORDER BY pos) ORDER BY pos LIMIT 1001) q WHERE n <= 2 OR before <= 1048576 ORDER BY pos"
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_of() { for _ in $(seq "$READS"); do q -At -c "EXPLAIN (ANALYZE, FORMAT JSON) $1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Execution Time"])'; done | median; }
o=$(time_of "$old"); n=$(time_of "$new")
echo "queue page, $BACKLOG waiting, stale statistics: single condition ${o} ms, per-source index scans ${n} ms (median of $READS), ratio $(python3 -c "print(round($o/$n, 1))")x"

q <<'SQL'
CREATE TABLE wt (id int PRIMARY KEY, v int); INSERT INTO wt SELECT i, 0 FROM generate_series(1, 10000) i;
CREATE FUNCTION notify_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('fleetsync_change', ''); RETURN NULL; END $$;
SQL
printf '\\set id random(1, 10000)\nUPDATE wt SET v = v + 1 WHERE id = :id;\n' > "$dir/update.sql"
tps() { $BIN/pgbench -h "$dir" -p "$port" -U postgres -n -T "$SECONDS_PER_RUN" -c "$CLIENTS" -j "$CLIENTS" -f "$dir/update.sql" postgres 2>/dev/null | grep -oP 'tps = \K[0-9.]+' | head -1; }
for round in $(seq "$ROUNDS"); do
  q -c "DROP TRIGGER IF EXISTS n ON wt"; a=$(tps)
  q -c "CREATE TRIGGER n AFTER INSERT OR UPDATE OR DELETE ON wt FOR EACH STATEMENT EXECUTE FUNCTION notify_change()"; b=$(tps)
  echo "round $round: single-row UPDATEs, $CLIENTS clients: plain $a tps, with a NOTIFY statement trigger $b tps, ratio $(python3 -c "print(round($b/$a, 2))")"
done
