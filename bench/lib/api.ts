/** The few daemon calls the benches make outside autocannon (setup and checks). */
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

/** An external item with a closed gate: it only fills, nothing is admitted. */
export async function putItem(base: string, itemId: string, capacity?: number): Promise<void> {
  const r = await call(base, 'PUT', `/v1/items/${itemId}`, OPERATOR_KEY, { handler: 'external', gate: { mode: 'closed' }, ...(capacity ? { capacity } : {}) });
  if (r.status !== 201 && r.status !== 200) throw new Error(`PUT item ${itemId}: ${r.status} ${JSON.stringify(r.body)}`);
}

export async function join(base: string, itemId: string, userId: string) {
  return call(base, 'POST', `/v1/items/${itemId}/tickets`, SERVICE_KEY, { userId });
}

export async function waitingCount(base: string, itemId: string): Promise<number> {
  const r = await call(base, 'GET', `/v1/items/${itemId}`, OPERATOR_KEY);
  if (r.status !== 200) throw new Error(`GET item ${itemId}: ${r.status} ${JSON.stringify(r.body)}`);
  return Number((r.body.counts as Record<string, number>).waiting);
}
