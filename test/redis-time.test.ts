import { afterEach, describe, expect, it, vi } from 'vitest';
import { steadyClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { redisTimeClock } from '../src/kernel/redis-time.js';

/**
 * The daemon's clock on a steady base: a step of the machine's wall clock never reaches it, and a
 * suspend (the monotonic clock stood still) is measured against Redis within about a second, not at
 * the next 10 s measure. Timers and both clocks are driven by the test.
 */
const log = createLogger('silent');

afterEach(() => {
  vi.useRealTimers();
});

/** Redis's time and one machine's wall and monotonic clocks, driven by the test, and the daemon's clock on them. */
async function machine() {
  vi.useFakeTimers();
  const m = { truth: 1_800_000_000_000, wall: 1_800_000_000_000, mono: 0, failNext: 0 };
  const time = async (): Promise<[number, number]> => {
    if (m.failNext-- > 0) throw new Error('reconnecting');
    return [Math.floor(m.truth / 1000), (m.truth % 1000) * 1000];
  };
  const t = redisTimeClock(steadyClock(() => m.wall, () => m.mono));
  await t.start(time, log);
  /** `ms` pass for Redis and both of the machine's clocks. */
  const run = async (ms: number) => {
    m.truth += ms;
    m.wall += ms;
    m.mono += ms;
    await vi.advanceTimersByTimeAsync(ms);
  };
  return { m, t, run };
}

describe("the daemon's clock on a steady base", () => {
  it('ignores a wall clock step and asks Redis at once after a suspend', async () => {
    const { m, t, run } = await machine();
    expect(t.clock.now()).toBe(m.truth);

    // The wall clock steps 30 s ahead (NTP, `date -s`): the daemon's clock goes on as before.
    m.wall += 30_000;
    await run(3_000);
    expect(t.clock.now()).toBe(m.truth);

    // Suspended for two minutes: the wall clock (and Redis) moved on, the monotonic clock did not.
    m.truth += 120_000;
    m.wall += 120_000;
    expect(t.clock.now()).toBe(m.truth - 120_000);
    await run(1_000);
    expect(t.clock.now()).toBe(m.truth); // before: two minutes behind until the next 10 s measure
    t.stop();
  });

  it('asks again at the next look when the measure after a suspend fails', async () => {
    const { m, t, run } = await machine();
    await run(3_000);
    m.truth += 120_000;
    m.wall += 120_000;
    m.failNext = 1; // the first measure after the resume fails (Redis's connection comes back)
    await run(1_000);
    await run(1_000);
    expect(t.clock.now()).toBe(m.truth); // before: two minutes behind until the next 10 s measure
    t.stop();
  });
});

describe("a change of Redis's own clock", () => {
  it('is followed slowly once the daemon runs: leases keep their length, and the clock never runs backwards', async () => {
    const { m, t, run } = await machine();
    await run(5_000);
    expect(t.clock.now()).toBe(m.truth);
    // Redis's clock jumps two minutes ahead (its machine's NTP, a failover to another server).
    m.truth += 120_000;
    const before = t.clock.now();
    await run(15_000);
    // Before: taken at the next 10 s measure — every lease of the last two minutes ran out at once
    // (an outside worker's 60 s lease read `lease_lost` 15 s in). Now at most 5% faster.
    const after = t.clock.now();
    expect(after - before).toBeGreaterThanOrEqual(15_000);
    expect(after - before).toBeLessThanOrEqual(15_000 * 1.05 + 1);
    // It gets there, at 50 ms a second (120 s in 2,400 s).
    await run(2_400_000);
    expect(t.clock.now()).toBe(m.truth);
    // Back a minute: followed at most 5% slower, never by going back.
    m.truth -= 60_000;
    let last = t.clock.now();
    for (let i = 0; i < 30; i++) {
      await run(1_000);
      const now = t.clock.now();
      expect(now - last).toBeGreaterThanOrEqual(950 - 1);
      expect(now - last).toBeLessThanOrEqual(1_000);
      last = now;
    }
    expect(t.clock.now()).toBeGreaterThan(m.truth + 55_000);
    t.stop();
  });

  it("keeps what is left of a slew through a step of the machine's clock, and a daemon started meanwhile joins the slew", async () => {
    vi.useFakeTimers();
    let truth = 1_800_000_000_000;
    let wallA = truth;
    let monoA = 0;
    const time = async (): Promise<[number, number]> => [Math.floor(truth / 1000), (truth % 1000) * 1000];
    // The board the daemons share in Redis (a key), here in memory.
    let board: string | null = null;
    const shared = { read: async () => board, write: async (v: string) => void (board = v) };
    const a = redisTimeClock(steadyClock(() => wallA, () => monoA));
    await a.start(time, log, shared);
    let monoB = 0;
    let b: ReturnType<typeof redisTimeClock> | null = null;
    const run = async (ms: number) => {
      truth += ms;
      wallA += ms;
      monoA += ms;
      monoB += ms;
      await vi.advanceTimersByTimeAsync(ms);
    };
    await run(5_000);
    truth -= 120_000; // Redis's clock goes back two minutes
    await run(20_000);
    const before = a.clock.now();
    // A's machine clock is stepped by NTP (its monotonic clock runs on): a step measure comes
    // mid-slew. Before: A took Redis's time whole, and went back by the rest of the slew.
    wallA += 1_000;
    await run(1_000);
    const moved = a.clock.now() - before;
    expect(moved).toBeGreaterThanOrEqual(950 - 1);
    expect(moved).toBeLessThanOrEqual(1_000);
    // B starts now, on a machine in step with Redis: it joins the slew the board tells of.
    const wallB = () => truth;
    b = redisTimeClock(steadyClock(wallB, () => monoB));
    await b.start(time, log, shared);
    expect(Math.abs(b.clock.now() - a.clock.now())).toBeLessThan(200); // before: 119,000 ms apart
    await run(60_000);
    expect(Math.abs(b.clock.now() - a.clock.now())).toBeLessThan(200);
    a.stop();
    b.stop();
  });

  it('takes at most 10 minutes of lag from the board', async () => {
    vi.useFakeTimers();
    const truth = 1_800_000_000_000;
    const time = async (): Promise<[number, number]> => [Math.floor(truth / 1000), (truth % 1000) * 1000];
    const board = JSON.stringify({ lag: 1e12, at: truth });
    const t = redisTimeClock(steadyClock(() => truth, () => 0));
    await t.start(time, log, { read: async () => board, write: async () => {} });
    expect(t.clock.now() - truth).toBe(600_000); // before: 1e12 ms, taken whole
    t.stop();
  });
});
