CREATE TABLE "gate_audit" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"item_id" text NOT NULL,
	"actor" text NOT NULL,
	"key_id" text,
	"before" jsonb,
	"after" jsonb NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "items" (
	"item_id" text PRIMARY KEY NOT NULL,
	"handler" text NOT NULL,
	"config" jsonb NOT NULL,
	"capacity" integer,
	"abandon_after_ms" integer,
	"opens_at" timestamp with time zone,
	"closes_at" timestamp with time zone,
	"gate" jsonb NOT NULL,
	"closed_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE INDEX "gate_audit_item_time_idx" ON "gate_audit" USING btree ("item_id","created_at");