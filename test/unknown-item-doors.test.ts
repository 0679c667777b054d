import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { http } from './support/http.js';
import { ownRedis } from './support/redis-server.js';
import { whenDone } from './support/cleanup.js';

/**
 * The doors anyone may knock on with an item id of their choosing — a proof-of-work challenge, an
 * invite's join (its item id read from claims nobody verified yet), the invite page — answer an id
 * the item set lacks without reading an item snapshot: each made-up id cost a Lua script (about
 * six Redis operations), a thousand a second from one client. The daemon runs on a Redis of this
 * test's own, so its commands can be counted.
 */
const db = await testDb();
const redis = await ownRedis();
const { daemon, define } = await inProcessDaemon({ prefix: 'fg:', databaseUrl: db.url, env: { REDIS_URL: redis.url } });
const admin = new Redis(redis.url);
whenDone(() => admin.quit().then(() => {}));

const evalshaCalls = async () => Number(/cmdstat_evalsha:calls=(\d+)/.exec(await admin.info('commandstats'))?.[1] ?? 0);

describe('an item id nobody defined, at the open doors', () => {
  it('costs no snapshot script: 404s, and not one EVALSHA per request', async () => {
    await define('real', { handler: 'external' });
    expect((await http(daemon.url, 'GET', '/v1/items/real/challenge', undefined, null)).status).toBe(200);
    const before = await evalshaCalls();
    const forged = (i: number) => `${Buffer.from(JSON.stringify({ i: `nope-${i}`, u: 'u', e: Date.now() + 60_000, n: 'x' })).toString('base64url')}.c2ln`;
    for (let i = 0; i < 60; i++) {
      expect((await http(daemon.url, 'GET', `/v1/items/nope-${i}/challenge`, undefined, null)).status).toBe(404);
      expect((await http(daemon.url, 'POST', '/v1/join', { invite: forged(i) }, null)).status).toBe(403);
      expect((await http(daemon.url, 'GET', `/join/nope-${i}`, undefined, null)).status).toBe(404);
    }
    // Before: one per request, 180. The daemon's own loops call a few on an idle item meanwhile
    // (none in a second on a quiet machine): the bound leaves a slow one two-thirds of that.
    expect((await evalshaCalls()) - before).toBeLessThan(120);
  });
});
