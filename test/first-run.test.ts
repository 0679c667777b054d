import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { builtDaemon, startDaemonProcess } from './support/daemon.js';
import { waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { http } from './support/http.js';
import { redisUrl, testRedis } from './support/redis.js';

const { newPrefix } = testRedis();
const db = await testDb();
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
/** A fresh working directory, as a fresh clone would be (no .env, no .floodgate). */
const workDir = () => {
  const d = mkdtempSync(path.join(os.tmpdir(), 'fg-first-run-'));
  dirs.push(d);
  return d;
};
const withPassword = (url: string, password: string, user?: string) => {
  const u = new URL(url);
  if (user) u.username = user;
  u.password = password;
  return u.toString();
};
/** The JSON log lines of a daemon's output with the given message. */
const logLines = (out: string, msg: string) =>
  out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l))
    .filter((l) => l.msg === msg);

// Each test has its own working directory, key prefix and item ids: they run side by side.
describe.concurrent('the first run', () => {
  it('reads .env from the working directory under the environment, warns of unknown variables, logs where it listens, and never logs a password', async () => {
    const cwd = workDir();
    writeFileSync(
      path.join(cwd, '.env'),
      ['# as copied from config/floodgate.env.example', 'HOST=127.0.0.1', 'FLOODGATE_OPERATOR_KEYS=op-from-file', 'FLOODGATE_SERVICE_KEYS=svc-from-file', 'FLOODGATE_CACHE_MSS=100', ''].join('\n'),
    );
    const d = await startDaemonProcess(
      {
        REDIS_URL: withPassword(redisUrl(), 's3cret-redis', 'default'),
        DATABASE_URL: withPassword(db.url, 's3cret-pg'),
        FLOODGATE_REDIS_PREFIX: newPrefix(),
        FLOODGATE_OPERATOR_KEYS: 'op-from-env',
        FLOODGATE_OPERATR_KEYS: 'typo',
        FLOODGATE_SERVICE_KEYS: '',
      },
      { cwd },
    );
    try {
      expect((await http(d.url, 'PUT', '/v1/items/env-1', { handler: 'external' }, 'op-from-file')).status).toBe(401);
      expect((await http(d.url, 'PUT', '/v1/items/env-1', { handler: 'external' }, 'op-from-env')).status).toBe(201);
      // Set empty in the environment: the file's value counts.
      expect((await http(d.url, 'POST', '/v1/items/env-1/tickets', { userId: 'u1' }, 'svc-from-file')).status).toBe(202);

      const out = d.output();
      const unknown = logLines(out, 'unknown configuration variable ignored').map((l) => [l.variable, l.didYouMean]);
      expect(unknown).toEqual([
        ['FLOODGATE_CACHE_MSS', 'FLOODGATE_CACHE_MS'],
        ['FLOODGATE_OPERATR_KEYS', 'FLOODGATE_OPERATOR_KEYS'],
      ]);
      const [listening] = logLines(out, 'floodgate listening');
      expect(listening.listen).toBe(`127.0.0.1:${new URL(d.url).port}`);
      expect(listening.redis).toContain('***');
      expect(out).not.toContain('s3cret');
      expect(logLines(out, 'no keys configured; made keys for this run (development mode)')).toEqual([]);
    } finally {
      expect(await d.stop()).toBe(0);
    }
    expect(d.output()).not.toContain('s3cret');
  });

  it('makes and prints keys for a run that has none, outside production, and says it listens on every address', async () => {
    const cwd = workDir();
    const d = await startDaemonProcess(
      { REDIS_URL: redisUrl(), DATABASE_URL: db.url, FLOODGATE_REDIS_PREFIX: newPrefix(), FLOODGATE_OPERATOR_KEYS: '', FLOODGATE_SERVICE_KEYS: '', NODE_ENV: 'development' },
      { cwd },
    );
    try {
      // (Shown once it listens, just after it says so.)
      const out = await waitFor(async () => d.output(), (o) => o.includes('service key'), 10_000);
      const op = /operator key \(FLOODGATE_OPERATOR_KEYS\): (\S+)/.exec(out)?.[1];
      const svc = /service key {2}\(FLOODGATE_SERVICE_KEYS\): {2}(\S+)/.exec(out)?.[1];
      expect(op).toMatch(/^dev-op-/);
      expect(svc).toMatch(/^dev-svc-/);
      const file = readFileSync(path.join(cwd, '.floodgate/dev-keys.env'), 'utf8');
      expect(file).toContain(`OPKEY=${op}\n`);
      expect(file).toContain(`SVCKEY=${svc}\n`);
      expect((await http(d.url, 'PUT', '/v1/items/dev-1', { handler: 'external' }, op)).status).toBe(201);
      expect((await http(d.url, 'POST', '/v1/items/dev-1/tickets', { userId: 'u1' }, svc)).status).toBe(202);
      const [listening] = logLines(out, 'floodgate listening');
      expect(listening.listen).toBe(`0.0.0.0:${new URL(d.url).port}`);

      // A second start in the same folder on the same port fails, says why, stops the stores it
      // started, and leaves the running daemon's keys file alone (it wrote its own dead keys over
      // them before it failed: the quick start's curl read 401; a review).
      const second = await startDaemonProcess(
        { REDIS_URL: redisUrl(), DATABASE_URL: db.url, FLOODGATE_REDIS_PREFIX: newPrefix(), FLOODGATE_OPERATOR_KEYS: '', FLOODGATE_SERVICE_KEYS: '', NODE_ENV: 'development', PORT: new URL(d.url).port },
        { cwd },
      ).then(
        () => 'listened',
        (err: Error) => err.message,
      );
      expect(second).toMatch(/^daemon exited 1:/);
      expect(logLines(second, 'failed to start')[0]?.err).toMatch(/^cannot listen on .*\(HOST, PORT\): the port is in use/);
      expect(readFileSync(path.join(cwd, '.floodgate/dev-keys.env'), 'utf8')).toBe(file);
      expect((await http(d.url, 'GET', '/v1/items/dev-1', undefined, op)).status).toBe(200);
    } finally {
      expect(await d.stop()).toBe(0);
    }
  });

  it('refuses to start without keys when NODE_ENV=production, naming what is missing', async () => {
    const cwd = workDir();
    const started = startDaemonProcess(
      { REDIS_URL: redisUrl(), DATABASE_URL: db.url, FLOODGATE_REDIS_PREFIX: newPrefix(), FLOODGATE_OPERATOR_KEYS: 'op', FLOODGATE_SERVICE_KEYS: '', NODE_ENV: 'production' },
      { cwd },
    );
    const err = await started.then(
      (d) => (void d.stop(), null),
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/daemon exited 2/);
    expect(err?.message).toMatch(/FLOODGATE_SERVICE_KEYS: no key configured/);
    expect(err?.message).not.toMatch(/FLOODGATE_OPERATOR_KEYS: no key/);
  });
  it('refuses a store URL of another scheme at start, naming the variable (http:// was read as a unix socket, mysql:// dialled as Postgres)', async () => {
    const started = startDaemonProcess({ REDIS_URL: 'http://127.0.0.1:6379', DATABASE_URL: 'mysql://root@127.0.0.1:3306/x', FLOODGATE_REDIS_PREFIX: newPrefix() }, { cwd: workDir() });
    const err = await started.then(
      (d) => (void d.stop(), null),
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/daemon exited 2/);
    expect(err?.message).toMatch(/REDIS_URL: a redis:\/\/ or rediss:\/\/ URL/);
    expect(err?.message).toMatch(/DATABASE_URL: a postgres:\/\/ or postgresql:\/\/ URL/);
  });
  it('names a misspelt variable when the configuration is refused (its warning came only after a valid read)', async () => {
    const started = startDaemonProcess({ PORT: 'abc', FLOODGATE_CACHE_MSS: '100', FLOODGATE_REDIS_PREFIX: newPrefix() }, { cwd: workDir() });
    const err = await started.then(
      (d) => (void d.stop(), null),
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/daemon exited 2/);
    expect(err?.message).toMatch(/FLOODGATE_CACHE_MSS: not a variable floodgate knows \(ignored\); did you mean FLOODGATE_CACHE_MS\?/);
  });
  it('names the variable and says what the store answered when a store cannot be used, without a stack trace', async () => {
    const missing = new URL(db.url);
    missing.pathname = '/fg_no_such_database';
    const started = startDaemonProcess({ REDIS_URL: redisUrl(), DATABASE_URL: missing.href, FLOODGATE_REDIS_PREFIX: newPrefix(), FLOODGATE_OPERATOR_KEYS: 'op', FLOODGATE_SERVICE_KEYS: 'svc' }, { cwd: workDir() });
    const err = await started.then(
      (d) => (void d.stop(), null),
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/daemon exited 1/);
    expect(err?.message).toMatch(/Postgres at postgres:\/\/[^ ]*fg_no_such_database \(DATABASE_URL\) cannot be used: 3D000/);
    expect(err?.message).not.toMatch(/\n\s+at /);
  });
  it('stops at once on a Postgres without the TLS its URL requires (it waited 60 s for it as for one unreachable, then blamed a reset)', async () => {
    const tlsUrl = new URL(db.url);
    tlsUrl.searchParams.set('sslmode', 'require');
    const at = Date.now();
    const started = startDaemonProcess({ REDIS_URL: redisUrl(), DATABASE_URL: tlsUrl.href, FLOODGATE_REDIS_PREFIX: newPrefix(), FLOODGATE_OPERATOR_KEYS: 'op', FLOODGATE_SERVICE_KEYS: 'svc', FLOODGATE_START_WAIT_MS: '60000' }, { cwd: workDir() });
    const err = await started.then(
      (d) => (void d.stop(), null),
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/daemon exited 1/);
    expect(err?.message).toMatch(/\(DATABASE_URL\) cannot be used: SSL_NOT_SUPPORTED/);
    expect(Date.now() - at).toBeLessThan(30_000);
  });
  it('says how it is run on --help, and refuses a CORS setting that names no origin (`,` turned CORS off silently)', async () => {
    const run = (args: string[], env: Record<string, string> = {}) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        execFile(process.execPath, [builtDaemon, ...args], { env: { ...process.env, ...env }, cwd: workDir() }, (err, stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
        );
      });
    const help = await run(['--help']);
    expect(help.code).toBe(0);
    expect(help.out).toContain('reconcile [id]');
    const cors = await run([], { FLOODGATE_CORS_ORIGINS: ',' });
    expect(cors.code).toBe(2);
    expect(cors.out).toContain('FLOODGATE_CORS_ORIGINS: `*` or a comma-separated list of origins');
    // A key scope naming no service key: the key meant would use every item.
    const scope = await run([], { FLOODGATE_SERVICE_KEYS: 'app:k-app', FLOODGATE_OPERATOR_KEYS: 'k-op', FLOODGATE_KEY_SCOPES: 'ap:sku-*' });
    expect(scope.code).toBe(2);
    expect(scope.out).toContain('FLOODGATE_KEY_SCOPES names "ap"');
  });
});
