import type { Clock } from '../kernel/clock.js';
import { FloodgateError } from '../kernel/errors.js';
import type { Queue } from './queue.js';
import { parseTicketId } from './ticket-id.js';
import type { TicketView } from './types.js';

/** Where a watched ticket's news goes (an SSE stream). */
export interface WatchSink {
  view(v: TicketView): void;
  heartbeat(): void;
  /** The ticket ended (after its terminal view), or it can no longer be read. */
  end(): void;
  /** The terminal view and the end in one write, where the sink can (fewer writes in a sell-out). */
  last?(v: TicketView): void;
}

export interface TicketWatch {
  /** Follows a ticket whose current view `first` the caller has already sent. Returns the unsubscribe. */
  watch(ticketId: string, first: TicketView, sink: WatchSink): () => void;
  size(): number;
}

interface Watcher {
  ticketId: string;
  seq: number;
  last: TicketView;
  /** Before this time a position drop alone is not sent (pollAfterMs of the last view). */
  nextAt: number;
  lastWriteAt: number;
  sink: WatchSink;
  reading: boolean;
}

const terminal = (v: TicketView) => v.state !== 'waiting' && v.state !== 'admitted';

/**
 * Fans ticket views out to watchers from what the daemon already knows: each tick refreshes the
 * cached view of every watched item once (queue.item), then computes every watcher's view from
 * that snapshot and the ticket's cached record (queue.cachedView). Redis is read per ticket only
 * where the cache cannot tell — a ticket admitted, settled or returned to the head since — so
 * the reads follow admissions, not watchers, and a sell-out reaches every watcher from one
 * refresh. A state change is sent at once; a position drop at most once per the last view's
 * pollAfterMs; a heartbeat when a watcher heard nothing for `heartbeatMs`.
 *
 * The tick runs only while someone watches, so an idle daemon (or a test) has no timer.
 */
export function createTicketWatch(deps: {
  queue: Queue;
  clock: Clock;
  tickMs: number;
  heartbeatMs: number;
  onError?(err: unknown): void;
  /** How long one item's pass over its watchers took (ms), for the metrics. */
  onPass?(ms: number): void;
}): TicketWatch {
  const byItem = new Map<string, Set<Watcher>>();
  /** Per item, what decides waiting tickets' state and reason, as of the last tick. */
  const shapes = new Map<string, string>();
  let count = 0;
  let timer: NodeJS.Timeout | null = null;
  let running = false;
  /** A cut came while a tick ran: run the next one at once. */
  let again = false;

  function send(w: Watcher, v: TicketView, now: number) {
    w.last = v;
    w.nextAt = now + (v.pollAfterMs ?? 1000);
    w.lastWriteAt = now;
    w.sink.view(v);
  }

  function remove(itemId: string, w: Watcher) {
    const set = byItem.get(itemId);
    if (!set?.delete(w)) return;
    count--;
    if (!set.size) {
      byItem.delete(itemId);
      shapes.delete(itemId);
    }
  }

  /** Sends `v` if it is news for the watcher; ends the watcher after a terminal view. */
  function offer(itemId: string, w: Watcher, v: TicketView, now: number) {
    const prev = w.last;
    const changed = v.state !== prev.state || v.reason !== prev.reason;
    const moved = v.state === 'waiting' && typeof v.position === 'number' && typeof prev.position === 'number' && v.position < prev.position;
    if (terminal(v)) {
      remove(itemId, w);
      if (changed && w.sink.last) return w.sink.last(v);
      if (changed) send(w, v, now);
      return w.sink.end();
    }
    if (changed || (moved && now >= w.nextAt)) send(w, v, now);
  }

  async function readSlow(itemId: string, w: Watcher) {
    w.reading = true;
    try {
      offer(itemId, w, await deps.queue.status(w.ticketId), deps.clock.now());
    } catch (err) {
      // Gone (an ended item's keys removed): nothing more will be known. Anything else: next tick.
      if (err instanceof FloodgateError && err.code === 'ticket_not_found') {
        remove(itemId, w);
        w.sink.end();
      } else deps.onError?.(err);
    } finally {
      w.reading = false;
    }
  }

  async function tickItem(itemId: string, watchers: Set<Watcher>) {
    const item = await deps.queue.item(itemId).catch((err) => (deps.onError?.(err), undefined));
    if (item === undefined) return;
    const now = deps.clock.now();
    const s = item?.snap;
    // A change of whatever decides a waiting ticket's state or reason (a cut, the gate closed or
    // opened, stock out or back, the sale opening) makes every watcher of the item due; otherwise
    // only those the head reached or whose pause is over. (A closed gate with 20,000 watchers
    // costs nothing per tick.)
    const shape = s ? `${s.secret}|${s.cuts.length}|${s.soldOut}|${s.closed}|${s.gate.mode}|${s.stockLeft === 0}|${s.def.opensAt !== null && now < s.def.opensAt}` : '';
    const itemNews = !s || shape !== shapes.get(itemId);
    shapes.set(itemId, shape);
    const served = s?.served ?? Infinity;
    const slow: Promise<void>[] = [];
    const start = performance.now();
    for (const w of [...watchers]) {
      if (itemNews || now >= w.nextAt || w.seq <= served || w.last.state !== 'waiting') {
        const v = deps.queue.cachedView(w.ticketId);
        if (v) offer(itemId, w, v, now);
        else if (!w.reading) slow.push(readSlow(itemId, w));
      }
      if (watchers.has(w) && now - w.lastWriteAt >= deps.heartbeatMs) {
        w.lastWriteAt = now;
        w.sink.heartbeat();
      }
    }
    deps.onPass?.(performance.now() - start);
    await Promise.all(slow);
  }

  async function tick() {
    running = true;
    try {
      await Promise.all([...byItem].map(([itemId, set]) => tickItem(itemId, set)));
    } finally {
      running = false;
      schedule(again ? 0 : deps.tickMs);
      again = false;
    }
  }

  function schedule(ms = deps.tickMs) {
    if (running || count === 0) return;
    if (timer && ms > 0) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      void tick();
    }, ms);
    timer.unref();
  }

  // A sell-out or close made by this process reaches its watchers at once, not at the next tick.
  deps.queue.onCut((itemId) => {
    if (!byItem.has(itemId)) return;
    if (running) again = true;
    else schedule(0);
  });

  return {
    watch(ticketId, first, sink) {
      const parsed = parseTicketId(ticketId)!;
      const itemId = first.itemId;
      const now = deps.clock.now();
      const w: Watcher = { ticketId, seq: parsed.seq, last: first, nextAt: now + (first.pollAfterMs ?? 1000), lastWriteAt: now, sink, reading: false };
      let set = byItem.get(itemId);
      if (!set) byItem.set(itemId, (set = new Set()));
      set.add(w);
      count++;
      schedule();
      return () => remove(itemId, w);
    },
    size: () => count,
  };
}
