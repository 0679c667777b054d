import { defineConfig } from 'vitest/config';
import { isTypeFetchFailure } from './src/db/faults.js';
import SlowestFirst from './test/support/sequencer.js';

export default defineConfig({
  test: {
    globalSetup: ['test/global-setup.ts'],
    // Fails a file that leaves sockets, servers, timers or child processes behind.
    setupFiles: ['test/support/leak-check.ts'],
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    // What a test waits for with expect.poll may take seconds on a loaded machine (a page solving
    // its proof of work before the state it checks, under CI's load): vitest's default of 1 s
    // failed such a wait in a run under a profiler. A wait that never ends still fails, at 10 s.
    expect: { poll: { timeout: 10_000 } },
    hookTimeout: 60_000,
    // Files run in parallel, each against its own key prefix and database. Most of a file's time
    // is spent waiting (on daemons, timers, Redis, Postgres), so more workers than cores finish
    // sooner (vitest's default here: cores − 1 = 1), and running it so keeps every test honest
    // about a busy machine. On the 2-core machine (7 Dec 2026), four workers used half its CPU
    // (379 s of CPU in a 387 s run); six took the run from 380 s to 320 s (the files' own times
    // summed grew from 1,350 s to 1,690 s, the price of the contention), with at most 66
    // Postgres connections open (of 100).
    fileParallelism: true,
    maxWorkers: 6,
    // A worker keeps the modules it loaded from one file to the next: each file used to load the
    // daemon (hono, bullmq, ioredis, drizzle, zod, prom-client…) anew, ~1.8 s of CPU a file, a
    // third of the suite's CPU. Nothing in src keeps state in a module that one daemon could
    // leak into another's test (metrics registries, loggers and caches are per daemon), and
    // test/support/leak-check.ts still checks each file for what it leaves running.
    isolate: false,
    // The slowest files first, so that none starts last and lengthens the run (a clean clone has
    // no durations cached for vitest to order by).
    sequence: { sequencer: SlowestFirst },
    // One known defect of postgres.js (src/db/faults.ts, isTypeFetchFailure): a connection reset
    // while it fetches array types is an unhandled rejection nobody can catch. The daemon logs it
    // and goes on; an in-process daemon in a Postgres fault test must be allowed the same. Any
    // other unhandled error still fails the run.
    onUnhandledError: (err) => (isTypeFetchFailure(err) ? false : undefined),
  },
});
