import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { createLine } from '../src/queue/line.js';
import { createGateStore } from '../src/scheduler/gate-store.js';
import { itemKeys } from '../src/redis/keys.js';
import { testRedis } from './support/redis.js';

/**
 * The manual gate's pace (GCRA in _gate.lua, run by admit-12.lua), driven through the real script with explicit
 * times from a manual clock near today's epoch values (~1.8e12 ms), where double precision bites.
 * Every admitted ticket is returned to the head at once, so a pool of tickets serves any rate.
 * A pull is what a greedy consumer gets at one instant: admit calls of at most PULL tickets at the
 * same clock time until the gate hands out less than asked. One call for a whole burst (10,000
 * tickets at 100,000/s, and their settle) held the shared Redis for about a second on the 2-core
 * machine, stalling every test file running beside this one; a call of 1000 holds it a tenth of that.
 */
const t = testRedis();
const clock = manualClock();
const prefix = t.newPrefix();
const queue = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
const gates = createGateStore(t.redis, prefix, clock);
const PULL = 1000; // most tickets one admit call asks for
const POOL = PULL; // each call's tickets are back in the line before the next call: one call's worth serves any rate
// A run stops once the clock has covered this many admissions at the rate (past the burst): enough
// for the GCRA's bookkeeping to go round many times at any rate (each call re-bases its times on
// floor(now)), without the ~10k per run that made high-rate runs most of the file's Redis work.
const HORIZON = 1000;
const ITEM = 'paced';

beforeAll(async () => {
  await queue.definitions.define(
    { itemId: ITEM, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' },
    { mode: 'manual', rate: 1, maxInFlight: null },
    { reopen: false },
  );
  await Promise.all(Array.from({ length: POOL }, (_, j) => queue.tickets.join(ITEM, `u${j}`, null)));
}, 60_000);

const burstOf = (rate: number) => Math.max(1, rate * 0.1);
/** How late a pull may come and still have its lateness credited (_gate.lua): at most half an interval, or 50 ms. */
const slackOf = (rate: number) => Math.min(500 / rate, 50);

/**
 * All the gate admits now, in calls of at most PULL, each call's tickets returned to the line at
 * once; it stops asking past `most` (no instant may give more than the burst: the checks then fail).
 */
async function pullAll(most: number): Promise<number> {
  for (let n = 0; ; ) {
    const got = await queue.admissions.admit(ITEM, PULL, 3_600_000);
    const codes = await queue.admissions.settleMany(
      ITEM,
      got.map((x) => ({ seq: x.seq, leaseId: x.leaseId, status: 'failed' as const, retry: true, force: true })),
    );
    expect(codes.every((c) => c === 1)).toBe(true);
    n += got.length;
    if (got.length < PULL || n > most) return n;
  }
}

/** Pulls at start, start + gaps[0], …; returns [time, admitted] per pull. Stops after ~HORIZON admissions at the rate. */
async function drive(rate: number, start: number, gaps: number[]): Promise<[number, number][]> {
  await t.redis.hdel(itemKeys(prefix, ITEM).gate, 'tatAt', 'tatOff');
  await gates.writeSettings(ITEM, { mode: 'manual', rate });
  clock.set(start);
  const pulls: [number, number][] = [];
  for (let i = 0; i <= gaps.length && (clock.now() - start) * rate <= HORIZON * 1000; i++) {
    if (i > 0) clock.advance(gaps[i - 1]);
    pulls.push([clock.now(), await pullAll(burstOf(rate))]);
  }
  return pulls;
}

// Rates log-uniform over 0.01-100,000/s, beside the ones that once failed and the extremes. An
// fc.double over [ln 0.01, ln 100,000] is not that: fast-check spreads doubles over their bit
// patterns, most of them near 0, and it drew rates near 1/s and never one from 100 to 10,000/s.
const LN_MIN = Math.log(0.01);
const LN_MAX = Math.log(100_000);
const rates = fc.oneof(
  fc.constantFrom(3, 4.5, 9, 0.3, 0.9, 1.1, 1.2, 0.01, 100_000),
  fc.noBias(fc.integer({ min: 0, max: 2 ** 30 })).map((i) => Math.exp(LN_MIN + ((LN_MAX - LN_MIN) * i) / 2 ** 30)),
);
const starts = fc.integer({ min: 1_600_000_000_000, max: 2_000_000_000_000 });

describe('the manual gate pace (GCRA) at real epoch times', () => {
  it('admits at least one at once on an idle line, and never more than rate·t + burst (+ the lateness credited, under half a ticket) in any interval', async () => {
    const gapsFor = (rate: number) =>
      fc.array(fc.oneof(fc.integer({ min: 0, max: 50 }), fc.double({ min: 0, max: 3, noNaN: true }).map((u) => Math.round((u * 1000) / rate))), {
        minLength: 1,
        maxLength: 30,
      });
    await fc.assert(
      fc.asyncProperty(
        rates.chain((rate) => fc.tuple(fc.constant(rate), starts, gapsFor(rate))),
        async ([rate, start, gaps]) => {
          const pulls = await drive(rate, start, gaps);
          expect(pulls[0][1]).toBeGreaterThanOrEqual(1);
          for (let i = 0; i < pulls.length; i++) {
            let n = 0;
            for (let j = i; j < pulls.length; j++) {
              n += pulls[j][1];
              expect(n).toBeLessThanOrEqual((rate * (pulls[j][0] - pulls[i][0] + slackOf(rate))) / 1000 + burstOf(rate) + 1e-6);
            }
          }
        },
      ),
      { numRuns: 40 },
    );
  }, 120_000);

  it('gives a consumer pulling every 10-50 ms the full rate, within the burst', async () => {
    await fc.assert(
      fc.asyncProperty(rates, starts, fc.array(fc.integer({ min: 10, max: 50 }), { minLength: 5, maxLength: 80 }), async (rate, start, gaps) => {
        const pulls = await drive(rate, start, gaps);
        const n = pulls.reduce((a, [, k]) => a + k, 0);
        const span = pulls[pulls.length - 1][0] - pulls[0][0];
        // A pull up to 50 ms late loses nothing: the burst absorbs it (20/s and over), or the
        // lateness is credited (under 20/s; before, a burst of one lost each admission's lateness,
        // and a consumer pulling every 50 ms at 7/s got 5.6/s).
        expect(n).toBeGreaterThan((rate * span) / 1000 + burstOf(rate) - 1 - 1e-6);
        expect(n).toBeLessThanOrEqual((rate * (span + slackOf(rate))) / 1000 + burstOf(rate) + 1e-6);
      }),
      { numRuns: 40 },
    );
  }, 120_000);

  it('owes nothing of an old slow pace after a rate is raised, nor of a daemon whose clock ran ahead: admits within one burst of the new rate', async () => {
    const start = 1_800_000_000_000;
    // One admission at 0.01/s puts the next 100 s ahead; the operator then raises the rate to 1000/s.
    expect(await drive(0.01, start, [])).toEqual([[start, 1]]);
    await gates.writeSettings(ITEM, { rate: 1000 });
    clock.advance(1_000);
    // (Before: nothing until the old 100 s had passed, while the gate showed 1000/s.)
    expect(await pullAll(burstOf(1000))).toBe(burstOf(1000));

    // A daemon whose clock ran 60 s ahead admitted once (its pace put the next one an interval
    // after its own now): the others' next admission is not 60 s away, but about an interval.
    await drive(10, start, []);
    await t.redis.hset(itemKeys(prefix, ITEM).gate, 'tatAt', String(clock.now() + 60_000), 'tatOff', '100');
    expect(await pullAll(burstOf(10))).toBe(0);
    clock.advance(101);
    // (Before: nothing at every read until the 60 s had passed: each took the future write as made just now.)
    expect(await pullAll(burstOf(10))).toBeGreaterThanOrEqual(1);
  }, 30_000);
});
