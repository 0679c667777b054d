import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseEnv } from 'node:util';
import { z } from 'zod';

/**
 * The daemon's whole configuration, read once at startup from the environment over an optional
 * `.env` file. Every variable is documented in config/README.md and config/floodgate.env.example.
 */
/**
 * A bearer key as a request can carry it: visible ASCII, no space (api/auth.ts reads `Bearer \S+`,
 * and Node reads header bytes as latin1). A key with a space was taken at start and never matched:
 * every call with it 401, and a metrics key so written locked /metrics for everyone.
 */
const bearerKey = /^[\x21-\x7e]+$/;
const keyList = z
  .string()
  .default('')
  .transform((s) => s.split(',').map((k) => k.trim()).filter(Boolean))
  .refine((keys) => keys.every((k) => bearerKey.test(k)), 'keys are visible ASCII without spaces (a request could never carry such a key)');

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');

/**
 * A number as an operator writes one: decimal digits, an optional sign and fraction, checked by
 * `inner`. z.coerce took whatever Number() takes — `0x10` as 16, `1e3` as 1000, `Infinity` — so a
 * typo set a value nobody meant instead of saying so.
 */
const decimal = (inner: z.ZodNumber) => z.string().trim().regex(/^[+-]?(\d+(\.\d*)?|\.\d+)$/, 'a decimal number').transform(Number).pipe(inner);

/**
 * A URL a password holding `#`, `/` or `?` cut short: the rest (`…@host:port`) read as its
 * fragment, path or query, and a password of digits before the cut as the port of a host named
 * after the user (`redis://default:6379#abc@redis.internal:6379` dialled `default:6379`).
 */
function passwordCut(v: string): boolean {
  try {
    const u = new URL(v);
    return u.hash.includes('@') || (!u.username && !u.password && /@/.test(u.pathname + u.search));
  } catch {
    return false;
  }
}
const PASSWORD_CUT = 'a password holding # / or ? cut the URL short: write them as %23 %2F %3F';

export const configSchema = z.object({
  PORT: decimal(z.number().int().min(0).max(65535)).default(8080),
  HOST: z.string().default('0.0.0.0'),
  // (Any scheme passed: `http://…` was read as a unix socket's path, `mysql://…` dialled as Postgres.)
  // (A password holding `#`, `/` or `?` cuts the URL there: the hint says what to write.)
  REDIS_URL: z.url({ protocol: /^rediss?$/, error: 'a redis:// or rediss:// URL (in a password, write # / ? as %23 %2F %3F)' }).refine((v) => !passwordCut(v), PASSWORD_CUT).optional(),
  /** `host:port,host:port…`: seed nodes of a Redis Cluster, used instead of REDIS_URL (infra/redis-client.ts). */
  // (An IPv6 host in brackets, `[::1]:7000`, was refused, and a port past 65535 was taken.)
  FLOODGATE_REDIS_CLUSTER: z
    .string()
    .transform((s, ctx) => {
      const nodes: { host: string; port: number }[] = [];
      for (const n of s.split(',').map((x) => x.trim())) {
        const m = /^\[([0-9A-Fa-f:.]+)\]:(\d{1,5})$/.exec(n) ?? /^([^\s,:[\]]+):(\d{1,5})$/.exec(n);
        const port = m ? Number(m[2]) : 0;
        if (!m || port < 1 || port > 65535) {
          ctx.addIssue({ code: 'custom', message: `host:port,host:port… (an IPv6 host in brackets, [::1]:7000; ports 1–65535), not ${JSON.stringify(n)}` });
          return z.NEVER;
        }
        nodes.push({ host: m[1], port });
      }
      return nodes;
    })
    .optional(),
  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/, error: 'a postgres:// or postgresql:// URL (in a password, write # / ? as %23 %2F %3F)' }).refine((v) => !passwordCut(v), PASSWORD_CUT).optional(),
  FLOODGATE_SERVICE_KEYS: keyList,
  FLOODGATE_OPERATOR_KEYS: keyList,
  FLOODGATE_METRICS_KEY: z
    .string()
    .optional()
    .refine((k) => !k || bearerKey.test(k), 'visible ASCII without spaces (a request could never carry such a key)'),
  /** `name:pattern;pattern,…`: the items each named service key may use (access/keys.ts). */
  FLOODGATE_KEY_SCOPES: z
    .string()
    .regex(/^\s*[A-Za-z0-9_.-]{1,64}:[^,;]+(;[^,;]+)*(,\s*[A-Za-z0-9_.-]{1,64}:[^,;]+(;[^,;]+)*)*$/, 'name:pattern;pattern,name:pattern…')
    .optional(),
  /** Joins per second per key name, on every item that sets no perKey quota; unset = none. */
  FLOODGATE_DEFAULT_KEY_QUOTA: decimal(z.number().int().min(1).max(1e9)).optional(),
  /** New joins are refused once Redis's used_memory reaches this share of its maxmemory (queue/memory-guard.ts). */
  FLOODGATE_REDIS_MEMORY_LIMIT: decimal(z.number().gt(0).max(1)).default(0.9),
  /** The daemon's public URL: the `iss` of admission tokens (default "floodgate"). */
  FLOODGATE_PUBLIC_URL: z.string().url().optional(),
  /** `auto` (one per core) or N: daemon processes behind the one port (src/processes.ts); unset = 1. */
  FLOODGATE_PROCESSES: z
    .string()
    .regex(/^(auto|[1-9][0-9]{0,2})$/, 'auto or a number of processes (1-999)')
    .optional(),
  FLOODGATE_REDIS_PREFIX: z.string().regex(/^[A-Za-z0-9:_.-]*$/).default('fg:'),
  FLOODGATE_DATA_DIR: z.string().default('.floodgate'),
  /**
   * `auto`: with neither REDIS_URL nor DATABASE_URL set, the zero-config start may change the
   * machine (install redis-server, add the `postgres` account, open a directory to it), each change
   * logged; `off`: it changes nothing and says what it needs (src/infra/system-changes.ts).
   */
  FLOODGATE_PROVISION: z.enum(['auto', 'off']).default('auto'),
  FLOODGATE_EMBEDDED_PG_PORT: decimal(z.number().int().min(1).max(65535)).default(54329),
  FLOODGATE_CACHE_MS: decimal(z.number().int().min(0).max(5000)).default(250),
  FLOODGATE_MAX_STREAMS: decimal(z.number().int().min(1).max(1_000_000)).default(10_000),
  FLOODGATE_BODY_LIMIT: decimal(z.number().int().min(1024).max(1 << 24)).default(16 * 1024),
  // Up to an hour: a webhook's timeoutMs may be 10 minutes, a deployment's handler's deadline an hour.
  FLOODGATE_SHUTDOWN_MS: decimal(z.number().int().min(0).max(3_600_000)).default(10_000),
  /** A stopping daemon's first part (daemon.ts drainHttp): it still answers, each answer its connection's last, and /readyz says 503. */
  FLOODGATE_DRAIN_GRACE_MS: decimal(z.number().int().min(0).max(600_000)).default(1000),
  /** How long a Postgres connection may go unanswered after a request before it is given up (db/client.ts). */
  FLOODGATE_PG_TIMEOUT_MS: decimal(z.number().int().min(500).max(600_000)).default(15_000),
  FLOODGATE_WORKER_CONCURRENCY: decimal(z.number().int().min(1).max(10_000)).default(256),
  FLOODGATE_JOB_BATCH: decimal(z.number().int().min(1).max(1000)).default(100),
  FLOODGATE_JOB_ATTEMPTS: decimal(z.number().int().min(1).max(100)).default(5),
  /** How long a ticket whose calls go unanswered while its downstream is away is sent back to the line, from its first time (service/downstream-health.ts). */
  FLOODGATE_DOWNSTREAM_HOLD_MS: decimal(z.number().int().min(0).max(3_600_000)).default(60_000),
  FLOODGATE_JOB_BACKOFF_MS: decimal(z.number().int().min(1).max(600_000)).default(200),
  FLOODGATE_AUTO_START_LIMIT: decimal(z.number().int().min(1).max(1_000_000)).default(10),
  FLOODGATE_JOB_LOCK_MS: decimal(z.number().int().min(1000).max(600_000)).default(10_000),
  FLOODGATE_DISPATCH_LEASE_MS: decimal(z.number().int().min(1000).max(600_000)).default(8_000),
  /** How long a cut item's ticket waits in doubt before Postgres is asked whether its sale committed (service/doubt-resolver.ts). */
  FLOODGATE_DOUBT_GRACE_MS: decimal(z.number().int().min(0).max(600_000)).default(10_000),
  /** How long admissions and pulls wait, after a Redis reconnect, for the compare of operators' writes with Postgres (catalog/op-revs.ts). */
  FLOODGATE_RECONNECT_HOLD_MS: decimal(z.number().int().min(0).max(60_000)).default(5_000),
  /** How long a start waits for a Redis or Postgres that does not answer yet (refused, starting up) before it gives up (infra/start-wait.ts); 0: not at all. */
  FLOODGATE_START_WAIT_MS: decimal(z.number().int().min(0).max(3_600_000)).default(60_000),
  FLOODGATE_HANDLERS_MODULE: z.string().optional(),
  FLOODGATE_RECONCILE_ON_START: bool.default(true),
  /** Origins allowed to read tickets from a browser: `*` (the ticket id is the only credential) or a comma-separated list. */
  FLOODGATE_CORS_ORIGINS: z
    .string()
    .default('*')
    // (`,` read as no origin at all: CORS off, silently.)
    .refine((s) => s.trim() === '*' || s.split(',').some((o) => o.trim() !== ''), '`*` or a comma-separated list of origins')
    // Each as a browser sends it in `Origin` (scheme://host[:port], lowercase, no path), which is
    // matched exactly: `https://Shop.example/` was kept as written and never matched.
    .refine((s) => s.trim() === '*' || s.split(',').map((o) => o.trim()).filter(Boolean).every((o) => URL.canParse(o) && new URL(o).origin !== 'null'), 'origins such as https://shop.example')
    .transform((s): '*' | string[] => (s.trim() === '*' ? '*' : s.split(',').map((o) => o.trim()).filter(Boolean).map((o) => new URL(o).origin))),
  FLOODGATE_ITEM_RETENTION_MS: decimal(z.number().int().min(60_000).max(365 * 24 * 3600 * 1000)).default(24 * 3600 * 1000),
  FLOODGATE_TICKET_STATE_TTL_MS: decimal(z.number().int().min(1000).max(30 * 24 * 3600 * 1000)).default(600_000),
  /** `production`: a role without keys stops the daemon instead of getting keys for the run. */
  NODE_ENV: z.string().optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Config = z.infer<typeof configSchema> & {
  /** The variables the configuration was read from: child processes (redis-server, apt-get) inherit them and PATH is searched in. */
  environment: Record<string, string | undefined>;
};

export class ConfigError extends Error {}

/** Parses the environment; every bad variable is listed in one error. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // (Blank counts as unset: `PORT=  ` was read as 0 before numbers had to be decimal.)
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v.trim() !== ''));
  const parsed = configSchema.safeParse(cleaned);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  return { ...parsed.data, environment: env };
}

/** What infra/ensure-stores.ts needs of the configuration. */
export function storeSettings(config: Config) {
  return {
    redisUrl: config.REDIS_URL,
    redisCluster: config.FLOODGATE_REDIS_CLUSTER,
    databaseUrl: config.DATABASE_URL,
    dataDir: config.FLOODGATE_DATA_DIR,
    provision: config.FLOODGATE_PROVISION,
    embeddedPgPort: config.FLOODGATE_EMBEDDED_PG_PORT,
    env: config.environment,
  };
}

/** The configuration as the daemon reads it at start, with what the log should say about where it came from. */
export interface Settings {
  config: Config;
  /** The `.env` file read, and the names it set (none when it does not exist). */
  envFile: { path: string; names: string[] };
  unknown: { name: string; suggestion: string | null }[];
}

/**
 * The one place that reads the process environment: `.env` in `cwd` when present, under the
 * environment (config/README.md). Throws ConfigError listing every bad variable.
 */
export function readSettings(cwd: string, env: Record<string, string | undefined> = process.env, opts: { /** A worker of FLOODGATE_PROCESSES: its primary read the file and handed it all over. */ envFile?: boolean } = {}): Settings {
  const file = path.resolve(cwd, '.env');
  const fileEnv = opts.envFile === false ? {} : readEnvFile(file);
  const config = loadConfig(overEnvFile(fileEnv, env));
  return { config, envFile: { path: file, names: Object.keys(fileEnv) }, unknown: unknownVariables(Object.keys(env), Object.keys(fileEnv)) };
}

/**
 * The variables readSettings would warn about as unknown, read without parsing the configuration:
 * what main.ts names when the configuration is refused (a misspelt name is often why).
 */
export function unknownHere(cwd: string, env: Record<string, string | undefined> = process.env, opts: { envFile?: boolean } = {}) {
  let fileNames: string[] = [];
  try {
    if (opts.envFile !== false) fileNames = Object.keys(readEnvFile(path.resolve(cwd, '.env')));
  } catch {
    // (the file unreadable: readSettings says so)
  }
  return unknownVariables(Object.keys(env), fileNames);
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
  // (A byte-order mark, as some editors save UTF-8, was read as part of the first name: `\ufeffPORT`,
  // warned about as unknown, and the file's PORT ignored.)
  return parseEnv(text.replace(/^\ufeff/, '')) as Record<string, string>;
}

/**
 * The file's variables under the environment's: a variable the environment sets (not blank) wins.
 * Blank — empty or spaces — counts as unset, as loadConfig reads it: `PORT="  "` in the
 * environment hid the file's PORT and the daemon listened on 8080.
 */
export function overEnvFile(file: Record<string, string>, env: Record<string, string | undefined>): Record<string, string | undefined> {
  const merged: Record<string, string | undefined> = { ...file };
  for (const [k, v] of Object.entries(env)) if (v !== undefined && (v.trim() !== '' || !(k in file))) merged[k] = v;
  return merged;
}

/**
 * Set by the primary of FLOODGATE_PROCESSES in its workers' environment: a worker of *this*
 * daemon's group (it takes its primary's configuration and answers its scrapes), not a process
 * some other node:cluster parent forked (PM2's cluster mode), which is a daemon of its own.
 */
export const GROUP_WORKER = 'FLOODGATE_GROUP_WORKER';
export const isGroupWorkerEnv = (env: Record<string, string | undefined> = process.env) => env[GROUP_WORKER] === '1';

const knownNames = [...Object.keys(configSchema.shape), GROUP_WORKER];

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
      // Compared without the prefix too, so FLOODGATE_PORT points at PORT.
      const bare = (n: string) => n.toUpperCase().replace(/^FLOODGATE_/, '');
      const [best] = knownNames
        .map((k) => ({ k, d: Math.min(editDistance(name.toUpperCase(), k), editDistance(bare(name), bare(k))) }))
        .sort((a, b) => a.d - b.d);
      return { name, suggestion: best && best.d <= Math.min(3, Math.ceil(bare(best.k).length / 5)) ? best.k : null };
    });
}

/** Edits (insert, delete, replace, swap of neighbours) between two names. */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[a.length][b.length];
}

export interface RunKeys {
  config: Config;
  /** Keys made for this run, by role (empty when every role has keys of its own). */
  generated: { operator?: string; service?: string };
  /** Where the generated keys are written, as `OPKEY=…` / `SVCKEY=…` lines for a shell. */
  file: string | null;
  /**
   * Writes the file (or, for a run with keys of its own, removes a stale one): once the run is
   * listening. Written at once, a second start in the same folder that then failed on the port in
   * use replaced the running daemon's keys with its own dead ones (the quick start's curl: 401).
   */
  publish(): void;
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
  if (!missing.length) return { config, generated: {}, file: null, publish: () => rmSync(file, { force: true }) };
  if (config.NODE_ENV === 'production')
    throw new ConfigError(
      `invalid configuration:\n${missing.map((r) => `  FLOODGATE_${r.toUpperCase()}_KEYS: no key configured (NODE_ENV=production makes no keys for you)`).join('\n')}`,
    );
  const generated: RunKeys['generated'] = {};
  for (const role of missing) generated[role] = `dev-${role === 'operator' ? 'op' : 'svc'}-${randomBytes(18).toString('base64url')}`;
  const lines = [`# Keys floodgate made for its run started ${new Date().toISOString()} (pid ${process.pid}); valid while it runs.`];
  if (generated.operator) lines.push(`OPKEY=${generated.operator}`);
  if (generated.service) lines.push(`SVCKEY=${generated.service}`);
  const publish = () => {
    mkdirSync(dataDir, { recursive: true });
    rmSync(file, { force: true }); // a file left by another user keeps its mode on overwrite
    writeFileSync(file, `${lines.join('\n')}\n`, { mode: 0o600 });
  };
  return {
    publish,
    config: {
      ...config,
      FLOODGATE_OPERATOR_KEYS: generated.operator ? [generated.operator] : config.FLOODGATE_OPERATOR_KEYS,
      FLOODGATE_SERVICE_KEYS: generated.service ? [generated.service] : config.FLOODGATE_SERVICE_KEYS,
    },
    generated,
    file,
  };
}

/** What to print when keys were made: the keys themselves, plainly, and where they are kept. */
export function runKeysNotice({ generated, file }: RunKeys, cwd: string): string {
  const shown = file && path.relative(cwd, file).startsWith('..') ? file : path.relative(cwd, file ?? '');
  const lines = ['', 'Floodgate: no keys were configured, so these were made for this run only:'];
  if (generated.operator) lines.push(`  operator key (FLOODGATE_OPERATOR_KEYS): ${generated.operator}`);
  if (generated.service) lines.push(`  service key  (FLOODGATE_SERVICE_KEYS):  ${generated.service}`);
  lines.push(`They are also in ${shown} (\`. ${shown}\` sets OPKEY and SVCKEY).`);
  lines.push('Configure keys of your own to keep them; with NODE_ENV=production the daemon refuses to start without them.', '');
  return lines.join('\n');
}
