/** A JSON call to a daemon listening on a real port. */
export async function http(base: string, method: string, path: string, body?: unknown, key?: string | null) {
  const headers: Record<string, string> = {};
  if (key) headers.authorization = `Bearer ${key}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json: any = text;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON (e.g. /metrics) */
  }
  return { status: res.status, body: json };
}

/**
 * How soon a request must be answered 503 once Redis is gone (test/outage-redis.test.ts,
 * test/cluster-outage.test.ts). The target is about a second (the command timeout is 500 ms), what
 * a quiet machine shows; the bound is what a test can assert on a busy one (a cluster's answer took
 * 2.3 s at load ~6) and still tell the fault it guards against: without a command timeout and with
 * ioredis's offline queue these calls took 11–15 s.
 */
export const OUTAGE_ANSWER_MS = 5000;
