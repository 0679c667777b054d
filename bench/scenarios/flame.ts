/**
 * The `flame` scenario: where the front door's CPU goes. Each path (join, an end user's poll, a
 * refusal when full) and the bare Hono app's POST and GET run under the queue bench's load (100
 * connections) with the server under `node --cpu-prof`; the profile's samples during the measured
 * load become a flame graph (docs/flame-<path>-<label>.svg) and a table: requests/s, the server's
 * CPU per request, and the share of its CPU by room (the daemon's folders, npm packages, Node, V8).
 *
 * The daemon runs from its sources through tsx (frames name their .ts files; the bundle would name
 * one file), from this checkout or, with BENCH_FLAME_DIR, from another one (e.g. the code before a
 * change: `git worktree add /tmp/before <commit> && (cd /tmp/before && npm ci)`), labelled
 * BENCH_FLAME_LABEL (default `now`). BENCH_FLAME_PATHS picks paths (join,poll,refusal,bare-post,bare-get);
 * BENCH_FLAME_PROFILES names a folder to keep the .cpuprofile files in (for Chrome DevTools or speedscope).
 */
import { execFileSync } from 'node:child_process';
import { copyFile, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { OPERATOR_KEY, SERVICE_KEY, join, putItem } from '../lib/api.js';
import { fold, flameSvg, readProfile } from '../lib/flamegraph.js';
import { against, type BenchContext, type ScenarioOutput, type Server } from '../lib/harness.js';
import { REDIS_URL } from '../lib/infra.js';
import { runLoads } from '../lib/load.js';
import type { LoadSpec } from '../lib/load-spec.js';
import { freePort, repoRoot, spawnChild, waitHealthy } from '../lib/procs.js';
import { mdTable } from '../lib/report.js';
import { fmtInt } from '../lib/stats.js';
import { fill } from './queue/fill.js';

const CONNECTIONS = 100;
const PATHS = ['join', 'poll', 'refusal', 'bare-post', 'bare-get'] as const;
type PathName = (typeof PATHS)[number];

/** A server under the CPU profiler; its profile is written when it stops. */
async function profiled(ctx: BenchContext, name: string, cwd: string, file: string, env: Record<string, string>): Promise<Server & { profDir: string }> {
  const port = await freePort();
  const profDir = await mkdtemp(path.join(ctx.tmpDir, `prof-${name}-`));
  const child = spawnChild(name, process.execPath, ['--cpu-prof', `--cpu-prof-dir=${profDir}`, '--import', 'tsx', file], {
    cwd,
    logFile: path.join(ctx.tmpDir, `${name}.log`),
    env: { ...env, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn' },
  });
  const url = `http://127.0.0.1:${port}`;
  return { url, child, startMs: await waitHealthy(child, url), profDir };
}

function startTarget(ctx: BenchContext, p: PathName, dir: string) {
  if (p.startsWith('bare')) return profiled(ctx, p, repoRoot, 'bench/bare-hono.ts', {});
  return profiled(ctx, p, dir, 'src/main.ts', {
    REDIS_URL,
    DATABASE_URL: ctx.databaseUrl,
    FLOODGATE_REDIS_PREFIX: `${ctx.prefix}${p}:`,
    FLOODGATE_SERVICE_KEYS: SERVICE_KEY,
    FLOODGATE_OPERATOR_KEYS: OPERATOR_KEY,
    FLOODGATE_DATA_DIR: path.join(ctx.tmpDir, 'data'),
    FLOODGATE_PROVISION: 'off',
  });
}

/** The path's load (without its length) once the server holds what it needs. */
async function loadFor(ctx: BenchContext, p: PathName, server: Server): Promise<(tag: string) => Omit<LoadSpec, 'duration'>> {
  const auth = { authorization: `Bearer ${SERVICE_KEY}` };
  switch (p) {
    case 'bare-post':
      return against(server, { connections: CONNECTIONS, headers: auth, gen: { kind: 'static', method: 'POST', path: '/v1/items/bare/tickets', body: '{"userId":"u-123"}' } });
    case 'bare-get':
      return against(server, { connections: CONNECTIONS, gen: { kind: 'static', method: 'GET', path: '/v1/tickets/t1' } });
    case 'join':
      await putItem(server.url, 'join', 10_000_000);
      return against(server, { connections: CONNECTIONS, headers: auth, gen: { kind: 'join', path: '/v1/items/join/tickets', userPrefix: 'j' } });
    case 'poll': {
      await putItem(server.url, 'poll', 10_000_000);
      const ids = await fill(ctx, server, 'poll', 1000, 'p-');
      return against(server, { connections: CONNECTIONS, gen: { kind: 'poll', ticketIds: ids } });
    }
    case 'refusal': {
      await putItem(server.url, 'full', 1);
      const first = await join(server.url, 'full', 'f-first');
      if (first.status !== 202) throw new Error(`first join of the capacity-1 item: ${first.status}`);
      return against(server, { connections: CONNECTIONS, headers: auth, gen: { kind: 'join', path: '/v1/items/full/tickets', userPrefix: 'f' } });
    }
  }
}

/** Microseconds on the monotonic clock V8's profiles use, at epoch ms `ms`. */
function monoUs(ms: number): number {
  const nowMono = Number(process.hrtime.bigint() / 1000n);
  return nowMono - (Date.now() - ms) * 1000;
}

export async function flameScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  const dir = path.resolve(process.env.BENCH_FLAME_DIR ?? repoRoot);
  const label = process.env.BENCH_FLAME_LABEL ?? 'now';
  const outDir = path.resolve(repoRoot, process.env.BENCH_FLAME_OUT ?? 'docs');
  const picked = (process.env.BENCH_FLAME_PATHS?.split(',') ?? PATHS) as PathName[];
  const commit = execFileSync('git', ['-C', dir, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  const code = `commit ${commit}${dir === repoRoot ? '' : ` (${dir})`}`;
  const rows: string[][] = [];
  const roomRows: string[][] = [];
  for (const p of picked) {
    if (!PATHS.includes(p)) throw new Error(`unknown path ${p}; paths: ${PATHS.join(', ')}`);
    const server = await startTarget(ctx, p, dir);
    const load = await loadFor(ctx, p, server);
    const [, r] = await runLoads(ctx.tmpDir, [
      { ...load('w'), duration: ctx.warmupS + 1 },
      { ...load('m'), duration: ctx.durationS },
    ]);
    await server.child.stop();
    // CPU.<date>.<time>.<pid>.<thread>.<n>.cpuprofile: the server's main thread (its worker threads write their own).
    const files = (await readdir(server.profDir)).filter((f) => new RegExp(`\\.${server.child.proc.pid}\\.0\\.\\d+\\.cpuprofile$`).test(f));
    if (files.length !== 1) throw new Error(`${p}: expected one profile of the main thread, found ${files.length}`);
    const prof = await readProfile(path.join(server.profDir, files[0]));
    if (process.env.BENCH_FLAME_PROFILES) await copyFile(path.join(server.profDir, files[0]), path.join(process.env.BENCH_FLAME_PROFILES, `${p}-${label}.cpuprofile`));
    const from = monoUs(r.startedAtMs) - prof.startTime;
    const { tree, us, rooms } = fold(prof, { fromUs: from, toUs: from + r.durationS * 1e6 });
    const perReq = us / r.requests;
    const statuses = Object.entries(r.status).map(([c, n]) => `${c}: ${fmtInt(n)}`).join(', ');
    const title = `${p} (${label}): ${fmtInt(r.rps)} req/s, ${perReq.toFixed(0)} µs of server CPU per request`;
    const subtitle = `${fmtInt(r.requests)} requests in ${r.durationS.toFixed(1)} s from ${CONNECTIONS} connections (${statuses}); ${(us / 1000).toFixed(0)} ms of CPU sampled; code: commit ${commit}`;
    const file = path.join(outDir, `flame-${p}-${label}.svg`);
    await writeFile(file, flameSvg(tree, title, subtitle));
    ctx.log(`${p}: ${fmtInt(r.rps)} req/s, ${perReq.toFixed(0)} µs CPU/request (${statuses}) → ${path.relative(repoRoot, file)}`);
    rows.push([p, fmtInt(r.rps), (us / r.durationS / 1e6).toFixed(2), perReq.toFixed(0), statuses, path.relative(repoRoot, file)]);
    const top = [...rooms].sort((a, b) => b[1] - a[1]).slice(0, 8);
    roomRows.push([p, top.map(([room, t]) => `${room} ${((t / us) * 100).toFixed(0)}%`).join(', ')]);
  }
  const markdown = [
    `### Where the front door's CPU goes (${label}; code: ${code})`,
    '',
    mdTable(['path', 'req/s', 'server cores', 'server CPU µs per request', 'answers', 'flame graph'], rows),
    '',
    'Self time by room (the frame at the top of each sample):',
    '',
    mdTable(['path', 'rooms'], roomRows),
    '',
    '### Method',
    '',
    `- Each path on a fresh server under \`node --cpu-prof\` (the daemon from its sources through tsx, as \`npm run dev\` runs it: frames name .ts files), ${CONNECTIONS} connections, a ${ctx.warmupS + 1} s warm-up, then ${ctx.durationS} s measured; only the samples of the measured load count, idle left out. Poll: random ids of 1,000 waiting tickets, no key (as end users poll). Refusal: a capacity-1 item already holding one ticket (429). Join: a new user per request, external item behind a closed gate.`,
    '- The profiler costs the server some throughput (sampling every ~1 ms), the same for every path; compare µs per request across labels, not with the queue bench.',
  ].join('\n');
  return { markdown };
}
