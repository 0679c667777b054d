/**
 * The `events` scenario: N open ticket event streams (default 20,000, BENCH_STREAMS) on one
 * daemon process. Measures the daemon's memory per open stream, its CPU while the line moves
 * under them, and the time from the sell-out (the cut, as Redis stamps it) to the last stream's
 * terminal event.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { OPERATOR_KEY, SERVICE_KEY, call } from '../lib/api.js';
import { cpuSnap, cpuUse } from '../lib/cpu.js';
import { startDaemon, type BenchContext } from '../lib/harness.js';
import { mdTable } from '../lib/report.js';
import { streamFleet } from '../lib/sse-streams.js';
import type { ScenarioOutput } from '../lib/harness.js';
import { setTimeout as sleep } from 'node:timers/promises';

const rssMiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

async function until(ok: () => boolean, timeoutMs: number) {
  const end = Date.now() + timeoutMs;
  while (!ok() && Date.now() < end) await sleep(100);
  return ok();
}

export async function eventsScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  // A socket per stream on each side: the open-file limit caps N. Raise the soft limit to the hard
  // one; where the hard limit is 20,000 (as here, and not raisable in the container) that leaves
  // 20,000 − ~200 descriptors for streams after the daemon's own (Redis, Postgres, logs).
  const hard = Number(/Max open files\s+\d+\s+(\d+)/.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1] ?? 1024);
  const wanted = Number(process.env.BENCH_STREAMS ?? 20_000);
  const n = Math.min(wanted, hard - 200);
  if (n < wanted) ctx.log(`open-file hard limit ${hard}: ${n} streams instead of ${wanted}`);
  const units = Math.min(1000, Math.floor(n / 10));
  const raise = (pid: number) => execFileSync('prlimit', ['--pid', String(pid), `--nofile=${hard}:${hard}`]);
  raise(process.pid);
  const daemon = await startDaemon(ctx);
  const pid = daemon.child.proc.pid!;
  raise(pid);
  const item = 'events-bench';
  const put = await call(daemon.url, 'PUT', `/v1/items/${item}`, OPERATOR_KEY, { handler: 'seckill', config: { stock: units }, gate: { mode: 'closed' } });
  if (put.status >= 300) throw new Error(`PUT item: ${put.status} ${JSON.stringify(put.body)}`);

  ctx.log(`joining ${n} users`);
  const ids: string[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      for (let i = next++; i < n; i = next++) {
        const r = await call(daemon.url, 'POST', `/v1/items/${item}/tickets`, SERVICE_KEY, { userId: `u${i}` });
        ids[i] = String(r.body.ticketId);
      }
    }),
  );

  await sleep(1000);
  const rssBefore = rssMiB(pid);
  ctx.log(`opening ${n} event streams (daemon RSS ${rssBefore.toFixed(0)} MiB)`);
  // Readers on worker threads (BENCH_READERS, default 1: see sse-streams.ts).
  const readers = Number(process.env.BENCH_READERS ?? 1);
  const fleet = streamFleet(daemon.url, readers);
  const openStart = performance.now();
  for (let i = 0; i < n; i += 500) await fleet.open(ids.slice(i, i + 500));
  const firsts = fleet.firsts();
  const opened = firsts >= n;
  const openS = (performance.now() - openStart) / 1000;
  await sleep(3000);
  const rssOpen = rssMiB(pid);
  const idleA = cpuSnap({ daemon: pid });
  await sleep(5000);
  const idleCpu = cpuUse(idleA, cpuSnap({ daemon: pid })).daemon;
  ctx.log(`${firsts}/${n} streams open in ${openS.toFixed(1)} s; RSS ${rssOpen.toFixed(0)} MiB; idle CPU ${idleCpu.toFixed(2)} cores`);

  // The line moves: 100 admissions per second until the units are gone, then the sell-out cut.
  const rate = 100;
  const moveA = cpuSnap({ daemon: pid });
  await call(daemon.url, 'PATCH', `/v1/items/${item}/gate`, OPERATOR_KEY, { mode: 'manual', rate });
  const soldOut = await until(() => fleet.ended('rejected') > 0, units * (1000 / rate) * 3 + 30_000);
  const moveCpu = cpuUse(moveA, cpuSnap({ daemon: pid }));
  const all = await until(() => fleet.ended() >= firsts, 30_000);
  const streams = await fleet.results();
  await fleet.close();
  const endedAt = Number(await ctx.redis.hget(`${ctx.prefix}{${item}}:meta`, 'endedAt'));
  const rejected = streams.filter((s) => s.endState === 'rejected');
  // The target is about users still waiting when the units ran out; tickets admitted at that moment
  // end through their handler's answer (sold out in Postgres), reported on their own line.
  const waiting = rejected.filter((s) => !s.admitted);
  const admitted = rejected.filter((s) => s.admitted);
  const lastEnd = Math.max(...waiting.map((s) => s.endAt!));
  const firstEnd = Math.min(...waiting.map((s) => s.endAt!));
  const told = waiting.map((s) => s.endAt! - endedAt).sort((a, b) => a - b);
  const toldAt = (q: number) => told[Math.min(told.length - 1, Math.floor(q * told.length))]?.toFixed(0) ?? '-';
  const admittedLast = admitted.length ? `${(Math.max(...admitted.map((s) => s.endAt!)) - endedAt).toFixed(0)} ms` : '-';
  const succeeded = streams.filter((s) => s.endState === 'succeeded').length;
  const events = streams.reduce((a, s) => a + s.events, 0);
  // Late ones, as the daemon tells them now (when their state ended, whether they were admitted).
  for (const [i, st] of streams.entries())
    if (st.endState === 'rejected' && !st.admitted && st.endAt! - endedAt > 1000) {
      const r = await call(daemon.url, 'GET', `/v1/tickets/${ids[i]}`, SERVICE_KEY);
      ctx.log(`late: told at +${(st.endAt! - endedAt).toFixed(0)} ms, cut at ${new Date(endedAt).toISOString()}: ${JSON.stringify(r.body)}`);
    }
  const perStreamKiB = ((rssOpen - rssBefore) * 1024) / n;
  ctx.log(`sold out: ${rejected.length} told rejected, ${succeeded} succeeded; cut → last terminal event ${(lastEnd - endedAt).toFixed(0)} ms`);
  // The daemon's side of the fan-out: its longest pass over the item's streams (the sell-out's),
  // from the watch's histogram: at most the smallest bucket bound that holds every pass.
  const scrape = await (await fetch(`${daemon.url}/metrics`)).text();
  const buckets = [...scrape.matchAll(/^floodgate_ticket_watch_pass_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)].map((m) => [Number(m[1] === '+Inf' ? Infinity : m[1]), Number(m[2])] as const);
  const passes = buckets.at(-1)?.[1] ?? 0;
  const longestPassS = buckets.find(([, n]) => n === passes)?.[0] ?? NaN;
  await daemon.child.stop();

  const rows = [
    ['streams open (first event received)', `${firsts} / ${n}${opened ? '' : ' (not all opened)'}`],
    ['time to open them (500 at a time)', `${openS.toFixed(1)} s`],
    ['daemon RSS before → with the streams open', `${rssBefore.toFixed(0)} → ${rssOpen.toFixed(0)} MiB`],
    ['memory per open stream (RSS delta / streams)', `${perStreamKiB.toFixed(1)} KiB`],
    ['daemon CPU, streams open, line still (5 s)', `${idleCpu.toFixed(2)} cores`],
    [`daemon CPU while the line moves (${rate}/s, ${units} units, until sell-out)`, `${moveCpu.daemon.toFixed(2)} cores (other processes: ${moveCpu.other.toFixed(2)})`],
    ['events sent in all', String(events)],
    ['streams ended succeeded / rejected sold_out', `${succeeded} / ${rejected.length}${all ? '' : ' (some never ended)'}`],
    ['streams waiting at the sell-out / admitted then, ended rejected sold_out', `${waiting.length} / ${admitted.length}`],
    ['sell-out (cut in Redis) → first waiting stream told', `${(firstEnd - endedAt).toFixed(0)} ms`],
    ['sell-out (cut in Redis) → last waiting stream told', `${(lastEnd - endedAt).toFixed(0)} ms`],
    ['sell-out → waiting stream told, p50 / p90 / p99 / p99.9', `${toldAt(0.5)} / ${toldAt(0.9)} / ${toldAt(0.99)} / ${toldAt(0.999)} ms`],
    ['waiting streams told later than 1 s after the sell-out', `${told.filter((t) => t > 1000).length}${told.length ? ` (the last ten: ${told.slice(-10).map((t) => t.toFixed(0)).join(', ')} ms)` : ''}`],
    ['sell-out → last ticket admitted then told (its handler answered sold out)', admittedLast],
    ["the daemon's longest pass over the streams (the sell-out's: every last event written)", `≤ ${longestPassS * 1000} ms (of ${passes} passes)`],
  ];
  const markdown = [
    '### Ticket event streams on one daemon',
    '',
    mdTable(['what', 'measured'], rows),
    '',
    '### Method',
    '',
    `- One daemon process (dist/floodgate.mjs, as \`npm start\` runs it), a seckill item with ${units} units and a closed gate; ${n} users join over HTTP, then this process opens one SSE stream per ticket (a raw TCP socket each with no HTTP parser, read by ${readers} worker thread${readers > 1 ? 's' : ''}) and waits for each first event. RSS from /proc before and after; CPU from /proc/<pid>/stat.`,
    `- The gate then opens at ${rate}/s: the dispatcher sells the units, the watch sends position drops (at most once per pollAfterMs per stream) and the admitted/succeeded views; Postgres says sold out, the line is cut, and every waiting stream gets its rejected/sold_out view from one refresh of the item. The cut's time is meta.endedAt in Redis (same machine clock).`,
    `- Streams: ${n}${n < wanted ? ` of the ${wanted} asked for: the machine's open-file hard limit is ${hard} per process and cannot be raised inside this container, and the daemon needs ~100 descriptors of its own` : ''}.`,
    `- Sell-out detection: ${soldOut ? 'seen' : 'NOT seen within the deadline'}.`,
  ].join('\n');
  return { markdown };
}
