/**
 * What Postgres cannot store: NUL (refused in text and jsonb) and lone UTF-16 surrogates (refused
 * in jsonb; ioredis and postgres.js turn them into U+FFFD elsewhere, so two strings become one).
 */
const UNSAFE = /\0|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const UNSAFE_ALL = new RegExp(UNSAFE, 'g');

/** Why a string cannot be stored as it is, or null when it can. */
export function textProblem(s: string): string | null {
  const m = UNSAFE.exec(s);
  if (!m) return null;
  return m[0] === '\0' ? 'contains NUL (\\u0000)' : 'contains a lone surrogate (not well-formed Unicode)';
}

/** The string with each NUL and lone surrogate written as its `\uXXXX` escape (for logs and dead letters). */
export const escapeUnsafe = (s: string) => s.replace(UNSAFE_ALL, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);

/** The string with each NUL and lone surrogate replaced by U+FFFD (to show a key that was refused). */
export const replaceUnsafe = (s: string) => s.replace(UNSAFE_ALL, '\ufffd');
