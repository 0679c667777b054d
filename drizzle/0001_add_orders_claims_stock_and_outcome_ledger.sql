CREATE TABLE "coupon_claims" (
	"claim_id" bigserial PRIMARY KEY NOT NULL,
	"item_id" text NOT NULL,
	"user_id" text NOT NULL,
	"ticket_id" text NOT NULL,
	"claim_no" integer NOT NULL,
	"per_user" integer NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "coupon_claims_ticket_id_key" UNIQUE("ticket_id"),
	CONSTRAINT "coupon_claims_item_user_no_key" UNIQUE("item_id","user_id","claim_no"),
	CONSTRAINT "coupon_claims_within_per_user" CHECK ("coupon_claims"."claim_no" >= 1 and "coupon_claims"."claim_no" <= "coupon_claims"."per_user")
);
--> statement-breakpoint
CREATE TABLE "item_stock" (
	"item_id" text PRIMARY KEY NOT NULL,
	"total" integer NOT NULL,
	"sold" integer DEFAULT 0 NOT NULL,
	CONSTRAINT "item_stock_sold_within_total" CHECK ("item_stock"."sold" >= 0 and "item_stock"."sold" <= "item_stock"."total")
);
--> statement-breakpoint
CREATE TABLE "orders" (
	"order_id" bigserial PRIMARY KEY NOT NULL,
	"item_id" text NOT NULL,
	"user_id" text NOT NULL,
	"ticket_id" text NOT NULL,
	"payload" jsonb,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "orders_ticket_id_key" UNIQUE("ticket_id"),
	CONSTRAINT "orders_item_user_key" UNIQUE("item_id","user_id")
);
--> statement-breakpoint
CREATE TABLE "ticket_outcomes" (
	"ticket_id" text PRIMARY KEY NOT NULL,
	"item_id" text NOT NULL,
	"user_id" text NOT NULL,
	"status" text NOT NULL,
	"reason" text,
	"result" jsonb,
	"joined_at" timestamp with time zone NOT NULL,
	"admitted_at" timestamp with time zone,
	"finished_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE INDEX "ticket_outcomes_item_finished_idx" ON "ticket_outcomes" USING btree ("item_id","finished_at");