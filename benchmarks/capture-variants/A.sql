SELECT format($f$CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $b$ BEGIN RETURN NEW; END $b$$f$, :'capture_function') \gexec
