import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';

const { newPrefix } = testRedis();
const db = await testDb();
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url });

describe('a pre-queue nobody joined', () => {
  it('is drawn at its opening all the same: its status says open and reveals its seed', { timeout: 30_000 }, async () => {
    const opensAt = new Date(Date.now() + 1500).toISOString();
    expect((await call('PUT', '/v1/items/pq-empty', { handler: 'external', opensAt, preQueue: { fromMs: 60_000 } })).status).toBe(201);
    const status = () => call('GET', '/v1/items/pq-empty/status', undefined, SVC).then((r) => r.body);
    expect((await status()).state).toBe('scheduled');
    const after = await waitFor(status, (b) => b.state !== 'scheduled', 15_000);
    expect(after.state, JSON.stringify(after)).toBe('open');
    const item = (await call('GET', '/v1/items/pq-empty')).body;
    expect(item.preQueue).toMatchObject({ seed: expect.stringMatching(/^[0-9a-f]{64}$/), size: 0 });
  });
});
