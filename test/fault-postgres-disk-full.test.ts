import { describe, expect, it } from 'vitest';
import { inProcessDaemon, recordingLogger, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { joinAll, userIds } from './support/joins.js';
import { testRedis } from './support/redis.js';

/**
 * Postgres's disk full: it answers, its sessions are writable by their own word, and every sale's
 * insert fails "could not extend file" (SQLSTATE 53100). Played by a trigger on the orders table
 * that raises what Postgres raises then. The probe that ends a pause asks whether a session may
 * write, which said yes at once: the sale was tried again 250 ms later, four times a second, each
 * time logged as a pause and a resume (a review: 83 pairs in 22 s), the items read `open` now and
 * then, and /readyz said ready throughout.
 */
const { newPrefix } = testRedis();
const db = await testDb();
const logs = recordingLogger('debug', 50_000);
const { call } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url, log: logs.log, env: { FLOODGATE_JOB_BACKOFF_MS: '50' } });

async function diskFull() {
  await db.sql.unsafe(`
    create table disk_full (on_ boolean);
    insert into disk_full values (true);
    create function disk_full_now() returns trigger language plpgsql as $$
    begin
      if exists (select 1 from disk_full) then
        raise exception 'could not extend file "base/16384/16400": No space left on device' using errcode = '53100';
      end if;
      return null;
    end $$;
    create trigger disk_full before insert on orders for each statement execute function disk_full_now();`);
}
const diskFreed = () => db.sql`delete from disk_full`;
const count = (text: string, what: RegExp) => text.split('\n').filter((l) => what.test(l)).length;

describe("Postgres's disk full mid-sale", () => {
  it('pauses the sale, backs off its tries, says why on /readyz, and sells on once there is room', { timeout: 90_000 }, async () => {
    const stock = 10;
    expect((await call('PUT', '/v1/items/full', { handler: 'seckill', config: { stock }, gate: { mode: 'closed' } })).status).toBe(201);
    const ids = (await joinAll((u) => call('POST', '/v1/items/full/tickets', { userId: u }, SVC), userIds(0, 30))).map((r) => r.body.ticketId as string);
    const views = () => Promise.all(ids.map((id) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body)));
    await diskFull();
    expect((await call('PATCH', '/v1/items/full/gate', { mode: 'manual', rate: 5 })).status).toBe(200);

    const ready = await waitFor(() => call('GET', '/readyz', undefined, null), (r) => r.status === 503, 20_000);
    expect(ready.body).toMatchObject({ checks: { postgres: 'fail' }, error: { message: expect.stringMatching(/disk full \(SQLSTATE 53100\)/) } });
    const from = Date.now();
    // Six seconds of a full disk: tries of sales back off (250 ms, 0.5, 1, 2, 4 s), the item
    // reads paused at every look, nothing fails.
    const seen: string[] = [];
    for (const end = Date.now() + 6000; Date.now() < end; await new Promise((r) => setTimeout(r, 300))) {
      seen.push((await call('GET', '/v1/items/full/status', undefined, SVC)).body.state);
      expect((await call('GET', '/readyz', undefined, null)).status).toBe(503);
    }
    const to = Date.now();
    const lines = logs.lines().split('\n').filter((l) => l.startsWith('{')).map((l) => ({ l, t: Date.parse(JSON.parse(l).time) as number })).filter((x) => x.t >= from && x.t <= to);
    const during = lines.map((x) => x.l).join('\n');
    const at = (what: RegExp) => lines.filter((x) => what.test(x.l)).map((x) => x.t);
    const tries = at(/sales are tried again|sales resume/);
    const refusals = at(/postgres refuses writes for want of a resource/);
    // Backed off: 0.25 s, 0.5, 1, 2, 4 (before: a try every 250 ms).
    expect(tries.length, during).toBeLessThanOrEqual(5);
    // And each try is one: the sale is admitted and refused at once (it was held back by the
    // refusal's own mark until twice the wait had passed, and recovery took up to 16 s, not 8).
    for (const t of tries.slice(0, -1)) expect(refusals.find((r) => r >= t)! - t, during).toBeLessThan(900);
    expect(seen.filter((s) => s !== 'paused'), JSON.stringify(seen)).toEqual([]);
    expect((await views()).filter((v) => v.state === 'failed' || v.state === 'succeeded')).toEqual([]);

    await diskFreed();
    const ended = await waitFor(views, (vs) => vs.every((v) => v.state === 'succeeded' || v.state === 'rejected'), 30_000);
    expect(ended.filter((v) => v.state === 'succeeded')).toHaveLength(stock);
    expect((await db.sql`select user_id from orders where item_id = 'full'`).length).toBe(stock);
    await waitFor(() => call('GET', '/readyz', undefined, null), (r) => r.status === 200, 20_000);
  });
});
