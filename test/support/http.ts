import { Agent, request } from 'node:http';

/**
 * One pool of kept-alive connections for every daemon a worker's files talk to. node:http costs
 * less CPU per call than fetch (undici's WHATWG streams and headers), and the tests make tens of
 * thousands of calls. An idle socket is unref'd (it holds neither the process nor the leak check,
 * which counts only what does), and is dropped ~1 s before the daemon's announced keep-alive
 * timeout (`Keep-Alive: timeout=5`), or when the daemon closes it on stop.
 */
const agent = new Agent({ keepAlive: true });
const utf8 = new TextDecoder(); // as fetch's res.text(): UTF-8, a leading BOM dropped

/** A JSON call to a daemon listening on a real port. */
export async function http(base: string, method: string, path: string, body?: unknown, key?: string | null) {
  const headers: Record<string, string> = { accept: '*/*' };
  if (key) headers.authorization = `Bearer ${key}`;
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  if (payload) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(payload.length);
  }
  const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = request(new URL(base + path), { method, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, text: utf8.decode(Buffer.concat(chunks)) }));
      res.on('error', reject);
      res.on('close', () => res.complete || reject(new Error(`${method} ${path}: the connection closed before the whole answer came`)));
    });
    req.on('error', reject);
    req.end(payload);
  });
  let json: any = text;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON (e.g. /metrics) */
  }
  return { status, body: json };
}

/**
 * How soon a request must be answered 503 once Redis is gone (test/outage-redis.test.ts,
 * test/cluster-outage.test.ts). The target is about a second (the command timeout is 500 ms), what
 * a quiet machine shows; the bound is what a test can assert on a busy one (a cluster's answer took
 * 2.3 s at load ~6) and still tell the fault it guards against: without a command timeout and with
 * ioredis's offline queue these calls took 11–15 s.
 */
export const OUTAGE_ANSWER_MS = 5000;
