import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { packageRoot } from '../kernel/package-root.js';
import { isCluster, runOnceScripts, type RedisLike } from './client.js';
import { itemKeys, keySuffix, luaKeyBuilders, type ItemKeyName } from './keys.js';

/**
 * The Lua scripts, one file each in lua/ (`name-<numKeys>.lua`, BullMQ style), and the one way
 * to call them. Every script is about one item and follows one convention:
 *
 *   KEYS  the item's fixed keys, by the names in keys.ts, in the order its spec lists them; in
 *         Lua they are also `K.<name>` (and `K.base`, the item's key prefix), and a ticket's own
 *         keys are built with `keyOf.<name>(…)` (keys.ts writes both).
 *   ARGV  ARGV[1] is `now` (ms, the caller's clock) in every script, then the spec's names in
 *         order, then, for scripts with `rest`, repeated groups (one per ticket or order).
 *
 * A script's header states its KEYS, ARGV and returns; test/redis-scripts.test.ts checks every
 * header against its file name and its spec here, and runs each script against a real Redis.
 * The typed wrappers that map each script's results and codes live with the module that owns
 * the state: the line in queue/, stock in service/, the gate's lease in scheduler/.
 */
export interface ScriptSpec<K extends ItemKeyName = ItemKeyName, A extends string = string> {
  /** The ioredis command it is defined as. */
  name: string;
  /** Its file in lua/, without `.lua`: `<name>-<numKeys>`. */
  file: string;
  keys: readonly K[];
  /** ARGV[2…], by name (ARGV[1] is always `now`). */
  argv: readonly A[];
  /** What follows, repeated (null: nothing). */
  rest: string | null;
}

function spec<const K extends ItemKeyName, const A extends string>(file: string, keys: readonly K[], argv: readonly A[], rest: string | null = null): ScriptSpec<K, A> {
  const name = file.replace(/-\d+$/, '').replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
  return { name, file, keys, argv, rest };
}

/** The keys finish() and returnToHead() in _lib.lua touch, for scripts that end tickets. */
const ending = ['payloads', 'stock', 'taken', 'done'] as const;

export const scripts = {
  join: spec('join-5', ['meta', 'ctr', 'users', 'payloads', 'blocked'], ['userId', 'payload', 'source', 'defaultKeyQuota', 'memoryFull', 'uncounted']),
  readTicket: spec('read-ticket-3', ['meta', 'ctr', 'retry'], ['seq']),
  cancel: spec('cancel-9', ['meta', 'ctr', 'users', 'retry', ...ending, 'cx'], ['seq', 'outcome', 'record']),
  admit: spec('admit-12', ['meta', 'ctr', 'gate', 'retry', 'leases', 'payloads', 'blocked', 'stock', 'taken', 'done', 'drawOrder', 'doubt'], ['max', 'leaseMs', 'leasePrefix', 'autoCap', 'version']),
  settle: spec('settle-9', ['meta', 'ctr', 'retry', 'leases', ...ending, 'doubt'], [], 'seq, leaseId, status, outcome, retry, force, record'),
  sweep: spec('sweep-9', ['meta', 'ctr', 'retry', 'leases', ...ending, 'doubt'], []),
  readDoubt: spec('read-doubt-2', ['doubt', 'ctr'], ['until']),
  relaunch: spec('relaunch-4', ['ctr', 'doubt', 'leases', 'payloads'], ['leaseMs', 'leasePrefix'], 'seq'),
  resolveDoubt: spec('resolve-doubt-7', ['meta', 'ctr', 'doubt', 'payloads', 'stock', 'taken', 'done'], [], 'seq, outcome'),
  extendLeases: spec('extend-leases-3', ['leases', 'ctr', 'doubt'], ['until'], 'seq, leaseId'),
  define: spec('define-5', ['meta', 'ctr', 'gate', 'stock', 'taken'], ['secret', 'definition', 'gate', 'reopen', 'epoch', 'born', 'drawSeed']),
  trimCancels: spec('trim-cancels-3', ['meta', 'ctr', 'cx'], ['lastN', 'bound', 'cutSeq'], 'id'),
  cut: spec('cut-8', ['meta', 'ctr', 'retry', 'done', 'doubt', 'payloads', 'stock', 'taken'], ['stateChar', 'reason', 'flag', 'decidedAt', 'windowEnd', 'hold']),
  holdBought: spec('hold-bought-9', ['meta', 'ctr', 'retry', 'doubt', ...ending, 'cx'], [], 'seq'),
  draw: spec('draw-4', ['meta', 'ctr', 'drawOrder', 'drawPlaces'], ['op', 'first', 'order', 'places', 'size']),
  block: spec('block-1', ['blocked'], ['userId', 'bit', 'on']),
  takeStock: spec('take-stock-2', ['stock', 'taken'], [], 'seq'),
  refundStock: spec('refund-stock-3', ['stock', 'taken', 'ctr'], ['seq', 'forfeit', 'upTo']),
  setStock: spec('set-stock-4', ['stock', 'meta', 'ctr', 'taken'], ['units', 'shards', 'idleOnly', 'admissions', 'unitsWere']),
  returnUnit: spec('return-unit-3', ['stock', 'returned', 'users'], ['cap'], 'orderId, userId'),
  forgetUser: spec('forget-user-1', ['users'], ['userId', 'seq']),
  lead: spec('lead-1', ['leader'], ['me', 'ttlMs']),
  gatePublish: spec('gate-publish-2', ['leader', 'gate'], ['me'], 'field, value pairs'),
  seriesAdd: spec('series-add-1', ['series'], ['second', 'point', 'keep']),
  snapshot: spec('snapshot-4', ['meta', 'ctr', 'gate', 'stock'], ['probe']),
  ackEnded: spec('ack-ended-3', ['done', 'payloads', 'taken'], ['group', 'ttl'], 'id, seqs'),
  // A split item's sub-lines (queue/split-line.ts): join, peek and admit run on a sub-line's keys, the gate on the item's.
  splitNumber: spec('split-number-3', ['ctr', 'blocked', 'meta'], ['userId', 'source', 'defaultKeyQuota']),
  splitJoin: spec('split-join-5', ['meta', 'ctr', 'users', 'wait', 'payloads'], ['userId', 'num', 'payload', 'source']),
  splitPeek: spec('split-peek-5', ['meta', 'ctr', 'retry', 'wait', 'stock'], ['upTo', 'max']),
  splitAdmit: spec('split-admit-11', ['meta', 'ctr', 'retry', 'wait', 'leases', 'payloads', 'stock', 'taken', 'blocked', 'done', 'doubt'], ['leaseMs', 'leasePrefix'], 'seq'),
  splitUnits: spec('split-units-1', ['stock'], ['delta']),
  splitGate: spec('split-gate-4', ['gate', 'ctr', 'alock', 'meta'], ['op', 'token', 'want', 'inFlight', 'autoCap', 'taken', 'lastNum', 'version']),
} as const;

export type Scripts = typeof scripts;

const luaDir = path.join(packageRoot(), 'src/redis/lua');

/**
 * A script's source as Redis runs it: its KEYS by name (`K`), the key builders (`keyOf`), then
 * the file with each `-- @include <name>` line replaced by lua/<name>.lua.
 */
export function scriptSource(s: ScriptSpec): string {
  const first = s.keys[0];
  const named = s.keys.map((k, i) => `${k} = KEYS[${i + 1}]`).join(', ');
  const preamble = `local K = { base = string.sub(KEYS[1], 1, #KEYS[1] - ${keySuffix(first).length}), ${named} }\n${luaKeyBuilders()}\n`;
  return preamble + withIncludes(readFileSync(path.join(luaDir, `${s.file}.lua`), 'utf8'));
}

/** Splices `-- @include <name>` lines (lua/_<name>.lua). */
export const withIncludes = (lua: string) => lua.replace(/^-- @include (\w+)$/gm, (_, inc: string) => readFileSync(path.join(luaDir, `${inc}.lua`), 'utf8'));

const sources = new Map(Object.values(scripts).map((s) => [s.name, scriptSource(s)]));

/**
 * The scripts whose concurrent calls for many items go to Redis as one call (createScriptRunner):
 * the per-item calls of the dispatcher's rounds, the settles and the stock takes. Spread over 200
 * items a sale made five such calls per ticket, and each call's cost in the client (its command,
 * its write, its reply, its promise) made the daemon's CPU per order grow with the item count.
 * Also the item views' refreshes (a read of four small hashes each), and the background loops'
 * calls for every active item: the lease sweep twice a second and the series point once a second
 * (200 items on sale: 600 calls a second of their own). A sweep for many items reclaims at most
 * RECLAIM_LIMIT_MANY leases per item (alone 1,000: 256 items' full runs in one took 3.8 s after a
 * crash left leases on all); an item that may have more is swept again alone (admissions.sweep).
 * And the joins: a flood's joins arrive dozens to a turn (100 connections: ~26 a call, measured),
 * and each one's command, reply and promise in ioredis cost the daemon more than its script costs
 * Redis (~21 µs); one call for the turn's joins runs them in the order they came, each as alone.
 */
const coalesced = new Set<string>([
  scripts.join.name,
  scripts.admit.name,
  scripts.settle.name,
  scripts.extendLeases.name,
  scripts.takeStock.name,
  scripts.snapshot.name,
  scripts.sweep.name,
  scripts.seriesAdd.name,
]);
/** Most items in one coalesced call (one script run: its time is Redis's other clients' wait). */
const COALESCE_MAX = 256;
/**
 * Most tickets one coalesced call may carry (admit: the sum of its items' `max`; settle, lease
 * extension, stock take: their entries): 200 items each admitting a round of 200 in one run held
 * Redis 450 ms (measured), longer than the API's command timeout; ~2,000 admissions are ~25 ms.
 */
const COALESCE_TICKETS = 2000;
/** Expired leases one item's run may reclaim inside a coalesced call (alone: 1,000; see manySource). */
export const RECLAIM_LIMIT_MANY = 8;
/** The tickets one call of a coalesced script stands for, from its ARGV (now, the named args, the rest). */
const ticketsOf: Record<string, (argv: Arg[], s: ScriptSpec) => number> = {
  [scripts.admit.name]: (argv, s) => Number(argv[1 + s.argv.indexOf('max')]) || 1,
  [scripts.settle.name]: (argv, s) => (argv.length - 1 - s.argv.length) / 7,
  [scripts.extendLeases.name]: (argv, s) => (argv.length - 1 - s.argv.length) / 2,
  [scripts.takeStock.name]: (argv, s) => argv.length - 1 - s.argv.length,
};

/**
 * A script run for many items in one call: KEYS is each item's keys in turn, ARGV each item's
 * ARGV preceded by its length. Each item runs the script's own source in a function of its own,
 * with KEYS and ARGV its own, under pcall, so an error fails that item alone (as its own call
 * would have: what it wrote before the error stays). Returns one reply per item; a failed item's
 * is { '!err', message }.
 */
export function manySource(s: ScriptSpec): string {
  const source = sources.get(s.name)!;
  // Expired leases an item's run reclaims (admit first, the sweep): 1,000 each alone, 8 each here,
  // so that a run for 256 items after a crash left leases on all of them stays ~2,000 reclaims
  // long, not 256,000 (3.8 s, measured for the sweep); an item that reclaimed 8 in a shared sweep
  // is swept again alone (admissions.sweep).
  const own = source.replace('local RECLAIM_LIMIT = 1000', `local RECLAIM_LIMIT = ${RECLAIM_LIMIT_MANY}`);
  if (source.includes('RECLAIM_LIMIT') && own === source) throw new Error(`${s.file}: RECLAIM_LIMIT not found`);
  return `local out, nk, at = {}, ${s.keys.length}, 1
for i = 0, #KEYS / nk - 1 do
  local keys, argv, n = {}, {}, tonumber(ARGV[at])
  for j = 1, nk do keys[j] = KEYS[i * nk + j] end
  for j = 1, n do argv[j] = ARGV[at + j] end
  at = at + n + 1
  local ok, r = pcall(function(KEYS, ARGV)
${own}
  end, keys, argv)
  if ok then out[i + 1] = r or false
  else out[i + 1] = { '!err', type(r) == 'table' and (r.err or 'error') or tostring(r) } end
end
return out
`;
}

type Arg = string | number | Buffer;
type ArgsOf<S> = S extends ScriptSpec<ItemKeyName, infer A> ? Record<A, Arg> : never;
type Command = (...args: Arg[]) => Promise<unknown>;

export interface ScriptRunner {
  /**
   * Runs a script on one item: KEYS from the spec, ARGV[1] = now, then `args` by the spec's
   * names, then `rest`. Resolves to the script's raw reply, for its wrapper to type.
   */
  run<S extends ScriptSpec>(s: S, itemId: string, now: number, args: ArgsOf<S>, rest?: Arg[], opts?: { alone?: boolean }): Promise<unknown>;
}

/**
 * On a cluster, every script call declares one key more, after its own: `<base>slot-guard`, in the
 * item's slot, which nothing ever writes. It keeps scripts off a slot that is moving to another
 * master (resharding: SETSLOT MIGRATING/IMPORTING, then MIGRATE key by key). The scripts build
 * keys they do not declare (a ticket's page, its x:<seq>, quota counters: keys.ts `made`), and
 * Redis checks only the declared ones: a join whose declared keys had all moved ran on the target
 * (ASK) and made there the ticket page still on the source, whose MIGRATE then failed (BUSYKEY:
 * the move stuck half-way, two copies of one page; test/cluster-reshard.test.ts). With a declared
 * key that never exists, the source answers ASK and the target TRYAGAIN (a multi-key call with a
 * key missing) for as long as the slot moves: every script on it waits (ioredis asks again, then
 * the API answers 503) and runs on one node's whole copy once the slot has moved. (Scripts never
 * read KEYS past their spec's, so the extra key changes nothing else.)
 */
export const SLOT_GUARD = 'slot-guard';

/**
 * Defines every script on the connection (once; ioredis falls back from EVALSHA to EVAL itself).
 * On one Redis server (not a cluster, where items' keys lie on other nodes), calls of a coalesced
 * script made in one turn of the event loop are sent as one call (manySource) at the turn's end.
 */
export function createScriptRunner(redis: RedisLike, prefix: string): ScriptRunner {
  const commands = redis as unknown as Record<string, Command>;
  const guarded = isCluster(redis);
  for (const s of Object.values(scripts) as ScriptSpec[]) {
    if (!(s.name in redis)) redis.defineCommand(s.name, { numberOfKeys: s.keys.length + (guarded ? 1 : 0), lua: sources.get(s.name)! });
    if (coalesced.has(s.name) && !(`${s.name}Many` in redis)) redis.defineCommand(`${s.name}Many`, { lua: manySource(s) });
  }
  type Call = { keys: string[]; argv: Arg[]; resolve(r: unknown): void; reject(e: unknown): void };
  const waiting = new Map<ScriptSpec, Call[]>();
  const flush = (s: ScriptSpec) => {
    const calls = waiting.get(s)!;
    waiting.delete(s);
    const weigh = ticketsOf[s.name];
    let chunk: Call[] = [];
    let work = 0;
    for (const c of calls) {
      const w = weigh ? Math.max(1, weigh(c.argv, s)) : 1;
      if (chunk.length && (chunk.length >= COALESCE_MAX || work + w > COALESCE_TICKETS)) {
        send(s, chunk);
        chunk = [];
        work = 0;
      }
      chunk.push(c);
      work += w;
    }
    if (chunk.length) send(s, chunk);
  };
  const send = (s: ScriptSpec, calls: Call[]) => {
    if (calls.length === 1) {
      const [c] = calls;
      return void commands[s.name](...c.keys, ...c.argv).then(c.resolve, c.reject);
    }
    const args: Arg[] = [calls.length * s.keys.length];
    for (const c of calls) args.push(...c.keys);
    for (const c of calls) args.push(c.argv.length, ...c.argv);
    commands[`${s.name}Many`](...args).then(
      (replies) => calls.forEach((c, i) => {
        const r = (replies as unknown[])[i];
        if (Array.isArray(r) && r[0] === '!err') c.reject(new Error(`${s.file}: ${String(r[1])}`));
        else c.resolve(r);
      }),
      (err) => calls.forEach((c) => c.reject(err)),
    );
  };
  const coalesce = !isCluster(redis);
  return {
    run(s, itemId, now, args, rest = [], opts) {
      const k = itemKeys(prefix, itemId); // (kept by keys.ts)
      const named = args as Record<string, Arg>;
      const argv = s.argv.map((n) => {
        if (named[n] === undefined) throw new Error(`${s.file}: ARGV ${n} missing`);
        return named[n];
      });
      const keys = s.keys.map((n) => k[n]);
      if (guarded) keys.push(k.base + SLOT_GUARD);
      if (!coalesce || !coalesced.has(s.name) || opts?.alone) return commands[s.name](...keys, now, ...argv, ...rest);
      return new Promise((resolve, reject) => {
        let calls = waiting.get(s);
        if (!calls) {
          waiting.set(s, (calls = []));
          setImmediate(() => flush(s));
        }
        calls.push({ keys, argv: [now, ...argv, ...rest], resolve, reject });
      });
    },
  };
}

/**
 * Not safe to run twice for one call (client.ts runOnceScripts): each admits tickets under new
 * leases or moves units by a delta. (The others are: a join returns the user's ticket, a settle
 * under a lease that ended answers as a repeat, a stock take or refund is keyed by its seq.)
 */
for (const s of [scripts.admit, scripts.splitAdmit, scripts.relaunch, scripts.splitUnits]) {
  const lua = [sources.get(s.name)!, ...(coalesced.has(s.name) ? [manySource(s)] : [])];
  for (const source of lua) runOnceScripts.add(createHash('sha1').update(source).digest('hex'));
}
