import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ConfigError, type Config } from './config.js';

export interface RunKeys {
  config: Config;
  /** Keys made for this run, by role (empty when every role has keys of its own). */
  generated: { operator?: string; service?: string };
  /** Where the generated keys were written, as `OPKEY=…` / `SVCKEY=…` lines for a shell. */
  file: string | null;
}

/**
 * A role without a configured key cannot be used at all, which made the README's first curl fail
 * with 401 on a fresh clone. So, unless NODE_ENV=production, each such role gets a random key for
 * this run only; the caller prints them, and they are written (mode 0600) to
 * `<dataDir>/dev-keys.env` for scripts such as the README's quick start. With NODE_ENV=production
 * the daemon refuses to start instead: a deployment names its keys. A run with keys of its own
 * removes a stale file, so no one reads keys that no longer open anything.
 */
export function keysForRun(config: Config, dataDir: string): RunKeys {
  const file = path.join(dataDir, 'dev-keys.env');
  const missing = (['operator', 'service'] as const).filter((role) => (role === 'operator' ? config.FLOODGATE_OPERATOR_KEYS : config.FLOODGATE_SERVICE_KEYS).length === 0);
  if (!missing.length) {
    rmSync(file, { force: true });
    return { config, generated: {}, file: null };
  }
  if (config.NODE_ENV === 'production')
    throw new ConfigError(
      `invalid configuration:\n${missing.map((r) => `  FLOODGATE_${r.toUpperCase()}_KEYS: no key configured (NODE_ENV=production makes no keys for you)`).join('\n')}`,
    );
  const generated: RunKeys['generated'] = {};
  for (const role of missing) generated[role] = `dev-${role === 'operator' ? 'op' : 'svc'}-${randomBytes(18).toString('base64url')}`;
  mkdirSync(dataDir, { recursive: true });
  const lines = [`# Keys floodgate made for its run started ${new Date().toISOString()} (pid ${process.pid}); valid while it runs.`];
  if (generated.operator) lines.push(`OPKEY=${generated.operator}`);
  if (generated.service) lines.push(`SVCKEY=${generated.service}`);
  rmSync(file, { force: true }); // a file left by another user keeps its mode on overwrite
  writeFileSync(file, `${lines.join('\n')}\n`, { mode: 0o600 });
  return {
    config: {
      ...config,
      FLOODGATE_OPERATOR_KEYS: generated.operator ? [generated.operator] : config.FLOODGATE_OPERATOR_KEYS,
      FLOODGATE_SERVICE_KEYS: generated.service ? [generated.service] : config.FLOODGATE_SERVICE_KEYS,
    },
    generated,
    file,
  };
}
