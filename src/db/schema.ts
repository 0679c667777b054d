import { bigserial, index, integer, jsonb, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/** The durable definition of every line; Redis is rebuilt from it after a flush. */
export const items = pgTable('items', {
  itemId: text('item_id').primaryKey(),
  handler: text('handler').notNull(),
  config: jsonb('config').notNull().$type<Record<string, unknown>>(),
  capacity: integer('capacity'),
  abandonAfterMs: integer('abandon_after_ms'),
  opensAt: timestamp('opens_at', { withTimezone: true, mode: 'date' }),
  closesAt: timestamp('closes_at', { withTimezone: true, mode: 'date' }),
  gate: jsonb('gate').notNull().$type<Record<string, unknown>>(),
  closedAt: timestamp('closed_at', { withTimezone: true, mode: 'date' }),
  createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
});

/** Every operator change to a gate (and later, every large automatic one). */
export const gateAudit = pgTable(
  'gate_audit',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    itemId: text('item_id').notNull(),
    actor: text('actor').notNull(),
    keyId: text('key_id'),
    before: jsonb('before').$type<Record<string, unknown>>(),
    after: jsonb('after').notNull().$type<Record<string, unknown>>(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  },
  (t) => [index('gate_audit_item_time_idx').on(t.itemId, t.createdAt)],
);
