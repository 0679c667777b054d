import { describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { createSeriesStore, type SeriesSample } from '../src/scheduler/series-store.js';
import { testRedis } from './support/redis.js';

const t = testRedis();
const sample = (admissions: number, at?: number): SeriesSample => ({
  ...(at === undefined ? {} : { at }),
  waiting: 0, admissions, succeeded: 0, rejected: 0, failed: 0, rate: 10, maxInFlight: null, ctlRate: null, ctlLimit: null, p50Ms: null, p99Ms: null,
});

describe('the console series: per-second rates over the time between reads', () => {
  it('divides by the time between the two reads, falls back to the seconds for points without one or a view offered twice, and leaves out when it was read', async () => {
    const clock = manualClock(1_800_000_000_000);
    const series = createSeriesStore(t.redis, t.newPrefix(), clock);
    const s0 = 1_800_000_000;
    // A 10/s gate: the loop read the item late in one second and early in the next (1.5 s apart,
    // 15 admissions): 10/s, where a count per labelled second said 15.
    await series.add('i', s0, sample(0, s0 * 1000 + 100));
    await series.add('i', s0 + 1, sample(15, s0 * 1000 + 1600));
    // The same view offered for the next second too: no time between the reads, so measured from
    // the read before (the rate it had).
    await series.add('i', s0 + 2, sample(15, s0 * 1000 + 1600));
    // A point written before reads were kept: over its second.
    await series.add('i', s0 + 3, sample(25));
    const points = await series.range('i', s0 + 1, s0 + 3);
    expect(points.map((p) => [p.t, p.admitted])).toEqual([[(s0 + 1) * 1000, 10], [(s0 + 2) * 1000, 10], [(s0 + 3) * 1000, 10]]);
    expect(points[0]).not.toHaveProperty('at');
  });

  it('measures from the latest earlier read at least 250 ms back when the last two reads are closer (a late loop)', async () => {
    const clock = manualClock(1_800_000_000_000);
    const series = createSeriesStore(t.redis, t.newPrefix(), clock);
    const s0 = 1_800_000_000;
    // A steady 10/s gate, read at +0, +950, +1050 and +2050 ms for four seconds.
    for (const [i, ms] of [0, 950, 1050, 2050].entries()) await series.add('j', s0 + i, sample(ms / 100, s0 * 1000 + ms));
    expect((await series.range('j', s0 + 1, s0 + 3)).map((p) => p.admitted)).toEqual([10, 10, 10]); // before: [10, 1, 10]
  });
});
