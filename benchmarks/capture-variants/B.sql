CREATE UNLOGGED TABLE IF NOT EXISTS fleetsync.intake_b (row_id uuid);
ALTER TABLE fleetsync.intake_b SET LOGGED;
SELECT format($f$CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $b$ BEGIN INSERT INTO fleetsync.intake_b VALUES (NEW.id); RETURN NEW; END $b$$f$, :'capture_function') \gexec
