/**
 * A sale's figures from its load and its facts: rates (orders/s over the flood and the whole
 * sale), answers by kind, the seed users' second joins compared with their first, latency over
 * both passes, the gate as seen, and the timelines the report prints.
 */
import { readFile } from 'node:fs/promises';
import { sumCounts, fmtInt, percentile } from '../../lib/stats.js';
import type { SaleFacts } from './sale-facts.js';
import type { SaleLoad } from './sale-load.js';
import { STOCK } from './settings.js';

export type SaleAnalysis = Awaited<ReturnType<typeof analyseSale>>;

export async function analyseSale(load: SaleLoad, facts: SaleFacts) {
  const { join1, join2, seed1, seed2, seedIds, gate } = load;
  const o = facts.orders;
  const statusOf = (rs: { status: number }[]) => sumCounts(...rs.map((r) => ({ [String(r.status)]: 1 })));
  const seedStatus1 = statusOf(seed1);
  const seedStatus2 = statusOf(seed2);
  const pass1 = sumCounts(seedStatus1, join1.status);
  const pass2 = sumCounts(seedStatus2, join2.status);
  const polls = sumCounts(load.poll1?.status, load.poll2?.status);

  // The seed users' second join must name the same ticket (200), or be 410 when the first did not succeed.
  let sameTicket = 0;
  let otherTicket = 0;
  let seedBadState = 0;
  seed2.forEach((r, i) => {
    const first = seed1[i].body.ticketId;
    if (r.status === 200 || r.status === 202) {
      if (r.body.ticketId === first && r.status === 200) sameTicket++;
      else otherTicket++;
    } else if (r.status === 410) {
      const fv = facts.seedViews[seedIds.indexOf(first as string)];
      if (fv && fv.body.state === 'succeeded') seedBadState++;
    } else seedBadState++;
  });
  const orderMismatch = [...facts.seedOrders].filter(([t, id]) => !facts.seedOrderRows.some((r) => r.ticket_id === t && r.id === id)).length;

  const floodS = o.last ? (o.last.getTime() - facts.floodStart.getTime()) / 1000 : NaN;
  const lats = await Promise.all(['join1', 'join2', 'poll1', 'poll2'].map((n) => readLat(load.latFile(n))));
  return {
    seedStatus1,
    seedStatus2,
    pass1,
    pass2,
    accepted: (pass1['202'] ?? 0) + (pass2['202'] ?? 0),
    ticketsAtServer: Object.values(load.view.counts).reduce((a, b) => a + b, 0),
    ordersPerS: o.first && o.last && o.last > o.first ? o.n / ((o.last.getTime() - o.first.getTime()) / 1000) : NaN,
    floodS,
    floodOrdersPerS: floodS > 0 ? o.flood / floodS : NaN,
    sellOutS: o.last ? (o.last.getTime() - load.t0.getTime()) / 1000 : NaN,
    unexpectedJoin: Object.entries(sumCounts(pass1, pass2)).filter(([c]) => !['200', '202', '410'].includes(c)),
    unexpectedPoll: Object.entries(polls).filter(([c]) => c !== '200'),
    fiveXX: Object.entries(sumCounts(pass1, pass2, polls)).reduce((n, [c, k]) => (c.startsWith('5') ? n + k : n), 0),
    connErrors: [join1, join2, load.poll1, load.poll2].reduce((n, r) => n + (r ? r.errors + r.timeouts : 0), 0),
    status410: (pass1['410'] ?? 0) + (pass2['410'] ?? 0),
    sameTicket,
    otherTicket,
    seedBadState,
    orderMismatch,
    joinP99: mergedP99(lats[0], lats[1]),
    pollP99: mergedP99(lats[2], lats[3]),
    joinsPerS: (join1.requests + join2.requests) / (join1.durationS + join2.durationS),
    gateSeen: gateSeen(load, gate),
    timeline: timelinePoints(load),
    floodSteps: facts.halves.map((x) => `${(x.h / 2).toFixed(1)}–${(x.h / 2 + 0.5).toFixed(1)} s: ${fmtInt(x.orders * 2)} orders/s, ${fmtInt(x.joins * 2)} new tickets/s`),
  };
}

function gateSeen(load: SaleLoad, gate: SaleLoad['gate']): string {
  const ctl = load.lastOpen?.gate.controller;
  return gate.mode === 'auto'
    ? `largest in-flight cap seen while open: ${load.maxCap || 'n/a'}; last view before the sell-out: effective ${JSON.stringify(load.lastOpen?.gate.effective ?? null)}${ctl ? `, controller limit ${ctl.limit}, base ${ctl.baseMs} ms, p50 ${ctl.p50Ms} ms, p99 ${ctl.p99Ms} ms` : ''}`
    : `manual, maxInFlight ${gate.maxInFlight}${ctl ? `; the controller (in shadow) said limit ${ctl.limit}, p50 ${ctl.p50Ms} ms, p99 ${ctl.p99Ms} ms` : ''}`;
}

/** Orders over time as the item view counted them: one point per second until the sell-out. */
function timelinePoints({ watched: timeline }: SaleLoad): string[] {
  const points: string[] = [];
  let prev = { s: 0, succeeded: 0 };
  for (const p of timeline) {
    if (p.s - prev.s < 1 && p !== timeline.at(-1)) continue;
    if (prev.succeeded >= STOCK) break;
    points.push(`${p.s.toFixed(1)} s: ${fmtInt(p.succeeded)} (+${fmtInt((p.succeeded - prev.succeeded) / (p.s - prev.s))}/s, ${fmtInt(p.waiting)} waiting, ${fmtInt(p.admitted)} admitted, cap ${p.cap ?? '–'})`);
    prev = p;
  }
  return points;
}

async function readLat(file: string): Promise<Float64Array> {
  try {
    const buf = await readFile(file);
    return new Float64Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  } catch {
    return new Float64Array(0);
  }
}

function mergedP99(...lats: Float64Array[]): number {
  const all = new Float64Array(lats.reduce((n, l) => n + l.length, 0));
  let off = 0;
  for (const l of lats) {
    all.set(l, off);
    off += l.length;
  }
  return percentile(all.sort(), 0.99);
}
