/**
 * Fails a test file that leaves something running when it ends: a socket or a server (a Redis or
 * Postgres connection, an HTTP server, a daemon's port), a child process, a worker — compared in
 * the event loop's active resources (process.getActiveResourcesInfo()) after the file's own
 * afterAll hooks with those before the file's first line ran — and a timer the file started that
 * still holds the process (tracked by wrapping the global timer functions: under vitest the
 * active resources do not count timers reliably, a leaked interval went unseen). A vitest setup
 * file: its afterAll is registered first, so it runs last. Workers keep their modules from file to
 * file (isolate: false), so a leak would outlive its file: this is where it must be caught.
 */
import { afterAll } from 'vitest';

/**
 * Timers started (and neither cleared nor fired) since the current file began, and where they
 * were made: a captured stack, formatted only if the timer is reported. Formatting it when the
 * timer is made (vitest maps every frame through source maps) cost ~13% of a worker's CPU in a
 * cluster test, where the in-process daemons set a timer for nearly every Redis command.
 */
interface TimerTrack {
  live: Map<NodeJS.Timeout, Site>;
}
/** The frames of a timer's caller, captured by V8 and not formatted until `stack` is read. */
type Site = { stack?: string };
const SITE_FRAMES = 3;
/** The stack of the code that called `fn` (fn's own frame and those above it left out), unformatted. */
function siteOf(fn: Function): Site {
  const site: Site = {};
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = SITE_FRAMES;
  Error.captureStackTrace(site, fn);
  Error.stackTraceLimit = limit;
  return site;
}
/** The caller's frames on one line, as a report shows them. */
function formatSite(site: Site): string {
  return (site.stack ?? '').split('\n').slice(1).map((l) => l.trim()).join(' < ');
}
const TRACK = Symbol.for('floodgate.test.timers');
const g = globalThis as typeof globalThis & { [TRACK]?: TimerTrack };
if (!g[TRACK]) {
  const track: TimerTrack = { live: new Map() };
  const { setTimeout: st, setInterval: si, clearTimeout: ct, clearInterval: ci } = globalThis;
  const forget = (h: unknown) => {
    if (h && typeof h === 'object') track.live.delete(h as NodeJS.Timeout);
  };
  const setTimeoutTracked = (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    const live = track.live; // the file that started it, even if it fires in the next
    const h: NodeJS.Timeout = st((...a: unknown[]) => {
      live.delete(h);
      fn(...a);
    }, ms, ...args);
    live.set(h, siteOf(setTimeoutTracked));
    return h;
  };
  globalThis.setTimeout = Object.assign(setTimeoutTracked as typeof setTimeout, st);
  const setIntervalTracked = (fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    const h = si(fn, ms, ...args);
    track.live.set(h, siteOf(setIntervalTracked));
    return h;
  };
  globalThis.setInterval = setIntervalTracked as typeof setInterval;
  globalThis.clearTimeout = ((h?: NodeJS.Timeout | string | number) => (forget(h), ct(h))) as typeof clearTimeout;
  globalThis.clearInterval = ((h?: NodeJS.Timeout | string | number) => (forget(h), ci(h))) as typeof clearInterval;
  g[TRACK] = track;
}
const timers = g[TRACK]!;
timers.live = new Map();
const fileTimers = timers.live;


function count(): Map<string, number> {
  const m = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) m.set(kind, (m.get(kind) ?? 0) + 1);
  return m;
}

const before = count();
/** vitest's own IPC and stdio pipes; timers are counted by the tracking above (vitest's own are not tracked: it keeps the real functions). */
const OWN = { pipes: new Set(['PipeWrap', 'TTYWrap']) };
/**
 * How long what is left may take to go: ioredis's disconnect() of a connection still connecting
 * (the store probes' at a start) arms a 2 s timer to destroy the socket, which is not ours to clear;
 * a closed Chromium or a stopped child takes seconds to exit on a loaded machine (a browser test
 * failed so with the load at 7 on 2 cores). A real leak stays: waiting costs only files that have one.
 */
const SETTLE_MS = 10_000;

function leftOver(): string[] {
  const out: string[] = [];
  const held = [...fileTimers].filter(([h]) => !(h as unknown as { _destroyed?: boolean })._destroyed && h.hasRef());
  if (held.length) out.push(`${held.length} × timer (${held.slice(0, 3).map(([, at]) => formatSite(at)).join('; ')})`);
  for (const [kind, n] of count()) {
    if (OWN.pipes.has(kind) || kind === 'Timeout') continue;
    const extra = n - (before.get(kind) ?? 0);
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
