import type { Logger } from './logger.js';

/**
 * Runs `fn` every `ms` (never overlapping itself) until stopped; errors are logged, not fatal.
 * Returns a handle whose stop() resolves once the run in progress has finished.
 */
export function every(ms: number, name: string, fn: () => Promise<unknown>, log: Logger): { stop(): Promise<void> } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  let failing = false;
  const tick = () => {
    running = fn()
      .then(() => {
        if (failing) log.info({ loop: name }, 'loop recovered');
        failing = false;
      })
      .catch((err) => {
        if (!failing) log.warn({ loop: name, err: String(err) }, 'loop failed');
        failing = true;
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
