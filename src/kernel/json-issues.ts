import { replaceUnsafe, textProblem } from './safe-text.js';

/**
 * What makes parsed JSON unfit to keep: a string (at any depth, object keys too) that is not
 * well-formed Unicode or holds NUL, a number past ±(2^53 − 1) (parsed, it is no longer the number
 * sent), or nesting deeper than MAX_JSON_DEPTH levels. Why: Postgres
 * refuses NUL in text and jsonb and lone surrogates in jsonb (one such value fails a whole
 * multi-row statement), ioredis and postgres.js silently turn lone surrogates into U+FFFD (two
 * user ids become one), and JSON.stringify overflows the stack a few thousand levels down.
 * JSON.parse itself takes any depth, so the walk below is iterative. Request bodies are held to it
 * (api/json-guard.ts), and so are the answers of a webhook's downstream.
 *
 *   jsonIssues({ payload: { a: 'x\u0000' } })  // [{ path: ['payload', 'a'], message: 'contains NUL (\\u0000)' }]
 */
export const MAX_JSON_DEPTH = 32;

export const UNSAFE_NUMBER = 'a number past ±(2^53 − 1), which is not kept exactly (I-JSON, RFC 7493): send it as a string';

export interface JsonIssue {
  path: (string | number)[];
  message: string;
}

/** The first `limit` problems of a parsed JSON value, depth first; [] when it may enter. */
export function jsonIssues(value: unknown, maxDepth = MAX_JSON_DEPTH, limit = 10): JsonIssue[] {
  const issues: JsonIssue[] = [];
  // Depth-first with an explicit stack: a hostile body cannot overflow the call stack.
  const stack: { v: unknown; path: (string | number)[] }[] = [{ v: value, path: [] }];
  while (stack.length && issues.length < limit) {
    const { v, path } = stack.pop()!;
    if (typeof v === 'string') {
      const problem = textProblem(v);
      if (problem) issues.push({ path, message: problem });
      continue;
    }
    // I-JSON (RFC 7493, 2.2): an integer past ±(2^53 − 1) was rounded by JSON.parse already (an
    // order id 12345678901234567891 arrived as …900): refused, not kept as a number it is not.
    if (typeof v === 'number') {
      if (!Number.isSafeInteger(v) && (Number.isInteger(v) || !Number.isFinite(v))) issues.push({ path, message: UNSAFE_NUMBER });
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    // `path.length` containers enclose this one: it is at level path.length + 1.
    if (path.length >= maxDepth) {
      issues.push({ path, message: `nested deeper than ${maxDepth} levels` });
      continue;
    }
    const children: { v: unknown; path: (string | number)[] }[] = [];
    if (Array.isArray(v)) v.forEach((x, i) => children.push({ v: x, path: [...path, i] }));
    else
      for (const [key, x] of Object.entries(v)) {
        const problem = textProblem(key);
        if (problem) issues.push({ path: [...path, replaceUnsafe(key)], message: `key ${problem}` });
        else children.push({ v: x, path: [...path, key] });
      }
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]);
  }
  return issues.slice(0, limit);
}
