import { randomBytes } from 'node:crypto';
import { scanKeys, type RedisLike } from '../redis/client.js';
import type { Clock } from '../kernel/clock.js';
import { ticketRef } from '../kernel/ticket-ref.js';
import { globalBlocksKey, itemKeys, subLineTag } from '../redis/keys.js';
import { drawSeedOf } from './draw.js';
import { gateFields } from './gate-rule.js';
import type { ItemDirectory } from './items.js';
import { cutArgs, type LineScripts } from './line-scripts.js';
import { splitItemOf, splitOf, splitSeq, subLineOf, type SplitLine } from './split-line.js';
import { makeTicketId } from './ticket-id.js';
import type { GateSettings, LineDefinition, Quota } from './types.js';
import { bindingOf, parseRecord } from './views.js';

/**
 * What Postgres holds as done for an item's tickets, by user and ticket ref: its latest sales, and
 * the latest ends the ledger holds as succeeded; rejects when Postgres cannot say.
 */
export type SalesOf = (itemId: string, handler: string) => Promise<{ userId: string; ref: string }[]>;

/** Defining an item's line, cutting it, and removing it: what the catalog does. */
export interface Definitions {
  /**
   * `secret`, `epoch`: what a new item signs its ticket ids with and counts join times from (kept
   * in Postgres: an item made again after a loss keeps them; default a fresh secret, now). An
   * existing item keeps its own. Returns the secret and epoch the item has after the call.
   */
  /**
   * `everywhere`: runs a new item's registration and its copy of the blocks everywhere as the
   * blocks everywhere are written (the catalog: under their lock), so that a block everywhere made
   * at the same moment either is copied here or finds the item in the set (access/blocks.ts).
   */
  define(
    def: LineDefinition,
    gate: Partial<GateSettings> | null,
    opts: {
      reopen: boolean;
      secret?: string;
      epoch?: number | null;
      everywhere?: <T>(fn: () => Promise<T>) => Promise<T>;
      /**
       * A restore's item that had ended: made closed or sold out by the define itself (a split
       * item's sell-out is its sub-lines' cut, after), so that no join is taken, and answered 202,
       * in the moment between its making and its cut.
       */
      ended?: 'closed' | 'sold_out';
    },
  ): Promise<{ created: boolean; secret: string; epoch: number }>;
  /**
   * Registers an item whose keys Redis holds but whose id its set of items lacks (a daemon killed
   * between a new item's define and its registration): the blocks everywhere copied, the id in
   * the set, the daemons told. `everywhere` as for define.
   */
  register(itemId: string, everywhere?: <T>(fn: () => Promise<T>) => Promise<T>): Promise<void>;
  /**
   * Ends the waiting tickets at once: closed → cancelled, sold out → rejected (reason: the kind's
   * default, or given), the end of the sale window → cancelled/closed. `decidedAt`, for a
   * sell-out: when the caller began the Postgres read that found no unit; if the item's units were
   * set since (a restock), the read was old and nothing is cut (null). A window's end is cut only
   * if the item's closesAt has passed as Redis holds it at the cut (null if an operator moved it
   * later since the caller's read). Waiting tickets whose effect Postgres holds (a Redis rollback
   * put them back in line) are held in doubt, not ended; a sell-out or window's end whose look at
   * Postgres for them fails is not cut now (null). Returns how many tickets ended.
   */
  cut(itemId: string, kind: 'closed' | 'sold_out' | 'window_end', reason?: string, decidedAt?: number): Promise<number | null>;
  /**
   * Takes the item's waiting tickets whose sale Postgres holds out of the line, where they stand,
   * and holds them in doubt, with no cut (hold-bought-9.lua): a Redis rollback past their admission
   * put them back in a line that, held on its reservations, no unit will move (the doubt resolver
   * then runs them again, and their sale answers their order). The same look at Postgres as a
   * cut's, on a split item each buyer's sub-line too. Returns how many it held; throws when
   * Postgres did not say (the caller looks again later).
   */
  holdBought(itemId: string): Promise<number>;
  /**
   * The cut at the end of the sale window, begun and not waited for (one at a time per item): an
   * admission round or a pull that finds the window over must not wait on the cut's look at
   * Postgres (up to 2 s while it is slow: every item's admissions on the daemon waited). Failed or
   * put off, the next one that finds it over begins it again.
   */
  endWindow(itemId: string): void;
  /** Calls `listener` after this process cut an item's line (a sell-out, a close): watchers need not wait for their next look. */
  onCut(listener: (itemId: string) => void): void;
  /**
   * Removes every key of an ended item (retention): only when nothing is waiting or admitted and
   * its outcome ledger is drained. Returns whether it did.
   */
  drop(itemId: string): Promise<boolean>;
  blocks: BlockOps;
}

/** Blocked users: per item (bit 1) and everywhere (bit 2, a copy of the global set in each item). */
export interface BlockOps {
  /** Blocks or unblocks a user for one item (`scope: 'item'`) or, in that item's copy, everywhere. */
  set(itemId: string, userId: string, scope: 'item' | 'global', on: boolean): Promise<void>;
  /** The global set itself (what a newly defined item copies). */
  setGlobal(userId: string, on: boolean): Promise<void>;
  /** The item's blocked users and their bits (1 this item, 2 everywhere), as its own hash holds them. */
  of(itemId: string): Promise<Map<string, number>>;
  /**
   * A split item's users whose copy on their sub-line holds other bits than the item's own hash
   * (a block written to one and not the other: a call cut short, a rollback of one master). Admit
   * reads the sub-line's copy, joins the item's: they must agree. Empty for one line.
   */
  drift(itemId: string): Promise<Set<string>>;
  /** The users in the global set. */
  global(): Promise<string[]>;
}

/** A new item's ticket-id secret: 256 random bits, hex (queue/ticket-id.ts). */
export const newItemSecret = () => randomBytes(32).toString('hex');

/** meta's "limit:windowMs" form of a quota (join-5.lua and snapshot.ts read the same). */
const quotaField = (q: Quota | undefined) => (q ? `${q.limit}:${q.windowMs}` : '');

export function createDefinitions(deps: { redis: RedisLike; prefix: string; clock: Clock; items: ItemDirectory; scripts: LineScripts; split: SplitLine; salesOf?: SalesOf; onSalesUnread?(itemId: string, err: unknown): 'wait' | 'go'; onWindowEndFailed?(itemId: string, err: unknown): void }): Definitions {
  const { redis, prefix, clock, items, scripts } = deps;
  const cutListeners: ((itemId: string) => void)[] = [];
  const windowEnds = new Set<string>();

  /**
   * The item's waiting tickets whose sale Postgres holds: a Redis rollback took back their
   * admission and sale, and the line has them waiting again, where a cut would end them `sold_out`
   * or `closed` next to their order (cut-8.lua holds them in doubt instead). Each sale's user's
   * latest ticket, if it waits and its ref is the sale's. None in the usual case (every buyer's
   * ticket was admitted), for a read of the latest sales and succeeded ends (salesOf: 20,000 of
   * each at most) and one of the buyers' seqs. By sub-line (0 for an item on one line), as each
   * sub-line's seqs: a split item's buyers are found on their own sub-line (a review: cut without
   * this, they read `rejected`/`sold_out` next to their orders on every daemon that had not seen
   * them succeed). Postgres unread: null if the caller should wait for it (Postgres away:
   * onSalesUnread says), else none (too slow to answer: the cut goes on); with `unread` 'throw'
   * (holdBought, which has no cut to go on with), the error.
   */
  async function boughtWhileWaiting(itemId: string, unread: 'ask' | 'throw' = 'ask'): Promise<Map<number, number[]> | null> {
    const found = new Map<number, number[]>();
    const item = await items.item(itemId, { fresh: true });
    if (!item || !deps.salesOf) return found;
    const { snap } = item;
    const lines = splitOf(snap.def)?.lines ?? 1;
    let sales: { userId: string; ref: string }[];
    try {
      sales = await deps.salesOf(itemId, snap.def.handler);
    } catch (err) {
      if (unread === 'throw') throw err;
      return deps.onSalesUnread?.(itemId, err) === 'wait' ? null : found;
    }
    if (!sales.length) return found;
    /** The seqs (on sub-line k) of these buyers' latest tickets that still wait with the sale's ref. */
    const waitingOf = async (k: number, chunk: { userId: string; ref: string }[]): Promise<number[]> => {
      const keys = itemKeys(prefix, lines > 1 ? subLineTag(itemId, k) : itemId);
      const seqs = (await redis.hmget(keys.users, ...chunk.map((s) => s.userId))).map((v) => (v === null ? 0 : Number(v)));
      // (A ticket the line has served and that waits again is back at the head: named too, for
      // one back after its holder's retry ends with the cut unless named — cut-8.lua.)
      const byPage = new Map<string, number[]>();
      for (const seq of seqs) {
        if (seq === 0) continue;
        const page = byPage.get(keys.page(seq));
        if (page) page.push(seq);
        else byPage.set(keys.page(seq), [seq]);
      }
      const records = new Map<number, string | null>();
      await Promise.all(
        [...byPage].map(async ([page, ps]) => {
          const got = await redis.hmget(page, ...ps.map(String));
          ps.forEach((seq, j) => records.set(seq, got[j]));
        }),
      );
      return chunk.flatMap((sale, j) => {
        const record = seqs[j] > 0 ? records.get(seqs[j]) : null;
        if (!record || record[0] !== 'w') return [];
        const seq = lines > 1 ? splitSeq(k, seqs[j], lines) : seqs[j];
        const id = makeTicketId(itemId, seq, snap.secret, bindingOf(parseRecord(record, snap.epoch), snap.epoch));
        return ticketRef(id) === sale.ref ? [seqs[j]] : [];
      });
    };
    // By sub-line, in chunks of 1,000 buyers, eight at a time (a 10,000-unit sale's sell-out: ~30 ms
    // of Redis reads one after another; 800 at once timed out on the connection's 500 ms budget).
    const bySub = new Map<number, { userId: string; ref: string }[]>();
    for (const sale of sales) {
      const k = subLineOf(sale.userId, lines);
      const on = bySub.get(k);
      if (on) on.push(sale);
      else bySub.set(k, [sale]);
    }
    const chunks = [...bySub].flatMap(([k, on]) => Array.from({ length: Math.ceil(on.length / 1000) }, (_, i) => ({ k, chunk: on.slice(i * 1000, (i + 1) * 1000) })));
    for (let i = 0; i < chunks.length; i += 8) {
      const part = chunks.slice(i, i + 8);
      const seqs = await Promise.all(part.map(({ k, chunk }) => waitingOf(k, chunk)));
      part.forEach(({ k }, j) => {
        if (!seqs[j].length) return;
        const on = found.get(k);
        if (on) on.push(...seqs[j]);
        else found.set(k, [...seqs[j]]);
      });
    }
    return found;
  }

  /**
   * Sets or clears a user's block bit on the item (joins read it there) and, for a split item, on
   * the user's sub-line too, whose admit script reads it on its own slot (sub-line 0's is the item's).
   */
  async function block(itemId: string, lines: number, userId: string, bit: 1 | 2, on: boolean) {
    await scripts.block(itemId, clock.now(), userId, bit, on);
    const k = subLineOf(userId, lines);
    if (k > 0) await scripts.block(subLineTag(itemId, k), clock.now(), userId, bit, on);
  }

  /** The new item's copy of the blocks everywhere (`copy`), then its id in the set of items. */
  async function registerItem(itemId: string, lines: number, copy: boolean) {
    if (copy) for (const userId of await redis.smembers(globalBlocksKey(prefix))) await block(itemId, lines, userId, 2, true);
    await items.added(itemId);
  }

  async function cut(itemId: string, kind: 'closed' | 'sold_out' | 'window_end', why?: string, decidedAt?: number): Promise<number | null> {
    items.keepActive(itemId);
    const sub = splitOf((await items.item(itemId))?.snap.def ?? { itemId });
    const hold = await boughtWhileWaiting(itemId);
    // Its sales unread with Postgres away: a sell-out or the window's end waits for a later
    // look (nothing is admitted meanwhile: no unit, or the window is over), rather than tell a
    // buyer back in line `sold_out` or `closed` for good; an operator's close goes on.
    if (hold === null && kind !== 'closed') return null;
    const n = sub ? await deps.split.cut(sub, kind, why, decidedAt, hold ?? undefined) : await scripts.cut(itemId, clock.now(), cutArgs(kind, why, decidedAt), hold?.get(0) ?? []);
    items.invalidate(itemId);
    if (n === null) return null;
    for (const l of cutListeners) l(itemId);
    return n;
  }

  return {
    onCut: (listener) => void cutListeners.push(listener),

    async register(itemId, everywhere) {
      const lines = Number((await redis.hget(itemKeys(prefix, itemId).meta, 'lines')) || 1);
      const run = () => registerItem(itemId, lines, true);
      await (everywhere ? everywhere(run) : run());
      await items.announce(itemId);
    },

    async define(def, gate, opts) {
      const fields = {
        handler: def.handler,
        config: JSON.stringify(def.config),
        capacity: def.capacity ?? '',
        abandonAfterMs: def.abandonAfterMs ?? '',
        opensAt: def.opensAt ?? '',
        closesAt: def.closesAt ?? '',
        rejoin: def.rejoin,
        qUser: quotaField(def.quotas?.perUser),
        qKey: quotaField(def.quotas?.perKey),
        tokenTtlMs: def.tokenTtlMs ?? '',
        preFrom: def.preQueueFromMs ?? '',
        waitingRoom: def.waitingRoom ? JSON.stringify(def.waitingRoom) : '',
        pow: def.pow ? JSON.stringify(def.pow) : '',
        lines: def.lines && def.lines > 1 ? def.lines : '',
      };
      const sub = splitOf(def);
      const itemSecret = opts.secret ?? newItemSecret();
      // The seed is made under the secret the line signs with: the live item's (its row takes that
      // one after the define: catalog keepLiveSecret), so that the row makes the same seed again.
      const opensAt = def.preQueueFromMs ? def.opensAt : null;
      const seedSecret = opensAt === null ? null : ((await redis.hget(itemKeys(prefix, def.itemId).meta, 'secret')) ?? itemSecret);
      const { created, secret, epoch } = await scripts.define(def.itemId, clock.now(), {
        secret: itemSecret,
        epoch: opts.epoch ?? null,
        born: randomBytes(8).toString('hex'),
        drawSeed: opensAt === null || seedSecret === null ? '' : drawSeedOf(seedSecret, opensAt),
        definition: {
          ...Object.fromEntries(Object.entries(fields).map(([f, v]) => [f, String(v)])),
          // endedAt too: a daemon killed before the cut left an ended item retention never removed.
          // A split item's sub-lines copy `closed` (defineSubLines); a sell-out is their cut's.
          ...(opts.ended === 'closed' && { closed: '1', endedAt: String(clock.now()) }),
          ...(opts.ended === 'sold_out' && !sub && { soldOut: '1', endedAt: String(clock.now()) }),
        },
        gate: gate ? gateFields(gate) : null,
        reopen: opts.reopen,
      });
      if (sub) await deps.split.defineSubLines(sub);
      // A new item starts with the users blocked everywhere (a copy: the global set lives on no
      // item's slot), and is in the set of items before a block everywhere can look for it: the two
      // under the blocks everywhere's lock, or a block made that moment on another daemon missed
      // the item for good (its copy read the set before the block, the block's fan-out read the
      // items before the item).
      const register = () => registerItem(def.itemId, sub?.lines ?? 1, created);
      await (created && opts.everywhere ? opts.everywhere(register) : register());
      // Every daemon reads the item again; no loop needs it until a join, a pull or a cut (an empty
      // line has no work: making each new item active cost 10,000 items a minute of every loop each).
      await items.announce(def.itemId);
      // A redefinition that opens the gate wakes a line that waited behind a closed one (items.loopNeed).
      if (!created && gate && gate.mode !== 'closed') items.keepActive(def.itemId);
      // A pre-queue is drawn at opensAt whoever joined, nobody included (its status then says the
      // sale is open, and its seed is revealed): a wake then. Only a join asked for one, so a
      // pre-queue nobody joined read `scheduled` after its opening until someone did. Likewise a
      // window's end set (or moved earlier) on a line waiting behind a closed gate: nothing asked
      // for a wake, and its tickets read `waiting` past closesAt until a join or a restart came.
      if (def.preQueueFromMs || def.closesAt !== null || def.opensAt !== null) {
        const held = await items.item(def.itemId, { fresh: true });
        if (held) items.keepAsNeeded(held.snap);
      }
      return { created, secret, epoch };
    },

    cut,

    async holdBought(itemId) {
      const found = await boughtWhileWaiting(itemId, 'throw');
      let held = 0;
      // (By sub-line, as a cut holds them, sub-line 0's tag the item's own. An item split into
      // sub-lines takes no reservations yet, so none is held on them today.)
      for (const [k, seqs] of found ?? []) held += await scripts.holdBought(subLineTag(itemId, k), clock.now(), seqs);
      if (held) {
        items.invalidate(itemId);
        // The doubt resolver looks at active items only: this one, whose line may now be empty, too.
        items.keepActive(itemId);
      }
      return held;
    },

    endWindow(itemId) {
      if (windowEnds.has(itemId)) return;
      windowEnds.add(itemId);
      void cut(itemId, 'window_end')
        .catch((err: unknown) => deps.onWindowEndFailed?.(itemId, err))
        .finally(() => windowEnds.delete(itemId));
    },

    async drop(itemId) {
      // A split item's sub-lines each count their tickets and hold a stream and keys on their own tag.
      const lines = Number((await redis.hget(itemKeys(prefix, itemId).meta, 'lines')) || 1);
      const tags = Array.from({ length: lines }, (_, k) => subLineTag(itemId, k));
      const busy = await Promise.all(
        tags.map(async (tag) => {
          const k = itemKeys(prefix, tag);
          const [ctr, pending] = await Promise.all([redis.hmget(k.ctr, 'waiting', 'admitted'), redis.xlen(k.done)]);
          return Number(ctr[0] ?? 0) + Number(ctr[1] ?? 0) > 0 || pending > 0;
        }),
      );
      if (busy.includes(true)) return false;
      await items.removed(itemId);
      // The item's own tag (its meta) last: keys left by a stop part-way still name the item's sub-lines.
      for (const tag of tags.reverse()) await scanKeys(redis, `${itemKeys(prefix, tag).base.replace(/[*?[\]\\]/g, '\\$&')}*`, (keys) => redis.unlink(...keys));
      items.invalidate(itemId);
      return true;
    },

    blocks: {
      async set(itemId, userId, scope, on) {
        await block(itemId, (await splitItemOf(items, itemId))?.lines ?? 1, userId, scope === 'item' ? 1 : 2, on);
      },
      async setGlobal(userId, on) {
        await (on ? redis.sadd(globalBlocksKey(prefix), userId) : redis.srem(globalBlocksKey(prefix), userId));
      },
      async of(itemId) {
        const all = await redis.hgetall(itemKeys(prefix, itemId).blocked);
        return new Map(Object.entries(all).map(([u, b]) => [u, Number(b)]));
      },
      async drift(itemId) {
        const lines = (await splitItemOf(items, itemId))?.lines ?? 1;
        const out = new Set<string>();
        if (lines === 1) return out;
        const [own, ...subs] = await Promise.all(Array.from({ length: lines }, (_, k) => redis.hgetall(itemKeys(prefix, subLineTag(itemId, k)).blocked)));
        for (const [u, b] of Object.entries(own)) if (subLineOf(u, lines) > 0 && subs[subLineOf(u, lines) - 1][u] !== b) out.add(u);
        subs.forEach((copy, j) => {
          for (const [u, b] of Object.entries(copy)) if (subLineOf(u, lines) !== j + 1 || own[u] !== b) out.add(u);
        });
        return out;
      },
      global: () => redis.smembers(globalBlocksKey(prefix)),
    },
  };
}
