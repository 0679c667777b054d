import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { inProcessDaemon, recordingLogger, SVC } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { joinAll, userIds } from './support/joins.js';
import { ownRedis } from './support/redis-server.js';
import { expectSoldExactly } from './support/sale-checks.js';

/**
 * A managed Redis's restricted user: `+@all -@dangerous` refuses INFO (and more), as cloud
 * services' default users do. BullMQ reads the server's version with INFO at each connection, and
 * refused, its worker looped without yielding: the daemon answered nothing after `floodgate
 * listening`, ignored SIGTERM and grew ~13 MB a second (a review). It runs now, says what it cannot
 * see (Redis's memory and eviction policy), and sells right.
 */
const db = await testDb();
const redis = await ownRedis();
const admin = new Redis(redis.url);
afterAll(() => admin.disconnect());
await admin.call('ACL', 'SETUSER', 'shop', 'on', '>pw', '~*', '&*', '+@all', '-@dangerous');
const url = new URL(redis.url);
url.username = 'shop';
url.password = 'pw';
const logs = recordingLogger('warn', 200);
const { call } = await inProcessDaemon({ prefix: 'fg:', databaseUrl: db.url, log: logs.log, env: { REDIS_URL: url.toString() } });
// And one whose user may not read TIME: it ran on its machine's clock without a word.
await admin.call('ACL', 'SETUSER', 'notime', 'on', '>pw', '~*', '&*', '+@all', '-time');
const noTime = new URL(redis.url);
noTime.username = 'notime';
noTime.password = 'pw';
const timeLogs = recordingLogger('warn', 200);
await inProcessDaemon({ prefix: 'fh:', databaseUrl: db.url, log: timeLogs.log, env: { REDIS_URL: noTime.toString() } });

describe("a Redis user INFO is refused to (no '@dangerous')", () => {
  it('runs a sale right, answers /readyz, and says what it cannot see', { timeout: 60_000 }, async () => {
    expect((await call('GET', '/readyz', undefined, null)).status, logs.lines()).toBe(200);
    expect(logs.lines()).toMatch(/redis refuses INFO to the daemon's user/);
    const stock = 5;
    await call('PUT', '/v1/items/ro', { handler: 'seckill', config: { stock }, gate: { mode: 'manual', rate: 100 } });
    const joins = await joinAll((u) => call('POST', '/v1/items/ro/tickets', { userId: u }, SVC), userIds(0, 12));
    await expectSoldExactly(db.sql, 'ro', stock, joins.map((r) => r.body.ticketId as string), (id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body));
  });

  it("says so when Redis's TIME cannot be read", () => {
    expect(timeLogs.lines()).toMatch(/redis's TIME could not be read/);
  });
});
