import type { Clock } from '../kernel/clock.js';
import { FloodgateError } from '../kernel/errors.js';
import type { Line } from './line.js';
import { parseTicketId } from './ticket-id.js';
import type { TicketView } from './types.js';
import type { CachedItem } from './item-cache.js';

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
  /**
   * Its place in the line, which the head (`Group.served`) passes: its seq, but a drawn
   * pre-queue's place for its ticket (set again when the draw lands). By seq, a ticket drawn far
   * ahead of its join was told of its admission at its next heartbeat, 10 s late (a review). On an
   * item split into sub-lines, its join number as far as known (`splitLine`).
   */
  line: number;
  last: TicketView;
  /** Before this time a position drop alone is not sent (pollAfterMs of the last view). */
  nextAt: number;
  lastWriteAt: number;
  sink: WatchSink;
  reading: boolean;
  /** The wheel slot it is due in (-1: none); an entry in another slot is stale. */
  slot: number;
  /** Where it waits between visits (see Group). */
  place: 'wheel' | 'parked' | 'hot' | 'gone';
}

/**
 * The watchers of one item, placed so a tick visits only those with news due:
 * - `hot`: the head reached them, or they are no longer waiting: visited every tick (their fate
 *   needs a read; there are as many as tickets in flight, not as watchers);
 * - the wheel (`slots`, by due time): a waiting watcher whose next position drop or heartbeat is
 *   due then;
 * - `parked`: visited when due but the line had not moved: nothing to send until the head moves,
 *   which puts them all back in the wheel (and their heartbeat slot stays in it meanwhile);
 * - `heads`: the waiting ones by seq (a min-heap), so those the head passes turn hot.
 * A change of the item's shape (a cut, the gate, stock, the opening) visits all of them.
 */
interface Group {
  all: Set<Watcher>;
  hot: Set<Watcher>;
  parked: Set<Watcher>;
  slots: Map<number, Watcher[]>;
  /** Waiting watchers by `line` (an entry whose line is no longer its watcher's is stale: skipped). */
  heads: HeadEntry[];
  /** Slots up to this one were visited. */
  doneSlot: number;
  /** The head, which a watcher whose `line` it reaches has passed: the line's `served`, or a split item's highest join number admitted. */
  served: number;
  /**
   * The item's admissions count, for an item split into sub-lines: its admissions move no head
   * (`served` sums the sub-lines' heads, which only cuts move), so this count is what tells that
   * its line moved. (Its parked watchers waited for their heartbeat, up to 10 s, to be told a
   * place or an admission a poll showed at once.)
   */
  admissions: number;
  /**
   * The item's cancels and returned tickets: either moves places with no head moving (a cancel
   * ahead frees one; returned tickets admitted again leave places before the line), and parked
   * watchers waited for their heartbeat, up to 10 s, for a drop a poll showed at once.
   */
  aside: string;
  /** What decides waiting tickets' state and reason, as of the last tick. */
  shape: string;
}

/** The item's cancels and returned tickets as of a view (Group.aside). */
const asideOf = (item: CachedItem | null | undefined) => (item ? `${item.snap.cancelsTotal}|${item.snap.returned}` : '');

/**
 * Whatever decides a waiting ticket's state or reason: a change of it is news for every watcher.
 * The draw too: it is written a moment after opensAt, and gives every pre-queued ticket its place
 * (streams kept `not_open` and no place for up to 10 s after a poll showed it).
 */
const shapeOf = (item: CachedItem | null | undefined, now: number) => {
  const s = item?.snap;
  return s ? `${s.incarnation}|${s.cuts.length}|${s.soldOut}|${s.closed}|${s.gate.mode}|${s.stockLeft === 0}|${s.def.opensAt !== null && now < s.def.opensAt}|${item!.storeAway()}|${s.draw?.drawn ?? ''}` : '';
};

/** The admissions count of a split item (lines > 1), what moves its line; -1 for one line, whose `served` tells. */
const splitAdmissions = (item: CachedItem | null | undefined) => ((item?.snap.def.lines ?? 1) > 1 ? item!.snap.admissions : -1);

const isSplit = (item: CachedItem | null | undefined) => (item?.snap.def.lines ?? 1) > 1;

/**
 * The head of the item's line as watchers' `line`s count (Group.served): `served` for one line;
 * for a split item, the highest join number admitted (`an`), as its sub-lines' heads move only by
 * cuts. Compared with `served`, a split item's watchers never turned hot, and a stream told an
 * admission at the watcher's next visit (the last view's pollAfterMs, up to 10 s) while a poll
 * showed it at once (a review).
 */
const headOf = (item: CachedItem | null | undefined) => (!item ? Infinity : isSplit(item) ? item.snap.admittedUpTo : item.snap.served);

/**
 * A split item's waiting ticket shows the place n − A + R (split-line.ts: n its join number, A the
 * highest admitted, R the tickets returned to the head, which go first: the view's count), so n is
 * its place less R plus A — A as Redis had it at that read, which `before` (the item's view from
 * before the read: A only grows) does not pass, and R as the view that placed it had it (`before`'s
 * or a refresh's: the larger taken). The join number is then never overstated, and the watcher
 * turns hot when A reaches it, or a little before (a read more). A ticket returned to the head
 * shows its place among the returned (at most R): an n at most A, hot at once, as it goes first.
 */
const splitLine = (v: TicketView, before: CachedItem, after: CachedItem | null | undefined) =>
  v.state === 'waiting' && typeof v.position === 'number' ? v.position - Math.max(before.snap.returned, after?.snap.returned ?? 0) + before.snap.admittedUpTo : Infinity;

interface HeadEntry {
  w: Watcher;
  line: number;
}
const terminal = (v: TicketView) => v.state !== 'waiting' && v.state !== 'admitted';

function pushHead(heap: HeadEntry[], w: Watcher) {
  heap.push({ w, line: w.line });
  for (let i = heap.length - 1; i > 0; ) {
    const up = (i - 1) >> 1;
    if (heap[up].line <= heap[i].line) break;
    [heap[up], heap[i]] = [heap[i], heap[up]];
    i = up;
  }
}

function popHead(heap: HeadEntry[]): HeadEntry | undefined {
  const top = heap[0];
  const last = heap.pop();
  if (heap.length && last) {
    heap[0] = last;
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && heap[l].line < heap[m].line) m = l;
      if (r < heap.length && heap[r].line < heap[m].line) m = r;
      if (m === i) break;
      [heap[m], heap[i]] = [heap[i], heap[m]];
      i = m;
    }
  }
  return top;
}

/**
 * Fans ticket views out to watchers from what the daemon already knows: each tick refreshes the
 * cached view of every watched item once (items.item), then computes the due watchers' views from
 * that snapshot and the ticket's cached record (tickets.cachedView). Redis is read per ticket only
 * where the cache cannot tell — a ticket admitted, settled or returned to the head since — so
 * the reads follow admissions, not watchers, and a sell-out reaches every watcher from one
 * refresh. A state change is sent at once, a place that rose at the next visit, a position drop at most once per the last view's
 * pollAfterMs; a heartbeat when a watcher heard nothing for `heartbeatMs`. A tick's work follows
 * what is due (Group), not the number of watchers: 20,000 watchers of a closed gate cost nothing
 * between heartbeats.
 *
 * The tick runs only while someone watches, so an idle daemon (or a test) has no timer.
 */
export function createTicketWatch(deps: {
  queue: Pick<Line, 'items' | 'tickets' | 'definitions'>;
  clock: Clock;
  tickMs: number;
  heartbeatMs: number;
  onError?(err: unknown): void;
  /** How long one item's pass over its watchers took (ms), for the metrics. */
  onPass?(ms: number): void;
}): TicketWatch {
  const groups = new Map<string, Group>();
  let count = 0;
  let timer: NodeJS.Timeout | null = null;
  let running = false;
  /** A cut came while a tick ran: run the next one at once. */
  let again = false;
  /** Slot n holds watchers due in ((n-1)·tickMs, n·tickMs]; a tick at `now` takes the slots that ended by then. */
  const slotOf = (t: number) => Math.ceil(t / deps.tickMs);
  const endedSlot = (now: number) => Math.floor(now / deps.tickMs);

  function send(w: Watcher, v: TicketView, now: number) {
    w.last = v;
    w.nextAt = now + (v.pollAfterMs ?? 1000);
    w.lastWriteAt = now;
    w.sink.view(v);
  }

  function groupOf(itemId: string) {
    let g = groups.get(itemId);
    if (!g) {
      // Known at once from the cached view where there is one: the first tick then has no news
      // to tell every watcher of (each was just sent the current view).
      const now = deps.clock.now();
      const cached = deps.queue.items.peek(itemId);
      g = { all: new Set(), hot: new Set(), parked: new Set(), slots: new Map(), heads: [], doneSlot: endedSlot(now), served: cached ? headOf(cached) : -1, admissions: splitAdmissions(cached), aside: asideOf(cached), shape: shapeOf(cached, now) };
      groups.set(itemId, g);
    }
    return g;
  }

  function remove(itemId: string, w: Watcher) {
    const g = groups.get(itemId);
    if (!g?.all.delete(w)) return;
    w.place = 'gone';
    g.hot.delete(w);
    g.parked.delete(w);
    count--;
    if (!g.all.size) groups.delete(itemId);
  }

  /** In the wheel at `at` (never in a slot already visited: it would be missed). */
  function due(g: Group, w: Watcher, at: number) {
    const slot = Math.max(slotOf(at), g.doneSlot + 1);
    if (w.slot === slot) return;
    w.slot = slot;
    const list = g.slots.get(slot);
    if (list) list.push(w);
    else g.slots.set(slot, [w]);
  }

  /** Where a watcher still present goes after a visit (or when it starts). */
  function place(g: Group, w: Watcher, now: number, moved: boolean) {
    if (w.place === 'gone') return;
    if (w.last.state !== 'waiting' || w.line <= g.served) {
      g.parked.delete(w);
      g.hot.add(w);
      w.place = 'hot';
      w.slot = -1;
      return;
    }
    g.hot.delete(w); // back in the line (a returned lease): a waiting watcher again
    const heartbeatAt = w.lastWriteAt + deps.heartbeatMs;
    if (!moved && now >= w.nextAt) {
      // Due but the line stood still: wait for the head to move (the heartbeat keeps its slot).
      w.place = 'parked';
      g.parked.add(w);
      due(g, w, heartbeatAt);
      return;
    }
    w.place = 'wheel';
    g.parked.delete(w);
    due(g, w, Math.min(w.nextAt, heartbeatAt));
  }

  /** Sends `v` if it is news for the watcher; ends the watcher after a terminal view. Returns whether the position dropped. */
  function offer(itemId: string, w: Watcher, v: TicketView, now: number): boolean {
    const prev = w.last;
    const changed = v.state !== prev.state || v.reason !== prev.reason;
    const placed = v.state === 'waiting' && typeof v.position === 'number' && typeof prev.position === 'number';
    const moved = placed && v.position! < prev.position!;
    // A rise (tickets returned to the head before it) is rare and bad news: told at the watcher's
    // next visit; unsent, the stream showed the better place until the next drop or state change.
    const rose = placed && v.position! > prev.position!;
    if (terminal(v)) {
      remove(itemId, w);
      if (changed && w.sink.last) return void w.sink.last(v), false;
      if (changed) send(w, v, now);
      return void w.sink.end(), false;
    }
    if (changed || rose || (moved && now >= w.nextAt)) send(w, v, now);
    return moved;
  }

  async function readSlow(itemId: string, g: Group, w: Watcher) {
    w.reading = true;
    const before = deps.queue.items.peek(itemId);
    try {
      const v = await deps.queue.tickets.status(w.ticketId);
      offer(itemId, w, v, deps.clock.now());
      // A split item's watcher learns its join number from each read (a waiting ticket's only read: no cached path).
      if (isSplit(before) && w.place !== 'gone') {
        const line = splitLine(v, before!, deps.queue.items.peek(itemId));
        if (line !== w.line) {
          w.line = line;
          if (line !== Infinity) pushHead(g.heads, w);
        }
      }
    } catch (err) {
      // Gone (an ended item's keys removed): nothing more will be known. Anything else: next tick.
      if (err instanceof FloodgateError && err.code === 'ticket_not_found') {
        remove(itemId, w);
        w.sink.end();
      } else deps.onError?.(err);
    } finally {
      w.reading = false;
      place(g, w, deps.clock.now(), false);
    }
  }

  function visit(itemId: string, g: Group, w: Watcher, now: number) {
    let moved = false;
    const v = deps.queue.tickets.cachedView(w.ticketId);
    if (v) moved = offer(itemId, w, v, now);
    // Not waited for by the tick: one read that waits on a slow Postgres (a ticket Redis lost,
    // looked for in the ledger) held the whole watch — every stream of every item — until it gave
    // up (15 s, past the 10 s keep-alive). One read per watcher at a time; only its stream waits.
    else if (!w.reading) void readSlow(itemId, g, w);
    if (w.place !== 'gone' && now - w.lastWriteAt >= deps.heartbeatMs) {
      w.lastWriteAt = now;
      w.sink.heartbeat();
    }
    place(g, w, now, moved);
  }

  /** Keep-alives for an item whose view cannot be read (Redis away): its streams fell silent for the whole outage, past the 10 s the contract says. */
  function heartbeats(g: Group, now: number) {
    for (const w of g.all) {
      if (w.place === 'gone' || now - w.lastWriteAt < deps.heartbeatMs) continue;
      w.lastWriteAt = now;
      w.sink.heartbeat();
    }
  }

  /** An entry of a watcher that left the wheel, or whose line moved since (pushed again under it). */
  const stale = (e: HeadEntry) => e.w.place === 'gone' || e.w.place === 'hot' || e.line !== e.w.line;

  /** The heap again: one entry per watcher waiting in the line, under its present line. */
  function rebuildHeads(g: Group) {
    g.heads = [];
    for (const w of g.all) if (w.place !== 'gone' && w.place !== 'hot' && w.line !== Infinity) pushHead(g.heads, w);
  }

  async function tickItem(itemId: string, g: Group) {
    const item = await deps.queue.items.item(itemId).catch((err) => (deps.onError?.(err), undefined));
    if (item === undefined) return heartbeats(g, deps.clock.now());
    const now = deps.clock.now();
    const s = item?.snap;
    // A change of whatever decides a waiting ticket's state or reason (a cut, the gate closed or
    // opened, stock out or back, the sale opening) makes every watcher of the item due.
    const shape = shapeOf(item, now);
    const news = !s || shape !== g.shape;
    g.shape = shape;
    const served = headOf(item);
    const admissions = splitAdmissions(item);
    const aside = asideOf(item);
    const headMoved = served !== g.served || admissions !== g.admissions || aside !== g.aside;
    g.served = served;
    g.admissions = admissions;
    g.aside = aside;
    const start = performance.now();
    // The slots due now are taken out first: whoever a visit re-places lands in a later one.
    const current = endedSlot(now);
    const dueNow: [number, Watcher[]][] = [];
    for (let slot = g.doneSlot + 1; slot <= current; slot++) {
      const list = g.slots.get(slot);
      if (list) dueNow.push([slot, list]);
      g.slots.delete(slot);
    }
    g.doneSlot = Math.max(g.doneSlot, current);
    if (news) {
      // (The places may have moved: a pre-queue's draw landed.)
      if (item?.snap.draw?.drawn) {
        for (const w of g.all) w.line = item.lineIndex(w.seq);
        rebuildHeads(g);
      }
      for (const w of [...g.all]) visit(itemId, g, w, now);
    } else {
      // The head passed them: their fate needs a look every tick until it is known.
      while (g.heads.length && (stale(g.heads[0]) || g.heads[0].line <= served)) {
        const { w, line } = popHead(g.heads)!;
        if (w.place !== 'gone' && w.place !== 'hot' && line === w.line) place(g, w, now, false);
      }
      for (const w of [...g.hot]) visit(itemId, g, w, now);
      if (headMoved) for (const w of [...g.parked]) visit(itemId, g, w, now);
      for (const [slot, list] of dueNow) for (const w of list) if (w.slot === slot && w.place !== 'gone' && w.place !== 'hot') visit(itemId, g, w, now);
    }
    // Watchers that ended leave their heap entries behind; rebuild it when they are most of it.
    if (g.heads.length > 64 && g.heads.length > 2 * (g.all.size - g.hot.size)) rebuildHeads(g);
    deps.onPass?.(performance.now() - start);
  }

  async function tick() {
    running = true;
    try {
      await Promise.all([...groups].map(([itemId, g]) => tickItem(itemId, g)));
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
  deps.queue.definitions.onCut((itemId) => {
    if (!groups.has(itemId)) return;
    if (running) again = true;
    else schedule(0);
  });

  return {
    watch(ticketId, first, sink) {
      const parsed = parseTicketId(ticketId)!;
      const itemId = first.itemId;
      const now = deps.clock.now();
      const cached = deps.queue.items.peek(itemId);
      // (A split item's first view was read from Redis just now: A as the view has it may be a refresh newer, a join number overstated by the admissions between; the next read sets it.)
      const line = isSplit(cached) ? splitLine(first, cached!, undefined) : (cached?.lineIndex(parsed.seq) ?? parsed.seq);
      const w: Watcher = { ticketId, seq: parsed.seq, line, last: first, nextAt: now + (first.pollAfterMs ?? 1000), lastWriteAt: now, sink, reading: false, slot: -1, place: 'wheel' };
      const g = groupOf(itemId);
      g.all.add(w);
      count++;
      if (first.state === 'waiting' && line !== Infinity) pushHead(g.heads, w);
      place(g, w, now, true);
      schedule();
      return () => remove(itemId, w);
    },
    size: () => count,
  };
}
