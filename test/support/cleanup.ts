import { afterAll, onTestFinished } from 'vitest';

/**
 * Runs `fn` once what registered it is over: the test, when called inside a running test (an
 * afterAll registered there never runs), else the test file.
 */
export function whenDone(fn: () => unknown): void {
  const run = async () => void (await fn());
  // vitest throws when no test is running (asking expect's state is not enough: with isolate off it
  // still names the previous file's last test).
  try {
    onTestFinished(run);
  } catch {
    afterAll(run);
  }
}
