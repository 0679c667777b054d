import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { createLine } from '../src/queue/line.js';
import { subLineOf } from '../src/queue/split-line.js';
import type { AdmittedTicket } from '../src/queue/types.js';
import { jobQueuePrefix } from '../src/redis/keys.js';
import { createScriptRunner, scripts } from '../src/redis/scripts.js';
import { createJobQueues, queueName } from '../src/service/jobs.js';
import { redisUrl, testRedis } from './support/redis.js';

/** A split item's leases: one id per ticket across its sub-lines, every expired one swept back at once, and the places of the tickets they put back. */
const t = testRedis();
const conn = new Redis(redisUrl(), { maxRetriesPerRequest: null });
afterAll(() => conn.disconnect());
const clock = manualClock();
const plain = { config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' as const };
const open = { mode: 'manual' as const, rate: null, maxInFlight: null };

async function splitItem(itemId: string, handler: 'external' | 'webhook', lines: number) {
  const line = createLine({ redis: t.redis, prefix: t.newPrefix(), clock, cacheMs: 0 });
  const config = handler === 'webhook' ? { url: 'http://127.0.0.1:2/x' } : {};
  await line.definitions.define({ itemId, handler, ...plain, config, lines }, open, { reopen: false });
  return line;
}

/** The seqs of the tickets a dispatch of `tickets` queued, in jobs of `batch`, as the workers would find them. */
async function queuedSeqs(tickets: AdmittedTicket[], itemId: string, batch: number): Promise<number[]> {
  const jp = t.newPrefix();
  const jobs = createJobQueues(conn, { prefix: jp, attempts: 3, backoffMs: 100, concurrency: 1, lockDurationMs: 10_000, stalledIntervalMs: 5000, batch }, (err) => console.error("job queue error", err));
  await jobs.dispatch('webhook', [{ itemId, tickets }]);
  const q = new Queue(queueName('webhook'), { connection: conn, prefix: jobQueuePrefix(jp, queueName('webhook')) });
  const seqs = (await q.getJobs(['waiting', 'wait', 'prioritized', 'delayed'])).flatMap((j) => j.data.groups.flatMap((g: { tickets: { seq: number }[] }) => g.tickets.map((x) => x.seq)));
  await q.obliterate({ force: true });
  await q.close();
  await jobs.close();
  return seqs.sort((a, b) => a - b);
}

describe("a split item's leases", () => {
  it('are one id per ticket of a round, across sub-lines', async () => {
    const line = await splitItem('ld', 'external', 4);
    for (let u = 0; u < 40; u++) await line.tickets.join('ld', `ld-u${u}`, null);
    const ids = (await line.admissions.admit('ld', 40, 60_000)).map((g) => g.leaseId);
    expect(ids).toHaveLength(40);
    expect(new Set(ids).size).toBe(40);
  });

  it('are handed to concurrent pulls alike: four pulls of 15 at once on 60 waiting take all 60, each ticket once; two dispatcher rounds at once do not wait', async () => {
    const line = await splitItem('cp', 'external', 8);
    for (let u = 0; u < 60; u++) await line.tickets.join('cp', `cp-u${u}`, null);
    // (The last waits out three rounds of a few round trips each: well within the second it may wait.)
    const pull = () => line.admissions.admitRound('cp', 15, 60_000, undefined, undefined, { lockWaitMs: 1000 }).then((r) => r.tickets);
    const pulls = await Promise.all(Array.from({ length: 4 }, pull));
    // (Before: 15, 0, 0, 0 — a pull that found another holding the item's lock got none.)
    expect(pulls.map((p) => p.length)).toEqual([15, 15, 15, 15]);
    expect(new Set(pulls.flat().map((t) => t.seq)).size).toBe(60);
    // A dispatcher's round does not wait: it answers none while another holds the lock.
    for (let u = 0; u < 30; u++) await line.tickets.join('cp', `cp-v${u}`, null);
    const [first, second] = await Promise.all([line.admissions.admit('cp', 15, 60_000), line.admissions.admit('cp', 15, 60_000)]);
    expect([first.length, second.length].sort((a, b) => a - b)).toEqual([0, 15]);
  });

  it("are not handed to a pull that waited for the item's lock past the sale window's end", async () => {
    const own = manualClock();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock: own, cacheMs: 0 });
    await line.definitions.define({ itemId: 'cw', handler: 'external', ...plain, closesAt: own.now() + 300, lines: 4 }, open, { reopen: false });
    for (let u = 0; u < 5; u++) await line.tickets.join('cw', `cw-u${u}`, null);
    const { run } = createScriptRunner(t.redis, prefix);
    const gate = (op: string) => run(scripts.splitGate, 'cw', own.now(), { op, token: 'another', want: '', inFlight: '', autoCap: '', taken: 0, lastNum: 0, version: '' });
    expect(Number(await gate('lock'))).toBeGreaterThanOrEqual(0); // another admission holds the lock
    const pull = line.admissions.admitRound('cw', 10, 60_000, undefined, undefined, { lockWaitMs: 1000 });
    await new Promise((r) => setTimeout(r, 50));
    own.advance(1000); // the window ends while the pull waits
    await gate('commit');
    expect((await pull).tickets).toEqual([]); // before: all five, 700 ms after closesAt
  });

  it("queue every ticket of a dispatcher round in jobs (none dropped as another job's duplicate)", async () => {
    const line = await splitItem('dr', 'webhook', 2);
    const users = Array.from({ length: 600 }, (_, i) => `dr-${i}`);
    // Sub-line 1's first 100 joiners after sub-line 0's first 100 (uneven sub-lines do this by chance):
    // tickets 1 and 101 of the round have the same seq on their sub-lines.
    const order = [...users.filter((u) => subLineOf(u, 2) === 0).slice(0, 100), ...users.filter((u) => subLineOf(u, 2) === 1).slice(0, 100)];
    for (const u of order) await line.tickets.join('dr', u, null);
    const { tickets } = await line.admissions.admitRound('dr', 200, 60_000);
    expect(tickets).toHaveLength(200);
    expect(await queuedSeqs(tickets, 'dr', 100)).toEqual(tickets.map((x) => x.seq).sort((a, b) => a - b));
  });

  it('queue every ticket run again out of doubt', async () => {
    const line = await splitItem('dj', 'webhook', 2);
    const users = Array.from({ length: 60 }, (_, i) => `dj-${i}`);
    for (const u of [...users.filter((u) => subLineOf(u, 2) === 0).slice(0, 2), ...users.filter((u) => subLineOf(u, 2) === 1).slice(0, 2)]) await line.tickets.join('dj', u, null);
    expect(await line.admissions.admit('dj', 10, 1000)).toHaveLength(4);
    // The daemon that ran them dies; the item closes; the leases run out: the tickets wait in doubt.
    await line.definitions.cut('dj', 'closed');
    clock.advance(2000);
    await line.admissions.sweep();
    const doubts = await line.admissions.doubts('dj', clock.now());
    expect(doubts).toHaveLength(4);
    const relaunched = await line.admissions.relaunchDoubts('dj', doubts.map((d) => d.seq), 60_000);
    expect(relaunched).toHaveLength(4);
    expect(await queuedSeqs(relaunched, 'dj', 2)).toEqual(relaunched.map((r) => r.seq).sort((a, b) => a - b));
  });

  it('run out all at once: one sweep returns every expired lease, as on one line', async () => {
    const back: Record<string, number> = {};
    for (const [id, lines] of [['sw1', 1], ['sw4', 4]] as const) {
      const line = await splitItem(id, 'external', lines);
      for (let u = 0; u < 200; u++) await line.tickets.join(id, `${id}-u${u}`, null);
      expect(await line.admissions.admit(id, 200, 1000)).toHaveLength(200);
      clock.advance(2000);
      back[id] = await line.admissions.sweep();
    }
    expect(back).toEqual({ sw1: 200, sw4: 200 });
  });

  it("given back (a worker's retry) put their tickets back in join order across sub-lines, and each is shown the place the next round takes it at", async () => {
    const line = await splitItem('rr', 'external', 2);
    const users = Array.from({ length: 40 }, (_, i) => `rr-${i}`);
    // The earlier joiner on sub-line 1, the later one on sub-line 0.
    const early = users.find((u) => subLineOf(u, 2) === 1)!;
    const late = users.find((u) => subLineOf(u, 2) === 0)!;
    const a = (await line.tickets.join('rr', early, null)).ticket.ticketId;
    const b = (await line.tickets.join('rr', late, null)).ticket.ticketId;
    const pulled = await line.admissions.admit('rr', 10, 60_000);
    expect(pulled.map((p) => p.userId)).toEqual([early, late]);
    for (const p of pulled) await line.admissions.settle(p.ticketId, { leaseId: p.leaseId, status: 'failed', retry: true });
    const [va, vb] = [await line.tickets.status(a), await line.tickets.status(b)];
    const next = await line.admissions.admit('rr', 1, 60_000);
    expect({ early: va.position, late: vb.position, next: next[0]?.userId }).toEqual({ early: 1, late: 2, next: early });
  });

  it('run out put their tickets ahead of the line, and no two tickets read one place (a returned one and the first in line both read 1)', async () => {
    const line = await splitItem('rp', 'external', 2);
    const ids: string[] = [];
    for (let u = 0; u < 6; u++) ids.push((await line.tickets.join('rp', `rp-u${u}`, null)).ticket.ticketId);
    expect(await line.admissions.admit('rp', 2, 1000)).toHaveLength(2);
    clock.advance(1500);
    expect(await line.admissions.sweep()).toBe(2);
    const places = await Promise.all(ids.map(async (id) => (await line.tickets.status(id)).position));
    expect(places).toEqual([1, 2, 3, 4, 5, 6]); // before: [1, 2, 1, 2, 3, 4]
    // And the next round takes them in that order.
    const next = await line.admissions.admit('rp', 6, 60_000);
    expect(next.map((n) => n.ticketId)).toEqual(ids);
  });
});
