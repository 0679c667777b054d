/**
 * Part of `npm run bench -- cluster`: one hot item's joins with `lines: 1` (today's join script,
 * on one slot) and with `lines: 8` (queue/split-line.ts: a number on the item's slot, then the
 * join on the user's sub-line), straight from this process to the 3-master cluster (no HTTP, so
 * the daemon's own cost does not hide Redis's). Per master: script calls and Redis CPU.
 */
import { Redis } from 'ioredis';
import { connectRedis } from '../../src/infra/redis-client.js';
import { systemClock } from '../../src/kernel/clock.js';
import { createLogger } from '../../src/kernel/logger.js';
import { createLine } from '../../src/queue/line.js';
import { createSplitLine } from '../../src/queue/split-line.js';
import { createScriptRunner, scripts } from '../../src/redis/scripts.js';
import type { BenchContext } from '../lib/harness.js';
import { fmtInt, fmtRatio } from '../lib/stats.js';

const IN_FLIGHT = 64;

interface MasterStats {
  calls: number;
  cpu: number;
}

async function masterStats(ports: number[]): Promise<MasterStats[]> {
  return Promise.all(
    ports.map(async (port) => {
      const r = new Redis({ port, host: '127.0.0.1' });
      try {
        const [cmd, cpu] = [await r.info('commandstats'), await r.info('cpu')];
        const calls = [...cmd.matchAll(/^cmdstat_(evalsha|eval):calls=(\d+)/gm)].reduce((s, m) => s + Number(m[2]), 0);
        const used = [...cpu.matchAll(/^used_cpu_(sys|user):([\d.]+)/gm)].reduce((s, m) => s + Number(m[2]), 0);
        return { calls, cpu: used };
      } finally {
        r.disconnect();
      }
    }),
  );
}

/** Masters only: the bench cluster has no replicas. */
export async function splitSection(ctx: BenchContext, seeds: string): Promise<string> {
  const nodes = seeds.split(',').map((s) => ({ host: s.split(':')[0], port: Number(s.split(':')[1]) }));
  const redis = await connectRedis({ cluster: nodes }, 'api', createLogger('silent'));
  const prefix = `${ctx.prefix}split:`;
  const line = createLine({ redis, prefix, clock: systemClock, cacheMs: 0 });
  const split = createSplitLine({ redis, prefix, clock: systemClock });
  const { run } = createScriptRunner(redis, prefix);
  const rows: string[] = [];
  try {
    for (const lines of [1, 8]) {
      const itemId = `hot-${lines}`;
      await line.definitions.define({ itemId, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, { mode: 'closed' }, { reopen: false });
      const item = { itemId, lines };
      if (lines > 1) await split.defineSubLines(item);
      let n = 0;
      const join = (userId: string) =>
        lines === 1 ? run(scripts.join, itemId, systemClock.now(), { userId, payload: '', source: '', defaultKeyQuota: '' }) : split.join(item, userId);
      const drive = async (tag: string, seconds: number) => {
        const end = Date.now() + seconds * 1000;
        let done = 0;
        await Promise.all(
          Array.from({ length: IN_FLIGHT }, async () => {
            while (Date.now() < end) {
              await join(`${tag}${n++}`);
              done++;
            }
          }),
        );
        return done;
      };
      await drive('w', ctx.warmupS);
      const before = await masterStats(nodes.map((x) => x.port));
      const t0 = performance.now();
      const done = await drive('m', ctx.durationS);
      const s = (performance.now() - t0) / 1000;
      const after = await masterStats(nodes.map((x) => x.port));
      const per = after.map((a, i) => ({ calls: (a.calls - before[i].calls) / s, cpu: (a.cpu - before[i].cpu) / s }));
      const calls = per.reduce((x, p) => x + p.calls, 0);
      const busiest = per.reduce((m, p) => (p.cpu > m.cpu ? p : m), per[0]);
      ctx.log(`split: lines ${lines}: ${fmtInt(done / s)} joins/s, ${fmtInt(calls)} script calls/s`);
      rows.push(
        `| ${lines} | ${fmtInt(done / s)} | ${fmtInt(calls)} | ${per.map((p) => fmtInt(p.calls)).join(' / ')} | ${per.map((p) => fmtRatio(p.cpu)).join(' / ')} | ${fmtRatio((busiest.cpu / (done / s)) * 1e6)} |`,
      );
    }
  } finally {
    redis.disconnect();
  }
  return [
    `### One hot item: lines: 1 vs lines: 8 on the 3-master cluster`,
    '',
    `Joins of new users to one item from this process, ${IN_FLIGHT} in flight, ${ctx.durationS} s after a ${ctx.warmupS} s warm-up, no HTTP (the join scripts as the daemon calls them). Script calls: EVALSHA and EVAL as each master counts them (a lines: 8 join is two: its join number on the item's master, split-number-2.lua, and the join on the user's sub-line's master); Redis CPU = used_cpu_sys + used_cpu_user per second of run, per master.`,
    '',
    '| lines | joins/s | script calls/s | script calls/s per master | Redis CPU s/s per master | busiest master µs CPU per join |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows,
    '',
    "What limits these numbers: one Node process drives every join (its CPU, not Redis's, is the ceiling on this 2-core machine, shared with the three redis-servers), and a lines: 8 join is two round trips (the number on the item's master, then the sub-line's master), so joins/s here can fall while the busiest master's work per join falls too. What lines: 8 shows is where the work goes: spread over the three masters instead of all on the item's one, with the item's master left only the join number per join.",
  ].join('\n');
}
