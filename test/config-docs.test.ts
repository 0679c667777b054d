import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { configSchema } from '../src/config.js';
import { errorCatalogue } from '../src/kernel/errors.js';

const root = path.resolve(import.meta.dirname, '..');

describe('the configuration documents', () => {
  it('name every variable the daemon reads: the example file and the README (FLOODGATE_RECONNECT_HOLD_MS was in neither)', () => {
    const example = readFileSync(path.join(root, 'config/floodgate.env.example'), 'utf8');
    const readme = readFileSync(path.join(root, 'README.md'), 'utf8');
    const names = Object.keys(configSchema.shape);
    expect(names.filter((n) => !new RegExp(`^#? ?${n}=`, 'm').test(example))).toEqual([]);
    expect(names.filter((n) => !readme.includes(`\`${n}\``))).toEqual([]);
  });
  it("list every error code in docs/api.md's Errors table, with its status (blocked, pow_required and rate_limited were missing)", () => {
    const api = readFileSync(path.join(root, 'docs/api.md'), 'utf8');
    const rows = api.split('\n').filter((l) => /^\| \d{3} \|/.test(l));
    const missing = Object.entries(errorCatalogue).filter(([code, status]) => !rows.some((r) => r.startsWith(`| ${status} |`) && r.split('|')[2].includes(`\`${code}\``)));
    expect(missing).toEqual([]);
  });
});
