import type { RedisLike } from '../redis/client.js';
import type { Clock } from '../kernel/clock.js';
import { itemKeys, subLineTag } from '../redis/keys.js';
import { readSnapshot, type ItemSnapshot } from './snapshot.js';
import { createScriptRunner, scripts } from '../redis/scripts.js';

/**
 * Per-process view of each item, at most `ttlMs` old, so that polls, "closed", "not open" and
 * "queue full" are answered without a Redis round trip. Refreshes are single-flight per item.
 *
 * Also kept per item:
 * - the cancels of tickets still in the line (read from the item's `cx` stream on each refresh):
 *   a waiting ticket ahead of the head is known to be waiting unless it is in this set;
 * - the admission rate, from the `admissions` counter over the last ~10 s, for ETAs.
 * A refresh reads the stream to its end, in pages, so a start or a rollback's fresh read knows
 * every cancel ahead of the head before it places anyone. Each process lets the stream go of the
 * entries the head has passed (lua/trim-cancels-3.lua): nothing else trims it. If entries were
 * lost from it otherwise (a cap by count, in versions before), `feedComplete` turns false and
 * polls of that item go to Redis (correct, only slower).
 */
export interface CachedItem {
  snap: ItemSnapshot;
  /**
   * What the per-process caches of this item's tickets are valid for: the item's life (its secret
   * and the token it was made with: snapshot.ts `incarnation`) and a
   * generation that moves when the item's counters went backwards (a Redis rollback: a seq may
   * now belong to another ticket, so what was cached under an id must be read again).
   */
  recordKey: string;
  /** Seqs cancelled while still in the line (ahead of the head when last refreshed). */
  cancelled: Set<number>;
  /**
   * Those of `cancelled` this process added itself (its own cancels, tickets.ts) before it read
   * them on the item's cancel stream: the next refresh keeps only what the stream shows, so a
   * cancel a Redis rollback took back is not counted for good by the process that made it.
   */
  ownCancels: Set<number>;
  /**
   * Whether this process saw the item's counters go backwards (a Redis rollback) in this life of
   * the item: a ticket Redis holds waiting or admitted may then have ended before, as its ledger
   * row says (ticket-reader.ts read).
   */
  rolledBack: boolean;
  /** How many of them lie strictly between line places `served` and `place`: the places a cancel freed ahead. */
  cancelledBetween(served: number, place: number): number;
  /** A ticket's place in the line: its seq, except for pre-queued tickets once drawn (queue/draw.ts). */
  lineIndex(seq: number): number;
  feedComplete: boolean;
  /**
   * Admissions per second, measured; null until two samples ~1 s apart exist. Measured afresh from
   * a change of the gate (mode, rate, cap) and from the sale's opening: over time the line could
   * not move, it told waits 3–5× too long for the first ~10 s (a review).
   */
  admitRate: number | null;
  /**
   * Whether the gate's in-flight limit (the operator's cap, or the controller's limit in auto mode:
   * the lower) was full in a view of the last second: what admits then is one ticket per one that
   * ends, and the rate measured says how fast. Read from this view alone, the moment between a
   * settle and the next admission read as not full, and 4 polls in 30 were told the rate set,
   * twice too fast (a review).
   */
  capFull: boolean;
  /** When this view was read (ms, the daemon's clock): what its counters are as of. */
  readAt: number;
  /** Whether the store its handler sells through is away now (Postgres down): its line does not move. */
  storeAway(): boolean;
}

interface Entry {
  item: CachedItem | null;
  refreshing: Promise<CachedItem | null> | null;
  lastCxId: string;
  /** The cancel count (`n`) of the last entry read from the cx stream, or of the last it let go of (ctr cxt) when later. */
  seenCancels: number;
  /** Entries read from the cx stream and not yet let go of, in the stream's order, from `head`: a trim takes those at its front the head passed (trimPassed). */
  trail: Trail;
  samples: { t: number; admissions: number }[];
  /** When the in-flight limit was last seen full (ms; CachedItem.capFull). */
  fullAt?: number;
  /** Since a change of the gate or the opening, until a second of samples: no rate measured yet. */
  measuring?: boolean;
  /** Whether the store its handler sells through was away at the last refresh (its return restarts the measure). */
  away?: boolean;
  /** The drawn pre-queue's seq → place table (draw:p), once loaded. */
  drawPlaces: Buffer | null;
  /** Bumped when the item's counters are seen going backwards (a rollback). */
  generation: number;
  /** Refreshes begun so far, and the number of the last one begun before the last invalidate(): no newer read than that may answer a get() after it. */
  begun: number;
  staleUpTo: number;
}

interface Pinned {
  id: string;
  seq: number;
  n: number;
}

interface Trail {
  ids: string[];
  seqs: number[];
  ns: number[];
  head: number;
  /** Entries behind the head kept in the stream, inside the range of the last cut (seq `pinnedFor`). */
  pinned: Pinned[];
  pinnedFor: string;
  /** When this process last asked Redis to trim (ms). */
  trimmedAt: number;
}

const newTrail = (): Trail => ({ ids: [], seqs: [], ns: [], head: 0, pinned: [], pinnedFor: '', trimmedAt: -Infinity });

/**
 * Entries of the cx stream read per call (a refresh reads to the end): ~25 KB a reply. 20,000 at
 * once (~0.5 MB) passed a Redis's `client-output-buffer-limit` for normal clients set to 256 KB, which
 * closed the connection: a daemon could not start on an item with 4,000 cancels (a review).
 */
const CX_PAGE = 1000;
/** A process trims the stream when this many entries the head passed are in its trail, or at most every TRIM_MS. */
const TRIM_BATCH = 1000;
const TRIM_MS = 10_000;

export interface ItemCache {
  get(itemId: string): Promise<CachedItem | null>;
  /** Forces the next get() to read Redis (after this process changed the item). */
  invalidate(itemId: string): void;
  /** The cached view as it is, however old, without reading Redis. */
  peek(itemId: string): CachedItem | null;
  /** Lets go of the entries of items `keep` refuses (removed ones): an entry, ~3 KB with a drawn pre-queue's places besides, was kept for good. */
  forget(keep: (itemId: string) => boolean): void;
}

/** Counts members of `set` (seqs) whose line place is in (lo, hi), by binary search over a sorted copy of places. */
function counter(set: Set<number>, place: (seq: number) => number) {
  let sorted: number[] = [];
  let size = -1;
  const below = (x: number) => {
    let lo = 0;
    let hi = sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sorted[mid] < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  return (served: number, seq: number) => {
    if (set.size === 0) return 0;
    if (size !== set.size) {
      sorted = [...set].map(place).sort((a, b) => a - b);
      size = set.size;
    }
    return Math.max(0, below(seq) - below(served + 1));
  };
}

export function createItemCache(deps: { redis: RedisLike; prefix: string; clock: Clock; ttlMs: number; storeAway?: (handler: string, itemId: string) => boolean; /** Entries of the cx stream read per call (tests read in small pages). */ cxPage?: number }): ItemCache {
  const cxPage = deps.cxPage ?? CX_PAGE;
  const entries = new Map<string, Entry>();
  const { run } = createScriptRunner(deps.redis, deps.prefix);

  async function refresh(itemId: string, e: Entry): Promise<CachedItem | null> {
    const now = deps.clock.now();
    // The seq the last view saw as newest: its record now says whether a rollback, joined over
    // since up to that seq, put other tickets there (the counters alone do not show it).
    const snap = await readSnapshot(deps.redis, run, deps.prefix, itemId, now, e.item?.snap.seq);
    if (!snap) {
      // Gone (a Redis loss): if it is created anew, its cancel stream starts from nothing.
      e.item = null;
      e.samples = [];
      e.lastCxId = '0';
      e.seenCancels = 0;
      e.trail = newTrail();
      return null;
    }
    // A split item's cancels are counted on each sub-line's own counters (other hash slots): a
    // rollback that took back a cancel on sub-line 2 showed on none of the item's (its user's
    // ticket read `waiting` beside the ledger's `cancelled`, and their join answered it).
    const lines = snap.def.lines ?? 1;
    if (lines > 1) {
      const others = await Promise.all(Array.from({ length: lines - 1 }, (_, i) => deps.redis.hget(itemKeys(deps.prefix, subLineTag(itemId, i + 1)).ctr, 'cxn')));
      for (const n of others) snap.cancelsTotal += Number(n ?? 0);
    }
    const prev = e.item;
    const rolledBack =
      !!prev &&
      prev.snap.incarnation === snap.incarnation &&
      (snap.seq < prev.snap.seq ||
        snap.served < prev.snap.served ||
        snap.admissions < prev.snap.admissions ||
        // A rollback that took back cancels alone (the tickets wait again): kept, the set counted
        // them as gone (places too good behind them), and the next cancels, the count back where
        // it was, were never read (a ticket cancelled through another daemon read `waiting` here).
        snap.cancelsTotal < e.seenCancels ||
        snap.cancelsTotal < prev.snap.cancelsTotal ||
        snap.joinNumbers < prev.snap.joinNumbers ||
        (prev.snap.newestTail != null && snap.probedTail !== prev.snap.newestTail));
    if (rolledBack) {
      e.generation++;
      e.lastCxId = '0';
      e.seenCancels = 0;
      e.trail = newTrail();
    }
    if (prev && prev.snap.incarnation !== snap.incarnation) {
      // The item was deleted from Redis and created anew (its secret may be the same): nothing learnt before applies.
      e.lastCxId = '0';
      e.seenCancels = 0;
      e.trail = newTrail();
      e.samples = [];
    }
    const cancelled = prev && prev.snap.incarnation === snap.incarnation && !rolledBack ? prev.cancelled : new Set<number>();
    // This process's own cancels come back from the stream below (read from past the last entry
    // read, which is before them), unless a rollback took them.
    if (cancelled === prev?.cancelled) for (const s of prev.ownCancels) cancelled.delete(s);
    let feedComplete = prev?.feedComplete ?? true;
    // Cancels the stream let go of were behind the head: accounted for.
    if (snap.cancelsTrimmed > e.seenCancels) e.seenCancels = snap.cancelsTrimmed;
    // (A split item's sub-lines append nothing to it, and its places are read from Redis: not read.)
    if (lines === 1 && snap.cancelsTotal > e.seenCancels) {
      // To the end, page by page: a place counted from part of it is too far back (a start that
      // read 20,000 of 30,000 cancels told 20 for 10 until its later refreshes read the rest).
      const cx = itemKeys(deps.prefix, itemId).cx;
      const t = e.trail;
      for (;;) {
        const rows = (await deps.redis.xrange(cx, `(${e.lastCxId}`, '+', 'COUNT', cxPage)) as [string, string[]][];
        for (const [id, fields] of rows) {
          const seq = Number(fields[1]);
          // `n` since this version; an older entry counts as the next.
          const n = fields[2] === 'n' ? Number(fields[3]) : e.seenCancels + 1;
          cancelled.add(seq);
          e.lastCxId = id;
          // (The highest: entries kept inside a cut's range come before later ones the head passed.)
          e.seenCancels = Math.max(e.seenCancels, n);
          t.ids.push(id);
          t.seqs.push(seq);
          t.ns.push(n);
        }
        if (rows.length < cxPage) break;
      }
      // Fewer than counted: entries lost (a cap by count of an earlier version): the cache cannot place.
      if (e.seenCancels < snap.cancelsTotal) feedComplete = false;
    }
    if (!snap.draw?.drawn || prev?.snap.incarnation !== snap.incarnation) e.drawPlaces = null;
    if (snap.draw?.drawn && snap.draw.n && !e.drawPlaces) e.drawPlaces = await deps.redis.getBuffer(itemKeys(deps.prefix, itemId).drawPlaces);
    const places = e.drawPlaces;
    const drawN = places ? snap.draw!.n! : 0;
    const lineIndex = (seq: number) => (seq <= drawN && seq > 0 ? places!.readUInt32BE((seq - 1) * 4) : seq);
    // Cancels inside the last cut's range are kept: a watcher told of the cut from this view alone
    // must still know that such a ticket had left the line before (tickets.cachedView). Those the
    // head passed outside it go (after a cut, an item reopened kept every cancel from then on: the
    // head rule stopped at the cut's served-before; a review).
    const lastCut = snap.cuts[snap.cuts.length - 1];
    const inCut = lastCut?.[4] !== undefined ? (seq: number) => lineIndex(seq) > lastCut[4]! && seq <= lastCut[0] : () => false;
    const passed = (seq: number) => lineIndex(seq) <= snap.served && !inCut(seq);
    for (const s of cancelled) if (passed(s)) cancelled.delete(s);
    trimPassed(itemId, e, lineIndex, passed, inCut, lastCut ? String(lastCut[0]) : '', now);
    // The rate measured afresh when the gate changed or the sale opened since the last view.
    const gateMoved = !!prev && (prev.snap.gate.mode !== snap.gate.mode || prev.snap.gate.rate !== snap.gate.rate || prev.snap.gate.maxInFlight !== snap.gate.maxInFlight);
    // Opened since the last view: its opensAt passed, or an operator opened it at once (opensAt
    // removed or moved into the past); or the store it sells through came back.
    const opened = !!prev && prev.snap.def.opensAt !== null && prev.readAt < prev.snap.def.opensAt && (snap.def.opensAt === null || snap.def.opensAt <= now);
    const handler = snap.def.handler;
    const away = deps.storeAway?.(handler, itemId) ?? false;
    const storeBack = e.away === true && !away;
    e.away = away;
    if (gateMoved || opened || storeBack) {
      e.samples = [];
      e.measuring = true;
    }
    e.samples.push({ t: now, admissions: snap.admissions });
    while (e.samples.length > 2 && now - e.samples[0].t > 10_000) e.samples.shift();
    const first = e.samples[0];
    const dt = now - first.t;
    // (Until a second of it: none after a change, the last one's otherwise.)
    const admitRate = dt >= 1000 ? ((snap.admissions - first.admissions) * 1000) / dt : e.measuring ? null : (prev?.admitRate ?? null);
    if (dt >= 1000) e.measuring = false;
    // The in-flight limit that holds admissions (views.ts expectedRate): the operator's cap, and in auto mode the controller's limit too.
    const limits = [snap.gate.mode === 'auto' ? (snap.pace?.limit ?? null) : null, snap.gate.maxInFlight].filter((x): x is number => x !== null);
    if (limits.length && snap.counts.admitted >= Math.min(...limits)) e.fullAt = now;
    const capFull = limits.length > 0 && now - (e.fullAt ?? -Infinity) <= 1000;
    const storeAway = () => deps.storeAway?.(handler, itemId) ?? false;
    e.item = { snap, recordKey: `${snap.incarnation}#${e.generation}`, cancelled, ownCancels: new Set(), rolledBack: e.generation > 0, feedComplete, admitRate, capFull, readAt: now, cancelledBetween: counter(cancelled, lineIndex), lineIndex, storeAway };
    return e.item;
  }

  /**
   * Lets the cx stream go of the entries the head has passed (`passed`, as the cancelled set forgets
   * them), once there are TRIM_BATCH of them or TRIM_MS has passed: the trail is read from its front
   * up to the first entry still ahead of the head; those in the last cut's range (`inCut`) are kept
   * aside (`pinned`, looked at again when the last cut changes), the others deleted by id. The
   * script checks the head and the last cut again (a rollback since: it deletes nothing). Not
   * waited for: a refresh answers polls.
   */
  function trimPassed(itemId: string, e: Entry, lineIndex: (seq: number) => number, passed: (seq: number) => boolean, inCut: (seq: number) => boolean, cutSeq: string, now: number) {
    const t = e.trail;
    const del: Pinned[] = [];
    const pins: Pinned[] = [];
    let k = t.head;
    for (; k < t.ids.length; k++) {
      const entry = { id: t.ids[k], seq: t.seqs[k], n: t.ns[k] };
      if (passed(entry.seq)) del.push(entry);
      else if (inCut(entry.seq)) pins.push(entry);
      else break; // still ahead of the head
    }
    // Kept aside for a cut that is no longer the last: gone now, if the head passed them.
    const released = t.pinnedFor === cutSeq ? [] : t.pinned.filter((p) => passed(p.seq));
    del.push(...released);
    const stillPinned = released.length ? t.pinned.filter((p) => !released.includes(p)) : t.pinned;
    if (del.length > 0 && del.length < TRIM_BATCH && now - t.trimmedAt < TRIM_MS) return;
    for (let i = 0; i < del.length; i += TRIM_BATCH) {
      const part = del.slice(i, i + TRIM_BATCH);
      const bound = Math.max(...part.map((p) => lineIndex(p.seq)));
      const lastN = Math.max(...part.map((p) => p.n));
      run(scripts.trimCancels, itemId, now, { lastN, bound, cutSeq }, part.map((p) => p.id)).catch(() => {});
    }
    if (del.length) t.trimmedAt = now;
    t.head = k;
    t.pinned = [...stillPinned, ...pins];
    t.pinnedFor = cutSeq;
    if (t.head > 1024 && t.head * 2 > t.ids.length) {
      t.ids = t.ids.slice(t.head);
      t.seqs = t.seqs.slice(t.head);
      t.ns = t.ns.slice(t.head);
      t.head = 0;
    }
  }

  return {
    async get(itemId) {
      let e = entries.get(itemId);
      if (!e) {
        e = { item: null, refreshing: null, lastCxId: '0', seenCancels: 0, trail: newTrail(), samples: [], drawPlaces: null, generation: 0, begun: 0, staleUpTo: 0 };
        entries.set(itemId, e);
      }
      const fresh = e.item && deps.clock.now() - e.item.snap.loadedAt < deps.ttlMs;
      if (fresh) return e.item;
      const entry = e;
      for (;;) {
        if (!entry.refreshing) {
          const n = ++entry.begun;
          entry.refreshing = refresh(itemId, entry)
            .then((item) => {
              // Begun before an invalidate() (a write of this process's that it may not show): answered, not kept as fresh.
              if (item && n <= entry.staleUpTo) item.snap.loadedAt = -Infinity;
              return item;
            })
            .finally(() => {
              entry.refreshing = null;
            });
        }
        const begunAs = entry.begun;
        const reading = entry.refreshing;
        // A read begun before the last invalidate() is waited out and read again: a change this
        // process just wrote (a gate closed) was answered from the view read before it, and that
        // view was kept as fresh for the cache time (a closed gate's polls told an ETA).
        if (begunAs > entry.staleUpTo) {
          const item = await reading;
          if (!item && entries.size > 10_000) entries.delete(itemId);
          return item;
        }
        await reading.catch(() => {});
      }
    },
    invalidate(itemId) {
      const e = entries.get(itemId);
      if (!e) return;
      if (e.item) e.item.snap.loadedAt = -Infinity;
      e.staleUpTo = e.begun;
    },
    peek: (itemId) => entries.get(itemId)?.item ?? null,
    forget(keep) {
      for (const [itemId, e] of entries) if (!keep(itemId) && !e.refreshing) entries.delete(itemId);
    },
  };
}
