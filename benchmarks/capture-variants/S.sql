-- The old and new rows stored whole in a typed table, the version advanced in the insert, no column
-- compared (the record comparison only skips updates that change nothing): the least a capture
-- trigger that writes a row can do. The delta and the clocks would be the sequencer's.
CREATE TABLE IF NOT EXISTS fleetsync.log_s (seq bigint, base_version bigint, old_row bench_item, new_row bench_item);
SELECT format($f$CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $b$
BEGIN
  IF NEW IS NOT DISTINCT FROM OLD OR current_setting('fleetsync.applying', true) = 'on' THEN RETURN NEW; END IF;
  INSERT INTO fleetsync.log_s VALUES (greatest(OLD.sync_version + 1, nextval('fleetsync.lamport')), OLD.sync_version, OLD, NEW)
    RETURNING seq INTO NEW.sync_version;
  RETURN NEW;
END $b$$f$, :'capture_function') \gexec
SELECT format('ALTER FUNCTION %s() RESET ALL', :'capture_function') \gexec
