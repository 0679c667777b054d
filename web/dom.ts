/** Small DOM helpers shared by the pages (no framework). */
export const $ = <T extends HTMLElement = HTMLElement>(sel: string) => document.querySelector(sel) as T;

export function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...kids: (Node | string)[]) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Answers that mean "not now" rather than "no": ask again later. */
export const LATER = new Set([425, 429, 502, 503, 504]);

/**
 * How long to wait before asking again after a "not now" or no answer at all, on the `attempt`th
 * failure in a row: 1 s doubling to 30 s, or longer where the daemon's Retry-After says so (at
 * most a minute); spread ±20% so that a crowd told the same thing at the same second does not
 * come back at the same second. (Retry-After alone, 2 s on every 503 of an outage, kept a hundred
 * thousand open pages asking every 2 s for as long as it lasted.)
 */
export function retryDelay(res: Response | null, attempt: number): number {
  let ms = Math.min(30_000, 1000 * 2 ** Math.min(attempt, 5));
  const after = Number(res?.headers.get('retry-after'));
  if (after > 0) ms = Math.max(ms, Math.min(60_000, after * 1000));
  return jitter(ms);
}

export const jitter = (ms: number) => ms * (0.8 + Math.random() * 0.4);
