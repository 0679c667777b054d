/**
 * `npm run bench -- access`: what fairness and protection cost, in one process (app.request, no
 * sockets, so the figures are the daemon's own work, not HTTP's):
 * - joins with quotas (perUser + perKey, counted in the join script) vs without, rounds alternated;
 * - polls of admitted tickets with admission tokens vs without (first poll signs, later ones reuse);
 * - the pre-queue draw of 100k and 1M tickets (BENCH_DRAW_SIZES to change): total time, the
 *   longest single Redis step (a round trip: an upper bound on how long Redis was held), steps.
 */
import { loadConfig } from '../../src/config.js';
import { wireApp, wireModules } from '../../src/daemon.js';
import { connectDb, migrateDb } from '../../src/db/client.js';
import { createTokenKeyStore } from '../../src/db/token-keys.js';
import { manualClock } from '../../src/kernel/clock.js';
import { createLogger } from '../../src/kernel/logger.js';
import { createKeyRing } from '../../src/tokens/key-ring.js';
import { createTokens } from '../../src/tokens/tokens.js';
import { pool } from '../lib/api.js';
import type { BenchContext } from '../lib/harness.js';
import { connectRedis } from '../lib/infra.js';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const OP = 'bench-op';
const SVC = 'shop:bench-svc';

export async function accessScenario(ctx: BenchContext) {
  await migrateDb(ctx.databaseUrl);
  const db = connectDb(ctx.databaseUrl, { max: 4 });
  const redis = connectRedis();
  const log = createLogger('silent');
  const t0 = Date.UTC(2026, 11, 12, 2, 0, 0);
  const clock = manualClock(t0 - 60_000);
  // A clock that moves with real time, so quota windows turn over as they would.
  const real = { now: () => clock.now() + performance.now() };
  // The daemon's own wiring (daemon.ts) without its loops, on this clock.
  const config = loadConfig({ FLOODGATE_REDIS_PREFIX: ctx.prefix, FLOODGATE_SERVICE_KEYS: SVC, FLOODGATE_OPERATOR_KEYS: OP, FLOODGATE_AUTO_START_LIMIT: '256' });
  const stores = { redis, dbHandle: db };
  const modules = wireModules(config, log, real, stores);
  const { queue } = modules;
  const tokenStore = createTokenKeyStore(db.sql);
  const ring = createKeyRing(tokenStore);
  await ring.start();
  const tokens = createTokens({ keys: ring, revocations: tokenStore, redis, prefix: ctx.prefix, queue, clock: real, log, issuer: 'floodgate' });
  const make = (withTokens: boolean) => wireApp(config, log, stores, modules, { tokens: withTokens ? tokens : undefined });
  const app = make(true);
  const plain = make(false);
  const call = async (a: typeof app, method: string, path: string, body?: unknown, key = OP) =>
    await a.request(path, { method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const lines: string[] = [];

  // 1. Joins, quotas off vs on, alternated.
  const N = Number(process.env.BENCH_JOINS ?? 10_000);
  await call(app, 'PUT', '/v1/items/q-off', { handler: 'external' });
  await call(app, 'PUT', '/v1/items/q-on', { handler: 'external', quotas: { perUser: { limit: 100, windowMs: 60_000 }, perKey: { limit: 1e9, windowMs: 1000 } } });
  const rates: Record<string, number[]> = { off: [], on: [] };
  for (let round = 0; round < 3; round++)
    for (const mode of round % 2 ? ['on', 'off'] : ['off', 'on']) {
      const start = performance.now();
      await pool(N, 64, (i) => call(app, 'POST', `/v1/items/q-${mode}/tickets`, { userId: `r${round}-u${i}` }, 'bench-svc').then((r) => r.arrayBuffer()));
      rates[mode].push((N * 1000) / (performance.now() - start));
      ctx.log(`joins quotas ${mode}: ${rates[mode].at(-1)!.toFixed(0)}/s`);
    }
  lines.push('#### Joins, in process (app.request), 64 concurrent, ' + `${N.toLocaleString('en')} per round, 3 rounds each, alternated`, '',
    '| quotas | joins/s (median) | rounds |', '| --- | --- | --- |',
    `| off | ${median(rates.off).toFixed(0)} | ${rates.off.map((r) => r.toFixed(0)).join(', ')} |`,
    `| on (perUser + perKey) | ${median(rates.on).toFixed(0)} | ${rates.on.map((r) => r.toFixed(0)).join(', ')} |`,
    '', `ratio on ÷ off: ${(median(rates.on) / median(rates.off)).toFixed(2)}`, '');

  // 2. Polls of admitted tickets, tokens off vs on.
  const M = 2000;
  await call(app, 'PUT', '/v1/items/tok', { handler: 'external', gate: { mode: 'manual' } });
  const ids: string[] = [];
  await pool(M, 64, async (i) => ids.push(((await (await call(app, 'POST', '/v1/items/tok/tickets', { userId: `t${i}` }, 'bench-svc')).json()) as { ticketId: string }).ticketId));
  for (let got = 0; got < M; ) got += ((await (await call(app, 'POST', '/v1/items/tok/pull', { max: 1000, leaseMs: 600_000 }, 'bench-svc')).json()) as { tickets: unknown[] }).tickets.length;
  const pollRate = async (a: typeof app) => {
    const start = performance.now();
    await pool(M, 64, async (i) => (await a.request(`/v1/tickets/${ids[i]}`)).arrayBuffer());
    return (M * 1000) / (performance.now() - start);
  };
  const first = await pollRate(app);
  const polls: Record<string, number[]> = { off: [], on: [] };
  for (let round = 0; round < 5; round++) for (const mode of round % 2 ? ['on', 'off'] : ['off', 'on']) polls[mode].push(await pollRate(mode === 'on' ? app : plain));
  const fmt = (xs: number[]) => `${median(xs).toFixed(0)} (${xs.map((x) => x.toFixed(0)).join(', ')})`;
  lines.push(`#### Polls of ${M.toLocaleString('en')} admitted tickets, 64 concurrent, 5 rounds each, alternated`, '', '| tokens | polls/s, median (rounds) |', '| --- | --- |',
    `| off | ${fmt(polls.off)} |`, `| on, first pass (signs every token) | ${first.toFixed(0)} |`, `| on, later passes (cached token) | ${fmt(polls.on)} |`, '',
    `ratio on ÷ off (cached): ${(median(polls.on) / median(polls.off)).toFixed(2)}`, '');

  // 3. The draw.
  lines.push('#### Pre-queue draw', '', '| pre-queued | fill (joins/s) | draw total | order computed in | Redis steps | longest step, round trip | longest hold of Redis (its own clock) | draw keys in Redis |', '| --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const size of (process.env.BENCH_DRAW_SIZES ?? '100000,1000000').split(',').map(Number)) {
    const id = `draw-${size}`;
    clock.set(t0 - 3_000_000 - performance.now()); // the fill has 50 minutes before opensAt
    await call(app, 'PUT', `/v1/items/${id}`, { handler: 'external', opensAt: new Date(t0).toISOString(), preQueue: { fromMs: 3_600_000 } });
    const fillStart = performance.now();
    await pool(size, 256, (i) => queue.tickets.join(id, `d${i}`, null, 'shop'));
    const fillRate = (size * 1000) / (performance.now() - fillStart);
    ctx.log(`filled ${size} at ${fillRate.toFixed(0)}/s`);
    clock.set(t0 + 1 - performance.now());
    const steps: number[] = [];
    const held: number[] = [];
    const start = performance.now();
    const res = await queue.admissions.draw(id, { onStep: (ms, h) => (steps.push(ms), h !== undefined && held.push(h)) });
    const total = performance.now() - start;
    if (res.n !== size) throw new Error(`drew ${res.n}, expected ${size}`);
    const mem = ((await redis.memory('USAGE', `${ctx.prefix}{${id}}:draw:o`)) as number) + ((await redis.memory('USAGE', `${ctx.prefix}{${id}}:draw:p`)) as number);
    ctx.log(`drew ${res.n} in ${total.toFixed(0)} ms, longest step ${Math.max(...steps).toFixed(1)} ms`);
    lines.push(`| ${size.toLocaleString('en')} | ${fillRate.toFixed(0)} | ${total.toFixed(0)} ms | ${(total - steps.reduce((a, b) => a + b, 0)).toFixed(0)} ms | ${steps.length} | ${Math.max(...steps).toFixed(1)} ms | ${Math.max(...held).toFixed(2)} ms | ${(mem / 1e6).toFixed(1)} MB |`);
  }
  lines.push('', 'A step writes 16,384 line places (two SETRANGEs of 64 KiB into strings sized at the first step); between steps Redis serves everyone else, and admissions of the item wait for the last step.');
  await tokens.stop();
  redis.disconnect();
  await db.close();
  return { markdown: lines.join('\n') };
}
