/** One worker thread of a stream fleet (sse-streams.ts): opens streams, reads them, reports. */
import http from 'node:http';
import { parentPort, workerData } from 'node:worker_threads';
import type { StreamEnd } from './sse-streams.js';

const TERMINAL = /"state":"(succeeded|rejected|failed|cancelled|expired)"/;
const base = (workerData as { base: string }).base;
const streams: StreamEnd[] = [];
let firsts = 0;
const ended: Record<string, number> = {};

function openStream(ticketId: string, onFirst: () => void) {
  const s: StreamEnd = { endAt: null, endState: null, events: 0, closed: false };
  let first = true;
  const req = http.get(`${base}/v1/tickets/${ticketId}/events`, { agent: false }, (res) => {
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      // Events are small and written whole: counting 'event: ticket' per chunk is enough here.
      let i = -1;
      while ((i = chunk.indexOf('event: ticket', i + 1)) >= 0) {
        s.events++;
        if (first) {
          first = false;
          firsts++;
          onFirst();
        }
      }
      const m = s.endAt === null ? TERMINAL.exec(chunk) : null;
      if (m) {
        s.endAt = performance.timeOrigin + performance.now();
        s.endState = m[1];
        ended[m[1]] = (ended[m[1]] ?? 0) + 1;
      }
    });
    res.on('end', () => (s.closed = true));
  });
  req.on('error', () => {
    s.closed = true;
    if (first) {
      first = false;
      onFirst();
    }
  });
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
