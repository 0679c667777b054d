import { createHash, randomBytes } from 'node:crypto';
import { randomToken } from '../kernel/random-token.js';
import type { Clock } from '../kernel/clock.js';
import { FloodgateError } from '../kernel/errors.js';
import type { RedisLike } from '../redis/client.js';
import { itemKeys, subLineTag } from '../redis/keys.js';
import { cutArgs, notOpen } from './line-scripts.js';
import { createScriptRunner, RECLAIM_LIMIT_MANY, scripts } from '../redis/scripts.js';
import type { LineItems } from './items.js';
import type { Cut, LeaseHeld, OutcomeStatus } from './types.js';

/**
 * A hot item's line split into K sub-lines on K hash slots (so, on a cluster, over several
 * masters): the join, peek and admit scripts of sub-line k run on its own tag (keys.ts
 * subLineTag), and only two small steps touch the item's own slot: the join number (one HINCRBY
 * per join) and the gate around each admission round. Sub-line 0 is the item's own keys.
 *
 * Order. Every join takes a number n from the item's counter (ctr jn) and enters its user's
 * sub-line (a stable hash of the user id: one ticket per user stays one script's decision) in a
 * zset by n. An admission round, under the item's short lease: reads the counter (J), fences
 * every sub-line at J (a join numbered ≤ its sub-line's fence is refused and takes a new number),
 * lists each sub-line's first waiting tickets numbered ≤ J, merges the K lists by number and
 * admits the first ones the gate allows. Admission therefore follows join numbers exactly, and a
 * join that ended before another began has the smaller number (one counter, in Redis order).
 *
 * Position. A waiting ticket numbered n shows P = n − A, A the highest number admitted (ctr an).
 * Distinct (numbers are), never rising (A only grows), at least 1 and at least the true count of
 * waiting tickets ahead plus one; it exceeds it by the numbers between A and n that hold no
 * waiting ticket (left the line, or taken by a join that returned an existing ticket or was
 * renumbered). docs/design-notes.md has the proof; test/cluster-sublines.test.ts checks it.
 *
 * Ticket seqs: sub-line k's local seq s is the item's seq (s − 1)·K + k + 1 (equal for K = 1), so
 * a ticket id (ticket-id.ts: item and seq) names its sub-line without a lookup, and no two
 * tickets of the item share a seq. K is fixed for an item's life.
 */

export interface SplitItem {
  itemId: string;
  /** K, the number of sub-lines (1–64). */
  lines: number;
}

/** The item as the split line takes it, if its line is split (lines > 1); null for one line. */
export const splitOf = (def: { itemId: string; lines?: number }): SplitItem | null => ((def.lines ?? 1) > 1 ? { itemId: def.itemId, lines: def.lines! } : null);

/** splitOf an item by id: its cached view when there is one (lines never change under an item), else read. */
export async function splitItemOf(items: Pick<LineItems, 'peek' | 'item'>, itemId: string): Promise<SplitItem | null> {
  const def = (items.peek(itemId) ?? (await items.item(itemId)))?.snap.def;
  return def ? splitOf(def) : null;
}

/** The sub-line a user's tickets of an item are in: a stable hash of the user id. */
export function subLineOf(userId: string, lines: number): number {
  if (lines === 1) return 0;
  return createHash('sha1').update(userId).digest().readUInt32BE(0) % lines;
}

/** An item's seq from a sub-line and its seq there, and back. */
export const splitSeq = (k: number, local: number, lines: number) => (local - 1) * lines + k + 1;
export const subLineSeq = (seq: number, lines: number) => ({ k: (seq - 1) % lines, local: Math.floor((seq - 1) / lines) + 1 });

export interface SplitJoin {
  created: boolean;
  /** The item's seq (what the ticket id carries). */
  seq: number;
  sub: number;
  record: string;
  /** The join number while the ticket waits in the line (0 once admitted, or for a returned ticket). */
  num: number;
}

export interface SplitSettle {
  seq: number;
  leaseId: string;
  status: OutcomeStatus;
  /** The outcome JSON (default: just the status). */
  outcome?: string;
  retry?: boolean;
  force?: boolean;
  /** As SettleEntry.record ('' or absent: not checked). */
  record?: string;
}

export interface SplitAdmitted {
  seq: number;
  sub: number;
  num: number;
  record: string;
  payload: string;
  leaseId: string;
  leaseExp: number;
  /** The item's admission count when this ticket was admitted (1, 2, …): the order over every round and daemon. */
  order: number;
}

export interface SplitLine {
  /** Gives sub-lines 1..K−1 the copy of the item's meta their scripts read (the item must be defined; idempotent). */
  defineSubLines(item: SplitItem): Promise<void>;
  /** `source`: the name of the key that asks, kept with the ticket (the ledger copies it to its row). */
  /**
   * `defaultKeyQuota`: FLOODGATE_DEFAULT_KEY_QUOTA, joins per second per key name (`source`);
   * `uncounted`: the join was counted already (its second try, after a ticket a rollback brought
   * back was ended again: tickets.ts joinSplit).
   */
  join(item: SplitItem, userId: string, payload?: Record<string, unknown> | null, source?: string, defaultKeyQuota?: number, uncounted?: boolean): Promise<SplitJoin>;
  /** The position a waiting ticket numbered `num` shows: num − A. */
  position(item: SplitItem, num: number): Promise<number>;
  /**
   * One admission round: up to `max` tickets in join-number order, as far as the gate allows ([] while
   * another round runs). `paced`, when given, is told in how many ms the pace lets the next ticket
   * in when it alone admitted none (`forMs`; null otherwise).
   */
  /** Null: nothing admitted, the item was redefined since `version` (its view) was read; 'busy': another admission of the item holds its lock. */
  admit(item: SplitItem, max: number, leaseMs: number, autoCap?: number, paced?: { forMs: number | null }, version?: number): Promise<SplitAdmitted[] | null | 'busy'>;
  /** Settles admitted tickets (settle-9.lua on each one's sub-line); a code per entry as settle-9 answers. */
  settle(item: SplitItem, entries: SplitSettle[]): Promise<number[]>;
  /** Keeps leases alive until `until` (extend-leases-3.lua on each one's sub-line); per ticket, whether its lease was still the one given (extended). */
  extendLeases(item: SplitItem, until: number, tickets: { seq: number; leaseId: string }[]): Promise<LeaseHeld[]>;
  /** Returns expired leases of every sub-line to its head (sweep-9.lua on each); how many. */
  sweep(item: SplitItem): Promise<number>;
  /** The tickets held in doubt since `until` or before on every sub-line (read-doubt-2.lua on each), by the item's seqs. */
  readDoubt(item: SplitItem, until: number): Promise<{ seq: number; record: string; held: boolean }[]>;
  /** Gives tickets held in doubt a new lease (relaunch-4.lua on each one's sub-line); the rows of those still in doubt, by the item's seqs. */
  relaunch(item: SplitItem, seqs: number[], leaseMs: number, leasePrefix: string): Promise<{ seq: number; record: string; payload: string; leaseId: string; leaseExp: number }[]>;
  /** Ends tickets held in doubt (resolve-doubt-7.lua on each one's sub-line); how many ended. */
  resolveDoubt(item: SplitItem, entries: { seq: number; outcome: string }[]): Promise<number>;
  /**
   * One ticket as read-ticket-3.lua reads it on its sub-line, and the position it shows while it
   * waits in the line (n − A, A read first; null when not in the line).
   */
  readTicket(item: SplitItem, seq: number): Promise<{ record: string | null; x: Record<string, string>; retryRank: number; cut: Cut | null; position: number | null }>;
  /** The ticket's stored record (null: none). */
  recordOf(item: SplitItem, seq: number): Promise<string | null>;
  /** The name of the key that created the ticket (null: none). */
  sourceOf(item: SplitItem, seq: number): Promise<string | null>;
  /** cancel-9.lua on the ticket's sub-line: 1 cancelled, -1 not found, -2 not cancellable. */
  cancel(item: SplitItem, seq: number, outcome: string, record: string): Promise<number>;
  /** take-stock-2.lua on each ticket's sub-line (a ticket admitted with a unit finds it taken); `left` over every sub-line. */
  takeStock(item: SplitItem, seqs: number[]): Promise<{ taken: boolean[]; ended: boolean[]; left: number }>;
  /** refund-stock-3.lua on the ticket's sub-line. */
  refundStock(item: SplitItem, seq: number, forfeit: boolean): Promise<boolean>;
  /**
   * Sets the item's units left (seckill, coupon), spread over the sub-lines' own stock (set-stock-4.lua
   * on each, one shard each): a ticket takes its unit on its own sub-line when admitted, and an
   * admission round moves units to the sub-lines whose tickets it admits.
   */
  setStock(item: SplitItem, units: number): Promise<void>;
  /** Moves the admission cursor (ctr an) up to `num` (never down): numbers up to it are held by no waiting ticket. */
  moveCursor(item: SplitItem, num: number): Promise<void>;
  /** The units left over every sub-line. */
  unitsLeft(item: SplitItem): Promise<number>;
  /**
   * Ends every waiting ticket of every sub-line (cut-8.lua on each) and refuses joins from then on.
   * A window's end is checked on sub-line 0 (the item's own keys, where closesAt is kept) before
   * any other is cut: null, nothing cut, if closesAt was moved later since the caller's read.
   */
  /** `hold`: by sub-line, its seqs of waiting tickets whose effect Postgres holds (cut-8.lua's hold). */
  cut(item: SplitItem, kind: 'closed' | 'sold_out' | 'window_end', reason?: string, decidedAt?: number, hold?: ReadonlyMap<number, readonly number[]>): Promise<number | null>;
}

/** How often a join whose number an admission round fenced out takes a new one before answering 503. */
const RENUMBERS = 8;
/** Sub-line meta fields copied from the item's (split-join-5.lua reads them). */
const copied = ['epoch', 'handler', 'rejoin', 'opensAt', 'closesAt', 'closed'] as const;

const refusals: Record<number, () => FloodgateError> = {
  [-1]: () => new FloodgateError('item_not_found', 'No such item.'),
  [-3]: () => new FloodgateError('closed', 'The item is closed.'),
  [-4]: () => new FloodgateError('sold_out', 'The item is sold out.'),
};

/**
 * A round's lease prefix on sub-line k. The scripts make a lease id of the prefix and the ticket's
 * seq on its sub-line, which repeats across sub-lines: two tickets of one round shared a lease id,
 * and a job named after the first ticket's lease (service/jobs.ts) was taken by BullMQ for a
 * duplicate of another and dropped, its tickets left admitted with nothing running them.
 */
const subLinePrefix = (leasePrefix: string, k: number) => `${leasePrefix}${k}.`;

export function createSplitLine(deps: { redis: RedisLike; prefix: string; clock: Clock }): SplitLine {
  const { redis, prefix, clock } = deps;
  const { run } = createScriptRunner(redis, prefix);
  const subs = (item: SplitItem) => Array.from({ length: item.lines }, (_, k) => k);
  const tag = (item: SplitItem, k: number) => subLineTag(item.itemId, k);

  /** Entries by sub-line, each with its seq there and its index in `entries`. */
  function bySubLine<E extends { seq: number }>(item: SplitItem, entries: E[]) {
    const groups = new Map<number, { e: E; local: number; i: number }[]>();
    entries.forEach((e, i) => {
      const { k, local } = subLineSeq(e.seq, item.lines);
      groups.set(k, [...(groups.get(k) ?? []), { e, local, i }]);
    });
    return [...groups];
  }

  /** Moves units from sub-lines with more than their chosen tickets need to those with fewer (taken first, then added). */
  async function moveUnits(item: SplitItem, units: number[], chosen: { k: number }[]) {
    const spare = units.map((u) => Math.max(0, u));
    for (const c of chosen) spare[c.k]--;
    for (let k = 0; k < spare.length; k++) {
      for (let j = 0; spare[k] < 0 && j < spare.length; j++) {
        if (spare[j] <= 0) continue;
        const got = (await run(scripts.splitUnits, tag(item, j), clock.now(), { delta: -Math.min(spare[j], -spare[k]) })) as number;
        if (got > 0) await run(scripts.splitUnits, tag(item, k), clock.now(), { delta: got });
        spare[j] -= got;
        spare[k] += got;
      }
    }
  }

  return {
    async defineSubLines(item) {
      const meta = await redis.hmget(itemKeys(prefix, item.itemId).meta, ...copied);
      if (meta[0] === null) throw new FloodgateError('item_not_found', 'No such item.');
      const fields: Record<string, string> = { lines: String(item.lines) };
      copied.forEach((f, i) => (fields[f] = meta[i] ?? ''));
      const cleared = Object.keys(fields).filter((f) => fields[f] === '');
      for (const f of cleared) delete fields[f];
      await redis.hset(itemKeys(prefix, item.itemId).meta, 'lines', String(item.lines));
      await Promise.all(
        subs(item)
          .slice(1)
          .map(async (k) => {
            const keys = itemKeys(prefix, tag(item, k));
            const m = keys.meta;
            // A handler change drops the old handler's stock and sold-out flag here too, as
            // define-5.lua does on the item's own line (a sold-out split seckill redefined as
            // external answered 410 on every sub-line but the first).
            // And its count of users' successes (heldTicket, _lib.lua), from the sub-line's seq on.
            const was = await redis.hget(m, 'handler');
            if (was !== null && was !== fields.handler) {
              const seq = (await redis.hget(keys.ctr, 'seq')) ?? '0';
              await redis.multi().del(keys.stock, keys.taken, keys.wins).hdel(m, 'soldOut', 'endedAt').hset(m, 'winsFrom', seq).exec();
            }
            await redis.hset(m, { ...fields, sub: String(k) });
            // A reopened item is open on every sub-line (closed is the item's flag; cuts stay).
            if (cleared.length) await redis.hdel(m, ...cleared);
          }),
      );
    },

    async join(item, userId, payload, source, defaultKeyQuota, uncounted) {
      const k = subLineOf(userId, item.lines);
      for (let i = 0; i < RENUMBERS; i++) {
        // The key quota is counted once per join, not again for a renumbering or a second try.
        const [num, waitMs] = (await run(scripts.splitNumber, item.itemId, clock.now(), { userId, source: i === 0 && !uncounted ? (source ?? '') : '', defaultKeyQuota: defaultKeyQuota ?? '' })) as [number, number];
        if (num === -7) {
          const retryAfterSec = Math.max(1, Math.ceil(waitMs / 1000));
          throw new FloodgateError('rate_limited', 'Too many joins (perKey quota); try again later.', { quota: 'perKey', retryAfterMs: Math.max(1, Math.ceil(waitMs)), retryAfterSec }, retryAfterSec);
        }
        if (num < 0) throw new FloodgateError('blocked', 'This user is blocked for this item.');
        const [code, local, record, n] = (await run(scripts.splitJoin, tag(item, k), clock.now(), { userId, num, payload: payload ? JSON.stringify(payload) : '', source: source ?? '' })) as [number, number, string, number];
        if (code === -8) continue;
        if (code === 0 || code === 1) return { created: code === 0, seq: splitSeq(k, local, item.lines), sub: k, record, num: n };
        if (code === -2) throw notOpen(local, clock.now(), null);
        throw (refusals[code] ?? (() => new FloodgateError('internal', `split join returned ${code}`)))();
      }
      throw new FloodgateError('unavailable', 'The line is busy; try again.', undefined, 1);
    },

    async position(item, num) {
      return num - Number((await redis.hget(itemKeys(prefix, item.itemId).ctr, 'an')) ?? 0);
    },

    async admit(item, max, leaseMs, autoCap, paced, version) {
      const token = randomBytes(9).toString('base64url');
      const gate = async (op: string, a: { want?: number; inFlight?: number; taken?: number; lastNum?: number }) =>
        Number(await run(scripts.splitGate, item.itemId, clock.now(), { op, token, want: a.want ?? '', inFlight: a.inFlight ?? '', autoCap: autoCap ?? '', taken: a.taken ?? '', lastNum: a.lastNum ?? '', version: op === 'lock' ? (version ?? '') : '' }));
      const upTo = await gate('lock', {});
      if (upTo === -2) return null;
      // Another admission of the item holds its lock (its caller may wait and ask again: admissions.ts).
      if (upTo === -1) return 'busy';
      if (upTo < 0) return [];
      let rows: SplitAdmitted[] = [];
      try {
        const peeks = (await Promise.all(subs(item).map((k) => run(scripts.splitPeek, tag(item, k), clock.now(), { upTo, max })))) as number[][];
        let inFlight = 0;
        let bound = upTo;
        const found: { k: number; local: number; num: number }[] = [];
        const units = peeks.map((p) => p[2]);
        peeks.forEach((p, k) => {
          inFlight += p[0];
          bound = Math.min(bound, p[1]);
          for (let i = 3; i < p.length; i += 2) found.push({ k, local: p[i], num: p[i + 1] });
        });
        // Each list holds every waiting ticket of its sub-line numbered ≤ its bound: merged, the
        // first ones by number up to the least bound are the first of the whole item.
        const eligible = found.filter((c) => c.num <= bound).sort((a, b) => a.num - b.num || a.k - b.k);
        const stocked = units.some((u) => u >= 0);
        const want = Math.min(max, eligible.length, stocked ? units.reduce((s, u) => s + Math.max(0, u), 0) : Infinity);
        const answer = want > 0 ? await gate('allow', { want, inFlight }) : 0;
        // Negative: none, for the pace alone, which lets the next ticket in after -answer ms.
        const allowed = Math.max(0, answer);
        if (paced) paced.forMs = answer < 0 ? -answer : null;
        const chosen = eligible.slice(0, allowed);
        if (stocked) await moveUnits(item, units, chosen);
        const numOf = new Map(chosen.map((c) => [splitSeq(c.k, c.local, item.lines), c.num]));
        const leasePrefix = randomToken(12) + '.';
        const admitted = await Promise.all(
          bySubLine(item, [...numOf.keys()].map((seq) => ({ seq }))).map(async ([k, g]) => {
            const res = (await run(scripts.splitAdmit, tag(item, k), clock.now(), { leaseMs, leasePrefix: subLinePrefix(leasePrefix, k) }, g.map((x) => x.local))) as (string | number)[];
            const got: SplitAdmitted[] = [];
            for (let i = 1; i < res.length; i += 5) {
              const seq = splitSeq(k, Number(res[i]), item.lines);
              got.push({ seq, sub: k, num: numOf.get(seq)!, record: String(res[i + 1]), payload: String(res[i + 2]), leaseId: String(res[i + 3]), leaseExp: Number(res[i + 4]), order: 0 });
            }
            return got;
          }),
        );
        rows = admitted.flat().sort((a, b) => a.num - b.num || a.sub - b.sub);
      } finally {
        // Frees the lease, also after a failed step (its admitted tickets' leases run out and the sweep returns them).
        const total = await gate('commit', { taken: rows.length, lastNum: Math.max(0, ...rows.map((r) => r.num)) });
        rows.forEach((r, i) => (r.order = total - rows.length + i + 1));
      }
      return rows;
    },

    async settle(item, entries) {
      const codes: number[] = new Array(entries.length);
      await Promise.all(
        bySubLine(item, entries).map(async ([k, g]) => {
          const rest = g.flatMap(({ e, local }) => [local, e.leaseId, e.status, e.outcome ?? JSON.stringify({ status: e.status }), e.retry ? '1' : '0', e.force ? '1' : '0', e.record ?? '']);
          ((await run(scripts.settle, tag(item, k), clock.now(), {}, rest)) as number[]).forEach((c, j) => (codes[g[j].i] = c));
        }),
      );
      return codes;
    },

    async extendLeases(item, until, tickets) {
      const held: LeaseHeld[] = tickets.map(() => 0);
      await Promise.all(
        bySubLine(item, tickets).map(async ([k, g]) => {
          ((await run(scripts.extendLeases, tag(item, k), clock.now(), { until }, g.flatMap(({ e, local }) => [local, e.leaseId]))) as number[]).forEach((h, j) => (held[g[j].i] = h as LeaseHeld));
        }),
      );
      return held;
    },

    async sweep(item) {
      // As an unsplit item's (admissions.sweep): a sub-line whose run inside the coalesced call
      // reclaimed its cap may have more, and is swept again alone (after a crash with 200 tickets
      // in flight, 8 came back per sub-line a sweep: ~16 a second).
      const sweepOne = async (k: number, alone: boolean) => (await run(scripts.sweep, tag(item, k), clock.now(), {}, [], { alone })) as number;
      const n = await Promise.all(
        subs(item).map(async (k) => {
          const got = await sweepOne(k, false);
          return got >= RECLAIM_LIMIT_MANY ? got + (await sweepOne(k, true)) : got;
        }),
      );
      return n.reduce((a, b) => a + b, 0);
    },

    async readDoubt(item, until) {
      const all = await Promise.all(
        subs(item).map(async (k) => {
          const flat = (await run(scripts.readDoubt, tag(item, k), clock.now(), { until })) as (number | string)[];
          return Array.from({ length: flat.length / 3 }, (_, i) => ({ seq: splitSeq(k, Number(flat[3 * i]), item.lines), record: String(flat[3 * i + 1]), held: flat[3 * i + 2] === '1' }));
        }),
      );
      return all.flat();
    },

    async relaunch(item, seqs, leaseMs, leasePrefix) {
      const rows = await Promise.all(
        bySubLine(item, seqs.map((seq) => ({ seq }))).map(async ([k, g]) => {
          const flat = (await run(scripts.relaunch, tag(item, k), clock.now(), { leaseMs, leasePrefix: subLinePrefix(leasePrefix, k) }, g.map(({ local }) => local))) as (string | number)[];
          return Array.from({ length: flat.length / 5 }, (_, i) => ({
            seq: splitSeq(k, Number(flat[5 * i]), item.lines),
            record: String(flat[5 * i + 1]),
            payload: String(flat[5 * i + 2]),
            leaseId: String(flat[5 * i + 3]),
            leaseExp: Number(flat[5 * i + 4]),
          }));
        }),
      );
      return rows.flat();
    },

    async resolveDoubt(item, entries) {
      const n = await Promise.all(
        bySubLine(item, entries).map(async ([k, g]) => (await run(scripts.resolveDoubt, tag(item, k), clock.now(), {}, g.flatMap(({ e, local }) => [local, e.outcome]))) as number),
      );
      return n.reduce((a, b) => a + b, 0);
    },

    async readTicket(item, seq) {
      /** Returned tickets of every sub-line that joined before join number `jn` (rare and few: read whole). */
      const returnedAhead = async (it: SplitItem, jn: number) => {
        const lists = await Promise.all(subs(it).map(async (j) => ({ j, seqs: await redis.zrange(itemKeys(prefix, tag(it, j)).retry, '0', '-1') })));
        const jns = await Promise.all(lists.flatMap(({ j, seqs }) => seqs.map((s) => redis.hget(itemKeys(prefix, tag(it, j)).x(Number(s)), 'jn'))));
        return jns.filter((v) => Number(v ?? 0) < jn).length;
      };
      const { k, local } = subLineSeq(seq, item.lines);
      // A and the number before the record: a ticket the record shows waiting in the line was in
      // `wait` when its number was read (it enters both at once and leaves `wait` only by ending or
      // being admitted). Read beside the record, an admission between the two gave a waiting
      // record without a number, and the poll showed the unsplit line's place instead (its item seq).
      const [a, num] = await Promise.all([redis.hget(itemKeys(prefix, item.itemId).ctr, 'an').then((v) => Number(v ?? 0)), redis.zscore(itemKeys(prefix, tag(item, k)).wait, String(local))]);
      const [record, flat, , rank, cut] = (await run(scripts.readTicket, tag(item, k), clock.now(), { seq: local })) as [string | null, string[], number, number, string];
      const x: Record<string, string> = {};
      for (let i = 0; i < (flat?.length ?? 0); i += 2) x[flat[i]] = flat[i + 1];
      // A returned ticket's place among the returned tickets of every sub-line: a round takes them
      // before the line in join order across sub-lines (split-peek-5.lua numbers them by the join
      // number their admission kept), so those joined before it, on any sub-line, are ahead of it.
      // Its rank on its own sub-line alone showed 1 to one of them on each; ranked sub-line by
      // sub-line, a later joiner on sub-line 0 read place 1 while an earlier one on sub-line 1 was
      // taken first.
      const retryRank = rank >= 0 ? await returnedAhead(item, Number(x.jn ?? 0)) : rank;
      // (At least 1: the cursor can pass a waiting ticket's number — a restock's move racing a
      // join numbered while sold out, rounds overlapping past their 2 s lock — and a place of 0 or
      // less is nobody's; the join's answer floors it too.)
      return { record: record || null, x, retryRank, cut: cut ? (JSON.parse(cut) as Cut) : null, position: num === null ? null : Math.max(1, Number(num) - a) };
    },

    recordOf(item, seq) {
      const { k, local } = subLineSeq(seq, item.lines);
      return redis.hget(itemKeys(prefix, tag(item, k)).page(local), String(local));
    },

    sourceOf(item, seq) {
      const { k, local } = subLineSeq(seq, item.lines);
      return redis.hget(itemKeys(prefix, tag(item, k)).sourcePage(local), String(local));
    },

    async cancel(item, seq, outcome, record) {
      const { k, local } = subLineSeq(seq, item.lines);
      return (await run(scripts.cancel, tag(item, k), clock.now(), { seq: local, outcome, record })) as number;
    },

    async takeStock(item, seqs) {
      const taken: boolean[] = new Array(seqs.length);
      const ended: boolean[] = new Array(seqs.length);
      await Promise.all(
        bySubLine(item, seqs.map((seq) => ({ seq }))).map(async ([k, g]) => {
          const [, ...t] = (await run(scripts.takeStock, tag(item, k), clock.now(), {}, g.map((x) => x.local))) as number[];
          t.forEach((v, j) => {
            taken[g[j].i] = v === 1;
            ended[g[j].i] = v === -1;
          });
        }),
      );
      return { taken, ended, left: await this.unitsLeft(item) };
    },

    async refundStock(item, seq, forfeit) {
      const { k, local } = subLineSeq(seq, item.lines);
      return (await run(scripts.refundStock, tag(item, k), clock.now(), { seq: local, forfeit: forfeit ? '1' : '0', upTo: '' })) === 1;
    },

    async setStock(item, units) {
      // A restock of a sold-out item that nobody waits in (the cut ended them all): every join
      // number so far is admitted, cut or refused — joins refused while it was sold out took one
      // each — so the cursor moves past them all, before the units make it take joins again. (The
      // first joiner after the restock was shown the refused joins as places ahead: 321 alone.)
      if (units > 0) {
        const [soldOut, waiting] = await Promise.all([redis.hget(itemKeys(prefix, item.itemId).meta, 'soldOut'), Promise.all(subs(item).map((k) => redis.hget(itemKeys(prefix, tag(item, k)).ctr, 'waiting')))]);
        if (soldOut === '1' && waiting.every((w) => Number(w ?? 0) === 0)) await this.moveCursor(item, Number((await redis.hget(itemKeys(prefix, item.itemId).ctr, 'jn')) ?? 0));
      }
      // The units admitted tickets hold, per sub-line, as set-stock-4.lua counts them (the fewer of
      // its tickets admitted and its unit markers): off the units first, and each sub-line given its
      // share plus its own holders, which its set takes off again. (Shared out first, a sub-line
      // holding more than its share stopped at 0 and the rest stayed on the others: units counted
      // twice, as many tickets admitted too many; a review.)
      const held = await Promise.all(
        subs(item).map(async (k) => {
          const keys = itemKeys(prefix, tag(item, k));
          const [admitted, markers] = await Promise.all([redis.hget(keys.ctr, 'admitted'), redis.hlen(keys.taken)]);
          return Math.min(Number(admitted ?? 0), markers);
        }),
      );
      const free = Math.max(0, units - held.reduce((a, b) => a + b, 0));
      await Promise.all(
        subs(item).map(async (k) => {
          const share = Math.floor(free / item.lines) + (k < free % item.lines ? 1 : 0) + held[k];
          await run(scripts.setStock, tag(item, k), clock.now(), { units: share, shards: 1, idleOnly: '0', admissions: '', unitsWere: '' });
          // A sub-line whose share is 0 still takes joins while the item has units.
          if (units > 0) await redis.hdel(itemKeys(prefix, tag(item, k)).meta, 'soldOut');
        }),
      );
    },

    async moveCursor(item, num) {
      await run(scripts.splitGate, item.itemId, clock.now(), { op: 'commit', token: '', want: '', inFlight: '', autoCap: '', taken: 0, lastNum: num, version: '' });
    },

    async unitsLeft(item) {
      const all = await Promise.all(subs(item).map((k) => redis.hvals(itemKeys(prefix, tag(item, k)).stock)));
      return all.flat().reduce((s, v) => s + Math.max(0, Number(v)), 0);
    },

    async cut(item, kind, reason, decidedAt, hold) {
      const a = cutArgs(kind, reason, decidedAt);
      // A sell-out decided on a Postgres read from before a restock is refused whole, as on one
      // line (cut-8.lua): any sub-line given units since (set-stock-4.lua's stockSetAt) says so.
      // Each sub-line's cut checks again; only a restock landing between the two could leave flags
      // mixed, and the stock keeper reconciles a sold-out item that holds units.
      if (kind === 'sold_out' && decidedAt !== undefined) {
        const setAt = await Promise.all(subs(item).map((k) => redis.hget(itemKeys(prefix, tag(item, k)).meta, 'stockSetAt')));
        if (setAt.some((at) => Number(at ?? 0) > decidedAt)) return null;
        // Nor while an operator's change of the stock is under way (stockPending, cut-8.lua).
        if (Number((await redis.hget(itemKeys(prefix, item.itemId).meta, 'stockPending')) ?? 0) > clock.now()) return null;
      }
      // The cut tickets leave `wait` with the cut, but only those numbered up to the join counter
      // as read before it, each sub-line fenced there first (as an admission round fences it: a
      // join numbered lower takes a new number). A join that comes once a restock or a reopening
      // cleared the sub-line's flag is numbered above, and stays: `wait` used to be deleted whole
      // after the cut, and such a ticket with it (waiting, never admitted).
      const upTo = Number((await redis.hget(itemKeys(prefix, item.itemId).ctr, 'jn')) ?? 0);
      const cutSub = async (k: number, windowEnd: boolean) => {
        await run(scripts.splitPeek, tag(item, k), clock.now(), { upTo, max: 1 });
        const n = (await run(scripts.cut, tag(item, k), clock.now(), { stateChar: a.stateChar, reason: a.reason, flag: a.flag, decidedAt: 'decidedAt' in a ? (a.decidedAt ?? '') : '', windowEnd: windowEnd ? '1' : '', hold: (hold?.get(k) ?? []).join(',') })) as number;
        // A sub-line restocked since the check above refused its cut (-2): its tickets still
        // wait, and stay in `wait` to be admitted (trimmed, they waited for good).
        if (n >= 0) await redis.zremrangebyscore(itemKeys(prefix, tag(item, k)).wait, '-inf', upTo);
        return n;
      };
      const first = kind === 'window_end' ? await cutSub(0, true) : null;
      if (first === -3) return null;
      const rest = await Promise.all(subs(item).filter((k) => first === null || k !== 0).map((k) => cutSub(k, false)));
      const ended = first === null ? rest : [first, ...rest];
      const cut = ended.filter((n) => n >= 0);
      // A sell-out any sub-line refused is no sell-out of the item (its caller would end its own
      // ticket sold_out): what the other sub-lines cut stays cut, and the stock keeper reconciles
      // their flags with the units.
      if (!cut.length || (kind === 'sold_out' && decidedAt !== undefined && cut.length < ended.length)) return null;
      // Every ticket numbered up to upTo has left the line: positions count from there (unless some
      // still wait on a sub-line that refused: then positions stay counted from before, never low).
      if (cut.length === ended.length) await this.moveCursor(item, upTo);
      return cut.reduce((s, n) => s + n, 0);
    },
  };
}
