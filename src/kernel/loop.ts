import type { Logger } from './logger.js';

/**
 * Runs `fn` every `ms` (never overlapping itself) until stopped; errors are logged, not fatal.
 * Returns a handle whose stop() resolves once the run in progress has finished.
 */
/** How long a loop that failed must go without failing to be said recovered (at least three of its rounds). */
const RECOVERED_AFTER_MS = 5000;
/** How often a loop that keeps failing is said to (after its first failure). */
const STILL_FAILING_MS = 60_000;

export function every(ms: number, name: string, fn: () => Promise<unknown>, log: Logger): { stop(): Promise<void> } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  // A loop that fails and succeeds by turns (a Redis that refuses writes, and a round with nothing
  // to write) said `failed` and `recovered` every 500 ms, the `recovered` false (a review): it is
  // recovered once it has not failed for RECOVERED_AFTER (or three rounds), and one that goes on
  // failing is said again once a minute, with how many rounds failed.
  let failing = false;
  let okSince: number | null = null;
  let failedRounds = 0;
  let saidAt = 0;
  const recoveredAfter = Math.max(RECOVERED_AFTER_MS, 3 * ms);
  const tick = () => {
    running = fn()
      .then(() => {
        if (!failing) return;
        const now = performance.now();
        okSince ??= now;
        if (now - okSince < recoveredAfter) return;
        log.info({ loop: name, failedRounds }, 'loop recovered');
        failing = false;
        okSince = null;
      })
      .catch((err) => {
        okSince = null;
        const now = performance.now();
        if (!failing) {
          failing = true;
          failedRounds = 0;
          saidAt = now;
          log.warn({ loop: name, err: String(err) }, 'loop failed');
        } else if (now - saidAt >= STILL_FAILING_MS) {
          saidAt = now;
          log.warn({ loop: name, err: String(err), failedRounds: failedRounds + 1 }, 'loop still failing');
        }
        failedRounds++;
      })
      .finally(() => {
        if (!stopped) timer = setTimeout(tick, ms);
      });
  };
  timer = setTimeout(tick, ms);
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
