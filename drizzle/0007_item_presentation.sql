-- The waiting page's title and return URL, and the proof of work asked at an invite's join.
ALTER TABLE "items" ADD COLUMN IF NOT EXISTS "waiting_room" jsonb;--> statement-breakpoint
ALTER TABLE "items" ADD COLUMN IF NOT EXISTS "pow" jsonb;
