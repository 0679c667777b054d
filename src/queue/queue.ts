import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Clock } from '../kernel/clock.js';
import { FloodgateError, fail } from '../kernel/errors.js';
import { cancelError, joinError, quotaError, settleError } from './codes.js';
import { createItemCache, type CachedItem } from './item-cache.js';
import { activeItemsKey, globalBlocksKey, itemKeys, itemsSetKey, itemsVersionKey, PAGE_SIZE } from '../redis/keys.js';
import { withScripts } from '../redis/scripts.js';
import { makeTicketId, parseTicketId, verifyBinding, verifySeq, type ParsedTicketId } from './ticket-id.js';
import type { AdmittedTicket, Cut, GateSettings, LineDefinition, Outcome, TicketView } from './types.js';
import { awaitingDraw, baseView, bindingOf, cachedRecord, cutView, fullView, linePosition, parseRecord, preQueueHints, waitingHints, type CachedRecord, type TicketRecord } from './views.js';
import { drawOrder, drawPositions } from './draw.js';
import { createTouchBuffer } from './touches.js';
import { ticketRef } from '../kernel/ticket-ref.js';
import { createRecordCache } from './record-cache.js';
import { createSeriesStore, type SeriesStore } from './series-store.js';
import { createInviteUses, type InviteUses } from './invite-uses.js';

export interface QueueDeps {
  redis: Redis;
  prefix: string;
  clock: Clock;
  /** How stale the per-process item view may be (ms). */
  cacheMs: number;
  /** Called after a new ticket joined through this process (wakes the dispatcher). */
  onJoined?(itemId: string): void;
  /**
   * The outcome ledger's copy of an ended ticket, by ticket ref: read when the ticket's own state
   * has left Redis (after FLOODGATE_TICKET_STATE_TTL_MS, once its row was committed).
   */
  /**
   * A ticket joined and admitted through this process was told `predictedMs` at its join and
   * waited `actualMs`: how good the ETA is (published as a metric).
   */
  onWaited?(itemId: string, predictedMs: number | null, actualMs: number): void;
  /** Joins per second per key name on items without a perKey quota (FLOODGATE_DEFAULT_KEY_QUOTA). */
  defaultKeyQuota?: number;
  archived?(ticketRef: string): Promise<{ outcome: Outcome; admittedAt: number | null; finishedAt: number } | null>;
}

export interface SettleInput {
  leaseId: string;
  status: 'succeeded' | 'rejected' | 'failed';
  result?: unknown;
  reason?: string;
  retry?: boolean;
  /** Settle under whatever lease the ticket holds now (in-process workers only). */
  force?: boolean;
}

export interface Queue {
  define(def: LineDefinition, gate: Partial<GateSettings> | null, opts: { reopen: boolean }): Promise<{ created: boolean }>;
  item(itemId: string, opts?: { fresh?: boolean }): Promise<CachedItem | null>;
  /** The cached item view as it is, without reading Redis (null if never loaded). */
  peek(itemId: string): CachedItem | null;
  itemIds(): Promise<string[]>;
  /**
   * The items that need the background loops (dispatch, gate control, lease sweep, outcome
   * ledger) now: those with a join, an admission, a lease, an outcome or a cut in the last minute
   * (or a lease running longer), shared by all daemons. An idle item costs those loops nothing.
   */
  activeItemIds(): Promise<string[]>;
  /** Keeps an item among the active ones (a loop that sees work left: tickets waiting, entries unwritten). */
  keepActive(itemId: string, until?: number): void;
  /** Marks every item active once (a daemon's start: nothing is missed after an upgrade or a restart). */
  activateAll(): Promise<void>;
  /** `source`: the name of the key that asks (recorded on a new ticket, and what perKey quotas count). */
  join(itemId: string, userId: string, payload: Record<string, unknown> | null, source?: string): Promise<{ created: boolean; ticket: TicketView }>;
  /** The name of the key that created the ticket (null if none was recorded). */
  sourceOf(ticketId: string): Promise<string | null>;
  blocks: BlockOps;
  /**
   * What a join would be refused for whoever asks, from the cached item view alone: no such item,
   * not open yet, line full. Lets a flood of joins be turned away before their bodies are read.
   */
  precheckJoin(itemId: string): Promise<void>;
  status(ticketId: string): Promise<TicketView>;
  /**
   * A ticket's view from this process's cached item view alone, however old it is (no Redis, no
   * HMAC): a waiting ticket still in the line, or one the item's last cut ended while it waited.
   * Null where the cache cannot tell (admitted, settled, returned to the head, never seen waiting
   * here): then status() reads Redis. What lets one item refresh serve every watcher of the item.
   */
  cachedView(ticketId: string): TicketView | null;
  /** The item a ticket id names, from the id alone (null if it is not one of ours in shape). */
  itemIdOf(ticketId: string): string | null;
  cancel(ticketId: string): Promise<TicketView>;
  /** Admits from the head as far as the gate allows; `autoCap` caps in-flight for an auto gate without its own cap. */
  admit(itemId: string, max: number, leaseMs: number, autoCap?: number): Promise<AdmittedTicket[]>;
  settle(ticketId: string, input: SettleInput): Promise<TicketView>;
  /**
   * Settles many admitted tickets of one item in one call (in-process jobs). Returns a code per
   * entry: 1 applied, 2 a repeat of what was applied, -1 no such ticket, -2 lease lost.
   */
  settleMany(itemId: string, entries: (SettleInput & { seq: number })[]): Promise<number[]>;
  /** Calls `listener` after this process cut an item's line (a sell-out, a close): watchers need not wait for their next look. */
  onCut(listener: (itemId: string) => void): void;
  /** Ends every waiting ticket at once: close → cancelled, sold out → rejected (reason: the kind's default, or given). */
  cut(itemId: string, kind: 'closed' | 'sold_out', reason?: string): Promise<number>;
  setGate(itemId: string, patch: Partial<GateSettings>): Promise<void>;
  /**
   * Removes every key of an ended item (retention): only when nothing is waiting or admitted and
   * its outcome ledger is drained. Returns whether it did.
   */
  drop(itemId: string): Promise<boolean>;
  /**
   * Draws the item's pre-queue if it is due (opensAt passed, not drawn yet): idempotent, any daemon
   * may run it. Redis is held only for one chunk at a time (`chunk` line places, default 16384);
   * `onStep` hears how long each Redis step took (ms, round trip included) and, for the chunk
   * writes, how long Redis itself was held (ms, by Redis's clock).
   */
  draw(itemId: string, opts?: { chunk?: number; onStep?: (ms: number, heldMs?: number) => void }): Promise<{ drawn: boolean; n: number }>;
  /** Returns expired leases of every item to the head of its line; draws pre-queues that are due. */
  sweep(): Promise<number>;
  /** Writes buffered poll times (abandonment) to Redis. */
  flush(): Promise<void>;
  /** Keeps the leases of tickets handed to a job queue alive until `until` (ms). */
  extendLeases(itemId: string, tickets: { seq: number; leaseId: string }[], until: number): Promise<number>;
  stock: StockOps;
  /** The per-second points the console charts (series-store.ts). */
  series: SeriesStore;
  /** Single use of invites and proof-of-work challenges (invite-uses.ts). */
  inviteUses: InviteUses;
}

/** Blocked users: per item (bit 1) and everywhere (bit 2, a copy of the global set in each item). */
export interface BlockOps {
  /** Blocks or unblocks a user for one item (`scope: 'item'`) or, in that item's copy, everywhere. */
  set(itemId: string, userId: string, scope: 'item' | 'global', on: boolean): Promise<void>;
  /** The global set itself (what a newly defined item copies). */
  setGlobal(userId: string, on: boolean): Promise<void>;
}

/** The Redis stock counters of items that have stock: a fast filter; Postgres decides. */
export interface StockOps {
  /** Takes one unit for each ticket (idempotent per ticket); `left` is what all shards hold after. */
  take(itemId: string, seqs: number[]): Promise<{ taken: boolean[]; left: number }>;
  /** Gives the ticket's unit back (idempotent). */
  refund(itemId: string, seq: number): Promise<boolean>;
  /** Drops the ticket's unit without giving it back: Postgres said the counter held one too many. */
  forfeit(itemId: string, seq: number): Promise<boolean>;
  /**
   * Gives back the units of released reservations of one item (once per order) and lets their
   * buyers join again. Returns how many were given back now (the rest had been already).
   */
  returnReleased(itemId: string, orders: { orderId: string; userId: string }[]): Promise<number>;
  /**
   * Sets the units left, over `shards` shards; with `idleOnly`, only while no ticket of the item
   * is admitted (then also forgetting which tickets took units). Returns whether it was set.
   */
  set(itemId: string, units: number, shards: number, opts?: { idleOnly?: boolean }): Promise<boolean>;
}

const gateFields = (g: Partial<GateSettings>) =>
  Object.fromEntries(Object.entries(g).map(([k, v]) => [k, v === null || v === undefined ? '' : String(v)]));

const quotaField = (q: { limit: number; windowMs: number } | undefined) => (q ? `${q.limit}:${q.windowMs}` : '');

export function createQueue(deps: QueueDeps): Queue {
  const redis = withScripts(deps.redis);
  const { prefix, clock } = deps;
  const cache = createItemCache({ redis, prefix, clock, ttlMs: deps.cacheMs });
  const records = createRecordCache(500_000);
  const touches = createTouchBuffer(redis, prefix);
  /** The ETA each ticket joined through this process was told (bounded: two generations). */
  // Two generations, dropped whole (evicting one entry at a time from a Map's front slows every
  // insert as the holes pile up; record-cache.ts measured it).
  let told = new Map<string, number | null>();
  let toldOld = new Map<string, number | null>();
  const remember = (itemId: string, seq: number, etaMs: number | undefined) => {
    if (!deps.onWaited) return;
    if (told.size >= 50_000) {
      toldOld = told;
      told = new Map();
    }
    told.set(`${itemId}\u0000${seq}`, etaMs ?? null);
  };
  const recall = (key: string) => {
    const v = told.has(key) ? told.get(key) : toldOld.get(key);
    told.delete(key);
    toldOld.delete(key);
    return v;
  };

  /**
   * This process's copy of the set of item ids, reloaded when the shared version key moved. It is
   * what makes an id naming an unknown item cheap: a miss (a forged id, or an item just made on
   * another daemon) is answered by a version check that started after the miss arrived — never
   * by an older one, so a new item is never refused — and all the misses that arrive while one
   * check runs share the next one: one GET per round trip at most, however many arrive.
   */
  const known = { ids: new Set<string>(), ver: null as string | null, checkedAt: -Infinity, loading: null as Promise<Set<string>> | null, startedAt: -Infinity };
  function loadKnown(): Promise<Set<string>> {
    known.startedAt = performance.now();
    known.loading = (async () => {
      const ver = await redis.get(itemsVersionKey(prefix));
      if (ver === null || ver !== known.ver) known.ids = new Set(await redis.smembers(itemsSetKey(prefix)));
      known.ver = ver;
      known.checkedAt = clock.now();
      return known.ids;
    })().finally(() => (known.loading = null));
    return known.loading;
  }
  function knownIds(): Promise<Set<string>> | Set<string> {
    if (clock.now() - known.checkedAt < deps.cacheMs) return known.ids;
    return known.loading ?? loadKnown();
  }
  async function isKnown(itemId: string): Promise<boolean> {
    if ((await knownIds()).has(itemId)) return true;
    const arrived = performance.now();
    for (;;) {
      if (known.loading && known.startedAt >= arrived) return (await known.loading).has(itemId);
      if (known.loading) await known.loading.catch(() => {});
      else return (await loadKnown()).has(itemId);
    }
  }

  async function mustItem(itemId: string): Promise<CachedItem> {
    return (await cache.get(itemId)) ?? fail('item_not_found', 'No such item.');
  }

  async function resolveTicket(ticketId: string): Promise<{ item: CachedItem; seq: number; parsed: ParsedTicketId }> {
    const parsed = parseTicketId(ticketId);
    const item = parsed && (await isKnown(parsed.itemId)) ? await cache.get(parsed.itemId) : null;
    if (!parsed || !item) fail('ticket_not_found', 'No such ticket.');
    // An id in the record cache was verified whole when it was stored: the HMAC runs once per ticket and process.
    if (records.get(ticketId)?.secret !== item!.recordKey && !verifySeq(parsed!, item!.snap.secret)) fail('ticket_not_found', 'No such ticket.');
    return { item: item!, seq: parsed!.seq, parsed: parsed! };
  }

  /** The ticket's record, once the id's binding half matches it (else: not this id's ticket). */
  function boundRecord(ticketId: string, item: CachedItem, record: string | null): TicketRecord {
    const rec = record ? parseRecord(record, item.snap.epoch) : null;
    const parsed = parseTicketId(ticketId)!;
    if (!rec || !verifyBinding(parsed, item.snap.secret, bindingOf(rec, item.snap.epoch))) fail('ticket_not_found', 'No such ticket.');
    return rec!;
  }

  async function readView(ticketId: string, item: CachedItem, seq: number): Promise<TicketView> {
    const k = itemKeys(prefix, item.snap.def.itemId);
    const [record, xFlat, served, rank, cutJson] = (await redis.readTicket(k.meta, k.ctr, k.retry, k.x(seq), k.base, seq)) as [
      string | null,
      string[],
      number,
      number,
      string,
    ];
    const rec = boundRecord(ticketId, item, record);
    const x: Record<string, string> = {};
    for (let i = 0; i < xFlat.length; i += 2) x[xFlat[i]] = xFlat[i + 1];
    if (!x.outcome && rec.state !== 'waiting' && rec.state !== 'admitted' && deps.archived) {
      const old = await deps.archived(ticketRef(ticketId));
      if (old) {
        x.outcome = JSON.stringify(old.outcome);
        x.updatedAt = String(old.finishedAt);
        if (old.admittedAt !== null) x.admittedAt = String(old.admittedAt);
      }
    }
    if (rec.state === 'waiting' && !cutJson) records.set(ticketId, cachedRecord(rec, item.snap.def.itemId, seq, item.recordKey));
    return fullView(ticketId, item, rec, x, served, seq, rank, cutJson ? (JSON.parse(cutJson) as Cut) : null, clock.now());
  }

  /**
   * A refusal that holds for every user, answered from the cache: the sale has not opened. (A full
   * line is decided by the join script, which first returns the ticket a user already holds.)
   */
  function refuseFromCache(s: CachedItem['snap'], now: number) {
    if (s.def.opensAt !== null && now < s.def.opensAt - (s.def.preQueueFromMs ?? 0))
      fail('not_open', 'The sale has not opened yet.', { opensAt: new Date(s.def.opensAt).toISOString(), now: new Date(now).toISOString() });
  }

  /** A waiting ticket still in the line, answered from the cache alone; null when unsure. */
  function cachedWaitingView(ticketId: string, item: CachedItem, seq: number, rec: TicketRecord | undefined): TicketView | null {
    const s = item.snap;
    if (!rec || !item.feedComplete || seq > s.seq || item.cancelled.has(seq)) return null;
    if (awaitingDraw(item, rec)) return { ...baseView(ticketId, s.def.itemId, rec, 'waiting'), ...preQueueHints(item, clock.now()) };
    if (item.lineIndex(seq) <= s.served) return null;
    const position = linePosition(item, s.served, seq);
    return { ...baseView(ticketId, s.def.itemId, rec, 'waiting'), position, ...waitingHints(item, position, clock.now()) };
  }

  const draws = new Map<string, Promise<{ drawn: boolean; n: number }>>();
  async function runDraw(itemId: string, chunk: number, onStep?: (ms: number, heldMs?: number) => void) {
    const k = itemKeys(prefix, itemId);
    const step = async (...args: (string | number | Buffer)[]) => {
      const t = performance.now();
      const res = await (redis.draw as (...a: unknown[]) => Promise<unknown>)(k.meta, k.ctr, k.base, clock.now(), ...args);
      onStep?.(performance.now() - t, args[0] === 'write' ? (res as number) / 1000 : undefined);
      return res;
    };
    const [code, n, seed] = (await step('begin')) as [number, number, string];
    if (code === -1) return { drawn: false, n: 0 };
    if (code === 1) {
      const order = drawOrder(seed, n);
      const places = drawPositions(order);
      for (let first = 0; first < n; first += chunk) {
        const count = Math.min(chunk, n - first);
        const o = Buffer.alloc(count * 4);
        const p = Buffer.alloc(count * 4);
        for (let i = 0; i < count; i++) {
          o.writeUInt32BE(order[first + i], i * 4);
          p.writeUInt32BE(places[first + i + 1], i * 4);
        }
        await step('write', first, o, p);
      }
      await step('finish');
    }
    cache.invalidate(itemId);
    return { drawn: true, n };
  }

  /** A ticket seen waiting that the item's last cut ended, told from the cut's range alone. */
  function cachedCutView(ticketId: string, item: CachedItem, rec: CachedRecord): TicketView | null {
    const s = item.snap;
    const cut = s.cuts[s.cuts.length - 1];
    // served-before is what separates tickets admitted before the cut from those it ended.
    if (!cut || cut[4] === undefined || rec.seq <= cut[4] || rec.seq > cut[0]) return null;
    if (!item.feedComplete || item.cancelled.has(rec.seq)) return null;
    return cutView(ticketId, s.def.itemId, rec, cut);
  }

  const cutListeners: ((itemId: string) => void)[] = [];
  /**
   * The active set: each daemon raises an item's "until" (ZADD GT) when it does work on it, at most
   * once per ACTIVE_SLACK_MS per item (so a flood of joins costs one ZADD per item every few
   * seconds), and the loops read the set at most once per 100 ms.
   */
  const ACTIVE_GRACE_MS = 60_000;
  const ACTIVE_SLACK_MS = 5_000;
  const activeUntil = new Map<string, number>();
  const keepActive = (itemId: string, until = clock.now() + ACTIVE_GRACE_MS) => {
    if ((activeUntil.get(itemId) ?? 0) >= until - ACTIVE_SLACK_MS) return;
    if (activeUntil.size > 100_000) activeUntil.clear();
    activeUntil.set(itemId, until);
    redis.zadd(activeItemsKey(prefix), 'GT', until, itemId).catch(() => activeUntil.delete(itemId));
  };
  const active = { ids: [] as string[], at: -Infinity, loading: null as Promise<string[]> | null, prunedAt: -Infinity, sweptAllAt: clock.now() };
  function activeItemIds(): Promise<string[]> | string[] {
    const now = clock.now();
    if (now - active.at < 100) return active.ids;
    active.loading ??= (async () => {
      const key = activeItemsKey(prefix);
      if (now - active.prunedAt > 60_000) {
        active.prunedAt = now;
        await redis.zremrangebyscore(key, '-inf', now - 3_600_000);
      }
      active.ids = await redis.zrangebyscore(key, now, '+inf');
      active.at = now;
      return active.ids;
    })().finally(() => (active.loading = null));
    return active.loading;
  }
  const queue: Queue = {
    onCut: (listener) => void cutListeners.push(listener),

    async define(def, gate, opts) {
      keepActive(def.itemId);
      const k = itemKeys(prefix, def.itemId);
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
      };
      const [code] = (await redis.define(
        k.meta,
        k.ctr,
        k.gate,
        clock.now(),
        randomBytes(32).toString('hex'),
        JSON.stringify(Object.fromEntries(Object.entries(fields).map(([f, v]) => [f, String(v)]))),
        gate ? JSON.stringify(gateFields(gate)) : '',
        opts.reopen ? '1' : '0',
      )) as [number];
      if (code === -1) fail('conflict', 'The handler of an item with live tickets cannot change.');
      // A new item starts with the users blocked everywhere (a copy: the global set lives on no item's slot).
      if (code === 1) for (const userId of await redis.smembers(globalBlocksKey(prefix))) await redis.block(k.blocked, userId, 2, '1');
      // The draw's seed is fixed once, so its hash (shown from now on) commits to it.
      if (def.preQueueFromMs) await redis.hsetnx(k.meta, 'drawSeed', randomBytes(32).toString('hex'));
      await redis.multi().sadd(itemsSetKey(prefix), def.itemId).incr(itemsVersionKey(prefix)).exec();
      known.ids.add(def.itemId);
      cache.invalidate(def.itemId);
      return { created: code === 1 };
    },

    item: async (itemId, opts) => {
      if (opts?.fresh) cache.invalidate(itemId);
      return cache.get(itemId);
    },

    peek: (itemId) => cache.peek(itemId),

    itemIds: async () => [...(await knownIds())],
    activeItemIds: async () => activeItemIds(),
    keepActive,
    async activateAll() {
      const until = clock.now() + ACTIVE_GRACE_MS;
      activeUntil.clear();
      active.at = -Infinity;
      const ids = [...(await knownIds())];
      for (let i = 0; i < ids.length; i += 1000) {
        const chunk = ids.slice(i, i + 1000);
        await redis.zadd(activeItemsKey(prefix), 'GT', ...chunk.flatMap((id) => [until, id]));
      }
    },

    async precheckJoin(itemId) {
      refuseFromCache((await mustItem(itemId)).snap, clock.now());
    },

    async join(itemId, userId, payload, source) {
      const item = await mustItem(itemId);
      keepActive(itemId);
      const s = item.snap;
      const now = clock.now();
      refuseFromCache(s, now);
      const k = itemKeys(prefix, itemId);
      const [code, seq, record, served] = (await redis.join(k.meta, k.ctr, k.users, k.base, now, userId, payload ? JSON.stringify(payload) : '', source ?? '', deps.defaultKeyQuota ?? '')) as [
        number,
        number,
        string,
        number,
      ];
      if (code === -7) throw quotaError(seq, record);
      if (code < 0) {
        const err = joinError(code);
        if (code === -2) throw new FloodgateError('not_open', err.message, { opensAt: s.def.opensAt && new Date(s.def.opensAt).toISOString(), now: new Date(now).toISOString() });
        cache.invalidate(itemId);
        throw err;
      }
      const rec = parseRecord(record, s.epoch);
      const ticketId = makeTicketId(itemId, seq, s.secret, bindingOf(rec, s.epoch));
      if (code === 0) {
        const cached = cachedRecord(rec, itemId, seq, item.recordKey);
        records.set(ticketId, cached);
        deps.onJoined?.(itemId);
        const base = baseView(ticketId, itemId, cached, 'waiting');
        if (s.draw && now < (s.def.opensAt ?? 0)) return { created: true, ticket: { ...base, ...preQueueHints(item, now) } };
        const position = linePosition(item, served, seq);
        const hints = waitingHints(item, position, now);
        remember(itemId, seq, hints.etaMs);
        return { created: true, ticket: { ...base, position, ...hints } };
      }
      return { created: false, ticket: await readView(ticketId, item, seq) };
    },

    async status(ticketId) {
      // The common case, synchronously: a waiting ticket polled again, its item's view still fresh.
      const hit = records.get(ticketId);
      const fresh = hit && cache.peek(hit.itemId);
      if (hit && fresh && hit.secret === fresh.recordKey && clock.now() - fresh.snap.loadedAt < deps.cacheMs) {
        const view = cachedWaitingView(ticketId, fresh, hit.seq, hit);
        if (view) {
          if (fresh.snap.def.abandonAfterMs !== null) touches.touch(hit.itemId, hit.seq, clock.now());
          return view;
        }
      }
      const { item, seq } = await resolveTicket(ticketId);
      const itemId = item.snap.def.itemId;
      if (item.snap.def.abandonAfterMs !== null) touches.touch(itemId, seq, clock.now());
      const known = records.get(ticketId);
      return (known?.secret === item.recordKey ? cachedWaitingView(ticketId, item, seq, known) : null) ?? readView(ticketId, item, seq);
    },

    async sourceOf(ticketId) {
      const { item, seq } = await resolveTicket(ticketId);
      return redis.hget(itemKeys(prefix, item.snap.def.itemId).sourcePage(seq), String(seq));
    },

    blocks: {
      async set(itemId, userId, scope, on) {
        await redis.block(itemKeys(prefix, itemId).blocked, userId, scope === 'item' ? 1 : 2, on ? '1' : '0');
      },
      async setGlobal(userId, on) {
        await (on ? redis.sadd(globalBlocksKey(prefix), userId) : redis.srem(globalBlocksKey(prefix), userId));
      },
    },

    cachedView(ticketId) {
      const hit = records.get(ticketId);
      const item = hit && cache.peek(hit.itemId);
      if (!hit || !item || item.recordKey !== hit.secret) return null;
      return cachedWaitingView(ticketId, item, hit.seq, hit) ?? cachedCutView(ticketId, item, hit);
    },

    itemIdOf: (ticketId) => parseTicketId(ticketId)?.itemId ?? null,

    async cancel(ticketId) {
      const { item, seq } = await resolveTicket(ticketId);
      keepActive(item.snap.def.itemId);
      const k = itemKeys(prefix, item.snap.def.itemId);
      // Cancel only the ticket this id was made for: the script checks the record is the one verified.
      const record = (await redis.hget(`${k.base}t:${Math.floor(seq / PAGE_SIZE)}`, String(seq))) as string | null;
      boundRecord(ticketId, item, record);
      const outcome: Outcome = { status: 'cancelled', reason: 'cancelled_by_user' };
      const code = (await redis.cancel(k.meta, k.ctr, k.users, k.retry, k.base, seq, clock.now(), JSON.stringify(outcome), record!.slice(1))) as number;
      if (code === -2) {
        // Cancelling a cancelled ticket again (a client retrying after a lost answer) is no error.
        const view = await readView(ticketId, item, seq);
        if (view.state === 'cancelled') return view;
      }
      if (code < 0) throw cancelError(code);
      item.cancelled.add(seq);
      return readView(ticketId, item, seq);
    },

    async admit(itemId, max, leaseMs, autoCap) {
      let item = await mustItem(itemId);
      if (item.snap.draw && !item.snap.draw.drawn && clock.now() >= item.snap.def.opensAt!) {
        await queue.draw(itemId);
        item = await mustItem(itemId);
      }
      const k = itemKeys(prefix, itemId);
      const leasePrefix = randomBytes(12).toString('base64url') + '.';
      const now = clock.now();
      const res = (await redis.admit(k.meta, k.ctr, k.gate, k.retry, k.leases, k.base, now, max, leaseMs, leasePrefix, autoCap ?? '')) as (string | number)[];
      if (res[0] === -1) fail('item_not_found', 'No such item.');
      if (res[0] === -2) {
        // closesAt has passed: nothing is admitted any more, and the waiting tickets end `closed`.
        await queue.cut(itemId, 'closed', 'closed');
        return [];
      }
      const out: AdmittedTicket[] = [];
      for (let i = 2; i < res.length; i += 5) {
        const seq = Number(res[i]);
        const rec = parseRecord(String(res[i + 1]), item.snap.epoch);
        out.push({
          ticketId: makeTicketId(itemId, seq, item.snap.secret, bindingOf(rec, item.snap.epoch)),
          seq,
          itemId,
          userId: rec.userId,
          payload: res[i + 2] ? JSON.parse(String(res[i + 2])) : null,
          position: out.length + 1,
          leaseId: String(res[i + 3]),
          leaseExpiresAt: new Date(Number(res[i + 4])).toISOString(),
          createdAt: rec.createdAt,
        });
        const key = `${itemId}\u0000${seq}`;
        const predicted = recall(key);
        if (predicted !== undefined) deps.onWaited!(itemId, predicted, now - rec.createdAt);
      }
      // Leases to watch until they run out (the sweep returns an expired one to the line).
      if (out.length) keepActive(itemId, now + leaseMs + ACTIVE_GRACE_MS);
      return out;
    },

    async settle(ticketId, input) {
      const { item, seq } = await resolveTicket(ticketId);
      const [code] = await queue.settleMany(item.snap.def.itemId, [{ ...input, seq }]);
      if (code < 0) throw settleError(code);
      return readView(ticketId, item, seq);
    },

    async settleMany(itemId, entries) {
      if (!entries.length) return [];
      keepActive(itemId);
      const k = itemKeys(prefix, itemId);
      const args: (string | number)[] = [];
      for (const e of entries) {
        const outcome: Outcome = { status: e.status };
        if (e.result !== undefined) outcome.result = e.result;
        if (e.reason !== undefined) outcome.reason = e.reason;
        args.push(e.seq, e.leaseId, e.status, JSON.stringify(outcome), e.retry ? '1' : '0', e.force ? '1' : '0');
      }
      return (await redis.settle(k.meta, k.ctr, k.retry, k.leases, k.base, clock.now(), ...args)) as number[];
    },

    async cut(itemId, kind, why) {
      keepActive(itemId);
      const k = itemKeys(prefix, itemId);
      const [state, reason, flag] = kind === 'closed' ? ['c', why ?? 'item_closed', 'closed'] : ['r', why ?? 'sold_out', 'soldOut'];
      const n = (await redis.cut(k.meta, k.ctr, k.retry, state, reason, flag, clock.now(), k.base)) as number;
      if (n < 0) fail('item_not_found', 'No such item.');
      cache.invalidate(itemId);
      for (const l of cutListeners) l(itemId);
      return n;
    },

    async setGate(itemId, patch) {
      const fields = gateFields(patch);
      if (!Object.keys(fields).length) return; // HSET with no fields is an error
      await redis.hset(itemKeys(prefix, itemId).gate, fields);
      cache.invalidate(itemId);
      // Every daemon's loops look at the item again (and a cached view of it is not trusted idle).
      keepActive(itemId);
    },

    async drop(itemId) {
      const k = itemKeys(prefix, itemId);
      const [ctr, pending] = await Promise.all([redis.hmget(k.ctr, 'waiting', 'admitted'), redis.xlen(k.done)]);
      if (Number(ctr[0] ?? 0) + Number(ctr[1] ?? 0) > 0 || pending > 0) return false;
      await redis.multi().srem(itemsSetKey(prefix), itemId).incr(itemsVersionKey(prefix)).exec();
      known.ids.delete(itemId);
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', `${k.base.replace(/[*?[\]\\]/g, '\\$&')}*`, 'COUNT', 1000);
        if (keys.length) await redis.unlink(...keys);
        cursor = next;
      } while (cursor !== '0');
      cache.invalidate(itemId);
      return true;
    },

    draw(itemId, opts) {
      let running = draws.get(itemId);
      if (!running) {
        running = runDraw(itemId, opts?.chunk ?? 16_384, opts?.onStep).finally(() => draws.delete(itemId));
        draws.set(itemId, running);
      }
      return running;
    },

    async sweep() {
      const now = clock.now();
      let n = 0;
      // The active items; once a minute every item (a lease whose item fell out of the set).
      const full = now - active.sweptAllAt > 60_000;
      if (full) active.sweptAllAt = now;
      for (const itemId of full ? await knownIds() : await activeItemIds()) {
        const snap = cache.peek(itemId)?.snap;
        if (snap?.draw && !snap.draw.drawn && now >= snap.def.opensAt!) await queue.draw(itemId);
        const k = itemKeys(prefix, itemId);
        n += (await redis.sweep(k.meta, k.ctr, k.leases, k.retry, k.base, now)) as number;
      }
      return n;
    },

    flush: () => touches.flush(),

    async extendLeases(itemId, tickets, until) {
      if (!tickets.length) return 0;
      // The sweep must still look at the item when these leases run out.
      keepActive(itemId, until + ACTIVE_GRACE_MS);
      const k = itemKeys(prefix, itemId);
      return (await redis.extendLeases(k.leases, k.base, until, ...tickets.flatMap((t) => [t.seq, t.leaseId]))) as number;
    },

    series: createSeriesStore(redis, prefix),
    inviteUses: createInviteUses(redis, prefix),

    stock: {
      async take(itemId, seqs) {
        const k = itemKeys(prefix, itemId);
        const [left, ...taken] = (await redis.takeStock(k.stock, k.taken, ...seqs)) as number[];
        return { taken: taken.map((t) => t === 1), left };
      },
      async refund(itemId, seq) {
        const k = itemKeys(prefix, itemId);
        return ((await redis.refundStock(k.stock, k.taken, seq)) as number) === 1;
      },
      async forfeit(itemId, seq) {
        const k = itemKeys(prefix, itemId);
        return ((await redis.refundStock(k.stock, k.taken, seq, '1')) as number) === 1;
      },
      async returnReleased(itemId, orders) {
        if (!orders.length) return 0;
        const k = itemKeys(prefix, itemId);
        const given = (await redis.returnUnit(k.stock, k.returned, k.users, k.base, ...orders.flatMap((o) => [o.orderId, o.userId]))) as number;
        cache.invalidate(itemId);
        return given;
      },
      async set(itemId, units, shards, opts) {
        const k = itemKeys(prefix, itemId);
        const res = (await redis.setStock(k.stock, k.meta, k.ctr, k.taken, units, shards, opts?.idleOnly ? '1' : '0')) as number;
        cache.invalidate(itemId);
        return res >= 0;
      },
    },
  };
  return queue;
}
