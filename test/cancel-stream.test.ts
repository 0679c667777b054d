import { describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { createLine } from '../src/queue/line.js';
import type { LineDefinition } from '../src/queue/types.js';
import { itemKeys } from '../src/redis/keys.js';
import { parseTicketId } from '../src/queue/ticket-id.js';
import { createScriptRunner, scripts } from '../src/redis/scripts.js';
import { rollbackItem, snapshotItem, testRedis } from './support/redis.js';

/**
 * The item's cancel stream (`cx`), which the daemons' views read to place waiting tickets behind
 * cancels: read whole by a daemon that reads it afresh, and let go of only behind the head.
 */
const t = testRedis();
const def = (itemId: string): LineDefinition => ({ itemId, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' });
const closed = { mode: 'closed', rate: null, maxInFlight: null } as const;

function lines() {
  const clock = manualClock();
  const prefix = t.newPrefix();
  // Read in pages of 200 (the daemon's are 1,000): what more than a page does, with few joins.
  const line = () => createLine({ redis: t.redis, prefix, clock, cacheMs: 250, cxPage: 200 });
  return { clock, prefix, line };
}

/** Joins users `from`..`to`-1 (in batches), returning their ticket ids in join order. */
async function joinUsers(line: ReturnType<typeof createLine>, itemId: string, from: number, to: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = from; i < to; i += 500) {
    const batch = Array.from({ length: Math.min(500, to - i) }, (_, j) => i + j);
    const got = await Promise.all(batch.map((u) => line.tickets.join(itemId, `u${u}`, null)));
    ids.push(...got.map((g) => g.ticket.ticketId));
  }
  return ids.sort((x, y) => parseTicketId(x)!.seq - parseTicketId(y)!.seq);
}

/** An item whose gate admits at once, with `n` users in line through daemon `a`. */
async function openLine(itemId: string, n: number) {
  const l = lines();
  const a = l.line();
  await a.definitions.define(def(itemId), { mode: 'manual', rate: 100_000, maxInFlight: null }, { reopen: false });
  return { ...l, a, ids: await joinUsers(a, itemId, 0, n) };
}

async function admitAll(line: ReturnType<typeof createLine>, itemId: string, n: number) {
  let admitted = 0;
  while (admitted < n) admitted += (await line.admissions.admit(itemId, n - admitted, 60_000)).length;
}

async function cancelAll(line: ReturnType<typeof createLine>, ids: string[]) {
  for (let i = 0; i < ids.length; i += 500) await Promise.all(ids.slice(i, i + 500).map((id) => line.tickets.cancel(id)));
}

describe('the cancel stream', () => {
  it('is read to its end by a daemon that reads it afresh: more cancels ahead than one page', async () => {
    const { clock, line } = lines();
    const a = line();
    await a.definitions.define(def('big'), closed, { reopen: false });
    const ids = await joinUsers(a, 'big', 0, 2100);
    // 2,050 users ahead of the last 50 leave: ten pages and more of the stream.
    await cancelAll(a, ids.slice(0, 2050));
    clock.advance(300);
    // A daemon that starts now reads the stream from its start.
    const fresh = line();
    const last = await fresh.tickets.status(ids[2099]);
    expect(last.position).toBe(50);
    expect((await fresh.tickets.status(ids[2050])).position).toBe(1);
    expect((await a.tickets.status(ids[2099])).position).toBe(50);
  }, 60_000);

  it('lets go of the cancels the head has passed, and a daemon reading it afresh then places as one that read it all along', async () => {
    const { clock, prefix, line, a, ids } = await openLine('tr', 3000);
    // Every other ticket of the first 2,400 leaves, and every tenth of the rest.
    const gone = ids.filter((_, i) => (i < 2400 ? i % 2 === 0 : i % 10 === 0));
    await cancelAll(a, gone);
    const cx = itemKeys(prefix, 'tr').cx;
    expect(await t.redis.xlen(cx)).toBe(gone.length);
    // The line admits past the first 2,400 places (1,200 tickets: the rest of them left).
    await admitAll(a, 'tr', 1200);
    clock.advance(300);
    const before = await a.tickets.status(ids[2999]);
    expect(before.position).toBe(600 - 60);
    // A's refresh trims what is behind the head: the 1,200 cancels there; those ahead stay.
    await waitForTrim(async () => (await t.redis.xlen(cx)) === 60);
    expect(Number(await t.redis.hget(itemKeys(prefix, 'tr').ctr, 'cxt'))).toBe(1200);
    // A daemon reading afresh now places as A does; a cancel after the trim is read by both.
    const fresh = line();
    expect((await fresh.tickets.status(ids[2999])).position).toBe(540);
    expect((await fresh.tickets.status(ids[2401])).position).toBe(1);
    await fresh.tickets.cancel(ids[2401]);
    clock.advance(300);
    expect((await a.tickets.status(ids[2999])).position).toBe(539);
    expect((await fresh.tickets.status(ids[2999])).position).toBe(539);
    expect((await line().tickets.status(ids[2999])).position).toBe(539);

    async function waitForTrim(done: () => Promise<boolean>) {
      for (let i = 0; i < 20 && !(await done()); i++) {
        clock.advance(300);
        await a.tickets.status(ids[2999]);
      }
      expect(await done()).toBe(true);
    }
  }, 60_000);

  it("counts entries an older daemon wrote (no `n`) as read once it lets them go: a daemon reading afresh places from its cache", async () => {
    // During an upgrade the cancels came through daemons of the version before `n` (a review):
    // the trim read the first entry left as n = 0 and never raised `cxt`, so every daemon that
    // read the stream afresh counted fewer cancels than the item's and placed no ticket from its
    // cache again (~5 more Redis calls per poll for the rest of its life).
    const { clock, prefix, line, a, ids } = await openLine('old', 600);
    const gone = ids.filter((_, i) => (i < 400 ? i % 2 === 0 : i % 10 === 0));
    await cancelAll(a, gone);
    const cx = itemKeys(prefix, 'old').cx;
    // As the older version wrote them: the same ids, no `n`.
    const entries = (await t.redis.xrange(cx, '-', '+')) as [string, string[]][];
    await t.redis.del(cx);
    for (const [id, fields] of entries) await t.redis.xadd(cx, id, fields[0], fields[1]);
    await admitAll(a, 'old', 200);
    for (let i = 0; i < 20 && (await t.redis.xlen(cx)) > 20; i++) {
      clock.advance(300);
      await a.tickets.status(ids[599]);
    }
    expect(await t.redis.xlen(cx)).toBe(20);
    expect(Number(await t.redis.hget(itemKeys(prefix, 'old').ctr, 'cxt'))).toBe(200);
    const fresh = line();
    expect((await fresh.tickets.status(ids[599])).position).toBe(200 - 20);
    // Placed from its cache, as a daemon that read the stream all along.
    expect(fresh.tickets.statusNow(ids[599])?.position).toBe(180);
  }, 60_000);

  it('trims nothing from a stream a Redis rollback brought back with the head behind it', async () => {
    const { clock, prefix, line, a, ids } = await openLine('rb', 40);
    await cancelAll(a, ids.filter((_, i) => i < 20 && i % 2 === 0)); // 10 of the first 20
    const snap = await snapshotItem(t.redis, prefix, 'rb');
    await admitAll(a, 'rb', 10);
    // Redis goes back to before the admissions: the cancels are ahead of the head again.
    // A's trim, computed from the head it saw, must not take them (lastId still there, head behind).
    const kept = await t.redis.xrange(itemKeys(prefix, 'rb').cx, '-', '+');
    await rollbackItem(t.redis, prefix, 'rb', snap);
    const last = kept[kept.length - 1];
    const trimmed = await createScriptRunner(t.redis, prefix).run(scripts.trimCancels, 'rb', clock.now(), { lastN: Number(last[1][3]), bound: 19, cutSeq: '' }, kept.map(([id]) => id));
    expect(trimmed).toBe(-1);
    expect(await t.redis.xlen(itemKeys(prefix, 'rb').cx)).toBe(10);
    clock.advance(300);
    expect((await line().tickets.status(ids[39])).position).toBe(30);
    expect((await a.tickets.status(ids[39])).position).toBe(30);
  });

  it("keeps the cancels inside the last cut's range and lets go of those after it once the item reopened", async () => {
    const { clock, prefix, line, a, ids } = await openLine('ro', 20);
    // B has seen ticket 11 waiting (its record cached), and reads nothing of the item until the end.
    const b = line();
    expect((await b.tickets.status(ids[10])).state).toBe('waiting');
    // Two of the first 20 leave; 5 are admitted; the item closes (a cut of the 13 left waiting).
    await cancelAll(a, [ids[10], ids[12]]);
    await admitAll(a, 'ro', 5);
    await a.definitions.cut('ro', 'closed');
    // Reopened: 600 more join, 300 of them leave, the line admits past all of them.
    await a.definitions.define(def('ro'), { mode: 'manual', rate: 100_000, maxInFlight: null }, { reopen: true });
    const more = await joinUsers(a, 'ro', 100, 700);
    await cancelAll(a, more.filter((_, i) => i % 2 === 0));
    await admitAll(a, 'ro', 300);
    const cx = itemKeys(prefix, 'ro').cx;
    expect(await t.redis.xlen(cx)).toBe(302);
    // Before: nothing was trimmed after the cut (the head rule stopped at the cut's served-before).
    for (let i = 0; i < 20 && (await t.redis.xlen(cx)) > 2; i++) {
      clock.advance(300);
      await a.tickets.status(more[599]);
    }
    const left = await t.redis.xrange(cx, '-', '+');
    expect(left.map(([, f]) => Number(f[1])).sort((x, y) => x - y)).toEqual([ids[10], ids[12]].map((id) => parseTicketId(id)!.seq));
    // A daemon reading afresh still knows those two left before the cut: not told `closed`.
    clock.advance(300);
    const fresh = line();
    // And B, whose cached record says ticket 11 waited: the view it reads now still knows it left
    // (an own-commits review: the trim counted every cancel as read, B skipped the two kept ones
    // and told its watchers `item_closed`).
    await b.tickets.status(more[599]);
    expect((await b.tickets.cachedView(ids[10]))?.outcome?.reason ?? 'read from redis').not.toBe('item_closed');
    const [left10, cut15] = [await fresh.tickets.status(ids[10]), await fresh.tickets.status(ids[15])];
    expect([left10.state, left10.outcome?.reason]).toEqual(['cancelled', 'cancelled_by_user']);
    expect([cut15.state, cut15.outcome?.reason]).toEqual(['cancelled', 'item_closed']);
  });
});
