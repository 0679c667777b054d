import { afterAll, describe, expect, it } from 'vitest';
import { connectRedis } from '../src/infra/redis-client.js';
import { manualClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { createItemDirectory } from '../src/queue/items.js';
import { createLine } from '../src/queue/line.js';
import { countedMemory, memoryRatio, scanKeys } from '../src/redis/client.js';
import { itemKeys } from '../src/redis/keys.js';
import { createScriptRunner, scripts, scriptSource } from '../src/redis/scripts.js';
import { ownCluster } from './support/redis-cluster.js';
import { everyScriptCall, everyScriptReply } from './support/script-calls.js';

const cluster = await ownCluster({ masters: 3 });
const seeds = cluster.seeds.split(',').map((s) => ({ host: s.split(':')[0], port: Number(s.split(':')[1]) }));
const redis = await connectRedis({ cluster: seeds }, 'api', createLogger('silent'));
const prefix = 'fgc:';
const clock = manualClock();
const line = createLine({ redis, prefix, clock, cacheMs: 0 });
const run = createScriptRunner(redis, prefix).run;
afterAll(() => redis.disconnect());
const slotOf = async (key: string) => Number(await cluster.node(Number(seeds[0].port)).cluster('KEYSLOT', key));

/** Item ids whose keys live on each master in turn. */
async function itemsOnEveryMaster(n: number, stem = 'it'): Promise<string[]> {
  const byMaster = new Map<number, string>();
  for (let i = 0; byMaster.size < n; i++) {
    const id = `${stem}-${i}`;
    const m = await cluster.masterOf(itemKeys(prefix, id).meta);
    if (!byMaster.has(m)) byMaster.set(m, id);
  }
  return [...byMaster.values()];
}

describe('the Lua scripts on a Redis Cluster', () => {
  it('runs every script on items of every master, and every key they make is in the item slot', async () => {
    const items = await itemsOnEveryMaster(3);
    for (const item of items) {
      await line.definitions.define({ itemId: item, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, null, { reopen: false });
      const calls = everyScriptCall(run, item, clock.now());
      expect(Object.keys(calls).sort()).toEqual(Object.keys(scripts).sort());
      const replies: Record<string, unknown> = {};
      for (const [name, call] of Object.entries(calls)) replies[name] = await call();
      expect(replies).toMatchObject(everyScriptReply(clock.now()));
    }
    // Redis 7.0 lets a script touch an undeclared key of another slot when that slot is on the
    // same node (measured), so the cluster alone would not catch a key built outside the item's
    // hash tag: every key the scripts made, on every master, must be in its item's slot.
    const keys: string[] = [];
    await scanKeys(redis, `${prefix}*`, async (batch) => void keys.push(...batch));
    expect(keys.length).toBeGreaterThan(items.length * 10);
    for (const key of keys.filter((k) => k.includes('{'))) {
      const item = /\{([^}]+)\}/.exec(key)![1];
      expect(await slotOf(key), key).toBe(await slotOf(itemKeys(prefix, item).meta));
    }
  });

  it('is refused by the cluster when a script is given the keys of two items (the check above is real)', async () => {
    const [a, b] = await itemsOnEveryMaster(2);
    const ka = itemKeys(prefix, a);
    const kb = itemKeys(prefix, b);
    // Sent straight to the node that serves a's slot (the cluster client would refuse it itself).
    const node = cluster.node(await cluster.masterOf(ka.stock));
    await expect(node.eval(scriptSource(scripts.takeStock), 2, ka.stock, kb.taken, clock.now(), 1)).rejects.toThrow(/CROSSSLOT/);
  });

  it('keeps the global keys usable: an item added, listed, activated, removed and dropped', async () => {
    const [item] = await itemsOnEveryMaster(1, 'fresh');
    const directory = createItemDirectory({ redis, prefix, clock, cacheMs: 0 });
    await directory.added(item);
    expect(await directory.isKnown(item)).toBe(true);
    expect(await line.items.itemIds()).toContain(item);
    line.items.keepActive(item);
    await line.items.activateAll();
    expect(await line.items.activeItemIds()).toContain(item);
    await line.definitions.blocks.setGlobal('bad-user', true);
    expect(await line.definitions.drop(item)).toBe(true);
    const left: string[] = [];
    await scanKeys(redis, `${prefix}{${item}}*`, async (batch) => void left.push(...batch));
    expect(left).toEqual([]);
  });
});

describe("Redis's memory on a cluster", () => {
  it('is the fullest master\'s, as Redis counts it for maxmemory', async () => {
    expect(await memoryRatio(redis)).toBe(0); // no maxmemory anywhere
    const one = cluster.node(cluster.nodes[1].port);
    const info = await one.info('memory');
    const { counted } = countedMemory(info);
    await one.config('SET', 'maxmemory', String(counted * 4));
    try {
      const ratio = await memoryRatio(redis);
      expect(ratio).toBeGreaterThan(0.2);
      expect(ratio).toBeLessThan(0.3);
    } finally {
      await one.config('SET', 'maxmemory', '0');
    }
  });
});
