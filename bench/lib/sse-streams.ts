/** Many open ticket event streams from this process (plain node:http, one socket each). */
import http from 'node:http';

export interface Stream {
  events: number;
  firstAt: number | null;
  /** When the terminal view arrived (ms, performance.now()), and which state it was. */
  endAt: number | null;
  endState: string | null;
  closed: boolean;
}

const TERMINAL = /"state":"(succeeded|rejected|failed|cancelled|expired)"/;

export function openStream(base: string, ticketId: string, onFirst: () => void): Stream {
  const s: Stream = { events: 0, firstAt: null, endAt: null, endState: null, closed: false };
  const req = http.get(`${base}/v1/tickets/${ticketId}/events`, { agent: false }, (res) => {
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => {
      // Events are small and written whole: counting 'event: ticket' per chunk is enough here.
      let i = -1;
      while ((i = chunk.indexOf('event: ticket', i + 1)) >= 0) {
        s.events++;
        if (s.firstAt === null) {
          s.firstAt = performance.now();
          onFirst();
        }
      }
      const m = TERMINAL.exec(chunk);
      if (m && s.endAt === null) {
        s.endAt = performance.now();
        s.endState = m[1];
      }
    });
    res.on('end', () => (s.closed = true));
  });
  req.on('error', () => (s.closed = true));
  return s;
}
