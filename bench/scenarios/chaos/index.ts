/**
 * The `chaos` scenario: a flash sale through each fault in turn (see faults.ts), each on a fresh
 * item, against a real daemon whose Redis and Postgres the scenario controls (setup.ts); per fault
 * one row of losses, error answers and recovery time, PASS or FAIL (checks.ts, report.ts).
 *
 * Knobs (env): BENCH_CHAOS_UNITS (2,000), BENCH_CHAOS_BUYERS (6,000), BENCH_CHAOS_RATE (joins/s,
 * 400), BENCH_CHAOS_OUTAGE_MS (Postgres faults, 10,000), BENCH_CHAOS_REDIS_DOWN_MS (2,000),
 * BENCH_CHAOS_ONLY (comma-separated fault keys to run).
 */
import { call, OPERATOR_KEY } from '../../lib/api.js';
import type { BenchContext } from '../../lib/harness.js';
import type { ScenarioOutput } from '../../lib/harness.js';
import { checkFault, type FaultRow } from './checks.js';
import { faults, type Fault, type FaultWindow } from './faults.js';
import { chaosMarkdown } from './report.js';
import { readFinal, startSale } from './sale.js';
import { defineItem, ensureDaemon, sleep, startEnv, type Env } from './setup.js';

const QUIET_MAX_S = 60;

export async function chaosScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  const only = process.env.BENCH_CHAOS_ONLY?.split(',').map((x) => x.trim());
  const env = await startEnv(ctx);
  const rows: FaultRow[] = [];
  const notes: string[] = [];
  try {
    for (const [i, fault] of faults.entries()) {
      if (only && !only.includes(fault.key)) continue;
      const starts = env.daemonStarts;
      await ensureDaemon(env);
      if (env.daemonStarts > starts) notes.push(`The daemon had exited after the previous fault; a new one was started before \`${fault.key}\`.`);
      rows.push(await runFault(env, fault, `chaos-${i + 1}-${fault.key}`));
      const r = rows[rows.length - 1];
      ctx.log(`  ${fault.key}: ${r.pass ? 'PASS' : 'FAIL'} — lost ${r.unitsLost ?? '–'}, false sold-outs ${r.falseSoldOuts ?? '–'}, double ${r.doubleOrders ?? '–'}, vanished ${r.vanished} (+${r.vanishedInWindow}), 5xx ${r.errors5xx}, 503 ${r.answered503}, recover ${JSON.stringify(r.recover)}, ${r.extra.map((c) => `${c.name} ${c.value}`).join(', ')}`);
    }
  } finally {
    const problems = env.daemon.child.problems;
    if (problems.length) notes.push(`The daemon logged ${problems.length} error line(s) over the run; first: \`${problems[0].slice(0, 300).replace(/`/g, "'")}\``);
    await env.close();
  }
  return { markdown: chaosMarkdown(rows, notes) };
}

async function runFault(env: Env, fault: Fault, itemId: string): Promise<FaultRow> {
  const { ctx } = env;
  ctx.log(`fault ${fault.key}: ${fault.title}`);
  const prepared = fault.prepare ? await fault.prepare(env) : null;
  try {
    await defineItem(env, { itemId, kind: fault.kind, units: fault.units, url: prepared?.url });
    const sale = startSale(env, itemId, { buyers: fault.buyers, ratePerS: fault.ratePerS, hostileEvery: fault.hostileEvery, userPrefix: `u${itemId.split('-')[1]}-` });
    let window: FaultWindow;
    try {
      window = await fault.inject(env, sale, itemId);
    } catch (err) {
      window = { startMs: null, endMs: null, notes: [`the fault itself failed: ${(err as Error).message}`] };
    }
    if (window.startMs) ctx.log(`  fault lasted ${(((window.endMs ?? 0) - window.startMs) / 1000).toFixed(1)} s; sale still running`);
    await sale.done;
    // A daemon that died during the fault is started again (as a supervisor would) so that its
    // tickets can be read; the death itself fails the row.
    const exits = env.daemon.child.alive() ? 0 : 1;
    if (exits) {
      window.notes.push(`the daemon exited during the sale (code ${await env.daemon.child.exited}): a new one was started before the quiet wait`);
      ctx.log('  the daemon exited during the sale: starting a new one');
      await ensureDaemon(env);
    }
    const quiet = await waitQuiet(env, itemId);
    ctx.log(`  buyers done; ${quiet.reached ? `quiet after ${quiet.afterS.toFixed(1)} s` : `not quiet after ${QUIET_MAX_S} s`}`);
    const readAnswers = await readFinal(env, sale.buyers);
    return await checkFault(env, { fault, itemId, buyers: sale.buyers, window, joinsOk: sale.joinsOk, readAnswers, quiet, extra: [{ name: 'daemon exits', value: exits, ok: exits === 0 }, ...(prepared?.checks() ?? [])] });
  } finally {
    await prepared?.stop();
  }
}

/** Until the item view shows nothing waiting or admitted twice in a row (at most QUIET_MAX_S). */
async function waitQuiet(env: Env, itemId: string): Promise<{ reached: boolean; afterS: number; counts: Record<string, number> | null }> {
  const t0 = Date.now();
  let counts: Record<string, number> | null = null;
  let calm = 0;
  while (Date.now() - t0 < QUIET_MAX_S * 1000) {
    try {
      const r = await call(env.daemon.url, 'GET', `/v1/items/${itemId}`, OPERATOR_KEY, undefined, { timeoutMs: 5000 });
      counts = r.status === 200 ? (r.body.counts as Record<string, number>) : counts;
      calm = r.status === 200 && !counts?.waiting && !counts?.admitted ? calm + 1 : 0;
    } catch {
      calm = 0;
    }
    if (calm >= 2) return { reached: true, afterS: (Date.now() - t0) / 1000, counts };
    await sleep(500);
  }
  return { reached: false, afterS: (Date.now() - t0) / 1000, counts };
}
