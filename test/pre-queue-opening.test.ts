import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';
import { waitFor } from './support/daemon-inproc.js';
import { holdLock } from './support/db.js';

/**
 * A pre-queue's opening while Postgres keeps the draw's size slowly: no join at the opening takes
 * a seq inside the draw, and none is told it awaits a draw it is then left out of. The table is
 * locked from another session, so the daemons' statements keeping the size wait on it.
 */
const t = await testApp();
const other = postgres(t.db.url, { max: 2, onnotice: () => {} });
afterAll(() => other.end({ timeout: 2 }));
const seqOf = (ticketId: string) => parseInt(ticketId.split('.')[1], 36);
/** Statements keeping a draw's size that wait on the lock now. */
const waitingKeeps = async () =>
  (await other`select count(*)::int as n from pg_stat_activity where datname = current_database() and query like 'insert into pre_queue_draws%' and wait_event_type = 'Lock'`)[0].n as number;

describe('a pre-queue’s opening while Postgres keeps the draw’s size slowly', () => {
  it('a join stamped a moment before opensAt on another daemon, after the draw began, waits for it as a join at the opening does', { timeout: 60_000 }, async () => {
    const opensAt = Date.UTC(2026, 11, 12, 2, 0, 0);
    const ahead = t.manualClock(opensAt - 60_000);
    const behind = t.manualClock(opensAt - 60_000);
    const a = t.build({ clock: ahead });
    const b = t.build({ clock: behind, prefix: a.prefix });
    const item = t.uniqueItem();
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'external', opensAt: new Date(opensAt).toISOString(), preQueue: { fromMs: 15 * 60_000 }, gate: { mode: 'manual' } })).status).toBe(201);
    for (let i = 0; i < 5; i++) expect((await a.call('POST', `/v1/items/${item}/tickets`, { userId: `pre-${i}` }, SERVICE)).status).toBe(202);
    const lock = await holdLock(other, (tx) => tx`lock table pre_queue_draws in share mode`);
    let atOpen: Promise<{ status: number; body: any }>;
    let justBefore: Promise<{ status: number; body: any }>;
    try {
      ahead.set(opensAt + 1);
      atOpen = a.call('POST', `/v1/items/${item}/tickets`, { userId: 'at-open' }, SERVICE);
      // The draw has begun (its size on its way to Postgres, waiting on the lock).
      await waitFor(waitingKeeps, (n) => n >= 1, 20_000);
      behind.set(opensAt - 1);
      // Before: answered at once `position: null`, "drawn at the opening", with a seq past the N the
      // draw then fixed (6 of 5): awaiting a draw it was left out of.
      justBefore = b.call('POST', `/v1/items/${item}/tickets`, { userId: 'just-before' }, SERVICE);
      await waitFor(waitingKeeps, (n) => n >= 2, 20_000);
    } finally {
      await lock.release();
    }
    const [x, y] = await Promise.all([atOpen, justBefore]);
    expect([x.status, y.status]).toEqual([202, 202]);
    expect([seqOf(x.body.ticketId), seqOf(y.body.ticketId)].sort()).toEqual([6, 7]);
    expect(y.body.drawAt).toBeUndefined();
    expect(y.body.position).toBe(seqOf(y.body.ticketId));
    ahead.set(opensAt + 5);
    behind.set(opensAt + 5);
    await a.queue.admissions.sweep();
    expect((await a.call('GET', `/v1/items/${item}`)).body.preQueue).toMatchObject({ size: 5 });
  });

  it('joins at the opening while the size cannot be kept are answered 503, holding one statement per draw, not one per try', { timeout: 60_000 }, async () => {
    const opensAt = Date.UTC(2026, 11, 12, 6, 0, 0);
    const clock = t.manualClock(opensAt - 60_000);
    const a = t.build({ clock });
    const item = t.uniqueItem();
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'external', opensAt: new Date(opensAt).toISOString(), preQueue: { fromMs: 15 * 60_000 }, gate: { mode: 'manual' } })).status).toBe(201);
    for (let i = 0; i < 5; i++) await a.call('POST', `/v1/items/${item}/tickets`, { userId: `pre-${i}` }, SERVICE);
    const lock = await holdLock(other, (tx) => tx`lock table pre_queue_draws in share mode`);
    try {
      clock.set(opensAt + 1);
      // Three waves, each answered (503 after the draw's 2 s) before the next: each wave's draw is a
      // new try. Before, each try sent a statement of its own, and they piled up on the pool.
      for (let wave = 0; wave < 3; wave++) {
        const answers = await Promise.all(Array.from({ length: 5 }, (_, i) => a.call('POST', `/v1/items/${item}/tickets`, { userId: `w${wave}-${i}` }, SERVICE)));
        expect(answers.map((r) => r.status)).toEqual([503, 503, 503, 503, 503]);
        expect(answers[0].headers.get('retry-after')).toBe('2');
        expect(answers[0].body.error).toMatchObject({ code: 'unavailable', message: expect.stringMatching(/pre-queue is drawn/) });
      }
      expect(await waitingKeeps()).toBe(1);
    } finally {
      await lock.release();
    }
    const after = await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'after' }, SERVICE);
    expect(after.status).toBe(202);
    expect(seqOf(after.body.ticketId)).toBe(6);
  });

  it('a draw tried at an opening the operator then moved later leaves no mark: joins before the new opening wait for its draw', { timeout: 60_000 }, async () => {
    const opensAt = Date.UTC(2026, 11, 12, 8, 0, 0);
    const clock = t.manualClock(opensAt - 60_000);
    const a = t.build({ clock });
    const item = t.uniqueItem();
    const def = (at: number) => ({ handler: 'external', opensAt: new Date(at).toISOString(), preQueue: { fromMs: 15 * 60_000 }, gate: { mode: 'manual' } });
    expect((await a.call('PUT', `/v1/items/${item}`, def(opensAt))).status).toBe(201);
    const lock = await holdLock(other, (tx) => tx`lock table pre_queue_draws in share mode`);
    try {
      clock.set(opensAt + 1);
      // Nobody in the pre-queue; its draw is tried, and cannot keep its size.
      expect((await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'early' }, SERVICE)).status).toBe(503);
    } finally {
      await lock.release();
    }
    // Postponed by ten minutes (allowed: nothing drawn, no ticket).
    const later = opensAt + 10 * 60_000;
    expect((await a.call('PUT', `/v1/items/${item}`, def(later))).status).toBe(200);
    clock.set(opensAt + 2);
    // Before: the draw's mark made this join one at the (new) opening: it drew the pre-queue at once,
    // ten minutes early (seed shown, size 0), and every later joiner was served in join order.
    const j = await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'pre-0' }, SERVICE);
    expect(j.status).toBe(202);
    expect(j.body).toMatchObject({ position: null, drawAt: new Date(later).toISOString() });
    expect((await a.call('GET', `/v1/items/${item}`)).body.preQueue.seed).toBeUndefined();
  });
});
