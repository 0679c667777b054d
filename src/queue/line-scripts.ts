import { FloodgateError } from '../kernel/errors.js';
import { scripts, type ScriptRunner } from '../redis/scripts.js';
import type { Cut, LeaseHeld, OutcomeStatus } from './types.js';

/**
 * The line's scripts (redis/lua), one typed function each: the one place where their replies are
 * read and their integer codes become results or errors.
 */

/** The join script's refusal of an ended item, as it words it (also given from memory: ended-users.ts). */
export const endedRefusal = (closed: boolean) => (closed ? new FloodgateError('closed', 'The item is closed.') : new FloodgateError('sold_out', 'The item is sold out.'));

const joinRefusals: Record<number, { error: () => FloodgateError; itemChanged: boolean }> = {
  [-1]: { error: () => new FloodgateError('item_not_found', 'No such item.'), itemChanged: true },
  [-3]: { error: () => endedRefusal(true), itemChanged: true },
  [-4]: { error: () => endedRefusal(false), itemChanged: true },
  [-5]: { error: () => new FloodgateError('queue_full', 'The line is full; try again later.', undefined, 5), itemChanged: true },
  // (About the user, not the item: a blocked bot's repeated joins dropped the view every poll reads.)
  [-6]: { error: () => new FloodgateError('blocked', 'This user is blocked for this item.'), itemChanged: false },
  [-8]: { error: memoryFullRefusal, itemChanged: false },
};

/** A new join while Redis is near its memory limit (queue/memory-guard.ts). */
export function memoryFullRefusal(): FloodgateError {
  return new FloodgateError('unavailable', 'The queue is near its memory limit: new joins wait until tickets in line end and free it; try again shortly.', undefined, 5);
}

export type JoinReply =
  | {
      kind: 'created' | 'existing';
      seq: number;
      record: string;
      served: number;
      /** An existing ticket's join over a quota (answered with the ticket): the refusal a new ticket would have met. */
      overQuota?: FloodgateError;
    }
  /** `itemChanged`: the refusal says the cached item view is stale (closed, sold out, full…). */
  | { kind: 'refused'; error: FloodgateError; itemChanged: boolean }
  /** The item's pre-queue is due and not drawn: draw it, then join again (join-5.lua -9). */
  | { kind: 'drawPending' };

/** A ticket as admission hands it out: its record, payload JSON ('' none) and lease. */
export interface AdmittedRow {
  seq: number;
  record: string;
  payload: string;
  leaseId: string;
  leaseExp: number;
}

/** settle-9.lua's code per ticket: 1 applied, 2 a repeat of what was applied, -1 no such ticket, -2 lease lost, -3 another outcome under this lease. */
export type SettleCode = 1 | 2 | -1 | -2 | -3;

export interface SettleEntry {
  seq: number;
  leaseId: string;
  status: OutcomeStatus;
  outcome: string;
  retry: boolean;
  force: boolean;
  /** The ticket's record without its state character ('' = not checked): settle-9.lua answers -1 for another ticket at the seq. */
  record: string;
}

/** The error a single settle answers for a code (null when it applied). */
export function settleError(code: SettleCode): FloodgateError | null {
  if (code === -1) return new FloodgateError('ticket_not_found', 'No such ticket.');
  if (code === -2) return new FloodgateError('lease_lost', 'The lease expired or was superseded.');
  if (code === -3) return new FloodgateError('conflict', 'A different outcome was already written under this lease.');
  return null;
}

const notFound = () => new FloodgateError('item_not_found', 'No such item.');

/**
 * `425 not_open`: `details.opensAt` and the server's `now`, and with a pre-queue `joinsFrom`, when
 * its joins are taken (opensAt − fromMs): a client that waited for `opensAt` alone (the invite
 * page did) joined after the draw, behind users who came later.
 */
export function notOpen(opensAt: number, now: number, joinsFrom: number | null): FloodgateError {
  const details = { opensAt: new Date(opensAt).toISOString(), now: new Date(now).toISOString(), ...(joinsFrom !== null && { joinsFrom: new Date(joinsFrom).toISOString() }) };
  return new FloodgateError('not_open', 'The sale has not opened yet.', details);
}
/** What cut-8.lua is given for a kind of cut: close → cancelled, sold out → rejected, the window's end → cancelled/closed (checked against closesAt). */
export function cutArgs(kind: 'closed' | 'sold_out' | 'window_end', reason?: string, decidedAt?: number) {
  return kind === 'sold_out'
    ? ({ stateChar: 'r', reason: reason ?? 'sold_out', flag: 'soldOut', decidedAt } as const)
    : ({ stateChar: 'c', reason: reason ?? (kind === 'window_end' ? 'closed' : 'item_closed'), flag: 'closed', windowEnd: kind === 'window_end' } as const);
}

/** define-5.lua's -4; catalog.ts checks it first from the view. */
export const LINES_CHANGE = 'The lines of an existing item cannot change (its ticket ids depend on them).';
/** The pre-queue conflicts (define-5.lua's -2, -3 and -5; catalog.ts checks them first from the view). */
export const PRE_QUEUE_AFTER_TICKETS = 'A pre-queue cannot be added to an item whose line has had tickets; use a new item.';
export const PRE_QUEUE_DRAWN = 'This item\'s pre-queue was drawn already, and a pre-queue is drawn once per item: give another sale its own item id, or drop preQueue to reopen it first come, first served.';
export const PRE_QUEUE_AWAITED = 'The pre-queue of an item whose tickets await its draw cannot be removed, nor its draw (opensAt) moved, before the draw; close the item first, or wait for the draw.';
export const PRE_QUEUE_AFTER_CUT = 'An item that closed or sold out before its pre-queue was drawn cannot open again with it; open it without preQueue, or use a new item.';
const bit = (on: boolean) => (on ? '1' : '0');

/** Admitted tickets as the scripts list them from `from` on: seq, record, payload, leaseId, leaseExp each. */
function admittedRows(res: (string | number)[], from: number): AdmittedRow[] {
  const rows: AdmittedRow[] = [];
  for (let i = from; i < res.length; i += 5) {
    rows.push({ seq: Number(res[i]), record: String(res[i + 1]), payload: String(res[i + 2]), leaseId: String(res[i + 3]), leaseExp: Number(res[i + 4]) });
  }
  return rows;
}

export function createLineScripts(run: ScriptRunner['run']) {
  return {
    async join(itemId: string, now: number, a: { userId: string; payload: string; source: string; defaultKeyQuota: number | ''; memoryFull: '1' | ''; uncounted?: '1' | '' }): Promise<JoinReply> {
      const [code, n, record, served, over, overWait] = (await run(scripts.join, itemId, now, { uncounted: '', ...a })) as [number, number, string, number, string?, number?];
      // Over a quota: ms until its window ends, which quota. Retry-After in whole seconds, at least 1.
      const quotaRefusal = (quota: string, waitMs: number) => {
        const retryAfterSec = Math.max(1, Math.ceil(waitMs / 1000));
        return new FloodgateError('rate_limited', `Too many joins (${quota} quota); try again later.`, { quota, retryAfterMs: Math.max(1, Math.ceil(waitMs)), retryAfterSec }, retryAfterSec);
      };
      if (code === 0) return { kind: 'created', seq: n, record, served };
      if (code === 1) return { kind: 'existing', seq: n, record, served, ...(over ? { overQuota: quotaRefusal(over, overWait ?? 0) } : {}) };
      if (code === -7) return { kind: 'refused', itemChanged: false, error: quotaRefusal(record, n) };
      if (code === -9) return { kind: 'drawPending' };
      if (code === -2) {
        // Not open yet: n = opensAt; the 4th value, with a pre-queue, when its joins are taken.
        return { kind: 'refused', itemChanged: false, error: notOpen(n, now, typeof served === 'number' ? served : null) };
      }
      const r = joinRefusals[code];
      return { kind: 'refused', itemChanged: r?.itemChanged ?? true, error: r ? r.error() : new FloodgateError('internal', `join returned ${code}`) };
    },

    async readTicket(itemId: string, now: number, seq: number) {
      const [record, flat, served, retryRank, cut] = (await run(scripts.readTicket, itemId, now, { seq })) as [string | null, string[], number, number, string];
      const x: Record<string, string> = {};
      for (let i = 0; i < (flat?.length ?? 0); i += 2) x[flat[i]] = flat[i + 1];
      return { record: record || null, x, served, retryRank, cut: cut ? (JSON.parse(cut) as Cut) : null };
    },

    /** Clears the user's entry if it still names `seq` (forget-user-1.lua): they may join again. */
    async forgetUser(itemId: string, now: number, a: { userId: string; seq: number }): Promise<boolean> {
      return (await run(scripts.forgetUser, itemId, now, a)) === 1;
    },

    /** 'not_waiting': the ticket is no longer in the line (admitted, ended, or cut); 'ran_before': back at the head after a run whose effect is not known (cancel-9.lua). */
    async cancel(itemId: string, now: number, a: { seq: number; outcome: string; record: string }): Promise<CancelResult> {
      return cancelResult((await run(scripts.cancel, itemId, now, a)) as number);
    },

    /**
     * `windowEnded`: closesAt has passed, nothing was admitted (the caller cuts the line). `drained`:
     * the line held fewer than the gate allowed, and is empty now. `pacedForMs`: nothing was
     * admitted for the pace alone, which lets the next ticket in after this many ms (else null).
     * `stale`: nothing was admitted, `version` is not the item's definition any more.
     */
    async admit(itemId: string, now: number, a: { max: number; leaseMs: number; leasePrefix: string; autoCap: number | ''; version: number | '' }): Promise<{ windowEnded: boolean; drained: boolean; rows: AdmittedRow[]; pacedForMs: number | null; stale?: boolean }> {
      const res = (await run(scripts.admit, itemId, now, a)) as (string | number)[];
      if (res[0] === -1) throw notFound();
      if (res[0] === 3) return { windowEnded: false, drained: false, rows: [], pacedForMs: null, stale: true };
      if (res[0] === 2) return { windowEnded: false, drained: false, rows: [], pacedForMs: Number(res[1]) };
      return { windowEnded: res[0] === -2, drained: res[0] === 1, rows: admittedRows(res, 2), pacedForMs: null };
    },

    /** Gives tickets held in doubt a new lease (relaunch-4.lua); the rows of those still in doubt. */
    async relaunch(itemId: string, now: number, a: { leaseMs: number; leasePrefix: string }, seqs: number[]): Promise<AdmittedRow[]> {
      return admittedRows((await run(scripts.relaunch, itemId, now, a, seqs)) as (string | number)[], 0);
    },

    async settle(itemId: string, now: number, entries: SettleEntry[]): Promise<SettleCode[]> {
      const rest = entries.flatMap((e) => [e.seq, e.leaseId, e.status, e.outcome, bit(e.retry), bit(e.force), e.record]);
      return (await run(scripts.settle, itemId, now, {}, rest)) as SettleCode[];
    },

    /**
     * How many expired leases went back to the head: up to 1,000 `alone`, else up to
     * RECLAIM_LIMIT_MANY when other items' sweeps of the same turn share its call (scripts.ts).
     */
    sweep: async (itemId: string, now: number, alone = false) => (await run(scripts.sweep, itemId, now, {}, [], { alone })) as number,

    /** How many leases were extended (a superseded one is left alone). */
    extendLeases: async (itemId: string, now: number, until: number, tickets: { seq: number; leaseId: string }[]) =>
      (await run(scripts.extendLeases, itemId, now, { until }, tickets.flatMap((t) => [t.seq, t.leaseId]))) as LeaseHeld[],

    /** The tickets held in doubt since `until` or before (seq and record), oldest first, at most 500. */
    async readDoubt(itemId: string, now: number, until: number): Promise<{ seq: number; record: string; held: boolean }[]> {
      const flat = (await run(scripts.readDoubt, itemId, now, { until })) as (number | string)[];
      return Array.from({ length: flat.length / 3 }, (_, i) => ({ seq: Number(flat[3 * i]), record: String(flat[3 * i + 1]), held: flat[3 * i + 2] === '1' }));
    },

    /** Ends tickets held in doubt: with their sale's outcome (JSON), or '' for the cut's; how many ended. */
    resolveDoubt: async (itemId: string, now: number, entries: { seq: number; outcome: string }[]) =>
      (await run(scripts.resolveDoubt, itemId, now, {}, entries.flatMap((e) => [e.seq, e.outcome]))) as number,

    /** Throws conflict when the handler would change under live tickets. */
    /** `epoch`, `born`: see define-5.lua. Returns the secret and epoch the item signs with now. */
    async define(itemId: string, now: number, a: { secret: string; definition: Record<string, string>; gate: Record<string, string> | null; reopen: boolean; epoch?: number | null; born: string; drawSeed: string }) {
      const [code, secret, epoch] = (await run(scripts.define, itemId, now, { secret: a.secret, definition: JSON.stringify(a.definition), gate: a.gate ? JSON.stringify(a.gate) : '', reopen: bit(a.reopen), epoch: a.epoch ?? '', born: a.born, drawSeed: a.drawSeed })) as [number, string, number];
      if (code === -1) throw new FloodgateError('conflict', 'The handler of an item with live tickets cannot change.');
      if (code === -2) throw new FloodgateError('conflict', PRE_QUEUE_AFTER_TICKETS);
      if (code === -3) throw new FloodgateError('conflict', PRE_QUEUE_AFTER_CUT);
      if (code === -4) throw new FloodgateError('conflict', LINES_CHANGE);
      if (code === -5) throw new FloodgateError('conflict', PRE_QUEUE_AWAITED);
      return { created: code === 1, secret, epoch: Number(epoch) };
    },

    /**
     * How many waiting tickets the cut ended; null for a sell-out refused (units set since
     * `decidedAt`) or a window's end refused (closesAt moved later: cut-8.lua). `hold`: waiting
     * tickets whose effect Postgres holds, held in doubt instead of ended.
     */
    async cut(itemId: string, now: number, a: { stateChar: 'c' | 'r'; reason: string; flag: 'closed' | 'soldOut'; decidedAt?: number; windowEnd?: boolean }, hold: readonly number[] = []) {
      const n = (await run(scripts.cut, itemId, now, { ...a, decidedAt: a.decidedAt ?? '', windowEnd: a.windowEnd ? '1' : '', hold: hold.join(',') })) as number;
      if (n === -2 || n === -3) return null;
      if (n < 0) throw notFound();
      return n;
    },

    /**
     * Holds in doubt these waiting tickets, whose sale Postgres holds, where they stand in the line
     * (hold-bought-9.lua; those no longer waiting are left alone); how many it held.
     */
    holdBought: async (itemId: string, now: number, seqs: readonly number[]) => (seqs.length ? ((await run(scripts.holdBought, itemId, now, {}, [...seqs])) as number) : 0),

    /**
     * The draw's first step: 'not_due' before opensAt or without a pre-queue. `size`: N as Postgres
     * recorded it, made the draw's (and the join counter raised to it) unless drawn already;
     * `peek`: the same answer, nothing fixed (the N to keep in Postgres first).
     */
    async drawBegin(itemId: string, now: number, size?: number, peek?: 'peek'): Promise<{ status: 'not_due' } | { status: 'to_draw' | 'drawn'; n: number; seed: string }> {
      const [code, n, seed] = (await run(scripts.draw, itemId, now, { op: peek ?? 'begin', first: '', order: '', places: '', size: size ?? '' })) as [number, number, string];
      if (code === -1) return { status: 'not_due' };
      return { status: code === 1 ? 'to_draw' : 'drawn', n, seed };
    },
    /** Writes one chunk; returns how long Redis was held (µs, by its own clock). */
    drawWrite: async (itemId: string, now: number, first: number, order: Buffer, places: Buffer) =>
      (await run(scripts.draw, itemId, now, { op: 'write', first, order, places, size: '' })) as number,
    drawFinish: async (itemId: string, now: number) => void (await run(scripts.draw, itemId, now, { op: 'finish', first: '', order: '', places: '', size: '' })),

    /** Sets or clears one of a user's block bits (1 this item, 2 everywhere); returns the bits after. */
    block: async (itemId: string, now: number, userId: string, which: 1 | 2, on: boolean) => (await run(scripts.block, itemId, now, { userId, bit: which, on: bit(on) })) as number,
  };
}

export type LineScripts = ReturnType<typeof createLineScripts>;

export type CancelResult = 'cancelled' | 'not_waiting' | 'ran_before';
/** cancel-9.lua's code as its callers take it (-1: no such ticket). */
export function cancelResult(code: number): CancelResult {
  if (code === -1) throw new FloodgateError('ticket_not_found', 'No such ticket.');
  return code === 1 ? 'cancelled' : code === -3 ? 'ran_before' : 'not_waiting';
}
