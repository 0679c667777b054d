-- The outcome ledger's dead letters: rows Postgres refused and done-stream entries the ledger could
-- not read, parked so the stream is acknowledged and the ledger goes on (src/db/outcomes.ts).
CREATE TABLE "ticket_outcomes_dead" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"item_id" text NOT NULL,
	"ticket_id" text,
	"fields" text NOT NULL,
	"error" text NOT NULL,
	"failed_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX "ticket_outcomes_dead_ticket_key" ON "ticket_outcomes_dead" USING btree ("ticket_id");--> statement-breakpoint
CREATE INDEX "ticket_outcomes_dead_item_failed_idx" ON "ticket_outcomes_dead" USING btree ("item_id","failed_at");
