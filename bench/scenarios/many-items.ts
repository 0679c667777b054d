/**
 * The `many-items` scenario: does an idle daemon's cost follow its work or the number of items it
 * knows? One daemon; its CPU with no items, then with BENCH_ITEMS items (default 10,000: half
 * seckill, half webhook with an auto gate, all with empty lines) just after they were defined
 * (they count as active for a minute), and again once they have been idle for longer than that.
 * Also the time of a metrics scrape and of the item list, and Redis commands per second while idle.
 */
import { OPERATOR_KEY, call } from '../lib/api.js';
import { cpuSnap, cpuUse } from '../lib/cpu.js';
import { startDaemon, type BenchContext } from '../lib/harness.js';
import { mdTable } from '../lib/report.js';
import type { ScenarioOutput } from '../lib/harness.js';
import { setTimeout as sleep } from 'node:timers/promises';


async function cpuOver(pid: number, ms: number) {
  const a = cpuSnap({ daemon: pid });
  await sleep(ms);
  return cpuUse(a, cpuSnap({ daemon: pid }));
}

async function redisOps(ctx: BenchContext, ms: number) {
  const total = async () => Number(/total_commands_processed:(\d+)/.exec(await ctx.redis.info('stats'))![1]);
  const a = await total();
  await sleep(ms);
  return ((await total()) - a - 2) / (ms / 1000);
}

async function timed(base: string, path: string, key: string | null) {
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    const r = await call(base, 'GET', path, key, undefined, { timeoutMs: 60_000 });
    if (r.status !== 200) throw new Error(`GET ${path}: ${r.status}`);
    times.push(performance.now() - t);
  }
  return times.sort((a, b) => a - b)[1];
}

export async function manyItemsScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  const n = Number(process.env.BENCH_ITEMS ?? 10_000);
  const daemon = await startDaemon(ctx);
  const pid = daemon.child.proc.pid!;
  await sleep(2000);
  const none = await cpuOver(pid, 5000);
  const noneOps = await redisOps(ctx, 3000);
  ctx.log(`no items: ${none.daemon.toFixed(3)} cores; defining ${n} items`);
  let next = 0;
  let retried = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      for (let i = next++; i < n; i = next++) {
        const body = i % 2 ? { handler: 'seckill', config: { stock: 10 } } : { handler: 'webhook', config: { url: 'http://127.0.0.1:9/none', timeoutMs: 1000 }, gate: { mode: 'auto' } };
        // A daemon busy with its items may answer 503 (its Redis commands time out): retry, as a client would.
        let r = await call(daemon.url, 'PUT', `/v1/items/many-${i}`, OPERATOR_KEY, body);
        for (let t = 0; r.status === 503 && t < 50; t++) {
          retried++;
          await sleep(200);
          r = await call(daemon.url, 'PUT', `/v1/items/many-${i}`, OPERATOR_KEY, body);
        }
        if (r.status >= 300) throw new Error(`PUT many-${i}: ${r.status} ${JSON.stringify(r.body)}`);
      }
    }),
  );
  const definedAt = performance.now();
  ctx.log(`defined ${n} items in ${((definedAt - started) / 1000).toFixed(1)} s`);
  const fresh = await cpuOver(pid, 5000);
  ctx.log(`just defined (active): ${fresh.daemon.toFixed(3)} cores; waiting for them to go idle`);
  // An item stays active for a minute after its last work (items.activeItemIds).
  await sleep(Math.max(0, definedAt + 66_000 - performance.now()));
  const idle = await cpuOver(pid, 10_000);
  const idleOps = await redisOps(ctx, 5000);
  const metricsMs = await timed(daemon.url, '/metrics', null);
  const listMs = await timed(daemon.url, '/v1/items', OPERATOR_KEY);
  ctx.log(`idle: ${idle.daemon.toFixed(3)} cores, ${idleOps.toFixed(0)} Redis commands/s; /metrics ${metricsMs.toFixed(0)} ms, /v1/items ${listMs.toFixed(0)} ms`);
  await daemon.child.stop();

  const rows = [
    ['daemon CPU, no items (5 s)', `${none.daemon.toFixed(3)} cores`, ''],
    [`daemon CPU, ${n} items just defined (active for a minute, 5 s)`, `${fresh.daemon.toFixed(3)} cores`, ''],
    [`daemon CPU, the same ${n} items idle over a minute (10 s)`, `${idle.daemon.toFixed(3)} cores`, '≤ 0.05'],
    ['Redis commands/s (whole server), no items · idle items', `${noneOps.toFixed(0)} · ${idleOps.toFixed(0)}`, ''],
    [`GET /metrics with ${n} items (median of 3)`, `${metricsMs.toFixed(0)} ms`, '≤ 100 ms'],
    [`GET /v1/items with ${n} items (median of 3)`, `${listMs.toFixed(0)} ms`, '≤ 500 ms'],
    ['time to define them (32 concurrent PUTs)', `${((definedAt - started) / 1000).toFixed(1)} s (${retried} PUTs answered 503 and retried)`, ''],
  ];
  const markdown = [
    '### Many items, empty lines: what an idle daemon costs',
    '',
    mdTable(['measurement', 'value', 'target (issue)'], rows),
    '',
    '### Method',
    '',
    `- One daemon (src/main.ts, LOG_LEVEL=warn). ${n} items: even ones webhook (auto gate, a downstream that is never called), odd ones seckill (10 units); no tickets. CPU from /proc/<pid>/stat; Redis commands from INFO stats (the whole server: it is shared with nothing else in this run).`,
    '- Background loops visit the items of the active set (any work in the last minute, or a lease running longer) and, once a minute, every item; an item idle for over a minute costs them nothing else.',
    '- Not measured here: join throughput on one hot item beside the idle ones.',
  ].join('\n');
  return { markdown };
}
