import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { effectiveGate, paceOf } from '../src/queue/gate-rule.js';
import { createLine } from '../src/queue/line.js';
import type { GateMode } from '../src/queue/types.js';
import { itemKeys, luaKeyBuilders } from '../src/redis/keys.js';
import { createScriptRunner, scripts, withIncludes, type ScriptSpec } from '../src/redis/scripts.js';
import { testRedis } from './support/redis.js';
import { everyScriptCall, everyScriptReply } from './support/script-calls.js';

const t = testRedis();
const luaDir = path.resolve(import.meta.dirname, '../src/redis/lua');
const specs = Object.values(scripts) as ScriptSpec[];
const files = readdirSync(luaDir).filter((f) => !f.startsWith('_'));
const read = (f: string) => readFileSync(path.join(luaDir, f), 'utf8');

/** What a script's header (its first --[[ ]] block) says of KEYS and ARGV. */
function header(file: string) {
  const text = /^--\[\[([\s\S]*?)\]\]/.exec(read(file))?.[1] ?? '';
  const keys = [...text.matchAll(/KEYS\[(\d+)\] (\w+)/g)].map((m) => [Number(m[1]), m[2]] as const);
  const argv = [...text.matchAll(/ARGV\[(\d+)\] (\w+)/g)].map((m) => [Number(m[1]), m[2]] as const);
  const rest = /ARGV\[(\d+)\.\.\]/.exec(text);
  return { keys, argv, rest: rest ? Number(rest[1]) : null };
}

/** The K.<name> fields a piece of Lua reads (outside comments). */
const code = (lua: string) => lua.replace(/--\[\[[\s\S]*?\]\]/g, '').replace(/--[^\n]*/g, '');
const fieldsOf = (lua: string) => new Set([...code(lua).matchAll(/\bK\.(\w+)/g)].map((m) => m[1]));

/** _lib.lua's functions: the K fields each reads, itself or through the functions it calls. */
function libNeeds(): Map<string, Set<string>> {
  const lib = read('_lib.lua');
  const bodies = new Map<string, string>();
  const parts = lib.split(/^local function /m).slice(1);
  for (const p of parts) bodies.set(/^(\w+)/.exec(p)![1], p);
  const needs = new Map<string, Set<string>>();
  const visit = (fn: string, seen = new Set<string>()): Set<string> => {
    if (needs.has(fn)) return needs.get(fn)!;
    const out = fieldsOf(bodies.get(fn)!);
    seen.add(fn);
    for (const other of bodies.keys()) if (!seen.has(other) && new RegExp(`\\b${other}\\(`).test(code(bodies.get(fn)!.replace(/^\w+/, '')))) for (const f of visit(other, seen)) out.add(f);
    needs.set(fn, out);
    return out;
  };
  for (const fn of bodies.keys()) visit(fn);
  return needs;
}

describe('the Lua scripts and their specs', () => {
  it('has one spec per script file, named name-<number of KEYS>', () => {
    expect(specs.map((s) => `${s.file}.lua`).sort()).toEqual([...files].sort());
    for (const s of specs) expect(`${s.file}: ${s.keys.length}`).toBe(`${s.file}: ${Number(/-(\d+)$/.exec(s.file)![1])}`);
  });

  it('states in every header the KEYS and ARGV its spec passes, in order, with ARGV[1] = now', () => {
    for (const s of specs) {
      const h = header(`${s.file}.lua`);
      expect({ file: s.file, keys: h.keys }).toEqual({ file: s.file, keys: s.keys.map((k, i) => [i + 1, k]) });
      expect({ file: s.file, argv: h.argv }).toEqual({ file: s.file, argv: ['now', ...s.argv].map((a, i) => [i + 1, a]) });
      expect({ file: s.file, rest: h.rest }).toEqual({ file: s.file, rest: s.rest === null ? null : s.argv.length + 2 });
    }
  });

  it('reads no fixed key its KEYS do not declare (the script itself and the _lib functions it calls)', () => {
    const needs = libNeeds();
    for (const s of specs) {
      const own = read(`${s.file}.lua`);
      const used = fieldsOf(own);
      for (const [fn, fields] of needs) if (new RegExp(`\\b${fn}\\(`).test(code(own))) for (const f of fields) used.add(f);
      used.delete('base');
      expect({ file: s.file, undeclared: [...used].filter((f) => !(s.keys as string[]).includes(f)) }).toEqual({ file: s.file, undeclared: [] });
    }
  });

  it('builds in Lua exactly the per-ticket keys keys.ts builds', async () => {
    const k = itemKeys('fg:x:', 'it-1');
    const lua = `local K = { base = ARGV[1] }\n${luaKeyBuilders()}\nreturn { keyOf.page(1), keyOf.page(127), keyOf.page(128), keyOf.page(300), keyOf.pollPage(300), keyOf.sourcePage(256), keyOf.x(42), keyOf.userQuota('u:1', 17), keyOf.keyQuota('shop', 18) }`;
    const got = await t.redis.eval(lua, 0, k.base);
    expect(got).toEqual([k.page(1), k.page(127), k.page(128), k.page(300), k.pollPage(300), k.sourcePage(256), k.x(42), k.userQuota('u:1', 17), k.keyQuota('shop', 18)]);
    expect(k.page(128)).toBe('fg:x:{it-1}:t:1');
  });

  it('runs every script once against a real Redis, through the one runner', async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    await line.definitions.define({ itemId: 'it', handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, null, { reopen: false });
    const calls = everyScriptCall(createScriptRunner(t.redis, prefix).run, 'it', clock.now());
    expect(Object.keys(calls).sort()).toEqual(Object.keys(scripts).sort());
    const replies: Record<string, unknown> = {};
    for (const [name, call] of Object.entries(calls)) replies[name] = await call();
    expect(replies).toMatchObject(everyScriptReply(clock.now()));
  });

  it("writes a pre-queue's draw seed in the define itself, once: a daemon killed after the define left a pre-queue with no seed", async () => {
    const prefix = t.newPrefix();
    const { run } = createScriptRunner(t.redis, prefix);
    const opensAt = Date.now() + 60_000;
    const define = (seed: string, at = opensAt) =>
      run(scripts.define, 'pq', Date.now(), { secret: 'ab', definition: JSON.stringify({ handler: 'external', opensAt: String(at), preFrom: '60000' }), gate: '', reopen: '0', epoch: '', born: 'b1', drawSeed: seed });
    const seed = () => t.redis.hget(itemKeys(prefix, 'pq').meta, 'drawSeed');
    await define('aa'.repeat(32));
    expect(await seed()).toBe('aa'.repeat(32));
    await define('bb'.repeat(32)); // redefined for the same draw: the seed committed to stays
    expect(await seed()).toBe('aa'.repeat(32));
    // Another draw time before anyone joined is another draw: its seed (the caller's for that time).
    await define('cc'.repeat(32), opensAt + 1000);
    expect(await seed()).toBe('cc'.repeat(32));
    // Once drawn, the seed stays whatever the definition says (a drawn pre-queue is not drawn again).
    await t.redis.hset(itemKeys(prefix, 'pq').meta, 'drawn', '1');
    await define('dd'.repeat(32), opensAt + 2000);
    expect(await seed()).toBe('cc'.repeat(32));
  });

  it("draws over the size Postgres recorded when given one, and raises the join counter to it: a Redis rolled back past the draw held fewer tickets", async () => {
    const prefix = t.newPrefix();
    const { run } = createScriptRunner(t.redis, prefix);
    const k = itemKeys(prefix, 'pq');
    const opensAt = Date.now() - 1000;
    await run(scripts.define, 'pq', Date.now(), { secret: 'ab', definition: JSON.stringify({ handler: 'external', opensAt: String(opensAt), preFrom: '60000' }), gate: '', reopen: '0', epoch: '', born: 'b1', drawSeed: 'aa'.repeat(32) });
    // Six tickets survived the rollback; the draw shown was over ten.
    await t.redis.hset(k.ctr, 'seq', '6');
    const begin = (size: number | '') => run(scripts.draw, 'pq', Date.now(), { op: 'begin', first: '', order: '', places: '', size });
    expect(await begin('')).toEqual([1, 6, 'aa'.repeat(32)]);
    expect(await begin(10)).toEqual([1, 10, 'aa'.repeat(32)]);
    expect([await t.redis.hget(k.meta, 'drawN'), await t.redis.hget(k.ctr, 'seq'), await t.redis.strlen(k.drawPlaces)]).toEqual(['10', '10', 40]);
    // A counter past the size is left as it is; a draw done already is not changed.
    await t.redis.hset(k.ctr, 'seq', '12');
    expect(await begin(10)).toEqual([1, 10, 'aa'.repeat(32)]);
    expect(await t.redis.hget(k.ctr, 'seq')).toBe('12');
    await run(scripts.draw, 'pq', Date.now(), { op: 'finish', first: '', order: '', places: '', size: '' });
    expect(await begin(14)).toEqual([2, 10, 'aa'.repeat(32)]);
    expect(await t.redis.hget(k.meta, 'drawN')).toBe('10');
  });
});

describe('the effective gate', () => {
  // [mode, rate, maxInFlight, aLimit, aRate, autoCap] → [rate, maxInFlight]
  type Row = [GateMode, number | null, number | null, number | null, number | null, number | null, number | null, number | null];
  const table: Row[] = [
    ['closed', 5, 10, 3, 2, 256, 0, 0],
    ['manual', null, null, 3, 2, 256, null, null],
    ['manual', 5, 10, 3, 2, 256, 5, 10],
    ['auto', null, null, null, null, 256, null, 256],
    ['auto', null, null, null, null, null, null, null],
    ['auto', 5, 10, null, null, 256, 5, 10],
    ['auto', null, null, 40, 12.5, 256, 12.5, 40],
    ['auto', 5, 100, 40, 12.5, 256, 5, 40],
    ['auto', 50, 10, 40, 12.5, 256, 12.5, 10],
    ['auto', null, null, 40, null, 256, null, 40],
    ['auto', 7, null, null, 3, 256, 3, 256],
    // An operator's ceiling over the handler's own cap (seckill: the Postgres-pressure cap) or the
    // slow start: the cap holds under it (the ceiling used to replace it).
    ['auto', null, 500, null, null, 2, null, 2],
    ['auto', null, 1, null, null, 256, null, 1],
  ];

  it('is the same rule in the admit script (_gate.lua) and in what the daemon shows (gate-rule.ts)', async () => {
    const s = (v: number | null) => (v === null ? '' : String(v));
    const lua = withIncludes('-- @include _gate\nlocal r, m = effectiveGate(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])\nreturn { tostring(r), tostring(m) }');
    for (const [mode, rate, mif, aLimit, aRate, autoCap, wantRate, wantMif] of table) {
      const ts = effectiveGate({ mode, rate, maxInFlight: mif }, paceOf({ aLimit: s(aLimit), aRate: s(aRate) }), autoCap);
      const inLua = await t.redis.eval(lua, 0, mode, s(rate), s(mif), s(aLimit), s(aRate), s(autoCap));
      const asLua = (v: number | null) => (v === null ? 'nil' : String(v));
      const row = `${mode} rate=${rate} mif=${mif} aLimit=${aLimit} aRate=${aRate} autoCap=${autoCap}`;
      expect({ row, ts }).toEqual({ row, ts: { rate: wantRate, maxInFlight: wantMif } });
      expect({ row, lua: inLua }).toEqual({ row, lua: [asLua(wantRate), asLua(wantMif)] });
    }
  });
});

describe('stock at admission', () => {
  it('takes a ticket its unit as it is admitted: a second round admits none of the same units, a unit given back goes to the next ticket', async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    await line.definitions.define({ itemId: 'st', handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, null, { reopen: false });
    const { run } = createScriptRunner(t.redis, prefix);
    const now = clock.now();
    await run(scripts.setStock, 'st', now, { units: 2, shards: 2, idleOnly: '0', admissions: '', unitsWere: '' });
    for (const userId of ['a', 'b', 'c', 'd']) await run(scripts.join, 'st', now, { userId, payload: '', source: '', defaultKeyQuota: '', memoryFull: '', uncounted: '' });
    const admit = async () => (await run(scripts.admit, 'st', now, { max: 10, leaseMs: 60_000, leasePrefix: 'p.', autoCap: '', version: '' })) as (string | number)[];
    const first = await admit();
    expect(first.slice(0, 3)).toEqual([0, 2, 1]);
    // The jobs have not taken their units yet: when only they did, this round admitted two more.
    expect((await admit())[1]).toBe(0);
    // The handler's take finds each unit already the ticket's (idempotent), the counter empty.
    expect(await run(scripts.takeStock, 'st', now, {}, [1, 2])).toEqual([0, 1, 1]);
    // Ticket 1 ends without a sale: its unit goes back, and the next ticket in line is admitted with it.
    await run(scripts.settle, 'st', now, {}, [1, first[5], 'rejected', '{"status":"rejected","reason":"x"}', '0', '1', '']);
    const third = await admit();
    expect(third.slice(0, 3)).toEqual([0, 1, 3]);
    expect(await run(scripts.takeStock, 'st', now, {}, [3, 4])).toEqual([0, 1, -1]);
    // Ticket 2 sells and ends; the outcome ledger's ack drops its unit marker. A run of it that
    // stalled and goes on now takes no unit (it took a fresh one, which nobody gave back), nor
    // does ticket 1, ended without a sale, nor 4, still waiting; the admitted 3 keeps its own.
    await run(scripts.settle, 'st', now, {}, [2, 'forced', 'succeeded', '{"status":"succeeded"}', '0', '1', '']);
    await t.redis.hdel(itemKeys(prefix, 'st').taken, '2');
    await t.redis.hset(itemKeys(prefix, 'st').stock, 's0', 1);
    expect(await run(scripts.takeStock, 'st', now, {}, [2, 1, 4, 3])).toEqual([1, -1, -1, -1, 1]);
  });
});

describe('stock set mid-sale', () => {
  it("leaves off the counter the units admitted tickets hold: they sell or come back (it held them twice: that many tickets too many were admitted)", async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    await line.definitions.define({ itemId: 'mid', handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, null, { reopen: false });
    const { run } = createScriptRunner(t.redis, prefix);
    const now = clock.now();
    const units = async () => (await t.redis.hvals(itemKeys(prefix, 'mid').stock)).map(Number).reduce((a, b) => a + b, 0);
    await run(scripts.setStock, 'mid', now, { units: 10, shards: 2, idleOnly: '0', admissions: '', unitsWere: '' });
    for (const userId of ['a', 'b', 'c']) await run(scripts.join, 'mid', now, { userId, payload: '', source: '', defaultKeyQuota: '', memoryFull: '', uncounted: '' });
    await run(scripts.admit, 'mid', now, { max: 3, leaseMs: 60_000, leasePrefix: 'p.', autoCap: '', version: '' });
    expect(await units()).toBe(7);
    // An operator's PUT mid-sale: Postgres says 10 − 0 sold; three of them are the admitted tickets'.
    await run(scripts.setStock, 'mid', now, { units: 10, shards: 2, idleOnly: '0', admissions: '', unitsWere: '' });
    expect(await units()).toBe(7); // before: 10
    // One of them comes back: its unit is on the counter again, once.
    await run(scripts.refundStock, 'mid', now, { seq: 1, forfeit: '0', upTo: '' });
    expect(await units()).toBe(8);
    // Fewer units than are held: none on the counter (not below zero).
    await run(scripts.setStock, 'mid', now, { units: 1, shards: 2, idleOnly: '0', admissions: '', unitsWere: '' });
    expect(await units()).toBe(0);
  });
});

describe('admit says when it emptied the line', () => {
  it('code 1 only when the line held fewer tickets than the gate allowed: not when max, the stock or the gate stopped it', async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const { run } = createScriptRunner(t.redis, prefix);
    const now = clock.now();
    const admit = async (id: string, max: number) => ((await run(scripts.admit, id, now, { max, leaseMs: 60_000, leasePrefix: 'p.', autoCap: '', version: '' })) as number[]).slice(0, 2);
    const join = (id: string, n: number) => Promise.all(Array.from({ length: n }, (_, u) => run(scripts.join, id, now, { userId: `u${u}`, payload: '', source: '', defaultKeyQuota: '', memoryFull: '', uncounted: '' })));
    const def = (itemId: string) => ({ itemId, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' as const });
    await line.definitions.define(def('e'), null, { reopen: false });
    await join('e', 3);
    expect(await admit('e', 2)).toEqual([0, 2]); // max stopped it: one waits still
    expect(await admit('e', 10)).toEqual([1, 1]); // the last one: the line is empty
    expect(await admit('e', 10)).toEqual([1, 0]); // still empty
    // The gate stops it (one in flight at most, and one is out): not said to be empty.
    await line.definitions.define(def('g'), { mode: 'manual', maxInFlight: 1 }, { reopen: false });
    await join('g', 2);
    expect(await admit('g', 10)).toEqual([0, 1]);
    expect(await admit('g', 10)).toEqual([0, 0]);
    // The stock stops it: two units for three waiting.
    await line.definitions.define(def('s'), null, { reopen: false });
    await run(scripts.setStock, 's', now, { units: 2, shards: 1, idleOnly: '0', admissions: '', unitsWere: '' });
    await join('s', 3);
    expect(await admit('s', 10)).toEqual([0, 2]);
  });

  it('code 2 when the pace alone holds the line: n is the ms until it lets the next ticket in', async () => {
    const clock = manualClock();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const { run } = createScriptRunner(t.redis, prefix);
    const now = clock.now();
    const admit = async (id: string, at: number) => ((await run(scripts.admit, id, at, { max: 10, leaseMs: 60_000, leasePrefix: 'p.', autoCap: '', version: '' })) as number[]).slice(0, 2);
    const def = (itemId: string) => ({ itemId, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' as const });
    // 8/s, a burst of one: one at once, the next 125 ms later.
    await line.definitions.define(def('p8'), { mode: 'manual', rate: 8 }, { reopen: false });
    for (let u = 0; u < 4; u++) await run(scripts.join, 'p8', now, { userId: `u${u}`, payload: '', source: '', defaultKeyQuota: '', memoryFull: '', uncounted: '' });
    expect(await admit('p8', now)).toEqual([0, 1]);
    expect(await admit('p8', now)).toEqual([2, 125]);
    expect(await admit('p8', now + 100)).toEqual([2, 25]);
    expect(await admit('p8', now + 125)).toEqual([0, 1]);
    // 15/s, a burst of 1.5: the next one comes when the pace is half an interval (33.3 ms) behind.
    await line.definitions.define(def('p15'), { mode: 'manual', rate: 15 }, { reopen: false });
    for (let u = 0; u < 4; u++) await run(scripts.join, 'p15', now, { userId: `u${u}`, payload: '', source: '', defaultKeyQuota: '', memoryFull: '', uncounted: '' });
    expect(await admit('p15', now)).toEqual([0, 1]);
    expect(await admit('p15', now)).toEqual([2, 34]);
    expect(await admit('p15', now + 34)).toEqual([0, 1]);
    // Not when the in-flight cap holds it too (a settle wakes the dispatcher then), nor on an empty line.
    await line.definitions.define(def('pc'), { mode: 'manual', rate: 8, maxInFlight: 1 }, { reopen: false });
    for (let u = 0; u < 2; u++) await run(scripts.join, 'pc', now, { userId: `u${u}`, payload: '', source: '', defaultKeyQuota: '', memoryFull: '', uncounted: '' });
    expect(await admit('pc', now)).toEqual([0, 1]);
    expect(await admit('pc', now)).toEqual([0, 0]);
  });
});

describe('calls for many items in one', () => {
  const def = (itemId: string) => ({ itemId, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' as const });

  it('reclaims at most 8 expired leases per item inside a coalesced admit (1,000 alone); the sweep takes the rest', async () => {
    const clock = manualClock();
    const now = clock.now();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const { run } = createScriptRunner(t.redis, prefix);
    const items = ['r1', 'r2', 'r3'];
    for (const id of items) {
      await line.definitions.define(def(id), null, { reopen: false });
      for (let u = 0; u < 20; u++) await run(scripts.join, id, now, { userId: `u${u}`, payload: '', source: '', defaultKeyQuota: '', memoryFull: '', uncounted: '' });
      await run(scripts.admit, id, now, { max: 20, leaseMs: 1000, leasePrefix: 'p.', autoCap: '', version: '' });
    }
    const later = now + 5000; // every lease has run out
    const admitOne = (id: string) => run(scripts.admit, id, later, { max: 1, leaseMs: 60_000, leasePrefix: 'q.', autoCap: '', version: '' });
    await Promise.all([admitOne('r1'), admitOne('r2')]); // one coalesced call
    await admitOne('r3'); // alone
    const leases = async (id: string) => t.redis.zcard(itemKeys(prefix, id).leases);
    // Coalesced: 8 reclaimed (back to the head), 1 admitted from them; 12 expired remain. Alone: all 20.
    expect([await leases('r1'), await leases('r2'), await leases('r3')]).toEqual([13, 13, 1]);
    // The line's sweep of every active item: 8 each in the shared run, the rest at once, alone.
    await line.items.activateAll();
    expect(await line.admissions.sweep()).toBe(0); // (its clock is still `now`: nothing has expired)
    clock.set(later);
    expect(await line.admissions.sweep()).toBe(24);
    expect([await leases('r1'), await leases('r2'), await leases('r3')]).toEqual([1, 1, 1]);
  });

  /**
   * A script runner on a connection of its own whose script calls are recorded by their KEYS
   * count (an EVALSHA answered NOSCRIPT is sent again as EVAL: one logical call may be two commands).
   */
  function recordingRunner(prefix: string) {
    const conn = t.redis.duplicate();
    const numKeys: number[] = [];
    const send = conn.sendCommand.bind(conn);
    conn.sendCommand = ((command: { name: string; args: unknown[] }, ...rest: unknown[]) => {
      if (command.name === 'evalsha' || command.name === 'eval') numKeys.push(Number(command.args[1]));
      return send(command as never, ...(rest as []));
    }) as typeof conn.sendCommand;
    return { conn, numKeys, run: createScriptRunner(conn, prefix).run };
  }

  it("sends one turn's calls of a coalesced script as one call, answers each as its own call would, and fails only the item whose run failed", async () => {
    const clock = manualClock();
    const now = clock.now();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    const items = ['m1', 'm2', 'm3', 'm4'];
    for (const id of items) await line.definitions.define(def(id), null, { reopen: false });
    const { conn, numKeys, run } = recordingRunner(prefix);
    for (const [i, id] of items.entries()) for (let u = 0; u <= i; u++) await run(scripts.join, id, now, { userId: `u${u}`, payload: '', source: '', defaultKeyQuota: '', memoryFull: '', uncounted: '' });
    numKeys.length = 0;
    try {
      const args = (max: number | string) => ({ max, leaseMs: 60_000, leasePrefix: 'p.', autoCap: '', version: '' });
      // m3 is asked with a max Lua cannot compare: its run fails, the others' do not.
      const replies = await Promise.allSettled(items.map((id) => run(scripts.admit, id, now, args(id === 'm3' ? 'x' : 10))));
      expect(new Set(numKeys)).toEqual(new Set([items.length * scripts.admit.keys.length]));
      expect(replies.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
      expect((replies[2] as PromiseRejectedResult).reason.message).toMatch(/^admit-12: .*number expected, got nil/);
      // Each item's reply is what its own call answers: its code (1: the line is empty now), its count, its first ticket.
      const counts = replies.map((r) => (r.status === 'fulfilled' ? (r.value as (string | number)[]).slice(0, 3) : null));
      expect(counts).toEqual([[1, 1, 1], [1, 2, 1], null, [1, 4, 1]]);
      // A call alone in its turn is sent as it is.
      numKeys.length = 0;
      expect(((await run(scripts.admit, 'm3', now, args(10))) as number[]).slice(0, 3)).toEqual([1, 3, 1]);
      expect(new Set(numKeys)).toEqual(new Set([scripts.admit.keys.length]));
      // The item views' refreshes go together too, each answered as alone: a view read alone
      // equals the one read with the others (nested replies included).
      const alone = [];
      for (const id of items) alone.push(await run(scripts.snapshot, id, now, { probe: '' }));
      numKeys.length = 0;
      expect(await Promise.all(items.map((id) => run(scripts.snapshot, id, now, { probe: '' })))).toEqual(alone);
      expect(new Set(numKeys)).toEqual(new Set([items.length * scripts.snapshot.keys.length]));
      // So do the series points the recorder offers for every active item each second.
      numKeys.length = 0;
      const point = { second: 7, point: '{}', keep: 60 };
      expect(await Promise.all(items.map((id) => run(scripts.seriesAdd, id, now, point)))).toEqual([1, 1, 1, 1]);
      expect(await Promise.all(items.map((id) => run(scripts.seriesAdd, id, now, point)))).toEqual([0, 0, 0, 0]);
      expect(numKeys).toEqual([items.length, items.length]);
      // The lease sweeps go together too, each item reclaiming at most 8 in the shared run
      // (admissions.sweep sweeps again alone an item that reclaimed 8); `alone` sends one by itself.
      numKeys.length = 0;
      expect(await Promise.all(items.map((id) => run(scripts.sweep, id, now + 61_000, {})))).toEqual([1, 2, 3, 4]);
      expect(numKeys).toEqual([items.length * scripts.sweep.keys.length]);
      numKeys.length = 0;
      expect(await Promise.all(items.map((id) => run(scripts.sweep, id, now + 61_000, {}, [], { alone: true })))).toEqual([0, 0, 0, 0]);
      expect(numKeys).toEqual(items.map(() => scripts.sweep.keys.length));
      // A coalesced admit carries at most 2,000 tickets' worth of `max` (one run's time is every
      // other client's wait): four items asking 1,000 each go as two calls of two.
      numKeys.length = 0;
      const again = await Promise.all(items.map((id) => run(scripts.admit, id, now + 61_000, args(1000))));
      expect(again.map((r) => (r as number[])[1])).toEqual([1, 2, 3, 4]);
      expect(numKeys).toEqual([2 * scripts.admit.keys.length, 2 * scripts.admit.keys.length]);
    } finally {
      conn.disconnect();
    }
  });

  it("sends one turn's joins as one call, in the order they came, each answered as alone (a user twice in the turn holds one ticket)", async () => {
    const clock = manualClock();
    const now = clock.now();
    const prefix = t.newPrefix();
    const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
    for (const id of ['j1', 'j2']) await line.definitions.define(def(id), null, { reopen: false });
    const { conn, numKeys, run } = recordingRunner(prefix);
    const join = (itemId: string, userId: string) => run(scripts.join, itemId, now, { userId, payload: '', source: '', defaultKeyQuota: '', memoryFull: '', uncounted: '' }) as Promise<[number, number, string, number]>;
    try {
      // Seven joins in one turn: two items, one user twice, one unknown item.
      const asked: [string, string][] = [['j1', 'a'], ['j2', 'a'], ['j1', 'b'], ['nope', 'a'], ['j1', 'a'], ['j1', 'c'], ['j2', 'b']];
      const replies = await Promise.all(asked.map(([item, user]) => join(item, user)));
      expect(new Set(numKeys)).toEqual(new Set([asked.length * scripts.join.keys.length])); // (an EVALSHA answered NOSCRIPT goes again as EVAL)
      expect(replies.map(([code, seq]) => [code, seq])).toEqual([[0, 1], [0, 1], [0, 2], [-1, 0], [1, 1], [0, 3], [0, 2]]);
      // The same joins one by one, on a fresh prefix, answer the same (the records carry the time).
      const prefix2 = t.newPrefix();
      const line2 = createLine({ redis: t.redis, prefix: prefix2, clock, cacheMs: 0 });
      for (const id of ['j1', 'j2']) await line2.definitions.define(def(id), null, { reopen: false });
      const alone = createScriptRunner(t.redis, prefix2);
      const one: unknown[] = [];
      for (const [item, user] of asked) one.push(await alone.run(scripts.join, item, now, { userId: user, payload: '', source: '', defaultKeyQuota: '', memoryFull: '', uncounted: '' }));
      expect(replies).toEqual(one);
    } finally {
      conn.disconnect();
    }
  });
});
