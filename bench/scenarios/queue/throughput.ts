/**
 * Join, poll and reject-when-full against the daemon, each in alternating slices with the bare
 * Hono app (harness.ts measurePair) and given as the per-round median ratio to it.
 */
import { call, join, OPERATOR_KEY, putItem, waitingCount } from '../../lib/api.js';
import { against, measurePair, pairRatio, startBareHono, type BenchContext, type Measured, type Server } from '../../lib/harness.js';
import type { LoadResult, LoadSpec } from '../../lib/load-spec.js';
import { fmtInt, fmtRatio, fmtS } from '../../lib/stats.js';
import { fill } from './fill.js';
import { auth, CONNECTIONS, PAIR_ROUNDS, SMALL, type Row } from './settings.js';

/** The per-round median of b ÷ a (f = req/s unless given), checked against the target. */
export function ratioRow(a: Measured, b: Measured, of: string, target: number, atLeast = true, f = (r: LoadResult) => r.rps): NonNullable<Row['ratio']> {
  const q = pairRatio(a, b, f);
  return {
    value: q.median,
    of: `${of}; median of ${q.n} rounds, range ${fmtRatio(q.min)}–${fmtRatio(q.max)}`,
    target: `${atLeast ? '≥' : '≤'} ${target}`,
    met: atLeast ? q.median >= target : q.median <= target,
  };
}

/** A load spec for autocannon against `server` (with the service key, unless `anonymous`). */
export const loadOn = (server: Server, gen: LoadSpec['gen'], connections = CONNECTIONS, anonymous = false) => against(server, { connections, headers: anonymous ? {} : auth, gen });

const total = (s: Record<string, number>) => Object.values(s).reduce((a, b) => a + b, 0);

/** The three throughput comparisons; `add` receives each row as it is measured, `checks` what the server says afterwards. */
export async function measureThroughput(ctx: BenchContext, daemon: Server, add: (row: Row) => void, checks: string[]): Promise<void> {
  // Both servers stay up; each daemon load alternates with its bare-Hono twin (the idle one costs ~nothing).
  const hono = await startBareHono(ctx);
  const url = daemon.url;
  ctx.log(`bare Hono ready in ${fmtS(hono.startMs)}, daemon in ${fmtS(daemon.startMs)}`);
  const barePost = loadOn(hono, { kind: 'static', method: 'POST', path: '/v1/items/bare/tickets', body: '{"userId":"u-123"}' });
  const bareGet = loadOn(hono, { kind: 'static', method: 'GET', path: '/v1/tickets/t1' });

  // join: a new user every request.
  await putItem(url, 'join', 10_000_000);
  const [bpJoin, joinR] = await measurePair(ctx, barePost, loadOn(daemon, { kind: 'join', path: '/v1/items/join/tickets', userPrefix: 'j' }), PAIR_ROUNDS);
  add({ name: 'bare Hono POST (alongside join)', r: bpJoin, expect: '202' });
  add({ name: 'join (new user each request)', r: joinR, expect: '202', ratio: ratioRow(bpJoin, joinR, 'req/s ÷ bare POST', 0.8) });
  checks.push(`join: ${fmtInt(await waitingCount(url, 'join'))} tickets waiting at the server; autocannon counted ${fmtInt(joinR.allStatus['202'] ?? 0)} 202s over the ${joinR.loads} loads on that item (warm-up included; requests in flight when a load stops, up to ${CONNECTIONS} per load, are not counted).`);

  // poll: 1,000 tickets, GET a random one each request.
  await putItem(url, 'poll', 10_000_000);
  const pollIds = await fill(ctx, daemon, 'poll', SMALL, 'p-');
  const [bgPoll, pollR] = await measurePair(ctx, bareGet, loadOn(daemon, { kind: 'poll', ticketIds: pollIds }), PAIR_ROUNDS);
  add({ name: 'bare Hono GET (alongside poll)', r: bgPoll, expect: '200' });
  add({ name: `poll (random of ${fmtInt(SMALL)} tickets)`, r: pollR, expect: '200', ratio: ratioRow(bgPoll, pollR, 'req/s ÷ bare GET', 0.8) });
  // The same polls as end users send them, with no key (the ticket id is their credential): the
  // flood's path. The rows above carry the service key, as they did since 23 Nov.
  const [bgAnon, anonR] = await measurePair(ctx, loadOn(hono, { kind: 'static', method: 'GET', path: '/v1/tickets/t1' }, CONNECTIONS, true), loadOn(daemon, { kind: 'poll', ticketIds: pollIds }, CONNECTIONS, true), PAIR_ROUNDS);
  add({ name: 'bare Hono GET, no key (alongside the next)', r: bgAnon, expect: '200' });
  add({ name: `poll with no key, as end users poll (random of ${fmtInt(SMALL)})`, r: anonR, expect: '200', ratio: ratioRow(bgAnon, anonR, 'req/s ÷ bare GET', 0.8) });

  // reject when full: capacity 1, already holding one ticket.
  await putItem(url, 'full', 1);
  const first = await join(url, 'full', 'f-first');
  if (first.status !== 202) throw new Error(`first join of the capacity-1 item: ${first.status} ${JSON.stringify(first.body)}`);
  const [bpReject, rejectR] = await measurePair(ctx, barePost, loadOn(daemon, { kind: 'join', path: '/v1/items/full/tickets', userPrefix: 'f' }), PAIR_ROUNDS);
  add({ name: 'bare Hono POST (alongside reject)', r: bpReject, expect: '202' });
  add({ name: 'reject when full (429 expected)', r: rejectR, expect: '429', ratio: ratioRow(bpReject, rejectR, 'req/s ÷ bare POST', 0.9) });
  checks.push(`reject: ${fmtInt(rejectR.allStatus['429'] ?? 0)} of ${fmtInt(total(rejectR.allStatus))} answers over ${rejectR.loads} loads were 429; the item holds ${fmtInt(await waitingCount(url, 'full'))} waiting ticket(s) (expected 1).`);

  // refusal after the sale ended: an item closed by its operator (as a sold-out one), a crowd of
  // users it never knew (the join script answers those it knows: queue/ended-users.ts).
  await putItem(url, 'ended', 1000);
  for (const u of ['e-first', 'e-second']) if ((await join(url, 'ended', u)).status !== 202) throw new Error('join to the item before it ends');
  const closed = await call(url, 'DELETE', '/v1/items/ended', OPERATOR_KEY);
  if (closed.status !== 200) throw new Error(`closing the item: ${closed.status}`);
  const [bpEnded, endedR] = await measurePair(ctx, barePost, loadOn(daemon, { kind: 'join', path: '/v1/items/ended/tickets', userPrefix: 'e' }), PAIR_ROUNDS);
  add({ name: 'bare Hono POST (alongside the next)', r: bpEnded, expect: '202' });
  add({ name: 'refusal after the sale ended (410 expected; users it never knew)', r: endedR, expect: '410', ratio: ratioRow(bpEnded, endedR, 'req/s ÷ bare POST', 0.9) });
  checks.push(`ended: ${fmtInt(endedR.allStatus['410'] ?? 0)} of ${fmtInt(total(endedR.allStatus))} answers over ${endedR.loads} loads were 410.`);
  await hono.child.stop();
}
