-- The capture benchmarks' table: 12 columns of common types, :rows rows (psql variable).
-- Used by capture-overhead.sh and capture-instructions.sh.
CREATE TABLE bench_item (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  k integer NOT NULL UNIQUE,
  code text NOT NULL,
  title text,
  quantity integer NOT NULL,
  hits bigint NOT NULL DEFAULT 0,
  unit_price numeric(12,2),
  weight_kg double precision,
  active boolean NOT NULL,
  due_on date,
  created_at timestamptz NOT NULL,
  updated_at timestamptz
);
INSERT INTO bench_item (k, code, title, quantity, hits, unit_price, weight_kg, active, due_on, created_at, updated_at)
SELECT i, 'ITEM-' || lpad(i::text, 6, '0'), 'Spare part number ' || i || ' for the main engine',
       i % 500, 0, (i % 10000) / 100.0, (i % 977) * 0.25, i % 3 <> 0,
       date '2025-01-01' + (i % 365), timestamptz '2024-01-01 00:00+00' + i * interval '1 minute', NULL
FROM generate_series(1, :rows) AS i;
