import type { GateStore, SampleDelta } from './gate-store.js';
import type { Sample } from '../service/runner.js';
import { bucketOf } from './latency-histogram.js';

/**
 * Each daemon sums the handler calls it ran and adds them to the item's shared counters a few
 * times a second, so the one controller of an item sees the calls of every daemon. A call counts
 * as a probe sample when it started after the probe began (samples from calls admitted before the
 * probe say nothing about the pinned concurrency).
 */
export function createSampleRecorder(store: GateStore, probeStartOf: (itemId: string) => number | null) {
  let pending = new Map<string, SampleDelta>();
  return {
    record(s: Sample) {
      let d = pending.get(s.itemId);
      if (!d) pending.set(s.itemId, (d = { n: 0, drops: 0, hist: new Map(), probe: new Map() }));
      d.n++;
      if (s.result === 'drop') return void d.drops++;
      const b = bucketOf(s.latencyMs);
      d.hist.set(b, (d.hist.get(b) ?? 0) + 1);
      const probeStart = probeStartOf(s.itemId);
      if (probeStart !== null && s.startedAt >= probeStart) d.probe.set(b, (d.probe.get(b) ?? 0) + 1);
    },
    async flush() {
      const batch = pending;
      pending = new Map();
      await store.addSamples(batch);
    },
  };
}
