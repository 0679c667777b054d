import { FloodgateError } from '../kernel/errors.js';
import { canonicalJson } from '../kernel/canonical-json.js';
import { randomToken } from '../kernel/random-token.js';
import { ticketRef } from '../kernel/ticket-ref.js';
import type { Clock } from '../kernel/clock.js';
import { drawOrder, drawPositions, seedHashOf } from './draw.js';
import type { EtaMemory } from './eta-memory.js';
import { ACTIVE_GRACE_MS, type ItemDirectory } from './items.js';
import { settleError, type LineScripts, type SettleCode } from './line-scripts.js';
import { RECLAIM_LIMIT_MANY } from '../redis/scripts.js';
import { whenUnheld } from '../redis/reconnect-fence.js';
import { splitItemOf, splitOf, type SplitLine } from './split-line.js';
import type { CachedItem } from './item-cache.js';
import type { TicketReader } from './ticket-reader.js';
import { makeTicketId } from './ticket-id.js';
import type { AdmittedTicket, LeaseHeld, Outcome, OutcomeStatus, TicketView } from './types.js';
import { bindingOf, parseRecord } from './views.js';

export interface SettleInput {
  leaseId: string;
  /** What a run can end with; `cancelled` and `expired` only where the ledger held such an end (dropHeldEnds). */
  status: OutcomeStatus;
  result?: unknown;
  reason?: string;
  retry?: boolean;
  /** Settle under whatever lease the ticket holds now (in-process workers only). */
  force?: boolean;
  /**
   * The ticket's record as it was admitted (AdmittedTicket.record): a ticket at the seq whose record
   * differs is another one (after a Redis rollback, the seq of a lost join is taken again by the next
   * user's) and is not settled (-1). Absent: not checked (jobs queued by an earlier version).
   */
  record?: string;
}

/** Admitting from the head under the gate, and settling what was admitted: what the dispatcher and workers do. */
export interface Admissions {
  /** Admits from the head as far as the gate allows; `autoCap` caps in-flight for an auto gate without its own cap. */
  admit(itemId: string, max: number, leaseMs: number, autoCap?: number): Promise<AdmittedTicket[]>;
  /**
   * As admit, and whether the line is empty now (it held fewer tickets than the gate allowed; never
   * said of a split line), and, when the pace alone admitted none, in how many ms it lets the next
   * ticket in (`pacedForMs`, else null: the dispatcher comes back for the item then).
   */
  /**
   * `version`: the item's definition version the caller will run the tickets under: if the item
   * was redefined since (another daemon's PUT, not yet in the caller's view), nothing is admitted
   * and `stale` says so (the caller reads the item afresh).
   */
  /**
   * `lockWaitMs`: how long a split item's admission may wait for another of the same item to free
   * the item's lock (a pull: concurrent workers' pulls came back empty while tickets waited, a
   * review's fuzzing: 8 pulls of 10 on 60 waiting got 10, 0, 0, 0, 0, 0, 0, 0). A dispatcher round
   * does not wait: it runs beside every other item's, and another round holding the lock admits.
   */
  admitRound(itemId: string, max: number, leaseMs: number, autoCap?: number, version?: number, opts?: { lockWaitMs?: number }): Promise<{ tickets: AdmittedTicket[]; drained: boolean; pacedForMs: number | null; stale?: boolean }>;
  /**
   * An outside worker's write-back (the outcome route). Its result is kept with its object keys
   * in order (canonicalJson), so the same answer sent again in another key order is a repeat, not
   * another outcome. A ticket Redis holds admitted whose end the outcome ledger already wrote (a
   * Redis rollback took the end back, and the lease with it came back to life) ends with the
   * ledger's end: the same answer again is a repeat, another is `409` (it was taken, the user
   * told it, and the ledger's end came back once the ticket's state left Redis).
   */
  settle(ticketId: string, input: SettleInput): Promise<{ view: TicketView; /** Settled before: this call changed nothing (an operator's counters count it once). */ repeat: boolean }>;
  /**
   * Settles many admitted tickets of one item in one call (in-process jobs). Returns a code per
   * entry: 1 applied, 2 a repeat of what was applied, -1 no such ticket, -2 lease lost.
   */
  settleMany(itemId: string, entries: (SettleInput & { seq: number })[]): Promise<SettleCode[]>;
  /**
   * Keeps the leases of tickets handed to a job queue alive until `until` (ms). Per ticket, whether
   * its lease was still the one given (a superseded one is left alone: the ticket was offered again).
   */
  /** Per ticket: 0 superseded (someone else holds it now), 1 extended, 2 extended and admitted before (extend-leases-3.lua). */
  extendLeases(itemId: string, tickets: { seq: number; leaseId: string }[], until: number): Promise<LeaseHeld[]>;
  /**
   * The item's tickets held in doubt since `until` or before (a cut item's admitted tickets whose
   * sale may have committed: lua/_lib.lua holdInDoubt), with their ids; at most 500 per line.
   */
  /** Tickets in doubt since before `until`; `held`: waiting with an outcome of its own for when nothing happened (its user was blocked), never run again. */
  doubts(itemId: string, until: number): Promise<{ seq: number; ticketId: string; userId: string; held: boolean }[]>;
  /** Runs tickets held in doubt again: each gets a new lease (`leaseMs`); those still in doubt, for a job to run. */
  relaunchDoubts(itemId: string, seqs: number[], leaseMs: number): Promise<AdmittedTicket[]>;
  /** Ends tickets held in doubt with Postgres's word: their sale's result, or null for none (then the cut's outcome). */
  /** `result`: the sale's (the ticket succeeded), or null for the outcome it waited with; `outcome`: another end (a released order's). */
  resolveDoubts(itemId: string, entries: { seq: number; result: unknown | null; outcome?: Outcome }[]): Promise<number>;
  /**
   * Of tickets just admitted (pulled, or about to run), those whose end the outcome ledger does not
   * hold yet. One whose end it holds was ended before a Redis rollback took the end back (its user
   * told it, a worker or a call may have made its effect): it is ended again in Redis with the
   * ledger's outcome, under the lease it was just given, and neither handed out nor run. A ledger
   * that cannot be read leaves the tickets as they are (Postgres away and a rollback at once).
   */
  dropHeldEnds<T extends { ticketId: string; seq: number; leaseId: string; record?: string }>(itemId: string, tickets: T[]): Promise<T[]>;
  /** Returns expired leases of every item to the head of its line; draws pre-queues that are due. */
  sweep(): Promise<number>;
  /**
   * Draws the item's pre-queue if it is due (opensAt passed, not drawn yet): idempotent, any daemon
   * may run it. Redis is held only for one chunk at a time (`chunk` line places, default 16384);
   * `onStep` hears how long each Redis step took (ms, round trip included) and, for the chunk
   * writes, how long Redis itself was held (ms, by Redis's clock).
   */
  draw(itemId: string, opts?: { chunk?: number; onStep?: (ms: number, heldMs?: number) => void }): Promise<{ drawn: boolean; n: number }>;
  /**
   * Draws again, over the size Postgres recorded, every pre-queue whose draw Redis lost (a
   * rollback past it): at a daemon's start and after a reconnect, before joins are taken (daemon.ts
   * fence), so that a join after the rollback takes a seq after the draw's. Returns how many it drew.
   */
  redrawLost(): Promise<number>;
  /**
   * Starts the item's draw if none is under way, and settles once its N is fixed in Redis (after
   * Postgres kept it), not when the whole order is written: a join at the opening waits for this
   * only (its seq is then past N). Rejects as the draw does if it fails before.
   */
  drawBegun(itemId: string, dueAt?: number): Promise<void>;
}

/** Postgres's record of each draw's size (db/draw-sizes.ts). */
export interface DrawSizeRecord {
  /** Records `n` for the draw unless one is recorded; returns the recorded size. Rejects while Postgres cannot say. */
  keep(itemId: string, seedHash: string, n: number): Promise<number>;
  /** The recorded draws of live items. */
  recorded(): Promise<{ itemId: string; seedHash: string; size: number }[]>;
  /** The item's draw is made (by this daemon or another): whatever waited for it is over. */
  drawn?(itemId: string): void;
}

export interface AdmissionsDeps {
  clock: Clock;
  items: ItemDirectory;
  scripts: LineScripts;
  /** A split item's sub-lines (lines > 1). */
  split: SplitLine;
  reader: TicketReader;
  eta: EtaMemory;
  /** Ends the waiting tickets when the sale window has passed (definitions.cut). */
  closeLine(itemId: string): void;
  /** A ticket joined and admitted through this process was told `predictedMs` at its join and waited `actualMs`. */
  onWaited?(itemId: string, predictedMs: number | null, actualMs: number): void;
  /** The ends the outcome ledger holds for these ticket refs (db/outcomes.ts readEnds). */
  heldEnds?(refs: string[]): Promise<Map<string, Outcome>>;
  /** The ledger could not be read for dropHeldEnds. */
  onHeldEndsUnread?(err: unknown): void;
  /**
   * Where a draw's size is kept before the draw is shown (absent: nowhere, the size is Redis's
   * alone: a line without Postgres, in tests).
   */
  drawSizes?: DrawSizeRecord;
  /**
   * The hold after a Redis reconnect (redis/reconnect-fence.ts), or null: a script that hands
   * tickets out (an admission round, a pull, a relaunch) waits for it at the moment it is sent.
   * The dispatcher looks at the hold once per round, and a round that began before a reconnect —
   * its look made while Redis was down — sent its admit script after it, on the rolled-back data,
   * inside the hold (a failing run's trace: `bob` admitted 45 ms after the hold began, the close
   * that had ended his ticket not yet put back; fault-rollback-operators failed so 1 run in 6 to 12
   * under three busy loops). (`hold` may throw instead: ReconnectFence.sendable.)
   */
  hold?(): Promise<unknown> | null;
}

export function createAdmissions(deps: AdmissionsDeps): Admissions {
  const { items, scripts, clock } = deps;
  const unheld = <T>(send: (waited: boolean) => Promise<T>) => whenUnheld(deps.hold, send);
  /** Draws under way, and when each fixed its N (joins at the opening wait for that only: drawBegun). */
  const draws = new Map<string, { done: Promise<{ drawn: boolean; n: number }>; begun: Promise<void> }>();

  async function runDraw(itemId: string, chunk: number, onStep: ((ms: number, heldMs?: number) => void) | undefined, fixed: () => void, dueAt = 0) {
    // (`dueAt`: the join script judged the draw due — a join stamped a moment before opensAt, on a
    // clock behind the daemon's that began the draw, is one at the opening — so this daemon's
    // clock, a moment behind, does not find it not due yet.)
    const nowAt = () => Math.max(clock.now(), dueAt);
    const timed = async <T>(step: () => Promise<T>, held?: (r: T) => number) => {
      const t = performance.now();
      const res = await step();
      onStep?.(performance.now() - t, held?.(res));
      return res;
    };
    let begun = await timed(() => scripts.drawBegin(itemId, nowAt(), undefined, deps.drawSizes ? 'peek' : undefined));
    if (begun.status === 'not_due') return { drawn: false, n: 0 };
    if (begun.status === 'drawn') deps.drawSizes?.drawn?.(itemId);
    // N goes to Postgres before anything of the draw is shown (the seed, a place: both only once
    // `finish` marks it drawn). Redis's N comes from its join counter, which a rollback past the
    // draw takes back: drawn again over the smaller N, the shuffle differed and the users who
    // survived the rollback were shown other places than they had been (a review: place 4, then
    // 12). So the first N recorded is the draw's, whoever draws it again and whenever (a second
    // daemon racing this one records nothing and draws over the same N); the seqs Redis lost are
    // holes, skipped as cancelled tickets are. Postgres unreachable: nothing is drawn now (this
    // throws; the sweep tries again), and the tickets read as awaiting the draw meanwhile. Redis
    // fixes nothing before that (`peek`): a begin that fixed N first, refused by Postgres, left the
    // joins at the opening taking seqs past that N — after a rollback, inside the kept one (a
    // review: joins told places 7, 8, 9 drawn in among the pre-queue once Postgres was back).
    if (begun.status === 'to_draw' && deps.drawSizes) {
      const size = await deps.drawSizes.keep(itemId, seedHashOf(begun.seed), begun.n).catch((err: unknown) => {
        throw new Error(`pre-queue draw of ${itemId} waits for its size to be recorded in postgres: ${String(err)}`, { cause: err });
      });
      begun = await timed(() => scripts.drawBegin(itemId, nowAt(), size));
      if (begun.status === 'not_due') return { drawn: false, n: 0 };
    }
    // N is fixed in Redis: a join from now takes a seq past it.
    fixed();
    const { n } = begun;
    if (begun.status === 'to_draw') {
      const order = drawOrder(begun.seed, n);
      const places = drawPositions(order);
      for (let first = 0; first < n; first += chunk) {
        const count = Math.min(chunk, n - first);
        const o = Buffer.alloc(count * 4);
        const p = Buffer.alloc(count * 4);
        for (let i = 0; i < count; i++) {
          o.writeUInt32BE(order[first + i], i * 4);
          p.writeUInt32BE(places[first + i + 1], i * 4);
        }
        await timed(() => scripts.drawWrite(itemId, clock.now(), first, o, p), (us) => us / 1000);
      }
      await timed(() => scripts.drawFinish(itemId, clock.now()));
      deps.drawSizes?.drawn?.(itemId);
    }
    items.invalidate(itemId);
    return { drawn: true, n };
  }

  const splitItem = (itemId: string) => splitItemOf(items, itemId);
  /** A ticket's record as stored, and the id its user holds (made from the record). */
  const ticketOf = (item: CachedItem, seq: number, record: string) => {
    const rec = parseRecord(record, item.snap.epoch);
    return { rec, ticketId: makeTicketId(item.snap.def.itemId, seq, item.snap.secret, bindingOf(rec, item.snap.epoch)) };
  };
  /**
   * Admitted rows as the handlers and pull take them. Their records leave the poll cache: a view of
   * the item read after their joins and before this admission (a view is kept FLOODGATE_CACHE_MS)
   * placed them in the line from memory, and a ticket pulled and written back read `waiting`,
   * place 1, on the daemon that had just admitted and ended it (a flaky test). Their next poll
   * reads Redis, as an admitted ticket's does anyway.
   */
  const admittedTickets = (item: CachedItem, rows: { seq: number; record: string; payload: string; leaseId: string; leaseExp: number }[]): AdmittedTicket[] =>
    rows.map((row, i) => {
      const { rec, ticketId } = ticketOf(item, row.seq, row.record);
      deps.reader.records.delete(ticketId);
      return {
        ticketId,
        seq: row.seq,
        itemId: item.snap.def.itemId,
        userId: rec.userId,
        payload: row.payload ? JSON.parse(row.payload) : null,
        position: i + 1,
        leaseId: row.leaseId,
        leaseExpiresAt: new Date(row.leaseExp).toISOString(),
        createdAt: rec.createdAt,
        record: row.record.slice(1),
      };
    });

  /** The item's draw under way, or one started now. */
  function drawing(itemId: string, opts?: { chunk?: number; onStep?: (ms: number, heldMs?: number) => void; dueAt?: number }) {
    let running = draws.get(itemId);
    if (!running) {
      let fixed!: () => void;
      const begun = new Promise<void>((resolve) => (fixed = resolve));
      const done = runDraw(itemId, opts?.chunk ?? 16_384, opts?.onStep, fixed, opts?.dueAt).finally(() => draws.delete(itemId));
      // A draw that ends before it fixed N (not due, or failed) settles `begun` as it ends.
      const settled = Promise.race([begun, done.then(() => undefined)]);
      // (Handled here: a draw the sweep started and that failed has no join waiting on it.)
      settled.catch(() => {});
      running = { done, begun: settled };
      draws.set(itemId, running);
    }
    return running;
  }

  const admissions: Admissions = {
    async admit(itemId, max, leaseMs, autoCap) {
      return (await admissions.admitRound(itemId, max, leaseMs, autoCap)).tickets;
    },

    async admitRound(itemId, max, leaseMs, autoCap, version, opts) {
      let item = await items.must(itemId);
      if (item.snap.draw && !item.snap.draw.drawn && clock.now() >= item.snap.def.opensAt!) {
        await admissions.draw(itemId);
        item = await items.must(itemId);
      }
      const leasePrefix = randomToken(12) + '.';
      let now = clock.now();
      // Leases to watch until they run out (the sweep returns an expired one to the line): announced
      // before the script, so a crash right after it cannot leave a lease on an item no loop visits
      // (and again, stamped afresh, when a reconnect's hold delayed the script).
      const announce = () => items.keepActive(itemId, now + leaseMs + ACTIVE_GRACE_MS);
      const restamp = (waited: boolean) => {
        if (!waited) return;
        now = clock.now();
        announce();
      };
      announce();
      const sub = splitOf(item.snap.def);
      // Not open yet (opensAt moved into the future on a live line): admit-12.lua holds an
      // unsplit line itself; a split one is held here, on the item's view.
      if (sub && item.snap.def.opensAt !== null && now < item.snap.def.opensAt) return { tickets: [], drained: false, pacedForMs: null };
      const paced = { forMs: null as number | null };
      const closesAt = item.snap.def.closesAt;
      const pastWindow = () => closesAt !== null && now >= closesAt;
      // (let: a split line's admission a reconnect's hold delayed looks at the window's end again.)
      let { windowEnded, drained, rows, pacedForMs, stale } = sub
        ? { windowEnded: pastWindow(), drained: false, rows: [] as { seq: number; record: string; payload: string; leaseId: string; leaseExp: number }[], pacedForMs: null, stale: false }
        : await unheld((waited) => (restamp(waited), scripts.admit(itemId, now, { max, leaseMs, leasePrefix, autoCap: autoCap ?? '', version: version ?? '' })));
      if (stale) return { tickets: [], drained: false, pacedForMs: null, stale: true };
      if (sub && !windowEnded) {
        // Each try looks at the hold again (whenUnheld): a wait for the lock is no gap in it.
        // (`again`: a try after a wait for the lock is stamped afresh too: a pull that waited
        // past closesAt admitted five tickets 700 ms after it, a review.)
        const tryOnce = (again: boolean) =>
          unheld(async (waited) => {
            restamp(waited || again);
            // The window's end was judged on the time before the hold: one that passed meanwhile ends the line, as it would have.
            if (pastWindow()) return 'ended' as const;
            return deps.split.admit(sub, max, leaseMs, autoCap, paced, version);
          });
        const until = performance.now() + (opts?.lockWaitMs ?? 0);
        let got = await tryOnce(false);
        for (let waitMs = 2; got === 'busy' && performance.now() + waitMs < until; waitMs = Math.min(waitMs * 2, 20)) {
          await new Promise((r) => setTimeout(r, waitMs));
          got = await tryOnce(true);
        }
        if (!got) return { tickets: [], drained: false, pacedForMs: null, stale: true };
        if (got === 'ended') windowEnded = true;
        else if (got !== 'busy') rows.push(...got);
      }
      if (windowEnded) {
        // closesAt has passed: nothing is admitted any more, and the waiting tickets end `closed`.
        // (A split line's end is read from the view: read afresh, as an operator may have moved it.)
        const fresh = sub ? await items.item(itemId, { fresh: true }) : null;
        if (sub && !(fresh?.snap.def.closesAt != null && now >= fresh.snap.def.closesAt)) return { tickets: [], drained: false, pacedForMs: null };
        deps.closeLine(itemId);
        return { tickets: [], drained: false, pacedForMs: null };
      }
      const out = admittedTickets(item, rows);
      for (const t of out) {
        const predicted = deps.onWaited ? deps.eta.recall(itemId, t.seq) : undefined;
        if (predicted !== undefined) deps.onWaited!(itemId, predicted, Math.max(0, now - t.createdAt));
      }
      return { tickets: out, drained, pacedForMs: pacedForMs ?? paced.forMs };
    },

    async relaunchDoubts(itemId, seqs, leaseMs) {
      const item = await items.item(itemId);
      if (!item || !seqs.length) return [];
      const leasePrefix = randomToken(12) + '.';
      items.keepActive(itemId, clock.now() + leaseMs + ACTIVE_GRACE_MS);
      const sub = splitOf(item.snap.def);
      const rows = await unheld((waited) => {
        if (waited) items.keepActive(itemId, clock.now() + leaseMs + ACTIVE_GRACE_MS);
        return sub ? deps.split.relaunch(sub, seqs, leaseMs, leasePrefix) : scripts.relaunch(itemId, clock.now(), { leaseMs, leasePrefix }, seqs);
      });
      return admittedTickets(item, rows);
    },

    async settle(ticketId, input) {
      const { item, seq } = await deps.reader.resolve(ticketId);
      // The id's binding half before anything is written, as a cancel does: an id whose seq half
      // matches but that was not made for this ticket (a mistyped last character) changes nothing
      // and answers 404 (the outcome used to be written, and the 404 came after).
      const sub = splitOf(item.snap.def);
      const { record } = sub ? await deps.split.readTicket(sub, seq) : await scripts.readTicket(item.snap.def.itemId, clock.now(), seq);
      deps.reader.bound(ticketId, item, record);
      const asked: SettleInput = { ...input, ...(input.result !== undefined && { result: canonicalJson(input.result) }) };
      const held = record![0] === 'a' ? await heldEnd(ticketId) : undefined;
      // (The record it was bound to goes with the settle: another ticket at the seq meanwhile is not settled.)
      const base = { seq, leaseId: input.leaseId, record: record!.slice(1) };
      // (The ledger's result comes in the key order a write-back's is kept in: db/outcomes.ts readEnds.)
      const [code] = await admissions.settleMany(item.snap.def.itemId, [held ? { ...base, status: held.status, ...(held.result !== undefined && { result: held.result }), ...(held.reason !== undefined && { reason: held.reason }) } : { ...asked, ...base }]);
      const err = settleError(code);
      if (err) throw err;
      if (held && (asked.retry || outcomeJson(held) !== outcomeJson(asked))) throw new FloodgateError('conflict', 'A different outcome was already written under this lease.');
      return { view: await deps.reader.read(ticketId, item, seq), repeat: code === 2 };
    },

    async settleMany(itemId, entries) {
      if (!entries.length) return [];
      items.keepActive(itemId);
      const settles = entries.map((e) => {
        const outcome: Outcome = { status: e.status };
        // A null result is none (the outcome ledger keeps no JSON null: the view lost it once the
        // ticket's state left Redis, `result: null` shown before and missing after).
        if (e.result !== undefined && e.result !== null) outcome.result = e.result;
        if (e.reason !== undefined) outcome.reason = e.reason;
        const lease = { seq: e.seq, leaseId: e.leaseId, force: !!e.force, record: e.record ?? '' };
        // Each entry on its own: a result JSON.stringify cannot take (nested deeper than its stack
        // allows, a BigInt, a cycle) fails its own ticket. It used to throw for the whole batch, and
        // every ticket in it stayed unsettled, to be run again and again.
        try {
          return { ...lease, status: e.status, outcome: JSON.stringify(outcome), retry: !!e.retry };
        } catch {
          return { ...lease, status: 'failed' as const, outcome: JSON.stringify({ status: 'failed', reason: 'invalid_result' } satisfies Outcome), retry: false };
        }
      });
      const sub = await splitItem(itemId);
      return sub ? ((await deps.split.settle(sub, settles)) as SettleCode[]) : scripts.settle(itemId, clock.now(), settles);
    },

    async dropHeldEnds(itemId, tickets) {
      if (!tickets.length || !deps.heldEnds) return tickets;
      const refs = tickets.map((t) => ticketRef(t.ticketId));
      let ends: Map<string, Outcome>;
      try {
        ends = await deps.heldEnds(refs);
      } catch (err) {
        deps.onHeldEndsUnread?.(err);
        // Unread, they run — except on an item this daemon saw rolled back (a failover that lost
        // writes), where an end the ledger holds is what the look is for: a Postgres slow for a
        // moment after a failover had every such ticket handed out or called again.
        if ((items.peek(itemId) ?? (await items.item(itemId).catch(() => null)))?.rolledBack) throw new HeldEndsUnread();
        return tickets;
      }
      if (!ends.size) return tickets;
      const endOf = tickets.map((_, i) => ends.get(refs[i]));
      // (A settle Redis did not take leaves those tickets out all the same: their leases run out and
      // they come back to be ended again; handed out, they would run.)
      await admissions.settleMany(
        itemId,
        tickets.flatMap((t, i) => {
          const o = endOf[i];
          return o ? [{ seq: t.seq, leaseId: t.leaseId, record: t.record, status: o.status, ...(o.result !== undefined && { result: o.result }), ...(o.reason !== undefined && { reason: o.reason }) }] : [];
        }),
      ).catch((err: unknown) => deps.onHeldEndsUnread?.(err));
      return tickets.filter((_, i) => !endOf[i]);
    },

    async doubts(itemId, until) {
      const item = await items.item(itemId);
      if (!item) return [];
      const sub = splitOf(item.snap.def);
      const rows = sub ? await deps.split.readDoubt(sub, until) : await scripts.readDoubt(itemId, clock.now(), until);
      return rows.map(({ seq, record, held }) => {
        const { rec, ticketId } = ticketOf(item, seq, record);
        return { seq, ticketId, userId: rec.userId, held };
      });
    },

    async resolveDoubts(itemId, entries) {
      if (!entries.length) return 0;
      items.keepActive(itemId);
      const outcomes = entries.map((e) => ({ seq: e.seq, outcome: e.outcome ? JSON.stringify(e.outcome) : e.result === null ? '' : JSON.stringify({ status: 'succeeded', result: e.result } satisfies Outcome) }));
      const sub = await splitItem(itemId);
      return sub ? deps.split.resolveDoubt(sub, outcomes) : scripts.resolveDoubt(itemId, clock.now(), outcomes);
    },

    async extendLeases(itemId, tickets, until) {
      if (!tickets.length) return [];
      // The sweep must still look at the item when these leases run out.
      items.keepActive(itemId, until + ACTIVE_GRACE_MS);
      const sub = await splitItem(itemId);
      return sub ? deps.split.extendLeases(sub, until, tickets) : scripts.extendLeases(itemId, clock.now(), until, tickets);
    },

    draw(itemId, opts) {
      return drawing(itemId, opts).done;
    },

    drawBegun(itemId, dueAt) {
      return drawing(itemId, { dueAt }).begun;
    },

    async redrawLost() {
      if (!deps.drawSizes) return 0;
      let drawn = 0;
      let failed: unknown;
      const look = async (rec: { itemId: string; seedHash: string; size: number }) => {
        const item = await items.item(rec.itemId, { fresh: true });
        const d = item?.snap.draw;
        // Not this draw (the item redefined since, for another draw time: another seed), or not
        // lost: drawn, or begun over the recorded N (a join counter at N or past it).
        if (!d || d.drawn || seedHashOf(d.seed) !== rec.seedHash || (d.n === rec.size && item!.snap.seq >= rec.size)) return;
        if ((await admissions.draw(rec.itemId)).drawn) drawn++;
      };
      // Sixteen at a time: this runs inside the reconnect's fence, before joins are taken, and one
      // item after another took 0.35 ms each (a review: 1,000 drawn items, 330–400 ms).
      const recs = await deps.drawSizes.recorded();
      for (let i = 0; i < recs.length; i += 16) {
        await Promise.all(recs.slice(i, i + 16).map((rec) => look(rec).catch((err: unknown) => void (failed ??= err))));
      }
      if (failed) throw failed;
      return drawn;
    },

    async sweep() {
      const now = clock.now();
      let n = 0;
      // The active items: a lease keeps its item active until it ends (extendLeases), and a start or
      // a reconnect makes every item active (items.activateAll).
      const ids = await items.activeItemIds();
      // Draws now due, all at once and beside the lease sweeps; one that fails is reported after
      // every item was swept. (One after another, before the sweeps, each waited up to 2 s for
      // Postgres to keep its size: three due draws behind a slow Postgres held every item's expired
      // leases 6 s — a review.)
      let drawFailed: unknown;
      const due = ids.flatMap((itemId) => {
        const snap = items.peek(itemId)?.snap;
        return snap?.draw && !snap.draw.drawn && now >= snap.def.opensAt! ? [admissions.draw(itemId).catch((err: unknown) => void (drawFailed ??= err))] : [];
      });
      // The sweeps all at once, as one script call (200 items on sale had cost 400 calls a second),
      // in which each item reclaims at most RECLAIM_LIMIT_MANY leases: a run for many items that
      // reclaimed up to 1,000 each could hold Redis for seconds after a crash left leases on all
      // of them. An item that reclaimed that many may have more: it is swept again, alone, at once.
      const swept = await Promise.allSettled(
        ids.map(async (itemId) => {
          const sub = await splitItem(itemId);
          if (sub) return deps.split.sweep(sub);
          const n = await scripts.sweep(itemId, now);
          return n >= RECLAIM_LIMIT_MANY ? n + (await scripts.sweep(itemId, now, true)) : n;
        }),
      );
      for (const r of swept) if (r.status === 'fulfilled') n += r.value;
      await Promise.all(due);
      const failed = swept.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      if (drawFailed) throw drawFailed;
      return n;
    },
  };
  /** The end the outcome ledger holds for a ticket, if it can say so within its bound (else none: the settle goes on as Redis has it). */
  async function heldEnd(ticketId: string): Promise<Outcome | undefined> {
    if (!deps.heldEnds) return undefined;
    try {
      return (await deps.heldEnds([ticketRef(ticketId)])).get(ticketRef(ticketId));
    } catch (err) {
      deps.onHeldEndsUnread?.(err);
      return undefined;
    }
  }

  return admissions;
}

/**
 * The outcome ledger could not be read for tickets of an item this daemon saw rolled back
 * (dropHeldEnds): they are neither handed out nor run now (a pull answers 503 and puts them back at
 * the head; a job holds them for a while).
 */
export class HeldEndsUnread extends FloodgateError {
  constructor() {
    super('unavailable', 'The outcome ledger cannot be read just now; try again shortly.', undefined, 1);
  }
}

/** An outcome as one string whatever its result's key order: what tells a repeat from another answer. */
const outcomeJson = (o: { status: string; result?: unknown; reason?: string }) => JSON.stringify([o.status, canonicalJson(o.result ?? null), o.reason ?? null]);
