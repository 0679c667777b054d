import { describe, expect, it } from 'vitest';
import { randomToken } from '../src/kernel/random-token.js';

describe('random tokens from a pool', () => {
  it('hands out distinct base64url tokens of the asked length, across refills of the pool', () => {
    const tokens = Array.from({ length: 3000 }, () => randomToken(12)); // ~9 refills of 4 KiB
    expect(tokens.every((t) => /^[A-Za-z0-9_-]{16}$/.test(t))).toBe(true);
    expect(new Set(tokens).size).toBe(tokens.length);
    // Never all zeros (an unfilled pool).
    expect(tokens.filter((t) => t === 'AAAAAAAAAAAAAAAA').length).toBe(0);
    expect(() => randomToken(5000)).toThrow(RangeError);
  });
});
