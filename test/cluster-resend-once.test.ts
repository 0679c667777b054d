import type { Cluster, Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { connectRedis } from '../src/infra/redis-client.js';
import { manualClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { createLine } from '../src/queue/line.js';
import { itemKeys } from '../src/redis/keys.js';
import { createScriptRunner, scripts } from '../src/redis/scripts.js';
import { replyLost, tcpProxy } from './support/proxy.js';
import { ownCluster } from './support/redis-cluster.js';

/**
 * On a Redis Cluster a node's connection that closes fails the commands it holds ("Connection is
 * closed.") and the cluster sends them again 100 ms later. A script the node had run before the
 * close, its reply lost, then ran twice: a move of units between a split item's sub-lines sent
 * once as +5 added 10 (units Postgres does not hold). Such scripts now fail instead (503, the
 * round tried again), on a cluster as on one server (test/redis-resend-once.test.ts); a join,
 * safe to run twice, is still sent again (the node came back the same process: its new connection
 * sends what it kept, infra/redis-client.ts nothingBeforeBack).
 *
 * The master that serves the test's items announces a proxy's port (cluster-announce-port), so the
 * daemon's connection to it runs through the proxy, which can lose a reply and then cut.
 */
const cluster = await ownCluster({ masters: 3 });
const prefix = 'fgro:';
const masterPort = await cluster.masterOf(itemKeys(prefix, 'moved').meta);
/** An item id whose keys are on that master (ids tried until one's slot is there). */
const onMaster = async (stem: string) => {
  for (let i = 0; ; i++) if ((await cluster.masterOf(itemKeys(prefix, `${stem}-${i}`).meta)) === masterPort) return `${stem}-${i}`;
};
const items = { api: await onMaster('moved-api'), admit: await onMaster('moved-admit'), mixed: await onMaster('moved-mixed'), join: await onMaster('joined'), kept: await onMaster('moved-kept') };
const proxy = await tcpProxy({ host: '127.0.0.1', port: masterPort });
afterAll(() => proxy.close());
const master = cluster.node(masterPort);
await master.config('SET', 'cluster-announce-port', String(proxy.port));
// Every node gossips the new port within a few pings: wait until each one's slot map says so.
for (const until = Date.now() + 15_000; ; await new Promise((r) => setTimeout(r, 50))) {
  const maps = await Promise.all(cluster.nodes.map((n) => cluster.node(n.port).cluster('SLOTS')));
  if (maps.every((slots) => slots.some((s) => s[2][1] === proxy.port) && !slots.some((s) => s[2][1] === masterPort))) break;
  if (Date.now() > until) throw new Error('the cluster never announced the proxy port');
}
const seeds = cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port === masterPort ? proxy.port : n.port }));


const connect = (kind: 'api' | 'admit') => connectRedis({ cluster: seeds }, kind, createLogger('silent'));

const asHget = (redis: unknown) => redis as { hget(k: string, f: string): Promise<string | null> };

describe('a script whose reply a closed cluster node lost', () => {
  it.each(['api', 'admit'] as const)('is not run a second time when it must not be (a move of units), on the %s connection', async (kind) => {
    const redis = await connect(kind);
    try {
      const { run } = createScriptRunner(redis, prefix);
      const item = items[kind];
      const stock = itemKeys(prefix, item).stock;
      // The node's connection is made, but has not run the script: the move is written as an EVAL
      // of its source (a review: the first version of the guard looked for EVALSHA after the write
      // and missed it, +5 gave 10 on a fresh connection).
      expect(await asHget(redis).hget(stock, 's0')).toBe(null);
      const moved = await replyLost(
        proxy,
        () => run(scripts.splitUnits, item, Date.now(), { delta: 5 }),
        async () => (await master.hget(stock, 's0')) === '5',
      );
      expect(moved.status).toBe('rejected');
      expect(String((moved as PromiseRejectedResult).reason)).toMatch(/may have run/);
      // (Before, the call was answered only once its resend had run: '10'.) The connection to the
      // node, made anew, serves the slot again.
      expect(await until(() => asHget(redis).hget(stock, 's0'))).toBe('5');
      expect(await master.hget(stock, 's0')).toBe('5');
    } finally {
      redis.disconnect();
    }
  });

  it('is refused alone: a join sent beside it (one pipeline to the node) is sent again and answers, and a join alone too', async () => {
    const redis = await connect('api');
    try {
      const clock = manualClock();
      const line = createLine({ redis, prefix, clock, cacheMs: 250 });
      await line.definitions.define({ itemId: items.join, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, { mode: 'closed', rate: null, maxInFlight: null }, { reopen: false });
      const { run } = createScriptRunner(redis, prefix);
      const args = (userId: string) => ({ userId, payload: '', source: '', defaultKeyQuota: '', memoryFull: '', uncounted: '' });
      const seq = async () => master.hget(itemKeys(prefix, items.join).ctr, 'seq');
      const stock = itemKeys(prefix, items.mixed).stock;
      await run(scripts.splitUnits, items.mixed, Date.now(), { delta: 0 });
      // Both in one turn: one auto-pipeline to the node, both replies lost, one cut.
      let join: Promise<unknown> | undefined;
      const moved = await replyLost(
        proxy,
        () => {
          join = run(scripts.join, items.join, clock.now(), args('amy'), [], { alone: true });
          return run(scripts.splitUnits, items.mixed, Date.now(), { delta: 5 });
        },
        async () => (await master.hget(stock, 's0')) === '5' && (await seq()) === '1',
      );
      expect(moved.status).toBe('rejected');
      expect(String((moved as PromiseRejectedResult).reason)).toMatch(/may have run/);
      // The first version of the guard failed the whole pipeline: the join, which had run, answered 503.
      expect(((await join) as unknown[])[1]).toBe(1); // the ticket it made (seq 1), answered again
      expect([await master.hget(stock, 's0'), await seq()]).toEqual(['5', '1']);
      // A join alone through the same kind of break.
      const joined = await replyLost(
        proxy,
        () => run(scripts.join, items.join, clock.now(), args('bob'), [], { alone: true }),
        async () => (await seq()) === '2',
      );
      expect(joined.status).toBe('fulfilled');
      expect(await seq()).toBe('2');
    } finally {
      redis.disconnect();
    }
  });

  it("is not run twice when its node's connection, made again, kept it and then lost its reply", async () => {
    const redis = (await connect('admit')) as unknown as Cluster;
    try {
      const { run } = createScriptRunner(redis as never, prefix);
      const stock = itemKeys(prefix, items.kept).stock;
      await run(scripts.splitUnits, items.kept, Date.now(), { delta: 0 });
      // The node's connection cut: the next command makes it again, and it keeps that command until
      // the node says it is the same process (infra/redis-client.ts nothingBeforeBack), then sends it.
      const gone = new Promise((r) => redis.once('-node', r));
      await proxy.cut();
      await proxy.restore();
      await gone;
      // On the new connection, the reply of the first script written is lost.
      redis.once('+node', (node: Redis) =>
        node.once('ready', () => {
          const stream = node.stream as unknown as { write(chunk: unknown, ...rest: unknown[]): boolean };
          const write = stream.write.bind(stream);
          stream.write = (chunk: unknown, ...rest: unknown[]) => {
            if (/eval/i.test(String(chunk))) proxy.dropReplies();
            return write(chunk, ...rest);
          };
        }),
      );
      const moved = run(scripts.splitUnits, items.kept, Date.now(), { delta: 5 }).then(() => 'answered', (err: Error) => err.message);
      for (const end = Date.now() + 10_000; (await master.hget(stock, 's0')) !== '5'; await new Promise((r) => setTimeout(r, 5))) if (Date.now() > end) throw new Error('the move never ran');
      await proxy.cut();
      await proxy.restore();
      expect(await moved).toMatch(/may have run/);
      // (Before: sent past the run-once guard, it was not marked owed, and its resend ran it again: 10.)
      await new Promise((r) => setTimeout(r, 300));
      expect(await master.hget(stock, 's0')).toBe('5');
    } finally {
      redis.disconnect();
    }
  });
});

/** `fn` tried until it answers (the cluster reconnecting to the node answers with errors first). */
async function until<T>(fn: () => Promise<T>, ms = 10_000): Promise<T> {
  for (const end = Date.now() + ms; ; await new Promise((r) => setTimeout(r, 20))) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > end) throw err;
    }
  }
}
