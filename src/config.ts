import { readFileSync } from 'node:fs';
import { parseEnv } from 'node:util';
import { z } from 'zod';

/**
 * The daemon's whole configuration, read once at startup from the environment over an optional
 * `.env` file. Every variable is documented in config/README.md and config/floodgate.env.example.
 */
const keyList = z
  .string()
  .default('')
  .transform((s) => s.split(',').map((k) => k.trim()).filter(Boolean));

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

export const configSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().default('0.0.0.0'),
  REDIS_URL: z.string().url().optional(),
  DATABASE_URL: z.string().url().optional(),
  FLOODGATE_SERVICE_KEYS: keyList,
  FLOODGATE_OPERATOR_KEYS: keyList,
  FLOODGATE_METRICS_KEY: z.string().optional(),
  FLOODGATE_REDIS_PREFIX: z.string().regex(/^[A-Za-z0-9:_.-]*$/).default('fg:'),
  FLOODGATE_DATA_DIR: z.string().default('.floodgate'),
  FLOODGATE_AUTO_INSTALL: bool.default(true),
  FLOODGATE_EMBEDDED_PG_PORT: z.coerce.number().int().min(1).max(65535).default(54329),
  FLOODGATE_CACHE_MS: z.coerce.number().int().min(0).max(5000).default(250),
  FLOODGATE_BODY_LIMIT: z.coerce.number().int().min(1024).max(1 << 24).default(16 * 1024),
  FLOODGATE_SHUTDOWN_MS: z.coerce.number().int().min(0).max(120_000).default(10_000),
  FLOODGATE_WORKER_CONCURRENCY: z.coerce.number().int().min(1).max(10_000).default(256),
  FLOODGATE_JOB_BATCH: z.coerce.number().int().min(1).max(1000).default(100),
  FLOODGATE_JOB_ATTEMPTS: z.coerce.number().int().min(1).max(100).default(5),
  FLOODGATE_JOB_BACKOFF_MS: z.coerce.number().int().min(1).max(600_000).default(200),
  FLOODGATE_AUTO_START_LIMIT: z.coerce.number().int().min(1).max(1_000_000).default(10),
  FLOODGATE_JOB_LOCK_MS: z.coerce.number().int().min(1000).max(600_000).default(10_000),
  FLOODGATE_DISPATCH_LEASE_MS: z.coerce.number().int().min(1000).max(600_000).default(15_000),
  FLOODGATE_HANDLERS_MODULE: z.string().optional(),
  FLOODGATE_RECONCILE_ON_START: bool.default(true),
  FLOODGATE_TICKET_STATE_TTL_MS: z.coerce.number().int().min(1000).max(30 * 24 * 3600 * 1000).default(600_000),
  /** `production`: a role without keys stops the daemon instead of getting keys for the run. */
  NODE_ENV: z.string().optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Config = z.infer<typeof configSchema>;

export class ConfigError extends Error {}

/** Parses the environment; every bad variable is listed in one error. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''));
  const parsed = configSchema.safeParse(cleaned);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  return parsed.data;
}

/** The variables of a `.env` file (Node's dotenv syntax); none when the file does not exist. */
export function readEnvFile(file: string): Record<string, string> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw err;
  }
  return parseEnv(text) as Record<string, string>;
}

/** The file's variables under the environment's: a variable the environment sets (non-empty) wins. */
export function overEnvFile(file: Record<string, string>, env: Record<string, string | undefined>): Record<string, string | undefined> {
  const merged: Record<string, string | undefined> = { ...file };
  for (const [k, v] of Object.entries(env)) if (v !== undefined && (v !== '' || !(k in file))) merged[k] = v;
  return merged;
}

const knownNames = Object.keys(configSchema.shape);

/**
 * Variables the daemon would ignore: `FLOODGATE_*` ones it does not know, and anything in the
 * `.env` file it does not know. Each with the known name it is closest to, when that is near.
 */
export function unknownVariables(envNames: string[], fileNames: string[]): { name: string; suggestion: string | null }[] {
  const names = new Set([...envNames.filter((n) => n.startsWith('FLOODGATE_')), ...fileNames]);
  return [...names]
    .filter((n) => !knownNames.includes(n))
    .sort()
    .map((name) => {
      const [best] = knownNames.map((k) => ({ k, d: editDistance(name.toUpperCase(), k) })).sort((a, b) => a.d - b.d);
      return { name, suggestion: best && best.d <= Math.max(2, Math.floor(best.k.length / 6)) ? best.k : null };
    });
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}
