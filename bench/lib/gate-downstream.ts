/**
 * The `gate` bench's simulated downstream, run as its own process (its timers share no event loop
 * with the bench or the daemon): a member of the family in bench/lib/gate-family.ts — the same
 * model the simulation test drives — over real HTTP. K workers (stepping, drifting) and a FIFO
 * backlog; a call that gets a worker takes the member's service time (thrashing, noise, cold
 * start, latency floor), then is answered 200; a call arriving past the member's backlog bound is
 * answered 503 at once, or, for the member that times out, never answered.
 *
 * HTTP: `POST /` (any path outside /_ctl) is a call. `POST /_ctl/run {member}` resets the
 * recording and starts that member's schedule now; `GET /_ctl/state`; `GET /_ctl/series` answers
 * the run's 100 ms buckets: calls arrived, 200s, 503s, calls the caller gave up on, ms flooded
 * (backlog > K, time-weighted), backlog and calls in service at the bucket's tick, K, the true
 * capacity (calls/s), and the p50/p99 latency (arrival → answer) of its 200s. `GET /healthz`.
 */
import http from 'node:http';
import type { BucketCounts } from './gate-bucket.js';
import { capacityAt, capacityPerS, FAMILY, onArrival, rng, serviceTime, type Downstream } from './gate-family.js';

const port = Number(process.env.PORT ?? 0);
const BUCKET_MS = 100;

interface Call {
  res: http.ServerResponse;
  arrivedAt: number;
  gone: boolean;
}

interface Bucket extends BucketCounts {
  lat: number[];
}

let member: Downstream = FAMILY[0];
let random = rng(member.seed);
let nth = 0;
let inService = 0;
/** FIFO with a moving head (shift() on a long array is O(n)). */
let backlog: Call[] = [];
let head = 0;
const backlogLen = () => backlog.length - head;
const hung = new Set<http.ServerResponse>();

let startedAt = performance.now();
let startedAtEpoch = Date.now();
let buckets: Bucket[] = [];
let lastAccount = performance.now();
let zombies = 0;

const t = (now = performance.now()) => now - startedAt;
const workers = (now = performance.now()) => capacityAt(member, t(now)).workers;
const newBucket = (): Bucket => ({ arrivals: 0, ok: 0, e503: 0, abandoned: 0, floodedMs: 0, backlog: 0, backlogMax: 0, inService: 0, k: workers(), capPerS: 0, lat: [] });
function bucketAt(now: number): Bucket {
  const i = Math.max(0, Math.floor((now - startedAt) / BUCKET_MS));
  while (buckets.length <= i) buckets.push(newBucket());
  return buckets[i];
}

/** Adds the time since the last change to the buckets it spans, if the backlog exceeded K meanwhile. */
function account(now: number) {
  if (backlogLen() > workers(now) && now > lastAccount) {
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
  const s = serviceTime(member, t(), backlogLen(), ++nth, random);
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
  while (inService < workers(now) && backlogLen() > 0) {
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

function onCall(req: http.IncomingMessage, res: http.ServerResponse) {
  req.resume();
  const now = performance.now();
  const b = bucketAt(now);
  b.arrivals++;
  const what = onArrival(member, t(now), backlogLen(), inService);
  if (what === 'shed') {
    b.e503++;
    res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"overloaded"}');
    return;
  }
  const call: Call = { res, arrivedAt: now, gone: false };
  res.on('close', () => {
    hung.delete(res);
    if (!res.writableEnded && !call.gone) {
      call.gone = true;
      bucketAt(performance.now()).abandoned++;
    }
  });
  if (what === 'hang') return void hung.add(res);
  account(now);
  backlog.push(call);
  b.backlogMax = Math.max(b.backlogMax, backlogLen());
  pump();
}

// K follows the schedule (steps, drift): start waiting calls when it grows; record each bucket.
setInterval(() => {
  const now = performance.now();
  pump();
  const b = bucketAt(now);
  b.backlog = backlogLen();
  b.inService = inService;
  b.k = workers(now);
  b.capPerS = capacityPerS(member, t(now));
  b.backlogMax = Math.max(b.backlogMax, backlogLen());
}, 20).unref();

function quantile(xs: number[], q: number): number | null {
  if (!xs.length) return null;
  const s = [...xs].sort((a, c) => a - c);
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
      const name = String((await body(req)).member);
      const m = FAMILY.find((d) => d.name === name);
      if (!m) return json(res, 400, { error: `unknown member ${name}` });
      member = m;
      random = rng(m.seed);
      nth = 0;
      startedAt = performance.now();
      startedAtEpoch = Date.now();
      lastAccount = startedAt;
      buckets = [];
      zombies = 0;
      return json(res, 200, { startedAtEpoch, member: m.name });
    }
    if (url === '/_ctl/state') return json(res, 200, { member: member.name, k: workers(), inService, backlog: backlogLen(), hung: hung.size, zombies });
    if (url === '/_ctl/series') {
      return json(res, 200, {
        startedAtEpoch,
        bucketMs: BUCKET_MS,
        member: member.name,
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
  console.log(JSON.stringify({ level: 30, msg: 'gate downstream listening', port }));
});
process.on('SIGTERM', () => process.exit(0));
