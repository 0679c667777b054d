import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createBlocks } from '../src/access/blocks.js';
import { createCatalog } from '../src/catalog/catalog.js';
import { startRetention } from '../src/catalog/retention.js';
import { createStockRows } from '../src/db/stock-rows.js';
import { createGateStore } from '../src/scheduler/gate-store.js';
import { createHandlerRegistry } from '../src/service/registry.js';
import { createStockCounters } from '../src/service/stock-counters.js';
import { createItemsStore, type ItemsStore } from '../src/db/items-store.js';
import { createOpRevRows } from '../src/db/op-revs.js';
import { manualClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { createLine } from '../src/queue/line.js';
import type { LineDefinition } from '../src/queue/types.js';
import { scanKeys } from '../src/redis/client.js';
import { itemKeys, subLineTag } from '../src/redis/keys.js';
import { testDb } from './support/db.js';
import { ownRedis } from './support/redis-server.js';
import { keysMatching, testRedis, unlinkPrefix } from './support/redis.js';

const t = testRedis();
const db = await testDb();
const ownDb = await testDb();
const def = (itemId: string): LineDefinition => ({ itemId, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' });
const HOUR = 3600_000;

/** A daemon's line and catalog on `prefix` (its own clients: several such share one Redis and Postgres as daemons do). */
function daemonOn(prefix: string, clock: ReturnType<typeof manualClock>, store: ItemsStore = createItemsStore(db.db)) {
  const queue = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
  const catalog = createCatalog({ queue, store, stockRows: createStockRows(db.sql), counters: createStockCounters({ redis: t.redis, prefix, clock, items: queue.items }), gates: createGateStore(t.redis, prefix, clock), handlers: createHandlerRegistry(), clock, log: createLogger('silent'), autoCap: 10 });
  return { queue, catalog };
}

// (At the file's top: started inside a test, its folder outlived every run, its clean-up hook never ran.)
const refusingRedis = await ownRedis();

describe('retention of ended items', () => {
  it('counts from the last end of an item restocked after it sold out, not the first', async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    // A database of its own: the other tests here count the item rows.
    const own = ownDb;
    const store = createItemsStore(own.db);
    const queue = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const catalog = createCatalog({ queue, store, stockRows: createStockRows(own.sql), counters: createStockCounters({ redis: t.redis, prefix, clock, items: queue.items }), gates: createGateStore(t.redis, prefix, clock), handlers: createHandlerRegistry(), clock, log: createLogger('silent'), autoCap: 10 });
    const op = { role: 'operator' as const, key: 'k' };
    const retention = startRetention({ queue, store, clock, log: createLogger('silent') }, { everyMs: 3_600_000, retentionMs: 24 * HOUR });
    try {
      await catalog.put('restocked', { handler: 'seckill', config: { stock: 0 } }, op); // sold out at once
      expect((await queue.items.item('restocked', { fresh: true }))!.snap.soldOut).toBe(true);
      clock.advance(23 * HOUR);
      expect((await catalog.put('restocked', { handler: 'seckill', config: { stock: 5 } }, op)).item.state).toBe('open');
      const { ticket } = await queue.tickets.join('restocked', 'buyer', null);
      clock.advance(30 * 60_000);
      await queue.definitions.cut('restocked', 'sold_out');
      await t.redis.del(`${prefix}{restocked}:done`); // (the ledger drained it)
      // 24 h after the first sell-out, 31 min after the second: the item and its ticket are kept.
      clock.advance(31 * 60_000);
      await retention.round();
      expect(await queue.items.item('restocked', { fresh: true })).not.toBeNull();
      expect((await queue.tickets.status(ticket.ticketId)).state).toBe('rejected');
    } finally {
      await retention.stop();
    }
  });

  it("removes an ended item's Redis keys after the retention period; its Postgres row stays, archived", async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const queue = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const store = createItemsStore(db.db);
    for (const id of ['ended', 'running']) {
      await queue.definitions.define(def(id), null, { reopen: false });
      await store.upsert({ itemId: id, handler: 'external', config: {}, gate: {} });
    }
    const { ticket } = await queue.tickets.join('ended', 'u1', null);
    await queue.tickets.join('running', 'u1', null);
    await queue.definitions.cut('ended', 'sold_out');
    const retention = startRetention({ queue, store, clock, log: createLogger('silent') }, { everyMs: 3_600_000, retentionMs: 24 * HOUR });
    try {
      clock.advance(23 * HOUR);
      await retention.round();
      expect(await t.redis.exists(`${prefix}{ended}:meta`)).toBe(1);
      // Not while its outcome ledger still has entries to write.
      clock.advance(2 * HOUR);
      await retention.round();
      expect(await t.redis.exists(`${prefix}{ended}:meta`)).toBe(1);
      await t.redis.del(`${prefix}{ended}:done`); // (the ledger drained it)
      await retention.round();
      const [, keys] = await t.redis.scan('0', 'MATCH', `${prefix}{ended}:*`, 'COUNT', 1000);
      expect(keys).toEqual([]);
      expect(await queue.items.itemIds()).toEqual(['running']);
      expect((await store.get('ended'))?.archivedAt).toBeInstanceOf(Date);
      expect((await store.all()).map((r) => r.itemId)).toEqual(['running']);
      await expect(queue.tickets.status(ticket.ticketId)).rejects.toMatchObject({ code: 'ticket_not_found' });
      expect(await t.redis.exists(`${prefix}{running}:meta`)).toBe(1);
    } finally {
      await retention.stop();
    }
  });

  it('a block through a daemon whose view of the item is from before its removal is 404, and leaves nothing for its next life', async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const queue = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const store = createItemsStore(db.db);
    await queue.definitions.define(def('gone'), null, { reopen: false });
    await store.upsert({ itemId: 'gone', handler: 'external', config: {}, gate: {} });
    await queue.definitions.cut('gone', 'closed');
    // Another daemon read the item just before retention removed it (its view kept 5 s; its clock
    // not moved on with the retention's).
    const other = createLine({ redis: t.redis, prefix, clock: manualClock(clock.now()), cacheMs: 5000 });
    expect(await other.items.item('gone')).not.toBeNull();
    const retention = startRetention({ queue, store, clock, log: createLogger('silent') }, { everyMs: 3_600_000, retentionMs: HOUR });
    try {
      clock.advance(2 * HOUR);
      await retention.round();
      expect(await t.redis.exists(`${prefix}{gone}:meta`)).toBe(0);
      const kept: string[] = [];
      const blocks = createBlocks(other, async (itemId, userId) => void kept.push(`${itemId}/${userId}`));
      await expect(blocks.item('gone', 'alice', true)).rejects.toMatchObject({ code: 'item_not_found' }); // before: answered 200
      expect(kept).toEqual([]);
      expect(await keysMatching(t.redis, `${prefix}{gone}*`)).toEqual([]);
    } finally {
      await retention.stop();
    }
  });

  it('a put of a removed item that Redis refuses leaves its row archived (it came back at the next start)', async () => {
    const own = refusingRedis;
    const redis = new Redis(own.url, { maxRetriesPerRequest: 1 });
    try {
      const clock = manualClock();
      const prefix = t.newPrefix();
      const store = createItemsStore(db.db);
      const queue = createLine({ redis, prefix, clock, cacheMs: 0 });
      const catalog = createCatalog({ queue, store, stockRows: createStockRows(db.sql), counters: createStockCounters({ redis, prefix, clock, items: queue.items }), gates: createGateStore(redis, prefix, clock), handlers: createHandlerRegistry(), clock, log: createLogger('silent'), autoCap: 10 });
      const op = { role: 'operator' as const, key: 'k' };
      await catalog.put('gone-again', { handler: 'external' }, op);
      await queue.definitions.cut('gone-again', 'closed');
      await redis.del(`${prefix}{gone-again}:done`); // (the ledger drained it)
      const retention = startRetention({ queue, store, clock, log: createLogger('silent') }, { everyMs: 3_600_000, retentionMs: HOUR });
      clock.advance(2 * HOUR);
      await retention.round();
      await retention.stop();
      const archivedAt = (await store.get('gone-again'))?.archivedAt;
      expect(archivedAt).toBeInstanceOf(Date);
      // Made again while Redis refuses writes (at its maxmemory: the API's 503), and the row as it was.
      await redis.config('SET', 'maxmemory', '1');
      await expect(catalog.put('gone-again', { handler: 'external' }, op)).rejects.toThrow(/OOM/);
      await redis.config('SET', 'maxmemory', '0');
      expect((await store.get('gone-again'))?.archivedAt).toEqual(archivedAt); // before: null, live again
      expect((await store.all()).map((r) => r.itemId)).not.toContain('gone-again');
    } finally {
      redis.disconnect();
      await own.kill();
    }
  });

  it("removes every sub-line's keys of an ended split item, once every sub-line's ledger stream is drained", async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const queue = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const store = createItemsStore(db.db);
    await queue.definitions.define({ ...def('split'), lines: 4 }, null, { reopen: false });
    await store.upsert({ itemId: 'split', handler: 'external', config: {}, gate: {} });
    for (let i = 0; i < 40; i++) await queue.tickets.join('split', `u${i}`, null);
    await queue.definitions.cut('split', 'closed');
    const bases = Array.from({ length: 4 }, (_, k) => itemKeys(prefix, subLineTag('split', k)));
    const keysLeft = async () => {
      const left: string[] = [];
      for (const k of bases) await scanKeys(t.redis, `${k.base}*`, async (keys) => left.push(...keys));
      return left;
    };
    const retention = startRetention({ queue, store, clock, log: createLogger('silent') }, { everyMs: 3_600_000, retentionMs: HOUR });
    try {
      clock.advance(2 * HOUR);
      // Each sub-line's cut is an entry on its own stream: kept while any of them is there.
      expect(await Promise.all(bases.map((k) => t.redis.xlen(k.done)))).toEqual([1, 1, 1, 1]);
      for (const k of bases.slice(1)) await t.redis.del(k.done);
      await retention.round();
      expect(await t.redis.exists(bases[0].meta)).toBe(1);
      await t.redis.del(bases[0].done);
      await retention.round();
      expect(await keysLeft()).toEqual([]);
      expect(await queue.items.itemIds()).toEqual([]);
    } finally {
      await retention.stop();
    }
  });

  it("waits for an operator's write of the item in progress (its lock), and keeps an item that write reopened", async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const rows = createOpRevRows(db.sql);
    // The PUT stops after its Postgres row is written, before Redis hears of it.
    let pause = false;
    let resume!: () => void;
    let atRow!: () => void;
    const rowWritten = new Promise<void>((r) => (atRow = r));
    const base = createItemsStore(db.db);
    const store: ItemsStore = {
      ...base,
      upsert: async (row) => {
        const written = await base.upsert(row);
        if (pause) await new Promise<void>((r) => ((resume = r), atRow()));
        return written;
      },
    };
    const { queue, catalog } = daemonOn(prefix, clock, store);
    const op = { role: 'operator' as const, key: 'o' };
    await catalog.put('reopen', { handler: 'external' }, op);
    await catalog.close('reopen');
    await t.redis.del(itemKeys(prefix, 'reopen').done); // (the ledger drained it)
    const retention = startRetention({ queue, store: base, clock, log: createLogger('silent'), locked: rows.locked }, { everyMs: 3_600_000, retentionMs: HOUR });
    try {
      clock.advance(2 * HOUR);
      pause = true;
      const put = rows.locked('reopen', () => catalog.put('reopen', { handler: 'external' }, op));
      await rowWritten;
      const round = retention.round();
      await new Promise((r) => setTimeout(r, 300));
      resume();
      expect((await put).item.state).toBe('open');
      await round;
      const [row] = await db.sql`select archived_at from items where item_id = 'reopen'`;
      expect(row.archived_at).toBeNull();
      expect((await queue.items.item('reopen', { fresh: true }))?.snap.closed).toBe(false);
    } finally {
      await retention.stop();
    }
  });

  it('is not undone by a reconcile that read the item rows just before it removed the item', async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const base = createItemsStore(ownDb.db);
    let queue!: ReturnType<typeof daemonOn>['queue'];
    // Retention archives and drops the item between the reconcile's read of the rows and its look at Redis.
    let removeAfterRead = false;
    const store: ItemsStore = {
      ...base,
      all: async () => {
        const rows = await base.all();
        if (removeAfterRead) {
          await base.archive('gone-mid', new Date(clock.now()));
          await queue.definitions.drop('gone-mid');
        }
        return rows;
      },
    };
    const d = daemonOn(prefix, clock, store);
    queue = d.queue;
    await d.catalog.put('gone-mid', { handler: 'external' }, { role: 'operator', key: 'o' });
    await queue.definitions.cut('gone-mid', 'closed');
    await t.redis.del(itemKeys(prefix, 'gone-mid').done); // (the ledger drained it)
    removeAfterRead = true;
    await d.catalog.reconcile();
    expect(await queue.items.item('gone-mid', { fresh: true })).toBeNull();
    await ownDb.sql`delete from items where item_id = 'gone-mid'`;
  });

  it("a daemon's once-a-second loss check does not take an item retention removed for a lost one (it read every item from Postgres and Redis each second)", async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const store = createItemsStore(db.db);
    let reads = 0;
    const counted = { ...store, all: () => (reads++, store.all()) };
    const log = createLogger('silent');
    const { queue, catalog } = daemonOn(prefix, clock, counted);
    const ids = ['ret-old', 'ret-live'];
    for (const id of ids) await catalog.put(id, { handler: 'external' }, { role: 'operator', key: 'o' });
    await catalog.restore(); // as a daemon's start does
    await queue.definitions.cut(ids[0], 'closed');
    await t.redis.del(itemKeys(prefix, ids[0]).done); // (the ledger drained it)
    const retention = startRetention({ queue, store, clock, log }, { everyMs: 3_600_000, retentionMs: HOUR });
    try {
      clock.advance(2 * HOUR);
      await retention.round();
      const held = async () => (await queue.items.itemIds()).filter((id) => ids.includes(id));
      expect(await held()).toEqual([ids[1]]);
      reads = 0;
      for (let i = 0; i < 5; i++) expect(await catalog.restoreIfLost()).toBe(0);
      // One read of Postgres at most (the first check learns the item is gone on purpose), not one per check.
      expect(reads).toBeLessThanOrEqual(1);
      expect(await held()).toEqual([ids[1]]);
      // A Redis that lost its lines is still found out and the live item re-created, the archived one not.
      for (const k of await t.redis.keys(`${prefix}*`)) await t.redis.del(k);
      expect(await catalog.restoreIfLost()).toBeGreaterThanOrEqual(1);
      expect(await held()).toEqual([ids[1]]);
    } finally {
      await retention.stop();
    }
  });

  it("a restore that read an item's row just before retention removed it does not bring the item back", async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const store = createItemsStore(db.db);
    const log = createLogger('silent');
    // Retention on another daemon archives 'race-x' and drops its keys right after this daemon's
    // restore has read the rows (which still include it).
    let raced = false;
    const racing = {
      ...store,
      all: async () => {
        const rows = await store.all();
        if (!raced) {
          raced = true;
          await store.archive('race-x', new Date(clock.now()));
          await queue.definitions.drop('race-x');
        }
        return rows;
      },
    };
    const { queue, catalog } = daemonOn(prefix, clock, racing);
    for (const id of ['race-x', 'race-y']) await catalog.put(id, { handler: 'external' }, { role: 'operator', key: 'o' });
    await queue.definitions.cut('race-x', 'closed');
    await t.redis.del(itemKeys(prefix, 'race-x').done);
    // Redis lost 'race-y' too (a real loss): that one is restored, the archived one is not.
    await queue.definitions.drop('race-y');
    await catalog.restore();
    const held = (await queue.items.itemIds()).filter((id) => id.startsWith('race-'));
    expect(held).toEqual(['race-y']);
    expect(await catalog.restoreIfLost()).toBe(0);
  });

  it("a daemon's loss check covers items defined on other daemons after it started", async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const daemon = () => daemonOn(prefix, clock);
    // A daemon that started when Postgres had no items (its restore found none: `known` empty).
    const here = daemon();
    const there = daemon();
    await there.catalog.put('elsewhere-1', { handler: 'external' }, { role: 'operator', key: 'o' });
    expect(await here.catalog.restoreIfLost()).toBe(0); // nothing lost; it sees the new item in Redis
    // Redis loses everything; the daemon that defined the item is gone.
    await unlinkPrefix(t.redis, prefix);
    expect(await here.catalog.restoreIfLost()).toBeGreaterThanOrEqual(1);
    expect(await here.queue.items.itemIds()).toContain('elsewhere-1');
  });

  it('after a flush that another daemon has begun to repair, the loss check restores every row, not only the ids it knew', async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const daemon = () => daemonOn(prefix, clock);
    const here = daemon();
    for (const id of ['fl-1', 'fl-2', 'fl-3']) await here.catalog.put(id, { handler: 'external' }, { role: 'operator', key: 'o' });
    expect(await here.catalog.restoreIfLost()).toBe(0);
    // Defined on a daemon that is gone by the time Redis loses everything (this one never read it).
    await daemon().catalog.put('fl-other', { handler: 'external' }, { role: 'operator', key: 'o' });
    await unlinkPrefix(t.redis, prefix);
    // Another daemon's restore has put one item back already.
    const row = (await createItemsStore(db.db).get('fl-1'))!;
    await here.queue.definitions.define({ itemId: row.itemId, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, null, { reopen: false });
    await here.catalog.restoreIfLost();
    expect((await here.queue.items.itemIds()).filter((id) => id.startsWith('fl-')).sort()).toEqual(['fl-1', 'fl-2', 'fl-3', 'fl-other']);
  });

  /** A daemon's line and catalog over eleven items `<tag>-1` … `<tag>-11`, its reads of item rows counted (`reads.n`). */
  async function elevenItems(tag: string) {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const store = createItemsStore(db.db);
    const reads = { n: 0 };
    const counted = { ...store, liveRows: (ids: string[]) => (reads.n++, store.liveRows(ids)) };
    const { queue, catalog } = daemonOn(prefix, clock, counted);
    for (let i = 1; i <= 11; i++) await catalog.put(`${tag}-${i}`, { handler: 'external' }, { role: 'operator', key: 'o' });
    expect(await catalog.restoreIfLost()).toBe(0);
    return { clock, prefix, store, queue, catalog, reads };
  }

  it('lists again an item whose keys are there while the set of items lost its id (a define cut short), and is quiet after (no read of its row every second)', async () => {
    const { clock, prefix, queue, catalog, reads } = await elevenItems('ls');
    // The id leaves the shared set (a define whose listing failed); its keys stay.
    await t.redis.srem(`${prefix}items`, 'ls-1');
    await t.redis.incr(`${prefix}items:ver`);
    expect((await queue.items.itemIds()).includes('ls-1')).toBe(false);
    expect(await catalog.restoreIfLost()).toBe(0); // its keys are there: nothing to restore…
    // …and not listed at once (keys being deleted — a flush, a scan-and-unlink — go after the set)…
    expect((await queue.items.itemIds()).includes('ls-1')).toBe(false);
    clock.advance(11_000);
    expect(await catalog.restoreIfLost()).toBe(0);
    // …but listed again once it stayed so (unlisted, the item lists, blocks everywhere and retention passed it by for good).
    expect((await queue.items.itemIds()).includes('ls-1')).toBe(true);
    reads.n = 0;
    for (let i = 0; i < 3; i++) expect(await catalog.restoreIfLost()).toBe(0);
    expect(reads.n).toBe(0);
    // A real loss of another item is still found: the set moves, and the check looks again.
    await queue.definitions.drop('ls-2'); // its keys and its id gone, its row not archived
    expect(await catalog.restoreIfLost()).toBeGreaterThanOrEqual(1);
    expect((await queue.items.itemIds()).includes('ls-2')).toBe(true);
  });
  it('lets go of an archived item whose keys outlived its removal (a daemon killed between the archive and the drop): no read of its row every second', async () => {
    const { clock, prefix, store, queue, catalog, reads } = await elevenItems('ar');
    // Retention archives the row and takes the id out of the set; the daemon dies before the keys go.
    await store.archive('ar-1', new Date(clock.now()));
    await t.redis.srem(`${prefix}items`, 'ar-1');
    await t.redis.incr(`${prefix}items:ver`);
    const perRound: number[] = [];
    for (let i = 0; i < 20; i++) {
      clock.advance(1000);
      reads.n = 0;
      expect(await catalog.restoreIfLost()).toBe(0);
      perRound.push(reads.n);
    }
    expect(perRound.slice(-5)).toEqual([0, 0, 0, 0, 0]); // before: 1 a second, for good
    expect((await queue.items.itemIds()).includes('ar-1')).toBe(false);
    // Its keys go as retention's drop would have taken them (nothing walked them any more).
    expect(await keysMatching(t.redis, `${prefix}{ar-1}*`)).toEqual([]);
    expect(await keysMatching(t.redis, `${prefix}{ar-2}*`)).not.toEqual([]);
  });

  it('restores every item it can when a stored definition is refused by today\'s rules, and says which it left out', async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const store = createItemsStore(ownDb.db);
    // Stored before URLs with a password were refused (no PUT takes it now).
    await store.upsert({ itemId: 'legacy', handler: 'webhook', config: { url: 'http://shop:pw@127.0.0.1:2/orders', timeoutMs: 5000, headers: {}, secret: 'x'.repeat(43) }, gate: {} });
    await store.upsert({ itemId: 'fine', handler: 'external', config: {}, gate: {} });
    // Stored before a new definition could name a header every call sets itself, or a port fetch
    // refuses: still restored (the one runs with the header replaced, the other fails its calls at once).
    await store.upsert({ itemId: 'own-header', handler: 'webhook', config: { url: 'http://127.0.0.1:2/orders', timeoutMs: 5000, headers: { 'Content-Type': 'text/plain' }, secret: 'x'.repeat(43) }, gate: {} });
    await store.upsert({ itemId: 'bad-port', handler: 'webhook', config: { url: 'http://127.0.0.1:6000/orders', timeoutMs: 5000, headers: {}, secret: 'x'.repeat(43) }, gate: {} });
    const lines: string[] = [];
    const queue = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const catalog = createCatalog({ queue, store, stockRows: createStockRows(ownDb.sql), counters: createStockCounters({ redis: t.redis, prefix, clock, items: queue.items }), gates: createGateStore(t.redis, prefix, clock), handlers: createHandlerRegistry(), clock, log: createLogger('error', { destination: { write: (l: string) => void lines.push(l) } }), autoCap: 10 });
    expect(await catalog.restore()).toBeGreaterThanOrEqual(1);
    expect(await queue.items.item('fine', { fresh: true })).not.toBeNull();
    expect(await queue.items.item('own-header', { fresh: true })).not.toBeNull();
    expect(await queue.items.item('bad-port', { fresh: true })).not.toBeNull();
    expect(await queue.items.item('legacy', { fresh: true })).toBeNull();
    expect(lines.filter((l) => l.includes('legacy'))).toHaveLength(1);
    // The loss check after it does not take the refused item for a lost one (a restore every second).
    await catalog.restoreIfLost();
    expect(lines.filter((l) => l.includes('legacy'))).toHaveLength(1);
    for (const id of ['legacy', 'fine', 'own-header', 'bad-port']) await store.remove(id);
  });

  it('restores an ended item ended from its making: no join is taken between its define and its cut', async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const store = createItemsStore(ownDb.db);
    let tried: Promise<unknown> | null = null;
    let line: ReturnType<typeof createLine> | null = null;
    // The restore reads the item's blocks right after its define: a join arrives just then.
    const racing = { ...store, blockedIn: async (scope: string) => {
      if (scope === 'ended-c' && !tried) tried = line!.tickets.join('ended-c', 'late', null).then(() => 'joined', (err: { code?: string }) => err.code);
      return store.blockedIn(scope);
    } };
    const d = daemonOn(prefix, clock, racing);
    line = d.queue;
    await d.catalog.put('ended-c', { handler: 'external' }, { role: 'operator', key: 'o' });
    await d.catalog.close('ended-c');
    await unlinkPrefix(t.redis, prefix); // Redis loses everything
    expect(await d.catalog.restore()).toBeGreaterThanOrEqual(1);
    expect(await tried).toBe('closed');
    expect((await d.queue.items.item('ended-c', { fresh: true }))?.snap.counts.waiting).toBe(0);
    await store.remove('ended-c');
  });

  it("lets a removed item's view and notices go when told to forget it (a daemon held ~3.5 KB of every item it had ever seen)", async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const { queue, catalog } = daemonOn(prefix, clock);
    await catalog.put('gone-1', { handler: 'external' }, { role: 'operator', key: 'o' });
    await catalog.put('kept-1', { handler: 'external' }, { role: 'operator', key: 'o' });
    expect(queue.items.peek('gone-1')).not.toBeNull();
    await queue.definitions.drop('gone-1');
    const ids = new Set(await queue.items.itemIds({ fresh: true }));
    queue.items.forget((id) => ids.has(id));
    expect(queue.items.peek('gone-1')).toBeNull();
    expect(queue.items.peek('kept-1')).not.toBeNull();
  });

  it("deletes an archived item's voided tickets (one row per cancel was kept for good), not another's", async () => {
    const store = createItemsStore(ownDb.db);
    await store.upsert({ itemId: 'void-a', handler: 'external', config: {}, gate: {} });
    await ownDb.sql`insert into voided_tickets (ticket_id, item_id) values ('ref-a1', 'void-a'), ('ref-a2', 'void-a'), ('ref-b1', 'void-b')`;
    await store.archive('void-a', new Date());
    const left = await ownDb.sql`select ticket_id from voided_tickets where ticket_id like 'ref-%' order by ticket_id`;
    expect(left.map((r) => r.ticket_id)).toEqual(['ref-b1']);
    await ownDb.sql`delete from voided_tickets where ticket_id like 'ref-%'`;
    await store.remove('void-a');
  });
});
