-- Two released migrations were edited in place, and drizzle applies a migration once, by its
-- time: a database migrated between the release and the edit kept the old SQL for good. Their
-- edits, again, as no-ops where they were applied: 0004's `items.archived_at` (retention's mark;
-- without it a daemon's retention and start fail), and 0013's stock trigger that adopts a `total`
-- written by itself (an older daemon in a rolling upgrade, SQL by hand) as the stock asked for,
-- and fills `target` on inserts (the old one undid such a change: 9 written, 5 kept). Migrations
-- are not edited once released (test/migrations.test.ts pins them).
ALTER TABLE items ADD COLUMN IF NOT EXISTS archived_at timestamp with time zone;
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
