import type { ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { itemKeys } from '../src/redis/keys.js';
import { recordingDownstream } from './support/downstream.js';
import { inProcessDaemon, SVC, waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { retrying503 } from './support/joins.js';
import { createMetrics, forgetItems } from '../src/kernel/metrics.js';
import { testRedis } from './support/redis.js';

const { redis, newPrefix } = testRedis();
const prefix = newPrefix();
const db = await testDb();
const { call: callOnce, daemon } = await inProcessDaemon({ prefix, databaseUrl: db.url });
const call = retrying503(callOnce);
const held: ServerResponse[] = [];
let holding = true;
const { url } = await recordingDownstream((_req, res) => {
  if (holding) held.push(res);
  else res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
});
const release = () => {
  holding = false;
  for (const r of held.splice(0)) r.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
};

async function gauge(name: string, itemId: string): Promise<number | null> {
  const text = await (await fetch(`${daemon.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{item="${itemId}"}`));
  return line ? Number(line.split(' ').pop()) : null;
}

/**
 * Three tickets of a webhook item in flight (their calls held), then `leave` (this daemon stops
 * driving the item's gate), then the calls answered: the gauges once the line is empty and the
 * controller has ticked again. `seen`: the in-flight count shown before.
 */
async function inFlightAfter(id: string, leave: () => Promise<void>) {
  holding = true;
  expect((await call('PUT', `/v1/items/${id}`, { handler: 'webhook', config: { url, timeoutMs: 30_000 } })).status).toBe(201);
  for (let i = 0; i < 3; i++) await call('POST', `/v1/items/${id}/tickets`, { userId: `${id}-u${i}` }, SVC);
  const seen = await waitFor(() => gauge('floodgate_gate_in_flight', id), (v) => v !== null && v >= 3, 15_000);
  await leave();
  await new Promise((r) => setTimeout(r, 300));
  release();
  await waitFor(() => gauge('floodgate_line_admitted', id), (v) => v === 0, 15_000);
  // (The controller's next ticks: a few hundred ms; its last count stood for good before.)
  const inFlight = await waitFor(() => gauge('floodgate_gate_in_flight', id), (v) => v === null, 5_000);
  return { seen, admitted: await gauge('floodgate_line_admitted', id), inFlight };
}

/** Per-item series this daemon no longer has the right to show: an in-flight count of a gate it no longer drives, the series of removed items. */
describe('gate_in_flight on a daemon that lost the lead', () => {
  it('is not shown once another daemon leads', { timeout: 60_000 }, async () => {
    // Another daemon takes the item's controller (its lease): this one's ticks stop publishing.
    const { seen, admitted, inFlight } = await inFlightAfter('gif-1', async () => void (await redis.set(itemKeys(prefix, 'gif-1').leader, 'another-daemon', 'PX', 120_000)));
    expect(seen).toBe(3);
    // Not this daemon's to show: the series goes (its last count, 3, stood for good).
    expect({ admitted, inFlight }).toEqual({ admitted: 0, inFlight: null });
  });

  it('is not shown once the gate is closed (the controller no longer drives it)', { timeout: 60_000 }, async () => {
    const { seen, admitted, inFlight } = await inFlightAfter('gif-2', async () => {
      expect((await call('PATCH', '/v1/items/gif-2/gate', { mode: 'closed' })).status).toBe(200);
    });
    expect(seen).toBe(3);
    // Not this daemon's to show: the series goes (its last count, 3, stood for good).
    expect({ admitted, inFlight }).toEqual({ admitted: 0, inFlight: null });
  });
});

describe('the series of items no longer defined', () => {
  it('are dropped once an item is missing from two passes in a row, and kept while it is defined', async () => {
    const m = createMetrics();
    m.joins.inc({ item: 'gone', result: 'created' });
    m.waitSeconds.observe({ item: 'gone' }, 0.5);
    m.joins.inc({ item: 'kept', result: 'created' });
    m.rejections.inc({ code: 'not_found', item: '' });
    const items = new Set(['kept']);
    const series = async () => (await m.registry.getMetricsAsJSON()).flatMap((x) => x.values.map((v) => `${x.name}:${v.labels.item ?? ''}`)).filter((s) => s.includes(':gone') || s.includes(':kept'));
    let missingBefore = new Set<string>();
    const pass = async () => {
      const missing = new Set<string>();
      await forgetItems(m.registry, (id) => items.has(id) || (missing.add(id), !missingBefore.has(id)));
      missingBefore = missing;
    };
    await pass();
    expect((await series()).some((s) => s.endsWith(':gone'))).toBe(true);
    await pass();
    const left = await series();
    expect(left.filter((s) => s.endsWith(':gone'))).toEqual([]);
    expect(left).toContain('floodgate_joins_total:kept');
  });
});
