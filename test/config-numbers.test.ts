import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig, readSettings } from '../src/config.js';
import { seedList } from '../src/infra/redis-client.js';

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

/** A Redis Cluster's seed nodes. */
describe('FLOODGATE_REDIS_CLUSTER', () => {
  it('takes IPv6 hosts in brackets and refuses ports past 65535, naming the node', () => {
    expect(loadConfig({ FLOODGATE_REDIS_CLUSTER: ' 10.0.0.1:7000, [::1]:7001,redis-2.local:7002 ' }).FLOODGATE_REDIS_CLUSTER).toEqual([
      { host: '10.0.0.1', port: 7000 },
      { host: '::1', port: 7001 }, // before: refused
      { host: 'redis-2.local', port: 7002 },
    ]);
    // As the group's primary hands them to its workers: read back the same (the brackets were dropped).
    const seeds = loadConfig({ FLOODGATE_REDIS_CLUSTER: '[::1]:7001,10.0.0.1:7000' }).FLOODGATE_REDIS_CLUSTER!;
    expect(loadConfig({ FLOODGATE_REDIS_CLUSTER: seedList(seeds) }).FLOODGATE_REDIS_CLUSTER).toEqual(seeds);
    for (const bad of ['10.0.0.1:99999', '10.0.0.1:0', '::1:7000', 'host', 'a:1,,b:2']) {
      expect(() => loadConfig({ FLOODGATE_REDIS_CLUSTER: bad }), bad).toThrow(/FLOODGATE_REDIS_CLUSTER/); // 99999 was taken
    }
  });

  it('says how to write a password holding # / ? in REDIS_URL and DATABASE_URL (it cut the URL there, and nothing said why)', () => {
    expect(() => loadConfig({ REDIS_URL: 'redis://:pa#ss@127.0.0.1:6379' })).toThrow(/REDIS_URL.*%23/s);
    expect(() => loadConfig({ DATABASE_URL: 'postgres://fg:pa?ss@127.0.0.1:5432/fg' })).toThrow(/DATABASE_URL.*%3F/s);
    expect(loadConfig({ REDIS_URL: 'redis://:pa%23ss@127.0.0.1:6379' }).REDIS_URL).toBe('redis://:pa%23ss@127.0.0.1:6379');
    // A password of digits before the cut parsed as a port of a host named after the user (an own-commits review).
    for (const [name, value] of [['REDIS_URL', 'redis://default:6379#abc@redis.internal:6379'], ['REDIS_URL', 'redis://default:6380/xyz@redis.internal:6379'], ['DATABASE_URL', 'postgres://app:5432?k@db.internal:5432/app']]) {
      expect(() => loadConfig({ [name]: value }), value).toThrow(new RegExp(`${name}.*%23`, 's'));
    }
    expect(loadConfig({ DATABASE_URL: 'postgres://app:pw@db.internal:5432/app?options=a@b' }).DATABASE_URL).toContain('db.internal');
  });
});

/** The `.env` file as editors save it and the environment as shells set it. */
describe('the .env file under the environment', () => {
  it('reads a file saved with a byte-order mark, and a blank environment value leaves the file its say', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'fg-env-'));
    try {
      writeFileSync(path.join(dir, '.env'), '\ufeffPORT=18095\nHOST=127.0.0.1\n');
      // The mark was read as part of the first name: `\ufeffPORT` unknown, and the file's PORT ignored.
      const read = readSettings(dir, { HOST: '   ' });
      expect([read.config.PORT, read.config.HOST]).toEqual([18095, '127.0.0.1']); // HOST was 0.0.0.0: spaces hid the file's
      expect(read.unknown).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
