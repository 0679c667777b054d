import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { manualClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { createLine } from '../src/queue/line.js';
import { DRAINED_GAP_MAX_MS, DRAINED_JOINS, drainedLines, startDispatcher } from '../src/scheduler/dispatcher.js';
import { createJobQueues } from '../src/service/jobs.js';
import { createHandlerRegistry } from '../src/service/registry.js';
import { activeItemsKey } from '../src/redis/keys.js';
import { redisUrl, testRedis } from './support/redis.js';

const t = testRedis();
const conn = new Redis(redisUrl(), { maxRetriesPerRequest: null });
afterAll(() => conn.disconnect());

/** A handler that succeeds at once: the dispatcher's work is what these tests watch. */
const probe = { name: 'probe', config: z.record(z.string(), z.unknown()), rejoin: () => 'any' as const, external: false, handle: async () => ({ status: 'succeeded' as const, result: {} }) };
const jobsFor = (prefix: string) => createJobQueues(conn, { prefix, attempts: 3, backoffMs: 100, concurrency: 4, lockDurationMs: 10_000, stalledIntervalMs: 5000, batch: 200 }, (err) => console.error("job queue error", err));
/** A dispatcher over `line` running `probe`, rounds every 20 ms. */
const probeDispatcher = (line: ReturnType<typeof createLine>, jobs: Parameters<typeof startDispatcher>[0]['jobs'], clock: ReturnType<typeof manualClock>, hooks: { onAdmitted(itemId: string, n: number): void; onRound(r: { admitCalls: number }): void }) =>
  startDispatcher({ queue: line, handlers: createHandlerRegistry([probe]), jobs, clock, log: createLogger('silent'), ...hooks }, { idleMs: 20, batch: 200, dispatchLeaseMs: 60_000, autoCap: 10 });

describe('a line that emptied waits ten rounds, or 16 joins, before it is asked again (drainedLines)', () => {
  it('waits ten rounds’ time: a few ms when rounds are quick, 800 ms when they take 80 ms, never over a second', () => {
    const clock = manualClock();
    const d = drainedLines(clock);
    d.emptied('a');
    expect(d.defer('a')).toBe(false); // no round measured yet: no wait
    d.emptied('a');
    for (let i = 0; i < 40; i++) d.roundTook(2);
    expect(d.gapMs()).toBeCloseTo(20, 1);
    for (let i = 0; i < 40; i++) d.roundTook(80);
    expect(d.gapMs()).toBeCloseTo(800, 0);
    d.emptied('b');
    clock.advance(100);
    d.emptied('c');
    d.newRound();
    expect([d.defer('b'), d.defer('c'), d.defer('other')]).toEqual([true, true, false]);
    expect(d.deferred).toBe(2);
    expect(d.dueAt - clock.now()).toBeCloseTo(700, 0); // b's turn comes first
    clock.advance(700);
    d.newRound();
    expect([d.defer('b'), d.defer('c')]).toEqual([false, true]);
    expect(d.defer('b')).toBe(false); // forgotten once due: asked as any line
    for (let i = 0; i < 40; i++) d.roundTook(500);
    expect(d.gapMs()).toBe(DRAINED_GAP_MAX_MS);
  });

  it('asks a line again once 16 joins came for it, however slow the rounds', () => {
    const clock = manualClock();
    const d = drainedLines(clock);
    for (let i = 0; i < 40; i++) d.roundTook(80);
    d.emptied('a');
    for (let i = 1; i < DRAINED_JOINS; i++) d.joined('a');
    expect(d.defer('a')).toBe(true);
    d.joined('a');
    expect(d.defer('a')).toBe(false);
    d.joined('never-emptied'); // (no line to count for)
    expect(d.defer('never-emptied')).toBe(false);
  });

  it('forgets lines emptied a second or more ago', () => {
    const clock = manualClock();
    const d = drainedLines(clock);
    for (let i = 0; i < 40; i++) d.roundTook(500);
    d.emptied('old');
    clock.advance(DRAINED_GAP_MAX_MS - 1);
    d.emptied('young');
    clock.advance(1);
    d.prune();
    d.newRound();
    expect([d.defer('old'), d.defer('young')]).toEqual([false, true]);
  });
});

describe('the dispatcher batches a trickle of joins when its rounds are slow, and not when they are quick', () => {

  async function setup(roundCostMs: number) {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const jobs = jobsFor(prefix);
    // A round's cost, on the test's clock: the job queue's call is where a busy daemon's round waits.
    const slowJobs = { ...jobs, dispatch: async (...a: Parameters<typeof jobs.dispatch>) => (clock.advance(roundCostMs), jobs.dispatch(...a)) };
    const admittedBy = new Map<string, number[]>();
    let onRound: (() => void)[] = [];
    const dispatcher = probeDispatcher(line, slowJobs, clock, {
      onAdmitted: (itemId, n) => admittedBy.set(itemId, [...(admittedBy.get(itemId) ?? []), n]),
      onRound: () => {
        const waiting = onRound;
        onRound = [];
        for (const f of waiting) f();
      },
    });
    const nextRound = () => new Promise<void>((r) => onRound.push(r));
    const define = (itemId: string) => line.definitions.define({ itemId, handler: 'probe', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, { mode: 'manual' }, { reopen: false });
    let users = 0;
    /**
     * Joins `n` to the item at once (as a flood's joins arrive: one Redis call for them all), each
     * followed by the wake the daemon gives the dispatcher, then waits for rounds until one admits
     * for it (or `rounds` pass).
     */
    const joinAndWait = async (itemId: string, n: number, rounds = Infinity) => {
      const before = admittedBy.get(itemId)?.length ?? 0;
      await Promise.all(
        Array.from({ length: n }, async () => {
          await line.tickets.join(itemId, `u${++users}`, null);
          dispatcher.wake(itemId);
        }),
      );
      for (let i = 0; i < rounds && (admittedBy.get(itemId)?.length ?? 0) === before; i++) {
        const round = nextRound();
        dispatcher.wake();
        await round;
      }
      return admittedBy.get(itemId)?.slice(before) ?? [];
    };
    const stop = async () => {
      await dispatcher.stop();
      await jobs.close();
    };
    return { clock, define, joinAndWait, admittedBy, stop };
  }

  it('slow rounds (80 ms): joins that come after the line emptied wait for ten rounds’ time and go in one admit call', async () => {
    const s = await setup(80);
    try {
      // Rounds that admit, each taking 80 ms: one item each, so none of them waits.
      for (let i = 0; i < 20; i++) {
        await s.define(`p${i}`);
        expect(await s.joinAndWait(`p${i}`, 1)).toEqual([1]);
      }
      await s.define('d');
      expect(await s.joinAndWait('d', 1)).toEqual([1]); // the line is empty again
      // Four more join: three rounds come and go without asking the line.
      expect(await s.joinAndWait('d', 4, 3)).toEqual([]);
      // Ten rounds' time (~790 ms after 20 rounds of 80) later, all four are admitted at once.
      s.clock.advance(800);
      expect(await s.joinAndWait('d', 0)).toEqual([4]);
      // A flood refills the line: it is asked again as soon as 16 joins came, on the same clock.
      expect(await s.joinAndWait('d', DRAINED_JOINS - 1, 3)).toEqual([]);
      expect(await s.joinAndWait('d', 1, 2)).toEqual([DRAINED_JOINS]);
    } finally {
      await s.stop();
    }
  });

  it('quick rounds: a join after the line emptied is admitted by the round its wake starts', async () => {
    const s = await setup(0);
    try {
      await s.define('q');
      expect(await s.joinAndWait('q', 1)).toEqual([1]);
      // (Two rounds: the one under way when the wake came, which may have read the line before the join, and the next.)
      expect(await s.joinAndWait('q', 1, 2)).toEqual([1]);
      expect(await s.joinAndWait('q', 2, 2)).toEqual([2]);
    } finally {
      await s.stop();
    }
  });
});

describe('a wake is not lost to the read of the active set it came during', () => {
  it('joins woken while the set was read are admitted though the set, read before them, lacks their line', async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const jobs = jobsFor(prefix);
      await line.definitions.define({ itemId: 'w', handler: 'probe', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, { mode: 'manual' }, { reopen: false });
    // The first read of the active set is held until the joins came; it answers what Redis held
    // when it was sent: not this line (as when the set was lost and restored by another process).
    let answer!: (ids: string[]) => void;
    const held = new Promise<string[]>((r) => (answer = r));
    let reads = 0;
    const readStarted = new Promise<void>((started) => {
      line.items.activeItemIds = ((read) => () => (++reads === 1 ? (started(), held) : read()))(line.items.activeItemIds);
    });
    const admitted: number[] = [];
    let onRound: (() => void)[] = [];
    const dispatcher = probeDispatcher(line, jobs, clock, {
      onAdmitted: (_, n) => admitted.push(n),
      onRound: () => {
        const waiting = onRound;
        onRound = [];
        for (const f of waiting) f();
      },
    });
    try {
      await readStarted;
      for (let i = 0; i < 3; i++) {
        await line.tickets.join('w', `u${i}`, null);
        dispatcher.wake('w');
      }
      await t.redis.del(activeItemsKey(prefix));
      answer([]);
      // The manual clock stands still: no later read of the set comes to bring the line back.
      for (let i = 0; i < 5 && !admitted.length; i++) {
        const round = new Promise<void>((r) => onRound.push(r));
        dispatcher.wake();
        await round;
      }
      expect(admitted).toEqual([3]);
    } finally {
      answer([]);
      await dispatcher.stop();
      await jobs.close();
    }
  });
});

describe('a line whose opening an operator moved later, with tickets waiting', () => {
  it('is not asked each round until it opens (its admit calls kept it active for up to a week), and admits once open', async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const jobs = jobsFor(prefix);
      const rounds: number[] = [];
    let onRound: (() => void)[] = [];
    const admitted: number[] = [];
    const dispatcher = probeDispatcher(line, jobs, clock, {
      onAdmitted: (_id, n) => admitted.push(n),
      onRound: (r) => {
        rounds.push(r.admitCalls);
        for (const f of onRound.splice(0)) f();
      },
    });
    const nextRound = () => {
      const round = new Promise<void>((r) => onRound.push(r));
      dispatcher.wake('later');
      return round;
    };
    try {
      const def = (opensAt: number | null) => ({ itemId: 'later', handler: 'probe', config: {}, capacity: null, abandonAfterMs: null, opensAt, closesAt: null, rejoin: 'any' as const });
      await line.definitions.define(def(null), { mode: 'closed' }, { reopen: false });
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push((await line.tickets.join('later', `u${i}`, null)).ticket.ticketId);
      const opensAt = clock.now() + 3_600_000;
      await line.definitions.define(def(opensAt), { mode: 'manual' }, { reopen: false });
      // Told to come back as the opening nears, at most every 30 s (before: every second for the hour).
      expect(await line.tickets.status(ids[0])).toMatchObject({ reason: 'not_open', pollAfterMs: 30_000 });
      rounds.length = 0;
      for (let i = 0; i < 5; i++) await nextRound();
      expect(rounds.reduce((a, b) => a + b, 0)).toBe(0); // before: one admit call a round
      expect(admitted).toEqual([]);
      clock.set(opensAt + 1);
      for (let i = 0; i < 5 && !admitted.length; i++) await nextRound();
      expect(admitted).toEqual([3]);
    } finally {
      await dispatcher.stop();
      await jobs.close();
    }
  });
});
