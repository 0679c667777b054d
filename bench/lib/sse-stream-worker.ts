/**
 * One worker thread of a stream fleet (sse-streams.ts): opens streams, reads them, reports.
 *
 * Each stream is a raw TCP socket with a hand-written GET and no HTTP parser: the reader stands in
 * for 20,000 browsers on other machines, and on this 2-core machine every cycle it spends is taken
 * from the daemon it measures. node:http's client (an IncomingMessage, a parser and a stream per
 * response) cost more than twice the CPU (0.58 cores against 0.25 while the line moved). The
 * daemon writes each event whole (one write each), so looking for markers per TCP read is enough;
 * a response that is not a 200 counts as a failed stream.
 */
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import type { StreamEnd } from './sse-streams.js';

const EVENT = Buffer.from('event: ticket');
const STATE = Buffer.from('"state":"');
const ADMITTED_AT = Buffer.from('"admittedAt":"');
const TERMINAL = new Set(['succeeded', 'rejected', 'failed', 'cancelled', 'expired']);
const base = new URL((workerData as { base: string }).base);
const port = Number(base.port);
const host = base.hostname;
const streams: StreamEnd[] = [];
let firsts = 0;
const ended: Record<string, number> = {};

/** The `"state":"…"` values in a read, in order. */
function statesIn(buf: Buffer): string[] {
  const out: string[] = [];
  for (let at = buf.indexOf(STATE); at >= 0; at = buf.indexOf(STATE, at + 1)) {
    const from = at + STATE.length;
    const to = buf.indexOf(0x22, from);
    if (to > 0) out.push(buf.toString('latin1', from, to));
  }
  return out;
}

function openStream(ticketId: string, onFirst: () => void) {
  const s: StreamEnd = { endAt: null, endState: null, admitted: false, events: 0, closed: false };
  let first = true;
  let head = true;
  const firstDone = () => {
    if (!first) return;
    first = false;
    onFirst();
  };
  const sock = net.connect(port, host);
  sock.setNoDelay(true);
  sock.write(`GET /v1/tickets/${ticketId}/events HTTP/1.1\r\nHost: ${host}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n`);
  sock.on('data', (buf: Buffer) => {
    if (head) {
      head = false;
      // 'HTTP/1.1 200 ': anything else is a refused stream.
      if (buf[9] !== 0x32 || buf[10] !== 0x30 || buf[11] !== 0x30) return void sock.destroy(), (s.closed = true), firstDone();
    }
    let i = -1;
    while ((i = buf.indexOf(EVENT, i + 1)) >= 0) {
      s.events++;
      if (first) {
        firsts++;
        firstDone();
      }
    }
    if (s.endAt !== null) return;
    for (const state of statesIn(buf)) {
      if (!TERMINAL.has(state)) continue;
      s.endAt = performance.timeOrigin + performance.now();
      s.endState = state;
      s.admitted = buf.includes(ADMITTED_AT);
      ended[state] = (ended[state] ?? 0) + 1;
      break;
    }
  });
  sock.on('close', () => {
    s.closed = true;
    firstDone();
  });
  sock.on('error', () => {});
  streams.push(s);
}

setInterval(() => parentPort!.postMessage({ kind: 'progress', firsts, ended }), 50);

parentPort!.on('message', (m: { kind: string; req: number; data?: unknown }) => {
  if (m.kind === 'open') {
    const ids = m.data as string[];
    let left = ids.length;
    // The answer carries the counts, so the caller never reads an older progress report.
    const done = () => parentPort!.postMessage({ kind: 'done', req: m.req, firsts, ended });
    if (!left) return done();
    for (const id of ids)
      openStream(id, () => {
        if (--left === 0) done();
      });
  } else if (m.kind === 'results') parentPort!.postMessage({ kind: 'done', req: m.req, data: streams });
});
