import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { builtDaemon, processEnv } from './support/daemon.js';
import { trackChild } from './support/children.js';
import { waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { freePort } from './support/proxy.js';
import { testRedis } from './support/redis.js';

/**
 * The daemon's log output refusing every write (/dev/full: ENOSPC, as a full disk under the log
 * file). pino re-emitted the failed write as an uncaught error; the exit on it logged `fatal`,
 * whose synchronous flush sonic-boom retried every 100 ms for as long as the write failed: the
 * daemon answered nothing, not even /healthz, until the disk had room again (a review: 11 minutes).
 */
const { newPrefix } = testRedis();
const db = await testDb();

function daemonLoggingToFullDisk(env: Record<string, string>) {
  const full = openSync('/dev/full', 'w');
  try {
    const proc = spawn(process.execPath, [builtDaemon], { env: { ...process.env, LOG_LEVEL: 'info', ...env }, stdio: ['ignore', full, 'ignore'] });
    trackChild(proc, 'floodgate.mjs');
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
    return { proc, exited };
  } finally {
    closeSync(full);
  }
}

describe('a daemon whose log output is a full disk', () => {
  it('serves, sells and stops as with a log it can write', { timeout: 60_000 }, async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const { proc, exited } = daemonLoggingToFullDisk(processEnv(db.url, newPrefix(), { PORT: String(port), HOST: '127.0.0.1' }));
    try {
      const health = await waitFor(() => fetch(`${url}/healthz`).then((r) => r.status, () => 0), (s) => s === 200 || proc.exitCode !== null, 30_000);
      expect(health).toBe(200);
      const put = await fetch(`${url}/v1/items/full`, { method: 'PUT', headers: { authorization: 'Bearer op', 'content-type': 'application/json' }, body: JSON.stringify({ handler: 'seckill', config: { stock: 3 } }) });
      expect(put.status).toBe(201);
      for (const u of ['a', 'b', 'c', 'd']) {
        const join = await fetch(`${url}/v1/items/full/tickets`, { method: 'POST', headers: { authorization: 'Bearer svc', 'content-type': 'application/json' }, body: JSON.stringify({ userId: u }) });
        expect(join.status).toBe(202);
      }
      await waitFor(() => db.sql`select count(*)::int as n from orders where item_id = 'full'`, (rows) => rows[0].n === 3, 20_000);
      proc.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
  });

  it('exits on a start that fails (its last word, `fatal`, is not waited on for ever)', { timeout: 60_000 }, async () => {
    const closed = await freePort();
    const { exited } = daemonLoggingToFullDisk(processEnv(db.url, newPrefix(), { REDIS_URL: `redis://127.0.0.1:${closed}`, FLOODGATE_START_WAIT_MS: '300', PORT: '0' }));
    expect(await exited).toBe(1);
  });
});
