/**
 * Every Redis key Floodgate uses is built here. All keys of one item share the hash tag
 * `{itemId}`, so one Lua script may touch them all and a Redis Cluster keeps an item on one slot.
 *
 *   <p>{item}:meta      hash  definition: handler, config, window, capacity, secret, epoch, cuts…
 *   <p>{item}:ctr       hash  seq, served, waiting, admitted, succeeded, … , admissions, cxn
 *   <p>{item}:gate      hash  mode, rate, maxInFlight, tatAt, tatOff (GCRA), a* (controller)
 *   <p>{item}:users     hash  userId → seq of the user's latest ticket
 *   <p>{item}:t:<page>  hash  seq → ticket record (pages of 128 seqs, see lua/_lib.lua)
 *   <p>{item}:p:<page>  hash  seq → last poll (ms), only for items with abandonAfterMs
 *   <p>{item}:x:<seq>   hash  admitted/terminal ticket: lease, leaseExp, admittedAt, outcome…
 *   <p>{item}:pl        hash  seq → payload JSON
 *   <p>{item}:retry     zset  tickets returned to the head (score = seq)
 *   <p>{item}:leases    zset  admitted tickets by lease expiry
 *   <p>{item}:cx        stream cancels of tickets still in the line (feeds the poll caches)
 *   <p>{item}:done      stream tickets that ended (and cuts), for the outcome ledger; group 'ledger'
 *   <p>{item}:samples   hash  cumulative gate samples from every daemon: n, d (drops), h<b>/p<b> latency buckets
 *   <p>{item}:leader    string the daemon whose controller drives this item's gate (a lease)
 *   <p>{item}:stock     hash  s<i> → units left in shard i (seckill, coupon)
 *   <p>{item}:taken     hash  seq → shard a ticket took its unit from
 *   <p>{item}:returned  set   order ids of released reservations whose unit went back to stock
 *   <p>{item}:src:<page> hash seq → name of the key that created the ticket
 *   <p>{item}:draw:o, draw:p  string  the pre-queue draw: line place → seq, seq → line place (uint32 BE; lua/draw-2.lua)
 *   <p>{item}:blocked   hash  userId → bits: 1 blocked for this item, 2 blocked everywhere (a copy of `blocks`)
 *   <p>{item}:qu:<userId>:<window>, qk:<keyName>:<window>  string  quota counters (join-3.lua)
 *   <p>{item}:series    zset  one point per second for the console (score = unix second), ~16 min kept
 *   <p>{item}:inv:<n>   string ticket id an invite made (single use), until the invite expires
 *   <p>{item}:ch:<n>    string a proof-of-work challenge that was used (single use), 2 min
 *   <p>items            set   every item id (keys without a hash tag)
 *   <p>items:ver        string bumped whenever the set changes: daemons reload their copy of it
 *   <p>items:active     zset  itemId → until when it needs the background loops (ms): work costs, idle items do not
 *   <p>blocks           set   user ids blocked for every item (copied into each item's `blocked`)
 *   <p>tokens:revoked   zset  jti of revoked admission tokens → their exp (ms)
 */
export interface ItemKeys {
  base: string;
  meta: string;
  ctr: string;
  gate: string;
  users: string;
  retry: string;
  leases: string;
  cx: string;
  done: string;
  samples: string;
  leader: string;
  stock: string;
  taken: string;
  returned: string;
  blocked: string;
  sourcePage(seq: number): string;
  /** Per-second points for the console (zset by second; series-store.ts). */
  series: string;
  /** An invite's use (→ the ticket it made) and a proof-of-work challenge's use, by their nonces. */
  invite(nonce: string): string;
  challenge(nonce: string): string;
  pollPage(seq: number): string;
  x(seq: number): string;
}

export const PAGE_SIZE = 128;

export function itemKeys(prefix: string, itemId: string): ItemKeys {
  const base = `${prefix}{${itemId}}:`;
  return {
    base,
    meta: `${base}meta`,
    ctr: `${base}ctr`,
    gate: `${base}gate`,
    users: `${base}users`,
    retry: `${base}retry`,
    leases: `${base}leases`,
    cx: `${base}cx`,
    done: `${base}done`,
    samples: `${base}samples`,
    leader: `${base}leader`,
    stock: `${base}stock`,
    taken: `${base}taken`,
    returned: `${base}returned`,
    blocked: `${base}blocked`,
    sourcePage: (seq) => `${base}src:${Math.floor(seq / PAGE_SIZE)}`,
    series: `${base}series`,
    invite: (nonce) => `${base}inv:${nonce}`,
    challenge: (nonce) => `${base}ch:${nonce}`,
    pollPage: (seq) => `${base}p:${Math.floor(seq / PAGE_SIZE)}`,
    x: (seq) => `${base}x:${seq}`,
  };
}

export const itemsSetKey = (prefix: string) => `${prefix}items`;
export const revokedTokensKey = (prefix: string) => `${prefix}tokens:revoked`;
export const globalBlocksKey = (prefix: string) => `${prefix}blocks`;
export const itemsVersionKey = (prefix: string) => `${prefix}items:ver`;
/** zset itemId → until when the item needs the background loops' attention (ms); see queue.activeItemIds. */
export const activeItemsKey = (prefix: string) => `${prefix}items:active`;
