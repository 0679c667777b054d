/**
 * Every Redis key Floodgate uses is built here, for TypeScript and for Lua alike: the scripts get
 * an item's fixed keys in KEYS (scripts.ts passes them by name), and build the keys of one ticket
 * or page of tickets with `keyOf.<name>(…)`, which `luaKeyBuilders()` writes from the same tables
 * below (spliced into every script; test/redis-scripts.test.ts runs both and compares).
 *
 * All keys of one item share the hash tag `{itemId}`, so one Lua script may touch them all and a
 * Redis Cluster keeps an item on one slot.
 *
 *   <p>{item}:meta      hash  definition: handler, config, window, capacity, secret, epoch, cuts…
 *   <p>{item}:ctr       hash  seq, served, waiting, admitted, succeeded, … , admissions, cxn
 *   <p>{item}:gate      hash  mode, rate, maxInFlight, tatAt, tatOff (GCRA), a* (controller)
 *   <p>{item}:users     hash  userId → seq of the user's latest ticket
 *   <p>{item}:wins      hash  userId → the user's succeeded tickets before their latest (coupon perUser > 1; lua/_lib.lua heldTicket)
 *   <p>{item}:t:<page>  hash  seq → ticket record (pages of PAGE_SIZE seqs, see lua/_lib.lua)
 *   <p>{item}:p:<page>  hash  seq → last poll (ms), only for items with abandonAfterMs
 *   <p>{item}:x:<seq>   hash  admitted/terminal ticket: lease, leaseExp, admittedAt, outcome…
 *   <p>{item}:pl        hash  seq → payload JSON
 *   <p>{item}:retry     zset  tickets returned to the head (score = seq)
 *   <p>{item}:leases    zset  admitted tickets by lease expiry
 *   <p>{item}:doubt     zset  admitted tickets of a cut item whose sale Postgres must confirm (seq → since, ms)
 *   <p>{item}:unsure    hash  userId → a webhook call whose outcome is unknown (Idempotency-Key, body, when): the user's next ticket repeats it
 *   <p>{item}:cx        stream cancels of tickets still in the line (feeds the poll caches)
 *   <p>{item}:done      stream tickets that ended (and cuts), for the outcome ledger; group 'ledger'
 *   <p>{item}:samples   hash  cumulative gate samples from every daemon: n, d (drops), h<b>/p<b> latency buckets
 *   <p>{item}:leader    string the daemon whose controller drives this item's gate (a lease)
 *   <p>{item}:stock     hash  s<i> → units left in shard i (seckill, coupon)
 *   <p>{item}:taken     hash  seq → shard a ticket took its unit from
 *   <p>{item}:returned  set   order ids of released reservations whose unit went back to stock
 *   <p>{item}:src:<page> hash seq → name of the key that created the ticket
 *   <p>{item}:draw:o, draw:p  string  the pre-queue draw: line place → seq, seq → line place (uint32 BE; lua/draw-4.lua)
 *   <p>{item}:blocked   hash  userId → bits: 1 blocked for this item, 2 blocked everywhere (a copy of `blocks`)
 *   <p>{item}:qu:<userId>:<window>, qk:<keyName>:<window>  string  quota counters (join-5.lua)
 *   <p>{item}:series    zset  one point per second for the console (score = unix second), ~16 min kept
 *   <p>{item}:wait      zset  (split items) waiting local seq → join number, in one sub-line (see below)
 *   <p>{item}:alock     string (split items) the daemon admitting the item now (a short lease)
 *   <p>{item}:inv:<n>   string ticket id an invite made (single use), until the invite expires (a copy of Postgres's invite_uses row)
 *   <p>{item}:ch:<n>    string a proof-of-work challenge that was used (single use), 2 min
 *   <p>items            set   every item id (keys without a hash tag)
 *   <p>items:ver        string bumped whenever the set changes: daemons reload their copy of it
 *   <p>items:active     zset  itemId → until when it needs the background loops (ms): work costs, idle items do not
 *   <p>blocks           set   user ids blocked for every item (copied into each item's `blocked`)
 *   <p>ops:rev          zset  operators' write revisions Redis holds: '*' (blocks everywhere), 'max'; an item's is its meta `opRev`
 *   <p>tokens:revoked   zset  jti of revoked admission tokens → their exp (ms)
 *   <p>{<queue>}:…      BullMQ's keys of one handler's job queue (jobQueuePrefix; BullMQ names the rest)
 *
 * A split item (`lines: K`, K > 1) has K sub-lines. Sub-line 0 is the item's own tag; sub-line
 * k ≥ 1 has the tag subLineTag(itemId, k) (`{<itemId>~<k>}`, on another hash slot), and under it
 * the line's keys by the same names (meta: a copy for the scripts, ctr, users, t:<page>, wait,
 * retry, leases, x:<seq>, pl, src:<page>, done, cx…, and blocked: a copy of the blocks of the
 * users whose sub-line it is). The gate, the join-number counter (ctr field jn) and the
 * admission cursor (ctr field an) stay on the item's own tag. See queue/split-line.ts.
 */
import { recentMap } from '../kernel/recent-map.js';

/** Ticket records (and their poll times and sources) are kept in hash pages of this many seqs. */
export const PAGE_SIZE = 128;

/** An item's fixed keys: name → what follows `<prefix>{<itemId>}:`. */
const fixed = {
  meta: 'meta',
  ctr: 'ctr',
  gate: 'gate',
  users: 'users',
  retry: 'retry',
  leases: 'leases',
  cx: 'cx',
  done: 'done',
  samples: 'samples',
  leader: 'leader',
  stock: 'stock',
  taken: 'taken',
  returned: 'returned',
  blocked: 'blocked',
  series: 'series',
  payloads: 'pl',
  drawOrder: 'draw:o',
  drawPlaces: 'draw:p',
  wait: 'wait',
  alock: 'alock',
  doubt: 'doubt',
  unsure: 'unsure',
  wins: 'wins',
} as const;

export type ItemKeyName = keyof typeof fixed;

/**
 * An item's keys made per ticket, page or window, as the scripts build them too:
 *   page     `<tag><seq / PAGE_SIZE>`     seq       `<tag><seq>`
 *   window   `<tag><name>:<window>`       nonce     `<tag><nonce>` (TypeScript only)
 */
const made = {
  page: ['t:', 'page'],
  pollPage: ['p:', 'page'],
  sourcePage: ['src:', 'page'],
  x: ['x:', 'seq'],
  userQuota: ['qu:', 'window'],
  keyQuota: ['qk:', 'window'],
  invite: ['inv:', 'nonce'],
  challenge: ['ch:', 'nonce'],
} as const;

type Made = typeof made;
type Maker<K> = K extends 'page' | 'seq' ? (seq: number) => string : K extends 'window' ? (name: string, window: number) => string : (nonce: string) => string;

export type ItemKeys = { base: string } & Record<ItemKeyName, string> & { [N in keyof Made]: Maker<Made[N][1]> };

const pageOf = (seq: number) => Math.floor(seq / PAGE_SIZE);

/** Key sets built lately (4,096 items, two generations): a ticket's path asks for its item's a dozen times. */
const built = recentMap<string, ItemKeys>(4096);

export function itemKeys(prefix: string, itemId: string): ItemKeys {
  const base = `${prefix}{${itemId}}:`;
  let keys = built.get(base);
  if (!keys) built.set(base, (keys = Object.freeze(buildKeys(base))));
  return keys;
}

function buildKeys(base: string): ItemKeys {
  const out: Record<string, unknown> = { base };
  for (const [name, suffix] of Object.entries(fixed)) out[name] = base + suffix;
  for (const [name, [tag, kind]] of Object.entries(made)) {
    out[name] =
      kind === 'page'
        ? (seq: number) => `${base}${tag}${pageOf(seq)}`
        : kind === 'seq'
          ? (seq: number) => `${base}${tag}${seq}`
          : kind === 'window'
            ? (n: string, w: number) => `${base}${tag}${n}:${w}`
            : (nonce: string) => `${base}${tag}${nonce}`;
  }
  return out as ItemKeys;
}

/** The suffix of a fixed key: what the scripts strip from KEYS[1] to find the item's base. */
export const keySuffix = (name: ItemKeyName): string => fixed[name];

/**
 * The Lua half of the layout, spliced into every script after its KEYS table `K` (scripts.ts):
 * `keyOf.page(seq)`, `keyOf.x(seq)`, `keyOf.userQuota(userId, window)` … build exactly what
 * itemKeys() builds.
 */
export function luaKeyBuilders(): string {
  const lines = [`local PAGE_SIZE = ${PAGE_SIZE}`, 'local keyOf = {}'];
  for (const [name, [tag, kind]] of Object.entries(made)) {
    if (kind === 'nonce') continue;
    const body =
      kind === 'page'
        ? `function(seq) return K.base .. '${tag}' .. string.format('%d', math.floor(seq / PAGE_SIZE)) end`
        : kind === 'seq'
          ? `function(seq) return K.base .. '${tag}' .. string.format('%d', seq) end`
          : `function(name, w) return K.base .. '${tag}' .. name .. ':' .. string.format('%d', w) end`;
    lines.push(`keyOf.${name} = ${body}`);
  }
  return lines.join('\n');
}

/** CRC16/XMODEM of a key's hash tag mod 16384: the Redis Cluster hash slot. */
export function hashSlot(tag: string): number {
  let crc = 0;
  for (const b of Buffer.from(tag)) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

const subTags = new Map<string, string[]>();

/**
 * The hash tag of sub-line k of a split item: the item's id for k = 0 (its keys are today's),
 * `<itemId>~<k>` for k ≥ 1, or `<itemId>~<k>.<j>` with the least j that puts it on a slot none
 * of sub-lines 0..k-1 uses (so the K sub-lines are on K different slots). '~' is never in an
 * item id, so no sub-line tag is another item's.
 */
export function subLineTag(itemId: string, k: number): string {
  let tags = subTags.get(itemId);
  if (!tags) {
    if (subTags.size >= 10_000) subTags.clear();
    subTags.set(itemId, (tags = [itemId]));
  }
  while (tags.length <= k) {
    const used = new Set(tags.map(hashSlot));
    const n = tags.length;
    let tag = `${itemId}~${n}`;
    for (let j = 1; used.has(hashSlot(tag)); j++) tag = `${itemId}~${n}.${j}`;
    tags.push(tag);
  }
  return tags[k];
}

export const itemsSetKey = (prefix: string) => `${prefix}items`;
export const revokedTokensKey = (prefix: string) => `${prefix}tokens:revoked`;
export const globalBlocksKey = (prefix: string) => `${prefix}blocks`;
/** zset of operators' write revisions Redis holds: '*' (the blocks everywhere) and 'max' (the highest); an item's own is its meta `opRev` (catalog/op-revs.ts). */
export const opRevsKey = (prefix: string) => `${prefix}ops:rev`;
export const itemsVersionKey = (prefix: string) => `${prefix}items:ver`;
/** zset itemId → until when the item needs the background loops' attention (ms); see queue's active set. */
export const activeItemsKey = (prefix: string) => `${prefix}items:active`;
/** zset itemId → the latest time (ms) at which the item may have changed: what makes a held item view trusted (see queue's change notices). */
export const changedItemsKey = (prefix: string) => `${prefix}items:changed`;
/** Items redefined, restocked or reopened (itemId → when, ms, stamped 500 ms ahead: queue/items.ts NOTICE_AHEAD_MS): announce() only (queue/ended-users.ts reads it). */
export const announcedItemsKey = (prefix: string) => `${prefix}items:announced`;
/** zset itemId → when (ms) an item behind a closed gate next needs the loops (its window's end, its draw): made active then. */
export const wakeItemsKey = (prefix: string) => `${prefix}items:wake`;
/** A short-lived key /readyz writes: Redis answers PING while it refuses writes (a replica: READONLY; at its maxmemory). */
export const readyProbeKey = (prefix: string) => `${prefix}ready`;
/** While the daemons slew to a change of Redis's clock: how far their time is from Redis's, and when (kernel/redis-time.ts). */
export const clockSlewKey = (prefix: string) => `${prefix}clock:slew`;
/** The prefix BullMQ gets for a handler's job queue: the hash tag keeps each queue's keys on one slot. */
export const jobQueuePrefix = (prefix: string, queueName: string) => `${prefix}{${queueName}}`;
