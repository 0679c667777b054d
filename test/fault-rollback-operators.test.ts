import { describe, expect, it } from 'vitest';
import { inProcessDaemon, recordingLogger, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { ownRedis } from './support/redis-server.js';
import { recordingDownstream } from './support/downstream.js';

/**
 * A real rollback: Redis restarts from a snapshot taken before the operators' writes (as a
 * restored snapshot does, or an AOF `everysec` that lost its last second), under a running daemon.
 * Every write an operator was answered 200 for must hold afterwards, and no user who was told their
 * ticket's end is told another one.
 */
const db = await testDb();
const server = await ownRedis();
/** The webhook downstream: holds alice's first call until released, answers every other at once. */
const held = new Map<string, () => void>();
const down = await recordingDownstream((req, res) => {
  const user = (JSON.parse(req.body) as { userId: string }).userId;
  const answer = () => (res.writeHead(200, { 'content-type': 'application/json' }), res.end('{"ok":true}'));
  if (user === 'alice' && !held.has(user)) held.set(user, answer);
  else answer();
});
/** The users the downstream was called for, once each (a call the rollback cut short runs again under its Idempotency-Key). */
const callsFor = () => [...new Set(down.seen.map((r) => (JSON.parse(r.body) as { userId: string }).userId))];
const logged = recordingLogger('warn', 100_000);
// The hold after a reconnect as long as the tests below keep the check waiting (alice's call may
// take seconds to run again on a busy machine), so that they see the hold, not its end.
const env = { REDIS_URL: server.url, FLOODGATE_RECONNECT_HOLD_MS: '30000' };
const { call, daemon } = await inProcessDaemon({ prefix: 'fg:', databaseUrl: db.url, env, log: logged.log });

const join = (itemId: string, userId: string) => call('POST', `/v1/items/${itemId}/tickets`, { userId }, SVC);
const ticket = (id: string) => call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body);

describe('operators’ writes and a Redis rollback', () => {
  it('a close, a gate change, a redefinition and blocks made after the snapshot hold once Redis comes back from it', { timeout: 90_000 }, async () => {
    await call('PUT', '/v1/items/closing', { handler: 'seckill', config: { stock: 5 }, gate: { mode: 'closed' } });
    await call('PUT', '/v1/items/gated', { handler: 'external', gate: { mode: 'closed' } });
    await call('PUT', '/v1/items/limited', { handler: 'external', gate: { mode: 'closed' }, capacity: 100 });
    const alice = (await join('closing', 'alice')).body.ticketId as string;
    const bob = (await join('closing', 'bob')).body.ticketId as string;
    await server.admin((r) => r.save());

    // The operators' writes, each answered 200, after the snapshot.
    expect((await call('DELETE', '/v1/items/closing')).status).toBe(200);
    expect((await call('PATCH', '/v1/items/gated/gate', { mode: 'manual', rate: 7, maxInFlight: 3 })).status).toBe(200);
    expect((await call('PUT', '/v1/items/limited', { handler: 'external', gate: { mode: 'closed' }, capacity: 2 })).status).toBe(200);
    expect((await call('PUT', '/v1/items/gated/blocks/mallory')).status).toBe(200);
    expect((await call('PUT', '/v1/blocks/eve')).status).toBe(200);
    const told = await waitFor(() => Promise.all([alice, bob].map(ticket)), (vs) => vs.every((v) => v.state === 'cancelled'));
    expect(told.map((v) => v.state)).toEqual(['cancelled', 'cancelled']);
    expect((await join('closing', 'carol')).status).toBe(410);
    expect((await join('gated', 'mallory')).status).toBe(403);

    // Redis restarts from the snapshot: the writes above are gone from it, Postgres has them.
    await server.kill();
    await server.start();

    // Each holds again, without an operator doing anything.
    expect((await waitFor(() => call('GET', '/v1/items/closing').then((r) => r.body), (v) => v.state === 'closed', 30_000)).state).toBe('closed');
    const after = await waitFor(() => Promise.all([alice, bob].map(ticket)), (vs) => vs.every((v) => v.state === 'cancelled'));
    expect(after.map((v) => [v.state, v.outcome])).toEqual(told.map((v) => [v.state, v.outcome]));
    expect((await join('closing', 'carol')).status).toBe(410);
    const gated = await waitFor(() => call('GET', '/v1/items/gated').then((r) => r.body), (v) => v.gate.mode === 'manual');
    expect(gated.gate).toMatchObject({ mode: 'manual', rate: 7, maxInFlight: 3 });
    expect((await call('GET', '/v1/items/limited')).body.capacity).toBe(2);
    expect((await join('gated', 'mallory')).body.error?.code).toBe('blocked');
    expect((await join('gated', 'eve')).body.error?.code).toBe('blocked');
    expect((await join('limited', 'eve')).body.error?.code).toBe('blocked');
    expect((await join('gated', 'dave')).status).toBe(202);
  });

  it('an unblock after the snapshot holds too', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/again', { handler: 'external', gate: { mode: 'closed' } });
    expect((await call('PUT', '/v1/items/again/blocks/trent')).status).toBe(200);
    await server.admin((r) => r.save());
    expect((await call('DELETE', '/v1/items/again/blocks/trent')).status).toBe(200);
    await server.kill();
    await server.start();
    // Trent's block came back with the snapshot; Postgres says he was unblocked.
    expect(await waitFor(() => join('again', 'trent').then((r) => r.status), (s) => s === 202, 30_000)).toBe(202);
  });

  it('a reconnect holds admissions until the operators’ writes are checked: a ticket a lost close had ended is never admitted', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/hook', { handler: 'webhook', config: { url: down.url, timeoutMs: 30_000 }, gate: { mode: 'manual', rate: 100, maxInFlight: 1 } });
    const alice = (await join('hook', 'alice')).body.ticketId as string;
    // Alice's call holds the one slot; bob and carol wait behind the full gate.
    expect((await waitFor(() => Promise.resolve(held.has('alice')), (v) => v)) && callsFor()).toEqual(['alice']);
    const others = [(await join('hook', 'bob')).body.ticketId as string, (await join('hook', 'carol')).body.ticketId as string];
    await server.admin((r) => r.save());
    expect((await call('DELETE', '/v1/items/hook')).status).toBe(200);
    const told = await waitFor(() => Promise.all(others.map(ticket)), (vs) => vs.every((v) => v.state === 'cancelled'));
    expect(told.map((v) => v.state)).toEqual(['cancelled', 'cancelled']);

    // The check after the reconnect is held where it waits for the item's lock; meanwhile Redis
    // comes back from the snapshot (bob and carol waiting, the gate open) and alice's call ends,
    // freeing the slot.
    const lock = await db.sql.reserve();
    let bobPoll: ReturnType<typeof ticket> | undefined;
    try {
      await lock`select pg_advisory_lock(hashtextextended('floodgate:op:hook', 0))`;
      await server.kill();
      await server.start();
      held.get('alice')!();
      // (Polls wait for the check too, so alice's end is read from the daemon's metrics.)
      const settled = /floodgate_settles_total\{item="hook",status="succeeded"\} 1/;
      expect(settled.test((await waitFor(() => call('GET', '/metrics', undefined, null), (r) => settled.test(String(r.body)))).body as string)).toBe(true);
      // A dispatcher without the hold admits bob within a round of alice's end (a few ms); bob's
      // poll, which would read `waiting` from the rolled-back Redis, is held as well.
      bobPoll = ticket(others[0]!);
      expect(await Promise.race([bobPoll.then(() => 'answered'), new Promise((r) => setTimeout(() => r('held'), 500))])).toBe('held');
      expect(callsFor()).toEqual(['alice']);
    } finally {
      // (Released with the connection if it is gone.)
      await lock`select pg_advisory_unlock(hashtextextended('floodgate:op:hook', 0))`.catch(() => {});
      lock.release();
    }
    const after = await waitFor(() => Promise.all(others.map(ticket)), (vs) => vs.every((v) => v.state === 'cancelled'));
    expect(after.map((v) => [v.state, v.outcome])).toEqual(told.map((v) => [v.state, v.outcome]));
    expect((await bobPoll!).state).toBe('cancelled');
    expect((await ticket(alice)).state).toBe('succeeded');
    expect(callsFor()).toEqual(['alice']);
  });

  it('a pull, a join or a poll after a reconnect waits for the same check: an outside worker gets no ticket a lost close had ended, a newcomer is refused, a user is not told `waiting` again', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/ext', { handler: 'external', gate: { mode: 'closed' } });
    const ids = [(await join('ext', 'alice')).body.ticketId as string, (await join('ext', 'bob')).body.ticketId as string];
    await server.admin((r) => r.save());
    expect((await call('DELETE', '/v1/items/ext')).status).toBe(200);
    const lock = await db.sql.reserve();
    let pulled: Promise<{ status: number; body: { tickets: unknown[] } }>;
    let joined: ReturnType<typeof join>;
    let polled: ReturnType<typeof ticket>;
    try {
      await lock`select pg_advisory_lock(hashtextextended('floodgate:op:ext', 0))`;
      await server.kill();
      await server.start();
      expect(await server.admin((r) => r.hget('fg:{ext}:meta', 'closed'))).toBeNull();
      expect((await waitFor(() => call('GET', '/readyz', undefined, null).then((r) => r.status), (st) => st === 200)).valueOf()).toBe(200);
      pulled = call('POST', '/v1/items/ext/pull', { max: 10, leaseMs: 30_000 }, SVC) as typeof pulled;
      joined = join('ext', 'newcomer');
      polled = ticket(ids[0]!);
      // Held while the check waits for the item's lock (without the hold the pull answers both
      // tickets at once, the join is taken by an item the operator closed, and alice's poll reads
      // `waiting` after she was told `cancelled`).
      const early = await Promise.race([Promise.race([pulled, joined, polled]).then(() => 'answered'), new Promise((r) => setTimeout(() => r('held'), 500))]);
      expect(early).toBe('held');
    } finally {
      await lock`select pg_advisory_unlock(hashtextextended('floodgate:op:ext', 0))`.catch(() => {});
      lock.release();
    }
    const got = await pulled!;
    expect(got.status).toBe(200);
    expect(got.body.tickets).toEqual([]);
    expect(((await joined!) as { status: number }).status).toBe(410);
    expect((await polled!).state).toBe('cancelled');
    expect((await Promise.all(ids.map(ticket))).map((v) => v.state)).toEqual(['cancelled', 'cancelled']);
  });

  it('after Redis lost everything, the items a restore made again carry their revisions: nothing is applied a second time', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/flushed', { handler: 'external', gate: { mode: 'closed' } });
    expect((await call('PATCH', '/v1/items/flushed/gate', { mode: 'manual', rate: 5 })).status).toBe(200);
    // (The blocks everywhere are compared once after a restore, which only adds to them: not counted.)
    const appliedAgain = () => logged.lines().split('\n').filter((l) => l.includes('applied again') && !l.includes('"scope":"*"')).length;
    const before = appliedAgain();
    await server.admin((r) => r.flushall());
    // The restore puts the items back; the next check compares every mark (the highest came back with it).
    expect((await waitFor(() => call('GET', '/v1/items/flushed').then((r) => r.body), (v) => v.gate?.mode === 'manual', 30_000)).gate.mode).toBe('manual');
    // The restore marked it; a check after that (the highest mark taken away again, so that one
    // compares every scope and puts it back) finds nothing to apply for it.
    expect(Number(await waitFor(() => server.admin((r) => r.hget('fg:{flushed}:meta', 'opRev')), (v) => v !== null, 30_000))).toBeGreaterThan(0);
    await server.admin((r) => r.zrem('fg:ops:rev', 'max'));
    expect(await waitFor(() => server.admin((r) => r.zscore('fg:ops:rev', 'max')), (v) => v !== null, 30_000)).not.toBeNull();
    expect(appliedAgain()).toBe(before);
  });

  it('an operator’s write whose item lock another session holds answers 503 after a bounded wait, not never', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/busy', { handler: 'external', gate: { mode: 'closed' } });
    const lock = await db.sql.reserve();
    try {
      await lock`select pg_advisory_lock(hashtextextended('floodgate:op:busy', 0))`;
      const started = Date.now();
      const r = await call('PATCH', '/v1/items/busy/gate', { mode: 'manual', rate: 2 });
      expect([r.status, r.body.error?.code]).toEqual([503, 'unavailable']);
      expect(Date.now() - started).toBeLessThan(30_000);
    } finally {
      await lock`select pg_advisory_unlock(hashtextextended('floodgate:op:busy', 0))`.catch(() => {});
      lock.release();
    }
    // Nothing was written: the gate is as it was, and the next write goes through.
    expect((await call('GET', '/v1/items/busy')).body.gate.mode).toBe('closed');
    expect((await call('PATCH', '/v1/items/busy/gate', { mode: 'manual', rate: 2 })).status).toBe(200);
  });

  // Last: it stops the file's daemon.
  it('a daemon that starts on a Redis rolled back while no daemon ran compares before it takes anything: the close holds at once', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/at-start', { handler: 'external', gate: { mode: 'closed' } });
    const waiting = (await join('at-start', 'alice')).body.ticketId as string;
    await server.admin((r) => r.save());
    expect((await call('DELETE', '/v1/items/at-start')).status).toBe(200);
    await daemon.stop();
    await server.kill();
    await server.start();
    expect(await server.admin((r) => r.hget('fg:{at-start}:meta', 'closed'))).toBeNull();
    const next = await inProcessDaemon({ prefix: 'fg:', databaseUrl: db.url, env });
    // At once, before the daemon's first round of checks: refused, and the ticket ended as it was told.
    const r = await next.call('POST', '/v1/items/at-start/tickets', { userId: 'bob' }, SVC);
    expect([r.status, r.body.error?.code]).toEqual([410, 'closed']);
    expect((await next.call('GET', `/v1/tickets/${waiting}`, undefined, null)).body.state).toBe('cancelled');
  });
});
