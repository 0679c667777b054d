import { afterAll, describe, expect, it } from 'vitest';
import { connectRedis } from '../src/infra/redis-client.js';
import type { RedisLike } from '../src/redis/client.js';
import { createReconnectFence, NOT_READY, whenUnheld } from '../src/redis/reconnect-fence.js';
import { systemClock } from '../src/kernel/clock.js';
import { createLine } from '../src/queue/line.js';
import { itemKeys } from '../src/redis/keys.js';
import { createScriptRunner, scripts } from '../src/redis/scripts.js';
import { recordingLogger } from './support/daemon-inproc.js';
import { proxyFor } from './support/proxy.js';
import { redisUrl, testRedis, untilReady } from './support/redis.js';

/**
 * The hold after a reconnect checks only once every connection the daemon has is back: the API's
 * (direct here) and the admissions' (through a proxy the test cuts), each reconnecting on its own.
 */
const logged = recordingLogger('warn', 1000);
const { redis: direct, newPrefix } = testRedis();
const { proxy, url: throughProxy } = await proxyFor(redisUrl());
const api = await connectRedis({ url: redisUrl() }, 'api', logged.log);
const admit = await connectRedis({ url: throughProxy }, 'admit', logged.log);
afterAll(async () => {
  api.disconnect();
  admit.disconnect();
  await proxy.close();
});

/** A check that counts its runs; each run ends when the test says (`end(run)`, the last run by default). */
function checks() {
  const ends: ((fail?: Error) => void)[] = [];
  const check = () => new Promise<void>((resolve, reject) => ends.push((fail) => (fail ? reject(fail) : resolve())));
  return { check, runs: () => ends.length, end: (fail?: Error, run = ends.length - 1) => ends[run]!(fail) };
}

const settled = (p: Promise<unknown> | null) => (p === null ? Promise.resolve('none') : Promise.race([p.then(() => 'over'), new Promise((r) => setImmediate(() => r('held')))]));
const down = async (conn: RedisLike) => {
  // (Not events.once: the connection's 'error' (ECONNRESET) comes first and would reject it.)
  if (conn.status === 'ready') await new Promise((r) => conn.once('close', r));
};

describe('the hold after a Redis reconnect', () => {
  it('waits for every connection to be ready before it checks, and ends when the check has run', { timeout: 20_000 }, async () => {
    const c = checks();
    const fence = createReconnectFence({ connections: [api, admit], check: c.check, holdMs: 15_000, log: logged.log });
    await proxy.cut();
    await down(admit);
    // The API's connection is back first (a reconnect's 'ready'): the admissions' is still down.
    fence.raise();
    const held = fence.current();
    // (Run at once, the check read Redis through the connection still down, failed, and the hold ended with it.)
    await new Promise((r) => setTimeout(r, 300));
    expect([c.runs(), await settled(held)]).toEqual([0, 'held']);
    await proxy.restore();
    await untilReady(admit);
    await expect.poll(c.runs).toBe(1);
    expect(await settled(held)).toBe('held');
    c.end();
    await held;
    expect(fence.current()).toBeNull();
  });

  it('runs a failed check again until it passes, and ends unchecked when its time is up', { timeout: 20_000 }, async () => {
    const c = checks();
    const fence = createReconnectFence({ connections: [api, admit], check: c.check, holdMs: 15_000, log: logged.log });
    fence.raise();
    await expect.poll(c.runs).toBe(1);
    // (Before: a failed check ended the hold, unchecked: a Cluster node back before its peers took it back answered CLUSTERDOWN.)
    c.end(new Error('CLUSTERDOWN The cluster is down'));
    await expect.poll(c.runs).toBe(2);
    expect(await settled(fence.current())).toBe('held');
    c.end();
    await fence.current();
    expect(fence.current()).toBeNull();
    expect(logged.lines()).not.toContain('operator writes not checked after a reconnect');

    // A check that fails every time: the hold ends at its time, and says so.
    const failing = createReconnectFence({ connections: [api, admit], check: () => Promise.reject(new Error('postgres away')), holdMs: 700, log: logged.log });
    failing.raise();
    await failing.current();
    expect(failing.current()).toBeNull();
    expect(logged.lines()).toContain('operator writes not checked after a reconnect');

    // A connection that does not come back within the hold: the hold ends unchecked, and says so.
    const short = createReconnectFence({ connections: [api, admit], check: c.check, holdMs: 500, log: logged.log });
    await proxy.cut();
    await down(admit);
    short.raise();
    await short.current();
    expect([c.runs(), short.current()]).toEqual([2, null]);
    expect(logged.lines()).toContain('redis connections not all ready within the hold after a reconnect');
    await proxy.restore();
    await untilReady(admit);
  });

  it('a later reconnect holds anew while an earlier hold is still checking', { timeout: 20_000 }, async () => {
    const c = checks();
    const fence = createReconnectFence({ connections: [api, admit], check: c.check, holdMs: 15_000, log: logged.log });
    fence.raise();
    const first = fence.current();
    await expect.poll(c.runs).toBe(1);
    fence.raise();
    const second = fence.current();
    await expect.poll(c.runs).toBe(2);
    c.end(undefined, 0);
    await first;
    // The first check's end does not lift the second hold.
    expect(fence.current()).toBe(second);
    c.end();
    await second;
    expect(fence.current()).toBeNull();
  });

  it('refuses a join looked at while a connection is back but not yet ready: sent a turn later (a batched script), it ran inside the hold its ready raised', { timeout: 20_000 }, async () => {
    const prefix = newPrefix();
    await createLine({ redis: direct, prefix, clock: systemClock, cacheMs: 0 }).definitions.define(
      { itemId: 'j', handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' },
      { mode: 'closed', rate: null, maxInFlight: null },
      { reopen: false },
    );
    const c = checks();
    const fence = createReconnectFence({ connections: [api, admit], check: c.check, holdMs: 15_000, log: logged.log });
    const raise = () => fence.raise();
    api.on('ready', raise);
    try {
      const { run } = createScriptRunner(api, prefix);
      const join = () => run(scripts.join, 'j', Date.now(), { userId: 'amy', payload: '', source: '', defaultKeyQuota: '', memoryFull: '', uncounted: '' });
      const id = await api.client('ID');
      const connected = new Promise((r) => api.once('connect', r));
      await direct.client('KILL', 'ID', String(id));
      await connected;
      // The look while the connection is `connect` (its ready check under way, no hold yet), and the
      // ready check's reply in before the batched script's flush (the loop held a moment, as a busy
      // daemon's is): the next turn reads the reply (ready; the hold raised), then flushes.
      const sent = await new Promise<Promise<string>>((r) =>
        setImmediate(() => {
          r(whenUnheld(fence.sendable, join).then(() => 'sent', (err: Error) => err.message));
          for (const until = Date.now() + 30; Date.now() < until; );
        }),
      );
      expect(await sent).toBe(NOT_READY); // before (the hold alone looked at): 'sent', and amy joined inside the hold
      await untilReady(api);
      expect(fence.current()).not.toBeNull();
      expect(await direct.hget(itemKeys(prefix, 'j').ctr, 'seq')).toBe('0');
    } finally {
      api.off('ready', raise);
      await expect.poll(c.runs).toBe(1);
      c.end();
      await fence.current();
    }
  });

  it('refuses a script looked at in the tick between a connection turning ready and its saying so (the event the hold is raised on)', { timeout: 20_000 }, async () => {
    const c = checks();
    const fence = createReconnectFence({ connections: [api, admit], check: c.check, holdMs: 15_000, log: logged.log });
    const raise = () => fence.raise();
    api.on('ready', raise);
    // What a look at that moment gets: ioredis sets the status, then emits 'ready' on the next tick.
    const conn = api as unknown as { setStatus(status: string, ...rest: unknown[]): void };
    const setStatus = conn.setStatus;
    const looks: string[] = [];
    conn.setStatus = function (status, ...rest) {
      setStatus.call(this, status, ...rest);
      if (status !== 'ready') return;
      try {
        looks.push(String(fence.sendable()));
      } catch (err) {
        looks.push((err as Error).message);
      }
    };
    try {
      await direct.client('KILL', 'ID', String(await api.client('ID')));
      await down(api);
      await untilReady(api);
      expect(looks).toEqual([NOT_READY]); // before (the status looked at): 'null', no hold yet, and the script went out
      expect(fence.current()).not.toBeNull();
    } finally {
      delete (conn as Partial<typeof conn>).setStatus;
      api.off('ready', raise);
      await expect.poll(c.runs).toBe(1);
      c.end();
      await fence.current();
    }
  });
});
