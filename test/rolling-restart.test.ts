import type { ClientRequest, ServerResponse } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { processEnv, startDaemonProcess, type RunningDaemon } from './support/daemon.js';
import { watchOverHttp } from './support/ticket-stream.js';
import { testDb } from './support/db.js';
import { http } from './support/http.js';
import { testRedis } from './support/redis.js';
import { askAgainOn503, itemUntil, joinAll, readAsOperator, userIds } from './support/joins.js';
import { recordingDownstream } from './support/downstream.js';
import { expectSoldExactly } from './support/sale-checks.js';

/**
 * A deploy during a sale: of two daemons on one Redis and one Postgres, one gets SIGTERM, a new
 * one starts, then the other gets SIGTERM, while tickets are being admitted. Each stopped daemon
 * must exit 0 well before FLOODGATE_SHUTDOWN_MS (10 s, after which main.ts forces exit 1 with its
 * jobs cut short), and the sale must go on as if nothing happened.
 */

const { newPrefix } = testRedis();
const db = await testDb();
const running: RunningDaemon[] = [];
const streams: ClientRequest[] = [];
afterAll(async () => {
  for (const s of streams) s.destroy();
  await Promise.all(running.map((d) => d.stop('SIGKILL')));
});

/**
 * How long a graceful stop may take here. Measured 0.1-0.5 s (the drain of HTTP, the dispatcher's
 * round, the workers' jobs, the ledger), 0.8-1.2 s where it waited for webhook calls the test held.
 * The bound leaves a busy 2-core machine several seconds, and stays well under the 10 s at which
 * main.ts gives up (exit 1) — the fault this guards against, which took the whole 10 s each time.
 */
const STOP_MS = 6000;

const start = async (env: Record<string, string>) => {
  const d = await startDaemonProcess(env);
  running.push(d);
  return d;
};

/** A graceful stop as a deploy sends it: SIGTERM, then the exit code and how long the exit took. */
async function sigterm(d: RunningDaemon) {
  const at = Date.now();
  const code = await d.stop('SIGTERM');
  return { at, code, ms: Date.now() - at };
}

const read = readAsOperator;

/** When a daemon logged `msg` (ms, its JSON lines' time), from the first such line after `after`. */
function loggedAt(d: RunningDaemon, msg: string, after = 0): number | null {
  for (const line of d.output().split('\n')) {
    if (!line.startsWith('{') || !line.includes(`"msg":"${msg}"`)) continue;
    const t = Date.parse(JSON.parse(line).time);
    if (t >= after) return t;
  }
  return null;
}

/** Resolves once the daemon has logged `msg`, looked for on each of its output chunks. */
function logs(d: RunningDaemon, msg: string) {
  return new Promise<void>((resolve) => {
    const check = () => {
      if (!d.output().includes(`"msg":"${msg}"`)) return;
      d.proc.stdout!.off('data', check);
      resolve();
    };
    d.proc.stdout!.on('data', check);
    check();
  });
}

const watch = (base: string, ticketId: string) => watchOverHttp(base, ticketId, streams);

/**
 * A user polling a ticket every 20 ms through one kept-alive connection, as a load balancer's pool
 * keeps sending on the daemon it holds a connection to; when that daemon stops answering it goes
 * to `next()`. Every view it was told is kept.
 */
function poller(ticketId: string, first: string, next: () => string) {
  const views: any[] = [];
  let stop = false;
  const done = (async () => {
    let base = first;
    while (!stop) {
      try {
        const r = await http(base, 'GET', `/v1/tickets/${ticketId}`);
        if (r.status === 200) views.push(r.body);
      } catch {
        base = next();
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return { views, end: () => ((stop = true), done) };
}

const ended = (state: string) => state !== 'waiting' && state !== 'admitted';

/**
 * Longest pause between consecutive admissions (ms) among the tickets' `admittedAt`, and when it
 * began; with `since`, only over the admissions after it, the first counted from `since`.
 */
function longestGap(views: { admittedAt?: string }[], since?: number) {
  const at = views.flatMap((v) => (v.admittedAt ? [Date.parse(v.admittedAt)] : [])).filter((t) => since === undefined || t >= since).sort((a, b) => a - b);
  if (since !== undefined) at.unshift(since);
  let gap = { ms: 0, from: at[0] ?? 0 };
  for (let i = 1; i < at.length; i++) if (at[i] - at[i - 1] > gap.ms) gap = { ms: at[i] - at[i - 1], from: at[i - 1] };
  return gap;
}

/**
 * Waits until Postgres's outcome ledger holds every ticket of the item; returns the rows. A daemon
 * stopped gracefully writes what it read of the `done` stream before it exits; what a dead one
 * left unwritten waits for another daemon to claim it, 30 s idle at least (outcome-ledger-feed.ts):
 * 25 s tells the two apart while leaving room for the ledger's deferral on a busy machine.
 */
async function ledgerRows(itemId: string, n: number) {
  const until = Date.now() + 25_000;
  for (;;) {
    const rows = await db.sql`select ticket_id, status, reason from ticket_outcomes where item_id = ${itemId}`;
    if (rows.length >= n || Date.now() > until) return rows;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * How much later a ticket was admitted than a ticket behind it in line (ms; 0: every ticket in
 * line order), from the join answers' positions (everyone joined behind a closed gate). The line
 * admits from its head, so only a ticket sent back to the head is admitted out of order: one left
 * leased by a stopped daemon, back once its lease ran out — 3 s after the daemon's last renewal
 * for a job that stopped running (RUN_LEASE_MS), 8 s for a ticket admitted whose job was never
 * queued (FLOODGATE_DISPATCH_LEASE_MS) — and admitted again while those behind it had been. Its
 * `admittedAt` is the later admission's.
 */
function lateness(views: { admittedAt?: string }[], positions: number[]) {
  const admitted = views.flatMap((v, i) => (v.admittedAt ? [{ pos: positions[i], at: Date.parse(v.admittedAt) }] : [])).sort((x, y) => x.pos - y.pos);
  let late = 0;
  let earliestBehind = Infinity;
  for (let i = admitted.length - 1; i >= 0; i--) {
    late = Math.max(late, admitted[i].at - earliestBehind);
    earliestBehind = Math.min(earliestBehind, admitted[i].at);
  }
  return late;
}

/**
 * The bound on lateness(): in line order, two admissions can still disagree by the time between
 * one daemon reading its clock for an admit call and Redis running it, while another daemon's
 * call ran in between (a few ms; more on a busy machine whose event loop stalls). 2.5 s leaves a
 * stall that room and still tells a 3 s run lease waited out.
 */
const LATE_MS = 2500;

/**
 * The bound on the longest pause in admissions over the sale, and on a ticket's time from its
 * admission to its end. On a quiet machine the pause was under 650 ms and the time under 1 s; a
 * busy machine's stalls get several seconds, and the bound stays under what a ticket left by a
 * stopped daemon would wait: BullMQ's lock on a job left active (FLOODGATE_JOB_LOCK_MS, 10 s) or
 * the dispatch lease (8 s).
 */
const GAP_MS = 5000;

describe('a rolling restart in the middle of a sale (SIGTERM one daemon of two, start a new one, SIGTERM the other)', () => {
  it('seckill: each stopped daemon exits 0 promptly though users watch and poll it, the sale sells exactly its stock, and no ticket waits out a lease', { timeout: 180_000 }, async () => {
    const env = processEnv(db.url, newPrefix());
    const [a, b] = await Promise.all([start(env), start(env)]);
    const stock = 300;
    await askAgainOn503(() => http(a.url, 'PUT', '/v1/items/roll', { handler: 'seckill', config: { stock }, gate: { mode: 'closed' } }, 'op'), [201], Date.now() + 30_000, 'PUT');
    const users = userIds(0, 600);
    const joins = await joinAll((u) => http(Number(u.slice(1)) % 2 ? a.url : b.url, 'POST', '/v1/items/roll/tickets', { userId: u }, 'svc'), users, { batch: 60 });
    const ids = joins.map((j) => j.body.ticketId as string);
    // 20 admissions a second: the stock lasts ~15 s, long enough for both stops to land mid-sale
    // (each is checked below).
    await askAgainOn503(() => http(a.url, 'PATCH', '/v1/items/roll/gate', { mode: 'manual', rate: 20 }, 'op'), [200], Date.now() + 30_000, 'PATCH');
    await itemUntil(a.url, 'roll', (v) => v.counts.succeeded >= 40, '40 sold');

    // Users at the back of the line follow their tickets on the daemon about to stop, and a few
    // poll theirs through it; both move to the other daemons when it goes.
    const watchers = ids.slice(-20).map((id) => watch(a.url, id));
    await Promise.all(watchers.map((w) => w.first));
    let c: RunningDaemon | null = null;
    const live = () => c?.url ?? b.url;
    const pollers = ids.slice(100, 110).map((id) => poller(id, a.url, live));
    const before = await read(b.url, '/v1/items/roll');
    const stopA = await sigterm(a);
    c = await start(env);
    const mid = await read(c.url, '/v1/items/roll');
    const stopB = await sigterm(b);
    await Promise.all(watchers.map((w) => w.ended));
    await Promise.all(pollers.map((p) => p.end()));

    const views = (await expectSoldExactly(db.sql, 'roll', stock, ids, (id) => read(c!.url, `/v1/tickets/${id}`))) as any[];
    const gap = longestGap(views);
    const longestRun = Math.max(...views.filter((v) => v.admittedAt).map((v) => Date.parse(v.updatedAt) - Date.parse(v.admittedAt)));
    const late = lateness(views, joins.map((j) => j.body.position));
    const seen = { stopA, stopB, soldAtStopA: before.counts.succeeded, soldAtStopB: mid.counts.succeeded, longestGap: gap.ms, gapFromStopA: gap.from - stopA.at, longestRun, late };
    // Both stops landed mid-sale: tickets still waited when each daemon was told to stop.
    expect(before.counts.waiting, JSON.stringify(seen)).toBeGreaterThan(0);
    expect(mid.counts.waiting, JSON.stringify(seen)).toBeGreaterThan(0);
    expect(stopA.code, `${JSON.stringify(seen)}\n${a.output().slice(-3000)}`).toBe(0);
    expect(stopB.code, JSON.stringify(seen)).toBe(0);
    expect(stopA.ms, JSON.stringify(seen)).toBeLessThan(STOP_MS);
    expect(stopB.ms, JSON.stringify(seen)).toBeLessThan(STOP_MS);
    expect(gap.ms, JSON.stringify(seen)).toBeLessThan(GAP_MS);
    expect(longestRun, JSON.stringify(seen)).toBeLessThan(GAP_MS);
    expect(late, JSON.stringify(seen)).toBeLessThan(LATE_MS);
    // The outcome ledger in Postgres has every ticket's end (rows keyed by the ticket's ref, not its id).
    const rows = await ledgerRows('roll', ids.length);
    expect(rows.length).toBe(ids.length);
    const tally = (states: string[]) => states.reduce<Record<string, number>>((t, st) => ({ ...t, [st]: (t[st] ?? 0) + 1 }), {});
    expect(tally(rows.map((r) => r.status))).toEqual({ succeeded: stock, rejected: ids.length - stock });
    // Nothing the users were told was false: an end they saw is the end their ticket had.
    for (const [i, w] of watchers.entries()) {
      const final = views[ids.length - watchers.length + i];
      for (const v of w.views) if (ended(v.state)) expect(v.state).toBe(final.state);
    }
    for (const [i, p] of pollers.entries()) for (const v of p.views) if (ended(v.state)) expect(v.state).toBe(views[100 + i].state);
    expect(pollers.every((p) => p.views.length > 0)).toBe(true);
  });

  it('webhook: calls in flight at the SIGTERM complete and are settled, no ticket fails for the stop, and no user is called under two keys', { timeout: 180_000 }, async () => {
    // The downstream answers each call 100 ms after it came with the call's number, or, while
    // `holding`, not until the test lets it go (the call stays in flight).
    let holding = true;
    const held: { res: ServerResponse; n: number }[] = [];
    let arrivals = 0;
    let onArrival = () => {};
    const calls: { key: string; ref: string; user: string }[] = [];
    const answer = (res: ServerResponse, n: number) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ call: n }));
    const down = await recordingDownstream((req, res) => {
      const body = JSON.parse(req.body);
      const n = calls.push({ key: String(req.headers['idempotency-key']), ref: body.ticketRef, user: body.userId }) - 1;
      arrivals++;
      onArrival();
      if (holding) held.push({ res, n });
      else setTimeout(() => answer(res, n), 100);
    });
    const arrived = (count: number) => new Promise<void>((resolve) => (onArrival = () => arrivals >= count && resolve())).then(() => undefined);

    const env = processEnv(db.url, newPrefix());
    // The first daemon alone, so that the calls held are its own (the second has no worker yet).
    const a = await start(env);
    // The calls held must not time out while the test holds them (a busy machine took over 15 s to
    // start the second daemon, and the ten held calls were made again: twenty held).
    await askAgainOn503(() => http(a.url, 'PUT', '/v1/items/hook', { handler: 'webhook', config: { url: down.url, timeoutMs: 120_000 }, gate: { mode: 'closed' } }, 'op'), [201], Date.now() + 30_000, 'PUT');
    const users = userIds(0, 200);
    const joins = await joinAll((u) => http(a.url, 'POST', '/v1/items/hook/tickets', { userId: u }, 'svc'), users, { batch: 50 });
    const ids = joins.map((j) => j.body.ticketId as string);
    const tenHeld = arrived(10);
    await askAgainOn503(() => http(a.url, 'PATCH', '/v1/items/hook/gate', { mode: 'manual', rate: 25, maxInFlight: 10 }, 'op'), [200], Date.now() + 30_000, 'PATCH');
    await tenHeld;
    const heldCalls = held.map((h) => ({ ...calls[h.n], n: h.n }));
    expect(heldCalls).toHaveLength(10);
    const b = await start(env);
    expect(held).toHaveLength(10);

    // SIGTERM with ten calls in flight, answered only once the daemon has begun to stop.
    const stoppingA = logs(a, 'stopping');
    const stopA = sigterm(a);
    await stoppingA;
    holding = false;
    const released = Date.now();
    for (const h of held.splice(0)) answer(h.res, h.n);
    const aEnd = await stopA;
    const c = await start(env);
    await itemUntil(c.url, 'hook', (v) => v.counts.succeeded >= 100, '100 succeeded');
    const mid = await read(c.url, '/v1/items/hook');
    const stopB = await sigterm(b);
    const done = await itemUntil(c.url, 'hook', (v) => v.counts.waiting === 0 && v.counts.admitted === 0, 'the line to drain');

    const views = await Promise.all(ids.map((id) => read(c.url, `/v1/tickets/${id}`)));
    // Over the sale from the release of the held calls (until then the test held every slot).
    const gap = longestGap(views, released);
    const reruns = calls.length - new Set(calls.map((x) => x.ref)).size;
    const late = lateness(views, joins.map((j) => j.body.position));
    const seen = { stopA: aEnd, stopB, succeededAtStopB: mid.counts.succeeded, calls: calls.length, reruns, longestGap: gap.ms, late };
    expect(mid.counts.waiting, JSON.stringify(seen)).toBeGreaterThan(0);
    expect(aEnd.code, `${JSON.stringify(seen)}\n${a.output().slice(-3000)}`).toBe(0);
    expect(stopB.code, JSON.stringify(seen)).toBe(0);
    expect(aEnd.ms, JSON.stringify(seen)).toBeLessThan(STOP_MS);
    expect(stopB.ms, JSON.stringify(seen)).toBeLessThan(STOP_MS);
    // Every ticket succeeded: none failed because a daemon stopped under it.
    expect(done.counts).toMatchObject({ succeeded: 200, failed: 0, rejected: 0 });
    expect(views.every((v) => v.state === 'succeeded')).toBe(true);
    const rows = await ledgerRows('hook', ids.length);
    expect(rows.filter((r) => r.status !== 'succeeded')).toEqual([]);
    expect(rows.length).toBe(ids.length);
    // One key a user: a ticket called again is called under its own key (its ref), never a new one.
    const keys = new Map<string, Set<string>>();
    for (const x of calls) keys.set(x.user, (keys.get(x.user) ?? new Set()).add(x.key));
    expect([...keys.values()].filter((k) => k.size > 1)).toEqual([]);
    expect(calls.filter((x) => x.key !== x.ref)).toEqual([]);
    // The calls in flight at the SIGTERM completed, and their answers are what their tickets keep.
    for (const h of heldCalls) {
      const v = views[users.indexOf(h.user)];
      expect(v.outcome?.result).toEqual({ call: h.n });
    }
    expect(gap.ms, JSON.stringify(seen)).toBeLessThan(GAP_MS);
    expect(late, JSON.stringify(seen)).toBeLessThan(LATE_MS);
  });

  it('webhook: a call still in flight when the stop runs out of time is run again under the same Idempotency-Key, and its ticket succeeds', { timeout: 120_000 }, async () => {
    // The downstream never answers the first two calls (they stay in flight), and answers every
    // later one at once.
    const calls: { key: string; at: number }[] = [];
    let onArrival = () => {};
    const down = await recordingDownstream((req, res) => {
      calls.push({ key: String(req.headers['idempotency-key']), at: Date.now() });
      onArrival();
      if (calls.length > 2) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ call: calls.length - 1 }));
    });
    const arrived = (n: number) => new Promise<void>((resolve) => ((onArrival = () => calls.length >= n && resolve()), onArrival()));
    const env = processEnv(db.url, newPrefix());
    // A stop budget (FLOODGATE_SHUTDOWN_MS) shorter than the held calls: main.ts forces the exit.
    const a = await start({ ...env, FLOODGATE_SHUTDOWN_MS: '1000' });
    await askAgainOn503(() => http(a.url, 'PUT', '/v1/items/cut', { handler: 'webhook', config: { url: down.url, timeoutMs: 60_000 }, gate: { mode: 'closed' } }, 'op'), [201], Date.now() + 30_000, 'PUT');
    const joins = await joinAll((u) => http(a.url, 'POST', '/v1/items/cut/tickets', { userId: u }, 'svc'), userIds(0, 20));
    const ids = joins.map((j) => j.body.ticketId as string);
    const twoHeld = arrived(2);
    await askAgainOn503(() => http(a.url, 'PATCH', '/v1/items/cut/gate', { mode: 'manual', maxInFlight: 2 }, 'op'), [200], Date.now() + 30_000, 'PATCH');
    await twoHeld;
    const heldKeys = calls.map((x) => x.key);
    const b = await start(env);
    const stop = await sigterm(a);
    const done = await itemUntil(b.url, 'cut', (v) => v.counts.waiting === 0 && v.counts.admitted === 0, 'the line to drain');
    const views = await Promise.all(ids.map((id) => read(b.url, `/v1/tickets/${id}`)));
    const again = calls.slice(2).filter((x) => heldKeys.includes(x.key));
    const seen = JSON.stringify({ stop, calls: calls.length, againAfterMs: again.map((x) => x.at - stop.at), late: lateness(views, joins.map((j) => j.body.position)) });
    // Forced out: the exit says so (1), within its budget and a busy machine's margin.
    expect(stop.code, seen).toBe(1);
    expect(stop.ms, seen).toBeLessThan(STOP_MS);
    // Each held call ran again, once, under its own key, and its ticket succeeded with that answer.
    expect(again.map((x) => x.key).sort(), seen).toEqual([...heldKeys].sort());
    expect(done.counts).toMatchObject({ succeeded: 20, failed: 0 });
    expect(views.every((v) => v.state === 'succeeded')).toBe(true);
    expect(calls.length).toBe(22);
    // Run again once their run lease ran out: renewed until the forced exit (1 s after the SIGTERM)
    // for RUN_LEASE_MS (3 s) at a time; measured 3.5 s after the SIGTERM. 8 s leaves a busy
    // machine 3.5 s more and still tells BullMQ's lock (10 s) waited out.
    for (const x of again) expect(x.at - stop.at, seen).toBeLessThan(8000);
  });

  it('auto gate: the controller\'s leadership passes to a surviving daemon at once on a SIGTERM, not when the lease runs out', { timeout: 180_000 }, async () => {
    // 250 ms a call under an operator ceiling of 8 in flight: at most 32 admissions a second (the
    // controller, probing, keeps it lower), so the 400 tickets last 15-25 s, through both stops.
    const down = await recordingDownstream((_, res) => void setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'), 250));
    const env = processEnv(db.url, newPrefix());
    const [a, b] = await Promise.all([start(env), start(env)]);
    await askAgainOn503(() => http(a.url, 'PUT', '/v1/items/auto', { handler: 'webhook', config: { url: down.url }, gate: { mode: 'closed' } }, 'op'), [201], Date.now() + 30_000, 'PUT');
    const joins = await joinAll((u) => http(Number(u.slice(1)) % 2 ? a.url : b.url, 'POST', '/v1/items/auto/tickets', { userId: u }, 'svc'), userIds(0, 400), { batch: 60 });
    const ids = joins.map((j) => j.body.ticketId as string);
    await askAgainOn503(() => http(a.url, 'PATCH', '/v1/items/auto/gate', { mode: 'auto', maxInFlight: 8 }, 'op'), [200], Date.now() + 30_000, 'PATCH');
    const byPid = (leader: string | null | undefined, ds: RunningDaemon[]) => ds.find((d) => leader?.includes(`-${d.proc.pid}-`));
    await itemUntil(a.url, 'auto', (v) => v.counts.succeeded >= 40 && !!byPid(v.gate.controller?.leader, [a, b]), 'a leader and 40 calls');

    /**
     * SIGTERMs whichever of the two leads now; how long after the leader's first log line of its
     * stop the other logged that it took over (null: it logged nothing after that line).
     */
    async function stopLeader(pair: [RunningDaemon, RunningDaemon]) {
      const view = await read(pair[0].url, '/v1/items/auto');
      const leader = byPid(view.gate.controller?.leader, pair);
      expect(leader, `the leader is one of the two: ${view.gate.controller?.leader}`).toBeDefined();
      const other = leader === pair[0] ? pair[1] : pair[0];
      const sent = Date.now();
      const stop = await sigterm(leader!);
      const stopping = loggedAt(leader!, 'stopping', sent - 1000)!;
      const handed = loggedAt(leader!, 'gate leadership handed over', stopping);
      const after = await itemUntil(other.url, 'auto', (v) => byPid(v.gate.controller?.leader, [other]) === other, 'the other daemon to lead');
      const taken = loggedAt(other, 'gate leadership taken', stopping);
      return { stop, handedMs: handed === null ? null : handed - stopping, takenMs: taken === null || handed === null ? null : taken - handed, waiting: after.counts.waiting, other };
    }
    const one = await stopLeader([a, b]);
    const c = await start(env);
    await itemUntil(c.url, 'auto', (v) => v.counts.succeeded >= 200, '200 calls');
    const two = await stopLeader([one.other, c]);
    const done = await itemUntil(c.url, 'auto', (v) => v.counts.waiting === 0 && v.counts.admitted === 0, 'the line to drain');
    const views = await Promise.all(ids.map((id) => read(c.url, `/v1/tickets/${id}`)));
    const gap = longestGap(views, one.stop.at);
    const late = lateness(views, joins.map((j) => j.body.position));
    const seen = { one: { ...one, other: undefined }, two: { ...two, other: undefined }, longestGap: gap.ms, gapFromFirstStop: gap.from - one.stop.at, late };
    expect(one.stop.code, JSON.stringify(seen)).toBe(0);
    expect(two.stop.code, JSON.stringify(seen)).toBe(0);
    // Both stops landed mid-sale, on the daemon that led.
    expect(one.waiting, JSON.stringify(seen)).toBeGreaterThan(0);
    expect(two.waiting, JSON.stringify(seen)).toBeGreaterThan(0);
    // Handed over by the stop, and taken at the survivor's next tick (100 ms) after it. Left to run
    // out, the lease (2 s, renewed every tick) kept it at least 1.9 s after the stop began (2009-2058
    // ms measured on the code before, which handed nothing over); with the hand-over, 75-238 ms
    // from the stop's first line on a quiet machine. The bound is from the hand-over, so the stop's
    // own time on a busy machine does not count, and 1.5 s is fifteen of the survivor's ticks.
    for (const x of [one, two]) {
      expect(x.handedMs, JSON.stringify(seen)).not.toBeNull();
      expect(x.takenMs, JSON.stringify(seen)).not.toBeNull();
      expect(x.takenMs!, JSON.stringify(seen)).toBeLessThan(1500);
    }
    expect(done.counts).toMatchObject({ succeeded: 400, failed: 0 });
    expect(gap.ms, JSON.stringify(seen)).toBeLessThan(GAP_MS);
    expect(late, JSON.stringify(seen)).toBeLessThan(LATE_MS);
  });
});
