import { Agent, request } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { processEnv, startDaemonProcess, type RunningDaemon } from './support/daemon.js';
import { testDb } from './support/db.js';
import { http } from './support/http.js';
import { askAgainOn503, itemUntil, joinAll, userIds } from './support/joins.js';
import { proxyFor, type TcpProxy } from './support/proxy.js';
import { testRedis } from './support/redis.js';

/**
 * What clients see while a daemon stops (README, A rolling restart): every request sent to it is
 * answered, none is reset. Found by a review: the stop closed idle kept-alive connections at once,
 * and 13 of 16 clients' joins and polls sent on them at that moment got ECONNRESET, unanswered (a
 * proxy passes that on as a 502); /readyz went from 200 to a refused connection with no 503 between.
 */

const { newPrefix } = testRedis();
const db = await testDb();
const running: RunningDaemon[] = [];
const agents: Agent[] = [];
const proxies: TcpProxy[] = [];
afterAll(async () => {
  await Promise.all(running.map((d) => d.stop('SIGKILL')));
  for (const a of agents) a.destroy();
  for (const p of proxies) await p.close();
});

const start = async (env: Record<string, string>) => {
  const d = await startDaemonProcess(env);
  running.push(d);
  return d;
};

interface Seen {
  status?: number;
  connection?: string;
  retryAfter?: string;
  body?: any;
  err?: string;
}

/** One call, never retried (test/support/http.ts retries a reset on a reused socket, which would hide one). */
function once(base: string, method: string, path: string, agent: Agent | false, body?: unknown, key?: string): Promise<Seen> {
  return new Promise((resolve) => {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = {
      ...(key && { authorization: `Bearer ${key}` }),
      ...(payload && { 'content-type': 'application/json', 'content-length': String(payload.length) }),
    };
    const req = request(new URL(base + path), { method, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode, connection: res.headers.connection, retryAfter: res.headers['retry-after'] as string | undefined, body: text ? JSON.parse(text) : null });
      });
      res.on('error', (e: NodeJS.ErrnoException) => resolve({ err: `answer: ${e.code ?? e.message}` }));
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ err: e.code ?? e.message }));
    req.end(payload);
  });
}

describe('a daemon that stops answers every request sent to it', () => {
  it('keep-alive clients sending at the SIGTERM are answered (Connection: close), and /readyz says 503 before the listener closes', { timeout: 120_000 }, async () => {
    const env = processEnv(db.url, newPrefix(), { FLOODGATE_DRAIN_GRACE_MS: '2000' });
    const [a, b] = await Promise.all([start(env), start(env)]);
    await askAgainOn503(() => http(b.url, 'PUT', '/v1/items/ka', { handler: 'seckill', config: { stock: 100 }, gate: { mode: 'closed' } }, 'op'), [201], Date.now() + 30_000, 'PUT');
    const known = (await joinAll((u) => http(b.url, 'POST', '/v1/items/ka/tickets', { userId: u }, 'svc'), userIds(0, 20))).map((j) => j.body.ticketId as string);

    // One kept-alive connection that sends nothing more: the grace lasts its whole 2 s for it.
    const idle = new Agent({ keepAlive: true, maxSockets: 1 });
    agents.push(idle);
    expect((await once(a.url, 'GET', '/healthz', idle)).status).toBe(200);

    // Sixteen clients, each on its own kept-alive connection to A, joining or polling back to back.
    // As a load balancer's pool does, a client whose answer says `Connection: close` goes to B.
    const seen: { on: 'a' | 'b'; what: string; r: Seen }[] = [];
    let stop = false;
    let n = 0;
    const clients = Array.from({ length: 16 }, async (_, k) => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      agents.push(agent);
      let base: 'a' | 'b' = 'a';
      while (!stop) {
        const url = base === 'a' ? a.url : b.url;
        const r = k % 2
          ? await once(url, 'POST', '/v1/items/ka/tickets', base === 'a' ? agent : false, { userId: `k${n++}` }, 'svc')
          : await once(url, 'GET', `/v1/tickets/${known[n++ % known.length]}`, base === 'a' ? agent : false);
        seen.push({ on: base, what: k % 2 ? 'join' : 'poll', r });
        if (r.connection === 'close') base = 'b';
        await new Promise((res) => setTimeout(res, 2));
      }
    });
    // Every client's connection in use more than once (a second: 16 answers in all beside the
    // heaviest files of a clean-clone run, each client's first).
    await expect.poll(() => seen.filter((s) => s.on === 'a').length, { timeout: 30_000 }).toBeGreaterThan(48);

    const at = Date.now();
    const exited = a.stop('SIGTERM');
    // Readiness on fresh connections, as a load balancer's health check asks, until A is gone.
    const ready: Seen[] = [];
    let code: number | null | undefined;
    void exited.then((c) => (code = c));
    while (code === undefined) {
      ready.push(await once(a.url, 'GET', '/readyz', false));
      await new Promise((r) => setTimeout(r, 50));
    }
    const ms = Date.now() - at;
    stop = true;
    await Promise.all(clients);

    // No request sent to A went unanswered: no reset, no refused connection (every client had
    // left on a `Connection: close` before the listener closed). Before: ECONNRESET on reused sockets.
    const onA = seen.filter((s) => s.on === 'a');
    expect(onA.filter((s) => s.r.err).map((s) => `${s.what}: ${s.r.err}`)).toEqual([]);
    expect(onA.filter((s) => s.r.status! >= 500).map((s) => `${s.what}: ${s.r.status}`)).toEqual([]);
    expect(seen.filter((s) => s.on === 'b' && s.r.err)).toEqual([]);
    // /readyz: 503 with Retry-After and why, while A still answered; then its connections refused.
    const answered = ready.filter((r) => r.status !== undefined);
    expect(answered.length).toBeGreaterThan(0);
    for (const r of answered) {
      expect(r.status).toBe(503);
      expect(r.retryAfter).toBeDefined();
      expect(r.body.error.message).toMatch(/stopping/);
    }
    expect(ready.slice(answered.length).every((r) => r.err === 'ECONNREFUSED')).toBe(true);
    expect(code).toBe(0);
    // The grace, held by the idle connection, then the drain (nothing left to wait for).
    expect(ms).toBeGreaterThanOrEqual(1900);
    expect(ms).toBeLessThan(8000);
    // Joins sent to A during its stop made tickets B serves (nothing lost).
    const joined = onA.filter((s) => s.what === 'join' && s.r.status === 202).map((s) => s.r.body.ticketId as string);
    expect(joined.length).toBeGreaterThan(0);
    for (const id of joined.slice(-5)) expect((await http(b.url, 'GET', `/v1/tickets/${id}`)).body.state).toBe('waiting');
  });

  it('keeps its grace under a smaller stop budget (5 s), answering /readyz 503 before it stops listening', { timeout: 60_000 }, async () => {
    // The grace came after the drain's 5 s in the budget: under 8.5 s it shrank, under 7.5 s it
    // was gone, and /readyz went from 200 to refused again (a review).
    const a = await start(processEnv(db.url, newPrefix(), { FLOODGATE_SHUTDOWN_MS: '5000' }));
    const idle = new Agent({ keepAlive: true, maxSockets: 1 });
    agents.push(idle);
    expect((await once(a.url, 'GET', '/healthz', idle)).status).toBe(200);
    const at = Date.now();
    const exited = a.stop('SIGTERM');
    const first = await once(a.url, 'GET', '/readyz', false);
    expect([first.status, first.err]).toEqual([503, undefined]);
    expect(await exited).toBe(0);
    expect(Date.now() - at).toBeGreaterThanOrEqual(900);
  });

  it('a stop while Postgres answers slowly starts no new background work and exits 0 within its budget', { timeout: 120_000 }, async () => {
    // Every chunk to and from Postgres 300 ms late, as a review measured: a stock recount begun
    // seconds into the stop, by a loop still running, ran the 10 s budget out (exit 1, "shutdown
    // timed out") in 2 of 5 stops, though no job was cut short.
    const { proxy, url } = await proxyFor(db.url);
    proxies.push(proxy);
    const prefix = newPrefix();
    const [a, b] = await Promise.all([start(processEnv(url, prefix)), start(processEnv(db.url, prefix))]);
    await askAgainOn503(() => http(b.url, 'PUT', '/v1/items/pg', { handler: 'seckill', config: { stock: 150 }, gate: { mode: 'closed' } }, 'op'), [201], Date.now() + 30_000, 'PUT');
    await joinAll((x) => http(Number(x.slice(1)) % 2 ? a.url : b.url, 'POST', '/v1/items/pg/tickets', { userId: x }, 'svc'), userIds(0, 400), { batch: 50 });
    await askAgainOn503(() => http(b.url, 'PATCH', '/v1/items/pg/gate', { mode: 'manual', rate: 20 }, 'op'), [200], Date.now() + 30_000, 'PATCH');
    await itemUntil(b.url, 'pg', (v) => v.counts.succeeded >= 20, '20 sold');
    proxy.delay(300);
    await new Promise((r) => setTimeout(r, 1500));
    const at = Date.now();
    const code = await a.stop('SIGTERM');
    const ms = Date.now() - at;
    proxy.delay(0);
    expect({ code, timedOut: a.output().includes('shutdown timed out') }).toEqual({ code: 0, timedOut: false });
    // (Exit 0 is the budget kept: its timer exits 1 at 10 s. Seen from here, the signal's delivery
    // and the process's exit add a few hundred ms beside a full suite: 10.4 s once.)
    expect(ms).toBeLessThan(12_000);
    const fin = await itemUntil(b.url, 'pg', (v) => v.counts.waiting === 0 && v.counts.admitted === 0, 'drained', 90_000);
    expect(fin.counts.succeeded).toBe(150);
    const [{ n }] = await db.sql`select count(*)::int n from orders where item_id = 'pg'`;
    expect(n).toBe(150);
  });
});
