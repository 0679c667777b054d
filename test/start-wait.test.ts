import { afterAll, describe, expect, it } from 'vitest';
import { startDaemonProcess, processEnv, type RunningDaemon } from './support/daemon.js';
import { testDb } from './support/db.js';
import { http } from './support/http.js';
import { proxyFor } from './support/proxy.js';
import { redisUrl, testRedis } from './support/redis.js';
import type { TcpProxy } from './support/proxy.js';

const { newPrefix } = testRedis();
const db = await testDb();
const proxies: TcpProxy[] = [];
const running: RunningDaemon[] = [];
afterAll(async () => {
  for (const d of running) await d.stop('SIGKILL');
  for (const p of proxies) await p.close();
});

/** A daemon process started in the background (its start may take as long as its store's absence): what it came to, and its output so far. */
function starting(env: Record<string, string>) {
  let out = '';
  const done = startDaemonProcess(env, { onOutput: (all) => (out = all) }).then(
    (d) => (running.push(d), { d, err: null as Error | null }),
    (err: Error) => ({ d: null, err }),
  );
  return { done, out: () => out };
}

/** Resolves once `pred` holds (polled every 50 ms), or false after `ms`. */
const until = async (pred: () => boolean, ms: number) => {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) if (pred()) return true;
  return pred();
};
/** /readyz's status, asked every 100 ms until it is 200 or `ms` have passed (its last answer then). */
const readyWithin = async (base: string, ms: number) => {
  let status = 0;
  for (const end = Date.now() + ms; (status = (await http(base, 'GET', '/readyz')).status) !== 200 && Date.now() < end; ) await new Promise((r) => setTimeout(r, 100));
  return status;
};
const waitLines = (out: string, store: string) => out.split('\n').filter((l) => l.includes(`"msg":"${store} not reachable yet; waiting for it (FLOODGATE_START_WAIT_MS)"`));

describe.concurrent('a start whose store is not there yet', () => {
  it('waits for a Postgres that refuses, saying so, and serves once it answers', { timeout: 60_000 }, async () => {
    const { proxy, url } = await proxyFor(db.url);
    proxies.push(proxy);
    await proxy.cut();
    const s = starting(processEnv(url, newPrefix()));
    // Refused, and said so twice (0.25 s, then 0.5 s apart): before, the start failed at the first
    // refusal ("failed to start", exit 1).
    expect(await until(() => waitLines(s.out(), 'postgres').length >= 3, 30_000), s.out()).toBe(true);
    const early = await Promise.race([s.done, new Promise<null>((r) => setTimeout(() => r(null), 0))]);
    expect(early, early?.err?.message).toBe(null);
    expect(waitLines(s.out(), 'postgres')[0]).toMatch(/"err":"ECONNREFUSED/);
    await proxy.restore();
    const { d, err } = await s.done;
    expect(err).toBe(null);
    expect(d!.output()).not.toMatch(/failed to start/);
    // (Asked until 200, for 15 s: a daemon just started under a loaded machine's suite answered 503 once, its checks past their time.)
    expect(await readyWithin(d!.url, 15_000)).toBe(200);
    expect(await d!.stop('SIGTERM')).toBe(0);
  });

  it('waits for a Redis that refuses, and serves once it answers', { timeout: 60_000 }, async () => {
    const { proxy, url } = await proxyFor(redisUrl());
    proxies.push(proxy);
    await proxy.cut();
    const s = starting({ ...processEnv(db.url, newPrefix()), REDIS_URL: url });
    expect(await until(() => waitLines(s.out(), 'redis').length >= 3, 30_000), s.out()).toBe(true);
    const early = await Promise.race([s.done, new Promise<null>((r) => setTimeout(() => r(null), 0))]);
    expect(early, early?.err?.message).toBe(null);
    await proxy.restore();
    const { d, err } = await s.done;
    expect(err).toBe(null);
    // (Asked until 200, for 15 s: a daemon just started under a loaded machine's suite answered 503 once, its checks past their time.)
    expect(await readyWithin(d!.url, 15_000)).toBe(200);
    expect(await d!.stop('SIGTERM')).toBe(0);
  });

  it('gives up when the wait runs out, naming the store and what it answered; a wrong password is not waited for', { timeout: 60_000 }, async () => {
    const { proxy, url } = await proxyFor(db.url);
    proxies.push(proxy);
    await proxy.cut();
    const began = Date.now();
    const { err } = await starting(processEnv(url, newPrefix(), { FLOODGATE_START_WAIT_MS: '1500' })).done;
    expect(err?.message).toMatch(/daemon exited 1/);
    expect(err?.message).toMatch(/Postgres at postgres:\/\/[^ ]* \(DATABASE_URL\) cannot be used: ECONNREFUSED/);
    expect(Date.now() - began).toBeGreaterThanOrEqual(1500);
    // A Redis that answers but refuses the password: said at once, not waited for (60 s by default).
    const wrong = new URL(redisUrl());
    wrong.username = 'nobody';
    wrong.password = 'not-the-password';
    const at = Date.now();
    const refused = await starting({ ...processEnv(db.url, newPrefix()), REDIS_URL: wrong.href }).done;
    expect(refused.err?.message).toMatch(/daemon exited 1/);
    expect(refused.err?.message).toMatch(/Redis at redis:\/\/[^ ]* \(REDIS_URL, or FLOODGATE_REDIS_CLUSTER\) cannot be used: .*(AUTH|password)/i);
    expect(refused.err?.message).not.toMatch(/not reachable yet/);
    expect(Date.now() - at).toBeLessThan(20_000);
  });

  it('gives up on a "Postgres" that takes the connection and never answers as one (an HTTP server): it waited for good', { timeout: 60_000 }, async () => {
    const { createServer } = await import('node:http');
    const server = createServer((_, res) => res.end());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = new URL(db.url);
      url.port = String((server.address() as { port: number }).port);
      const began = Date.now();
      const { err } = await starting(processEnv(url.href, newPrefix(), { FLOODGATE_START_WAIT_MS: '1000' })).done;
      expect(err?.message).toMatch(/daemon exited 1/);
      expect(err?.message).toMatch(/Postgres at postgres:\/\/[^ ]* \(DATABASE_URL\) cannot be used: NO_ANSWER: postgres did not answer within 5000 ms/);
      expect(Date.now() - began).toBeLessThan(30_000);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
