import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/kernel/logger.js';
import { itemKeys } from '../src/redis/keys.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { itemOffTheMarksMaster, ownCluster } from './support/redis-cluster.js';

/**
 * A single-master failover on a Redis Cluster, the promoted replica behind (a rollback of that
 * master's slots): the cluster connection stays ready throughout (no 'ready' event), so the daemon
 * takes a change of the slots' masters for the reconnect it is (daemon.ts): the operators' writes
 * are compared at once and the abandonment clocks start again.
 */
const cluster = await ownCluster({ masters: 3, replicas: 1 });
const db = await testDb();
const prefix = 'ff:';
const env = { REDIS_URL: '', FLOODGATE_REDIS_CLUSTER: cluster.seeds };
const { call } = await inProcessDaemon({ prefix, databaseUrl: db.url, env, log: createLogger('error') });
const join = (itemId: string, userId: string) => call('POST', `/v1/items/${itemId}/tickets`, { userId }, SVC);

const field = (info: string, name: string) => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim();

describe('a Redis Cluster failover with a lagging replica', () => {
  it('an operator close the failover rolled back is enforced again (newcomers 410) soon after the promotion', { timeout: 120_000 }, async () => {
    const { item, port: master } = await itemOffTheMarksMaster(cluster, prefix, 'closing');
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'closed' } })).status).toBe(201);
    expect((await join(item, 'before')).status).toBe(202);

    // The replica stops hearing its master: it is stopped, and the master drops its link.
    const m = cluster.node(master);
    const replicaPort = Number(/slave0:ip=[^,]+,port=(\d+)/.exec(await m.info('replication'))![1]);
    const pid = Number(field(await cluster.node(replicaPort).info('server'), 'process_id'));
    process.kill(pid, 'SIGSTOP');
    try {
      await m.call('CLIENT', 'KILL', 'TYPE', 'replica');
      // The operator closes the item; the master alone holds it.
      expect((await call('DELETE', `/v1/items/${item}`)).status).toBe(200);
      expect((await join(item, 'told-closed')).status).toBe(410);
      // Past a 2 s operator-writes check (which raises the global mark, on another master).
      await new Promise((r) => setTimeout(r, 3000));
      await cluster.nodes.find((n) => n.port === master)!.kill();
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    const promoted = await cluster.waitPromoted(itemKeys(prefix, item).meta, master);
    expect(promoted).toBe(replicaPort);
    const promotedAt = Date.now();

    // The item as Redis now holds it (the rollback): open again.
    await waitFor(() => join(item, 'first-after'), (r) => r.status !== 503, 20_000);
    // 3 s after the promotion: a daemon after a Redis reconnect would have compared long since.
    await new Promise((r) => setTimeout(r, Math.max(0, 3000 - (Date.now() - promotedAt))));
    // (Asked again after a 503, as a client would: a command may still time out on the cluster's
    // changed topology; a clean-clone run's GET here answered without an item.)
    const later = await waitFor(() => join(item, 'newcomer'), (r) => r.status !== 503, 5_000);
    const view = await waitFor(() => call('GET', `/v1/items/${item}`), (r) => r.status !== 503, 5_000);
    expect(view.body.state, JSON.stringify(view.body)).toBe('closed');
    expect(later.status, 'a newcomer to the closed item 3 s after the promotion').toBe(410);
  });

  it('holders who polled as told through a failover are not expired as abandoned', { timeout: 120_000 }, async () => {
    const { item, port: master } = await itemOffTheMarksMaster(cluster, prefix, 'abandon', async (port) => /slave0:/.test(await cluster.node(port).info('replication')));
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'external', abandonAfterMs: 6000 })).status).toBe(201);
    const ids: string[] = [];
    for (const u of ['a', 'b', 'c']) ids.push((await join(item, u)).body.ticketId);
    // The holders poll as told (pollAfterMs), whatever the answers.
    let polling = true;
    const statuses: number[] = [];
    let pollAfter = 0;
    const pollers = ids.map(async (id) => {
      while (polling) {
        const r = await call('GET', `/v1/tickets/${id}`, undefined, null);
        statuses.push(r.status);
        if (r.status === 200) pollAfter = r.body.pollAfterMs ?? pollAfter;
        await new Promise((res) => setTimeout(res, Math.min(r.body?.pollAfterMs ?? 1000, 2000)));
      }
    });
    await new Promise((r) => setTimeout(r, 2500));
    // The master dies; its replica is promoted ~8 s later (a production cluster-node-timeout of 15 s
    // makes a longer outage than the test cluster's 1 s; here the replica is held stopped a while).
    const m = cluster.node(master);
    const replicaPort = Number(/slave0:ip=[^,]+,port=(\d+)/.exec(await m.info('replication'))![1]);
    const pid = Number(field(await cluster.node(replicaPort).info('server'), 'process_id'));
    process.kill(pid, 'SIGSTOP');
    try {
      await cluster.nodes.find((n) => n.port === master)!.kill();
      await new Promise((r) => setTimeout(r, 7000));
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    // An outside worker pulls every 100 ms throughout.
    const pulled = await waitFor(() => call('POST', `/v1/items/${item}/pull`, { max: 10 }, SVC), (r) => r.status === 200, 30_000);
    polling = false;
    await Promise.all(pollers);
    const views = await Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body)));
    expect(pulled.body.tickets.map((t: { ticketId: string }) => t.ticketId), 'holders who polled as told, pulled after the failover').toEqual(ids);
  });
});
