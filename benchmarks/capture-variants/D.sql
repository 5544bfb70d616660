-- Only the twelve IS DISTINCT FROM comparisons an update must make, nothing written and no version
-- advanced: what comparing the columns alone costs.
SELECT format($f$CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $b$
DECLARE m int := 0;
BEGIN
  IF NEW."k" IS DISTINCT FROM OLD."k" THEN m := m + 1; END IF;
  IF NEW."code" IS DISTINCT FROM OLD."code" THEN m := m + 1; END IF;
  IF NEW."title" IS DISTINCT FROM OLD."title" THEN m := m + 1; END IF;
  IF NEW."quantity" IS DISTINCT FROM OLD."quantity" THEN m := m + 1; END IF;
  IF NEW."hits" IS DISTINCT FROM OLD."hits" THEN m := m + 1; END IF;
  IF NEW."unit_price" IS DISTINCT FROM OLD."unit_price" THEN m := m + 1; END IF;
  IF NEW."weight_kg" IS DISTINCT FROM OLD."weight_kg" THEN m := m + 1; END IF;
  IF NEW."active" IS DISTINCT FROM OLD."active" THEN m := m + 1; END IF;
  IF NEW."due_on" IS DISTINCT FROM OLD."due_on" THEN m := m + 1; END IF;
  IF NEW."created_at" IS DISTINCT FROM OLD."created_at" THEN m := m + 1; END IF;
  IF NEW."updated_at" IS DISTINCT FROM OLD."updated_at" THEN m := m + 1; END IF;
  IF NEW."is_deleted" IS DISTINCT FROM OLD."is_deleted" THEN m := m + 1; END IF;
  RETURN NEW;
END $b$$f$, :'capture_function') \gexec
