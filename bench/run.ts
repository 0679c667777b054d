/**
 * `npm run bench [-- <scenario>]`: runs one scenario set (default `queue`) on loopback, prints a
 * markdown summary, writes it to bench/results/<scenario>-<date>.md and adds it to
 * docs/benchmarks.md. Child processes, Redis keys and the scratch database go away on exit,
 * error or Ctrl-C.
 *
 * Knobs (env): BENCH_DURATION (s per measured load, default 10), BENCH_WARMUP (s, default 2),
 * BENCH_DEPTH (the big line, default 1000000), BENCH_FILL_MAX (s the big fill may take; default: what
 * the budget leaves; 0 = no cap), BENCH_BUDGET (soft target for the run, default 225 s), BENCH_TIMEOUT
 * (hard limit, s, default 300 or the scenario's own; raised automatically when BENCH_FILL_MAX=0),
 * BENCH_NO_DOCS=1 (do not touch docs/benchmarks.md), BENCH_KEEP_TMP=1 (keep the run's temp folder —
 * the daemon's log, a scenario's redis-server data — after a run that passed too; it is always kept
 * after a failure or Ctrl-C).
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Redis } from 'ioredis';
import type { BenchContext } from './lib/harness.js';
import { codeVersion, connectRedis, createScratchDb, dropScratchDb, machine, runTag, unlinkPrefix } from './lib/infra.js';
import { watchCpu } from './lib/load.js';
import { killAllNow, repoRoot, stopAll } from './lib/procs.js';
import { machineLines, updateDocs, writeResults } from './lib/report.js';
import { fmtS } from './lib/stats.js';
import { DEFAULT_SCENARIO, scenarios } from './scenarios/index.js';

const name = process.argv[2] ?? DEFAULT_SCENARIO;
const scenario = scenarios[name];
if (!scenario) {
  console.error(`unknown scenario "${name}"; available:\n${Object.entries(scenarios).map(([k, v]) => `  ${k.padEnd(10)} ${v.title}`).join('\n')}`);
  process.exit(2);
}

const started = new Date();
const tag = runTag();
const prefix = `fgb:${tag}:`;
const dbName = `fg_bench_${tag}`;
const log = (line: string) => console.log(`[${((Date.now() - started.getTime()) / 1000).toFixed(1).padStart(6)} s] ${line}`);

let redis: Redis | null = null;
let dbCreated = false;
let tmpDir = '';
let cleaning: Promise<void> | null = null;

function cleanup(keepTmp: boolean): Promise<void> {
  return (cleaning ??= (async () => {
    await stopAll().catch((e) => console.error('stopping children:', e));
    if (redis) {
      const n = await unlinkPrefix(redis, prefix).catch((e) => (console.error('redis cleanup:', e), 0));
      log(`cleanup: unlinked ${n} redis keys under ${prefix}`);
      redis.disconnect();
    }
    if (dbCreated) await dropScratchDb(dbName).then(() => log(`cleanup: dropped database ${dbName}`), (e) => console.error('dropping db:', e));
    if (tmpDir && !keepTmp) await rm(tmpDir, { recursive: true, force: true });
    else if (tmpDir) log(`logs kept in ${tmpDir}`);
  })());
}

process.on('exit', killAllNow);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping`);
    void cleanup(true).finally(() => process.exit(130));
  });
}
const budgetS = Number(process.env.BENCH_TIMEOUT ?? (process.env.BENCH_FILL_MAX === '0' ? 900 : scenario.timeoutS ?? 300));
const watchdog = setTimeout(() => {
  log(`run exceeded ${budgetS} s: aborting`);
  void cleanup(true).finally(() => process.exit(1));
}, budgetS * 1000);
watchdog.unref();

async function main() {
  // The daemon runs as `npm start` runs it: built into dist/floodgate.mjs (lib/harness.ts).
  execFileSync(process.execPath, [path.join(repoRoot, 'scripts/build.mjs')], { stdio: 'inherit' });
  tmpDir = await mkdtemp(path.join(os.tmpdir(), 'floodgate-bench-'));
  redis = connectRedis();
  watchCpu('redis', Number(/^process_id:(\d+)/m.exec(await redis.info('server'))?.[1]) || undefined);
  const databaseUrl = await createScratchDb(dbName);
  dbCreated = true;
  const ctx: BenchContext = {
    tmpDir,
    redis,
    prefix,
    databaseUrl,
    machine: await machine(redis),
    durationS: Number(process.env.BENCH_DURATION ?? 10),
    warmupS: Number(process.env.BENCH_WARMUP ?? 2),
    budgetS: Number(process.env.BENCH_BUDGET ?? 225),
    elapsedS: () => (Date.now() - started.getTime()) / 1000,
    log,
  };
  const code = codeVersion(repoRoot);
  log(`bench "${name}": ${code}; redis prefix ${prefix}, database ${dbName}`);
  const out = await scenario.run(ctx);
  const elapsed = Date.now() - started.getTime();

  const knobs = Object.entries(process.env).filter(([k]) => (k.startsWith('BENCH_') && k !== 'BENCH_NO_DOCS') || k.startsWith('FLOODGATE_')).map(([k, v]) => `${k}=${v}`);
  const settings = `- settings: ${knobs.length ? knobs.join(' ') : 'defaults'} (\`npm run bench -- ${name}\`)`;
  const body = [`## ${name} — ${ctx.machine.date}`, '', machineLines(ctx.machine), `- code: ${code}`, settings, `- run took ${fmtS(elapsed)}`, '', out.markdown].join('\n');
  console.log(`\n${body}\n`);
  const file = await writeResults(name, started, `# Floodgate bench\n\n${body}`);
  log(`wrote ${file}`);
  if (process.env.BENCH_NO_DOCS !== '1') log(`updated ${await updateDocs(body.replace(/^### /gm, '#### ').replace(/^## /m, '### '))}`);
}

main().then(
  async () => {
    await cleanup(!!process.env.BENCH_KEEP_TMP);
    log('done');
    process.exit(0);
  },
  async (err) => {
    console.error(err instanceof Error ? err.stack ?? err.message : err);
    await cleanup(true);
    process.exit(1);
  },
);
