/**
 * The faults, each done for real while a sale runs: Postgres cut off at the TCP level, Postgres
 * refusing writes, Postgres's connections falling silent, Redis SIGKILLed and restarted from its AOF, Redis's connections falling silent, Redis near its maxmemory, a rollback of the item's Redis keys,
 * hostile input among valid joins, and a webhook downstream that redirects. `inject` waits for its
 * moment in the sale, does the fault and returns its window.
 */
import { createServer, type Server } from 'node:http';
import { freePort } from '../../lib/procs.js';
import type { ProxyThread } from '../../lib/proxy-thread.js';
import { countedMemory } from '../../../src/redis/client.js';
import type { SaleRun } from './sale.js';
import { asAdmin, itemKeyPattern, sleep, type Env, type ItemKind } from './setup.js';

export interface FaultWindow {
  /** When the fault began and ended (ms, this process's clock); null for faults without an outage. */
  startMs: number | null;
  endMs: number | null;
  /**
   * A join answered at or after `from` whose request was sent at or before `to` may be lost to
   * Redis' documented durability (AOF everysec, a rollback); one sent later never may.
   */
  lossWindow?: { from: number; to: number; why: string };
  notes: string[];
}

/** A check of the fault's own (e.g. the redirect target saw no request); `ok` decides PASS with the loss columns. */
export interface ExtraCheck {
  name: string;
  value: number;
  ok: boolean;
}

export interface Prepared {
  url?: string;
  checks(): ExtraCheck[];
  stop(): Promise<void>;
}

export interface Fault {
  key: string;
  title: string;
  kind: ItemKind;
  units: number;
  buyers: number;
  ratePerS: number;
  hostileEvery?: number;
  prepare?(env: Env): Promise<Prepared>;
  inject(env: Env, sale: SaleRun, itemId: string): Promise<FaultWindow>;
}

const OUTAGE_MS = Number(process.env.BENCH_CHAOS_OUTAGE_MS ?? 10_000);
const REDIS_DOWN_MS = Number(process.env.BENCH_CHAOS_REDIS_DOWN_MS ?? 2_000);
/** Redis' own worst case for `appendfsync everysec`: "up to 2 seconds" when an fsync is slow. */
export const EVERYSEC_WINDOW_MS = 2_000;

/** The sale's size (env knobs); faults may scale it. */
export const UNITS = Number(process.env.BENCH_CHAOS_UNITS ?? 2_000);
export const BUYERS = Number(process.env.BENCH_CHAOS_BUYERS ?? 6_000);
export const RATE = Number(process.env.BENCH_CHAOS_RATE ?? 400);

const sale = { units: UNITS, buyers: BUYERS, ratePerS: RATE };
/** The fault begins once this share of the buyers has been launched (the sale is well under way). */
const at = (s: SaleRun, share = 0.2) => s.launchedAtLeast(Math.round(BUYERS * share));

export const faults: Fault[] = [
  {
    key: 'pg-unreachable',
    title: `Postgres unreachable ${OUTAGE_MS / 1000} s (TCP proxy cut: connections reset, new ones refused)`,
    kind: 'seckill',
    ...sale,
    async inject(env, s) {
      await at(s);
      const startMs = Date.now();
      await env.proxy.cut();
      await sleep(OUTAGE_MS);
      await env.proxy.restore();
      return { startMs, endMs: Date.now(), notes: [] };
    },
  },
  {
    key: 'pg-read-only',
    title: `Postgres refusing writes ${OUTAGE_MS / 1000} s (default_transaction_read_only, backends terminated at both ends)`,
    kind: 'coupon',
    ...sale,
    async inject(env, s) {
      await at(s);
      const db = env.dbName;
      const terminate = (sql: Parameters<Parameters<typeof asAdmin>[0]>[0]) =>
        sql`select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where datname = ${db} and pid <> pg_backend_pid()`;
      // The fault starts once the sessions are gone (opening the admin connection takes a moment).
      const [{ n: cut }] = await asAdmin(async (sql) => {
        await sql.unsafe(`alter database "${db}" set default_transaction_read_only = on`);
        return terminate(sql);
      });
      const startMs = Date.now();
      await sleep(OUTAGE_MS);
      // Sessions opened during the fault keep read_only as their default: ending them is what
      // makes Postgres take writes again for the daemon, as a recovered primary would.
      const [{ n: cut2 }] = await asAdmin(async (sql) => {
        await sql.unsafe(`alter database "${db}" reset default_transaction_read_only`);
        return terminate(sql);
      });
      return { startMs, endMs: Date.now(), notes: [`backends terminated: ${cut} at the start, ${cut2} at the end`] };
    },
  },
  // A moment, not an outage: what it costs is how long the daemon waits on the silent connections
  // (FLOODGATE_PG_TIMEOUT_MS) before it sells on new ones.
  silentStore('pg-silent', 'Postgres', (env) => env.proxy),
  {
    key: 'redis-kill',
    title: `Redis SIGKILLed, restarted from its AOF (everysec) after ${REDIS_DOWN_MS / 1000} s`,
    kind: 'seckill',
    ...sale,
    async inject(env, s) {
      await at(s);
      const startMs = Date.now();
      await env.redis.kill9();
      await sleep(REDIS_DOWN_MS);
      await env.redis.restart();
      return {
        startMs,
        endMs: Date.now(),
        lossWindow: { from: startMs - EVERYSEC_WINDOW_MS, to: startMs, why: `answered at most ${EVERYSEC_WINDOW_MS / 1000} s before the kill or sent before it (AOF everysec)` },
        notes: [],
      };
    },
  },
  // Redis keeps everything: no loss window. What it costs is how long each of the daemon's
  // connections owes replies before it is given up and made again (API 3 s, admissions 6 s, BullMQ 5 s).
  silentStore('redis-silent', 'Redis', (env) => env.redisProxy),
  {
    key: 'redis-full',
    title: `Redis near its maxmemory ${OUTAGE_MS / 1000} s (64 MB of other data, then CONFIG SET maxmemory to used_memory ÷ 0.93, noeviction; then unset)`,
    kind: 'seckill',
    ...sale,
    async inject(env, s) {
      // Other data, as a production Redis holds: the 7% left is then ~6 MB, a real server's share,
      // not the ~200 KB of the scenario's bare few MB (at maxmemory itself nothing drains). This
      // sale's line is short (joins come at 400/s, sales go faster), so refused joins are also a
      // pause in sales; test/redis-memory.test.ts drains a waiting line near the limit.
      const ballast = Array.from({ length: 64 }, (_, i) => `${env.ctx.prefix}ballast:${i}`);
      const mb = 'x'.repeat(1 << 20);
      for (const k of ballast) await env.rc.set(k, mb);
      await at(s);
      const info = await env.rc.info('memory');
      const used = countedMemory(info).counted;
      await env.rc.config('SET', 'maxmemory', String(Math.ceil(used / 0.93)));
      const startMs = Date.now();
      await sleep(OUTAGE_MS);
      await env.rc.config('SET', 'maxmemory', '0');
      await env.rc.del(...ballast);
      // Redis itself loses nothing: no loss window. New joins are refused (503) while it is over
      // FLOODGATE_REDIS_MEMORY_LIMIT; the line drains in what is left.
      return { startMs, endMs: Date.now(), notes: [`maxmemory ${(used / 0.93 / 1024 / 1024).toFixed(1)} MB for ${(used / 1024 / 1024).toFixed(1)} MB used`] };
    },
  },
  {
    key: 'redis-rollback',
    title: 'Redis rollback of the item\'s keys: DUMP early, ~500 joins later RESTORE REPLACE and DEL the newer keys',
    kind: 'seckill',
    ...sale,
    async inject(env, s, itemId) {
      await s.launchedAtLeast(300);
      await sleep(300);
      const from = Date.now();
      const dump = await dumpKeys(env, itemId);
      const target = s.launched() + 500;
      await s.launchedAtLeast(target);
      await sleep(300);
      const startMs = Date.now();
      const deleted = await restoreKeys(env, itemId, dump);
      return {
        startMs,
        endMs: Date.now(),
        lossWindow: { from, to: Date.now(), why: 'answered after the DUMP began, sent before the RESTORE ended (rolled back)' },
        notes: [`${dump.size} keys dumped and restored, ${deleted} newer keys deleted; rolled back over ${((startMs - from) / 1000).toFixed(1)} s`],
      };
    },
  },
  {
    key: 'hostile-input',
    title: 'hostile joins (NUL, lone surrogates in userId or payload) after every 10th valid join',
    kind: 'seckill',
    ...sale,
    hostileEvery: 10,
    async inject() {
      return { startMs: null, endMs: null, notes: [] };
    },
  },
  {
    key: 'webhook-redirect',
    title: 'webhook downstream answers 302 to another local server',
    kind: 'webhook',
    units: 0,
    buyers: Math.min(300, BUYERS),
    ratePerS: 150,
    prepare: redirectingDownstream,
    async inject() {
      return { startMs: null, endMs: null, notes: [] };
    },
  },
];

/** A store's open connections fall silent once the sale is under way: their proxy drops their packets for good. */
function silentStore(key: string, store: string, proxy: (env: Env) => ProxyThread): Fault {
  return {
    key,
    title: `${store} silent (TCP proxy drops every open connection's packets for good, no reset; new connections pass)`,
    kind: 'seckill',
    ...sale,
    async inject(env, s) {
      await at(s);
      const startMs = Date.now();
      await proxy(env).silence();
      return { startMs, endMs: startMs, notes: ['the silent connections stay open at both ends until the proxy closes'] };
    },
  };
}

/**
 * Every key of the item, found and DUMPed in one script: a point in time, as a rollback restores
 * one. (The keys were first found by SCAN and then DUMPed in a MULTI: a ticket admitted in
 * between had its page's record and lease dumped but not its state hash, which had not been
 * there for the SCAN; restored, it sat `admitted` with nothing to end it — the vanished tickets
 * of this fault in runs where earlier faults' keys made the SCAN long enough, 4 Dec night.)
 */
async function dumpKeys(env: Env, itemId: string): Promise<Map<string, Buffer>> {
  const flat = (await env.rc.callBuffer('EVAL', DUMP_ALL, '0', itemKeyPattern(env, itemId))) as Buffer[];
  const out = new Map<string, Buffer>();
  for (let i = 0; i < flat.length; i += 2) out.set(flat[i].toString(), flat[i + 1]);
  return out;
}

/** RESTORE REPLACE of the dump and DEL of every key of the item not in it, in one script; returns how many were deleted. */
async function restoreKeys(env: Env, itemId: string, dump: Map<string, Buffer>): Promise<number> {
  return (await env.rc.eval(RESTORE_ALL, 0, itemKeyPattern(env, itemId), ...[...dump].flat())) as number;
}

const DUMP_ALL = `
local out = {}
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
  local v = redis.call('DUMP', k)
  if v then out[#out + 1] = k; out[#out + 1] = v end
end
return out`;

const RESTORE_ALL = `
local keep = {}
for i = 2, #ARGV, 2 do keep[ARGV[i]] = true end
local deleted = 0
for _, k in ipairs(redis.call('KEYS', ARGV[1])) do
  if not keep[k] then redis.call('DEL', k); deleted = deleted + 1 end
end
for i = 2, #ARGV, 2 do redis.call('RESTORE', ARGV[i], 0, ARGV[i + 1], 'REPLACE') end
return deleted`;

/** A downstream that answers every call 302 → a second server, which counts what reaches it. */
async function redirectingDownstream(): Promise<Prepared> {
  let calls = 0;
  let stolen = 0;
  const listen = async (handler: Parameters<typeof createServer>[1]) => {
    const port = await freePort();
    const srv = createServer(handler);
    await new Promise<void>((r) => srv.listen(port, '127.0.0.1', () => r()));
    return { srv, port };
  };
  const target = await listen((req, res) => {
    stolen++;
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"stolen":true}');
  });
  const front = await listen((req, res) => {
    calls++;
    req.resume();
    res.writeHead(302, { location: `http://127.0.0.1:${target.port}/collect` }).end();
  });
  const close = (s: Server) => new Promise<void>((r) => s.close(() => r()));
  return {
    url: `http://127.0.0.1:${front.port}/hook`,
    checks: () => [
      { name: 'requests at the redirect target', value: stolen, ok: stolen === 0 },
      { name: 'calls to the downstream', value: calls, ok: true },
    ],
    async stop() {
      front.srv.closeAllConnections();
      target.srv.closeAllConnections();
      await Promise.all([close(front.srv), close(target.srv)]);
    },
  };
}
