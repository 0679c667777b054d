import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensurePostgres } from '../src/infra/ensure-postgres.js';
import { ensureRedis } from '../src/infra/ensure-redis.js';
import { systemChanges } from '../src/infra/system-changes.js';
import { freePort } from './support/proxy.js';

const log = pino({ level: 'silent' });
const noChanges = systemChanges({ allowed: false, refusal: 'a test' });
// As root the embedded server needs the `postgres` account and a way into the temp dir, as in a zero-config start.
const asRoot = systemChanges({ allowed: true, log });
let tmp: string;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'floodgate-infra-'));
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
  await rm(tmp, { recursive: true, force: true });
});

/** A pid no process has: a child that ran and exited. */
const deadPid = () =>
  new Promise<number>((resolve) => {
    const c = spawn(process.execPath, ['-e', '0']);
    c.once('exit', () => resolve(c.pid!));
  });

describe('ensureRedis', () => {
  it('returns a configured url untouched', async () => {
    const r = await ensureRedis({ url: 'redis://example.invalid:1', dataDir: tmp, log, changes: noChanges, env: process.env });
    expect(r).toMatchObject({ url: 'redis://example.invalid:1', started: false });
    await r.stop();
  });

  it('starts redis-server on a free port, reuses it while it runs, and stops it', async () => {
    const port = await freePort();
    const dataDir = path.join(tmp, 'redis');
    const redis = await ensureRedis({ dataDir, log, changes: noChanges, port, env: process.env });
    cleanups.push(redis.stop);
    expect(redis).toMatchObject({ url: `redis://127.0.0.1:${port}`, started: true });

    const client = new Redis(redis.url, { maxRetriesPerRequest: 0 });
    expect(await client.ping()).toBe('PONG');
    expect(await client.config('GET', 'appendonly')).toEqual(['appendonly', 'yes']);
    expect(await client.config('GET', 'maxmemory-policy')).toEqual(['maxmemory-policy', 'noeviction']);
    client.disconnect();

    const again = await ensureRedis({ dataDir, log, changes: noChanges, port, env: process.env });
    expect(again).toMatchObject({ url: redis.url, started: false });

    await redis.stop();
    const after = new Redis(redis.url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    after.on('error', () => {});
    await expect(after.connect()).rejects.toThrow();
    after.disconnect();
  }, 20_000);

  it('says plainly when a file is in the way of its data directory (FLOODGATE_DATA_DIR), and starts nothing', async () => {
    const file = path.join(tmp, 'not-a-dir');
    await writeFile(file, 'x');
    const port = await freePort();
    // (Before: a bare EEXIST with a stack ended the start.)
    await expect(ensureRedis({ dataDir: path.join(file, 'redis'), log, changes: noChanges, port, env: process.env })).rejects.toMatchObject({
      name: 'SetupNeeded',
      message: expect.stringMatching(/cannot make the data directory .*not-a-dir.*\(FLOODGATE_DATA_DIR\): a file is in the way/),
    });
  });

  it('takes over, and then stops, a redis-server a daemon started that outlived it', async () => {
    // In a process group of its own, it outlives a daemon killed with its group (kill -9 -PGID):
    // used as a Redis that was running already, it was never stopped (a review).
    const port = await freePort();
    const dataDir = path.join(tmp, 'redis-orphan');
    const first = await ensureRedis({ dataDir, log, changes: noChanges, port, env: process.env });
    cleanups.push(first.stop);
    // Its daemon gone: a pid no process has (a child that ran and exited).
    const dead = await deadPid();
    const ownerFile = path.join(dataDir, 'started-by.json');
    const owner = JSON.parse(await readFile(ownerFile, 'utf8'));
    // A stale file naming a live process that is not the Redis on the port (a pid taken since): not taken over.
    await writeFile(ownerFile, JSON.stringify({ ...owner, daemonPid: dead, redisPid: process.pid }));
    expect(await ensureRedis({ dataDir, log, changes: noChanges, port, env: process.env })).toMatchObject({ started: false });
    await writeFile(ownerFile, JSON.stringify({ ...owner, daemonPid: dead }));

    const next = await ensureRedis({ dataDir, log, changes: noChanges, port, env: process.env });
    expect(next).toMatchObject({ url: first.url, started: true });
    // Another start beside the one that took it over uses it, and leaves its stop to that one (a
    // second takeover's stop took it from under the first).
    expect(await ensureRedis({ dataDir, log, changes: noChanges, port, env: process.env })).toMatchObject({ started: false });
    await next.stop();
    const after = new Redis(first.url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    after.on('error', () => {});
    await expect(after.connect()).rejects.toThrow();
    after.disconnect();
  }, 20_000);

  it('leaves the redis-server it started running while another daemon uses it; the last daemon to stop stops it', async () => {
    // Two zero-config daemons on one machine: the second uses the Redis the first started, and the
    // first's stop took it from under the second's sale.
    const port = await freePort();
    const dataDir = path.join(tmp, 'redis-shared');
    const first = await ensureRedis({ dataDir, log, changes: noChanges, port, env: process.env });
    const ownerFile = path.join(dataDir, 'started-by.json');
    const { redisPid } = JSON.parse(await readFile(ownerFile, 'utf8'));
    cleanups.push(async () => void process.kill(redisPid, 'SIGKILL'));
    const second = await ensureRedis({ dataDir, log, changes: noChanges, port, env: process.env });
    expect(second).toMatchObject({ url: first.url, started: false });
    const secondsClient = new Redis(second.url, { maxRetriesPerRequest: 0 });
    await secondsClient.ping();

    await first.stop();
    expect(await secondsClient.ping()).toBe('PONG');
    // The first daemon has exited.
    const owner = JSON.parse(await readFile(ownerFile, 'utf8'));
    await writeFile(ownerFile, JSON.stringify({ ...owner, daemonPid: await deadPid() }));
    // A third daemon, started meanwhile, takes it over (its starter gone); its stop while the
    // second is still on it leaves it too, and it exits.
    const third = await ensureRedis({ dataDir, log, changes: noChanges, port, env: process.env });
    expect(third.started).toBe(true);
    await third.stop();
    expect(await secondsClient.ping()).toBe('PONG');
    await writeFile(ownerFile, JSON.stringify({ ...owner, daemonPid: await deadPid() }));

    secondsClient.disconnect();
    await second.stop();
    const after = new Redis(first.url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
    after.on('error', () => {});
    await expect(after.connect()).rejects.toThrow();
    after.disconnect();
  }, 20_000);
});

describe('ensurePostgres', () => {
  it('returns a configured url untouched', async () => {
    const pg = await ensurePostgres({ url: 'postgres://u:p@example.invalid/db', dataDir: tmp, log, changes: noChanges });
    expect(pg).toMatchObject({ url: 'postgres://u:p@example.invalid/db', started: false });
  });

  it('says plainly when a file is in the way of its data directory, as root too', async () => {
    const file = path.join(tmp, 'not-a-dir-pg');
    await writeFile(file, 'x');
    const port = await freePort();
    // (As root the run's preparation made the directory first, and ended the start with a bare EEXIST.)
    await expect(ensurePostgres({ dataDir: path.join(file, 'pg'), log, changes: asRoot, port })).rejects.toMatchObject({
      name: 'SetupNeeded',
      message: expect.stringMatching(/cannot make the data directory .*not-a-dir-pg.*FLOODGATE_DATA_DIR/),
    });
  });

  it('initialises, serves, reuses a running server and keeps data across restarts', async () => {
    const port = await freePort();
    const dataDir = path.join(tmp, 'pg');

    const first = await ensurePostgres({ dataDir, log, port, database: 'infra_test', changes: asRoot });
    cleanups.push(first.stop);
    expect(first).toMatchObject({ url: `postgres://postgres:postgres@127.0.0.1:${port}/infra_test`, started: true });
    let sql = postgres(first.url, { max: 1, onnotice: () => {} });
    expect(await sql`select 1 as one`).toEqual([{ one: 1 }]);
    await sql`create table kept (id int primary key)`;
    await sql`insert into kept values (42)`;
    await sql.end();

    const reused = await ensurePostgres({ dataDir, log, port, database: 'infra_test', changes: asRoot });
    expect(reused).toMatchObject({ url: first.url, started: false });

    await first.stop();

    const second = await ensurePostgres({ dataDir, log, port, database: 'infra_test', changes: asRoot });
    cleanups.push(second.stop);
    expect(second.started).toBe(true);
    sql = postgres(second.url, { max: 1, onnotice: () => {} });
    expect(await sql`select id from kept`).toEqual([{ id: 42 }]);
    await sql.end();
    await second.stop();
  }, 30_000);

  it('leaves the Postgres it started running while another daemon uses it; the last daemon to stop stops it', async () => {
    const port = await freePort();
    const dataDir = path.join(tmp, 'pg-shared');
    const first = await ensurePostgres({ dataDir, log, port, database: 'shared_test', changes: asRoot });
    cleanups.push(first.stop);
    const second = await ensurePostgres({ dataDir, log, port, database: 'shared_test', changes: asRoot });
    expect(second).toMatchObject({ url: first.url, started: false });
    const secondsPool = postgres(second.url, { max: 1, onnotice: () => {} });
    await secondsPool`select 1`;

    await first.stop();
    expect(await secondsPool`select 2 as two`).toEqual([{ two: 2 }]);
    // A third daemon's stop while the second is still on it leaves it too.
    await (await ensurePostgres({ dataDir, log, port, database: 'shared_test', changes: asRoot })).stop();
    expect(await secondsPool`select 3 as three`).toEqual([{ three: 3 }]);

    await secondsPool.end();
    await second.stop();
    const after = postgres(first.url, { max: 1, connect_timeout: 2, onnotice: () => {} });
    await expect(after`select 1`).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await after.end();
  }, 40_000);
});
