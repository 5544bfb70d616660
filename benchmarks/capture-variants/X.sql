-- The trigger records the old and the new row whole and leaves the diff (and the per-field clocks)
-- to the sequencer: the cost of a capture path that does not compare columns in PL/pgSQL.
CREATE TABLE IF NOT EXISTS fleetsync.capture_rows (seq bigint, base_version bigint, old_row bench_item, new_row bench_item);
SELECT format($f$CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $b$
DECLARE v bigint;
BEGIN
  IF current_setting('fleetsync.applying', true) = 'on' THEN RETURN NEW; END IF;
  IF NEW IS NOT DISTINCT FROM OLD THEN RETURN NEW; END IF;
  v := greatest(OLD.sync_version + 1, nextval('fleetsync.lamport'));
  NEW.sync_version := v;
  INSERT INTO fleetsync.capture_rows VALUES (v, OLD.sync_version, OLD, NEW);
  RETURN NEW;
END $b$$f$, :'capture_function') \gexec
SELECT format('ALTER FUNCTION %s() RESET ALL', :'capture_function') \gexec
