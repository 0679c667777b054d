-- Sub-lines of an item's line (lines: K, 1-64): fixed once the item exists, since ticket ids encode K.
ALTER TABLE "items" ADD COLUMN IF NOT EXISTS "lines" integer DEFAULT 1 NOT NULL;
