import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';

/** Numbers in the configuration are decimal, as an operator writes them: anything else is said to be wrong, not read as something else. */
describe('numbers in the configuration', () => {
  it('are decimal: 0x10, 1e3 and Infinity are refused, naming the variable (they were 16, 1000 and Infinity)', () => {
    expect(loadConfig({ PORT: ' 8081 ', FLOODGATE_REDIS_MEMORY_LIMIT: '0.5' })).toMatchObject({ PORT: 8081, FLOODGATE_REDIS_MEMORY_LIMIT: 0.5 });
    expect(loadConfig({}).FLOODGATE_DISPATCH_LEASE_MS).toBe(8000);
    // What was valid stays valid: a leading point, a blank value (unset).
    expect(loadConfig({ FLOODGATE_REDIS_MEMORY_LIMIT: '.85', FLOODGATE_CACHE_MS: '  ' })).toMatchObject({ FLOODGATE_REDIS_MEMORY_LIMIT: 0.85, FLOODGATE_CACHE_MS: 250 });
    for (const [name, value] of [['PORT', '0x10'], ['FLOODGATE_JOB_ATTEMPTS', '1e3'], ['FLOODGATE_REDIS_MEMORY_LIMIT', 'Infinity'], ['FLOODGATE_CACHE_MS', '12.5'], ['FLOODGATE_BODY_LIMIT', '16k']]) {
      expect(() => loadConfig({ [name]: value }), `${name}=${value}`).toThrow(ConfigError);
      expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(name));
    }
  });
});
