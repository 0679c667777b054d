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

/** Keys and origins are checked as a request will carry them: one that can never match is refused at the start, not a 401 for good. */
describe('keys and CORS origins in the configuration', () => {
  it('refuses a key with a space or outside visible ASCII (the bearer reader never matched it), and takes an origin as a browser sends it', () => {
    for (const [name, value] of [['FLOODGATE_SERVICE_KEYS', 'shop:my key,ok'], ['FLOODGATE_OPERATOR_KEYS', 'clé'], ['FLOODGATE_METRICS_KEY', 'my metrics']]) {
      expect(() => loadConfig({ [name]: value }), `${name}=${value}`).toThrow(new RegExp(name)); // before: taken
    }
    expect(loadConfig({ FLOODGATE_SERVICE_KEYS: 'shop:k1, k2 ', FLOODGATE_METRICS_KEY: 'm-1' })).toMatchObject({ FLOODGATE_SERVICE_KEYS: ['shop:k1', 'k2'], FLOODGATE_METRICS_KEY: 'm-1' });
    // `Origin` is scheme://host[:port], the host lowercase, no path: matched exactly (ticket-cors.ts).
    expect(loadConfig({ FLOODGATE_CORS_ORIGINS: 'https://Shop.example/, http://localhost:8080' }).FLOODGATE_CORS_ORIGINS).toEqual(['https://shop.example', 'http://localhost:8080']); // before: kept as written
    expect(() => loadConfig({ FLOODGATE_CORS_ORIGINS: 'shop.example' })).toThrow(/FLOODGATE_CORS_ORIGINS/);
  });
});
