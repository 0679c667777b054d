import { afterAll, describe, expect, it } from 'vitest';
import { connectRedis } from '../src/infra/redis-client.js';
import { manualClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { createLine } from '../src/queue/line.js';
import { itemKeys } from '../src/redis/keys.js';
import { createScriptRunner, scripts } from '../src/redis/scripts.js';
import { replyLost, tcpProxy } from './support/proxy.js';
import { redisUrl, testRedis, untilReady } from './support/redis.js';

/**
 * ioredis sends a lost connection's unanswered commands again once it is back. A command Redis ran
 * before the connection broke, its reply lost, then runs twice: a move of units between a split
 * item's sub-lines sent once as +5 added 10 (units Postgres does not hold), an admission round
 * leased a second batch on top of the first (a review of the Redis driver). Such scripts now fail
 * instead (503, the round tried again). So do the others, though running them twice is safe:
 * ioredis sends them again before the 'ready' event on which the daemon's hold after a reconnect
 * is raised (redis/reconnect-fence.ts), so on a Redis back from a rollback they ran before the
 * operators' writes were put back (a join taken on an item whose close the rollback had taken).
 */
const { redis: direct, newPrefix } = testRedis();
const target = new URL(redisUrl());
const proxy = await tcpProxy({ host: target.hostname, port: Number(target.port || 6379) });
afterAll(() => proxy.close());


describe('a script whose reply a broken connection lost', () => {
  it.each(['api', 'admit'] as const)('is not run a second time when it must not be (a move of units), on the %s connection', async (kind) => {
    const prefix = newPrefix();
    const redis = await connectRedis({ url: `redis://127.0.0.1:${proxy.port}` }, kind, createLogger('silent'));
    try {
      const { run } = createScriptRunner(redis, prefix);
      const stock = itemKeys(prefix, 'moved').stock;
      await run(scripts.splitUnits, 'moved', Date.now(), { delta: 0 });
      const moved = await replyLost(
        proxy,
        () => run(scripts.splitUnits, 'moved', Date.now(), { delta: 5 }),
        async () => (await direct.hget(stock, 's0')) === '5',
      );
      expect(moved.status).toBe('rejected');
      expect(String((moved as PromiseRejectedResult).reason)).toMatch(/may have run/);
      // (A resend goes out as the connection is ready again, before this ping.)
      await untilReady(redis);
      expect(await redis.ping()).toBe('PONG');
      expect(await direct.hget(stock, 's0')).toBe('5'); // before: '10'
    } finally {
      redis.disconnect();
    }
  });

  it('is failed, not sent again, when running twice is safe too (a join): asked again, it answers the ticket it made', async () => {
    const prefix = newPrefix();
    const redis = await connectRedis({ url: `redis://127.0.0.1:${proxy.port}` }, 'api', createLogger('silent'));
    try {
      const clock = manualClock();
      const line = createLine({ redis: direct, prefix, clock, cacheMs: 250 });
      await line.definitions.define({ itemId: 'joined', handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, { mode: 'closed', rate: null, maxInFlight: null }, { reopen: false });
      const { run } = createScriptRunner(redis, prefix);
      const args = { userId: 'amy', payload: '', source: '', defaultKeyQuota: '', memoryFull: '', uncounted: '' };
      const joined = await replyLost(
        proxy,
        () => run(scripts.join, 'joined', clock.now(), args, [], { alone: true }),
        async () => (await direct.hget(itemKeys(prefix, 'joined').ctr, 'seq')) === '1',
      );
      expect(joined.status).toBe('rejected'); // before: sent again as the connection came back, before its 'ready'
      expect(String((joined as PromiseRejectedResult).reason)).toMatch(/not sent again/);
      await untilReady(redis);
      expect(await redis.ping()).toBe('PONG');
      await run(scripts.join, 'joined', clock.now(), args, [], { alone: true });
      expect(await direct.hget(itemKeys(prefix, 'joined').ctr, 'seq')).toBe('1');
    } finally {
      redis.disconnect();
    }
  });
});
