/** The benches' one HTTP helper: the daemon calls they make outside autocannon (setup and checks). */
export const SERVICE_KEY = 'svc';
export const OPERATOR_KEY = 'op';

/** A JSON call to the daemon; a body that is not JSON comes back as `{ raw }`. */
export async function call(base: string, method: string, path: string, key: string | null, body?: unknown, opts: { timeoutMs?: number } = {}) {
  const res = await fetch(`${base}${path}`, {
    method,
    signal: opts.timeoutMs ? AbortSignal.timeout(opts.timeoutMs) : undefined,
    headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    parsed = { raw: text.slice(0, 200) };
  }
  return { status: res.status, body: parsed };
}

/** Defines (or redefines) an item; throws unless the daemon took it. */
export async function defineItem(base: string, itemId: string, definition: Record<string, unknown>): Promise<void> {
  const r = await call(base, 'PUT', `/v1/items/${itemId}`, OPERATOR_KEY, definition);
  if (r.status !== 201 && r.status !== 200) throw new Error(`PUT item ${itemId}: ${r.status} ${JSON.stringify(r.body)}`);
}

/** An external item with a closed gate: it only fills, nothing is admitted. */
export function putItem(base: string, itemId: string, capacity?: number): Promise<void> {
  return defineItem(base, itemId, { handler: 'external', gate: { mode: 'closed' }, ...(capacity ? { capacity } : {}) });
}

/** The operator's view of an item (GET /v1/items/{itemId}), the fields the benches read. */
export interface ItemView {
  state: string;
  counts: Record<string, number>;
  remaining: number | null;
  gate: { mode: string; effective: { rate: number | null; maxInFlight: number | null }; controller: Record<string, unknown> | null };
}

/** Tickets in a final state, by an item view's counts. */
export const terminalCount = (counts: Record<string, number>) => ['succeeded', 'rejected', 'failed', 'cancelled', 'expired'].reduce((n, k) => n + (counts[k] ?? 0), 0);

export async function itemView(base: string, itemId: string): Promise<ItemView> {
  const r = await call(base, 'GET', `/v1/items/${itemId}`, OPERATOR_KEY);
  if (r.status !== 200) throw new Error(`GET item ${itemId}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as unknown as ItemView;
}

/** fn(0 … n-1), at most `conc` at a time, results in order. */
export async function pool<T>(n: number, conc: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(conc, n) }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await fn(i);
      }
    }),
  );
  return out;
}

export async function join(base: string, itemId: string, userId: string) {
  return call(base, 'POST', `/v1/items/${itemId}/tickets`, SERVICE_KEY, { userId });
}

export async function waitingCount(base: string, itemId: string): Promise<number> {
  return Number((await itemView(base, itemId)).counts.waiting);
}
