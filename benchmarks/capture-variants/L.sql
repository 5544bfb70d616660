-- Capture by logical decoding: no capture trigger; the table logs whole old rows (REPLICA IDENTITY
-- FULL, so that a decoder can tell which columns changed) and a logical slot keeps the WAL. A
-- minimal PL/pgSQL trigger still advances sync_version. Run with SERVER_SETTINGS="-c wal_level=logical".
SELECT format('DROP TRIGGER zz_fleetsync_capture_update ON bench_item') \gexec
ALTER TABLE bench_item REPLICA IDENTITY FULL;
SELECT pg_create_logical_replication_slot('fleetsync_bench', 'pgoutput');
SELECT format($f$CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $b$
BEGIN
  IF current_setting('fleetsync.applying', true) = 'on' THEN RETURN NEW; END IF;
  NEW.sync_version := OLD.sync_version + 1;
  RETURN NEW;
END $b$$f$, :'capture_function') \gexec
SELECT format('ALTER FUNCTION %s() RESET ALL', :'capture_function') \gexec
SELECT format('CREATE TRIGGER zz_fleetsync_version BEFORE UPDATE ON bench_item FOR EACH ROW EXECUTE FUNCTION %s()', :'capture_function') \gexec
CREATE PUBLICATION fleetsync_bench FOR TABLE bench_item;
