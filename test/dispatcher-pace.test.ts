import { describe, expect, it } from 'vitest';
import { itemKeys } from '../src/redis/keys.js';
import { recordingDownstream } from './support/downstream.js';
import { inProcessDaemon, SVC } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { joinAll, retrying503, userIds } from './support/joins.js';
import { testRedis } from './support/redis.js';

/**
 * The dispatcher delivers a manual gate's rate once joins stop. Between about 5/s and 25/s the
 * pace's burst is one ticket (max(1, 0.1 × rate), whole tickets), and the dispatcher, with nothing
 * to wake it, came back every ~105 ms: each admission waited for the first visit after it was due,
 * and that time was lost (7/s delivered 4.1-6.7/s, 15/s 7.4-13.3/s). It now comes back when the
 * pace lets the next ticket in (admit-12.lua's code 2).
 */
const { redis, newPrefix } = testRedis();
const prefix = newPrefix();
const db = await testDb();
const { call: callOnce } = await inProcessDaemon({ prefix, databaseUrl: db.url });
const call = retrying503(callOnce);
const { url } = await recordingDownstream((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'));

const admissions = async (itemId: string) => Number((await redis.hget(itemKeys(prefix, itemId).ctr, 'admissions')) ?? 0);

describe('the dispatcher under a manual pace', () => {
  // One item alone: another item's admissions wake the dispatcher too (their settles), and hid
  // the loss on the old code (8/s beside 15/s delivered 7.5-7.7/s, alone 5.0/s). 15/s, not 8/s:
  // its burst of 1.5 tickets lets an admission come up to 33 ms late without loss, so the bound
  // holds on a machine running the suite (the old code delivered 8.3/s). At 8/s the burst is one
  // ticket and every ms a wake comes late is lost: 7.7/s on a quiet machine, 6.2/s with the whole
  // gate's tests running beside it (docs/design-notes.md, the gate).
  it.each([[15, 4000]])('admits at least 0.9 of %d/s from a full line with no new joins', { timeout: 60_000 }, async (rate, ms) => {
    const id = `paced-${rate}`;
    // The line fills behind a closed gate (more than the run can admit), then opens.
    await call('PUT', `/v1/items/${id}`, { handler: 'webhook', config: { url, timeoutMs: 5000 }, gate: { mode: 'closed' } });
    await joinAll((userId) => call('POST', `/v1/items/${id}/tickets`, { userId }, SVC), userIds(0, Math.ceil((rate * (ms + 1500)) / 1000) + 10, id));
    expect((await call('PATCH', `/v1/items/${id}/gate`, { mode: 'manual', rate })).status).toBe(200);
    // Counted from the item's own counter once the gate is open and no joins come: a perfect pace
    // admits rate × t (± 1 at the edges); 0.9 of it leaves a busy machine 0.3-0.4 s.
    await new Promise((r) => setTimeout(r, 500));
    // Time this process was not running (the event loop held, or the process not scheduled: other
    // test files beside it on two cores) beyond the 33 ms late a paced admission is credited
    // (_gate.lua) is time no dispatcher could admit in, and is left out of the expectation: a
    // clean-clone run delivered 13.48/s here, 0.4 admissions under the bound. (The code before
    // the fix lost its time on a quiet machine, with nothing to leave out.)
    let last = performance.now();
    let stalledMs = 0;
    const watch = setInterval(() => {
      const now = performance.now();
      if (now - last > 50) stalledMs += now - last - 33;
      last = now;
    }, 5);
    const t0 = Date.now();
    const before = await admissions(id);
    await new Promise((r) => setTimeout(r, ms));
    const got = (await admissions(id)) - before;
    const s = (Date.now() - t0) / 1000;
    clearInterval(watch);
    await call('PATCH', `/v1/items/${id}/gate`, { mode: 'closed' });
    const running = s - stalledMs / 1000;
    expect(got, `${got} admitted in ${s} s (${Math.round(stalledMs)} ms stalled): ${(got / running).toFixed(2)}/s`).toBeGreaterThanOrEqual(0.9 * rate * running);
  });
});
