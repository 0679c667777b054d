import type { Logger } from '../kernel/logger.js';
import { evictionHazard, memoryState, type RedisLike } from '../redis/client.js';

/**
 * New joins stop before Redis is full. Redis at its maxmemory (with `noeviction`, the only safe
 * policy for queue state) refuses every command that grows it, scripts included: joins answered
 * `500`, and the sale could not drain either — admitting, running jobs (BullMQ's own scripts) and
 * recording outcomes all write before they free anything, so nothing ever freed the memory. So
 * joins that would add a ticket are refused (`503`, Retry-After) once used_memory reaches
 * `limit` of maxmemory, leaving the rest for the tickets already in line, whose ends free their
 * payloads and states; a user who holds a ticket still gets it back. Read once a second.
 */
export interface MemoryGuard {
  /** Whether new joins are refused now (from `limit` on, until 2 points under it). */
  readonly full: boolean;
  /** used_memory ÷ maxmemory, the highest over the servers; 0 without a maxmemory. */
  readonly ratio: number;
  /**
   * A `maxmemory-policy` other than `noeviction` a server reports (set while the daemon ran: a
   * start refuses one), or null: Redis may drop the lines' keys (client.ts evictionHazard);
   * `/readyz` fails while it is so.
   */
  readonly evicting: string | null;
  check(): Promise<void>;
}

export function createMemoryGuard(redis: RedisLike, limit: number, log: Logger): MemoryGuard {
  let ratio = 0;
  let full = false;
  let evicting: string | null = null;
  return {
    get full() {
      return full;
    },
    get ratio() {
      return ratio;
    },
    get evicting() {
      return evicting;
    },
    async check() {
      const read = await memoryState(redis);
      if (read === null) return; // no server answered: as it was (the outage is another module's)
      ratio = read.ratio;
      if (read.evicting !== evicting) {
        if (read.evicting) log.error({ policy: read.evicting }, evictionHazard(read.evicting));
        else log.info('redis is set to noeviction again');
      }
      evicting = read.evicting;
      // Two points of hysteresis: at the edge, joins switched on and off every second.
      const now = full ? ratio >= limit - 0.02 : ratio >= limit;
      if (now !== full) {
        if (now) log.warn({ ratio: Number(ratio.toFixed(3)), limit }, 'redis near its memory limit: new joins refused until tickets end and free it');
        else log.info({ ratio: Number(ratio.toFixed(3)), limit }, 'redis memory below the limit again: joins accepted');
      }
      full = now;
    },
  };
}
