import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    globalSetup: ['test/global-setup.ts'],
    // Fails a file that leaves sockets, servers, timers or child processes behind.
    setupFiles: ['test/support/leak-check.ts'],
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Files run in parallel, each against its own key prefix and database. Most of a file's time
    // is spent waiting (on daemons, timers, Redis, Postgres), so three workers on a 2-core machine
    // finish the suite in ~60% of the time one takes (vitest's default here: cores − 1 = 1), and
    // running it so keeps every test honest about a busy machine.
    fileParallelism: true,
    maxWorkers: 3,
  },
});
