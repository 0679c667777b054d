import { closeSync, openSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { testDb } from './support/db.js';
import { connectDb } from '../src/db/client.js';
import { descriptorWatch } from '../src/kernel/descriptors.js';
import { recordingLogger } from './support/daemon-inproc.js';

const db = await testDb();

describe('a Postgres connection opened with every file descriptor in use', () => {
  it('fails its query (EMFILE), and the next one, with descriptors back, is answered', async () => {
    // The daemon's sockets to Postgres (db/watched-sockets.ts) were handed to postgres.js before
    // they had connected, and postgres.js listens for a socket's errors only once it has it: the
    // EMFILE came first, with no listener, and was uncaught (the daemon exited; a review).
    const h = connectDb(db.url, { max: 1, timeoutMs: 15_000 });
    const fds: number[] = [];
    let failed: unknown = null;
    try {
      try {
        for (;;) fds.push(openSync('/dev/null', 'r'));
      } catch {
        // every descriptor in use
      }
      await h.sql`select 1`.catch((err: unknown) => (failed = err));
    } finally {
      for (const fd of fds) closeSync(fd);
    }
    expect(failed).toMatchObject({ code: 'EMFILE' });
    expect(await h.sql`select 1 as one`).toEqual([{ one: 1 }]);
    await h.close();
  });
});

describe('the file descriptor watch', () => {
  it('says when nine in ten descriptors are in use, and when they are back under eight in ten', async () => {
    // (At the limit nothing else could say it: /readyz and /metrics are out of reach then.)
    const logs = recordingLogger('info');
    const watch = descriptorWatch(logs.log);
    const first = await watch.check();
    expect(first).not.toBeNull();
    const { limit, open } = first!;
    const fds: number[] = [];
    try {
      for (let i = open; i < Math.ceil(limit * 0.92); i++) fds.push(openSync('/dev/null', 'r'));
      await watch.check();
      await watch.check();
    } finally {
      for (const fd of fds) closeSync(fd);
    }
    await watch.check();
    const lines = logs.lines();
    expect(lines.match(/nearly all in use/g), lines).toHaveLength(1);
    expect(lines).toMatch(new RegExp(`"limit":${limit}`));
    expect(lines).toMatch(/back under 80%/);
  });
});
