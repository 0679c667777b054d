import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';

const t = await testApp();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Pulls from both instances in turn every `everyMs` until `until`, recording admission times. */
async function pullLoop(calls: ReturnType<typeof t.build>['call'][], item: string, until: number, everyMs: number, times: number[]) {
  let i = 0;
  while (Date.now() < until) {
    const r = await calls[i++ % calls.length]('POST', `/v1/items/${item}/pull`, { max: 1000 }, SERVICE);
    const now = Date.now();
    for (const _ of r.body.tickets) times.push(now);
    await sleep(everyMs);
  }
}

describe('the manual gate, shared by two daemons on one Redis', () => {
  it('admits at the set rate within ±10% over 5 s, without bursts, and applies a change within 1 s', async () => {
    const a = t.build();
    const b = t.build({ prefix: a.prefix, cacheMs: 250 }); // a second daemon: same Redis keys, own caches
    await a.call('PUT', '/v1/items/paced', { handler: 'external', gate: { mode: 'manual', rate: 20 } });
    const users = Array.from({ length: 600 }, (_, i) => `u${i}`);
    for (let i = 0; i < users.length; i += 50)
      await Promise.all(users.slice(i, i + 50).map((u, j) => [a, b][j % 2].call('POST', '/v1/items/paced/tickets', { userId: u }, SERVICE)));

    const times: number[] = [];
    const start = Date.now();
    await pullLoop([a.call, b.call], 'paced', start + 5000, 25, times);
    const elapsed = (Date.now() - start) / 1000;
    expect(times.length).toBeGreaterThanOrEqual(Math.floor(20 * elapsed * 0.9));
    expect(times.length).toBeLessThanOrEqual(Math.ceil(20 * elapsed * 1.1));
    // No burst: any 1 s window holds at most rate + burst tolerance (max(1, 20 × 0.1) = 2).
    for (const t0 of times) expect(times.filter((x) => x >= t0 && x < t0 + 1000).length).toBeLessThanOrEqual(22);

    const changedAt = Date.now();
    const patched = await a.call('PATCH', '/v1/items/paced/gate', { rate: 50 });
    expect(patched.status).toBe(200);
    const after: number[] = [];
    await pullLoop([b.call, a.call], 'paced', changedAt + 3000, 25, after);
    const settled = after.filter((x) => x >= changedAt + 1000);
    expect(settled.length).toBeGreaterThanOrEqual(90);
    expect(settled.length).toBeLessThanOrEqual(112);
    const view = await b.call('GET', '/v1/items/paced');
    expect(view.body.gate).toMatchObject({ mode: 'manual', rate: 50 });
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
