import { afterAll, expect, onTestFinished } from 'vitest';

/**
 * Runs `fn` once what registered it is over: the test, when called inside a running test (an
 * afterAll registered there never runs), else the test file.
 */
export function whenDone(fn: () => unknown): void {
  const run = async () => void (await fn());
  if (expect.getState().currentTestName === undefined) afterAll(run);
  else onTestFinished(run);
}
