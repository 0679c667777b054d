import { execFileSync } from 'node:child_process';
import { request, type ClientRequest } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { processEnv, startDaemonProcess, type RunningDaemon } from './support/daemon.js';
import { watchOverHttp } from './support/ticket-stream.js';
import { testDb } from './support/db.js';
import { http } from './support/http.js';
import { askAgainOn503, itemUntil, joinAll, readAsOperator, userIds } from './support/joins.js';
import { proxyFor, type TcpProxy } from './support/proxy.js';
import { testRedis } from './support/redis.js';
import { expectSoldExactly } from './support/sale-checks.js';
import { READY_TIMEOUT_MS } from '../src/api/routes/ops.js';

/**
 * FLOODGATE_PROCESSES=2 on a bad day, through the HTTP API on the tests' Redis and Postgres: the
 * primary stopped (SIGTERM) or killed (SIGKILL) mid-sale, a worker killed mid-sale, a worker that
 * cannot start. A group of processes must behave as one daemon does (test/rolling-restart.test.ts).
 */

const { newPrefix } = testRedis();
const db = await testDb();
const running: RunningDaemon[] = [];
const proxies: TcpProxy[] = [];
const streams: ClientRequest[] = [];
/** Every worker pid the tests saw: killed in afterAll with their primaries, and checked gone. */
const pids = new Set<number>();

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

afterAll(async () => {
  for (const s of streams) s.destroy();
  await Promise.all(running.map((d) => d.stop('SIGKILL')));
  for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
  for (const p of proxies) await p.close();
  // None is left: a killed process is gone once the kernel has reaped it (its parent is dead or
  // waits on it), well within 10 s even on a busy machine.
  for (const until = Date.now() + 10_000; [...pids].some(alive) && Date.now() < until; ) await sleep(50);
  expect([...pids].filter(alive)).toEqual([]);
});

/** The primary's worker processes now (each noted for afterAll). */
function workersOf(pid: number): number[] {
  let ws: number[] = [];
  try {
    ws = execFileSync('pgrep', ['-P', String(pid), '-f', 'floodgate.mjs'], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
  } catch {
    /* none */
  }
  for (const w of ws) pids.add(w);
  return ws;
}

const count = (d: RunningDaemon, msg: string) => (d.output().match(new RegExp(`"msg":"${msg}"`, 'g')) ?? []).length;

/** `p`'s value, or `late` if it has not settled within `ms` (its timer cleared either way: nothing left running). */
function within<T, L>(p: Promise<T>, ms: number, late: L): Promise<T | L> {
  let timer!: NodeJS.Timeout;
  return Promise.race([p, new Promise<L>((r) => (timer = setTimeout(() => r(late), ms)))]).finally(() => clearTimeout(timer));
}

/** Waits until `ok()` or `ms` passed (checked every 50 ms); returns whether it came true. */
async function until(ok: () => boolean, ms: number) {
  for (const end = Date.now() + ms; !ok(); await sleep(50)) if (Date.now() > end) return false;
  return true;
}

/** A group of two daemon processes behind one port, once both listen. */
async function group(env: Record<string, string>) {
  const d = await startDaemonProcess({ ...env, FLOODGATE_PROCESSES: '2' }, { listening: 2 });
  running.push(d);
  expect(workersOf(d.proc.pid!)).toHaveLength(2);
  return d;
}

const read = readAsOperator;

const watch = (base: string, ticketId: string) => watchOverHttp(base, ticketId, streams);

/**
 * A GET on a connection of its own (not the tests' kept-alive pool, whose sockets to a killed
 * worker are reset): its status. Fails with code `hung` after 20 s without a byte: a connection
 * lost waits forever, and an answer on a busy machine comes well within that.
 */
function fresh(base: string, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(base + path, { agent: false, timeout: 20_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('no answer'), { code: 'hung' })));
    req.on('error', reject);
    req.end();
  });
}

const ended = (state: string) => state !== 'waiting' && state !== 'admitted';

/** A seckill item of `stock` with 600 users in line behind a closed gate, then opened at 20 a second (~15 s of sale). */
async function sale(base: string, item: string, stock: number) {
  await askAgainOn503(() => http(base, 'PUT', `/v1/items/${item}`, { handler: 'seckill', config: { stock }, gate: { mode: 'closed' } }, 'op'), [201], Date.now() + 30_000, 'PUT');
  const joins = await joinAll((u) => http(base, 'POST', `/v1/items/${item}/tickets`, { userId: u }, 'svc'), userIds(0, 600), { batch: 60 });
  await askAgainOn503(() => http(base, 'PATCH', `/v1/items/${item}/gate`, { mode: 'manual', rate: 20 }, 'op'), [200], Date.now() + 30_000, 'PATCH');
  return joins.map((j) => j.body.ticketId as string);
}

const longestRun = (views: any[]) => Math.max(...views.filter((v) => v.admittedAt).map((v) => Date.parse(v.updatedAt) - Date.parse(v.admittedAt)));

describe('FLOODGATE_PROCESSES=2 on a bad day', () => {
  it('SIGTERM to the primary mid-sale: every worker drains, the group exits 0 promptly, another group sells exactly the stock', { timeout: 180_000 }, async () => {
    const env = processEnv(db.url, newPrefix());
    const [a, b] = await Promise.all([group(env), group(env)]);
    const stock = 300;
    const ids = await sale(a.url, 'term', stock);
    await itemUntil(a.url, 'term', (v) => v.counts.succeeded >= 40, '40 sold');
    // Users at the back follow their tickets on the group about to stop (spread over its workers).
    const watchers = ids.slice(-20).map((id) => watch(a.url, id));
    await Promise.all(watchers.map((w) => w.first));
    const workers = workersOf(a.proc.pid!);
    const before = await read(b.url, '/v1/items/term');
    const at = Date.now();
    const code = await a.stop('SIGTERM');
    const ms = Date.now() - at;
    // The streams ended with the stop (not left to the test's afterAll).
    const streamsEnded = await within(Promise.all(watchers.map((w) => w.ended)).then(() => true), 1000, false);
    const views = (await expectSoldExactly(db.sql, 'term', stock, ids, (id) => read(b.url, `/v1/tickets/${id}`))) as any[];
    const seen = JSON.stringify({ code, ms, streamsEnded, before: before.counts, longestRun: longestRun(views) });
    expect(before.counts.waiting, seen).toBeGreaterThan(0);
    expect(code, `${seen}\n${a.output().slice(-3000)}`).toBe(0);
    // Measured 0.8 s. A single daemon's bound (rolling-restart.test.ts, STOP_MS: 6 s) on a busy
    // machine, well under the primary's own give-up (FLOODGATE_SHUTDOWN_MS + 2 s = 12 s, exit 1).
    expect(ms, seen).toBeLessThan(6000);
    expect(streamsEnded, seen).toBe(true);
    // Each worker stopped as a daemon does, then the primary ("stopped" three times).
    expect(count(a, 'stopped'), seen).toBe(3);
    expect(a.output()).not.toMatch(/"msg":"answers still open at the stop|"msg":"shutdown timed out/);
    for (const w of workers) expect(alive(w)).toBe(false);
    // Measured 0.9 s; 5 s is rolling-restart.test.ts's bound (under BullMQ's 10 s job lock).
    expect(longestRun(views), seen).toBeLessThan(5000);
    for (const [i, w] of watchers.entries()) {
      const final = views[ids.length - watchers.length + i];
      for (const v of w.views) if (ended(v.state)) expect(v.state).toBe(final.state);
    }
  });

  it('a worker SIGKILLed mid-sale is replaced; the port, /readyz and /metrics keep answering promptly; the sale sells exactly the stock', { timeout: 180_000 }, async () => {
    const env = processEnv(db.url, newPrefix());
    const a = await group(env);
    const stock = 300;
    const ids = await sale(a.url, 'kill', stock);
    await itemUntil(a.url, 'kill', (v) => v.counts.succeeded >= 40, '40 sold');
    const watchers = ids.slice(-20).map((id) => watch(a.url, id));
    await Promise.all(watchers.map((w) => w.first));
    const [victim] = workersOf(a.proc.pid!);
    const status = (path: string) => fresh(a.url, path).then((r): number | string => r, (e) => String(e.code ?? e));
    // The item's admissions as /metrics counts them (over every worker): a counter never goes down.
    const admissions = async () => {
      const text = await (await fetch(`${a.url}/metrics`)).text();
      return Number(/^floodgate_admissions_total\{item="kill"\} (\d+)/m.exec(text)?.[1] ?? 0);
    };
    const scrapedFrom = Date.now();
    const before = await admissions();
    const at = Date.now();
    process.kill(victim, 'SIGKILL');
    // Users arriving as the worker dies: 100 connections at once, about half of them handed to it
    // by the round-robin, the first few before the primary hears of its death. Each must be
    // answered, or reset (the client asks again, as after one daemon's death), not left hanging:
    // on the code before, one or two of them hung (the primary kept them open, unanswered).
    const burst = Promise.all(Array.from({ length: 100 }, () => status('/healthz')));
    // Meanwhile, from the kill until the replacement listens: /metrics, /readyz, /healthz each round.
    const probes: { t: number; ms: number; metricsMs: number; metrics: number | string; readyz: number | string; healthz: number | string }[] = [];
    do {
      const t = Date.now();
      let metricsMs = 0;
      const [metrics, readyz, healthz] = await Promise.all([status('/metrics').finally(() => (metricsMs = Date.now() - t)), status('/readyz'), status('/healthz')]);
      probes.push({ t: t - at, ms: Date.now() - t, metricsMs, metrics, readyz, healthz });
    } while (count(a, 'floodgate listening') < 3 && Date.now() - at < 60_000);
    const burstAnswers = await burst;
    const views = (await expectSoldExactly(db.sql, 'kill', stock, ids, (id) => read(a.url, `/v1/tickets/${id}`))) as any[];
    const seen = JSON.stringify({ burst: burstAnswers, probes, longestRun: longestRun(views) });
    expect(burstAnswers.filter((x) => x === 'hung'), seen).toEqual([]);
    expect(burstAnswers.filter((x) => x !== 200 && x !== 'ECONNRESET'), seen).toEqual([]);
    expect(count(a, 'floodgate listening'), seen).toBe(3);
    const now = workersOf(a.proc.pid!);
    expect(now, seen).toHaveLength(2);
    expect(now).not.toContain(victim);
    // The port kept answering: every other new connection went to the worker that lives (a probe's
    // connection reset, as the burst's may be, is allowed; one hanging is not).
    // (/readyz says 503 when its own checks take over READY_TIMEOUT_MS: a busy machine's, not a hang.)
    for (const p of probes) for (const x of [p.metrics, p.readyz, p.healthz]) expect([200, 'ECONNRESET', ...(x === p.readyz && p.ms >= READY_TIMEOUT_MS ? [503] : [])], seen).toContain(x);
    expect(probes.filter((p) => p.metrics === 200 && p.readyz === 200 && p.healthz === 200).length, seen).toBeGreaterThan(0);
    // A scrape answered at once (measured 30-120 ms), not after the primary's 5 s wait for the dead
    // worker's or the starting one's metrics that never came (5.1 s each on the code before): one
    // that waited takes at least its 5 s timer, so the bound is just under it. (The first scrape,
    // behind the burst, took 4.06 s in a clean-clone run on a machine running the suite twice as
    // slow; 4 s was the bound then.) The probe's three answers together (5.6 s once) are bounded
    // only as not hanging.
    for (const p of probes) expect(p.metricsMs, seen).toBeLessThan(4950);
    for (const p of probes) expect(p.ms, seen).toBeLessThan(15_000);
    // No ticket stuck past what a dead daemon's tickets wait: the run lease (3 s) or BullMQ's job
    // lock (10 s) for a job it ran, the dispatch lease (8 s; 15 s before 5 Dec night, measured up
    // to 14.5 s) for one admitted whose job it had not queued yet. 20 s leaves a busy machine room.
    expect(longestRun(views), seen).toBeLessThan(20_000);
    // Nothing told falsely: a stream cut by the kill told no end its ticket did not have.
    for (const [i, w] of watchers.entries()) {
      const final = views[ids.length - watchers.length + i];
      for (const v of w.views) if (ended(v.state)) expect(v.state).toBe(final.state);
    }
    const [row] = await db.sql`select count(*)::int as n from orders where item_id = 'kill'`;
    expect(row.n).toBe(stock);
    // The dead worker's admissions still count, up to its last answer to a scrape (the one just
    // before the kill): they went down by its whole share at its death (measured: 281 of 300 on
    // the code before, 299 and 300 after). What it admitted between its answer and the kill is
    // lost: at most what the item's pace lets in over that time (20/s, a burst of 2), which a busy
    // machine stretches (294 once, the scrape and the kill slow; a fixed 5 failed then).
    const after = await admissions();
    const lostAtMost = Math.ceil((20 * (at - scrapedFrom)) / 1000) + 2;
    expect(after, seen).toBeGreaterThanOrEqual(before);
    expect(after, `${seen} lost at most ${lostAtMost}`).toBeGreaterThanOrEqual(stock - Math.max(5, lostAtMost));
    expect(await a.stop('SIGTERM')).toBe(0);
  });

  it('SIGKILL of the primary: its workers exit at once, the port is free, and the group starts again on it', { timeout: 120_000 }, async () => {
    const env = processEnv(db.url, newPrefix());
    const a = await group(env);
    const workers = workersOf(a.proc.pid!);
    const port = new URL(a.url).port;
    await a.stop('SIGKILL');
    // node:cluster ends a worker whose primary is gone (its IPC channel closes); measured ~0.1 s.
    expect(await until(() => !workers.some(alive), 15_000)).toBe(true);
    await expect(http(a.url, 'GET', '/healthz')).rejects.toThrow(/ECONNREFUSED/);
    const b = await group({ ...env, PORT: port });
    expect(b.url).toBe(a.url);
    expect((await http(b.url, 'GET', '/healthz')).status).toBe(200);
    expect(await b.stop('SIGTERM')).toBe(0);
  });

  it('a worker that cannot start (Postgres unreachable) is restarted later and later while the other serves, and the group recovers', { timeout: 150_000 }, async () => {
    const { proxy, url } = await proxyFor(db.url);
    proxies.push(proxy);
    // (A start that waits for its stores does not die: FLOODGATE_START_WAIT_MS 0 has it fail, as
    // any other failure to start would, to drive the crash loop.)
    const a = await group(processEnv(url, newPrefix(), { FLOODGATE_START_WAIT_MS: '0' }));
    const [victim] = workersOf(a.proc.pid!);
    await proxy.cut();
    process.kill(victim, 'SIGKILL');
    // Each start fails within ~1.5 s (ECONNREFUSED at the migrations). The code before restarted
    // it every 500 ms and stopped the whole group, the serving worker too, at the fifth death
    // (6.5 s after the kill, exit 1). Now the deaths are 0.5, 1, 2, 4 s … apart: five in ~15 s
    // on a quiet machine; 90 s for a busy one.
    const fifth = await until(() => count(a, 'worker process died') >= 5 || a.proc.exitCode !== null, 90_000);
    const seen = () => a.output().split('\n').filter((l) => /died|keep dying|failed to start/.test(l)).map((l) => l.slice(0, 200)).join('\n');
    expect(fifth, seen()).toBe(true);
    expect(a.proc.exitCode, seen()).toBe(null);
    expect(a.output()).not.toMatch(/"msg":"workers keep dying/);
    expect((await http(a.url, 'GET', '/healthz')).status).toBe(200);
    const delays = [...a.output().matchAll(/"restartInMs":(\d+)/g)].map((m) => Number(m[1]));
    expect(delays.slice(0, 5), seen()).toEqual([500, 1000, 2000, 4000, 8000]);
    // Postgres back: the next restart (at most 10 s later) starts, and the group is whole.
    await proxy.restore();
    expect(await until(() => count(a, 'floodgate listening') >= 3, 60_000), seen()).toBe(true);
    expect(workersOf(a.proc.pid!)).toHaveLength(2);
    expect(await a.stop('SIGTERM')).toBe(0);
  });

  it('every worker killed at once: the primary replaces them (it does not exit); when none can start, the crash loop stops the group with exit 1', { timeout: 150_000 }, async () => {
    const { proxy, url } = await proxyFor(db.url);
    proxies.push(proxy);
    const a = await group(processEnv(url, newPrefix(), { FLOODGATE_START_WAIT_MS: '0' }));
    // Both killed (an OOM killer's choice, say): the code before exited 0 within the 500 ms its
    // restart timers waited (unref'd, they were all that was left to keep the primary alive), a
    // "clean" exit a supervisor restarting on failure takes for a deliberate stop.
    for (const w of workersOf(a.proc.pid!)) process.kill(w, 'SIGKILL');
    // Both replaced: measured ~3 s; 60 s for a busy machine.
    const replaced = await until(() => count(a, 'floodgate listening') >= 4 || a.proc.exitCode !== null, 60_000);
    expect(a.proc.exitCode, a.output().slice(-2000)).toBe(null);
    expect(replaced).toBe(true);
    // Now none can start (Postgres refuses), and none serves: the crash loop stops the group.
    await proxy.cut();
    for (const w of workersOf(a.proc.pid!)) process.kill(w, 'SIGKILL');
    // Two slots failing ~1.5 s after each start, 0.5-2 s apart: the fifth death within ~6 s; 60 s
    // for a busy machine.
    expect(await until(() => a.proc.exitCode !== null, 60_000), a.output().slice(-2000)).toBe(true);
    expect(a.proc.exitCode).toBe(1);
    // (Four deaths: both slots failed twice in a row, which stops the group before a fifth.)
    expect(a.output()).toMatch(/"msg":"(workers keep dying|no worker process can start); stopping"/);
    await proxy.restore();
  });

  it('a group none of whose workers can start, each waiting for Postgres, stops', { timeout: 150_000 }, async () => {
    const { proxy, url } = await proxyFor(db.url);
    proxies.push(proxy);
    const a = await group(processEnv(url, newPrefix(), { FLOODGATE_START_WAIT_MS: '4000' }));
    await proxy.cut();
    const killedAt = Date.now();
    for (const w of workersOf(a.proc.pid!)) process.kill(w, 'SIGKILL');
    // Each start waits 4 s, saying so at each try, and dies; restarted 0.5-1 s later, it waits and
    // dies again: ~10 s on a quiet machine; 90 s for a busy one.
    expect(await until(() => a.proc.exitCode !== null, 90_000), a.output().slice(-2000)).toBe(true);
    expect(a.proc.exitCode).toBe(1);
    // With 4 s waits the deaths come fast enough for the crash loop's five a minute; with the
    // default 60 s, the other rule (two failed starts on every slot) stops it: test/group-gives-up.test.ts.
    expect(a.output()).toMatch(/"msg":"(workers keep dying|no worker process can start); stopping"/);
    // The starts waited: each said so (a try is ~10 ms on a quiet machine, 4 or 5 in a start; a
    // busy one has seen a start's first try take over 2 s, so only one is counted on), and the
    // three starts that failed took at least two waits one after the other.
    expect(count(a, 'postgres not reachable yet; waiting for it \\(FLOODGATE_START_WAIT_MS\\)'), a.output().slice(-3000)).toBeGreaterThanOrEqual(1);
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(8000);
    await proxy.restore();
  });

  it('its workers take the configuration the primary read: an edit of .env while it runs does not reach a replaced worker', { timeout: 120_000 }, async () => {
    const { mkdtempSync, rmSync, writeFileSync } = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const cwd = mkdtempSync(path.join(os.tmpdir(), 'fg-procs-env-'));
    try {
      const env = processEnv(db.url, newPrefix());
      const { FLOODGATE_REDIS_PREFIX: prefix, ...rest } = env;
      writeFileSync(path.join(cwd, '.env'), `FLOODGATE_REDIS_PREFIX=${prefix}\n`);
      const a = await startDaemonProcess({ ...rest, FLOODGATE_PROCESSES: '2' }, { listening: 2, cwd });
      running.push(a);
      const [victim] = workersOf(a.proc.pid!);
      expect((await http(a.url, 'PUT', '/v1/items/ee', { handler: 'external', gate: { mode: 'closed' } }, 'op')).status).toBe(201);
      // Another prefix in the file (the next deploy's), then a worker dies and is replaced.
      writeFileSync(path.join(cwd, '.env'), `FLOODGATE_REDIS_PREFIX=${newPrefix()}\n`);
      process.kill(victim, 'SIGKILL');
      expect(await until(() => count(a, 'floodgate listening') >= 3, 60_000), a.output().slice(-2000)).toBe(true);
      // One line across both workers: each join on a connection of its own (node:cluster hands
      // them out in turn), in order. Before: positions 1, 1, 2, 2, 3, 3 (two lines, one per prefix).
      const positions: number[] = [];
      for (let i = 0; i < 6; i++) {
        const r = await new Promise<{ status: number; body: any }>((resolve, reject) => {
          const req = request(`${a.url}/v1/items/ee/tickets`, { method: 'POST', agent: false, headers: { authorization: 'Bearer svc', 'content-type': 'application/json' } }, (res) => {
            let text = '';
            res.on('data', (d) => (text += d));
            res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
          });
          req.on('error', reject);
          req.end(JSON.stringify({ userId: `env-u${i}` }));
        });
        expect(r.status).toBe(202);
        positions.push(r.body.position);
      }
      expect(positions).toEqual([1, 2, 3, 4, 5, 6]);
      expect(await a.stop('SIGTERM')).toBe(0);
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  });

  it('a stop while its workers are still starting exits 0 (nothing ran; it exited 1, "workersFailed")', { timeout: 60_000 }, async () => {
    let sent = false;
    const started = startDaemonProcess(
      { ...processEnv(db.url, newPrefix()), FLOODGATE_PROCESSES: '2' },
      {
        listening: 2,
        // At once: the workers were just forked and have no handler for the signal yet.
        onOutput: (out, proc) => {
          if (sent || !out.includes('"msg":"floodgate primary started its worker processes"')) return;
          sent = true;
          for (const w of workersOf(proc.pid!)) void w; // noted for afterAll
          proc.kill('SIGTERM');
        },
      },
    );
    const err = await started.then(
      (d) => (running.push(d), null),
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/daemon exited 0/);
  });
});
