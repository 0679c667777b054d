import { describe, expect, it } from 'vitest';
import { createAuth } from '../src/api/auth.js';

const auth = createAuth({ service: ['shop:s-key-1', 's-key-2'], operator: ['ops:o-key'] });

describe('bearer keys (api/auth.ts)', () => {
  it('names the same actor on every request of a header, and a header it once knew changes nothing for others', () => {
    for (let round = 0; round < 3; round++) {
      expect(auth.serviceActor('Bearer s-key-1')).toMatchObject({ role: 'service', name: 'shop', key: 's-key-1' });
      expect(auth.serviceActor('Bearer o-key')).toMatchObject({ role: 'operator', name: 'ops' });
      expect(auth.isOperator('Bearer o-key')).toBe(true);
      expect(auth.isOperator('Bearer s-key-1')).toBe(false);
      // Near misses of a key that has been seen are still unknown.
      for (const h of ['Bearer s-key-1x', 'Bearer s-key-', 'Bearer S-KEY-1', 'Basic s-key-1', 's-key-1', 'Bearer', ''])
        expect(auth.serviceActor(h), h).toBeNull();
      expect(auth.serviceActor(undefined)).toBeNull();
      expect(auth.isOperator(undefined)).toBe(false);
    }
  });

  it('accepts every spelling of a valid header, more than it remembers, and shares a frozen actor per header', () => {
    for (let spaces = 1; spaces <= 300; spaces++) {
      const h = `${spaces % 2 ? 'Bearer' : 'bearer'}${' '.repeat(spaces)}s-key-2${spaces % 3 ? '' : ' '}`;
      expect(auth.serviceActor(h)?.role, h).toBe('service');
    }
    const a = auth.serviceActor('Bearer s-key-2')!;
    expect(Object.isFrozen(a)).toBe(true);
    expect(auth.serviceActor('Bearer s-key-2')).toBe(a);
    // What one request did to its actor cannot reach the next one's.
    expect(() => Object.assign(a, { role: 'operator' })).toThrow();
    expect(auth.isOperator('Bearer s-key-2')).toBe(false);
  });

  it('refuses an unknown key however often it comes', () => {
    for (let i = 0; i < 1000; i++) expect(auth.serviceActor(`Bearer guess-${i % 10}`)).toBeNull();
  });
});
