import type { Logger } from './logger.js';

/**
 * A warning said at most once every `everyMs` (monotonic clock), with how many were not said
 * since (`alsoSinceLast`): what a fault repeats many times a second (a worker's connection errors,
 * an item the ledger cannot drain while Redis refuses writes) is logged at a pace a reader can follow.
 */
export function throttledWarn(log: Logger, msg: string, everyMs = 5000): (fields: Record<string, unknown>) => void {
  let lastSaid = -Infinity;
  let unsaid = 0;
  return (fields) => {
    const now = performance.now();
    if (now - lastSaid < everyMs) return void unsaid++;
    log.warn({ ...fields, alsoSinceLast: unsaid }, msg);
    lastSaid = now;
    unsaid = 0;
  };
}
