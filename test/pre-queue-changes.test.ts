import { describe, expect, it } from 'vitest';
import { SERVICE, testApp } from './support/app.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { joinAll } from './support/joins.js';
import { testRedis } from './support/redis.js';
import { itemKeys } from '../src/redis/keys.js';

const { newPrefix } = testRedis();
const db = await testDb();
const { call, define } = await inProcessDaemon({ prefix: newPrefix(), databaseUrl: db.url });
const t = await testApp();

const users = (tag: string, n: number) => Array.from({ length: n }, (_, i) => `${tag}-${i}`);
const joinUsers = async (itemId: string, names: string[]) =>
  (await joinAll((userId) => call('POST', `/v1/items/${itemId}/tickets`, { userId }, SVC), names)).map((r) => r.body.ticketId as string);
const read = (ticketId: string) => call('GET', `/v1/tickets/${ticketId}`, undefined, null).then((r) => r.body);
const pull = async (itemId: string, max: number) => (await call('POST', `/v1/items/${itemId}/pull`, { max }, SVC)).body.tickets as { ticketId: string; userId: string }[];
const inFuture = (ms: number) => new Date(Date.now() + ms).toISOString();

describe('pre-queue and abandonment changed on a live item', () => {
  it('refuses (409) to open again with its pre-queue an item closed before its draw; its tickets stay cancelled', { timeout: 30_000 }, async () => {
    const def = { handler: 'external', opensAt: inFuture(60_000), preQueue: { fromMs: 120_000 }, gate: { mode: 'manual' } };
    await define('pq-reopen', def);
    const closed = await joinUsers('pq-reopen', users('a', 10));
    // A replacement before the draw, with nothing ended, is an ordinary change.
    expect((await call('PUT', '/v1/items/pq-reopen', def)).status).toBe(200);
    expect((await call('DELETE', '/v1/items/pq-reopen')).body.counts.cancelled).toBe(10);

    // Its draw would shuffle the ended seqs into the line: some admitted (their users told
    // `cancelled`), and waiting tickets put behind the head, never admitted.
    const again = await call('PUT', '/v1/items/pq-reopen', def);
    expect([again.status, again.body.error?.code]).toEqual([409, 'conflict']);
    expect((await call('GET', '/v1/items/pq-reopen')).body).toMatchObject({ state: 'closed', preQueue: { fromMs: 120_000 } });

    // Opened again without it, the line takes new tickets in order and never the ended ones.
    expect((await call('PUT', '/v1/items/pq-reopen', { handler: 'external', gate: { mode: 'manual' } })).status).toBe(200);
    const fresh = await joinUsers('pq-reopen', ['n-0', 'n-1']);
    expect((await pull('pq-reopen', 100)).map((x) => x.ticketId)).toEqual(fresh);
    for (const v of await Promise.all(closed.map(read))) expect([v.state, v.outcome]).toEqual(['cancelled', { status: 'cancelled', reason: 'item_closed' }]);
  });

  it('refuses (409) adding a pre-queue to an item whose line has had tickets; the line goes on in join order', { timeout: 30_000 }, async () => {
    await define('pq-add', { handler: 'external', gate: { mode: 'manual' } });
    const ids = await joinUsers('pq-add', users('b', 4));
    expect((await pull('pq-add', 1)).map((x) => x.ticketId)).toEqual(ids.slice(0, 1));
    // Drawn from seq 1, the pre-queue would put waiting tickets at places the head has passed.
    const r = await call('PUT', '/v1/items/pq-add', { handler: 'external', opensAt: inFuture(-1000), preQueue: { fromMs: 60_000 }, gate: { mode: 'manual' } });
    expect([r.status, r.body.error?.code]).toEqual([409, 'conflict']);
    expect((await call('GET', '/v1/items/pq-add')).body).toMatchObject({ state: 'open', preQueue: null, opensAt: null });
    expect((await pull('pq-add', 100)).map((x) => x.ticketId)).toEqual(ids.slice(1));
    // An item whose line never had a ticket may still take one.
    await define('pq-add-empty', { handler: 'external' });
    expect((await call('PUT', '/v1/items/pq-add-empty', { handler: 'external', opensAt: inFuture(60_000), preQueue: { fromMs: 60_000 } })).status).toBe(200);
  });

  it('admits no ticket a close ended, even one a draw put after the head (a redefinition that raced the close)', async () => {
    const opensAt = Date.now() + 10 * 60_000;
    const clock = t.manualClock(opensAt - 5 * 60_000);
    const { call: appCall, queue, prefix } = t.build({ clock });
    const item = t.uniqueItem();
    expect((await appCall('PUT', `/v1/items/${item}`, { handler: 'external', opensAt: new Date(opensAt).toISOString(), preQueue: { fromMs: 15 * 60_000 }, gate: { mode: 'manual' } })).status).toBe(201);
    const join = async (u: string) => (await appCall('POST', `/v1/items/${item}/tickets`, { userId: u }, SERVICE)).body.ticketId as string;
    const ended: string[] = [];
    for (const u of users('c', 10)) ended.push(await join(u));
    await appCall('DELETE', `/v1/items/${item}`);
    // Reopened with its pre-queue by a daemon of a version before define-5.lua refused it (a
    // rolling upgrade; this one refuses it, below): the meta fields that define wrote then. Only
    // admission can stop the ended tickets now.
    const { def } = (await queue.items.item(item, { fresh: true }))!.snap;
    await expect(queue.definitions.define(def, null, { reopen: true })).rejects.toMatchObject({ code: 'conflict' });
    await t.redis.hdel(itemKeys(prefix, item).meta, 'closed', 'endedAt');
    queue.items.invalidate(item);
    const later = new Set<string>();
    for (const u of users('d', 10)) later.add(await join(u));

    clock.set(opensAt + 1);
    const pulled = (await appCall('POST', `/v1/items/${item}/pull`, { max: 1000 }, SERVICE)).body.tickets.map((x: { ticketId: string }) => x.ticketId);
    // The draw put seqs 1..20 in a random order: those it put behind the head stay waiting (the
    // catalog's refusal is what prevents that), but of the rest only the new tickets are admitted.
    expect(pulled.length).toBeGreaterThan(0);
    expect(pulled.filter((id: string) => !later.has(id))).toEqual([]);
    for (const id of ended) expect((await appCall('GET', `/v1/tickets/${id}`, undefined, null)).body.state).toBe('cancelled');
    expect((await appCall('GET', `/v1/items/${item}`)).body.counts).toMatchObject({ cancelled: 10, admitted: pulled.length });
  });

  it('refuses a pre-queue in the define itself, not only in the check before it: a join between the two cannot be stranded', async () => {
    const { queue } = t.build();
    const item = t.uniqueItem();
    const plain = { itemId: item, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' } as const;
    await queue.definitions.define(plain, { mode: 'manual', rate: null, maxInFlight: null }, { reopen: false });
    // The catalog's check read the line empty; this join came before the define.
    await queue.tickets.join(item, 'raced', null);
    const withPreQueue = { ...plain, opensAt: Date.now() + 60_000, preQueueFromMs: 60_000 };
    await expect(queue.definitions.define(withPreQueue, null, { reopen: false })).rejects.toMatchObject({ code: 'conflict' });
    expect((await queue.items.item(item, { fresh: true }))!.snap.draw).toBeNull();
    // An item whose line never had a ticket takes one.
    const empty = t.uniqueItem();
    await queue.definitions.define({ ...plain, itemId: empty }, null, { reopen: false });
    await queue.definitions.define({ ...withPreQueue, itemId: empty }, null, { reopen: false });
    expect((await queue.items.item(empty, { fresh: true }))!.snap.draw).not.toBeNull();
  });

  it('refuses (409) removing a pre-queue not drawn yet, or moving its draw, once tickets joined for it; its draw stays as shown', async () => {
    const opensAt = Date.now() + 10 * 60_000;
    const clock = t.manualClock(opensAt - 5 * 60_000);
    const { call: appCall } = t.build({ clock });
    const item = t.uniqueItem();
    const def = { handler: 'external', opensAt: new Date(opensAt).toISOString(), preQueue: { fromMs: 15 * 60_000 }, gate: { mode: 'manual' } };
    // An item nobody joined yet may lose its pre-queue, or move its draw, and take it back.
    expect((await appCall('PUT', `/v1/items/${item}`, def)).status).toBe(201);
    expect((await appCall('PUT', `/v1/items/${item}`, { ...def, opensAt: new Date(opensAt + 60_000).toISOString() })).status).toBe(200);
    expect((await appCall('PUT', `/v1/items/${item}`, { handler: 'external', opensAt: def.opensAt, gate: { mode: 'manual' } })).status).toBe(200);
    expect((await appCall('PUT', `/v1/items/${item}`, def)).status).toBe(200);
    const seedHash = (await appCall('GET', `/v1/items/${item}`)).body.preQueue.seedHash as string;
    const ids: string[] = [];
    for (const u of users('h', 5)) ids.push((await appCall('POST', `/v1/items/${item}/tickets`, { userId: u }, SERVICE)).body.ticketId);
    // Those users were shown a draw at opensAt with this seed's hash: without the pre-queue the
    // line ran in join order and the seed was never revealed.
    for (const change of [
      { handler: 'external', opensAt: def.opensAt, gate: { mode: 'manual' } },
      { ...def, preQueue: null },
      { ...def, opensAt: new Date(opensAt + 60_000).toISOString() },
      { ...def, opensAt: new Date(opensAt - 60_000).toISOString() },
    ]) {
      const r = await appCall('PUT', `/v1/items/${item}`, change);
      expect([r.status, r.body.error?.code], JSON.stringify(change)).toEqual([409, 'conflict']);
    }
    // Another window for joins (fromMs) moves no draw; the same definition is an ordinary change.
    expect((await appCall('PUT', `/v1/items/${item}`, { ...def, preQueue: { fromMs: 20 * 60_000 } })).status).toBe(200);
    expect((await appCall('PUT', `/v1/items/${item}`, def)).status).toBe(200);
    expect((await appCall('GET', `/v1/items/${item}`)).body).toMatchObject({ opensAt: def.opensAt, preQueue: { fromMs: 15 * 60_000, seedHash } });
    // The draw comes at opensAt over every ticket, and reveals the seed.
    clock.set(opensAt + 1);
    const pulled = (await appCall('POST', `/v1/items/${item}/pull`, { max: 100 }, SERVICE)).body.tickets.map((x: { ticketId: string }) => x.ticketId);
    expect([...pulled].sort()).toEqual([...ids].sort());
    expect((await appCall('GET', `/v1/items/${item}`)).body.preQueue).toMatchObject({ seedHash, size: 5, seed: expect.any(String) });
    // Drawn, it may go (the drawn order stays: below).
    expect((await appCall('PUT', `/v1/items/${item}`, { handler: 'external', opensAt: def.opensAt, gate: { mode: 'manual' } })).status).toBe(200);
  });

  it('refuses removing an awaited pre-queue in the define itself, not only in the check before it', async () => {
    const { queue } = t.build();
    const item = t.uniqueItem();
    const withPreQueue = { itemId: item, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: Date.now() + 60_000, closesAt: null, rejoin: 'any', preQueueFromMs: 120_000 } as const;
    await queue.definitions.define(withPreQueue, { mode: 'manual', rate: null, maxInFlight: null }, { reopen: false });
    // The catalog's check read the line empty; this join came before the define.
    await queue.tickets.join(item, 'raced', null);
    await expect(queue.definitions.define({ ...withPreQueue, preQueueFromMs: null }, null, { reopen: false })).rejects.toMatchObject({ code: 'conflict' });
    await expect(queue.definitions.define({ ...withPreQueue, opensAt: withPreQueue.opensAt + 1000 }, null, { reopen: false })).rejects.toMatchObject({ code: 'conflict' });
    const { snap } = (await queue.items.item(item, { fresh: true }))!;
    expect([snap.def.preQueueFromMs, snap.def.opensAt, snap.draw?.drawn]).toEqual([120_000, withPreQueue.opensAt, false]);
    await queue.definitions.define({ ...withPreQueue, preQueueFromMs: 60_000 }, null, { reopen: false });
  });

  it('tells the pre-queued tickets of an item closed before its draw that they are cancelled, not awaiting the draw', { timeout: 30_000 }, async () => {
    await define('pq-close', { handler: 'external', opensAt: inFuture(3_600_000), preQueue: { fromMs: 7_200_000 } });
    const ids = await joinUsers('pq-close', users('e', 3));
    expect((await read(ids[0])).position).toBeNull();
    expect((await call('DELETE', '/v1/items/pq-close')).body.counts).toMatchObject({ waiting: 0, cancelled: 3 });
    // Twice: the second read of a ticket is answered from the cached view alone.
    for (let round = 0; round < 2; round++) {
      for (const v of await Promise.all(ids.map(read))) {
        expect([v.state, v.outcome]).toEqual(['cancelled', { status: 'cancelled', reason: 'item_closed' }]);
        expect(v.drawAt).toBeUndefined();
      }
    }
  });

  it('keeps positions in the drawn order after the pre-queue is removed', { timeout: 30_000 }, async () => {
    const opensAt = inFuture(1500);
    await define('pq-drop', { handler: 'external', opensAt, preQueue: { fromMs: 60_000 }, gate: { mode: 'manual' } });
    const ids = await joinUsers('pq-drop', users('f', 20));
    const drawn = await waitFor(
      () => call('GET', '/v1/items/pq-drop').then((r) => r.body),
      (v) => v.preQueue?.size === 20,
    );
    expect(drawn.state).toBe('open');
    const head = (await pull('pq-drop', 10)).map((x) => x.ticketId);
    const rest = ids.filter((id) => !head.includes(id));
    const oneToTen = Array.from({ length: 10 }, (_, i) => i + 1);
    // (The views may be a moment older than the pull.)
    const before = await waitFor(
      () => Promise.all(rest.map(async (id) => (await read(id)).position as number)),
      (ps) => JSON.stringify([...ps].sort((a, b) => a - b)) === JSON.stringify(oneToTen),
    );
    expect([...before].sort((a, b) => a - b)).toEqual(oneToTen);

    // The draw stays shown (users check their places against its seed); before: preQueue null.
    const { fromMs, ...draw } = drawn.preQueue;
    expect(fromMs).toBe(60_000);
    expect((await call('PUT', '/v1/items/pq-drop', { handler: 'external', opensAt, gate: { mode: 'manual' } })).body.preQueue).toEqual({ fromMs: null, ...draw });
    // Twice: the second read of a ticket is answered from the cached view alone.
    for (let round = 0; round < 2; round++) expect(await Promise.all(rest.map(async (id) => (await read(id)).position))).toEqual(before);
    // And admission follows them.
    const byPosition = rest.map((id, i) => [before[i], id] as const).sort((a, b) => a[0] - b[0]).map(([, id]) => id);
    expect((await pull('pq-drop', 100)).map((x) => x.ticketId)).toEqual(byPosition);
  });

  it('judges a ticket idle only from when abandonAfterMs was set, not from its join', { timeout: 30_000 }, async () => {
    await define('ab-late', { handler: 'external', gate: { mode: 'manual' } });
    const ids = await joinUsers('ab-late', users('g', 6));
    // Older than abandonAfterMs by the time it is set, and polled just before: their holders are
    // there, but while abandonment was off their polls were not recorded.
    await new Promise((r) => setTimeout(r, 3300));
    await Promise.all(ids.map(read));
    expect((await call('PUT', '/v1/items/ab-late', { handler: 'external', abandonAfterMs: 3000, gate: { mode: 'manual' } })).status).toBe(200);
    expect((await pull('ab-late', 3)).map((x) => x.ticketId)).toEqual(ids.slice(0, 3));
    expect((await call('GET', '/v1/items/ab-late')).body.counts.expired).toBe(0);
    // (Idle is counted once the longest poll interval holders were told before it was set has
    // passed: 30 s. That abandonment then expires those who stop polling, and that a replacement
    // keeping it keeps that start: test/abandon-poll-hint.test.ts, on a clock of its own.)
  });
});
