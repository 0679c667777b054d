/**
 * Fails a test file that leaves something running when it ends: a socket or a server (a Redis or
 * Postgres connection, an HTTP server, a daemon's port), a child process, a timer that keeps the
 * process alive, a worker. It compares the event loop's active resources
 * (process.getActiveResourcesInfo()) after the file's own afterAll hooks with those before the
 * file's first line ran. A vitest setup file: its afterAll is registered first, so it runs last.
 */
import { afterAll } from 'vitest';

function count(): Map<string, number> {
  const m = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) m.set(kind, (m.get(kind) ?? 0) + 1);
  return m;
}

const before = count();
/** vitest's own IPC and stdio pipes, and the timer that bounds the very hook this check runs in. */
const OWN = { pipes: new Set(['PipeWrap', 'TTYWrap']), hookTimers: 1 };
/**
 * How long what is left may take to go: ioredis's disconnect() of a connection still connecting
 * (the store probes' at a start) arms a 2 s timer to destroy the socket, which is not ours to clear;
 * a closed Chromium or a stopped child takes seconds to exit on a loaded machine (a browser test
 * failed so with the load at 7 on 2 cores). A real leak stays: waiting costs only files that have one.
 */
const SETTLE_MS = 10_000;

function leftOver(): string[] {
  const out: string[] = [];
  for (const [kind, n] of count()) {
    if (OWN.pipes.has(kind)) continue;
    const extra = n - (before.get(kind) ?? 0) - (kind === 'Timeout' ? OWN.hookTimers : 0);
    if (extra > 0) out.push(`${extra} × ${kind}`);
  }
  return out;
}

afterAll(async () => {
  // A socket closed or a child killed by the file's last hook is gone a few event-loop turns
  // later, and nothing signals when: look again, for up to SETTLE_MS.
  let left = leftOver();
  for (const until = Date.now() + SETTLE_MS; left.length && Date.now() < until; left = leftOver()) await new Promise((r) => setTimeout(r, 20));
  if (left.length) throw new Error(`the test file left running: ${left.join(', ')} (process.getActiveResourcesInfo(); see test/support/leak-check.ts)`);
});
