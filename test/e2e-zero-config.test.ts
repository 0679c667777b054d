import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startDaemonProcess } from './support/daemon.js';
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
});
