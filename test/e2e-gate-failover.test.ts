import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { RUN_LEASE_MS } from '../src/service/jobs.js';
import { processEnv, startDaemonProcess, type RunningDaemon } from './support/daemon.js';
import { testDb } from './support/db.js';
import { http } from './support/http.js';
import { testRedis } from './support/redis.js';
import { askAgainOn503, joinAll, userIds } from './support/joins.js';

const { newPrefix } = testRedis();
const db = await testDb();
const running: RunningDaemon[] = [];
// The lease of tickets between their admission and their job's being queued, and BullMQ's lock of a
// running job, both 30 s here (defaults 8 s and 10 s): a ticket held for either shows as a gap of
// ~30 s, far from the bound below (7 s), which a twice-slower machine's full suite may take past 5 s.
const DISPATCH_LEASE_MS = 30_000;
const JOB_LOCK_MS = 30_000;

/** An item's view, read again after a 503 (a busy machine's Redis command past its 500 ms budget). */
const itemView = async (base: string) => (await askAgainOn503(() => http(base, 'GET', '/v1/items/fo', undefined, 'op'), [200], Date.now() + 30_000, 'GET /v1/items/fo')).body;

/** When the daemon logged a Redis command that timed out (ms), from its JSON log lines. */
const redisTimeouts = (d: RunningDaemon) =>
  d
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{') && l.includes('Command timed out'))
    .map((l) => Date.parse(JSON.parse(l).time));

// The downstream: answers a call after 50 ms, or, while `holding`, never (the call stays open).
// Every arrival is recorded with its time and idempotency key (the ticket), and listeners wait on
// arrivals instead of sleeping.
let holding = false;
const arrivals: { at: number; ref: string }[] = [];
const held: ServerResponse[] = [];
const listeners: (() => void)[] = [];
const server = createServer(async (req: IncomingMessage, res) => {
  for await (const _ of req);
  arrivals.push({ at: Date.now(), ref: String(req.headers['idempotency-key']) });
  for (const l of listeners.splice(0)) l();
  if (holding) return void held.push(res);
  setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'), 50);
});
const arrived = (n: number, what: string, ms = 30_000) =>
  new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what} (${arrivals.length} arrivals)`)), ms);
    const check = () => {
      if (arrivals.length >= n) {
        clearTimeout(timer);
        resolve();
      } else listeners.push(check);
    };
    check();
  });

afterAll(async () => {
  await Promise.all(running.map((d) => d.stop('SIGKILL')));
  for (const r of held) r.destroy();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe('the adaptive gate when its leader dies', () => {
  it('admits again within the run lease + 4 s after the leader is SIGKILLed holding every in-flight slot, and runs no ticket a third time', { timeout: 180_000 }, async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const env = processEnv(db.url, newPrefix(), { FLOODGATE_DISPATCH_LEASE_MS: String(DISPATCH_LEASE_MS), FLOODGATE_JOB_LOCK_MS: String(JOB_LOCK_MS) });

    // The leader alone first, so it is the leader and its worker takes the first job.
    const a = await startDaemonProcess(env);
    running.push(a);
    // Auto under an operator ceiling of 2 in flight: the field report's pinned limit of 2.
    const put = () => http(a.url, 'PUT', '/v1/items/fo', { handler: 'webhook', config: { url, timeoutMs: 30_000 }, gate: { mode: 'auto', maxInFlight: 2 } }, 'op');
    await askAgainOn503(put, [200, 201], Date.now() + 30_000, 'PUT /v1/items/fo');
    holding = true;
    await joinAll((u) => http(a.url, 'POST', '/v1/items/fo/tickets', { userId: u }, 'svc'), userIds(0, 60), { batch: 20 });
    await arrived(2, 'the leader to hold both slots');
    let view: any;
    for (const until = Date.now() + 10_000; !view?.gate.controller?.leader && Date.now() < until; await new Promise((r) => setTimeout(r, 50))) view = await itemView(a.url);
    expect(view.gate.controller.leader).toContain(`-${a.proc.pid}-`);
    expect(view.counts.admitted).toBe(2);

    const b = await startDaemonProcess(env);
    running.push(b);
    const heldRefs = arrivals.map((x) => x.ref);
    holding = false;
    const killedAt = Date.now();
    await a.stop('SIGKILL');

    // Admissions come back through the survivor: the first within the run lease + 2 s of the kill
    // (the dead daemon's last renewal set its tickets' leases to end at most RUN_LEASE_MS after it;
    // the survivor's dispatcher reclaims them at its next round, ~100 ms, and the rest is left for
    // the admission, the job and the call), and no gap longer than that until 20 more calls went
    // out. The design's bound is the lease + 1 s: the first call came 2.3-2.4 s after the kill on a
    // quiet machine and 2.3-3.2 s beside two CPU burners (3 Dec), but 4.16 s once in a clean-clone
    // CI run with the whole suite on two cores, and 4.63 s in a full run on 6 Dec (2.18–2.38 s in four
    // runs of the file alone just after): the second more was for that. The fault this
    // guards against took 9-10 s (a probe pinning the limit while the dead daemon's BullMQ lock ran),
    // ~30 s with the lock and lease set here: the bound is 7 s, room for a machine twice as slow
    // (the design's lease + 1 s: docs/benchmarks.md records 2.3-2.5 s on a quiet machine).
    // No gap is excused: an admission answered late (the shared Redis held by another test) used
    // to leave its tickets admitted with no job until their dispatch lease ran out; admissions now
    // read their answers however late (their own connection, infra/redis-client.ts).
    const before = arrivals.length;
    await arrived(before + 20, '20 calls through the survivor', 60_000);
    const after = [killedAt, ...arrivals.slice(before).map((x) => x.at)];
    const gaps = after.slice(1).map((t, i) => ({ from: after[i], ms: t - after[i] }));
    const timeouts = redisTimeouts(b);
    const long = gaps.filter(({ ms }) => ms > RUN_LEASE_MS + 4000);
    expect(long, `gaps after the kill: ${gaps.map((g) => g.ms).join(', ')} ms; Redis timeouts logged at ${timeouts.map((t) => t - killedAt).join(', ')} ms`).toEqual([]);
    // The two tickets the dead daemon held ran again, through the survivor.
    expect(arrivals.slice(before).map((x) => x.ref)).toEqual(expect.arrayContaining(heldRefs));

    // The line drains; the dead daemon's job, handed over once its BullMQ lock (30 s here) ran out and
    // the stall check saw it, runs nothing: no ticket reaches the downstream a third time.
    let item: any;
    for (const until = Date.now() + 60_000; Date.now() < until; await new Promise((r) => setTimeout(r, 100))) {
      item = await itemView(b.url);
      if (item.counts.waiting === 0 && item.counts.admitted === 0) break;
    }
    expect(item.counts.succeeded).toBe(60);
    const seen = new Map<string, number>();
    for (const x of arrivals) seen.set(x.ref, (seen.get(x.ref) ?? 0) + 1);
    expect([...seen.values()].filter((n) => n > 2)).toEqual([]);
    expect([...seen].filter(([, n]) => n === 2).map(([ref]) => ref).sort()).toEqual([...heldRefs].sort());
    for (const until = Date.now() + 60_000; !/job skipped: its tickets were offered again/.test(b.output()) && Date.now() < until; ) await new Promise((r) => setTimeout(r, 100));
    expect(b.output()).toMatch(/job skipped: its tickets were offered again/);
  });
});
