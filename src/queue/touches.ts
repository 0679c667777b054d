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
      const sends = [...batch].map(async ([itemId, seqs]) => {
        const k = itemKeys(prefix, itemId);
        const pipe = redis.pipeline();
        for (const [seq, t] of seqs) pipe.hset(k.pollPage(seq), String(seq), String(t));
        const replies = await pipe.exec();
        if (!replies || replies.some(([err]) => err)) throw new Error('poll times not written');
      });
      const sent = await Promise.allSettled(sends);
      // A batch Redis did not take (an outage began) is kept for the next flush, under any newer
      // poll since: thrown away, its users' polls were lost, and they were expired as abandoned
      // once Redis came back.
      let failed: unknown = null;
      [...batch].forEach(([itemId, seqs], i) => {
        if (sent[i].status === 'fulfilled') return;
        failed = (sent[i] as PromiseRejectedResult).reason;
        let m = pending.get(itemId);
        if (!m) pending.set(itemId, (m = new Map()));
        for (const [seq, t] of seqs) if ((m.get(seq) ?? -Infinity) < t) m.set(seq, t);
      });
      if (failed) throw failed;
    },
  };
}
