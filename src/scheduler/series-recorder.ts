import type { Clock } from '../kernel/clock.js';
import type { Logger } from '../kernel/logger.js';
import { every } from '../kernel/loop.js';
import type { CachedItem } from '../queue/item-cache.js';
import type { Line } from '../queue/line.js';
import type { SeriesStore } from './series-store.js';
import { controllerView } from './controller-view.js';

/**
 * Once a second, offers every item's point (line length, cumulative admissions and outcomes,
 * the gate's effective numbers and the controller's opinion) to the shared series in Redis, from
 * the cached item view the daemon keeps anyway. Every daemon offers; the first point of a second
 * stays (series-add-1.lua), so the series is one and the same on every daemon and survives any
 * one of them. Cost: one script call per item per second per daemon.
 */
export function startSeriesRecorder(
  deps: { queue: Pick<Line, 'items'>; series: SeriesStore; clock: Clock; log: Logger; effective(item: CachedItem): { rate: number | null; maxInFlight: number | null } },
  opts: { everyMs: number },
) {
  return every(
    opts.everyMs,
    'series record',
    async () => {
      const second = Math.floor(deps.clock.now() / 1000);
      // Idle items add no points (their charts show the gap); active ones one per second.
      const ids = await deps.queue.items.activeItemIds();
      await Promise.all(
        ids.map(async (id) => {
          const item = await deps.queue.items.item(id);
          if (!item) return;
          const s = item.snap;
          const eff = deps.effective(item);
          const c = controllerView(s);
          await deps.series.add(id, second, {
            waiting: s.counts.waiting,
            admissions: s.admissions,
            succeeded: s.counts.succeeded,
            rejected: s.counts.rejected,
            failed: s.counts.failed,
            rate: eff.rate,
            maxInFlight: eff.maxInFlight,
            ctlRate: c?.rate ?? null,
            ctlLimit: c?.limit ?? null,
            p50Ms: c?.p50Ms ?? null,
            p99Ms: c?.p99Ms ?? null,
          });
        }),
      );
    },
    deps.log,
  );
}
