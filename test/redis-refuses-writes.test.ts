import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { ownRedis } from './support/redis-server.js';

/**
 * Redis answering and refusing every write (MISCONF: its snapshot or AOF cannot be written, a
 * full disk). Played with a snapshot whose file name a folder has taken. A review saw `/readyz`
 * say "Not answering: redis" and a waiting ticket read position 17, ETA 17 s, unchanged for 13 s
 * while nothing moved, the item `open`.
 */
const db = await testDb();
// (Its snapshot file set at run time: a protected setting.)
const redis = await ownRedis({ args: ['--enable-protected-configs', 'yes'] });
const direct = new Redis(redis.url);
afterAll(() => direct.disconnect());
const { call, define } = await inProcessDaemon({ prefix: 'fg:', databaseUrl: db.url, env: { REDIS_URL: redis.url } });

const bgsave = async (ok: boolean) => {
  await direct.bgsave();
  await waitFor(() => direct.info('persistence'), (i) => !/rdb_bgsave_in_progress:1/.test(i) && i.includes(`rdb_last_bgsave_status:${ok ? 'ok' : 'err'}`), 10_000);
};

describe('a Redis that refuses writes (MISCONF)', () => {
  it('reads as paused to waiting users, says why on /readyz, and the sale goes on once it takes writes', { timeout: 60_000 }, async () => {
    await define('mc', { handler: 'external', gate: { mode: 'manual', rate: 1 } });
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push((await call('POST', '/v1/items/mc/tickets', { userId: `m${i}` }, SVC)).body.ticketId as string);
    const last = ids[ids.length - 1];
    await waitFor(() => call('GET', `/v1/tickets/${last}`, undefined, null), (r) => r.body.etaMs > 0);

    // Snapshots on, into a file name a folder has taken: the snapshot fails and Redis refuses writes.
    const [, home] = (await direct.config('GET', 'dir')) as string[];
    mkdirSync(path.join(home, 'taken'));
    await direct.config('SET', 'save', '3600 1');
    await direct.config('SET', 'dbfilename', 'taken');
    await bgsave(false);
    await expect(direct.set('x', '1')).rejects.toThrow(/^MISCONF/);

    const ready = await waitFor(() => call('GET', '/readyz', undefined, null), (r) => r.status === 503 && /refuses writes/.test(r.body.error?.message ?? ''), 10_000);
    expect(ready.body.error.message).toMatch(/^redis refuses writes: MISCONF/);
    const paused = await waitFor(() => call('GET', `/v1/tickets/${last}`, undefined, null), (r) => r.body.reason === 'paused', 10_000);
    expect(paused.body).toMatchObject({ state: 'waiting', reason: 'paused' });
    expect(paused.body.etaMs).toBeUndefined();
    expect((await call('GET', '/v1/items/mc/status', undefined, SVC)).body.state).toBe('paused');

    await direct.config('SET', 'dbfilename', 'dump.rdb');
    await bgsave(true);
    await waitFor(() => call('GET', '/readyz', undefined, null), (r) => r.status === 200, 10_000);
    const moving = await waitFor(() => call('GET', `/v1/tickets/${last}`, undefined, null), (r) => r.body.reason !== 'paused', 10_000);
    expect(moving.body.reason).toBeUndefined();
  });
});
