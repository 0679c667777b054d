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
