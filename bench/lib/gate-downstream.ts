/**
 * The `gate` bench's simulated downstream business service, run as its own process (so its timers
 * do not share an event loop with the bench or the daemon).
 *
 * Capacity: K workers; a call waits in a FIFO backlog until a worker is free, then takes
 * s = s0 × (1 + backlog/(slowPerK·K)) × U(0.8, 1.2) ms (the backlog when its service starts:
 * an overloaded service gets slower, so its throughput collapses as the backlog grows), and is
 * answered 200. A call arriving when the backlog already holds boundPerK·K calls gets 503 at once.
 * Nominal capacity C = K / s0. K changes on a schedule given at the start of a run.
 *
 * HTTP: `POST /` (any path outside /_ctl) is a call. `POST /_ctl/run {k0, s0Ms, steps: [{atMs, k}]}`
 * resets the recording and starts a run now; `POST /_ctl/k {k}` sets K at once; `GET /_ctl/state`;
 * `GET /_ctl/series` answers the run's 100 ms buckets. `GET /healthz`.
 *
 * Per 100 ms bucket: calls arrived, completions (200), 503s, calls the caller gave up on while still
 * waiting, time flooded (backlog > K, time-weighted, ms), the backlog and in-service count sampled at
 * the bucket's tick and the backlog's maximum, the p50/p99 latency (arrival → answer) of the calls
 * answered 200 in it, and K.
 */
import http from 'node:http';
import type { BucketCounts } from './gate-bucket.js';

const port = Number(process.env.PORT ?? 0);
const BUCKET_MS = 100;
const slowPerK = Number(process.env.GATE_DS_SLOW_PER_K ?? 4);
const boundPerK = Number(process.env.GATE_DS_BOUND_PER_K ?? 4);

interface Call {
  res: http.ServerResponse;
  arrivedAt: number;
  gone: boolean;
}

interface Bucket extends BucketCounts {
  lat: number[];
}

let k = Number(process.env.GATE_DS_K ?? 20);
let s0Ms = Number(process.env.GATE_DS_S0_MS ?? 50);
let inService = 0;
/** FIFO with a moving head (shift() on a long array is O(n)). */
let backlog: Call[] = [];
let head = 0;
const backlogLen = () => backlog.length - head;

let startedAt = performance.now();
let startedAtEpoch = Date.now();
let buckets: Bucket[] = [];
let timers: NodeJS.Timeout[] = [];
let lastAccount = performance.now();
let zombies = 0;

const newBucket = (): Bucket => ({ arrivals: 0, ok: 0, e503: 0, abandoned: 0, floodedMs: 0, backlog: 0, backlogMax: 0, inService: 0, k, lat: [] });
function bucketAt(t: number): Bucket {
  const i = Math.max(0, Math.floor((t - startedAt) / BUCKET_MS));
  while (buckets.length <= i) buckets.push(newBucket());
  return buckets[i];
}

/** Adds the time since the last change to the buckets it spans, if the backlog exceeded K meanwhile. */
function account(now: number) {
  if (backlogLen() > k && now > lastAccount) {
    // By bucket index (a loop on float boundaries can fail to advance when start + i·100 rounds to t).
    const from = Math.max(lastAccount, startedAt);
    const i0 = Math.max(0, Math.floor((from - startedAt) / BUCKET_MS));
    const i1 = Math.max(0, Math.floor((now - startedAt) / BUCKET_MS));
    for (let i = i0; i <= i1; i++) {
      const span = Math.min(now, startedAt + (i + 1) * BUCKET_MS) - Math.max(from, startedAt + i * BUCKET_MS);
      if (span > 0) bucketAt(startedAt + i * BUCKET_MS + BUCKET_MS / 2).floodedMs += span;
    }
  }
  lastAccount = now;
}

function startService(call: Call) {
  inService++;
  const s = s0Ms * (1 + backlogLen() / (slowPerK * k)) * (0.8 + 0.4 * Math.random());
  setTimeout(() => {
    inService--;
    const now = performance.now();
    if (!call.gone) {
      const b = bucketAt(now);
      b.ok++;
      b.lat.push(now - call.arrivedAt);
      call.res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    } else zombies++;
    pump();
  }, s);
}

/** Starts waiting calls while workers are free. */
function pump() {
  const now = performance.now();
  while (inService < k && backlogLen() > 0) {
    account(now);
    const call = backlog[head++];
    if (head > 4096 && head * 2 > backlog.length) {
      backlog = backlog.slice(head);
      head = 0;
    }
    if (call.gone) continue;
    startService(call);
  }
  account(now);
}

function setK(next: number) {
  account(performance.now());
  k = Math.max(1, Math.round(next));
  pump();
}

function onCall(req: http.IncomingMessage, res: http.ServerResponse) {
  req.resume();
  const now = performance.now();
  const b = bucketAt(now);
  b.arrivals++;
  if (inService >= k && backlogLen() >= boundPerK * k) {
    b.e503++;
    res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"overloaded"}');
    return;
  }
  const call: Call = { res, arrivedAt: now, gone: false };
  res.on('close', () => {
    if (!res.writableEnded && !call.gone) {
      call.gone = true;
      bucketAt(performance.now()).abandoned++;
    }
  });
  if (inService < k) startService(call);
  else {
    account(now);
    backlog.push(call);
    const bb = bucketAt(now);
    bb.backlogMax = Math.max(bb.backlogMax, backlogLen());
  }
}

setInterval(() => {
  const now = performance.now();
  account(now);
  const b = bucketAt(now);
  b.backlog = backlogLen();
  b.inService = inService;
  b.k = k;
  b.backlogMax = Math.max(b.backlogMax, backlogLen());
}, BUCKET_MS).unref();

function quantile(xs: number[], q: number): number | null {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

async function body(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  let text = '';
  for await (const chunk of req) text += chunk;
  return text ? (JSON.parse(text) as Record<string, unknown>) : {};
}

function json(res: http.ServerResponse, status: number, value: unknown) {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value));
}

const server = http.createServer((req, res) => {
  const url = req.url ?? '/';
  if (!url.startsWith('/_ctl') && url !== '/healthz') return onCall(req, res);
  void (async () => {
    if (url === '/healthz') return json(res, 200, { ok: true });
    if (url === '/_ctl/run' && req.method === 'POST') {
      const b = await body(req);
      for (const t of timers) clearTimeout(t);
      timers = [];
      s0Ms = Number(b.s0Ms ?? s0Ms);
      account(performance.now());
      startedAt = performance.now();
      startedAtEpoch = Date.now();
      lastAccount = startedAt;
      buckets = [];
      zombies = 0;
      setK(Number(b.k0 ?? k));
      for (const st of (b.steps as { atMs: number; k: number }[] | undefined) ?? []) timers.push(setTimeout(() => setK(st.k), st.atMs));
      return json(res, 200, { startedAtEpoch, k, s0Ms });
    }
    if (url === '/_ctl/k' && req.method === 'POST') {
      setK(Number((await body(req)).k));
      return json(res, 200, { k });
    }
    if (url === '/_ctl/state') return json(res, 200, { k, s0Ms, inService, backlog: backlogLen(), zombies });
    if (url === '/_ctl/series') {
      return json(res, 200, {
        startedAtEpoch,
        bucketMs: BUCKET_MS,
        s0Ms,
        zombies,
        buckets: buckets.map(({ lat, ...b }) => ({ ...b, p50: quantile(lat, 0.5), p99: quantile(lat, 0.99) })),
      });
    }
    json(res, 404, { error: 'not found' });
  })().catch((err) => json(res, 500, { error: String(err) }));
});
server.keepAliveTimeout = 60_000;
server.headersTimeout = 65_000;
server.maxRequestsPerSocket = 0;
server.listen(port, '127.0.0.1', () => {
  console.log(JSON.stringify({ level: 30, msg: 'gate downstream listening', port, k, s0Ms }));
});
process.on('SIGTERM', () => process.exit(0));
