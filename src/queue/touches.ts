import type { RedisLike } from '../redis/client.js';
import { itemKeys } from '../redis/keys.js';

/**
 * Poll times for abandonment detection, buffered and written once a second in one pipeline:
 * a poll stays free of Redis writes, and abandonment (minutes, typically) tolerates the delay.
 */
export function createTouchBuffer(redis: RedisLike, prefix: string) {
  let pending = new Map<string, Map<number, number>>();
  return {
    touch(itemId: string, seq: number, now: number) {
      let m = pending.get(itemId);
      if (!m) pending.set(itemId, (m = new Map()));
      m.set(seq, now);
    },
    async flush() {
      if (pending.size === 0) return;
      const batch = pending;
      pending = new Map();
      // One pipeline per item: a cluster takes a pipeline only when its keys share a node.
      const sends = [...batch].map(([itemId, seqs]) => {
        const k = itemKeys(prefix, itemId);
        const pipe = redis.pipeline();
        for (const [seq, t] of seqs) pipe.hset(k.pollPage(seq), String(seq), String(t));
        return pipe.exec();
      });
      await Promise.all(sends);
    },
  };
}
