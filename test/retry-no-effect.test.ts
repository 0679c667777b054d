import { describe, expect, it } from 'vitest';
import { itemKeys } from '../src/redis/keys.js';
import { SERVICE, testApp } from './support/app.js';

/**
 * A `retry` written back by the holder of a ticket's lease (an outside worker) says its run had no
 * effect, and its lease can write nothing more after it: such a ticket is not in doubt. On a cut
 * item it ends at once with the cut's outcome (it waited FLOODGATE_DOUBT_GRACE_MS admitted, in
 * doubt), and back at the head its user may leave the line (it was `409 not_cancellable`, as a
 * ticket whose lease ran out still is).
 */
const t = await testApp();

const seqOf = (ticketId: string) => parseInt(ticketId.split('.')[1], 36);

/** An external item with one ticket per user, the first `pulled` of them pulled under 60 s leases. */
async function setup(item: string, users: string[], pulled = 1) {
  const b = t.build();
  const { call } = b;
  expect((await call('PUT', `/v1/items/${item}`, { handler: 'external' })).status).toBe(201);
  const ids: string[] = [];
  for (const u of users) ids.push((await call('POST', `/v1/items/${item}/tickets`, { userId: u }, SERVICE)).body.ticketId);
  const leases = pulled ? (await call('POST', `/v1/items/${item}/pull`, { max: pulled, leaseMs: 60_000 }, SERVICE)).body.tickets : [];
  const view = async (id: string) => (await call('GET', `/v1/tickets/${id}`, undefined, null)).body;
  const counts = async () => (await call('GET', `/v1/items/${item}`)).body.counts;
  const retry = (p: { ticketId: string; leaseId: string }) => call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'failed', reason: 'busy', retry: true }, SERVICE);
  return { ...b, ids, leases, view, counts, retry };
}

/** Gives the ticket a unit of stock as admit-12.lua does for an item with stock (shard s0), so its return shows. */
async function holdUnit(prefix: string, item: string, seq: number) {
  const k = itemKeys(prefix, item);
  await t.redis.hset(k.stock, 's0', '0');
  await t.redis.hset(k.taken, String(seq), 's0');
  return async () => ({ left: Number(await t.redis.hget(k.stock, 's0')), taken: await t.redis.hexists(k.taken, String(seq)) });
}

describe("an outside worker's retry after the item was cut", () => {
  it('written after the close, ends the ticket at once, cancelled/item_closed, and gives its unit back', async () => {
    const s = await setup('rc1', ['u1']);
    const [p] = s.leases;
    const unit = await holdUnit(s.prefix, 'rc1', seqOf(p.ticketId));
    expect((await s.call('DELETE', '/v1/items/rc1')).status).toBe(200);
    const wb = await s.retry(p);
    expect(wb.status).toBe(200);
    expect(await s.view(p.ticketId)).toMatchObject({ state: 'cancelled', outcome: { status: 'cancelled', reason: 'item_closed' } });
    expect(await s.counts()).toMatchObject({ admitted: 0, cancelled: 1 });
    expect(await unit()).toEqual({ left: 1, taken: 0 });
    // The same retry again is a repeat (200), and the lease takes no outcome after it.
    expect((await s.retry(p)).status).toBe(200);
    const late = await s.call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'succeeded' }, SERVICE);
    expect([late.status, late.body.error?.code]).toEqual([409, 'conflict']);
  });

  it('written after a sell-out, ends it rejected/sold_out', async () => {
    const s = await setup('rc2', ['u1']);
    const [p] = s.leases;
    await s.queue.definitions.cut('rc2', 'sold_out');
    expect((await s.retry(p)).status).toBe(200);
    expect(await s.view(p.ticketId)).toMatchObject({ state: 'rejected', outcome: { status: 'rejected', reason: 'sold_out' } });
    expect(await s.counts()).toMatchObject({ admitted: 0, rejected: 1 });
  });

  it('written once its lease ran out on the closed item (the ticket in doubt), ends it at once too', async () => {
    const s = await setup('rc3', ['u1'], 0);
    const [adm] = await s.queue.admissions.admit('rc3', 1, 200);
    expect((await s.call('DELETE', '/v1/items/rc3')).status).toBe(200);
    while (Date.now() <= Date.parse(adm.leaseExpiresAt) + 5) await new Promise((r) => setTimeout(r, 20));
    await s.queue.admissions.sweep();
    expect((await s.view(adm.ticketId)).state).toBe('admitted');
    expect((await s.retry(adm)).status).toBe(200);
    expect(await s.view(adm.ticketId)).toMatchObject({ state: 'cancelled', outcome: { reason: 'item_closed' } });
    expect(await s.counts()).toMatchObject({ admitted: 0, cancelled: 1 });
  });

  it('written before the close (the ticket back at the head), ends it with the close', async () => {
    const s = await setup('rc4', ['u1', 'u2']);
    const [p] = s.leases;
    expect((await s.retry(p)).status).toBe(200);
    expect((await s.view(p.ticketId)).state).toBe('waiting');
    expect((await s.call('DELETE', '/v1/items/rc4')).status).toBe(200);
    expect(await s.view(p.ticketId)).toMatchObject({ state: 'cancelled', outcome: { reason: 'item_closed' } });
    expect(await s.counts()).toMatchObject({ waiting: 0, admitted: 0, cancelled: 2 });
  });

  it('a lease that ran out (no retry: its effect unknown) still waits in doubt on the closed item', async () => {
    const s = await setup('rc5', ['u1'], 0);
    const [adm] = await s.queue.admissions.admit('rc5', 1, 200);
    while (Date.now() <= Date.parse(adm.leaseExpiresAt) + 5) await new Promise((r) => setTimeout(r, 20));
    await s.queue.admissions.sweep();
    expect((await s.call('DELETE', '/v1/items/rc5')).status).toBe(200);
    expect((await s.view(adm.ticketId)).state).toBe('admitted');
  });
});

describe('leaving the line while back at the head', () => {
  it("after the worker's retry: the user may cancel, and the ticket is never handed out again nor takes the old lease's outcome", async () => {
    const s = await setup('lv1', ['u1', 'u2']);
    const [p] = s.leases;
    expect((await s.retry(p)).status).toBe(200);
    const back = await s.view(p.ticketId);
    expect(back).toMatchObject({ state: 'waiting', position: 1 });
    expect(back.admittedAt).toBeDefined();
    const del = await s.call('DELETE', `/v1/tickets/${p.ticketId}`, undefined, null);
    expect([del.status, del.body.state, del.body.outcome?.reason]).toEqual([200, 'cancelled', 'cancelled_by_user']);
    // Next out is u2, not the cancelled ticket.
    const next = (await s.call('POST', '/v1/items/lv1/pull', { max: 5 }, SERVICE)).body.tickets;
    expect(next.map((x: { ticketId: string }) => x.ticketId)).toEqual([s.ids[1]]);
    const late = await s.call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'succeeded' }, SERVICE);
    expect(late.status).toBe(409);
    expect(await s.view(p.ticketId)).toMatchObject({ state: 'cancelled' });
    expect(await s.counts()).toMatchObject({ waiting: 0, admitted: 1, cancelled: 1 });
    // A repeat of the cancel is no error.
    expect((await s.call('DELETE', `/v1/tickets/${p.ticketId}`, undefined, null)).status).toBe(200);
  });

  it('after its lease ran out: still not cancellable (its effect may have happened)', async () => {
    const s = await setup('lv2', ['u1'], 0);
    const [adm] = await s.queue.admissions.admit('lv2', 1, 200);
    while (Date.now() <= Date.parse(adm.leaseExpiresAt) + 5) await new Promise((r) => setTimeout(r, 20));
    await s.queue.admissions.sweep();
    expect((await s.view(adm.ticketId)).state).toBe('waiting');
    const del = await s.call('DELETE', `/v1/tickets/${adm.ticketId}`, undefined, null);
    expect([del.status, del.body.error?.code]).toEqual([409, 'not_cancellable']);
  });

  it('after a retry, handed out again and its new lease run out: not cancellable (that run is unknown)', async () => {
    const s = await setup('lv3', ['u1']);
    expect((await s.retry(s.leases[0])).status).toBe(200);
    const [adm] = await s.queue.admissions.admit('lv3', 1, 200);
    expect(adm.ticketId).toBe(s.ids[0]);
    while (Date.now() <= Date.parse(adm.leaseExpiresAt) + 5) await new Promise((r) => setTimeout(r, 20));
    await s.queue.admissions.sweep();
    const del = await s.call('DELETE', `/v1/tickets/${adm.ticketId}`, undefined, null);
    expect([del.status, del.body.error?.code]).toEqual([409, 'not_cancellable']);
  });

  it("after an in-process job's retry (forced: Postgres unreachable may hide a commit): not cancellable", async () => {
    const s = await setup('lv4', ['u1'], 0);
    const [adm] = await s.queue.admissions.admit('lv4', 1, 60_000);
    const [code] = await s.queue.admissions.settleMany('lv4', [{ seq: adm.seq, leaseId: adm.leaseId, status: 'failed', reason: 'postgres_unavailable', retry: true, force: true }]);
    expect(code).toBe(1);
    expect((await s.view(adm.ticketId)).state).toBe('waiting');
    const del = await s.call('DELETE', `/v1/tickets/${adm.ticketId}`, undefined, null);
    expect([del.status, del.body.error?.code]).toEqual([409, 'not_cancellable']);
  });

  it('on a split item (lines: 3) too, after the worker\'s retry', async () => {
    const b = t.build();
    await b.call('PUT', '/v1/items/lv5', { handler: 'external', lines: 3 });
    const ids: string[] = [];
    for (const u of ['u1', 'u2', 'u3']) ids.push((await b.call('POST', '/v1/items/lv5/tickets', { userId: u }, SERVICE)).body.ticketId);
    const [p] = (await b.call('POST', '/v1/items/lv5/pull', { max: 1, leaseMs: 60_000 }, SERVICE)).body.tickets;
    expect((await b.call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'failed', reason: 'busy', retry: true }, SERVICE)).status).toBe(200);
    const del = await b.call('DELETE', `/v1/tickets/${p.ticketId}`, undefined, null);
    expect([del.status, del.body.state]).toEqual([200, 'cancelled']);
    const next = (await b.call('POST', '/v1/items/lv5/pull', { max: 5 }, SERVICE)).body.tickets.map((x: { ticketId: string }) => x.ticketId);
    expect(next).not.toContain(p.ticketId);
    expect(next.sort()).toEqual(ids.filter((id) => id !== p.ticketId).sort());
  });
});

describe("a blocked user's ticket back at the head after the worker's retry", () => {
  it.each([1, 3])('ends rejected/blocked at the next admission, and its old lease writes nothing (lines: %i)', async (lines) => {
    const b = t.build();
    const item = t.uniqueItem();
    await b.call('PUT', `/v1/items/${item}`, { handler: 'external', lines, gate: { mode: 'manual', maxInFlight: 1 } });
    const ids: string[] = [];
    for (const u of ['u1', 'u2']) ids.push((await b.call('POST', `/v1/items/${item}/tickets`, { userId: u }, SERVICE)).body.ticketId);
    const [p] = (await b.call('POST', `/v1/items/${item}/pull`, { max: 1, leaseMs: 60_000 }, SERVICE)).body.tickets;
    expect((await b.call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'failed', reason: 'busy', retry: true }, SERVICE)).status).toBe(200);
    expect((await b.call('PUT', `/v1/items/${item}/blocks/u1`)).status).toBe(200);
    // The next pull finds u1 blocked: nothing to wait for (the worker said its run did nothing),
    // so the ticket ends at once, and u2 is handed out within the in-flight cap of 1.
    // (A split item's round that ended it may hand out nobody else: the next pull does.)
    let next: string[] = [];
    for (let i = 0; i < 3 && !next.length; i++) next = (await b.call('POST', `/v1/items/${item}/pull`, { max: 5 }, SERVICE)).body.tickets.map((x: { ticketId: string }) => x.ticketId);
    expect(next).toEqual([ids[1]]);
    expect((await b.call('GET', `/v1/tickets/${p.ticketId}`, undefined, null)).body).toMatchObject({ state: 'rejected', outcome: { reason: 'blocked' } });
    // Before: held in doubt under its old lease come back to life, and this ended it succeeded.
    const late = await b.call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'succeeded' }, SERVICE);
    expect(late.status).toBe(409);
    expect((await b.call('GET', `/v1/tickets/${p.ticketId}`, undefined, null)).body.state).toBe('rejected');
  });
});

describe("a split item's tickets back at the head", () => {
  it('are offered again in join order, not sub-line by sub-line', async () => {
    const b = t.build();
    const item = t.uniqueItem();
    await b.call('PUT', `/v1/items/${item}`, { handler: 'external', lines: 4 });
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push((await b.call('POST', `/v1/items/${item}/tickets`, { userId: `j${i}` }, SERVICE)).body.ticketId);
    const pulled = (await b.call('POST', `/v1/items/${item}/pull`, { max: 6, leaseMs: 60_000 }, SERVICE)).body.tickets as { ticketId: string; leaseId: string }[];
    expect(pulled.map((p) => p.ticketId)).toEqual(ids);
    for (const p of pulled) expect((await b.call('POST', `/v1/tickets/${p.ticketId}/outcome`, { leaseId: p.leaseId, status: 'failed', reason: 'busy', retry: true }, SERVICE)).status).toBe(200);
    const again = (await b.call('POST', `/v1/items/${item}/pull`, { max: 6 }, SERVICE)).body.tickets.map((p: { ticketId: string }) => p.ticketId);
    expect(again).toEqual(ids); // before: by sub-line (2, 4, 1, 3, 0, 5 in one run)
  });
});
