import { parse as parseLossless } from 'lossless-json';
import { jsonIssues, MAX_JSON_DEPTH } from '../../kernel/json-issues.js';

/**
 * Reading a downstream's answer without trusting it: at most `limit` bytes are read (the stream is
 * cancelled past it, so an endless or huge answer costs no more memory than the bound), and a body
 * is storable only if it passes the bar request bodies pass (kernel/json-issues.ts): no NUL and no
 * lone surrogate in any string, which Postgres's jsonb refuses, and no nesting deeper than
 * MAX_JSON_DEPTH, which 64 KiB of `[` far exceeds and which would overflow the stack of every
 * later JSON.stringify of the ticket (its settle, its token).
 */
export const ANSWER_LIMIT = 64 * 1024;
/** How long an answer's body may take to come once its status has (ms): then it is cut short, and the outcome stored without it. */
export const ANSWER_READ_MS = 5000;

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

/**
 * The answer as the ticket's result: its JSON, or (not JSON) its first 1000 characters, 999 where
 * the 1000th is the first half of a pair: half a pair is a lone surrogate, which cannot be stored.
 */
export function parseAnswer(text: string): unknown {
  if (!text) return null;
  try {
    return exactNumbers(text) ?? JSON.parse(text);
  } catch {
    const cut = text.slice(0, 1000);
    return /[\ud800-\udbff]$/.test(cut) ? cut.slice(0, -1) : cut;
  }
}

/**
 * An answer with a number JavaScript cannot hold exactly, parsed with that number kept as the text
 * the downstream wrote (a string); null when there is none (the caller parses it as usual). A
 * 64-bit order id (`{"orderId": 1234567890123456789}`, as snowflake ids are) came out of JSON.parse
 * as 1234567890123456800: the user was shown another order's number, and so was Postgres. Only an
 * answer with a run of 16 digits can hold one (2^53 has 16), or an exponent (1e400 is Infinity).
 * Nested too deep for the parser's recursion, it is left to JSON.parse (and `storable` refuses it).
 */
function exactNumbers(text: string): unknown {
  if (!/\d{16}|[eE][+]?\d{3}/.test(text)) return null;
  try {
    return parseLossless(text, null, (literal) => (exact(literal) ? Number(literal) : literal));
  } catch (err) {
    // lossless-json refuses a key given twice with two values, which JSON.parse takes (the last
    // wins): such an answer lost its 64-bit order id, rounded by JSON.parse and then refused as
    // unsafe with the rest of the result (a review). The same numbers quoted, then JSON.parse.
    // (Only then: any other refusal is of what is no JSON, which stays text.)
    if (!/duplicate key/i.test(String((err as Error)?.message))) return null;
    const quoted = quoteInexact(text);
    return quoted === null ? null : JSON.parse(quoted);
  }
}

/** Whether a number literal reads back as itself (an integer within 2^53, a finite fraction). */
function exact(literal: string): boolean {
  const n = Number(literal);
  return Number.isFinite(n) && (!Number.isInteger(n) || Number.isSafeInteger(n));
}

/** A number as JSON writes it (no leading zeros, no `+`), and what follows one (a digit there: no JSON number). */
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;

/**
 * The text with each number literal that is not exact written as a string, where JSON has a value
 * (never as a key, never a malformed number: such text is no JSON, and stays none); null when there
 * is none to quote, or the text is not JSON in a way seen here.
 */
function quoteInexact(text: string): string | null {
  let out = '';
  let from = 0;
  // The open containers, and whether an object waits for a key (after `{` or a `,` in it).
  const open: string[] = [];
  let key = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      // To the string's end, past its escapes.
      for (i++; i < text.length && text[i] !== '"'; i++) if (text[i] === '\\') i++;
      key = false;
      continue;
    }
    if (c === '{' || c === '[') {
      open.push(c);
      key = c === '{';
      continue;
    }
    if (c === '}' || c === ']') {
      open.pop();
      key = false;
      continue;
    }
    if (c === ',') {
      key = open.at(-1) === '{';
      continue;
    }
    if (c !== '-' && (c < '0' || c > '9')) continue;
    NUMBER.lastIndex = i;
    const literal = NUMBER.exec(text)?.[0];
    const next = text[i + (literal?.length ?? 0)];
    if (!literal || key || (next !== undefined && /[\d.eE+-]/.test(next))) return null;
    if (!exact(literal)) {
      out += text.slice(from, i) + JSON.stringify(literal);
      from = i + literal.length;
    }
    i += literal.length - 1;
  }
  return from === 0 ? null : out + text.slice(from);
}

/** Whether the answer may become the ticket's result (see above). */
export const storable = (value: unknown): boolean => jsonIssues(value, MAX_JSON_DEPTH, 1).length === 0;
