#!/usr/bin/env bash
# The outbox page's cost with its delta converted to text once a row (now) and four times (as
# before), side by side on one throwaway PostgreSQL 15 cluster: 200,000 queued events (every
# other one for vessel aurora, the rest broadcast), a page of 1,000 read 40 times each, the two
# forms alternating. Prints min and median per form. Not part of the test suite.
#
#   bash benchmarks/outbox-page.sh
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root: the cluster is made as the postgres user through runuser" >&2; exit 1; }
pgbin=/usr/lib/postgresql/15/bin
[ -x $pgbin/initdb ] || { echo "PostgreSQL 15 is missing: apt-get install -y postgresql" >&2; exit 1; }
work=$(mktemp -d /tmp/fleetsync-outbox-page-XXXXXX)
chown postgres "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
trap 'runuser -u postgres -- $pgbin/pg_ctl -D "$work/d" stop -m fast >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
echo "==> a throwaway cluster on port $port"
runuser -u postgres -- $pgbin/initdb -D "$work/d" -A trust >/dev/null
runuser -u postgres -- $pgbin/pg_ctl -D "$work/d" -l "$work/log" -o "-p $port -c listen_addresses=127.0.0.1 -c fsync=off -c jit=off -c random_page_cost=1.1" start >/dev/null
sql() { psql -X -q -h 127.0.0.1 -p "$port" -U postgres "$@"; }
echo "==> 200,000 queued events"
sql -c "CREATE TABLE ob (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, pos bigint, table_name text NOT NULL, row_id uuid NOT NULL,
  op \"char\" NOT NULL, version bigint NOT NULL, base_version bigint NOT NULL, delta jsonb NOT NULL, origin text, vessel text, clocks jsonb);
  CREATE INDEX ob_pos ON ob (pos); CREATE INDEX ob_vessel_pos ON ob (vessel, pos);
  INSERT INTO ob (pos, table_name, row_id, op, version, base_version, delta, vessel)
  SELECT i, 'bench_item', gen_random_uuid(), 'U', i, i, jsonb_build_object('hits', i, 'name', 'some text value ' || i),
    CASE WHEN i % 2 = 0 THEN 'aurora' ELSE '*' END FROM generate_series(1, 200000) i;"
sql -c "VACUUM ANALYZE ob"
# The page as OutboxReader.page builds it, before (delta::text written out four times) and now.
page() {  # $1: the delta's text in the row, $2: what the sources add
  echo "SELECT * FROM (
    SELECT pos, table_name, row_id, op::text AS op, version, base_version, $1 AS delta, clocks::text AS clocks, origin,
      (octet_length($1) + 48) AS bytes, row_number() OVER w AS n, sum(octet_length($1) + 48) OVER w - (octet_length($1) + 48) AS before
    FROM ((SELECT *$2 FROM ob WHERE vessel = \$2 AND pos > \$1 ORDER BY pos LIMIT \$3)
          UNION ALL (SELECT *$2 FROM ob WHERE vessel = '*' AND pos > \$1 ORDER BY pos LIMIT \$3)) o
    WINDOW w AS (ORDER BY pos) ORDER BY pos LIMIT \$3) q WHERE n <= 2 OR before <= \$4 ORDER BY pos"
}
{
  echo "PREPARE before(bigint, text, bigint, bigint) AS $(page 'delta::text' '');"
  echo "PREPARE now(bigint, text, bigint, bigint) AS $(page 'delta_text' ', delta::text AS delta_text');"
  echo '\o /dev/null'
  echo '\timing on'
  for _ in $(seq 1 40); do
    echo "EXECUTE before(100000, 'aurora', 1001, 1048576);"
    echo "EXECUTE now(100000, 'aurora', 1001, 1048576);"
  done
} > "$work/page.sql"
echo "==> a page of 1,000 events, 40 times each, alternating"
sql -f "$work/page.sql" 2>&1 | awk '/^Time/{n++; print (n % 2 == 1 ? "before" : "now"), $2}' > "$work/times"
for form in before now; do
  grep "^$form " "$work/times" | awk '{print $2}' | sort -n | awk -v f="$form" '{v[NR]=$1} END{printf "%-7s min %.2f ms, median %.2f ms\n", f, v[1], v[int((NR+1)/2)]}'
done
