-- The stock the operator asked for. `total` could never go under `sold` (a check), so lowering the
-- stock of an item below what it had sold or reserved kept `total` at `sold`, for good: units
-- released afterwards (a reservation released or expired) were sold again, and an item set to 1
-- ended with 3 live orders. `target` keeps what was asked, and `total` follows it on every change
-- of the row: total = greatest(target, sold), so units released above the target are gone, not
-- for sale, and the check holds. Rows without a target (none after this migration) are left as they are.
ALTER TABLE item_stock ADD COLUMN IF NOT EXISTS target integer;
--> statement-breakpoint
UPDATE item_stock SET target = total WHERE target IS NULL;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION floodgate_stock_follows_target() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.target IS NULL THEN NEW.target := NEW.total; END IF;
  ELSIF NEW.total IS DISTINCT FROM OLD.total AND NEW.target IS NOT DISTINCT FROM OLD.target THEN
    -- total set by itself (a daemon from before this migration, in a rolling upgrade, or SQL by
    -- hand): that is the stock asked for, not a change to undo.
    NEW.target := NEW.total;
  END IF;
  IF NEW.target IS NOT NULL THEN
    NEW.total := greatest(NEW.target, NEW.sold);
  END IF;
  RETURN NEW;
END $$;
--> statement-breakpoint
DROP TRIGGER IF EXISTS item_stock_follows_target ON item_stock;
--> statement-breakpoint
CREATE TRIGGER item_stock_follows_target BEFORE INSERT OR UPDATE ON item_stock
  FOR EACH ROW EXECUTE FUNCTION floodgate_stock_follows_target();
