/**
 * A sale's load: the item defined, the seed users' joins by the orchestrator, pass 1 (every user
 * once) and pass 2 (every user again) by autocannon, polls during the sale and during pass 2, and a
 * watch on the item view until the sell-out and the drained line. Only what was seen; the checks
 * and the analysis read it afterwards.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { call, defineItem, itemView, pool, SERVICE_KEY, type ItemView } from '../../lib/api.js';
import { startLoad, WORKER_START_MS, type RunningLoad } from '../../lib/flash-load.js';
import type { BenchContext, Server } from '../../lib/harness.js';
import { runLoad, runLoads } from '../../lib/load.js';
import type { LoadResult, LoadSpec, Sample } from '../../lib/load-spec.js';
import { cpuSnap, cpuUse } from '../../lib/cpu.js';
import { fmtInt, fmtMs, fmtS, spread } from '../../lib/stats.js';
import { auth, CONNECTIONS, POLL_CONNECTIONS, POLL_SAMPLE, SEED, SEED_CONCURRENCY, SELL_OUT_WAIT_S, SETTLE_WAIT_S, STOCK, USERS, WATCH_MS, type Gate } from './settings.js';
import { warmUp } from './warm-up.js';

export interface TimelinePoint {
  s: number;
  succeeded: number;
  waiting: number;
  admitted: number;
  cap: number | null;
}

export interface SaleLoad {
  label: string;
  itemId: string;
  gate: Gate;
  url: string;
  t0: Date;
  seed1: Awaited<ReturnType<typeof call>>[];
  seed2: Awaited<ReturnType<typeof call>>[];
  seedIds: string[];
  join1: LoadResult;
  join2: LoadResult;
  poll1: LoadResult | null;
  poll2: LoadResult | null;
  soldOutAt: number | null;
  /** The last item view before the sell-out, and the largest in-flight cap seen while open. */
  lastOpen: ItemView | null;
  maxCap: number;
  watchErr: number;
  /** The item view every WATCH_MS from the first join until the sell-out. */
  watched: TimelinePoint[];
  /** The item view once the line drained (or SETTLE_WAIT_S after the last join). */
  view: ItemView;
  settleS: number | null;
  /** The daemon's CPU seconds from the first join until a view showed the item sold out and its line drained (null if none did), and that time. */
  saleCpuS: number | null;
  saleCpuWallS: number;
  joinWallS: number;
  /** The latency file of a load (`join1`, `join2`, `poll1`, `poll2`). */
  latFile(name: string): string;
  notes: string[];
}

/** `warm`: first a warm-up sale on another item, from the generator that then sends pass 1 (warm-up.ts). */
export async function runSaleLoad(ctx: BenchContext, daemon: Server, itemId: string, gate: Gate, redisPid: number | undefined, warm = false): Promise<SaleLoad> {
  const url = daemon.url;
  const label = gate.mode === 'auto' ? 'auto gate' : `manual gate, maxInFlight ${gate.maxInFlight}`;
  const notes: string[] = [];
  await defineItem(url, itemId, { handler: 'seckill', config: { stock: STOCK }, gate });
  const joinPath = `/v1/items/${itemId}/tickets`;
  const watchPids = { server: daemon.child.proc.pid, redis: redisPid };
  const latFile = (name: string) => path.join(ctx.tmpDir, `flash-${itemId}-${name}.lat`);
  const rest = USERS - SEED;
  const joinSpec = (sampleEvery?: number): LoadSpec => ({
    url,
    connections: CONNECTIONS,
    headers: auth,
    amount: rest,
    gen: { kind: 'join', path: joinPath, userPrefix: 'u-b-', ...(sampleEvery ? { sampleEvery } : {}) },
    watchPids,
  });
  const pollSpec = (ids: string[], name: string): LoadSpec => ({
    url,
    connections: POLL_CONNECTIONS,
    headers: auth,
    duration: 3600,
    gen: { kind: 'poll', ticketIds: ids },
    latencyFile: latFile(name),
    watchPids,
  });

  // One generator sends the warm-up sale's joins and then, on the go file, this sale's first pass.
  const sampleEvery = Math.max(1, Math.floor(Math.min(rest, STOCK * 2) / POLL_SAMPLE));
  const pass1Spec: LoadSpec = { ...joinSpec(sampleEvery), latencyFile: latFile('join1') };
  let generator: Promise<LoadResult[]> | null = null;
  let warmer: ReturnType<typeof warmUp> | null = null;
  if (warm) {
    warmer = warmUp(ctx, daemon);
    await warmer.define();
    const from = Date.now();
    generator = runLoads(ctx.tmpDir, [warmer.spec, { ...pass1Spec, startWhenFileExists: warmer.goFile }]);
    await warmer.settled(from, generator);
  }

  // The sale starts with the seed users' joins (by the orchestrator, so their tickets can be polled at once).
  ctx.log(`sale "${itemId}" (${label}): ${fmtInt(STOCK)} units, ${fmtInt(USERS)} users × 2 joins`);
  const cpu0 = cpuSnap({ server: daemon.child.proc.pid });
  const t0 = new Date();
  const seed1 = await pool(SEED, SEED_CONCURRENCY, (i) => call(url, 'POST', joinPath, SERVICE_KEY, { userId: `u-a-${i}` }));
  const seedIds = seed1.map((r) => r.body.ticketId as string | undefined).filter((x): x is string => typeof x === 'string');

  let soldOutAt: number | null = null;
  const poll1: RunningLoad | null = seedIds.length ? startLoad(ctx.tmpDir, pollSpec(seedIds, 'poll1')) : null;
  // The poll generator's start-up (a second of one core) is over before the join flood begins.
  if (poll1) await sleep(WORKER_START_MS);
  let poll1Stopped: Promise<LoadResult | null> | null = null;
  let lastOpen: ItemView | null = null;
  let maxCap = 0;
  let watchErr = 0;
  let saleCpuS: number | null = null;
  let saleCpuWallS = 0;
  const watched: TimelinePoint[] = [];
  const watch = setInterval(() => {
    const at = Date.now();
    itemView(url, itemId).then(
      (v) => {
        watched.push({ s: (at - t0.getTime()) / 1000, succeeded: v.counts.succeeded ?? 0, waiting: v.counts.waiting ?? 0, admitted: v.counts.admitted ?? 0, cap: v.gate.effective.maxInFlight });
        if (v.state !== 'sold_out') {
          lastOpen = v;
          maxCap = Math.max(maxCap, v.gate.effective.maxInFlight ?? 0);
          return;
        }
        // The sale's CPU: first join → the first view sold out with nothing waiting or admitted.
        if (saleCpuS === null && !(v.counts.waiting ?? 0) && !(v.counts.admitted ?? 0)) {
          const cpu1 = cpuSnap({ server: daemon.child.proc.pid });
          saleCpuS = (cpuUse(cpu0, cpu1).server * (cpu1.at - cpu0.at)) / 1000;
          saleCpuWallS = (cpu1.at - cpu0.at) / 1000;
        }
        if (soldOutAt !== null) return;
        soldOutAt = Date.now();
        ctx.log(`  sold out after ${fmtS(soldOutAt - t0.getTime())} (seen by the item view)`);
        if (poll1) poll1Stopped = poll1.stop();
      },
      () => watchErr++,
    );
  }, WATCH_MS);

  try {
    // Pass 1: every user once.
    let join1: LoadResult;
    if (generator && warmer) {
      writeFileSync(warmer.goFile, '');
      const [warmLoad, pass1] = await generator;
      join1 = pass1;
      notes.push(warmer.note(warmLoad));
    } else join1 = await runLoad(ctx.tmpDir, pass1Spec);
    ctx.log(`  pass 1 (new users): ${fmtInt(join1.rps)} joins/s, p99 ${fmtMs(join1.p99)} ms, ${JSON.stringify(join1.status)}, ${join1.errors} errors, ${join1.timeouts} timeouts`);

    // Pass 2: every user again; the seed users by the orchestrator, to compare the tickets.
    const seed2 = await pool(SEED, SEED_CONCURRENCY, (i) => call(url, 'POST', joinPath, SERVICE_KEY, { userId: `u-a-${i}` }));
    let poll2: RunningLoad | null = null;
    if (soldOutAt !== null) {
      const ids = [...seedIds, ...spread((join1.samples as Sample[]).sort((a, b) => a.position - b.position), POLL_SAMPLE).map((s) => s.ticketId)];
      poll2 = startLoad(ctx.tmpDir, pollSpec(ids, 'poll2'));
      await sleep(WORKER_START_MS);
    }
    const join2 = await runLoad(ctx.tmpDir, { ...joinSpec(), latencyFile: latFile('join2') });
    const joinWallS = (Date.now() - t0.getTime()) / 1000;
    ctx.log(`  pass 2 (the same users again): ${fmtInt(join2.rps)} joins/s, p99 ${fmtMs(join2.p99)} ms, ${JSON.stringify(join2.status)}, ${join2.errors} errors, ${join2.timeouts} timeouts`);
    const poll2R = poll2 ? await poll2.stop() : null;

    // Wait for the sell-out (poll 1 stops with it), then for the line to drain.
    const waitUntil = Date.now() + SELL_OUT_WAIT_S * 1000;
    while (soldOutAt === null && Date.now() < waitUntil) await sleep(WATCH_MS);
    if (soldOutAt === null) {
      notes.push(`${label}: the item did not reach \`sold_out\` within ${SELL_OUT_WAIT_S} s after the last join.`);
      if (poll1) poll1Stopped = poll1.stop();
    }
    const poll1R = poll1Stopped ? await poll1Stopped : null;
    let view = await itemView(url, itemId);
    const settleFrom = Date.now();
    let settleS: number | null = null;
    while (Date.now() - settleFrom < SETTLE_WAIT_S * 1000) {
      view = await itemView(url, itemId);
      if ((view.counts.waiting ?? 0) === 0 && (view.counts.admitted ?? 0) === 0) {
        settleS = (Date.now() - t0.getTime()) / 1000;
        break;
      }
      await sleep(250);
    }
    clearInterval(watch);
    if (settleS === null) notes.push(`${label}: ${SETTLE_WAIT_S} s after the last join the item still shows ${fmtInt(view.counts.waiting ?? 0)} waiting and ${fmtInt(view.counts.admitted ?? 0)} admitted tickets (${JSON.stringify(view.counts)}).`);
    if (watchErr) notes.push(`${label}: ${watchErr} item-view polls by the orchestrator failed.`);
    return { label, itemId, gate, url, t0, seed1, seed2, seedIds, join1, join2, poll1: poll1R, poll2: poll2R, soldOutAt, lastOpen, maxCap, watchErr, watched, view, settleS, saleCpuS, saleCpuWallS, joinWallS, latFile, notes };
  } finally {
    clearInterval(watch);
    if (poll1 && !poll1Stopped) await poll1.stop().catch(() => null);
  }
}
