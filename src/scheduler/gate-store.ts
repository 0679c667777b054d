import type { RedisLike } from '../redis/client.js';
import type { Clock } from '../kernel/clock.js';
import { gateFields } from '../queue/gate-rule.js';
import type { GateSettings } from '../queue/types.js';
import { itemKeys, subLineTag } from '../redis/keys.js';
import { createScriptRunner, scripts } from '../redis/scripts.js';

/**
 * The Redis side of the gate: the operator's settings (mode, rate, maxInFlight), the leader
 * lease, the shared sample counters every daemon adds to, and the controller's published state
 * (fields of the item's gate hash; controller-view.ts reads them for operators):
 *   aLimit, aRate    what admission obeys in auto mode
 *   aProbeStart      when the current probe began ('' = none): samples of calls started later count as probe samples
 *   aBase, aP50, aP99, aLeader, aState   what operators see, and the state a new leader resumes from
 *   aReset           set by a switch to auto: restart from the observed in-flight and probe
 */
export interface SampleDelta {
  n: number;
  drops: number;
  /** latency bucket → count, of answered calls; probe: of those started after the probe began */
  hist: Map<number, number>;
  probe: Map<number, number>;
}

export function createGateStore(redis: RedisLike, prefix: string, clock: Clock) {
  const runner = createScriptRunner(redis, prefix);
  return {
    /** Takes or renews this daemon's lease on the item's controller (lead-1.lua); whether it holds it. */
    lead: async (itemId: string, me: string, ttlMs: number) => (await runner.run(scripts.lead, itemId, clock.now(), { me, ttlMs })) === 1,

    /**
     * Writes the operator's settings (the catalog keeps them in Postgres first). The line's cached
     * item views see them at their next refresh.
     */
    async writeSettings(itemId: string, patch: Partial<GateSettings>) {
      const fields = gateFields(patch);
      if (!Object.keys(fields).length) return; // HSET with no fields is an error
      await redis.hset(itemKeys(prefix, itemId).gate, fields);
    },

    /**
     * Adds one daemon's samples to the item's cumulative counters. Single commands, which the
     * connection pipelines (per node on a cluster): an explicit pipeline per item cost more to
     * build than its commands (ioredis copies every defined script onto each pipeline).
     */
    async addSamples(batch: Map<string, SampleDelta>) {
      const sends: Promise<unknown>[] = [];
      for (const [itemId, d] of batch) {
        const key = itemKeys(prefix, itemId).samples;
        if (d.n) sends.push(redis.hincrby(key, 'n', d.n));
        if (d.drops) sends.push(redis.hincrby(key, 'd', d.drops));
        for (const [b, c] of d.hist) sends.push(redis.hincrby(key, `h${b}`, c));
        for (const [b, c] of d.probe) sends.push(redis.hincrby(key, `p${b}`, c));
      }
      await Promise.all(sends);
    },

    readSamples: (itemId: string) => redis.hgetall(itemKeys(prefix, itemId).samples),

    /** Writes the controller's published fields, only while `me` holds the item's controller lease (gate-publish-2.lua); whether it wrote. */
    publishAsLeader: async (itemId: string, me: string, fields: Record<string, string | number>) =>
      (await runner.run(scripts.gatePublish, itemId, clock.now(), { me }, Object.entries(fields).flat())) === 1,

    readGate: (itemId: string) => redis.hgetall(itemKeys(prefix, itemId).gate),

    /**
     * The item's tickets in flight now: its line's `admitted` counter, summed over the sub-lines of
     * a split item (`lines` > 1: each sub-line counts its own, and the item's own counters are only
     * sub-line 0's; queue/split-line.ts). One HGET per sub-line, sent at once (pipelined per node).
     * Reading only the item's own counter left a split item's controller a K-th of its in flight:
     * the law never saw its limit used, and a `lines: 4` item stayed at the start limit.
     */
    async readInFlight(itemId: string, lines = 1) {
      const tags = Array.from({ length: Math.max(1, lines) }, (_, k) => subLineTag(itemId, k));
      const counts = await Promise.all(tags.map((tag) => redis.hget(itemKeys(prefix, tag).ctr, 'admitted')));
      return counts.reduce((s, v) => s + Number(v ?? 0), 0);
    },

    /** Operators switched to auto: the controller restarts from what is in flight now. */
    async requestReset(itemId: string) {
      await redis.hset(itemKeys(prefix, itemId).gate, 'aReset', '1');
    },
  };
}

export type GateStore = ReturnType<typeof createGateStore>;
