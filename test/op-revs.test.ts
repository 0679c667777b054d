import { describe, expect, it } from 'vitest';
import { createOpRevs } from '../src/catalog/op-revs.js';
import { createOpRevRows } from '../src/db/op-revs.js';
import { FloodgateError } from '../src/kernel/errors.js';
import { createLogger } from '../src/kernel/logger.js';
import { createOpMarks } from '../src/queue/op-marks.js';
import { itemKeys, opRevsKey } from '../src/redis/keys.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

const { redis, newPrefix } = testRedis();
/** A database per test (a daemon's Postgres and its Redis prefix go together: revisions are per database). */
const dbs = await Promise.all(Array.from({ length: 7 }, () => testDb()));
let db = dbs[0]!;

/** Revisions over a database and a prefix of the test's own; `apply` records what it was asked to put back. */
function setUp() {
  db = dbs.shift()!;
  const prefix = newPrefix();
  const applied: string[] = [];
  const rows = createOpRevRows(db.sql);
  const marks = createOpMarks(redis, prefix);
  // As the catalog's reapply: false for an item Redis does not hold.
  const apply = async (scope: string) => scope === '*' || (await redis.exists(itemKeys(prefix, scope).meta)) === 1;
  const ops = createOpRevs({ rows, marks, apply: async (scope) => (await apply(scope)) && (applied.push(scope), true), log: createLogger('silent') });
  return { prefix, applied, rows, marks, ops };
}

/** Checks until `done` (a lock a terminated session held is let go by Postgres a moment later). */
async function waitForRepair(check: () => Promise<unknown>, done: () => boolean) {
  for (let i = 0; i < 50 && !done(); i++) {
    await check().catch(() => undefined);
    if (!done()) await new Promise((r) => setTimeout(r, 100));
  }
}

async function liveItem(prefix: string, itemId: string) {
  await db.sql`insert into items (item_id, handler, config, gate) values (${itemId}, 'external', '{}', '{}') on conflict do nothing`;
  await redis.hset(itemKeys(prefix, itemId).meta, 'handler', 'external');
}

describe('operators’ write revisions (catalog/op-revs.ts)', () => {
  it('a write takes a revision and Redis is marked with it; a check then finds nothing to repair', async () => {
    const { prefix, applied, rows, marks, ops } = setUp();
    await liveItem(prefix, 'oa');
    expect(await ops.within('oa', async () => 'done')).toBe('done');
    const rev = await rows.rev('oa');
    expect(rev).toBeGreaterThan(0);
    expect(await marks.of('oa')).toBe(rev);
    expect(await ops.check({ all: true })).toBe(0);
    expect(applied).toEqual([]);
  });

  it('a write refused for what it asked leaves nothing to repair; one that failed part-way does, and the next check applies it', async () => {
    const { prefix, applied, rows, marks, ops } = setUp();
    await liveItem(prefix, 'ob');
    await expect(ops.within('ob', async () => Promise.reject(new FloodgateError('invalid_request', 'no')))).rejects.toThrow('no');
    const refusedAt = await rows.rev('ob');
    expect(await marks.of('ob')).toBe(refusedAt);
    expect(await ops.check()).toBe(0);
    await expect(ops.within('ob', async () => Promise.reject(new Error('redis went away')))).rejects.toThrow('redis went away');
    const rev = await rows.rev('ob');
    expect(rev).toBeGreaterThan(refusedAt);
    expect(await marks.of('ob')).toBe(refusedAt);
    expect(await ops.check()).toBe(1);
    expect(applied).toEqual(['ob']);
    expect(await marks.of('ob')).toBe(rev);
    expect(await ops.check()).toBe(0);
  });

  it('a rollback that took the marks (the item’s and the highest) is found by the cheap check, without a reconnect', async () => {
    const { prefix, applied, ops } = setUp();
    await liveItem(prefix, 'oc');
    await ops.within('oc', async () => {});
    await ops.within('*', async () => {});
    // What a rollback to before both writes leaves: neither mark.
    await redis.hdel(itemKeys(prefix, 'oc').meta, 'opRev');
    await redis.del(opRevsKey(prefix));
    expect(await ops.check()).toBe(2);
    expect(applied.sort()).toEqual(['*', 'oc']);
  });

  it('an item Redis does not hold (a restore’s work) is left unmarked; an archived one is not asked for', async () => {
    const { prefix, applied, marks, ops } = setUp();
    await liveItem(prefix, 'od');
    await ops.within('od', async () => {});
    await db.sql`insert into items (item_id, handler, config, gate, archived_at) values ('oe', 'external', '{}', '{}', now()) on conflict do nothing`;
    await ops.within('oe', async () => {});
    await redis.del(itemKeys(prefix, 'od').meta, opRevsKey(prefix));
    // An archived item whose keys are still there (retention archives first, then drops them), unmarked: not asked for.
    await redis.hdel(itemKeys(prefix, 'oe').meta, 'opRev');
    await redis.hset(itemKeys(prefix, 'oe').meta, 'handler', 'external');
    expect(await ops.check({ all: true })).toBe(0);
    expect(applied).toEqual([]);
    expect(await marks.of('od')).toBe(0);
  });

  it('a repair waits for an operator’s write of the same scope under way, and then finds it marked', async () => {
    const { prefix, applied, marks, ops } = setUp();
    await liveItem(prefix, 'of');
    await ops.within('of', async () => {});
    await redis.hdel(itemKeys(prefix, 'of').meta, 'opRev');
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    const write = ops.within('of', async () => {
      entered();
      await gate;
    });
    await inside;
    const check = ops.check({ all: true });
    // The check is held on the scope's lock while the write runs.
    expect(await Promise.race([check.then(() => 'checked'), new Promise((r) => setTimeout(() => r('held'), 300))])).toBe('held');
    release();
    await write;
    expect(await check).toBe(0);
    expect(applied).toEqual([]);
    expect(await marks.of('of')).toBeGreaterThan(0);
  });

  it('a write whose revision Postgres could not record has it recorded at the next check, so a later rollback of it is still found', async () => {
    const { prefix, applied, rows, marks, ops } = setUp();
    await liveItem(prefix, 'og');
    await ops.within('og', async () => {});
    const first = await rows.rev('og');
    // The write is done; Postgres refuses the revision that moment (a real error: its sequence is gone).
    await ops.within('og', async () => {
      await db.sql`alter sequence floodgate_op_rev_seq rename to floodgate_op_rev_seq_away`;
    });
    await db.sql`alter sequence floodgate_op_rev_seq_away rename to floodgate_op_rev_seq`;
    // (The revision taken before the write stands above Redis's mark.)
    expect(await rows.rev('og')).toBeGreaterThan(first);
    expect(await marks.of('og')).toBe(first);
    // Redis then rolls back to before the second write (its mark was never raised, so it reads the same).
    expect(await ops.check()).toBe(1);
    expect(applied).toEqual(['og']);
    expect(await rows.rev('og')).toBeGreaterThan(first);
    expect(await marks.of('og')).toBe(await rows.rev('og'));
    expect(await ops.check({ all: true })).toBe(0);
  });
  it('leaves Postgres ahead of Redis while a write runs: one its daemon never finished (stopped part-way) is applied by another daemon\'s next check', async () => {
    const { prefix, rows, marks, ops } = setUp();
    await liveItem(prefix, 'oh');
    await ops.within('oh', async () => {});
    let entered!: () => void;
    const inside = new Promise<void>((r) => (entered = r));
    let release!: () => void;
    const stopped = new Promise<void>((r) => (release = r));
    // The write starts (a split item's close: some sub-lines cut) and its daemon stops there.
    const write = ops.within('oh', async () => {
      entered();
      await stopped;
    }).catch(() => undefined);
    await inside;
    expect(await rows.rev('oh')).toBeGreaterThan(await marks.of('oh')); // before: equal, so no check ever looked again
    // The stopped daemon's session goes (its lock with it); another daemon's check repairs the item.
    await db.sql`select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory' and granted and database = (select oid from pg_database where datname = current_database())`;
    const other: string[] = [];
    const elsewhere = createOpRevs({ rows: createOpRevRows(db.sql), marks: createOpMarks(redis, prefix), apply: async (scope) => (other.push(scope), true), log: createLogger('silent') });
    await waitForRepair(() => elsewhere.check(), () => other.length > 0);
    expect(other).toEqual(['oh']);
    expect(await marks.of('oh')).toBe(await rows.rev('oh'));
    release();
    await write;
  });
});
