import type { Cluster } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { connectRedis, NODE_BACK, NODE_BACK_EVENT, QUEUED_IN_OUTAGE } from '../src/infra/redis-client.js';
import { createLogger } from '../src/kernel/logger.js';
import { ownCluster } from './support/redis-cluster.js';

/**
 * While every node of a Redis Cluster is lost, the Cluster keeps the commands given to it in its
 * offline queue, and it sent them as it turned `ready` again, a tick before the 'ready' event on
 * which the daemon raises its hold after a reconnect (redis/reconnect-fence.ts): a join or a cancel
 * given in the outage ran on restarted nodes, maybe rolled back past an operator's close, before the
 * hold's check put the close back. They now fail (an outage to their callers, who ask again), as a
 * command in flight on one server does (test/redis-client.test.ts, NOT_RESENT). The admissions'
 * connection is used: its ~6 s bound on a command (a lease's call, whose late reply must be read)
 * outlasts the restart, so the command is still waiting when the Cluster comes back.
 */
const cluster = await ownCluster({ masters: 3 });
const seeds = cluster.nodes.map((n) => ({ host: '127.0.0.1', port: n.port }));
const redis = (await connectRedis({ cluster: seeds }, 'admit', createLogger('silent'))) as unknown as Cluster;
afterAll(() => redis.disconnect());

describe('a Redis Cluster that was lost entirely and comes back', () => {
  it('fails the commands given while it was gone (single, auto-pipelined, a pipeline) instead of sending them to the nodes that came back', { timeout: 60_000 }, async () => {
    // Every node's connection made (ioredis makes them lazily, and a connection never made never
    // ends: the Cluster would stay `ready`, as for a daemon that had used one node only).
    await Promise.all(redis.nodes('master').map((node) => node.ping()));
    await Promise.all(cluster.nodes.map((n) => n.kill()));
    await expect.poll(() => redis.status).not.toBe('ready');

    const given = [
      redis.set('fgoq:single', '1'),
      redis.incr('fgoq:auto'),
      redis
        .pipeline()
        .set('{fgoq}p1', '1')
        .set('{fgoq}p2', '1')
        .exec()
        .then((replies) => {
          const err = replies?.find(([e]) => e)?.[0];
          if (err) throw err;
          return replies;
        }),
    ].map((p) => p.then(() => 'sent', (err: Error) => err.message));

    const ready = new Promise((resolve) => redis.once('ready', resolve));
    await Promise.all(cluster.nodes.map((n) => n.restart()));
    await ready;

    expect(await Promise.all(given)).toEqual([QUEUED_IN_OUTAGE, QUEUED_IN_OUTAGE, QUEUED_IN_OUTAGE]);
    // Nothing of them reached Redis, and the connection serves what is given now.
    expect([await redis.get('fgoq:single'), await redis.get('fgoq:auto')]).toEqual([null, null]);
    expect(await redis.mget('{fgoq}p1', '{fgoq}p2')).toEqual([null, null]);
    expect(await redis.set('fgoq:after', '1')).toBe('OK');
    expect(await redis.get('fgoq:after')).toBe('1');
  });

  it('one master restarted in place takes nothing before the daemon is told it is back', { timeout: 60_000 }, async () => {
    await Promise.all(redis.nodes('master').map((node) => node.ping()));
    const port = await cluster.masterOf('fgoq:restarted');
    const gone = new Promise((resolve) => redis.on('-node', (node: { options: { port: number } }) => node.options.port === port && resolve(port)));
    await cluster.nodes.find((n) => n.port === port)!.kill();
    await gone;
    await cluster.nodes.find((n) => n.port === port)!.restart();
    await cluster.untilOk();
    const told: string[] = [];
    redis.on(NODE_BACK_EVENT, (key: string) => told.push(key));

    // The Cluster stayed ready and its slot map did not change: before, this went to the restarted master at once.
    expect(redis.status).toBe('ready');
    expect(await redis.set('fgoq:restarted', '1').then(() => 'sent', (err: Error) => err.message)).toBe(NODE_BACK);
    await expect.poll(() => told).toEqual([`127.0.0.1:${port}`]);
    expect(await redis.get('fgoq:restarted')).toBe(null);
    expect(await redis.set('fgoq:restarted', '2')).toBe('OK');
    expect(await redis.get('fgoq:restarted')).toBe('2');
  });

  it('one master whose connections were cut but which did not restart: what was given meanwhile is sent, and nobody is told of a restart', { timeout: 60_000 }, async () => {
    await Promise.all(redis.nodes('master').map((node) => node.ping()));
    const port = await cluster.masterOf('fgoq:cut');
    const told: string[] = [];
    redis.on(NODE_BACK_EVENT, (key: string) => told.push(key));
    const gone = new Promise((resolve) => redis.once('-node', resolve));
    // What an idle close (Redis's `timeout`) or a proxy's cut does.
    await cluster.node(port).call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
    await gone;
    // (Before: NODE_BACK for this, and a hold.)
    expect(await redis.set('fgoq:cut', '1')).toBe('OK');
    expect(await redis.get('fgoq:cut')).toBe('1');
    expect(told).toEqual([]);
  });
});
