import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { trackChild } from './support/children.js';
import { builtDaemon } from './support/daemon.js';
import { freePort } from './support/proxy.js';
import { testRedis } from './support/redis.js';

const { newPrefix } = testRedis();
const dataDir = mkdtempSync(path.join(os.tmpdir(), 'fg-startstop-'));
// (Run as root, the embedded Postgres runs as the `postgres` account, which must pass through it.)
chmodSync(dataDir, 0o755);
afterAll(() => {
  // A Postgres the daemon failed to stop (the fault this file is about) must not outlive the run.
  try {
    execFileSync('pkill', ['-f', dataDir]);
  } catch {
    /* none left: the expected case */
  }
  rmSync(dataDir, { recursive: true, force: true });
});

const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });

describe('a stop while the daemon is still starting', () => {
  // initdb and a Postgres start: 5-7 s in clean-clone CI runs, more beside heavy test runs.
  it('stops the embedded Postgres it had started (it outlived the daemon, and the next start reused it and never stopped it)', { timeout: 90_000 }, async () => {
    const pgPort = await freePort();
    // A Redis that does not answer holds the start after the Postgres is up (the daemon waits for it).
    const deadRedis = await freePort();
    const proc = spawn(process.execPath, [builtDaemon], {
      env: { ...process.env, PORT: '0', LOG_LEVEL: 'info', REDIS_URL: `redis://127.0.0.1:${deadRedis}`, DATABASE_URL: '', FLOODGATE_DATA_DIR: dataDir, FLOODGATE_EMBEDDED_PG_PORT: String(pgPort), FLOODGATE_REDIS_PREFIX: newPrefix(), FLOODGATE_OPERATOR_KEYS: 'op', FLOODGATE_SERVICE_KEYS: 'svc' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    trackChild(proc, 'floodgate.mjs');
    let out = '';
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer) => {
        out += d;
        if (out.includes('"msg":"started embedded postgres"') || out.includes('"msg":"reusing running postgres"')) resolve();
      };
      proc.stdout!.on('data', onData);
      proc.stderr!.on('data', onData);
      void exited.then(() => reject(new Error(`exited before its Postgres was up:\n${out}`)));
    });
    expect(out).toContain('"msg":"started embedded postgres"');
    expect(await listening(pgPort)).toBe(true);
    proc.kill('SIGTERM');
    // And a second signal while it stops what it started (a supervisor's repeat, a group's signal
    // then its primary's): ignored. It took Node's default before (death by SIGTERM: exit code
    // null), and the Postgres being stopped was left running.
    await new Promise((r) => setTimeout(r, 30));
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    expect(await exited, out).toBe(0);
    expect(out).toContain('stop requested while starting');
    expect(await listening(pgPort), out).toBe(false);
  });
});
