import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { migrateDb } from '../src/db/client.js';
import { recordingLogger } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';

/**
 * Migrations on databases of every age. drizzle applies each migration once, by its time, and never
 * again: a migration edited after its release never reaches a database that applied it (a review:
 * 0004 and 0013 were, and a database migrated in between lacked `items.archived_at`, and its stock
 * trigger undid a total written by hand or by an older daemon). So released migrations are pinned
 * here, byte for byte; a fix is a new migration.
 */
const folder = path.resolve(import.meta.dirname, '../drizzle');
const released: Record<string, string> = {
  '0000_create_items_and_gate_audit.sql': '51945d8d724b3ad93f9f06d64ecec4a0721e03e719d6e0f4241b046a315dcb32',
  '0001_add_orders_claims_stock_and_outcome_ledger.sql': 'b2b5a0f26322a8a5a8e340ec880c1d5540dbbb4344a88b1cb14793189ffb582d',
  '0002_sell_in_one_statement.sql': '20f7a9dedb1cf908e313c74d93cf810cfc0aacab71a078b5c5dec3371dd4d9e6',
  '0003_add_ticket_outcomes_dead.sql': '7e9882a79ef4405e1e1790d1158e3e55c20e7ab3aa06aa0f6aa1f23322d9e902',
  '0004_ticket_refs_and_bound_replays.sql': 'ab3a3fd0cf405b58dc12f8985364d964d75f70c35126fe0bc690a6277605904b',
  '0005_order_reservations.sql': '8833b4b63809f3931ec799721a3fcb6a6f5d4665c4e1fdebfb9ffb880e303b29',
  '0006_access_and_tokens.sql': 'ec67519c3ebdb06d85a1b56d2818f1ad901b21ce6af6c33c471240d97d4cd741',
  '0007_item_presentation.sql': '89fd20dc612f1e449db23b2f3484563c7b6fddcbb830a97f75f50f5f79e683e4',
  '0008_item_lines.sql': '3786c2971d26765cb4bf9b9af422078facedd4508a2fa2f319303bbc5e8a9c6a',
  '0009_sell_many_items.sql': '079dde15d8bd4cf8efa72e3c967026b006403af8fa848b6b2d9ba98168da5423',
  '0010_voided_tickets.sql': 'c870f6f6b3a34b67b8b95c1e8811abf6815dcbd9e8d0b63ab0ef58dc1413fb39',
  '0011_sell_orders_in_one_statement.sql': '0dc20763e578768f77c00a5c9f61856a7b46c93e14df5f6592ff4c3b06a2fdb9',
  '0012_sell_claims_in_one_statement.sql': 'fefd8e516880663c698cfd7a4fd478fe23a2a2c91b4f06814f098c3b62d2c9f3',
  '0013_stock_target.sql': 'b465de8119fd687521aead199c4496723127023d3e05458b6ba6b8872e89f273',
  '0014_revoked_tokens.sql': '4d15be4eda0bbe3a5c99567f8f865848aaa2a225dc70a1a88eea313802e255b0',
  '0015_user_blocks.sql': '2158d74271631fbaf71654f942e63c14f421b2db9c25e6cfb1f6b2aedf5c5200',
  '0016_item_secrets.sql': 'e42558e2d96ddc0c076f07a03e9d3191ddc5c5dc5b2f19c35ad2a880b4caa0c0',
  '0017_op_revs.sql': 'be92aa03fff934f2b8df49dbde9b0eae92e1b819792bd1093cbe794d3ec7d9d3',
  '0018_voided_tickets_take_no_place.sql': '217301c1e3ff9d2465a2bec9faa5ea056874e9f8b4a8d7facb7ce4c053cb2945',
  '0019_token_key_signs_from.sql': '7a9b59b2ac8a81b2064d358a5e3ddaff4c4af9803101c75cad949b7fdc2c7341',
  '0020_invite_uses.sql': '47ee4ec4ead5274b1324ef172a9f8147676c1b1990b423483cd6ab69e995250f',
  '0021_voided_tickets_by_item.sql': '673d24a67b00c57fb11a6d18ea80d28d255d1019e5f14905a9621e524cb3ded9',
  '0022_cut_reads_by_item.sql': '6ad8b7b9273354b880ca23a4da40981cfc1cd455378c62d94543f1e112c816e3',
  '0023_reapply_edited_migrations.sql': '6a597ca8a3bb8558666834153fc691986928262697f28b5db155f6478e8a9a32',
  '0024_sales_wait_for_locks_10s.sql': 'f01c70eaaa0ecbe07a1d8a1371855102c9121007188336af8a82db202bce87de',
  '0025_pre_queue_draw_sizes.sql': 'fe4754d4458b5aac58d15edbd0e3830114585307d55ed7fc323865d8bd3b70ae',
};

const edited = await testDb();
const newer = await testDb();
const together = await testDb();

describe('the migrations', () => {
  it('are never edited once released, and every one is in the journal', () => {
    const files = readdirSync(folder).filter((f) => f.endsWith('.sql')).sort();
    const hashes = Object.fromEntries(files.map((f) => [f, createHash('sha256').update(readFileSync(path.join(folder, f))).digest('hex')]));
    // A new migration is pinned as it is added; a changed hash is an edit of a released one.
    expect(hashes).toEqual(released);
    const journal = JSON.parse(readFileSync(path.join(folder, 'meta/_journal.json'), 'utf8')) as { entries: { tag: string; when: number }[] };
    expect(journal.entries.map((e) => `${e.tag}.sql`)).toEqual(files);
    const whens = journal.entries.map((e) => e.when);
    expect(whens).toEqual([...whens].sort((a, b) => a - b));
  });

  it("bring a database migrated between an edited migration's release and its edit up to the edit, saying what they apply", { timeout: 60_000 }, async () => {
    const db = edited;
    // As 0013 was released (its trigger undid a total set by itself), and as 0004 was before its edit.
    await db.sql.unsafe(`CREATE OR REPLACE FUNCTION floodgate_stock_follows_target() RETURNS trigger
      LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.target IS NOT NULL THEN
          NEW.total := greatest(NEW.target, NEW.sold);
        END IF;
        RETURN NEW;
      END $$`);
    await db.sql`alter table items drop column archived_at`;
    // (0023 and every migration after it: drizzle applies those after the last one applied.)
    await db.sql`delete from drizzle.__drizzle_migrations where created_at >= 1798200000000`;
    const logged = recordingLogger('info', 100);
    await migrateDb(db.url, logged.log);
    expect(logged.lines()).toMatch(/"migrations":\["0023_reapply_edited_migrations"[^\]]*\],"msg":"applying migrations"/);
    expect((await db.sql`select count(*)::int as n from information_schema.columns where table_name = 'items' and column_name = 'archived_at'`)[0].n).toBe(1);
    await db.sql`insert into item_stock (item_id, total) values ('edited', 5)`;
    await db.sql`update item_stock set total = 9 where item_id = 'edited'`;
    expect((await db.sql`select total, target from item_stock where item_id = 'edited'`)[0]).toEqual({ total: 9, target: 9 });
  });

  it('applied by one of two daemons starting together, are said applied by that one only', { timeout: 60_000 }, async () => {
    // Both read what was due before the lock, and both said they applied it (a review).
    const db = together;
    const journal = JSON.parse(readFileSync(path.join(folder, 'meta', '_journal.json'), 'utf8')) as { entries: { when: number; tag: string }[] };
    const last = journal.entries[journal.entries.length - 1];
    await db.sql`delete from drizzle.__drizzle_migrations where created_at = ${last.when}`;
    // The lock held, so both have read what is due before either applies it.
    const holder = await db.sql.reserve();
    await holder`select pg_advisory_lock(727274)`;
    const logs = [recordingLogger('info', 100), recordingLogger('info', 100)];
    const runs = logs.map((l) => migrateDb(db.url, l.log));
    try {
      for (const l of logs) await expect.poll(() => l.lines()).toContain('applying migrations');
    } finally {
      await holder`select pg_advisory_unlock(727274)`;
      holder.release();
    }
    await Promise.all(runs);
    const said = logs.map((l) => (l.lines().includes('"msg":"migrations applied"') ? 'applied' : l.lines().includes('applied by another daemon meanwhile') ? 'other' : 'nothing'));
    expect(said.sort()).toEqual(['applied', 'other']);
  });

  it('say so when the database is newer than the build, and apply nothing then', { timeout: 60_000 }, async () => {
    const db = newer;
    await db.sql`insert into drizzle.__drizzle_migrations (hash, created_at) values ('a-newer-build', 1898200000000)`;
    const logged = recordingLogger('info', 100);
    await migrateDb(db.url, logged.log);
    expect(logged.lines()).toContain('the database schema is newer than this build');
    expect(logged.lines()).not.toContain('applying migrations');
  });
});
