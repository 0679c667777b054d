import { z } from 'zod';

/**
 * The daemon's whole configuration, read once from the environment at startup.
 * Every variable is documented in config/README.md and config/floodgate.env.example.
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
  FLOODGATE_ITEM_RETENTION_MS: z.coerce.number().int().min(60_000).max(365 * 24 * 3600 * 1000).default(24 * 3600 * 1000),
  FLOODGATE_TICKET_STATE_TTL_MS: z.coerce.number().int().min(1000).max(30 * 24 * 3600 * 1000).default(600_000),
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
