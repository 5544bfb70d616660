CREATE TABLE IF NOT EXISTS fleetsync.intake_c (version bigint, table_name text, row_id uuid, op "char", base_version bigint, delta jsonb);
SELECT format($f$CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $b$ DECLARE u text[]; d jsonb; v bigint; BEGIN
  IF current_setting($$fleetsync.applying$$, true) = $$on$$ THEN RETURN NEW; END IF;
  u := ARRAY[CASE WHEN NEW.k IS NOT DISTINCT FROM OLD.k THEN $$k$$ END, CASE WHEN NEW.code IS NOT DISTINCT FROM OLD.code THEN $$code$$ END, CASE WHEN NEW.title IS NOT DISTINCT FROM OLD.title THEN $$title$$ END, CASE WHEN NEW.quantity IS NOT DISTINCT FROM OLD.quantity THEN $$quantity$$ END, CASE WHEN NEW.hits IS NOT DISTINCT FROM OLD.hits THEN $$hits$$ END, CASE WHEN NEW.unit_price IS NOT DISTINCT FROM OLD.unit_price THEN $$unit_price$$ END, CASE WHEN NEW.weight_kg IS NOT DISTINCT FROM OLD.weight_kg THEN $$weight_kg$$ END, CASE WHEN NEW.active IS NOT DISTINCT FROM OLD.active THEN $$active$$ END, CASE WHEN NEW.due_on IS NOT DISTINCT FROM OLD.due_on THEN $$due_on$$ END, CASE WHEN NEW.created_at IS NOT DISTINCT FROM OLD.created_at THEN $$created_at$$ END, CASE WHEN NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN $$updated_at$$ END, CASE WHEN NEW.is_deleted IS NOT DISTINCT FROM OLD.is_deleted THEN $$is_deleted$$ END, $$id$$, $$sync_version$$, $$sync_clock$$];
  d := to_jsonb(NEW) - u;
  IF d = '{}' THEN RETURN NEW; END IF;
  v := greatest(OLD.sync_version + 1, nextval($$fleetsync.lamport$$));
  NEW.sync_version := v;
  NEW.sync_clock := OLD.sync_clock || (jsonb_object($${k,code,title,quantity,hits,unit_price,weight_kg,active,due_on,created_at,updated_at,is_deleted}$$::text[], array_fill(v || $$@bench$$, ARRAY[12])) - u);
  INSERT INTO fleetsync.intake_c VALUES (v, 'bench_item', NEW.id, 'U', OLD.sync_version, d);
  RETURN NEW; END $b$$f$, :'capture_function') \gexec
SELECT format($f$DROP TRIGGER zz_fleetsync_capture ON bench_item; DROP TRIGGER IF EXISTS zz_fleetsync_capture_update ON bench_item; CREATE TRIGGER zz_fleetsync_capture BEFORE INSERT OR UPDATE ON bench_item FOR EACH ROW EXECUTE FUNCTION %s()$f$, :'capture_function') \gexec
