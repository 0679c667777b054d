import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, inject } from 'vitest';
import { connectDb, type DbHandle } from '../../src/db/client.js';

/** The comment that marks a database done (test/global-setup.ts, dropFinished, looks for it). */
const DONE_COMMENT = 'floodgate test: done';

/**
 * A database of this test file's own, cloned from the migrated template. After the file it is
 * marked done, and the run's global setup drops it (a drop forces a checkpoint of the whole
 * server: ~1 s on a busy machine, which test/global-setup.ts pays beside the files, for many at once).
 */

export async function testDb(): Promise<DbHandle & { url: string }> {
  const name = `${inject('pgDbPrefix')}${randomBytes(5).toString('hex')}`;
  const admin = postgres(inject('pgAdminUrl'), { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name} template ${inject('pgTemplate')}`);
  const url = new URL(inject('pgAdminUrl'));
  url.pathname = `/${name}`;
  const handle = connectDb(url.toString(), { max: 5 });
  afterAll(async () => {
    await handle.close();
    await admin.unsafe(`comment on database ${name} is '${DONE_COMMENT}'`);
    await admin.end({ timeout: 2 });
  });
  return { ...handle, url: url.toString() };
}

/**
 * Holds what `take` locks in a transaction of `sql` until `release` is called, as a long report or
 * an operator's manual fix would; resolves once the lock is taken.
 */
export async function holdLock(sql: postgres.Sql, take: (t: postgres.TransactionSql) => Promise<unknown>): Promise<{ release: () => Promise<void> }> {
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let locked!: () => void;
  const taken = new Promise<void>((r) => (locked = r));
  const tx = sql.begin(async (t) => {
    await take(t);
    locked();
    await held;
  });
  await Promise.race([taken, tx]);
  return { release: () => (release(), tx.then(() => undefined)) };
}

/** Holds an item's stock row locked (`for update`) until `release` (holdLock). */
export const holdStockRow = (sql: postgres.Sql, itemId: string) => holdLock(sql, (t) => t`select total from item_stock where item_id = ${itemId} for update`);
