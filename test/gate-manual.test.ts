import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';
import { joinAll, userIds } from './support/joins.js';

const t = await testApp();
type Build = ReturnType<typeof t.build>;

/** Joins `n` users through both instances in turn. */
async function fill(a: Build, b: Build, item: string, n: number) {
  await joinAll((u) => [a, b][Number(u.slice(1)) % 2].call('POST', `/v1/items/${item}/tickets`, { userId: u }, SERVICE), userIds(0, n), { batch: 50 });
}

const pull = async (x: Build, item: string): Promise<number> => (await x.call('POST', `/v1/items/${item}/pull`, { max: 1000 }, SERVICE)).body.tickets.length;

describe('the manual gate, shared by two daemons on one Redis', () => {
  it('paces both at the set rate within the burst, with no burst in any second, and applies a change at the next pull', async () => {
    const clock = t.manualClock(Date.UTC(2027, 2, 3, 10)); // one clock for both, moved by the test
    const a = t.build({ clock });
    const b = t.build({ clock, prefix: a.prefix, cacheMs: 250 }); // a second daemon: same Redis keys, own caches
    await a.call('PUT', '/v1/items/paced', { handler: 'external', gate: { mode: 'manual', rate: 20 } });
    // Enough for both phases at most: 20/s over the 4975 ms of pulls + the burst of 2 (101), then
    // 50/s over 2 s + the burst of 5 (105). A line that ran dry would fail the lower bounds below.
    await fill(a, b, 'paced', 250);

    // Pulls every 25 ms of the clock for 5 s, three in a row per daemon (strict turns would hand
    // every admission at 50 ms to the same one): rate 20/s, burst max(1, 2) = 2.
    const got: [number, number][] = [];
    const per = [0, 0];
    for (let i = 0; i < 200; i++, clock.advance(25)) {
      const d = Math.floor(i / 3) % 2;
      const n = await pull([a, b][d], 'paced');
      got.push([clock.now(), n]);
      per[d] += n;
    }
    const span = got.at(-1)![0] - got[0][0];
    const total = per[0] + per[1];
    expect(total).toBeGreaterThan((20 * span) / 1000 + 2 - 1);
    expect(total).toBeLessThanOrEqual((20 * span) / 1000 + 2);
    expect(Math.min(...per)).toBeGreaterThanOrEqual(20); // both pulled from one pace, not one each
    for (const [t0] of got) expect(got.filter(([x]) => x >= t0 && x < t0 + 1000).reduce((s, [, n]) => s + n, 0)).toBeLessThanOrEqual(22);

    expect((await a.call('PATCH', '/v1/items/paced/gate', { rate: 50 })).status).toBe(200);
    let after = 0;
    for (let i = 0; i < 80; i++, clock.advance(25)) after += await pull([b, a][i % 2], 'paced');
    // 2 s at 50/s (burst 5), less at most the 50 ms the old pace still owed.
    expect(after).toBeGreaterThanOrEqual(Math.floor(50 * (2 - 0.05)));
    expect(after).toBeLessThanOrEqual(50 * 2 + 5);
    const view = await b.call('GET', '/v1/items/paced');
    expect(view.body.gate).toMatchObject({ mode: 'manual', rate: 50 });
  });

  it('never admits past the shared pace on the real clock, from either daemon', async () => {
    const a = t.build();
    const b = t.build({ prefix: a.prefix });
    await a.call('PUT', '/v1/items/real', { handler: 'external', gate: { mode: 'manual', rate: 20 } });
    await fill(a, b, 'real', 100);
    const per = [0, 0];
    const start = Date.now();
    // Until each daemon has had a few (however slow the machine), then the GCRA's bound holds
    // over the whole span: at most rate × span + burst.
    for (let i = 0; Math.min(...per) < 3 && Date.now() - start < 60_000; i++) {
      per[i % 2] += await pull([a, b][i % 2], 'real');
      await new Promise((r) => setTimeout(r, 25));
    }
    const span = Date.now() - start;
    expect(Math.min(...per)).toBeGreaterThanOrEqual(3);
    expect(per[0] + per[1]).toBeLessThanOrEqual((20 * span) / 1000 + 2);
  });

  it('admits nothing while closed, and shares maxInFlight across instances', async () => {
    const a = t.build();
    const b = t.build({ prefix: a.prefix });
    await a.call('PUT', '/v1/items/g', { handler: 'external', gate: { mode: 'closed' } });
    for (let i = 0; i < 10; i++) await b.call('POST', '/v1/items/g/tickets', { userId: `u${i}` }, SERVICE);
    expect((await b.call('POST', '/v1/items/g/pull', { max: 10 }, SERVICE)).body.tickets).toEqual([]);
    await b.call('PATCH', '/v1/items/g/gate', { mode: 'manual', maxInFlight: 4 });
    const got = [
      ...(await a.call('POST', '/v1/items/g/pull', { max: 3 }, SERVICE)).body.tickets,
      ...(await b.call('POST', '/v1/items/g/pull', { max: 3 }, SERVICE)).body.tickets,
    ];
    expect(got.map((x: { userId: string }) => x.userId)).toEqual(['u0', 'u1', 'u2', 'u3']);
    const seen = await b.call('GET', `/v1/tickets/${got[0].ticketId}`, undefined, null);
    expect(seen.body.state).toBe('admitted');
  });
});
