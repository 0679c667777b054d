import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/kernel/logger.js';
import { manualClock } from '../src/kernel/clock.js';
import { initialState, type ControlState } from '../src/scheduler/control-law.js';
import { startController } from '../src/scheduler/controller.js';
import { CLOSED_RECHECK_MS } from '../src/scheduler/dispatcher.js';
import { itemKeys } from '../src/redis/keys.js';
import { testApp } from './support/app.js';

/**
 * What the adaptive gate's controller keeps of an item between ticks (its `locals`): a daemon
 * that has not ticked an item as leader for longer than the lease, or whose item was removed and
 * defined again, starts afresh from what is published. The entry's `leading` went false only when
 * a renewal failed, so a daemon whose ticks stopped (a closed gate, a removed item) and that took
 * the lease first again skipped the reload, and published its old limit and baseline over what
 * another leader had published since, or over a new item of the same id.
 *
 * Real Redis and Postgres; the controller's clock is a manual one (the lease itself runs on
 * Redis's clock, in real time, so the tests wait it out where another daemon takes it).
 */
const t = await testApp();
const log = createLogger('silent');
const LEASE_MS = 1500;
const START_LIMIT = 10;

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

function stateOf(limit: number, baseMs: number, now: number): ControlState {
  return { ...initialState(now, limit), baseMs, p50Ms: baseMs, p99Ms: baseMs * 2 };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function setup() {
  const clock = manualClock();
  const app = t.build({ clock });
  const itemId = t.uniqueItem();
  // A webhook item on auto; nothing serves it (no dispatcher runs), the controller only publishes.
  const put = await app.call('PUT', `/v1/items/${itemId}`, { handler: 'webhook', config: { url: 'http://127.0.0.1:2/never' }, gate: { mode: 'auto' } });
  expect(put.status, JSON.stringify(put.body)).toBe(201);
  const published: { limit: number; baseMs: number | null }[] = [];
  let leaderChanges = 0;
  let ticking = true;
  const controller = startController(
    {
      store: app.gates,
      // The line's active set follows the loops' work (an empty line is not in it, and no
      // dispatcher runs here): the controller is given the item to tick instead.
      queue: { items: Object.assign(Object.create(app.queue.items) as typeof app.queue.items, { activeItemIds: async () => (ticking ? [itemId] : []) }) },
      handlers: app.handlers,
      clock,
      log,
      events: {
        largeChange: () => {},
        leaderChange: (id) => void (id === itemId && leaderChanges++),
        published: (id, s, v) => void (id === itemId && published.push({ limit: v.limit, baseMs: s.baseMs })),
      },
    },
    { tickMs: 10, leaseMs: LEASE_MS, me: 'daemon-a', startLimit: START_LIMIT },
  );
  stops.push(() => controller.stop());
  /** The next limit and baseline the controller publishes for the item (after those seen so far). */
  async function nextPublished() {
    const from = published.length;
    for (const until = Date.now() + 5000; Date.now() < until; await sleep(10)) if (published.length > from) return published[published.length - 1];
    throw new Error('the controller published nothing for the item in 5 s');
  }
    /** Takes the item out of the ticked ones (or puts it back) from the next read of the list (at most every second). */
  async function tick(on: boolean) {
    ticking = on;
    clock.advance(1001);
    await sleep(50);
  }
  return { app, clock, itemId, published, nextPublished, leaderChanges: () => leaderChanges, controller, tick };
}

describe('the controller’s own state of an item', () => {
  it('is dropped after a gap longer than the lease: the daemon resumes what another leader published since', async () => {
    const { app, clock, itemId, nextPublished, leaderChanges } = await setup();
    expect((await nextPublished()).limit).toBe(START_LIMIT);
    expect(leaderChanges()).toBe(1);
    // The gate closes: the controller stops ticking the item (its lease is not renewed).
    await app.gates.writeSettings(itemId, { mode: 'closed' });
    app.queue.items.invalidate(itemId);
    await sleep(LEASE_MS + 100);
    clock.advance(10 * LEASE_MS);
    // Meanwhile another daemon led the item and published its state, then handed the lease over.
    expect(await app.gates.lead(itemId, 'daemon-b', LEASE_MS)).toBe(true);
    await app.gates.publishAsLeader(itemId, 'daemon-b', { aLimit: 42, aBase: '55.00', aLeader: 'daemon-b', aState: JSON.stringify(stateOf(42, 55, clock.now())) });
    await app.gates.lead(itemId, 'daemon-b', 1);
    await sleep(5);
    // The gate opens again (straight to Redis, as an operator's change seen by a view: no reset
    // asked for, so only the published state tells the controller where the law stood).
    await app.gates.writeSettings(itemId, { mode: 'auto' });
    app.queue.items.invalidate(itemId);
    // A tick's read of the item begun before the reopen and answered after it keeps the closed gate
    // as the held view, which the controller trusts for CLOSED_RECHECK_MS of its clock: this one
    // stands still unless moved. (A clean-clone run published nothing in 5 s, once in four runs;
    // this is the cause as read from the code, not reproduced.)
    clock.advance(CLOSED_RECHECK_MS);
    const after = await nextPublished();
    // The old code thought it still led, skipped the reload and published its own limit (10)
    // over daemon-b's 42.
    expect(after).toEqual({ limit: 42, baseMs: 55 });
    expect(leaderChanges()).toBe(2);
  });

  it('is dropped when the item is removed and defined again: the new item does not get the old one’s limit and baseline', async () => {
    const { app, clock, itemId, nextPublished, leaderChanges, tick } = await setup();
    // The old item's law stood at 77 calls with a baseline of 123 ms; the controller resumes it.
    await t.redis.hset(itemKeys(app.prefix, itemId).gate, { aReset: '', aLimit: 77, aBase: '123.00', aState: JSON.stringify(stateOf(77, 123, clock.now())) });
    let first = await nextPublished();
    for (const until = Date.now() + 5000; first.limit !== 77 && Date.now() < until; ) first = await nextPublished();
    expect(first).toEqual({ limit: 77, baseMs: 123 });
    const changes = leaderChanges();
    // The old item ended and left the active ones (retention removes only an ended item with
    // nothing in line), then was removed (as retention does) and defined again with the same id;
    // the same daemon takes the lease of the new item first, well within the old lease.
    await tick(false);
    expect(await app.queue.definitions.drop(itemId)).toBe(true);
    const put = await app.call('PUT', `/v1/items/${itemId}`, { handler: 'webhook', config: { url: 'http://127.0.0.1:2/never' }, gate: { mode: 'auto' } });
    expect(put.status, JSON.stringify(put.body)).toBe(201);
    expect(await t.redis.hget(itemKeys(app.prefix, itemId).gate, 'aState')).toBeNull();
    const [after] = await Promise.all([nextPublished(), tick(true)]);
    // The old code still thought it led the item: it skipped the reload and published the old
    // item's 77 and 123 ms.
    expect(after).toEqual({ limit: START_LIMIT, baseMs: null });
    expect(leaderChanges()).toBe(changes + 1);
  });

  it('does not keep entries of items it has not ticked for longer than the lease', async () => {
    const { app, clock, itemId, nextPublished, controller } = await setup();
    await nextPublished();
    expect(controller.tracked()).toBe(1);
    expect(await app.queue.definitions.drop(itemId)).toBe(true);
    await sleep(50);
    // The next read of the item list (at most every second) prunes the removed item's entry.
    clock.advance(LEASE_MS + 1000);
    for (const until = Date.now() + 5000; controller.tracked() > 0 && Date.now() < until; ) await sleep(10);
    expect(controller.tracked()).toBe(0);
  });
});
