import type { RedisLike } from '../redis/client.js';
import { itemKeys, subLineTag } from '../redis/keys.js';
import { scripts, type ScriptRunner } from '../redis/scripts.js';
import { paceOf, type ControllerPace } from './gate-rule.js';
import { counterNames, rejoinOf, type Counts, type Cut, type GateSettings, type LineDefinition } from './types.js';

/** One consistent read of an item's meta, counters and gate (one script, so the parts agree). */
export interface ItemSnapshot {
  def: LineDefinition;
  secret: string;
  epoch: number;
  /**
   * This life of the item: its secret and the random token define-5.lua gave it when it was made.
   * An item made again after a Redis loss keeps its secret (and epoch), so what cached anything of
   * its tickets tells the two lives apart by this, not by the secret.
   */
  incarnation: string;
  version: number;
  closed: boolean;
  soldOut: boolean;
  /** When the item first closed or sold out (ms), null while it runs. */
  endedAt: number | null;
  cuts: Cut[];
  seq: number;
  served: number;
  /**
   * Tickets returned to the head (their lease ran out, or a retry): admitted before every ticket
   * in the line, so a place in the line counts them (views.ts linePosition). 0 for a split item
   * (its sub-lines' positions are n − A).
   */
  returned: number;
  /** The record (without its state char) of the ticket at `seq`, and of the one at the seq the read probed (readSnapshot): a rollback's fingerprint. Null for a split item, or none. */
  newestTail?: string | null;
  probedTail?: string | null;
  /** Split items (def.lines > 1): the highest join number admitted (queue/split-line.ts), what positions count from. */
  admittedUpTo: number;
  admissions: number;
  /** Admitted tickets of a cut item waiting for Postgres's word on their sale (ctr doubt; lua/_lib.lua holdInDoubt). */
  inDoubt: number;
  /** Cancels of tickets in the line so far (ctr cxn; each cancel's entry on the cx stream carries its count as `n`). */
  cancelsTotal: number;
  /** A split item's joins numbered so far (ctr jn, split-number-3.lua). */
  joinNumbers: number;
  /** The `n` of the last cancel the cx stream let go of (ctr cxt; lua/trim-cancels-3.lua): cancels the head passed. */
  cancelsTrimmed: number;
  counts: Counts;
  gate: GateSettings;
  /** The controller's limit and pace that admission obeys in auto mode (null before it has run). */
  pace: ControllerPace | null;
  /** The gate hash as read: the controller's other published fields (scheduler/controller-view.ts). */
  gateHash: Record<string, string>;
  /** Units left in the Redis stock shards (seckill, coupon); null where the item has no stock. */
  stockLeft: number | null;
  /**
   * The pre-queue draw (queue/draw.ts): null for an item without a pre-queue whose line was never
   * drawn. A drawn line keeps it when the pre-queue is removed: admission keeps the drawn order
   * (admit-12.lua), so positions must too.
   */
  draw: { seed: string; n: number | null; drawn: boolean; drawnAt: number | null } | null;
  loadedAt: number;
}

const num = (v: string | undefined) => (v === undefined || v === '' ? null : Number(v));

/** meta's "limit:windowMs" form of a quota (join-5.lua reads the same). */
const quotaOf = (name: string, v: string | undefined) => {
  if (!v) return {};
  const [limit, windowMs] = v.split(':').map(Number);
  return { [name]: { limit, windowMs } };
};

/** A flat HGETALL reply (field, value, …) as an object. */
function fields(flat: string[]): Record<string, string> {
  const o: Record<string, string> = {};
  for (let i = 0; i < flat.length; i += 2) o[flat[i]] = flat[i + 1];
  return o;
}

/** The item's parts in one script (snapshot-4.lua), then, for a split item, its sub-lines' counters. */
export async function readSnapshot(redis: RedisLike, run: ScriptRunner['run'], prefix: string, itemId: string, now: number, probe?: number): Promise<ItemSnapshot | null> {
  const [m, c, g, stock, returned, newest, probed] = (await run(scripts.snapshot, itemId, now, { probe: probe ?? '' })) as [string[], string[], string[], string[], number, string, string];
  const meta = fields(m);
  if (!meta.handler) return null;
  const ctr = fields(c);
  const gate = fields(g);
  const lines = Number(meta.lines ?? 1);
  // (A record without its state char: the state moves on; who joined when does not.)
  const tail = (r: string | undefined) => (r ? r.slice(1) : null);
  if (lines <= 1) return { ...parseSnapshot(itemId, meta, ctr, gate, now, stockOf(stock)), returned: Number(returned ?? 0), newestTail: tail(newest), probedTail: tail(probed) };
  const split = await splitCounters(redis, prefix, itemId, lines, ctr, stock);
  return { ...parseSnapshot(itemId, meta, { ...ctr, ...split.ctr }, gate, now, stockOf(split.stock)), returned: Number(returned ?? 0) + split.returned };
}

const stockOf = (stock: string[]) => (stock.length ? stock.reduce((a, v) => a + Math.max(0, Number(v)), 0) : null);

/**
 * A split item's line counters summed over its sub-lines (sub-line 0's are the item's own), and
 * its stock over theirs: what the dispatcher, the views and the stock keeper read. Read after the
 * item's own, one sub-line at a time (other slots), so they agree only as far as a poll needs.
 */
async function splitCounters(redis: RedisLike, prefix: string, itemId: string, lines: number, own: Record<string, string>, ownStock: string[]) {
  const subs = await Promise.all(
    Array.from({ length: lines - 1 }, async (_, i) => {
      const k = itemKeys(prefix, subLineTag(itemId, i + 1));
      return { ctr: await redis.hgetall(k.ctr), stock: await redis.hvals(k.stock), returned: await redis.zcard(k.retry) };
    }),
  );
  const ctr: Record<string, string> = {};
  for (const name of [...counterNames, 'seq', 'served', 'doubt']) ctr[name] = String(subs.reduce((s, x) => s + Number(x.ctr[name] ?? 0), Number(own[name] ?? 0)));
  return { ctr, stock: [...ownStock, ...subs.flatMap((x) => x.stock)], returned: subs.reduce((s, x) => s + x.returned, 0) };
}

export function parseSnapshot(
  itemId: string,
  meta: Record<string, string>,
  ctr: Record<string, string>,
  gate: Record<string, string>,
  now: number,
  stockLeft: number | null = null,
): ItemSnapshot {
  const counts = Object.fromEntries(counterNames.map((n) => [n, Number(ctr[n] ?? 0)])) as Counts;
  return {
    def: {
      itemId,
      handler: meta.handler,
      config: meta.config ? JSON.parse(meta.config) : {},
      capacity: num(meta.capacity),
      abandonAfterMs: num(meta.abandonAfterMs),
      opensAt: num(meta.opensAt),
      closesAt: num(meta.closesAt),
      rejoin: rejoinOf(meta.rejoin),
      quotas: meta.qUser || meta.qKey ? { ...quotaOf('perUser', meta.qUser), ...quotaOf('perKey', meta.qKey) } : null,
      tokenTtlMs: num(meta.tokenTtlMs),
      preQueueFromMs: num(meta.preFrom),
      waitingRoom: meta.waitingRoom ? JSON.parse(meta.waitingRoom) : null,
      pow: meta.pow ? JSON.parse(meta.pow) : null,
      lines: Number(meta.lines ?? 1),
    },
    secret: meta.secret,
    epoch: Number(meta.epoch),
    incarnation: `${meta.secret}|${meta.born ?? ''}`,
    version: Number(meta.version ?? 0),
    closed: meta.closed === '1',
    soldOut: meta.soldOut === '1',
    endedAt: num(meta.endedAt),
    cuts: meta.cuts ? JSON.parse(meta.cuts) : [],
    seq: Number(ctr.seq ?? 0),
    served: Number(ctr.served ?? 0),
    returned: 0,
    admittedUpTo: Number(ctr.an ?? 0),
    admissions: Number(ctr.admissions ?? 0),
    inDoubt: Number(ctr.doubt ?? 0),
    cancelsTotal: Number(ctr.cxn ?? 0),
    cancelsTrimmed: Number(ctr.cxt ?? 0),
    joinNumbers: Number(ctr.jn ?? 0),
    counts,
    gate: {
      mode: (gate.mode as GateSettings['mode']) ?? 'auto',
      rate: num(gate.rate),
      maxInFlight: num(gate.maxInFlight),
    },
    pace: paceOf(gate),
    gateHash: gate,
    stockLeft,
    draw: meta.preFrom || meta.drawn === '1' ? { seed: meta.drawSeed ?? '', n: num(meta.drawN), drawn: meta.drawn === '1', drawnAt: num(meta.drawnAt) } : null,
    loadedAt: now,
  };
}

export type ItemState = 'scheduled' | 'open' | 'paused' | 'held' | 'sold_out' | 'closed';

/**
 * `held`: an item that sells by reservation (config.reserveMs) has no unit free while some are
 * reserved and not confirmed; its line stays, waiting for released units.
 */
export function itemState(s: ItemSnapshot, now: number): ItemState {
  if (s.closed || (s.def.closesAt !== null && now >= s.def.closesAt)) return 'closed';
  if (s.soldOut) return 'sold_out';
  if (s.def.opensAt !== null && now < s.def.opensAt) return 'scheduled';
  if (s.draw && !s.draw.drawn) return 'scheduled';
  if (s.gate.mode === 'closed') return 'paused';
  if (s.stockLeft === 0 && s.def.config.reserveMs !== undefined) return 'held';
  return 'open';
}
