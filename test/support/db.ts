import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, inject } from 'vitest';
import { connectDb, type DbHandle } from '../../src/db/client.js';

/** A database of this test file's own, cloned from the migrated template and dropped afterwards. */
export async function testDb(): Promise<DbHandle & { url: string }> {
  const name = `fg_t_${randomBytes(5).toString('hex')}`;
  const admin = postgres(inject('pgAdminUrl'), { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name} template ${inject('pgTemplate')}`);
  const url = new URL(inject('pgAdminUrl'));
  url.pathname = `/${name}`;
  const handle = connectDb(url.toString(), { max: 5 });
  afterAll(async () => {
    await handle.close();
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end({ timeout: 2 });
  });
  return { ...handle, url: url.toString() };
}
