/**
 * Reading a downstream's answer without trusting it: at most `limit` bytes are read (the stream is
 * cancelled past it, so an endless or huge answer costs no more memory than the bound), and a body
 * is storable only if Postgres will take it as jsonb: no NUL and no lone surrogate in any string.
 */
export const ANSWER_LIMIT = 64 * 1024;

export class AnswerTooLarge extends Error {}

/** The body as text, or AnswerTooLarge once it passes `limit` bytes (the rest is never read). */
export async function readBounded(res: Response, limit = ANSWER_LIMIT): Promise<string> {
  const declared = Number(res.headers.get('content-length'));
  if (declared > limit) {
    await res.body?.cancel().catch(() => {});
    throw new AnswerTooLarge();
  }
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw new AnswerTooLarge();
    }
    chunks.push(value);
  }
  return new TextDecoder().decode(Buffer.concat(chunks));
}

/** The answer as the ticket's result: its JSON, or (not JSON) its first 1000 characters. */
export function parseAnswer(text: string): unknown {
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text.slice(0, 1000);
  }
}

const unstorable = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** Whether Postgres's jsonb accepts the value. Walks without recursion: 64 KiB of `[` nests deep. */
export function storable(value: unknown): boolean {
  const todo: unknown[] = [value];
  while (todo.length) {
    const v = todo.pop();
    if (typeof v === 'string') {
      if (unstorable.test(v)) return false;
    } else if (Array.isArray(v)) {
      for (const x of v) todo.push(x);
    } else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) {
        if (unstorable.test(k)) return false;
        todo.push(x);
      }
    }
  }
  return true;
}
