CREATE TABLE IF NOT EXISTS fleetsync.intake_e (version bigint, table_name text, row_id uuid, op "char", base_version bigint, delta jsonb);
SELECT format($f$CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $b$ DECLARE d jsonb := '{}'; v bigint; c jsonb; k jsonb; BEGIN
  v := OLD.sync_version + 1; k := jsonb_build_array(v, $$bench$$); c := OLD.sync_clock;
  IF NEW.k IS DISTINCT FROM OLD.k THEN d := d || jsonb_build_object($$k$$, NEW.k); c := c || jsonb_build_object($$k$$, k); END IF;
  IF NEW.code IS DISTINCT FROM OLD.code THEN d := d || jsonb_build_object($$code$$, NEW.code); c := c || jsonb_build_object($$code$$, k); END IF;
  IF NEW.title IS DISTINCT FROM OLD.title THEN d := d || jsonb_build_object($$title$$, NEW.title); c := c || jsonb_build_object($$title$$, k); END IF;
  IF NEW.quantity IS DISTINCT FROM OLD.quantity THEN d := d || jsonb_build_object($$quantity$$, NEW.quantity); c := c || jsonb_build_object($$quantity$$, k); END IF;
  IF NEW.hits IS DISTINCT FROM OLD.hits THEN d := d || jsonb_build_object($$hits$$, NEW.hits); c := c || jsonb_build_object($$hits$$, k); END IF;
  IF NEW.unit_price IS DISTINCT FROM OLD.unit_price THEN d := d || jsonb_build_object($$unit_price$$, NEW.unit_price::text); c := c || jsonb_build_object($$unit_price$$, k); END IF;
  IF NEW.weight_kg IS DISTINCT FROM OLD.weight_kg THEN d := d || jsonb_build_object($$weight_kg$$, NEW.weight_kg); c := c || jsonb_build_object($$weight_kg$$, k); END IF;
  IF NEW.active IS DISTINCT FROM OLD.active THEN d := d || jsonb_build_object($$active$$, NEW.active); c := c || jsonb_build_object($$active$$, k); END IF;
  IF NEW.due_on IS DISTINCT FROM OLD.due_on THEN d := d || jsonb_build_object($$due_on$$, NEW.due_on); c := c || jsonb_build_object($$due_on$$, k); END IF;
  IF NEW.created_at IS DISTINCT FROM OLD.created_at THEN d := d || jsonb_build_object($$created_at$$, NEW.created_at); c := c || jsonb_build_object($$created_at$$, k); END IF;
  IF NEW.updated_at IS DISTINCT FROM OLD.updated_at THEN d := d || jsonb_build_object($$updated_at$$, NEW.updated_at); c := c || jsonb_build_object($$updated_at$$, k); END IF;
  IF NEW.is_deleted IS DISTINCT FROM OLD.is_deleted THEN d := d || jsonb_build_object($$is_deleted$$, NEW.is_deleted); c := c || jsonb_build_object($$is_deleted$$, k); END IF;
  IF d = '{}' THEN RETURN NEW; END IF;
  v := OLD.sync_version + 1;
  NEW.sync_version := v;
  NEW.sync_clock := c;
  INSERT INTO fleetsync.intake_e VALUES (v, 'bench_item', NEW.id, 'U', OLD.sync_version, d);
  RETURN NEW; END $b$$f$, :'capture_function') \gexec
