CREATE TABLE IF NOT EXISTS fleetsync.intake_p (table_name text, row_id uuid, op "char", version bigint, base_version bigint, delta jsonb);
SELECT replace(replace(pg_get_functiondef(:'capture_function'::regproc), 'INSERT INTO fleetsync.outbox (table_name, row_id, op, version, base_version, delta)', 'INSERT INTO fleetsync.intake_p (table_name, row_id, op, version, base_version, delta)'),
  'BEGIN
  IF TG_OP', 'BEGIN
  IF current_setting(''fleetsync.applying'', true) = ''on'' THEN RETURN NEW; END IF;
  IF TG_OP') \gexec
SELECT format($f$DROP TRIGGER zz_fleetsync_capture ON bench_item; DROP TRIGGER IF EXISTS zz_fleetsync_capture_update ON bench_item; CREATE TRIGGER zz_fleetsync_capture BEFORE INSERT OR UPDATE ON bench_item FOR EACH ROW EXECUTE FUNCTION %s()$f$, :'capture_function') \gexec
SELECT prosrc FROM pg_proc WHERE oid = :'capture_function'::regproc;
