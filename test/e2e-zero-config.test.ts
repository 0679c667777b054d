import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startDaemonProcess } from './support/daemon.js';
import { waitFor } from './support/daemon-inproc.js';
import { freePort } from './support/proxy.js';
import { testRedis } from './support/redis.js';

const { newPrefix } = testRedis();
const dataDir = mkdtempSync(path.join(os.tmpdir(), 'fg-zero-'));
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

describe('npm start with no REDIS_URL and no DATABASE_URL', () => {
  // initdb, a Postgres start and the migrations: 5-7 s in clean-clone CI runs, 17 s once beside heavy test runs.
  it('uses the local Redis, starts an embedded Postgres, migrates it, serves, and stops it again', { timeout: 90_000 }, async () => {
    const port = await freePort();
    const d = await startDaemonProcess({
      REDIS_URL: '',
      DATABASE_URL: '',
      FLOODGATE_DATA_DIR: dataDir,
      FLOODGATE_EMBEDDED_PG_PORT: String(port),
      FLOODGATE_REDIS_PREFIX: newPrefix(),
      FLOODGATE_OPERATOR_KEYS: 'op',
    });
    try {
      expect(d.output()).toMatch(/"msg":"(using local redis|started redis-server)"/);
      expect(d.output()).toMatch(/"msg":"started embedded postgres"/);
      const put = await fetch(`${d.url}/v1/items/zero`, {
        method: 'PUT',
        headers: { authorization: 'Bearer op', 'content-type': 'application/json' },
        body: JSON.stringify({ handler: 'external' }),
      });
      expect(put.status).toBe(201);
      expect((await fetch(`${d.url}/readyz`)).status).toBe(200);
    } finally {
      expect(await d.stop('SIGTERM')).toBe(0);
    }
    expect(d.output()).toMatch(/"msg":"stopped"/);
  });

  it("stops on a terminal's Ctrl-C with its embedded Postgres serving to the end of its stop", { timeout: 90_000 }, async () => {
    // Ctrl-C signals the terminal's whole foreground group: the embedded Postgres, a child in the
    // daemon's group, took the SIGINT as a fast shutdown at once, and the daemon's graceful stop
    // (the jobs it ran settling, the ledger's drain) then wrote to a server that had gone.
    const port = await freePort();
    const d = await startDaemonProcess(
      { REDIS_URL: '', DATABASE_URL: '', FLOODGATE_DATA_DIR: dataDir, FLOODGATE_EMBEDDED_PG_PORT: String(port), FLOODGATE_REDIS_PREFIX: newPrefix(), FLOODGATE_OPERATOR_KEYS: 'op', FLOODGATE_SERVICE_KEYS: 'svc', LOG_LEVEL: 'debug' },
      { group: true },
    );
    let code: number | null;
    try {
      const put = await fetch(`${d.url}/v1/items/ctrl-c`, { method: 'PUT', headers: { authorization: 'Bearer op', 'content-type': 'application/json' }, body: JSON.stringify({ handler: 'external' }) });
      expect(put.status).toBe(201);
    } finally {
      code = await d.stop('SIGINT');
    }
    const out = d.output();
    expect(out).not.toMatch(/embedded postgres exited unexpectedly/);
    // (Postgres ends the sessions still open when told to stop: the daemon's had closed theirs.)
    expect(out).not.toMatch(/terminating connection due to administrator command/);
    expect(out.indexOf('received fast shutdown request')).toBeGreaterThan(out.indexOf('"msg":"stopping"'));
    expect(out).toMatch(/"msg":"stopped embedded postgres"/);
    expect(code).toBe(0);
  });

  it('leaves its embedded Postgres to a second daemon in the same folder, which stops it when it stops', { timeout: 90_000 }, async () => {
    // The first's stop took the Postgres from under the second's sale; and the second, stopping it
    // once the last on it, exited mid-stop (its wait held nothing open) and never said it had.
    const port = await freePort();
    const env = { REDIS_URL: '', DATABASE_URL: '', FLOODGATE_DATA_DIR: dataDir, FLOODGATE_EMBEDDED_PG_PORT: String(port), FLOODGATE_OPERATOR_KEYS: 'op' };
    const accepts = () => new Promise<boolean>((resolve) => net.connect(port, '127.0.0.1').once('connect', function (this: net.Socket) { this.destroy(); resolve(true); }).once('error', () => resolve(false)));
    const a = await startDaemonProcess({ ...env, FLOODGATE_REDIS_PREFIX: newPrefix() });
    const b = await startDaemonProcess({ ...env, FLOODGATE_REDIS_PREFIX: newPrefix() });
    try {
      expect(a.output()).toMatch(/"msg":"started embedded postgres"/);
      expect(b.output()).toMatch(/"msg":"reusing running postgres"/);
      expect(await a.stop('SIGTERM')).toBe(0);
      expect(a.output()).toMatch(/embedded postgres left running: other clients use it/);
      expect((await fetch(`${b.url}/readyz`)).status).toBe(200);
    } finally {
      await a.stop('SIGTERM');
    }
    expect(await b.stop('SIGTERM')).toBe(0);
    expect(b.output()).toMatch(/"msg":"stopped embedded postgres"/);
    expect(b.output()).toMatch(/"msg":"stopped"/);
    expect(await accepts()).toBe(false);
  });

  it('stops the embedded Postgres it was starting when told to stop mid-start', { timeout: 90_000 }, async () => {
    // (The data directory the test above made: no initdb, Postgres itself starting.) A SIGTERM
    // while it started left it running, and every later start reused it and never stopped it (a review).
    const port = await freePort();
    const accepts = () => new Promise<boolean>((resolve) => net.connect(port, '127.0.0.1').once('connect', function (this: net.Socket) { this.destroy(); resolve(true); }).once('error', () => resolve(false)));
    try {
      const started = startDaemonProcess(
        { REDIS_URL: '', DATABASE_URL: '', FLOODGATE_DATA_DIR: dataDir, FLOODGATE_EMBEDDED_PG_PORT: String(port), FLOODGATE_REDIS_PREFIX: newPrefix(), FLOODGATE_OPERATOR_KEYS: 'op', LOG_LEVEL: 'debug' },
        {
          // Postgres's own first line: its process runs, not yet ready.
          onOutput: (all, proc) => {
            if (all.includes('"msg":"postgres output"') && proc.exitCode === null && !proc.killed) proc.kill('SIGTERM');
          },
        },
      );
      const err = await started.then(
        (d) => (void d.stop(), null),
        (e: Error) => e,
      );
      expect(err?.message).toMatch(/daemon exited 0/);
      expect(await waitFor(accepts, (a) => !a, 20_000)).toBe(false);
    } finally {
      // (On a failure, the Postgres left running is stopped here: it would outlive the run.)
      const pidFile = path.join(dataDir, 'postgres', 'postmaster.pid');
      if (existsSync(pidFile)) {
        const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
        if (pid > 0) {
          try {
            process.kill(pid, 'SIGQUIT');
          } catch {
            // gone already
          }
        }
      }
    }
  });
});
