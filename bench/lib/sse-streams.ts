/**
 * Many open ticket event streams read by worker threads (each its own event loop; a raw socket per
 * stream, sse-stream-worker.ts). One thread by default: on this 2-core machine more readers take CPU from
 * the daemon during the sell-out's fan-out (1 reader: 0.73-1.05 s to the last stream; 2 or 4:
 * 1.5-2.1 s in the same conditions); on a machine with spare cores, BENCH_READERS spreads them.
 * The open-file limit is per process, so the threads share it.
 */
import { Worker } from 'node:worker_threads';

export interface StreamEnd {
  /** Wall-clock ms (performance.timeOrigin + now) when the terminal view arrived, or null. */
  endAt: number | null;
  endState: string | null;
  /** Whether the terminal view says the ticket was admitted (admittedAt) before it ended. */
  admitted: boolean;
  events: number;
  closed: boolean;
}

export interface StreamFleet {
  /** Streams whose first event has arrived (updated as the workers report). */
  firsts(): number;
  /** Streams that saw a terminal view so far, by state. */
  ended(state?: string): number;
  /** Opens the streams of these ticket ids (split over the workers) and resolves when each has its first event or failed. */
  open(ids: string[]): Promise<void>;
  /** Every stream's end, in the order opened. */
  results(): Promise<StreamEnd[]>;
  close(): Promise<void>;
}

export function streamFleet(base: string, threads: number): StreamFleet {
  const workers = Array.from({ length: threads }, () => new Worker(new URL('./ts-worker.mjs', import.meta.url), { workerData: { base, entry: new URL('./sse-stream-worker.ts', import.meta.url).href } }));
  const firsts = new Array<number>(threads).fill(0);
  const ends = workers.map(() => new Map<string, number>());
  const waiters = new Map<number, (v: unknown) => void>();
  let nextReq = 0;
  workers.forEach((w, i) =>
    w.on('message', (m: { kind: string; firsts?: number; ended?: Record<string, number>; req?: number; data?: unknown }) => {
      if (m.firsts !== undefined) firsts[i] = m.firsts;
      if (m.ended !== undefined) ends[i] = new Map(Object.entries(m.ended));
      if (m.req !== undefined) {
        waiters.get(m.req)?.(m.data);
        waiters.delete(m.req);
      }
    }),
  );
  const ask = (w: Worker, kind: string, data?: unknown) =>
    new Promise<unknown>((resolve) => {
      const req = nextReq++;
      waiters.set(req, resolve);
      w.postMessage({ kind, req, data });
    });
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  return {
    firsts: () => sum(firsts),
    ended: (state) => sum(ends.map((m) => (state ? (m.get(state) ?? 0) : sum([...m.values()])))),
    async open(ids) {
      await Promise.all(workers.map((w, i) => ask(w, 'open', ids.filter((_, k) => k % threads === i))));
    },
    async results() {
      const parts = (await Promise.all(workers.map((w) => ask(w, 'results')))) as StreamEnd[][];
      return parts.flat();
    },
    async close() {
      await Promise.all(workers.map((w) => w.terminate()));
    },
  };
}
