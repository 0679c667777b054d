/**
 * The composition root: config → logger → Redis/Postgres → modules → HTTP → graceful stop.
 * The only place that creates connections and wires modules together.
 */
import { serve, type ServerType } from '@hono/node-server';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createApp } from './api/app.js';
import { describeError } from './api/errors.js';
import { probe, READY_TIMEOUT_MS } from './api/routes/ops.js';
import { createCatalog } from './catalog/catalog.js';
import { keysForRun, loadConfig, overEnvFile, readEnvFile, runKeysNotice, unknownVariables, type Config } from './config.js';
import { connectDb, migrateDb } from './db/client.js';
import { createItemsStore } from './db/items-store.js';
import { ensurePostgres } from './infra/ensure-postgres.js';
import { ensureRedis } from './infra/ensure-redis.js';
import { connectRedis } from './infra/redis-client.js';
import { systemClock, type Clock } from './kernel/clock.js';
import { createLogger, type Logger } from './kernel/logger.js';
import { every } from './kernel/loop.js';
import { redactUrl } from './kernel/redact-url.js';
import { createMetrics, showItems } from './kernel/metrics.js';
import { createQueue, type QueueDeps } from './queue/queue.js';
import { readOutcome } from './db/outcomes.js';
import { createHandlerRegistry, type HandlerRegistry } from './service/registry.js';
import { createService } from './service/service.js';
import { startDispatcher } from './scheduler/dispatcher.js';
import { startLedger } from './service/ledger.js';
import { createLedgerFeed } from './queue/ledger-feed.js';
import { createGateStore } from './queue/gate-store.js';
import { withScripts } from './queue/scripts.js';
import { startController } from './scheduler/controller.js';
import { createSampleRecorder } from './scheduler/sample-recorder.js';
import { createPgPressure } from './scheduler/pg-pressure.js';
import { createStockLedger } from './db/stock-ledger.js';
import { createPgHealth } from './db/health.js';
import { startStockKeeper } from './catalog/stock-keeper.js';
import { startRetention } from './catalog/retention.js';
import { createReservations } from './service/reservations.js';
import type { HandlerSpec } from './service/handler.js';
import { parseKeyScopes } from './access/keys.js';
import { createTokenKeyStore } from './db/token-keys.js';
import { createKeyRing } from './tokens/key-ring.js';
import { createTokens } from './tokens/tokens.js';
import { startSeriesRecorder } from './scheduler/series-recorder.js';

export interface Daemon {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** Redis, Postgres (migrated) and the modules over them: what the daemon and the CLI share. */
async function openCore(config: Config, log: Logger, clock: Clock) {
  const dataDir = path.resolve(config.FLOODGATE_DATA_DIR);
  const redisInfra = await ensureRedis({ url: config.REDIS_URL, dataDir: path.join(dataDir, 'redis'), log, autoInstall: config.FLOODGATE_AUTO_INSTALL, env: process.env });
  const pgInfra = await ensurePostgres({ url: config.DATABASE_URL, dataDir: path.join(dataDir, 'postgres'), log, port: config.FLOODGATE_EMBEDDED_PG_PORT });

  const redis = await connectRedis(redisInfra.url, 'api', log);
  const dbHandle = connectDb(pgInfra.url, { max: 10 });
  await migrateDb(dbHandle);

  const handlers = createHandlerRegistry();
  if (config.FLOODGATE_HANDLERS_MODULE) await loadHandlers(config.FLOODGATE_HANDLERS_MODULE, handlers, log);
  const joined = new Set<(itemId: string) => void>();
  const metrics = createMetrics();
  const queue = createQueue({
    redis,
    prefix: config.FLOODGATE_REDIS_PREFIX,
    clock,
    cacheMs: config.FLOODGATE_CACHE_MS,
    defaultKeyQuota: config.FLOODGATE_DEFAULT_KEY_QUOTA,
    onJoined: (id) => joined.forEach((f) => f(id)),
    onWaited: (itemId, predictedMs, actualMs) => {
      metrics.waitSeconds.observe({ item: itemId }, actualMs / 1000);
      if (predictedMs !== null && actualMs > 0) metrics.etaError.observe({ item: itemId }, Math.abs(actualMs - predictedMs) / actualMs);
    },
    archived: (ref) => readOutcome(dbHandle.sql, ref) as ReturnType<NonNullable<QueueDeps['archived']>>,
  });
  const store = createItemsStore(dbHandle.db);
  const gateStore = createGateStore(withScripts(redis), config.FLOODGATE_REDIS_PREFIX);
  const catalog = createCatalog({
    queue,
    store,
    stock: createStockLedger(dbHandle.sql),
    handlers,
    clock,
    log: log.child({ module: 'catalog' }),
    resetController: (itemId) => gateStore.requestReset(itemId),
    autoCap: config.FLOODGATE_AUTO_START_LIMIT,
  });
  const close = async () => {
    redis.disconnect();
    await dbHandle.close();
    await pgInfra.stop();
    await redisInfra.stop();
  };
  return { redisInfra, pgInfra, redis, dbHandle, handlers, queue, catalog, gateStore, store, joined, metrics, close };
}

export async function startDaemon(config: Config, log: Logger, clock: Clock = systemClock): Promise<Daemon> {
  const { redisInfra, pgInfra, redis, dbHandle, handlers, queue, catalog, gateStore, store, joined, metrics, close } = await openCore(config, log, clock);
  const me = `${os.hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const samples = createSampleRecorder(gateStore, (itemId) => queue.peek(itemId)?.snap.controller?.probeStart ?? null);
  const restored = await catalog.restore();
  await queue.activateAll();
  if (restored) log.warn({ restored }, 'items restored into redis from postgres');
  if (config.FLOODGATE_RECONCILE_ON_START) await catalog.reconcile({ idleOnly: true });
  const pg = createPgHealth(dbHandle.sql, log.child({ module: 'postgres' }));
  const keyRing = createKeyRing(createTokenKeyStore(dbHandle.sql));
  await keyRing.start();
  const tokens = createTokens({ keys: keyRing, redis, prefix: config.FLOODGATE_REDIS_PREFIX, queue, clock, log: log.child({ module: 'tokens' }), issuer: config.FLOODGATE_PUBLIC_URL ?? 'floodgate' });
  // A Redis that restarts without its data (or is flushed) loses every line: re-create the items
  // from Postgres at once on a reconnect, and within a second of a flush (no reconnect to see).
  const restoreLost = () =>
    catalog.restoreIfLost().then(async (n) => {
      if (!n) return;
      log.warn({ restored: n }, 'items restored into redis from postgres');
      await queue.activateAll();
    });
  // After a reconnect every item is active again for a minute: what an outage left undone is picked up.
  redis.on('ready', () =>
    void restoreLost()
      .then(() => queue.activateAll())
      .catch((err) => log.warn({ err: String(err) }, 'restore after reconnect failed')),
  );

  const bullRedis = await connectRedis(redisInfra.url, 'jobs', log);
  const pgPressure = createPgPressure(clock);
  const service = createService({
    bullRedis,
    sql: dbHandle.sql,
    pg,
    queue,
    handlers,
    log: log.child({ module: 'service' }),
    jobs: {
      prefix: config.FLOODGATE_REDIS_PREFIX,
      attempts: config.FLOODGATE_JOB_ATTEMPTS,
      batch: config.FLOODGATE_JOB_BATCH,
      backoffMs: config.FLOODGATE_JOB_BACKOFF_MS,
      concurrency: config.FLOODGATE_WORKER_CONCURRENCY,
      lockDurationMs: config.FLOODGATE_JOB_LOCK_MS,
      stalledIntervalMs: Math.max(500, Math.round(config.FLOODGATE_JOB_LOCK_MS / 2)),
    },
    now: () => clock.now(),
    onSell: (ms) => pgPressure.record(ms),
    onSample: (s) => {
      samples.record(s);
      metrics.downstreamLatency.observe({ item: s.itemId }, s.latencyMs / 1000);
      metrics.downstreamCalls.inc({ item: s.itemId, result: s.result });
    },
    onSettled: (itemId, status) => {
      metrics.settles.inc({ item: itemId, status });
      dispatcher.wake();
    },
  });
  const dispatcher = startDispatcher(
    { queue, handlers, jobs: service.jobs, clock, pg, log: log.child({ module: 'dispatcher' }), onAdmitted: (itemId, n) => metrics.admissions.inc({ item: itemId }, n), selfLimitedCap: (c) => pgPressure.cap(c) },
    { idleMs: 100, batch: 200, dispatchLeaseMs: config.FLOODGATE_DISPATCH_LEASE_MS, autoCap: config.FLOODGATE_AUTO_START_LIMIT },
  );
  joined.add((itemId) => dispatcher.wake(itemId));
  pg.onUp(() => {
    dispatcher.wake();
    void catalog.reconcile({ idleOnly: true }).catch((err) => log.warn({ err: String(err) }, 'reconcile after postgres came back failed'));
  });

  const controller = startController(
    {
      store: gateStore,
      queue,
      handlers,
      clock,
      log: log.child({ module: 'gate' }),
      events: {
        leaderChange: (itemId) => metrics.gateLeaderChanges.inc({ item: itemId }),
        // Limit, pace, baseline and latencies reach Redis and every daemon's item view, which the
        // scrape shows (showItems); in-flight as the controller counted it and probes are the leader's.
        published: (itemId, s, v) => {
          metrics.gateInFlight.set({ item: itemId }, v.inflight);
          const seen = probesSeen.get(itemId) ?? s.probes;
          if (s.probes > seen) metrics.gateProbes.inc({ item: itemId }, s.probes - seen);
          probesSeen.set(itemId, s.probes);
        },
        largeChange: (itemId, before, after) => {
          log.info({ itemId, before, after }, 'gate limit changed a lot');
          void store
            .audit({ itemId, actor: 'controller', keyId: me, before: { maxInFlight: before.limit, rate: before.rate }, after: { maxInFlight: after.limit, rate: after.rate } })
            .catch((err) => log.warn({ err: String(err) }, 'gate audit failed'));
        },
      },
    },
    { tickMs: 100, leaseMs: 2000, me, startLimit: config.FLOODGATE_AUTO_START_LIMIT },
  );
  const probesSeen = new Map<string, number>();

  const ledger = startLedger(
    { queue, feed: createLedgerFeed(redis, config.FLOODGATE_REDIS_PREFIX, me), sql: dbHandle.sql, log: log.child({ module: 'ledger' }), metrics },
    { everyMs: 500, batch: 1000, busyElu: 0.7, maxDeferMs: 15_000, stateTtlSec: Math.ceil(config.FLOODGATE_TICKET_STATE_TTL_MS / 1000) },
  );

  const reservations = createReservations({ sql: dbHandle.sql, queue, log: log.child({ module: 'reservations' }), onReturned: (itemId) => dispatcher.wake(itemId) });

  const loops = [
    ledger,
    // Reservations past their deadline are released within a second, by whichever daemon sees them first.
    every(250, 'reservation sweep', () => (pg.up ? reservations.sweep() : Promise.resolve()), log),
    every(500, 'lease sweep', () => queue.sweep(), log),
    every(1000, 'poll touch flush', () => queue.flush(), log),
    every(50, 'gate sample flush', () => samples.flush(), log),
    startStockKeeper({ queue, catalog, pg, log: log.child({ module: 'stock' }) }, { everyMs: 2000 }),
    startRetention({ queue, store, clock, log: log.child({ module: 'retention' }) }, { everyMs: 60_000, retentionMs: config.FLOODGATE_ITEM_RETENTION_MS }),
    every(1000, 'redis loss check', restoreLost, log),
    startSeriesRecorder({ queue, series: queue.series, clock, log: log.child({ module: 'series' }), effective: (item) => catalog.gateOf(item).effective }, { everyMs: 500 }),
  ];

  const app = createApp({
    queue,
    catalog,
    handlers,
    metrics,
    log: log.child({ module: 'api' }),
    keys: { service: config.FLOODGATE_SERVICE_KEYS, operator: config.FLOODGATE_OPERATOR_KEYS },
    bodyLimitBytes: config.FLOODGATE_BODY_LIMIT,
    reservations,
    corsOrigins: config.FLOODGATE_CORS_ORIGINS,
    scopes: parseKeyScopes(config.FLOODGATE_KEY_SCOPES),
    tokens,
    metricsKey: config.FLOODGATE_METRICS_KEY,
    ready: async () => {
      const [r, p] = await Promise.all([probe(() => redis.ping(), READY_TIMEOUT_MS - 100), probe(() => dbHandle.sql`select 1`, READY_TIMEOUT_MS - 100)]);
      return { redis: r, postgres: p };
    },
    // From the item views this daemon already holds (the dispatcher keeps them at most
    // FLOODGATE_CACHE_MS old): a scrape reads Redis only for an item it has never loaded.
    beforeScrape: async () => {
      const views = await Promise.all((await queue.itemIds()).map(async (id) => queue.peek(id) ?? (await queue.item(id))));
      showItems(
        metrics,
        views.flatMap((v) => (v ? [{ itemId: v.snap.def.itemId, waiting: v.snap.counts.waiting, admitted: v.snap.counts.admitted, gate: v.snap.gate, controller: v.snap.controller, stockLeft: v.snap.stockLeft }] : [])),
      );
    },
  });

  const server: ServerType = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: config.PORT, hostname: config.HOST }, () => resolve(s));
  });
  const address = server.address();
  const bound = typeof address === 'object' && address ? address : { address: config.HOST, port: config.PORT, family: 'IPv4' };
  const port = bound.port;
  const hostOf = (a: string) => (bound.family === 'IPv6' ? `[${a}]` : a);
  // `listen` is where the socket is bound; `url` is how to reach it from this machine.
  const local = bound.address === '0.0.0.0' ? '127.0.0.1' : bound.address === '::' ? '::1' : bound.address;
  const url = `http://${hostOf(local)}:${port}`;
  log.info({ listen: `${hostOf(bound.address)}:${port}`, url, redis: redactUrl(redisInfra.url), postgres: redactUrl(pgInfra.url) }, 'floodgate listening');

  let stopping: Promise<void> | null = null;
  return {
    url,
    port,
    stop: () =>
      (stopping ??= (async () => {
        log.info('stopping');
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await dispatcher.stop();
        await controller.stop();
        await service.stop();
        await Promise.all(loops.map((l) => l.stop()));
        await tokens.stop();
        pg.stop();
        await queue.flush().catch(() => {});
        await ledger.drain().catch((err) => log.warn({ err: String(err) }, 'final ledger drain failed'));
        bullRedis.disconnect();
        await close();
        log.info('stopped');
      })()),
  };
}

/** Registers a deployment's own handlers: the module exports `handlers` (an array of HandlerSpec). */
async function loadHandlers(modulePath: string, registry: HandlerRegistry, log: Logger) {
  const mod = (await import(pathToFileURL(path.resolve(modulePath)).href)) as { handlers?: HandlerSpec[]; default?: HandlerSpec[] };
  const specs = mod.handlers ?? mod.default;
  if (!Array.isArray(specs)) throw new Error(`${modulePath} must export \`handlers\`, an array of handler specs`);
  for (const spec of specs) registry.register(spec);
  log.info({ module: modulePath, handlers: specs.map((s) => s.name) }, 'custom handlers registered');
}

/** `reconcile [itemId]`: rebuilds Redis stock from Postgres (units left = total − rows sold). */
async function reconcileCommand(config: Config, log: Logger, itemId: string | undefined) {
  const core = await openCore(config, log, systemClock);
  try {
    const results = await core.catalog.reconcile({ itemId });
    console.log(JSON.stringify({ reconciled: results }, null, 2));
  } finally {
    await core.close();
  }
}

const networkCodes = new Set(['ECONNRESET', 'EPIPE', 'ECONNREFUSED', 'ETIMEDOUT', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH']);

async function main() {
  let config: Config;
  // `.env` in the working directory, when present; the environment wins over it.
  const envFile = path.resolve('.env');
  let fileEnv: Record<string, string>;
  try {
    fileEnv = readEnvFile(envFile);
    config = loadConfig(overEnvFile(fileEnv, process.env));
  } catch (err) {
    console.error(String((err as Error).message));
    process.exit(2);
  }
  const command = process.argv[2];
  // A command's output is its JSON on stdout; its logs go to stderr.
  const log = createLogger(config.LOG_LEVEL, { stderr: command !== undefined });
  if (Object.keys(fileEnv).length) log.info({ file: envFile, variables: Object.keys(fileEnv).length }, 'read .env');
  for (const { name, suggestion } of unknownVariables(Object.keys(process.env), Object.keys(fileEnv)))
    log.warn({ variable: name, didYouMean: suggestion ?? undefined }, 'unknown configuration variable ignored');
  if (command === 'reconcile') {
    await reconcileCommand(config, log, process.argv[3]).catch((err) => {
      log.fatal({ err: String(err?.stack ?? err) }, 'reconcile failed');
      process.exit(1);
    });
    return;
  }
  if (command !== undefined) {
    console.error(`unknown command ${command}; commands: reconcile [itemId]`);
    process.exit(2);
  }
  let keys: ReturnType<typeof keysForRun>;
  try {
    keys = keysForRun(config, path.resolve(config.FLOODGATE_DATA_DIR));
  } catch (err) {
    console.error(String((err as Error).message));
    process.exit(2);
  }
  if (keys.file) {
    log.warn({ roles: Object.keys(keys.generated), file: keys.file }, 'no keys configured; made keys for this run (development mode)');
    process.stderr.write(`${runKeysNotice(keys, process.cwd())}\n`);
  }
  const daemon = await startDaemon(keys.config, log).catch((err) => {
    log.fatal({ err: String(err?.stack ?? err) }, 'failed to start');
    process.exit(1);
  });
  const shutdown = (signal: string) => {
    log.info({ signal }, 'shutdown requested');
    const force = setTimeout(() => {
      log.error('shutdown timed out; exiting');
      process.exit(1);
    }, config.FLOODGATE_SHUTDOWN_MS);
    force.unref();
    daemon.stop().then(
      () => process.exit(0),
      (err) => {
        log.error({ err: String(err) }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  // A promise nobody awaited, or a socket error nobody listened for (a store's connection reset
  // under a library that forgot its handler), must not take the daemon down mid-sale: every state
  // it keeps lives in Redis and Postgres, and the loops recover. Anything else uncaught is a bug
  // whose state cannot be trusted: log it and exit (a supervisor restarts us; nothing is lost).
  process.on('unhandledRejection', (err) => log.error({ err: describeError(err) }, 'unhandled rejection'));
  process.on('uncaughtException', (err) => {
    if (networkCodes.has((err as { code?: string }).code ?? '')) return log.error({ err: describeError(err) }, 'uncaught network error');
    log.fatal({ err: describeError(err) }, 'uncaught exception; exiting');
    process.exit(1);
  });
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) void main();
