import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';

const t = await testApp();

/**
 * The draw as docs/design-notes.md specifies it, written again here from that text alone:
 * words from SHA-256(seed ‖ counter as 8 bytes big-endian), Fisher–Yates from the top with
 * rejection sampling.
 */
function recompute(seedHex: string, n: number): number[] {
  const words: number[] = [];
  let counter = 0;
  const next = () => {
    if (!words.length) {
      const c = Buffer.alloc(8);
      c.writeUInt32BE(Math.floor(counter / 2 ** 32), 0);
      c.writeUInt32BE(counter % 2 ** 32, 4);
      counter++;
      const h = createHash('sha256').update(Buffer.concat([Buffer.from(seedHex, 'hex'), c])).digest();
      for (let i = 0; i < 32; i += 4) words.push(h.readUInt32BE(i));
    }
    return words.shift()!;
  };
  const a = Array.from({ length: n }, (_, i) => i + 1);
  for (let i = n; i > 1; i--) {
    const bound = 4294967296 - (4294967296 % i);
    let r: number;
    do r = next();
    while (r >= bound);
    const j = r % i;
    [a[i - 1], a[j]] = [a[j], a[i - 1]];
  }
  return a;
}

const seqOf = (ticketId: string) => parseInt(ticketId.split('.')[1], 36);

describe('pre-queue and the draw at open', () => {
  it('takes joins from opensAt − fromMs without a position, then draws them into the line ahead of later joiners, recomputably from the published seed', async () => {
    const opensAt = Date.UTC(2026, 11, 12, 2, 0, 0);
    const clock = t.manualClock(opensAt - 20 * 60_000);
    const { call, queue } = t.build({ clock });
    const item = t.uniqueItem();
    const put = await call('PUT', `/v1/items/${item}`, { handler: 'external', opensAt: new Date(opensAt).toISOString(), preQueue: { fromMs: 15 * 60_000 }, gate: { mode: 'manual' } });
    expect(put.status).toBe(201);
    const seedHash = put.body.preQueue.seedHash;
    expect(seedHash).toMatch(/^[0-9a-f]{64}$/);
    expect(put.body.preQueue.seed).toBeUndefined();
    const join = (u: string) => call('POST', `/v1/items/${item}/tickets`, { userId: u }, SERVICE);
    // Refused until the pre-queue takes joins, and told when that is (a client that waited for
    // opensAt, as the invite page did, joined after the draw, behind users who came later).
    const early = await join('early');
    expect([early.status, early.body.error.details]).toEqual([425, { opensAt: new Date(opensAt).toISOString(), now: new Date(opensAt - 20 * 60_000).toISOString(), joinsFrom: new Date(opensAt - 15 * 60_000).toISOString() }]);

    clock.set(opensAt - 5 * 60_000);
    const pre: string[] = [];
    for (let i = 0; i < 60; i++) {
      const r = await join(`pre-${i}`);
      expect(r.status).toBe(202);
      expect(r.body).toMatchObject({ state: 'waiting', position: null, drawAt: new Date(opensAt).toISOString() });
      pre.push(r.body.ticketId);
    }
    expect((await call('GET', `/v1/tickets/${pre[7]}`, undefined, null)).body).toMatchObject({ position: null, drawAt: new Date(opensAt).toISOString() });
    await call('DELETE', `/v1/tickets/${pre[3]}`, undefined, null);
    expect((await call('GET', `/v1/items/${item}`)).body.preQueue).toEqual({ fromMs: 15 * 60_000, seedHash });

    clock.set(opensAt + 1);
    const later: string[] = [];
    for (let i = 0; i < 10; i++) later.push((await join(`later-${i}`)).body.ticketId);
    // Nothing is admitted before the draw; the next admission (or the sweep) draws first.
    await queue.admissions.sweep();
    const view = (await call('GET', `/v1/items/${item}`)).body.preQueue;
    expect(view).toMatchObject({ seedHash, size: 60 });
    expect(createHash('sha256').update(Buffer.from(view.seed, 'hex')).digest('hex')).toBe(seedHash);

    const order = recompute(view.seed, 60).filter((seq) => seq !== seqOf(pre[3]));
    const bySeq = new Map([...pre, ...later].map((id) => [seqOf(id), id]));
    const expected = [...order.map((s) => bySeq.get(s)!), ...later];
    const positions = await Promise.all(expected.map(async (id) => (await call('GET', `/v1/tickets/${id}`, undefined, null)).body.position));
    expect(positions).toEqual(expected.map((_, i) => i + 1));
    const pulled = (await call('POST', `/v1/items/${item}/pull`, { max: 1000 }, SERVICE)).body.tickets.map((x: { ticketId: string }) => x.ticketId);
    expect(pulled).toEqual(expected);
  });

  it('is drawn once per item: another window on a drawn item is refused, not taken and never drawn', async () => {
    const opensAt = Date.UTC(2026, 11, 12, 2, 0, 0);
    const clock = t.manualClock(opensAt - 60_000);
    const { call, queue } = t.build({ clock });
    const item = t.uniqueItem();
    const def = (at: number) => ({ handler: 'external', opensAt: new Date(at).toISOString(), preQueue: { fromMs: 15 * 60_000 }, gate: { mode: 'manual' } });
    expect((await call('PUT', `/v1/items/${item}`, def(opensAt))).status).toBe(201);
    clock.set(opensAt + 1);
    await queue.admissions.sweep(); // the draw (nobody joined)
    expect((await call('GET', `/v1/items/${item}`)).body.preQueue).toMatchObject({ size: 0 });
    // The next sale, an hour on: before, 200 and `scheduled`, its joins told a draw that never came.
    const again = await call('PUT', `/v1/items/${item}`, def(opensAt + 3_600_000));
    expect([again.status, again.body.error?.code]).toEqual([409, 'conflict']);
    expect(again.body.error.message).toMatch(/drawn once per item/);
    // Without the pre-queue, the item reopens first come, first served (as it said).
    expect((await call('PUT', `/v1/items/${item}`, { ...def(opensAt + 3_600_000), preQueue: undefined })).status).toBe(200);
  });

  it('refuses a pre-queue without opensAt', async () => {
    const { call } = t.build();
    const r = await call('PUT', `/v1/items/${t.uniqueItem()}`, { handler: 'external', preQueue: { fromMs: 60_000 } });
    expect(r.status).toBe(400);
    expect(r.body.error.details.issues[0].path).toBe('preQueue');
  });

  it('takes a join stamped a moment before the opening, once the pre-queue is fixed, as a join at the opening (placed after it, not told it awaits the draw)', async () => {
    const opensAt = Date.UTC(2026, 11, 12, 2, 0, 0);
    // Two daemons whose clocks are a millisecond apart at the opening.
    const early = t.manualClock(opensAt - 60_000);
    const a = t.build({ clock: early });
    const late = t.manualClock(opensAt - 60_000);
    const b = t.build({ clock: late, prefix: a.prefix });
    const item = t.uniqueItem();
    expect((await a.call('PUT', `/v1/items/${item}`, { handler: 'external', opensAt: new Date(opensAt).toISOString(), preQueue: { fromMs: 15 * 60_000 }, gate: { mode: 'manual' } })).status).toBe(201);
    for (let i = 0; i < 5; i++) expect((await a.call('POST', `/v1/items/${item}/tickets`, { userId: `pre-${i}` }, SERVICE)).status).toBe(202);
    late.set(opensAt);
    const atOpen = await b.call('POST', `/v1/items/${item}/tickets`, { userId: 'at-open' }, SERVICE);
    expect(atOpen.body.position).toBe(6);
    early.set(opensAt - 1);
    const justBefore = await a.call('POST', `/v1/items/${item}/tickets`, { userId: 'just-before' }, SERVICE);
    expect(justBefore.status).toBe(202);
    expect(justBefore.body).toMatchObject({ position: 7 }); // before: position null, "drawn at the opening"
    expect(justBefore.body.drawAt).toBeUndefined();
    early.set(opensAt + 5);
    late.set(opensAt + 5);
    await a.queue.admissions.sweep();
    expect((await a.call('GET', `/v1/items/${item}`)).body.preQueue).toMatchObject({ size: 5 });
    expect((await a.call('GET', `/v1/tickets/${justBefore.body.ticketId}`, undefined, null)).body.position).toBe(7);
  });
});
