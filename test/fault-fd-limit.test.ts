import { closeSync, openSync } from 'node:fs';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { processEnv, startDaemonProcess } from './support/daemon.js';
import { waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { connectDb } from '../src/db/client.js';
import { descriptorWatch } from '../src/kernel/descriptors.js';
import { recordingLogger } from './support/daemon-inproc.js';
import { testRedis } from './support/redis.js';

const { newPrefix } = testRedis();
const db = await testDb();

/** Opens `n` connections to `port` and keeps those the server keeps; resolves once each is open or closed. */
async function flood(port: number, n: number): Promise<net.Socket[]> {
  const sockets = Array.from({ length: n }, () => net.connect(port, '127.0.0.1'));
  await Promise.all(sockets.map((s) => new Promise<void>((resolve) => {
    s.on('error', () => {});
    s.once('connect', () => resolve());
    s.once('close', () => resolve());
  })));
  return sockets;
}

describe('a daemon whose file descriptors are all in use', () => {
  it('says Postgres is not answering while it cannot reach it (its sessions ended, no descriptor to connect again), and serves again once the connections go', { timeout: 90_000 }, async () => {
    // A flood of idle connections takes every descriptor the process may open (Node accepts past
    // the limit and closes at once). A Postgres connection opened then failed with EMFILE before
    // postgres.js listened for its errors: uncaught, the daemon exited (a review: within 90 ms of
    // Postgres ending its sessions, and within 3 s of 400 idle connections with no fault at all).
    const d = await startDaemonProcess(processEnv(db.url, newPrefix()), { openFiles: 256 });
    const port = Number(new URL(d.url).port);
    const put = await fetch(`${d.url}/v1/items/fd`, { method: 'PUT', headers: { authorization: 'Bearer op', 'content-type': 'application/json' }, body: JSON.stringify({ handler: 'external' }) });
    expect(put.status).toBe(201);
    const sockets = await flood(port, 400);
    let probe: { status: number; body: string } | string;
    try {
      const name = new URL(db.url).pathname.slice(1);
      await db.sql`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${name} and pid <> pg_backend_pid()`;
      // One descriptor back (a flood connection closes), taken by a probe's connection: its check
      // of Postgres must connect again, with no descriptor left to do it with.
      const freed = sockets.find((s) => !s.destroyed)!;
      freed.end();
      await new Promise((r) => freed.once('close', r));
      probe = await waitFor(
        () => fetch(`${d.url}/readyz`).then(async (r) => ({ status: r.status, body: await r.text() }), (e: Error) => String((e.cause as { code?: string })?.code ?? e)),
        // (Reset while the daemon's side of the freed connection was not closed yet: asked again.)
        (v) => typeof v !== 'string' || d.proc.exitCode !== null,
        20_000,
      );
    } finally {
      for (const s of sockets) s.destroy();
    }
    expect(d.proc.exitCode, d.output()).toBeNull();
    expect(probe).toMatchObject({ status: 503 });
    expect((probe as { body: string }).body).toMatch(/"postgres":"fail"/);
    const ready = await waitFor(() => fetch(`${d.url}/readyz`).then((r) => r.status, () => 0), (s) => s === 200, 30_000);
    expect(ready).toBe(200);
    const join = await fetch(`${d.url}/v1/items/fd/tickets`, { method: 'POST', headers: { authorization: 'Bearer svc', 'content-type': 'application/json' }, body: JSON.stringify({ userId: 'u1' }) });
    expect(join.status).toBe(202);
    expect(d.output()).not.toMatch(/uncaught exception/);
    expect(await d.stop()).toBe(0);
  });
});

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
