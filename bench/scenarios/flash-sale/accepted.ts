import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { defineItem, itemView } from '../../lib/api.js';
import { cpuSnap, cpuUse } from '../../lib/cpu.js';
import type { BenchContext, Server } from '../../lib/harness.js';
import { runLoad } from '../../lib/load.js';
import { statusCell, type Check } from '../../lib/report.js';
import { fmtInt } from '../../lib/stats.js';
import { auth, CONNECTIONS, SELL_OUT_WAIT_S, STOCK, WATCH_MS } from './settings.js';

export interface AcceptedOut {
  joins: number;
  orders: number;
  /** The daemon's CPU seconds from just before the first join until a view showed the item sold out and drained. */
  cpuS: number;
  wallS: number;
  ordersPerS: number;
  checks: Check[];
}

/**
 * What one accepted join and its order cost the daemon, with nothing else asked of it (issue #13's
 * "CPU per accepted join + its order"): STOCK new users join once each, as fast as the generator
 * can send, into an open `auto` seckill item of STOCK units, so every join is accepted and every
 * ticket sold; the daemon's CPU from the first join until a view shows the item sold out with its
 * line drained, ÷ orders. The flood's figure (sale.ts) divides by orders too but carries every
 * refusal and poll of a 20-joins-per-unit crowd.
 */
export async function runAccepted(ctx: BenchContext, daemon: Server, itemId: string, units = STOCK, databaseUrl = ctx.databaseUrl): Promise<AcceptedOut> {
  const url = daemon.url;
  await defineItem(url, itemId, { handler: 'seckill', config: { stock: units }, gate: { mode: 'auto' } });
  ctx.log(`accepted "${itemId}": ${fmtInt(units)} users join once each for ${fmtInt(units)} units (every join accepted and sold)`);
  const pid = daemon.child.proc.pid;
  const cpu0 = cpuSnap({ server: pid });
  const load = await runLoad(ctx.tmpDir, { url, connections: CONNECTIONS, headers: auth, amount: units, gen: { kind: 'join', path: `/v1/items/${itemId}/tickets`, userPrefix: `${itemId}-` } });
  const joins = load.status['202'] ?? 0;
  let view = await itemView(url, itemId);
  const until = Date.now() + SELL_OUT_WAIT_S * 1000;
  const drained = () => view.state === 'sold_out' && !(view.counts.waiting ?? 0) && !(view.counts.admitted ?? 0);
  while (!drained() && Date.now() < until) {
    await sleep(WATCH_MS);
    view = await itemView(url, itemId);
  }
  const cpu1 = cpuSnap({ server: pid });
  const wallS = (cpu1.at - cpu0.at) / 1000;
  const cpuS = cpuUse(cpu0, cpu1).server * wallS;
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const [o] = await sql<{ n: number; users: number; first: Date | null; last: Date | null }[]>`
      select count(*)::int as n, count(distinct user_id)::int as users, min(created_at) as first, max(created_at) as last from orders where item_id = ${itemId}`;
    const ordersPerS = o.first && o.last && o.last > o.first ? o.n / ((o.last.getTime() - o.first.getTime()) / 1000) : NaN;
    ctx.log(`  ${fmtInt(o.n)} orders; daemon ${cpuS.toFixed(2)} CPU-s over ${wallS.toFixed(1)} s: ${fmtInt((cpuS / Math.max(1, o.n)) * 1e6)} µs per accepted join + its order`);
    const checks: Check[] = [
      { name: 'accepted: joins accepted', value: `${fmtInt(joins)} (${statusCell(load.status)})`, expected: fmtInt(units), ok: joins === units },
      { name: 'accepted: orders; distinct users; item view at the end', value: `${fmtInt(o.n)}; ${fmtInt(o.users)}; ${view.state}`, expected: `${fmtInt(units)}; ${fmtInt(units)}; sold_out, drained`, ok: o.n === units && o.users === units && drained() },
    ];
    return { joins, orders: o.n, cpuS, wallS, ordersPerS, checks };
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/**
 * `npm run bench -- accepted`: the accepted-joins-only sale by itself (the flash-sale scenario runs
 * it too, after its flood), after a warm-up sale of half the units, for profiling the selling path
 * (BENCH_NODE_ARGS="--cpu-prof …") without the flood around it. BENCH_ACCEPTED_ROUNDS (default 1)
 * sales in turn; BENCH_ACCEPTED_BASELINE=<another build's floodgate.mjs> runs that build beside this
 * one (its own database and Redis prefix) and alternates the sales between them, A B A B …, so that
 * the machine's drift falls on both alike: the ratio of the medians says what a change bought.
 * BENCH_ACCEPTED_NODE_ARGS: node flags for this build's daemon only (with a baseline of the same
 * build, an A/B of the flags).
 */
export async function acceptedScenario(ctx: BenchContext): Promise<{ markdown: string }> {
  const { startDaemon } = await import('../../lib/harness.js');
  const { codeVersion, createScratchDb, dropScratchDb } = await import('../../lib/infra.js');
  const { dirname, resolve } = await import('node:path');
  const { checkTable, mdTable } = await import('../../lib/report.js');
  const { median } = await import('../../lib/stats.js');
  const rounds = Math.max(1, Number(process.env.BENCH_ACCEPTED_ROUNDS ?? 1));
  const baselineFile = process.env.BENCH_ACCEPTED_BASELINE;
  // This build's node flags: BENCH_ACCEPTED_NODE_ARGS instead of npm start's (the baseline keeps npm start's).
  const ownArgs = process.env.BENCH_ACCEPTED_NODE_ARGS !== undefined ? process.env.BENCH_ACCEPTED_NODE_ARGS.split(/\s+/).filter(Boolean) : null;
  const baseDb = `${ctx.prefix.replace(/\W/g, '_')}base`;
  const builds: { name: string; daemon: Server; db: string; us: number[]; out: AcceptedOut[] }[] = [{ name: `this build${ownArgs ? ` (node ${ownArgs.join(' ') || 'without flags'})` : ''}`, daemon: await startDaemon(ctx, {}, undefined, ownArgs ?? undefined), db: ctx.databaseUrl, us: [], out: [] }];
  try {
    if (baselineFile) {
      const env = { DATABASE_URL: await createScratchDb(baseDb), FLOODGATE_REDIS_PREFIX: `${ctx.prefix}base:` };
      builds.push({ name: `baseline (${codeVersion(dirname(dirname(resolve(baselineFile))))})`, daemon: await startDaemon(ctx, env, baselineFile), db: env.DATABASE_URL, us: [], out: [] });
    }
    // A warm-up sale first on each, as in flash-sale (which runs this after its flood): a cold
    // daemon's first seconds are compilation.
    for (const b of builds) await runAccepted(ctx, b.daemon, 'accepted-warm-up', Math.ceil(STOCK / 2), b.db);
    for (let r = 0; r < rounds; r++) {
      for (const b of r % 2 ? [...builds].reverse() : builds) {
        const a = await runAccepted(ctx, b.daemon, `flash-accepted-${r}`, STOCK, b.db);
        b.out.push(a);
        b.us.push((a.cpuS / Math.max(1, a.orders)) * 1e6);
      }
    }
    const rows = builds.map((b) => {
      const m = median(b.us);
      return [
        `${b.name}: daemon CPU per accepted join + its order (${fmtInt(STOCK)} users join once each for ${fmtInt(STOCK)} units, ${CONNECTIONS} connections; median of ${rounds})`,
        `${fmtInt(m)} µs (rounds ${b.us.map((x) => fmtInt(x)).join(' · ')}; orders/s ${b.out.map((a) => fmtInt(a.ordersPerS)).join(' · ')})`,
        '≤ 150 µs (issue #13)',
        m <= 150 ? 'yes' : '**no**',
      ];
    });
    if (builds.length === 2) rows.push([`this build ÷ baseline, CPU per ticket (medians; lower is better)`, (median(builds[0].us) / median(builds[1].us)).toFixed(3), '', '']);
    return {
      markdown: [
        '### Accepted joins only',
        '',
        mdTable(['measurement', 'value', 'target', 'met'], rows),
        '',
        // Each check once per build: its value in the first sale that failed it, else in the last.
        checkTable(
          builds.flatMap((b) =>
            b.out[0].checks.map((_, i) => {
              const all = b.out.map((a) => a.checks[i]);
              const shown = all.find((c) => !c.ok) ?? all[all.length - 1];
              return { ...shown, name: `${b.name}, ${all.length} sale(s): ${shown.name}`, ok: all.every((c) => c.ok) };
            }),
          ),
        ),
      ].join('\n'),
    };
  } finally {
    for (const b of builds) await b.daemon.child.stop();
    if (baselineFile) await dropScratchDb(baseDb).catch(() => {});
  }
}
