import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { trackChild } from './support/children.js';
import { builtDaemon } from './support/daemon.js';
import { testDb } from './support/db.js';
import { http } from './support/http.js';
import { redisUrl, testRedis } from './support/redis.js';

/**
 * The daemon forked by a node:cluster parent that is not its own (PM2's cluster mode does this) is
 * a daemon of its own: it reads its `.env` as when started directly. It was taken for a worker of
 * its own FLOODGATE_PROCESSES group, which takes its configuration from its primary and reads no
 * file: keys kept in `.env` were unknown, every call 401.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('a daemon forked by another node:cluster parent', () => {
  it('reads its .env (keys kept there work)', { timeout: 60_000 }, async () => {
    const cwd = mkdtempSync(path.join(os.tmpdir(), 'fg-cluster-parent-'));
    dirs.push(cwd);
    writeFileSync(path.join(cwd, '.env'), `FLOODGATE_SERVICE_KEYS=svc-env\nFLOODGATE_OPERATOR_KEYS=op-env\nFLOODGATE_REDIS_PREFIX=${newPrefix()}\n`);
    // (A file, not `-e`: a forked worker inherits the parent's execArgv, and ran the `-e` code.)
    writeFileSync(path.join(cwd, 'parent.mjs'), `import cluster from 'node:cluster';\ncluster.setupPrimary({ exec: ${JSON.stringify(builtDaemon)} });\ncluster.fork();\n`);
    const parent = spawn(process.execPath, [path.join(cwd, 'parent.mjs')], {
      cwd,
      env: { ...process.env, PORT: '0', LOG_LEVEL: 'info', REDIS_URL: redisUrl(), DATABASE_URL: db.url },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    trackChild(parent, 'cluster parent');
    let out = '';
    parent.stdout!.on('data', (d) => (out += d));
    parent.stderr!.on('data', (d) => (out += d));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no start:\n${out}`)), 30_000);
        parent.stdout!.on('data', () => {
          const m = /"url":"(http:\/\/127\.0\.0\.1:\d+)".*"msg":"floodgate listening"/.exec(out);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]);
          }
        });
      });
      expect((await http(url, 'PUT', '/v1/items/pm', { handler: 'external', gate: { mode: 'closed' } }, 'op-env')).status).toBe(201);
      expect((await http(url, 'POST', '/v1/items/pm/tickets', { userId: 'u1' }, 'svc-env')).status).toBe(202);
    } finally {
      // The parent and the daemon it forked, as a group.
      const exited = new Promise((r) => parent.once('exit', r));
      process.kill(-parent.pid!, 'SIGKILL');
      await exited;
    }
  });
});
