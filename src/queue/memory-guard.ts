import type { Logger } from '../kernel/logger.js';
import { evictionHazard, memoryState, type RedisLike } from '../redis/client.js';

/**
 * New joins stop before Redis is full. Redis at its maxmemory (with `noeviction`, the only safe
 * policy for queue state) refuses every command that grows it, scripts included: joins answered
 * `500`, and the sale could not drain either — admitting, running jobs (BullMQ's own scripts) and
 * recording outcomes all write before they free anything, so nothing ever freed the memory. So
 * joins that would add a ticket are refused (`503`, Retry-After) once used_memory reaches
 * `limit` of maxmemory, leaving the rest for the tickets already in line, whose ends free their
 * payloads and states; a user who holds a ticket still gets it back. Read once a second, with
 * whether Redis takes writes at all (`refusing`).
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
  /**
   * What Redis answers a write with while it refuses every write (MISCONF: its AOF or snapshot
   * cannot be written, a full disk; READONLY: a replica; NOREPLICAS), or null. Nothing can be
   * admitted meanwhile: waiting tickets read `paused` (an ETA counted down to nothing before, and
   * the item read `open`), and `/readyz` says it.
   */
  readonly refusing: string | null;
  /** Whether the last write check got Redis's answer (unanswered, `refusing` stays as it was, and is no news). */
  readonly answered: boolean;
  check(): Promise<void>;
}

const REFUSALS = /^(MISCONF|READONLY|NOREPLICAS)\b/;

/** `probeKey`: a key of the daemon's own the check writes (5 s of life) to see whether Redis takes writes. */
export function createMemoryGuard(redis: RedisLike, limit: number, log: Logger, probeKey?: string): MemoryGuard {
  let ratio = 0;
  let full = false;
  let evicting: string | null = null;
  let refusing: string | null = null;
  let answered = true;
  /** Whether Redis takes a write: its refusal's first line, null if it does, undefined if it did not answer (as it was). */
  const refusal = async (): Promise<string | null | undefined> => {
    if (!probeKey) return null;
    try {
      await redis.set(probeKey, '1', 'PX', 5000);
      return null;
    } catch (err) {
      const message = String((err as Error)?.message ?? err);
      return REFUSALS.test(message) ? message.split('\n')[0].slice(0, 300) : undefined;
    }
  };
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
    get refusing() {
      return refusing;
    },
    get answered() {
      return answered;
    },
    async check() {
      const refused = await refusal();
      answered = refused !== undefined;
      if (refused !== undefined && refused !== refusing) {
        if (refused) log.error({ answer: refused }, 'redis refuses writes: nothing is admitted until it takes them again');
        else log.info('redis takes writes again');
        refusing = refused;
      }
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
