import { http } from './http.js';

type Answer = { status: number; body: any };

/**
 * Joins every user the way a client does: `batch` at a time, and a `503 unavailable` (on a busy
 * machine a Redis command past its 500 ms budget) asked again until `deadlineMs`. A join is
 * idempotent per user, so asking again is safe: the retry answers 200 with the ticket the first
 * one made, if it had. Every join must end accepted (202 new, 200 existing) or with one of the
 * answers the test expects (`also`, e.g. 410 after a sell-out); anything else throws, so a test
 * never goes on with fewer tickets than it thinks it has.
 */
export async function joinAll(join: (userId: string) => Promise<Answer>, users: string[], opts: { batch?: number; deadlineMs?: number; also?: number[] } = {}): Promise<Answer[]> {
  const batch = opts.batch ?? 100;
  const until = Date.now() + (opts.deadlineMs ?? 30_000);
  const out: Answer[] = [];
  for (let i = 0; i < users.length; i += batch) {
    out.push(
      ...(await Promise.all(
        users.slice(i, i + batch).map((u) => askAgainOn503(() => join(u), [200, 202, ...(opts.also ?? [])], until, `join of ${u}`)),
      )),
    );
  }
  return out;
}

/** Asks until the answer is not a `503 unavailable` or `until` has passed, every 100 ms, as a client does. */
async function pastThe503s(ask: () => Promise<Answer>, until: number): Promise<Answer> {
  for (;;) {
    const r = await ask();
    if (r.status !== 503 || Date.now() > until) return r;
    await new Promise((res) => setTimeout(res, 100));
  }
}

/**
 * Asks until the answer is one of `ok`, asking again (every 100 ms, until `until`) only after a
 * `503 unavailable`, as a client does; any other answer, or a 503 past `until`, throws.
 */
export async function askAgainOn503(ask: () => Promise<Answer>, ok: number[], until: number, what: string): Promise<Answer> {
  const r = await pastThe503s(ask, until);
  if (!ok.includes(r.status)) throw new Error(`${what} answered ${r.status} ${JSON.stringify(r.body)}`);
  return r;
}

/**
 * A test's own HTTP call as a client makes it: a `503` (on a busy machine, a Redis command past
 * its 500 ms budget) asked again every 100 ms for up to 30 s; any other answer is returned for the
 * test to judge. Item definitions, joins, outcomes under their lease, cancels and reads answer
 * a repeat as the first; a pull's admission waits up to 5 s for its reply (infra/redis-client.ts,
 * `admit`), so only a reply later than that leaves its tickets leased to no one until the lease
 * runs out.
 */
export function retrying503<A extends unknown[]>(call: (...args: A) => Promise<Answer>): (...args: A) => Promise<Answer> {
  return (...args) => pastThe503s(() => call(...args), Date.now() + 30_000);
}

export const userIds = (from: number, to: number, prefix = 'u') => Array.from({ length: to - from }, (_, i) => `${prefix}${from + i}`);

/** A plain fetch from outside the daemon's test client (a browser's page, an asset), a `503` (a busy machine) asked again every 100 ms for up to 30 s. */
export async function fetchPast503(url: string, init?: RequestInit): Promise<Response> {
  const until = Date.now() + 30_000;
  for (;;) {
    const res = await fetch(url, init);
    if (res.status !== 503 || Date.now() > until) return res;
    await res.body?.cancel();
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A read as the operator (key `op`) of a daemon process: its body, a `503` asked again for up to 30 s. */
export const readAsOperator = (base: string, path: string) => askAgainOn503(() => http(base, 'GET', path, undefined, 'op'), [200], Date.now() + 30_000, `GET ${path}`).then((r) => r.body);

/** Waits until the item's view satisfies `ok`, read every 50 ms through `base`. */
export async function itemUntil(base: string, itemId: string, ok: (v: any) => boolean, what: string, ms = 60_000) {
  const until = Date.now() + ms;
  for (;;) {
    const v = await readAsOperator(base, `/v1/items/${itemId}`);
    if (ok(v)) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(v.counts)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
