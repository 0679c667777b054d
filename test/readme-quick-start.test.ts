import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startDaemonProcess } from './support/daemon.js';
import { testDb } from './support/db.js';
import { redisUrl, testRedis } from './support/redis.js';

const { newPrefix } = testRedis();
const db = await testDb();
const cwd = mkdtempSync(path.join(os.tmpdir(), 'fg-quick-start-'));
afterAll(() => rmSync(cwd, { recursive: true, force: true }));

/** The ```sh blocks under the README's "Quick start" heading (up to the next heading of its level or above). */
function quickStartBlocks(readme: string): string[] {
  const lines = readme.split('\n');
  const start = lines.findIndex((l) => /^#+\s+Quick start\s*$/i.test(l));
  if (start < 0) return [];
  const level = lines[start].indexOf(' ');
  const rest = lines.slice(start + 1);
  const end = rest.findIndex((l) => /^#+\s/.test(l) && l.indexOf(' ') <= level);
  const section = (end < 0 ? rest : rest.slice(0, end)).join('\n');
  return [...section.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
}

describe("the README's quick start", () => {
  it('runs as written against a fresh daemon with no keys configured: every curl succeeds', { timeout: 90_000 }, async () => {
    const blocks = quickStartBlocks(readFileSync(path.resolve(import.meta.dirname, '../README.md'), 'utf8'));
    expect(blocks.join('\n')).toMatch(/curl/);
    // The test starts the daemon itself, as `npm start` would, in a fresh working directory.
    const d = await startDaemonProcess(
      { REDIS_URL: redisUrl(), DATABASE_URL: db.url, FLOODGATE_REDIS_PREFIX: newPrefix(), FLOODGATE_OPERATOR_KEYS: '', FLOODGATE_SERVICE_KEYS: '', NODE_ENV: '' },
      { cwd },
    );
    try {
      const port = new URL(d.url).port;
      const script = blocks
        .join('\n')
        .split('\n')
        .filter((l) => !/^\s*npm\s/.test(l))
        .join('\n')
        .replaceAll('localhost:8080', `127.0.0.1:${port}`);
      // Every curl must get a 2xx: an HTTP error fails it, and so the script.
      const prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body -sS "$@"; }\n';
      const run = spawnSync('bash', ['-c', prelude + script], { cwd, encoding: 'utf8', timeout: 60_000 });
      expect(run.stderr, `script:\n${script}\nstdout:\n${run.stdout}`).toBe('');
      expect(run.status).toBe(0);
      expect(run.stdout).toMatch(/"ticketId"|"state"/);
    } finally {
      expect(await d.stop()).toBe(0);
    }
  });
});
