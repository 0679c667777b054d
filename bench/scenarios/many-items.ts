/**
 * The `many-items` scenario: does an idle daemon's cost follow its work or the number of items it
 * knows? One daemon; its CPU with no items, then with BENCH_ITEMS items (default 10,000: half
 * seckill, half webhook with an auto gate, all with empty lines) just after they were defined
 * (they count as active for a minute), and again once they have been idle for longer than that.
 * Also the time of a metrics scrape and of the item list, Redis commands per second while idle, and
 * join throughput on one hot item beside the idle ones against the same daemon before they existed.
 */
import { OPERATOR_KEY, SERVICE_KEY, call, putItem, waitingCount } from '../lib/api.js';
import { cpuSnap, cpuUse } from '../lib/cpu.js';
import { against, measurePair, pairRatio, startDaemon, type BenchContext } from '../lib/harness.js';
import { REDIS_URL, createScratchDb, dropScratchDb } from '../lib/infra.js';
import { runLoad } from '../lib/load.js';
import { mdTable } from '../lib/report.js';
import type { ScenarioOutput } from '../lib/harness.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);


async function cpuOver(pid: number, ms: number) {
  const a = cpuSnap({ daemon: pid });
  await sleep(ms);
  return cpuUse(a, cpuSnap({ daemon: pid }));
}

/** The daemon's (pid's) connections to the bench's Redis, as `ip:port` of their own ends (what MONITOR names a client by). */
async function redisConnections(pid: number): Promise<Set<string>> {
  const port = new URL(REDIS_URL).port || '6379';
  const { stdout } = await execFileP('ss', ['-tnpH', 'state', 'established', `( dport = :${port} )`]);
  const mine = stdout.split('\n').filter((l) => l.includes(`pid=${pid},`));
  return new Set(mine.map((line) => /(\S+:\d+)\s+\S+:\d+\s+users:/.exec(line)?.[1]).filter((a): a is string => !!a));
}

/**
 * Redis commands per second over `ms`: the daemon's own (commands its connections sent, seen by
 * MONITOR; a script's calls inside Redis not counted) and the whole server's
 * (total_commands_processed, every client's and every script's calls). The whole server's alone
 * counted whatever else used the shared Redis meanwhile: 1,000 parked lines read ~1,000 commands/s
 * in two runs of 4 Dec and 8–39 in others, a test suite running beside the bench or not.
 */
async function redisOps(ctx: BenchContext, pid: number, ms: number): Promise<{ own: number; server: number }> {
  const total = async () => Number(/total_commands_processed:(\d+)/.exec(await ctx.redis.info('stats'))![1]);
  const ours = await redisConnections(pid);
  const monitor = await ctx.redis.monitor(); // (a connection of its own)
  let own = 0;
  monitor.on('monitor', (_time: string, _args: string[], source: string) => void (ours.has(source) && own++));
  const a = await total();
  await sleep(ms);
  const server = ((await total()) - a - 2) / (ms / 1000);
  monitor.disconnect();
  return { own: own / (ms / 1000), server };
}

const opsText = (o: { own: number; server: number }) => `${o.own.toFixed(0)} (whole server ${o.server.toFixed(0)})`;

/**
 * Drops every connection the daemon (pid) has to Redis, as a network blip or a Redis failover
 * does: it reconnects, and a reconnect makes every item active for a while (items.activateAll).
 * Returns how many it dropped.
 */
async function dropRedisConnections(ctx: BenchContext, pid: number): Promise<number> {
  const mine = await redisConnections(pid);
  for (const local of mine) await ctx.redis.call('CLIENT', 'KILL', 'ADDR', local).catch(() => {});
  return mine.size;
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

/**
 * A scrape as Prometheus makes one: asks for gzip and inflates it natively (curl --compressed; its
 * time_total, from the request to the last byte inflated), median of 3. Node's fetch inflates
 * through web streams and spends more on the 3.7 MB than the daemon spends building them (3 Dec:
 * 48 ms plain and 79 ms gzip from a fresh process, 140–191 ms from the bench's own), so it is
 * reported beside, not as the scrape's time.
 */
async function scraped(base: string, path: string, firstBytes: number[] = [], rounds = 3) {
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const { stdout } = await execFileP('curl', ['-sS', '--compressed', '-o', '/dev/null', '-w', '%{http_code} %{time_starttransfer} %{time_total}', `${base}${path}`], { timeout: 60_000 });
    const [code, first, secs] = stdout.trim().split(' ');
    if (code !== '200') throw new Error(`GET ${path} (curl): ${code}`);
    times.push(Number(secs) * 1000);
    firstBytes.push(Number(first) * 1000);
  }
  return times.sort((a, b) => a - b)[1];
}

const JOIN_ROUNDS = 3;
const JOIN_ROUND_S = 5;
/** Alternated slices of each daemon for the hot item's ratio (BENCH_HOT_ROUNDS, default 20: per-slice ratios range ±30% within a run, and ten slices gave medians from 0.88 to 0.98). */
const HOT_ROUNDS = Math.max(1, Number(process.env.BENCH_HOT_ROUNDS ?? 20));

/** Joins/s on one hot item (a new user each request, 50 connections): each round's rate, and their median. */
async function hotJoins(ctx: BenchContext, daemon: Awaited<ReturnType<typeof startDaemon>>, tag: string, warmUp = false) {
  const rates: number[] = [];
  const others: number[] = [];
  // A first round warms the daemon's JIT and connections; it is not counted.
  for (let i = warmUp ? -1 : 0; i < JOIN_ROUNDS; i++) {
    const spec = against(daemon, { connections: 50, headers: { authorization: `Bearer ${SERVICE_KEY}` }, gen: { kind: 'join', path: '/v1/items/hot/tickets', userPrefix: `${tag}${i}` } })('');
    const r = await runLoad(ctx.tmpDir, { ...spec, duration: JOIN_ROUND_S });
    if ((r.status['202'] ?? 0) < r.requests * 0.99) throw new Error(`hot joins: ${JSON.stringify(r.status)}`);
    if (i >= 0) rates.push(r.rps);
    if (i >= 0) others.push(r.cpu.other ?? NaN);
  }
  const other = others.reduce((a, b) => a + b, 0) / others.length;
  return { rates, other, median: [...rates].sort((a, b) => a - b)[Math.floor(rates.length / 2)] };
}

export async function manyItemsScenario(ctx: BenchContext): Promise<ScenarioOutput> {
  const n = Number(process.env.BENCH_ITEMS ?? 10_000);
  const daemon = await startDaemon(ctx);
  const pid = daemon.child.proc.pid!;
  await sleep(2000);
  const none = await cpuOver(pid, 5000);
  const noneOps = await redisOps(ctx, pid, 3000);
  // One hot item (an external line behind a closed gate: joins only), alone on the daemon.
  await putItem(daemon.url, 'hot', 100_000_000);
  const alone = await hotJoins(ctx, daemon, 'a', true);
  ctx.log(`hot item alone: ${alone.rates.map((r) => r.toFixed(0)).join(' · ')} joins/s`);
  ctx.log(`no items: ${none.daemon.toFixed(3)} cores; defining ${n} items`);
  let next = 0;
  let retried = 0;
  const started = performance.now();
  const defineCpu = cpuSnap({ daemon: pid });
  await Promise.all(
    Array.from({ length: 32 }, async () => {
      for (let i = next++; i < n; i = next++) {
        const body = i % 2 ? { handler: 'seckill', config: { stock: 10 } } : { handler: 'webhook', config: { url: 'http://127.0.0.1:2/none', timeoutMs: 1000 }, gate: { mode: 'auto' } };
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
  const defineUse = cpuUse(defineCpu, cpuSnap({ daemon: pid }));
  const cpuPerPutMs = (defineUse.daemon * (definedAt - started)) / n;
  ctx.log(`defined ${n} items in ${((definedAt - started) / 1000).toFixed(1)} s`);
  const fresh = await cpuOver(pid, 5000);
  ctx.log(`just defined: ${fresh.daemon.toFixed(3)} cores; waiting for them to go idle`);
  // An item stays active for a minute after its last work (items.activeItemIds).
  await sleep(Math.max(0, definedAt + 66_000 - performance.now()));
  const idle = await cpuOver(pid, 10_000);
  const idleOps = await redisOps(ctx, pid, 5000);
  // The first scrapes after the items were defined read their views from Redis and build their
  // text (cold); Prometheus then scrapes every 15–60 s, so the steady scrape is timed after three.
  const coldFirstBytes: number[] = [];
  const coldMs = await scraped(daemon.url, '/metrics', coldFirstBytes);
  const scrapes: number[] = [];
  const scrapeMs = await scraped(daemon.url, '/metrics', scrapes, 5);
  ctx.log(`scrapes, time to first byte: cold ${coldFirstBytes.map((t) => t.toFixed(0)).join(' · ')} ms, then ${scrapes.map((t) => t.toFixed(0)).join(' · ')} ms`);
  const metricsMs = await timed(daemon.url, '/metrics', null);
  const listMs = await timed(daemon.url, '/v1/items', OPERATOR_KEY);
  ctx.log(`idle: ${idle.daemon.toFixed(3)} cores, ${opsText(idleOps)} Redis commands/s; /metrics ${scrapeMs.toFixed(0)} ms as a scraper (Node's fetch ${metricsMs.toFixed(0)} ms), /v1/items ${listMs.toFixed(0)} ms`);
  const beside = await hotJoins(ctx, daemon, 'b');
  ctx.log(`hot item beside ${n} idle items: ${beside.rates.map((r) => r.toFixed(0)).join(' · ')} joins/s`);
  // The same comparison in alternating slices against a second daemon that knows only its hot item
  // (its own database and prefix), so that load from outside the bench falls on both alike.
  const soloDb = `${ctx.prefix.replace(/\W/g, '_')}solo`;
  const soloEnv = { DATABASE_URL: await createScratchDb(soloDb), FLOODGATE_REDIS_PREFIX: `${ctx.prefix}solo:` };
  // A free port can be taken by another process before the daemon listens on it (a shared machine): try again.
  const solo = await startDaemon(ctx, soloEnv).catch(() => startDaemon(ctx, soloEnv)).catch(() => startDaemon(ctx, soloEnv));
  await putItem(solo.url, 'hot', 100_000_000);
  // The same line under both: this daemon's hot line already holds the rounds' tickets (and its
  // process their cached records), so the solo daemon's is filled as deep first (a new user per
  // join, as the rounds), or the slices would compare a deep line with an empty one.
  const depth = await waitingCount(daemon.url, 'hot');
  const filled = await runLoad(ctx.tmpDir, { ...against(solo, { connections: 50, headers: { authorization: `Bearer ${SERVICE_KEY}` }, gen: { kind: 'join', path: '/v1/items/hot/tickets', userPrefix: 'fill' } })(''), amount: depth });
  ctx.log(`solo daemon's hot line filled to ${depth} (${filled.status['202'] ?? 0} joins) like this daemon's`);
  const hot = (server: typeof daemon, tag: string) => against(server, { connections: 50, headers: { authorization: `Bearer ${SERVICE_KEY}` }, gen: { kind: 'join', path: '/v1/items/hot/tickets', userPrefix: tag } });
  // Slices of 2 s, HOT_ROUNDS of each (see HOT_ROUNDS): one slice's ratio says little about a 5% target.
  const [soloR, manyR] = await measurePair({ ...ctx, durationS: 2 * HOT_ROUNDS }, hot(solo, 's'), hot(daemon, 'm'), HOT_ROUNDS);
  const paired = pairRatio(soloR, manyR, (r) => r.rps);
  ctx.log(`alternating: alone ${soloR.rps.toFixed(0)}, beside ${manyR.rps.toFixed(0)} joins/s; ratio ${paired.median.toFixed(3)} (${paired.min.toFixed(3)}–${paired.max.toFixed(3)})`);
  await solo.child.stop();
  await dropScratchDb(soloDb).catch(() => {});
  // A Redis blip: the daemon's connections dropped. The reconnect makes every item active while
  // each loop looks at it (items.ts ACTIVATE_ALL_MS, 10 s; it was a minute), then they are idle again.
  const dropped = await dropRedisConnections(ctx, pid);
  const afterDrop = await cpuOver(pid, 15_000);
  const afterDropOps = await redisOps(ctx, pid, 5000);
  const settled = await cpuOver(pid, 10_000);
  ctx.log(`after a reconnect (${dropped} connections dropped): ${afterDrop.daemon.toFixed(3)} cores over 15 s, then ${opsText(afterDropOps)} Redis commands/s (5 s) and ${settled.daemon.toFixed(3)} cores (10 s)`);
  // Lines parked behind closed gates: some of the seckill items get a closed gate and one ticket
  // waiting each (a sale's items queued up before it opens). Nothing can move in them until a
  // change, so they should cost what idle items cost.
  const parkedN = Math.min(1000, Math.floor(n / 2));
  let nextPark = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (let k = nextPark++; k < parkedN; k = nextPark++) {
        const id = `many-${2 * k + 1}`;
        const g = await call(daemon.url, 'PATCH', `/v1/items/${id}/gate`, OPERATOR_KEY, { mode: 'closed' });
        const j = await call(daemon.url, 'POST', `/v1/items/${id}/tickets`, SERVICE_KEY, { userId: `parked-${k}` });
        if (g.status !== 200 || j.status !== 202) throw new Error(`parking ${id}: ${g.status} ${j.status}`);
      }
    }),
  );
  await sleep(3000);
  const parked = await cpuOver(pid, 10_000);
  const parkedOps = await redisOps(ctx, pid, 5000);
  ctx.log(`${parkedN} lines parked behind closed gates: ${parked.daemon.toFixed(3)} cores, ${opsText(parkedOps)} Redis commands/s`);
  await daemon.child.stop();
  const joinRow = (r: typeof alone) => `${r.median.toFixed(0)} (rounds ${r.rates.map((x) => x.toFixed(0)).join(' · ')}; other processes ${r.other.toFixed(2)} cores)`;

  const rows = [
    ['daemon CPU, no items (5 s)', `${none.daemon.toFixed(3)} cores`, ''],
    [`daemon CPU, ${n} items just defined (5 s)`, `${fresh.daemon.toFixed(3)} cores`, ''],
    [`daemon CPU, the same ${n} items idle over a minute (10 s)`, `${idle.daemon.toFixed(3)} cores (other processes meanwhile: ${idle.other.toFixed(2)} cores)`, '≤ 0.05'],
    ["Redis commands/s, the daemon's own (and the whole server's), no items · idle items", `${opsText(noneOps)} · ${opsText(idleOps)}`, ''],
    [
      `daemon CPU after its Redis connections are dropped (a blip: ${dropped} dropped, it reconnects), the first 15 s · Redis commands/s, the 5 s after · daemon CPU, the 10 s after those`,
      `${afterDrop.daemon.toFixed(3)} cores · ${opsText(afterDropOps)} · ${settled.daemon.toFixed(3)} cores`,
      'idle again after 15 s',
    ],
    [`daemon CPU · Redis commands/s, ${parkedN} of the seckill items with one ticket waiting behind a closed gate each (10 s · 5 s, from 3 s after)`, `${parked.daemon.toFixed(3)} cores · ${opsText(parkedOps)} (other processes: ${parked.other.toFixed(2)} cores)`, 'as idle'],
    [`GET /metrics with ${n} items, as a scraper asks (gzip, inflated natively: curl --compressed; median of 5, after 3 cold scrapes)`, `${scrapeMs.toFixed(0)} ms (the cold ones: median ${coldMs.toFixed(0)} ms, first bytes after ${coldFirstBytes.map((t) => t.toFixed(0)).join(' · ')} ms)`, '≤ 100 ms'],
    [`GET /metrics with ${n} items through Node's fetch from the bench process (inflated through web streams; median of 3)`, `${metricsMs.toFixed(0)} ms`, ''],
    [`GET /v1/items with ${n} items (median of 3)`, `${listMs.toFixed(0)} ms`, '≤ 500 ms'],
    [`joins/s on one hot item, no other items (median of ${JOIN_ROUNDS} × ${JOIN_ROUND_S} s, 50 connections)`, joinRow(alone), ''],
    [`joins/s on the same hot item beside the ${n} idle items (same daemon)`, `${joinRow(beside)}: ${(beside.median / alone.median).toFixed(3)}×`, ''],
    [
      `joins/s, alternating 2 s slices (${HOT_ROUNDS} each): a daemon with only its hot item · this daemon's hot item beside the ${n} idle items`,
      `${soloR.rps.toFixed(0)} · ${manyR.rps.toFixed(0)}: ${paired.median.toFixed(3)}× (median of ${paired.n} per-slice ratios, range ${paired.min.toFixed(3)}–${paired.max.toFixed(3)}; other processes ${((soloR.cpu.other + manyR.cpu.other) / 2).toFixed(2)} cores)`,
      '≥ 0.95×',
    ],
    ['time to define them (32 concurrent PUTs)', `${((definedAt - started) / 1000).toFixed(1)} s (${retried} PUTs answered 503 and retried)`, ''],
    ['daemon CPU per PUT while defining them', `${cpuPerPutMs.toFixed(2)} ms (${defineUse.daemon.toFixed(2)} cores)`, ''],
  ];
  const markdown = [
    '### Many items, empty lines: what an idle daemon costs',
    '',
    mdTable(['measurement', 'value', 'target (issue)'], rows),
    '',
    '### Method',
    '',
    `- One daemon (dist/floodgate.mjs, built from src/ as \`npm start\` does, LOG_LEVEL=warn). ${n} items: even ones webhook (auto gate, a downstream that is never called), odd ones seckill (10 units); no tickets. CPU from /proc/<pid>/stat; Redis commands: the daemon's own, counted by MONITOR on its connections (the commands it sends; a script's calls inside Redis not counted), and the whole server's from INFO stats (every client's, every script call: the shared Redis's other users too).`,
    `- /metrics is timed as a scraper fetches it (curl --compressed: asks gzip, inflates natively; time_total): three cold scrapes first (the first after the items were defined reads every view from Redis and builds its text), reported apart, then five; and, beside it, through Node's fetch from this process, whose inflating through web streams costs more than the daemon's answer (scraped() says what was measured on 3 Dec).`,
    '- Background loops visit only the items of the active set (any work in the last minute, or a lease running longer); every item is made active only at a start and after a Redis reconnect. Defining an item does not make it active: it is a change notice (items.announce), which makes every daemon read the item again when it next serves it.',
    '- Hot item: an external line behind a closed gate (joins only, a new user per request), measured in rounds before the idle items are defined and again once they are idle, on the same daemon. The rounds are not interleaved (the items cannot come and go between rounds), so load from outside the bench between the two shows in the ratio. The alternating row compares the same load against a second daemon (its own database and Redis prefix) that knows only its hot item, slice by slice, after one warm-up each; the solo hot line is first filled as deep as the other (the rounds before left their tickets in it).',
  ].join('\n');
  return { markdown };
}
