import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    globalSetup: ['test/global-setup.ts'],
    // Fails a file that leaves sockets, servers, timers or child processes behind.
    setupFiles: ['test/support/leak-check.ts'],
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Two cores: files run in parallel, each against its own key prefix and database.
    fileParallelism: true,
  },
});
