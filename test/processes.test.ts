import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { testDb } from './support/db.js';
import { recordingDownstream } from './support/downstream.js';
import { startDaemonProcess, type RunningDaemon } from './support/daemon.js';
import { waitFor } from './support/daemon-inproc.js';
import { testRedis } from './support/redis.js';

const { redis, newPrefix } = testRedis();
const db = await testDb();
const running: RunningDaemon[] = [];
afterAll(async () => {
  await Promise.all(running.map((d) => d.stop('SIGKILL')));
});

/** One request on a connection of its own, so node:cluster's round-robin hands each to the next process. */
function call(base: string, method: string, path: string, body?: unknown, key?: string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const headers: Record<string, string> = {};
    if (key) headers.authorization = `Bearer ${key}`;
    if (data) headers['content-type'] = 'application/json';
    const req = request(base + path, { method, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => {
        let json: any = text;
        try {
          json = JSON.parse(text);
        } catch {
          /* /metrics */
        }
        resolve({ status: res.statusCode!, body: json });
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

/** The primary's worker processes. */
const workersOf = (pid: number) =>
  execFileSync('pgrep', ['-P', String(pid), '-f', 'floodgate.mjs'], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .map(Number);

describe('FLOODGATE_PROCESSES: several daemon processes behind one port', () => {
  it('share one FIFO line and one manual gate, aggregate their metrics, replace a dead worker and stop together', { timeout: 90_000 }, async () => {
    const prefix = newPrefix();
    const d = await startDaemonProcess(
      {
        FLOODGATE_PROCESSES: '2',
        REDIS_URL: `redis://${redis.options.host}:${redis.options.port}`,
        DATABASE_URL: db.url,
        FLOODGATE_REDIS_PREFIX: prefix,
        FLOODGATE_SERVICE_KEYS: 'svc',
        FLOODGATE_OPERATOR_KEYS: 'op',
      },
      { listening: 2 },
    );
    running.push(d);
    expect(d.output()).toMatch(/"processes":2.*"msg":"floodgate primary started its worker processes"/);
    const workers = workersOf(d.proc.pid!);
    expect(workers).toHaveLength(2);

    const item = `procs-${randomBytes(3).toString('hex')}`;
    // (A 503 on a loaded machine is asked again; the PUT is idempotent: 201 the first time, 200 after.)
    let put = await call(d.url, 'PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'manual', rate: 20 } }, 'op');
    for (let tries = 0; put.status === 503 && tries < 20; tries++) put = await call(d.url, 'PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'manual', rate: 20 } }, 'op');
    expect([200, 201]).toContain(put.status);
    // One at a time, each on its own connection (so alternately on each process): join order is
    // known, and the positions must follow it.
    const ids: string[] = [];
    for (let i = 0; i < 60; i++) {
      const r = await call(d.url, 'POST', `/v1/items/${item}/tickets`, { userId: `u${i}` }, 'svc');
      expect(r.status).toBe(202);
      expect(r.body.position).toBe(i + 1);
      ids.push(r.body.ticketId);
    }

    // Pulls through both processes take from one pace (rate 20/s, burst 2) and in join order.
    const pulled: string[] = [];
    const start = Date.now();
    while (pulled.length < 12) {
      const r = await call(d.url, 'POST', `/v1/items/${item}/pull`, { max: 100 }, 'svc');
      expect(r.status).toBe(200);
      pulled.push(...r.body.tickets.map((t: { ticketId: string }) => t.ticketId));
    }
    const spanS = (Date.now() - start) / 1000;
    expect(pulled).toEqual(ids.slice(0, pulled.length));
    expect(pulled.length).toBeLessThanOrEqual(Math.floor(20 * spanS) + 2);

    // A scrape on either process shows both processes' joins (60), not the half it served itself,
    // and the line as Redis holds it (each process's item view is at most FLOODGATE_CACHE_MS old).
    const waiting = new RegExp(`floodgate_line_waiting\\{item="${item}"\\} ${60 - pulled.length}\\b`);
    for (let i = 0; i < 2; i++) {
      let m = await call(d.url, 'GET', '/metrics');
      for (const until = Date.now() + 10_000; !waiting.test(m.body) && Date.now() < until; m = await call(d.url, 'GET', '/metrics')) await new Promise((r) => setTimeout(r, 50));
      expect(m.status).toBe(200);
      expect(m.body).toMatch(waiting);
      const created = new RegExp(`floodgate_joins_total\\{item="${item}",result="created"\\} (\\d+)`).exec(m.body);
      expect(Number(created?.[1])).toBe(60);
      expect(m.body).toMatch(new RegExp(`floodgate_admissions_total\\{item="${item}"\\} ${pulled.length}\\b`));
    }

    // A worker that dies is replaced; the line is untouched.
    process.kill(workers[0], 'SIGKILL');
    const until = Date.now() + 20_000;
    let now = workersOf(d.proc.pid!);
    while ((now.includes(workers[0]) || now.length < 2 || (d.output().match(/"msg":"floodgate listening"/g) ?? []).length < 3) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 100));
      now = workersOf(d.proc.pid!);
    }
    expect(d.output()).toMatch(/"msg":"worker process died"/);
    expect(now).toHaveLength(2);
    // (A loaded machine may answer a read 503, a Redis command past its timeout: asked again.)
    for (let i = 0; i < 4; i++) {
      let r = await call(d.url, 'GET', `/v1/tickets/${ids[59]}`);
      for (let tries = 0; r.status === 503 && tries < 20; tries++) r = await call(d.url, 'GET', `/v1/tickets/${ids[59]}`);
      expect(r.body).toMatchObject({ state: 'waiting', position: 60 - pulled.length });
    }

    expect(await d.stop('SIGTERM')).toBe(0);
    expect(d.output()).toMatch(/"msg":"stopping worker processes"/);
    for (const pid of now) expect(() => process.kill(pid, 0)).toThrow();
  });
  it('keeps the dev keys file it announced when no keys are configured (its workers deleted it as "keys configured")', { timeout: 60_000 }, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'fg-keys-'));
    try {
      const d = await startDaemonProcess(
        {
          FLOODGATE_PROCESSES: '2',
          REDIS_URL: `redis://${redis.options.host}:${redis.options.port}`,
          DATABASE_URL: db.url,
          FLOODGATE_REDIS_PREFIX: newPrefix(),
          FLOODGATE_SERVICE_KEYS: '',
          FLOODGATE_OPERATOR_KEYS: '',
          FLOODGATE_DATA_DIR: dir,
          NODE_ENV: 'development',
        },
        { listening: 2 },
      );
      running.push(d);
      // (Written once a worker listens: the primary hears of it a moment after the worker says so.)
      const file = await waitFor(async () => (existsSync(path.join(dir, 'dev-keys.env')) ? readFileSync(path.join(dir, 'dev-keys.env'), 'utf8') : ''), (f) => f !== '', 10_000);
      const op = /OPKEY=(\S+)/.exec(file)?.[1];
      expect(op).toMatch(/^dev-op-/);
      expect((await call(d.url, 'GET', '/v1/items', undefined, op)).status).toBe(200);
      expect(await d.stop('SIGTERM')).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('drains every worker when the stop reaches the whole group (each worker signalled twice: by the group, then by its primary)', { timeout: 90_000 }, async () => {
    // Each webhook call held 3 s: a job runs when the stop comes.
    const down = await recordingDownstream((_req, res) => void setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'), 3000));
    const d = await startDaemonProcess(
      { FLOODGATE_PROCESSES: '2', REDIS_URL: `redis://${redis.options.host}:${redis.options.port}`, DATABASE_URL: db.url, FLOODGATE_REDIS_PREFIX: newPrefix(), FLOODGATE_SERVICE_KEYS: 'svc', FLOODGATE_OPERATOR_KEYS: 'op', FLOODGATE_SHUTDOWN_MS: '15000' },
      { listening: 2 },
    );
    running.push(d);
    expect((await call(d.url, 'PUT', '/v1/items/hook', { handler: 'webhook', config: { url: down.url, timeoutMs: 60_000 } }, 'op')).status).toBe(201);
    expect((await call(d.url, 'POST', '/v1/items/hook/tickets', { userId: 'u1' }, 'svc')).status).toBe(202);
    for (const until = Date.now() + 20_000; down.seen.length === 0 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 50));
    expect(down.seen).toHaveLength(1);
    // The group's SIGTERM reaches the workers first (a service manager's stop of the control group),
    // the primary's own one a moment later: each worker hears SIGTERM twice.
    for (const pid of workersOf(d.proc.pid!)) process.kill(pid, 'SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    expect(await d.stop('SIGTERM')).toBe(0);
    // Both drained: each said it stopped, the call in flight finished, and no job was cut short.
    expect([...d.output().matchAll(/"jobsCutShort":false[^\n]*"msg":"stopped"/g)]).toHaveLength(2);
    expect(d.output()).toMatch(/"workersFailed":false[^\n]*"msg":"stopped"/);
  });
});
