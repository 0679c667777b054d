import type { Clock } from '../kernel/clock.js';
import type { Logger } from '../kernel/logger.js';
import { every } from '../kernel/loop.js';
import type { CachedItem } from '../queue/item-cache.js';
import type { Line } from '../queue/line.js';
import type { SeriesSample, SeriesStore } from './series-store.js';
import { controllerView } from './controller-view.js';

/**
 * Once a second, offers every item's point (line length, cumulative admissions and outcomes,
 * the gate's effective numbers and the controller's opinion) to the shared series in Redis, from
 * the cached item view the daemon keeps anyway. Every daemon offers; the first point of a second
 * stays (series-add-1.lua), so the series is one and the same on every daemon and survives any
 * one of them. Cost: one script call per item per second per daemon (the loop runs every half
 * second so that a late round still lands in its second; the second offer of a second is not sent).
 */
export function startSeriesRecorder(
  deps: { queue: Pick<Line, 'items'>; series: SeriesStore; clock: Clock; log: Logger; effective(item: CachedItem): { rate: number | null; maxInFlight: number | null } },
  opts: { everyMs: number },
) {
  /** The second each item's point was last offered by this daemon: one offer per second (the loop runs twice a second). */
  const offered = new Map<string, number>();
  return every(
    opts.everyMs,
    'series record',
    async () => {
      const second = Math.floor(deps.clock.now() / 1000);
      // Idle items add no points (their charts show the gap); active ones one per second.
      const ids = await deps.queue.items.activeItemIds();
      if (offered.size > 2 * ids.length + 1000) offered.clear();
      await Promise.all(
        ids.map(async (id) => {
          if (offered.get(id) === second) return;
          offered.set(id, second);
          const item = await deps.queue.items.item(id);
          if (!item) return;
          await deps.series.add(id, second, sampleOf(item, deps.effective(item)));
        }),
      );
    },
    deps.log,
  );
}

/** An item's point as its view holds it. */
export function sampleOf(item: CachedItem, eff: { rate: number | null; maxInFlight: number | null }): SeriesSample {
  const s = item.snap;
  const c = controllerView(s);
  return {
    at: item.readAt,
    waiting: s.counts.waiting,
    admissions: s.admissions,
    succeeded: s.counts.succeeded,
    rejected: s.counts.rejected,
    failed: s.counts.failed,
    rate: eff.rate,
    maxInFlight: eff.maxInFlight,
    ctlRate: c?.rate ?? null,
    ctlLimit: c?.limit ?? null,
    // Whole milliseconds, as every duration of the API.
    p50Ms: c?.p50Ms == null ? null : Math.round(c.p50Ms),
    p99Ms: c?.p99Ms == null ? null : Math.round(c.p99Ms),
  };
}
