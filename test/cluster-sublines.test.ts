import { afterAll, describe, expect, it } from 'vitest';
import { connectRedis } from '../src/infra/redis-client.js';
import { systemClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { createLine } from '../src/queue/line.js';
import { createSplitLine, splitSeq, subLineOf, subLineSeq, type SplitAdmitted, type SplitItem } from '../src/queue/split-line.js';
import { hashSlot, itemKeys, subLineTag } from '../src/redis/keys.js';
import { createScriptRunner, scripts } from '../src/redis/scripts.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { askAgainOn503, joinAll, userIds } from './support/joins.js';
import { ownCluster } from './support/redis-cluster.js';
import { expectSoldExactly } from './support/sale-checks.js';
import { rowsOf } from './support/split.js';


/**
 * A hot item split into 8 sub-lines on a real 3-master Redis Cluster, driven by two "daemons"
 * (two split-line instances, each with its own cluster connection) at once: joins from both,
 * admission rounds from both, and position reads while they run.
 */
const cluster = await ownCluster({ masters: 3 });
const seeds = cluster.seeds.split(',').map((s) => ({ host: s.split(':')[0], port: Number(s.split(':')[1]) }));
const conns = [await connectRedis({ cluster: seeds }, 'api', createLogger('silent')), await connectRedis({ cluster: seeds }, 'api', createLogger('silent'))];
afterAll(() => conns.forEach((c) => c.disconnect()));
const prefix = 'fgl:';
const daemons = conns.map((redis) => createSplitLine({ redis, prefix, clock: systemClock }));
const line = createLine({ redis: conns[0], prefix, clock: systemClock, cacheMs: 0 });
// Two whole daemons on the same cluster and one Postgres database, for the sale through the API.
const db = await testDb();
const env = { REDIS_URL: '', FLOODGATE_REDIS_CLUSTER: cluster.seeds };
const log = createLogger('error');
const apis = [await inProcessDaemon({ prefix: 'fgd:', databaseUrl: db.url, env, log }), await inProcessDaemon({ prefix: 'fgd:', databaseUrl: db.url, env, log })];

async function defineSplit(itemId: string, lines: number, maxInFlight: number): Promise<SplitItem> {
  await line.definitions.define({ itemId, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, { mode: 'manual', rate: null, maxInFlight }, { reopen: false });
  const item = { itemId, lines };
  await daemons[0].defineSubLines(item);
  return item;
}

const subCtr = (item: SplitItem, k: number) => itemKeys(prefix, subLineTag(item.itemId, k)).ctr;
async function waitingNums(item: SplitItem): Promise<number[]> {
  const all = await Promise.all(Array.from({ length: item.lines }, (_, k) => conns[1].zrange(itemKeys(prefix, subLineTag(item.itemId, k)).wait, '0', '-1', 'WITHSCORES')));
  return all.flatMap((z) => z.filter((_, i) => i % 2 === 1).map(Number));
}
const sumCtr = async (item: SplitItem, field: string) => (await Promise.all(Array.from({ length: item.lines }, (_, k) => conns[0].hget(subCtr(item, k), field)))).reduce((s, v) => s + Number(v ?? 0), 0);

describe('a hot item split into sub-lines on a Redis Cluster', { timeout: 120_000 }, () => {
  it('puts the 8 sub-lines on 8 slots over every master; lines: 1 is the item itself', async () => {
    const tags = Array.from({ length: 8 }, (_, k) => subLineTag('hot', k));
    expect(tags[0]).toBe('hot');
    const slots = await Promise.all(tags.map((t) => cluster.node(seeds[0].port).cluster('KEYSLOT', `{${t}}:ctr`)));
    expect(slots.map(Number)).toEqual(tags.map(hashSlot));
    expect(new Set(slots).size).toBe(8);
    const masters = await Promise.all(tags.map((t) => cluster.masterOf(itemKeys(prefix, t).ctr)));
    expect(new Set(masters).size).toBe(3);
    for (const seq of [1, 2, 7, 8, 9, 1000]) {
      const { k, local } = subLineSeq(seq, 8);
      expect(splitSeq(k, local, 8)).toBe(seq);
      expect(subLineSeq(seq, 1)).toEqual({ k: 0, local: seq });
    }
    expect(subLineOf('anyone', 1)).toBe(0);
  });

  it('two daemons joining and admitting at once: one ticket per user, admission in join order, positions distinct, never rising, bounded', async () => {
    const item = await defineSplit('hot', 8, 40);
    const users = userIds(0, 600, 'h');
    // Every user joins twice, once through each daemon, the two at once.
    const jobs = users.flatMap((u, i) => (i % 2 ? [[u, 0], [u, 1]] : [[u, 1], [u, 0]]) as [string, number][]);
    const joins = new Map<string, { start: number; end: number; seq: number; created: boolean }[]>();
    let next = 0;
    let joining = true;
    const joiner = async () => {
      while (next < jobs.length) {
        const [u, d] = jobs[next++];
        const start = performance.now();
        const j = await daemons[d].join(item, u, { n: 1 });
        joins.set(u, [...(joins.get(u) ?? []), { start, end: performance.now(), seq: j.seq, created: j.created }]);
      }
    };

    const rows: SplitAdmitted[] = [];
    const admitter = async (d: number) => {
      for (;;) {
        const got = await rowsOf(daemons[d].admit(item, 25, 60_000));
        rows.push(...got);
        if (got.length) {
          const codes = await daemons[d].settle(item, got.map((r) => ({ seq: r.seq, leaseId: r.leaseId, status: 'succeeded' as const })));
          expect(codes.every((c) => c === 1)).toBe(true);
        } else if (!joining && (await sumCtr(item, 'waiting')) === 0) return;
        else await new Promise((r) => setTimeout(r, 2));
      }
    };

    // Positions read while all of it runs: A (the admission cursor) first, then the waiting numbers.
    const lastShown = new Map<number, number>();
    let snapshots = 0;
    let maxOver = 0;
    const reader = async () => {
      while (joining || (await sumCtr(item, 'waiting')) > 0) {
        const a = Number((await conns[1].hget(itemKeys(prefix, 'hot').ctr, 'an')) ?? 0);
        const nums = (await waitingNums(item)).sort((x, y) => x - y);
        nums.forEach((n, i) => {
          const shown = n - a;
          expect(shown).toBeGreaterThanOrEqual(i + 1); // at least the true place (1 + waiting tickets numbered lower)
          expect(shown).toBeLessThanOrEqual(lastShown.get(n) ?? Infinity); // never rises
          lastShown.set(n, shown);
          maxOver = Math.max(maxOver, shown - (i + 1));
        });
        expect(new Set(nums.map((n) => n - a)).size).toBe(nums.length); // distinct
        snapshots++;
        await new Promise((r) => setTimeout(r, 5));
      }
    };

    const admitting = Promise.all([admitter(0), admitter(1)]);
    const reading = reader();
    await Promise.all(Array.from({ length: 32 }, joiner));
    joining = false;
    await Promise.all([admitting, reading]);

    // One ticket per user, whichever daemon asked first; the other answer is the same ticket.
    for (const u of users) {
      const js = joins.get(u)!;
      expect(js.filter((j) => j.created).length, u).toBe(1);
      expect(js[0].seq, u).toBe(js[1].seq);
    }
    // Every ticket admitted once, in one order over both daemons' rounds: by join number.
    expect(rows.length).toBe(users.length);
    expect(new Set(rows.map((r) => r.seq)).size).toBe(users.length);
    rows.sort((a, b) => a.order - b.order);
    expect(rows.map((r) => r.order)).toEqual(rows.map((_, i) => i + 1));
    for (let i = 1; i < rows.length; i++) expect(rows[i].num, `admission ${i + 1}`).toBeGreaterThan(rows[i - 1].num);
    // Join order as the clients saw it: a ticket whose join ended before another's began is admitted before it.
    const joinOf = new Map([...joins.values()].map((js) => js.find((j) => j.created)!).map((j) => [j.seq, j]));
    let latestStart = -Infinity;
    let inversions = 0;
    for (const r of rows) {
      const j = joinOf.get(r.seq)!;
      if (latestStart > j.end) inversions++;
      latestStart = Math.max(latestStart, j.start);
    }
    expect(inversions).toBe(0);
    // The joins spread over all 8 sub-lines.
    for (let k = 0; k < 8; k++) expect(Number(await conns[0].hget(subCtr(item, k), 'seq')), `sub-line ${k}`).toBeGreaterThan(0);
    expect(snapshots).toBeGreaterThan(0);
    // Shown − true is at most the join numbers that made no waiting ticket: here, every second join (the user's other one).
    const taken = Number(await conns[0].hget(itemKeys(prefix, 'hot').ctr, 'jn'));
    expect(maxOver).toBeLessThanOrEqual(taken - users.length);
    console.log(`split line: ${rows.length} admitted; ${snapshots} position snapshots; shown − true at most ${maxOver}; join numbers taken ${await conns[0].hget(itemKeys(prefix, 'hot').ctr, 'jn')} for ${users.length * 2} joins`);
  });

  it('a join whose number an admission round has passed takes a new one: the round fenced every sub-line at its number', async () => {
    // A race the test above only meets by chance: a join takes its number n, and a whole
    // admission round runs before the join reaches its sub-line. Played here step by step.
    const item = await defineSplit('fence', 8, 100);
    const { run } = createScriptRunner(conns[1], prefix);
    const late = 'late-joiner';
    const [n] = (await run(scripts.splitNumber, item.itemId, systemClock.now(), { userId: late, source: '', defaultKeyQuota: '' })) as number[];
    const other = userIds(0, 64, 'f').find((u) => subLineOf(u, 8) !== subLineOf(late, 8))!;
    expect((await daemons[0].join(item, other)).num).toBe(n + 1);
    expect((await rowsOf(daemons[0].admit(item, 10, 60_000))).map((r) => r.num)).toEqual([n + 1]);
    // Let in with n, the ticket would wait behind a cursor already past it (position n − (n + 1) = 0)
    // and be admitted after n + 1: its sub-line refuses the number (-8, the fence) instead.
    const answer = (await run(scripts.splitJoin, subLineTag(item.itemId, subLineOf(late, 8)), systemClock.now(), { userId: late, num: n, payload: '', source: '' })) as (number | string)[];
    expect(answer.slice(0, 2)).toEqual([-8, n + 1]);
    const j = await daemons[1].join(item, late);
    expect(j).toMatchObject({ created: true, num: n + 2 });
    expect(await daemons[1].position(item, j.num)).toBe(1);
  });

  it('sells exactly the stock of a lines: 8 item from two daemons at once: once per user, no unit below zero, failures give theirs back', async () => {
    const item = await defineSplit('sk', 8, 30);
    await daemons[0].setStock(item, 100);
    const users = userIds(0, 400, 's');
    const sold = new Map<number, string>();
    const failed = new Set<number>();
    let joining = true;
    const admitter = async (d: number) => {
      for (;;) {
        const got = await rowsOf(daemons[d].admit(item, 20, 60_000));
        if (got.length) {
          // Every seventh user's sale fails (its unit must go back to the counter).
          const status = (r: SplitAdmitted) => (Number(r.record.split('|')[1].slice(1)) % 7 === 3 ? ('failed' as const) : ('succeeded' as const));
          const codes = await daemons[d].settle(item, got.map((r) => ({ seq: r.seq, leaseId: r.leaseId, status: status(r) })));
          expect(codes.every((c) => c === 1)).toBe(true);
          for (const r of got) {
            const user = r.record.split('|')[1];
            if (status(r) === 'failed') failed.add(r.seq);
            else {
              expect([...sold.values()]).not.toContain(user);
              sold.set(r.seq, user);
            }
          }
        } else if (!joining && (await sumCtr(item, 'admitted')) === 0 && ((await daemons[d].unitsLeft(item)) === 0 || (await sumCtr(item, 'waiting')) === 0)) return;
        else await new Promise((r) => setTimeout(r, 2));
      }
    };
    const admitting = Promise.all([admitter(0), admitter(1)]);
    await Promise.all(users.map((u, i) => daemons[i % 2].join(item, u)));
    joining = false;
    await admitting;
    expect(sold.size).toBe(100);
    expect(new Set(sold.values()).size).toBe(100);
    expect(failed.size).toBeGreaterThan(0);
    // No shard below zero, none left.
    const shards = await Promise.all(Array.from({ length: 8 }, (_, k) => conns[0].hvals(itemKeys(prefix, subLineTag('sk', k)).stock)));
    expect(shards.flat().map(Number).every((v) => v >= 0)).toBe(true);
    expect(await daemons[1].unitsLeft(item)).toBe(0);
    // Sold out: the rest end at once and nobody new gets in.
    const ended = await daemons[1].cut(item, 'sold_out');
    expect(ended! + sold.size + failed.size).toBe(users.length);
    await expect(daemons[0].join(item, 'late-user')).rejects.toMatchObject({ code: 'sold_out' });
  });

  it('two daemons sell a lines: 8 seckill item through the API: exactly the stock, one order per user, the rest sold_out', async () => {
    const stock = 40;
    const put = await apis[0].define('hot-sale', { handler: 'seckill', config: { stock }, lines: 8, gate: { mode: 'manual', maxInFlight: 32 } });
    expect(put.status).toBe(201);
    const users = userIds(0, 200, 'p');
    // Every user through one daemon, a sixth of them again through the other.
    const via = (userId: string, n: number) => apis[n].call('POST', '/v1/items/hot-sale/tickets', { userId }, SVC);
    const [first, again] = await Promise.all([
      joinAll((u) => via(u, Number(u.slice(1)) % 2), users, { batch: 50, deadlineMs: 60_000, also: [410] }),
      joinAll((u) => via(u, (Number(u.slice(1)) + 1) % 2), users.filter((_, i) => i % 6 === 0), { batch: 50, deadlineMs: 60_000, also: [410] }),
    ]);
    const byUser = new Map<string, string>();
    first.forEach((a, i) => a.status !== 410 && byUser.set(users[i], a.body.ticketId));
    again.forEach((a, i) => {
      const u = users.filter((_, j) => j % 6 === 0)[i];
      if (a.status !== 410 && byUser.has(u)) expect(a.body.ticketId, u).toBe(byUser.get(u));
    });
    const ids = [...new Set(byUser.values())];
    await expectSoldExactly(db.sql, 'hot-sale', stock, ids, (id, i) => apis[i % 2].call('GET', `/v1/tickets/${id}`, undefined, null).then((r) => r.body));
    // The tickets were spread over the 8 sub-lines, so over all three masters.
    const tags = Array.from({ length: 8 }, (_, k) => subLineTag('hot-sale', k));
    const seqs = await Promise.all(tags.map((t) => conns[0].hget(itemKeys('fgd:', t).ctr, 'seq')));
    expect(seqs.every((n) => Number(n) > 0)).toBe(true);
    expect(new Set(await Promise.all(tags.map((t) => cluster.masterOf(itemKeys('fgd:', t).ctr)))).size).toBe(3);
    // The outcome ledger of both daemons: one row per ticket under the id its user got (a user's
    // second join that the sell-out answered 410 leaves its first answer's ticket), and every
    // sub-line's stream acknowledged with its payloads freed (one MULTI on each sub-line's slot).
    const made = new Set([...first, ...again].filter((a) => a.status !== 410).map((a) => ticketRef(a.body.ticketId)));
    const rows = await waitFor(() => db.sql`select ticket_id from ticket_outcomes where item_id = 'hot-sale'`, (r) => r.length >= made.size, 30_000);
    expect(rows.length).toBe(made.size);
    expect(new Set(rows.map((r) => r.ticket_id))).toEqual(made);
    const left = () => Promise.all(tags.map(async (t) => (await conns[0].xlen(itemKeys('fgd:', t).done)) + (await conns[0].hlen(itemKeys('fgd:', t).payloads))));
    expect(await waitFor(left, (l) => l.every((n) => n === 0))).toEqual(tags.map(() => 0));
  });

  it("through two daemons' APIs: joins and pulls at once keep admission in join order and positions that never rise", async () => {
    await apis[0].define('hot-api', { handler: 'external', lines: 8, gate: { mode: 'manual', maxInFlight: 20 } });
    const users = userIds(0, 200, 'a');
    const joinAt = new Map<string, { start: number; end: number }>();
    const shown = new Map<string, number>();
    let next = 0;
    let joining = true;
    const joiner = async () => {
      while (next < users.length) {
        const u = users[next++];
        const start = performance.now();
        const [a] = await joinAll((userId) => apis[Number(userId.slice(1)) % 2].call('POST', '/v1/items/hot-api/tickets', { userId }, SVC), [u]);
        joinAt.set(a.body.ticketId, { start, end: performance.now() });
        expect(a.body.position).toBeGreaterThanOrEqual(1);
        shown.set(a.body.ticketId, a.body.position);
      }
    };
    const pulls: { send: number; recv: number; ids: string[] }[] = [];
    let settled = 0;
    const puller = async (d: number) => {
      while (joining || settled < users.length) {
        const send = performance.now();
        const r = await apis[d].call('POST', '/v1/items/hot-api/pull', { max: 10 }, SVC);
        if (r.status !== 200) continue;
        const got = r.body.tickets as { ticketId: string; leaseId: string }[];
        pulls.push({ send, recv: performance.now(), ids: got.map((t) => t.ticketId) });
        // The pull's outcomes written back at once, as a worker that took a batch does (a 503 asked
        // again: an outcome repeated under its lease answers 200).
        await Promise.all(got.map((t) => askAgainOn503(() => apis[d].call('POST', `/v1/tickets/${t.ticketId}/outcome`, { leaseId: t.leaseId, status: 'succeeded' }, SVC), [200], Date.now() + 30_000, `outcome of ${t.ticketId}`)));
        settled += got.length;
        if (!got.length) await new Promise((res) => setTimeout(res, 5));
      }
    };
    // Positions polled through either daemon while it runs: never higher than the last one shown.
    const poller = async () => {
      for (let d = 0; joining || settled < users.length; d ^= 1) {
        for (const [id, last] of [...shown].slice(-40)) {
          const v = (await apis[d].call('GET', `/v1/tickets/${id}`, undefined, null)).body;
          if (v.state !== 'waiting') shown.delete(id);
          else {
            expect(v.position, id).toBeLessThanOrEqual(last);
            expect(v.position).toBeGreaterThanOrEqual(1);
            shown.set(id, v.position);
          }
        }
        await new Promise((res) => setTimeout(res, 5));
      }
    };
    const running = Promise.all([puller(0), puller(1), poller()]);
    await Promise.all(Array.from({ length: 24 }, joiner));
    joining = false;
    await running;
    expect(new Set(pulls.flatMap((p) => p.ids)).size).toBe(users.length);
    // A pull answered before another was asked holds only tickets that joined before that one's:
    // no ticket of the later pull had finished joining before a ticket of the earlier one began.
    const span = pulls
      .filter((p) => p.ids.length)
      .map((p) => ({ ...p, minEnd: Math.min(...p.ids.map((id) => joinAt.get(id)!.end)), maxStart: Math.max(...p.ids.map((id) => joinAt.get(id)!.start)) }));
    let checked = 0;
    for (const early of span)
      for (const late of span)
        if (early.recv < late.send) {
          expect(late.minEnd < early.maxStart, `a ticket of a later pull joined before one of an earlier pull began`).toBe(false);
          checked++;
        }
    expect(checked).toBeGreaterThan(0);
  });

  it('a sell-out cuts every sub-line at once: nothing waits, nothing more is admitted, every sub-line refuses joins', async () => {
    const item = await defineSplit('cut-me', 8, 10);
    const users = userIds(0, 300, 'c');
    await Promise.all(users.map((u, i) => daemons[i % 2].join(item, u)));
    const before = await rowsOf(daemons[0].admit(item, 10, 60_000));
    expect(before.length).toBe(10);
    const ended = await daemons[1].cut(item, 'sold_out');
    expect(ended).toBe(290);
    expect(await sumCtr(item, 'waiting')).toBe(0);
    await daemons[0].settle(item, before.map((r) => ({ seq: r.seq, leaseId: r.leaseId, status: 'succeeded' as const })));
    expect(await rowsOf(daemons[0].admit(item, 10, 60_000))).toEqual([]);
    const late = userIds(1000, 1064, 'c');
    expect(new Set(late.map((u) => subLineOf(u, 8))).size).toBe(8);
    const answers = await Promise.allSettled(late.map((u, i) => daemons[i % 2].join(item, u)));
    expect(answers.map((a) => (a.status === 'rejected' ? (a.reason as { code: string }).code : 'joined'))).toEqual(late.map(() => 'sold_out'));
  });
});
