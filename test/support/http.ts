import { Agent, request } from 'node:http';

/**
 * One pool of kept-alive connections for every daemon a worker's files talk to. node:http costs
 * less CPU per call than fetch (undici's WHATWG streams and headers), and the tests make tens of
 * thousands of calls. An idle socket is unref'd (it holds neither the process nor the leak check,
 * which counts only what does), and is dropped after 3 s idle, 2 s before the daemon's keep-alive
 * timeout (5 s), as undici does (node's Agent alone keeps 1 s: on a loaded machine a timer runs a
 * second late, and a request went out on a socket the daemon was closing: ECONNRESET), or when
 * the daemon closes it on stop.
 */
const agent = new Agent({ keepAlive: true, timeout: 3000 });
const utf8 = new TextDecoder(); // as fetch's res.text(): UTF-8, a leading BOM dropped

type Answer = { status: number; text: string };
/** Longer than any call of the daemon's takes (an operator write waits 15 s at most for its lock). */
const CALL_TIMEOUT_MS = 60_000;

function send(url: URL, method: string, headers: Record<string, string>, payload: Buffer | undefined): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = request(url, { method, headers, agent }, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, text: utf8.decode(Buffer.concat(chunks)) }));
      res.on('error', reject);
      res.on('close', () => res.complete || reject(new Error('the connection closed before the whole answer came')));
    });
    req.on('error', (err) => reject(Object.assign(err, { reused: req.reusedSocket && !answered })));
    // A call the daemon never answers fails, named, rather than holding the test until its own
    // timeout (which names no call, and skips its `finally`: CI once left Postgres read-only so).
    // A timer of its own, not `req.setTimeout`: that one reaches a new socket only once it has
    // connected, and until then the socket keeps the agent's 3 s idle timeout, which the request
    // relays as its own. A test worker whose event loop was held 3 s while a connect was pending
    // (a loaded CI machine) failed the call as "no answer in 60 s" 33 s into its test.
    const sentAt = performance.now();
    const timer = setTimeout(() => req.destroy(new Error(`no answer in ${CALL_TIMEOUT_MS / 1000} s (timed out after ${Math.round(performance.now() - sentAt)} ms, on a ${req.reusedSocket ? 'reused' : 'new'} socket)`)), CALL_TIMEOUT_MS);
    req.on('close', () => clearTimeout(timer));
    req.end(payload);
  });
}

/** A JSON call to a daemon listening on a real port. */
export async function http(base: string, method: string, path: string, body?: unknown, key?: string | null) {
  const headers: Record<string, string> = { accept: '*/*' };
  if (key) headers.authorization = `Bearer ${key}`;
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  if (payload) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(payload.length);
  }
  const url = new URL(base + path);
  let answer: Answer;
  try {
    answer = await send(url, method, headers, payload);
  } catch (err) {
    // A kept-alive socket the daemon closed as the request went out (no answer had begun): the
    // daemon never read it, so it is sent once more, on another socket, as node's docs advise.
    // A daemon that is gone refuses that one too; one that resets every answer fails both.
    const e = err as NodeJS.ErrnoException & { reused?: boolean };
    const retry = e.reused && (e.code === 'ECONNRESET' || e.code === 'EPIPE');
    try {
      if (!retry) throw err;
      answer = await send(url, method, headers, payload);
    } catch (last) {
      throw Object.assign(new Error(`${method} ${url.href}: ${(last as Error).message}`, { cause: last }), { code: (last as NodeJS.ErrnoException).code });
    }
  }
  const { status, text } = answer;
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
 * ioredis's offline queue these calls took 11–15 s. 9 s: the full suite ran twice as slow on
 * another day's machine (605 s), where 2.3 s could be 4.6.
 */
export const OUTAGE_ANSWER_MS = 9000;
