ALTER TABLE "ticket_outcomes" ADD COLUMN IF NOT EXISTS "source" text;
--> statement-breakpoint
ALTER TABLE "items" ADD COLUMN IF NOT EXISTS "quotas" jsonb;
--> statement-breakpoint
ALTER TABLE "items" ADD COLUMN IF NOT EXISTS "token_ttl_ms" integer;
--> statement-breakpoint
ALTER TABLE "items" ADD COLUMN IF NOT EXISTS "pre_queue" jsonb;
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "token_keys" (
	"kid" text PRIMARY KEY NOT NULL,
	"alg" text NOT NULL,
	"private_jwk" jsonb NOT NULL,
	"public_jwk" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"retired_at" timestamp with time zone
);
