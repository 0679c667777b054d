import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { ensurePostgres } from '../src/infra/ensure-postgres.js';
import { ensureRedis } from '../src/infra/ensure-redis.js';
import { provisionPolicy, SetupNeeded, systemChanges } from '../src/infra/system-changes.js';
import { startDaemonProcess } from './support/daemon.js';
import { freePort } from './support/proxy.js';
import { testRedis } from './support/redis.js';

const asRoot = process.getuid?.() === 0;
const tmp = await mkdtemp(path.join(os.tmpdir(), 'fg-provision-'));
await chmod(tmp, 0o755); // mkdtemp makes it 0700; the closed directory is the test's own below it
afterAll(() => rm(tmp, { recursive: true, force: true }));
const { newPrefix } = testRedis();

/** A log that keeps its lines, to see which changes were announced. */
function recordingLog() {
  const lines: { msg: string; command?: string }[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });
  return { log, changes: () => lines.filter((l) => l.msg === 'changing the system').map((l) => l.command) };
}

/** A PATH holding only a fake `apt-get` that records that it ran (and installs nothing). */
async function fakeAptPath() {
  const dir = await mkdtemp(path.join(tmp, 'bin-'));
  const marker = path.join(dir, 'apt-get-ran');
  await writeFile(path.join(dir, 'apt-get'), `#!/bin/sh\necho "$@" >> ${marker}\nexit 0\n`, { mode: 0o755 });
  return { env: { PATH: dir }, marker };
}

describe('the provisioning policy', () => {
  it('allows system changes only with FLOODGATE_PROVISION=auto and no store configured', () => {
    const { log } = recordingLog();
    expect(provisionPolicy('auto', { redis: false, postgres: false }, log).allowed).toBe(true);
    expect(provisionPolicy('off', { redis: false, postgres: false }, log).allowed).toBe(false);
    expect(provisionPolicy('auto', { redis: true, postgres: false }, log).allowed).toBe(false);
    expect(provisionPolicy('auto', { redis: false, postgres: true }, log).allowed).toBe(false);
  });

  it('names the command it would need and the way around it when changes are off, and runs nothing', async () => {
    let ran = false;
    const off = systemChanges({ allowed: false, refusal: 'FLOODGATE_PROVISION=off' });
    const attempt = off.make({ command: 'useradd postgres', why: 'the server needs an account', instead: 'set DATABASE_URL' }, async () => (ran = true));
    await expect(attempt).rejects.toThrow(SetupNeeded);
    await expect(attempt).rejects.toThrow(/needs `useradd postgres`.*FLOODGATE_PROVISION=off.*set DATABASE_URL/);
    expect(ran).toBe(false);
  });
});

describe('a missing redis-server', () => {
  it('with provisioning off: runs no apt-get and says what it needs', async () => {
    const { env, marker } = await fakeAptPath();
    const { log, changes } = recordingLog();
    const attempt = ensureRedis({ dataDir: path.join(tmp, 'r1'), log, env, port: await freePort(), changes: provisionPolicy('off', { redis: false, postgres: false }, log) });
    await expect(attempt).rejects.toThrow(/redis-server was not found on PATH.*apt-get install -y redis-server.*REDIS_URL.*installs nothing/);
    expect(existsSync(marker)).toBe(false);
    expect(changes()).toEqual([]);
  });

  it.skipIf(!asRoot)('with provisioning on, as root: logs the apt-get it runs, one line per run', async () => {
    const { env, marker } = await fakeAptPath();
    const { log, changes } = recordingLog();
    const attempt = ensureRedis({ dataDir: path.join(tmp, 'r2'), log, env, port: await freePort(), changes: provisionPolicy('auto', { redis: false, postgres: false }, log) });
    // The fake apt-get "succeeds" but installs nothing, so the start still fails, after one logged try.
    await expect(attempt).rejects.toThrow(/still not on PATH after apt-get install/);
    expect(existsSync(marker)).toBe(true);
    expect(changes()).toEqual(['apt-get install -y --no-install-recommends redis-server']);
  });
});

describe.skipIf(!asRoot)('an embedded Postgres the postgres account cannot reach, as root', () => {
  /** A data directory under a parent only root may enter (mode 0700). */
  async function closedParent(name: string) {
    const parent = path.join(tmp, name);
    await mkdir(parent, { mode: 0o700 });
    await chmod(parent, 0o700);
    return { parent, dataDir: path.join(parent, 'data', 'postgres') };
  }

  it('with provisioning off: changes no mode and names the chmod it needs', async () => {
    const { parent, dataDir } = await closedParent('closed-1');
    const { log, changes } = recordingLog();
    const attempt = ensurePostgres({ dataDir, log, port: await freePort(), changes: provisionPolicy('off', { redis: false, postgres: false }, log) });
    await expect(attempt).rejects.toThrow(new RegExp(`needs \`chmod o\\+x ${parent}\`.*FLOODGATE_PROVISION=off`));
    expect((await stat(parent)).mode & 0o777).toBe(0o700);
    expect(changes()).toEqual([]);
  });

  it('the daemon started with FLOODGATE_PROVISION=off and no stores configured exits, saying what it needs', async () => {
    const { parent, dataDir } = await closedParent('closed-2');
    const start = startDaemonProcess({
      REDIS_URL: '',
      DATABASE_URL: '',
      FLOODGATE_PROVISION: 'off',
      FLOODGATE_DATA_DIR: path.dirname(dataDir),
      FLOODGATE_EMBEDDED_PG_PORT: String(await freePort()),
      FLOODGATE_REDIS_PREFIX: newPrefix(),
      FLOODGATE_OPERATOR_KEYS: 'op',
      FLOODGATE_SERVICE_KEYS: 'svc',
    });
    await expect(start).rejects.toThrow(/daemon exited 1:[\s\S]*needs `chmod o\+x [^`]*closed-2`[^\n]*FLOODGATE_PROVISION=off[^\n]*"msg":"failed to start"/);
    expect((await stat(parent)).mode & 0o777).toBe(0o700);
  });
});
