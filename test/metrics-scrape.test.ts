import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { get } from 'node:http';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { testRedis } from './support/redis.js';
import { ownRedis } from './support/redis-server.js';

const { newPrefix } = testRedis();
const db = await testDb();
const prefix = newPrefix();
// A Redis of this file's own, so its command counts are this daemon's alone; a long cache time, so
// the daemon's own refreshes of an item are few and the scrape's reads (if any) stand out.
const own = await ownRedis();
const { daemon, call, define } = await inProcessDaemon({ prefix, databaseUrl: db.url, env: { FLOODGATE_CACHE_MS: '5000', REDIS_URL: own.url } });

/** promtool from PATH, from .ci/run's folder, or from a `dpkg -x` into /tmp/prom. */
function findPromtool(): string | null {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter), '/tmp/floodgate-ci/prom/usr/bin', '/tmp/prom/usr/bin'];
  for (const dir of dirs) if (dir && existsSync(path.join(dir, 'promtool'))) return path.join(dir, 'promtool');
  return null;
}
const promtool = findPromtool();

const scrape = async () => {
  const res = await fetch(`${daemon.url}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
};
/** A scrape as Prometheus asks for it (Accept-Encoding: gzip), its bytes as they came over the wire. */
const scrapeAs = (acceptEncoding: string | null) =>
  new Promise<{ encoding: string | undefined; vary: string | undefined; wire: number; text: string }>((resolve, reject) => {
    const headers = acceptEncoding === null ? {} : { 'accept-encoding': acceptEncoding };
    get(`${daemon.url}/metrics`, { headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        const encoding = res.headers['content-encoding'];
        // gunzipSync checks the trailer's CRC-32 and length, so a body joined wrongly fails here.
        const text = (encoding === 'gzip' ? gunzipSync(body) : body).toString('utf8');
        resolve({ encoding, vary: res.headers.vary, wire: body.length, text });
      });
    }).on('error', reject);
  });
/** The per-item gauge lines of these items, in order. */
const gaugeLines = (text: string, ids: string[]) => text.split('\n').filter((l) => ids.some((id) => l.includes(`{item="${id}"`)));

/** The value of one series, or undefined; `labels` as they appear in the exposition, e.g. `item="a"`. */
const sample = (text: string, name: string, labels: string) => {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`) || l.startsWith(`${name}{${labels},`));
  if (line === undefined) return undefined;
  const value = line.slice(line.lastIndexOf(' ') + 1);
  return value === '+Inf' ? Infinity : Number(value);
};

describe('/metrics', () => {
  it.skipIf(!promtool)(`passes promtool check metrics${promtool ? '' : ' (skipped: promtool not found on PATH, in /tmp/floodgate-ci/prom or /tmp/prom; .ci/run installs it)'}`, async () => {
    await call('PUT', '/v1/items/lint-1', { handler: 'seckill', config: { stock: 3 } });
    await call('POST', '/v1/items/lint-1/tickets', { userId: 'u1' }, SVC);
    await call('GET', '/v1/items/lint-1/nothing-here');
    const text = await scrape();
    const run = spawnSync(promtool!, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(run.stdout + run.stderr).toBe('');
    expect(run.status).toBe(0);
  });

  it('counts admissions made by the in-process dispatcher', async () => {
    await call('PUT', '/v1/items/adm-1', { handler: 'seckill', config: { stock: 10 } });
    const joins = await Promise.all(['a', 'b', 'c'].map((userId) => call('POST', '/v1/items/adm-1/tickets', { userId }, SVC)));
    await waitFor(
      () => Promise.all(joins.map((j) => call('GET', `/v1/tickets/${j.body.ticketId}`, undefined, null))),
      (vs) => vs.every((v) => v.body.state === 'succeeded'),
    );
    expect(sample(await scrape(), 'floodgate_admissions_total', 'item="adm-1"')).toBe(3);
  });

  it('shows gate mode, operator rate and cap, and stock left for every item, with no controller running', async () => {
    await call('PUT', '/v1/items/g-manual', { handler: 'seckill', config: { stock: 7 }, gate: { mode: 'manual', rate: 2.5, maxInFlight: 4 } });
    await call('PUT', '/v1/items/g-closed', { handler: 'external', gate: { mode: 'closed' } });
    const text = await scrape();
    expect(sample(text, 'floodgate_gate_mode', 'item="g-manual",mode="manual"')).toBe(1);
    expect(sample(text, 'floodgate_gate_mode', 'item="g-manual",mode="auto"')).toBe(0);
    expect(sample(text, 'floodgate_gate_manual_rate', 'item="g-manual"')).toBe(2.5);
    expect(sample(text, 'floodgate_gate_max_in_flight', 'item="g-manual"')).toBe(4);
    expect(sample(text, 'floodgate_stock_remaining', 'item="g-manual"')).toBe(7);
    expect(sample(text, 'floodgate_gate_mode', 'item="g-closed",mode="closed"')).toBe(1);
    expect(sample(text, 'floodgate_gate_manual_rate', 'item="g-closed"')).toBe(Infinity);
    expect(sample(text, 'floodgate_gate_max_in_flight', 'item="g-closed"')).toBe(Infinity);
    expect(sample(text, 'floodgate_stock_remaining', 'item="g-closed"')).toBeUndefined();

    await call('PATCH', '/v1/items/g-manual/gate', { mode: 'closed' });
    await waitFor(scrape, (t) => sample(t, 'floodgate_gate_mode', 'item="g-manual",mode="closed"') === 1, 15_000);
  });

  it('labels a rejection with the item its request names, and only with items the daemon knows', async () => {
    await call('PUT', '/v1/items/rej-1', { handler: 'external', opensAt: new Date(Date.now() + 3_600_000).toISOString() });
    expect((await call('POST', '/v1/items/rej-1/tickets', { userId: 'u1' }, SVC)).status).toBe(425);
    expect((await call('POST', '/v1/items/made-up-item/tickets', { userId: 'u1' }, SVC)).status).toBe(404);
    const text = await scrape();
    expect(sample(text, 'floodgate_rejections_total', 'code="not_open",item="rej-1"')).toBe(1);
    expect(text).not.toContain('made-up-item');
    expect(sample(text, 'floodgate_rejections_total', 'code="item_not_found",item=""')).toBeGreaterThanOrEqual(1);
  });

  it('counts a request for no endpoint (404) and a method a path does not take (405) among the rejections', async () => {
    const count = async (code: string) => sample(await scrape(), 'floodgate_rejections_total', `code="${code}",item=""`) ?? 0;
    const [nf, mna] = [await count('not_found'), await count('method_not_allowed')];
    expect((await call('GET', '/v1/no-such-endpoint')).status).toBe(404);
    expect((await call('POST', '/healthz', {})).status).toBe(405);
    expect(await count('not_found')).toBe(nf + 1); // before: not counted
    expect(await count('method_not_allowed')).toBe(mna + 1);
  });

  // 200 definitions one after another: 5 s in a clean-clone CI run, 30 s (vitest's default bound) once beside other test runs.
  it('gzips a scrape for a client that asks for it: an idle item adds a few dozen bytes on the wire, not its ~370 of text', { timeout: 120_000 }, async () => {
    const ids = Array.from({ length: 200 }, (_, i) => `idle-${i}`);
    const before = await scrapeAs('gzip');
    expect(before.encoding).toBe('gzip');
    expect(before.vary).toBe('Accept-Encoding');
    for (const [i, id] of ids.entries()) await define(id, i % 2 ? { handler: 'seckill', config: { stock: 10 } } : { handler: 'external' });
    await scrapeAs('gzip'); // loads any item the daemon has not seen yet
    const after = await scrapeAs('gzip');
    const plain = await scrapeAs(null);
    expect(plain.encoding).toBeUndefined();
    expect(gaugeLines(after.text, ids)).toEqual(gaugeLines(plain.text, ids));
    // Every gauge of an idle item is still there (7 or 8 lines each), and true.
    expect(gaugeLines(after.text, ids).length).toBeGreaterThanOrEqual(7 * ids.length);
    expect(sample(after.text, 'floodgate_line_waiting', 'item="idle-3"')).toBe(0);
    expect(sample(after.text, 'floodgate_stock_remaining', 'item="idle-3"')).toBe(10);
    // The items' text grew the body by ~370 bytes each; compressed, by ~25 (the rest of the
    // scrape grew too: the PUTs' latency histogram).
    expect(plain.wire - before.text.length).toBeGreaterThan(300 * ids.length);
    expect((after.wire - before.wire) / ids.length).toBeLessThan(60);
  });

  it('shows an idle item that gets tickets with its new line in the next gzipped scrapes, as in the plain ones', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `wakes-${i}`);
    for (const id of ids) await define(id, { handler: 'external', gate: { mode: 'closed' } });
    const idle = await waitFor(() => scrapeAs('gzip'), (s) => sample(s.text, 'floodgate_line_waiting', 'item="wakes-7"') === 0);
    expect(sample(idle.text, 'floodgate_line_waiting', 'item="wakes-7"')).toBe(0);
    // Scraped again while nothing changed (the items' compressed part is then the one kept).
    expect(gaugeLines((await scrapeAs('gzip')).text, ids)).toEqual(gaugeLines(idle.text, ids));
    for (const userId of ['u1', 'u2']) expect((await call('POST', '/v1/items/wakes-7/tickets', { userId }, SVC)).status).toBe(202);
    const woke = await waitFor(() => scrapeAs('gzip'), (s) => sample(s.text, 'floodgate_line_waiting', 'item="wakes-7"') === 2, 15_000);
    expect(woke.encoding).toBe('gzip');
    expect(sample(woke.text, 'floodgate_line_waiting', 'item="wakes-7"')).toBe(2);
    expect(sample(woke.text, 'floodgate_line_waiting', 'item="wakes-8"')).toBe(0);
    expect(sample((await scrapeAs(null)).text, 'floodgate_line_waiting', 'item="wakes-7"')).toBe(2);
  });

  it('serves item gauges from the views the daemon holds, without reading every item from Redis per scrape', async () => {
    const ids = Array.from({ length: 20 }, (_, i) => `many-${i}`);
    for (const id of ids) await call('PUT', `/v1/items/${id}`, { handler: 'external' });
    await scrape(); // loads any item the daemon has not seen yet
    // HGETALL calls on the daemon's own Redis (an item read is a MULTI of three).
    const counter = new Redis(own.url);
    const hgetalls = async () => Number(/cmdstat_hgetall:calls=(\d+)/.exec(await counter.info('commandstats'))?.[1] ?? 0);
    try {
      const before = await hgetalls();
      const scrapes = 10;
      for (let i = 0; i < scrapes; i++) expect(sample(await scrape(), 'floodgate_gate_mode', `item="${ids[i]}",mode="auto"`)).toBe(1);
      // A daemon that re-read each item per scrape makes 20 × 10 × 3 = 600; its own cache refreshes
      // are at most one per item per FLOODGATE_CACHE_MS (5 s).
      expect((await hgetalls()) - before).toBeLessThan(ids.length * 3 * 3);
    } finally {
      counter.disconnect();
    }
  });

  it("still shows the items while Redis cannot be read, and says they are the last ones read", { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/away-1', { handler: 'seckill', config: { stock: 5 } });
    const read = (text: string) => text.split('\n').find((l) => l.startsWith('floodgate_item_gauges_read '));
    await waitFor(scrape, (t) => t.includes('{item="away-1"') && read(t) === 'floodgate_item_gauges_read 1');
    await own.kill();
    try {
      // Answered 200 with the gauges last read (they were missing: "no data" for every item), and a 0.
      const during = await waitFor(scrape, (t) => read(t) === 'floodgate_item_gauges_read 0', 30_000);
      expect(during).toContain('floodgate_stock_remaining{item="away-1"} 5');
    } finally {
      await own.start();
    }
    await waitFor(scrape, (t) => read(t) === 'floodgate_item_gauges_read 1', 30_000);
  });
});

