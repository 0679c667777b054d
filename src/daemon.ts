/**
 * The composition root: stores → modules → background loops → HTTP → graceful stop. The only
 * place that creates connections and wires modules together; main.ts (the command line) and the
 * tests both start the daemon through it.
 *
 * Each step below uses only names built above it. Where two modules must call each other (the
 * service's settled jobs wake the dispatcher, which hands the service its jobs), the call goes
 * through `events`, which exists before either: the dispatcher subscribes once it is built.
 */
import { EventEmitter } from 'node:events';
import { createServer as createHttpServer, type Server, type ServerOptions, type ServerResponse } from 'node:http';
import { getRequestListener, serve, type ServerType } from '@hono/node-server';
import type { Cluster } from 'ioredis';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { evictionHazard, infoRefusal, isCluster, memoryState, serverTime, type RedisLike } from './redis/client.js';
import { describeError } from './api/errors.js';
import { createApp } from './api/app.js';
import { probe, READY_TIMEOUT_MS } from './api/routes/ops.js';
import { createCatalog } from './catalog/catalog.js';
import { createOpRevs, OP_REV_CHECK_MS, OP_REV_FULL_MS } from './catalog/op-revs.js';
import { createReconnectFence } from './redis/reconnect-fence.js';
import { createOpRevRows } from './db/op-revs.js';
import { createDrawSizes } from './db/draw-sizes.js';
import { createOpMarks } from './queue/op-marks.js';
import { storeSettings, type Config } from './config.js';
import { connectDb, migrateDb, pingDb, type DbHandle } from './db/client.js';
import { createItemsStore } from './db/items-store.js';
import { ensureStores, storeFailure } from './infra/ensure-stores.js';
import { untilReachable } from './infra/start-wait.js';
import { connectRedis, describeTarget, NODE_BACK_EVENT } from './infra/redis-client.js';
import { steadyClock, type Clock } from './kernel/clock.js';
import { redisTimeClock } from './kernel/redis-time.js';
import type { Logger } from './kernel/logger.js';
import { every } from './kernel/loop.js';
import { descriptorWatch } from './kernel/descriptors.js';
import { settlesWithin, withTimeout } from './kernel/wait.js';
import { redactUrl } from './kernel/redact-url.js';
import { createMetrics, forgetItems } from './kernel/metrics.js';
import { tellItems, workerMetrics } from './kernel/cluster-metrics.js';
import { isClusterWorker } from './processes.js';
import { createLine, type LineDeps } from './queue/line.js';
import { readEnds, readLostTicket, readOutcome } from './db/outcomes.js';
import { releasedAndReturned } from './db/orders.js';
import { buyersOf } from './db/sales.js';
import { isPostgresBusy, isPostgresUnavailable } from './db/faults.js';
import { createLostTickets } from './queue/lost-tickets.js';
import { createHandlerRegistry, type HandlerRegistry } from './service/registry.js';
import { SetupNeeded } from './infra/system-changes.js';
import { createService } from './service/service.js';
import { downstreamHealth } from './service/downstream-health.js';
import { startDispatcher } from './scheduler/dispatcher.js';
import { startLedger } from './service/outcome-ledger.js';
import { createLedgerFeed } from './service/outcome-ledger-feed.js';
import { createGateStore } from './scheduler/gate-store.js';
import { startController } from './scheduler/controller.js';
import { createSampleRecorder } from './scheduler/sample-recorder.js';
import { createPgPressure } from './scheduler/pg-pressure.js';
import { createStockRows } from './db/stock-rows.js';
import { createStockCounters } from './service/stock-counters.js';
import { createUnsureCalls } from './service/unsure-calls.js';
import { controllerView } from './scheduler/controller-view.js';
import { createSeriesStore } from './scheduler/series-store.js';
import { createInviteUses } from './access/invite-uses.js';
import { createInviteUseRows } from './db/invite-uses.js';
import { createPgHealth, stuckAfterMsOf, writable } from './db/health.js';
import { createMemoryGuard } from './queue/memory-guard.js';
import { startStockKeeper } from './catalog/stock-keeper.js';
import { startDoubtResolver } from './service/doubt-resolver.js';
import { startHeldWinnerWatch } from './service/held-winners.js';
import { startRetention } from './catalog/retention.js';
import { createReservations } from './service/reservations.js';
import type { HandlerSpec } from './service/handler.js';
import { parseKeyScopes } from './access/keys.js';
import { clockSlewKey, itemKeys, readyProbeKey } from './redis/keys.js';
import { createTokenKeyStore } from './db/token-keys.js';
import { createKeyRing } from './tokens/key-ring.js';
import { createTokens, type Tokens } from './tokens/tokens.js';
import { startSeriesRecorder } from './scheduler/series-recorder.js';
import type { ItemGaugeView } from './kernel/item-gauges.js';
import type { CachedItem } from './queue/item-cache.js';
import type { Outcome } from './queue/types.js';
import { answerClientErrors, refusedDotSegment, refusedWithoutHost, unservableRequest } from './api/client-errors.js';

export interface Daemon {
  url: string;
  port: number;
  /** The HTTP API; `app.request()` reaches it without the socket. */
  app: ReturnType<typeof createApp>;
  /**
   * The graceful stop, within FLOODGATE_SHUTDOWN_MS from its call. Resolves with whether it cut
   * jobs short: false when every job running finished; true when the budget ran out first and the
   * jobs left were dropped (they run again on another daemon; main.ts then exits 1).
   * `exiting`: the process exits once it resolves (main.ts): the steps after the jobs end at the
   * budget too, what they leave undone left as a crash leaves it. Otherwise (a daemon in a test's or
   * an embedder's process) they are waited for whole, so nothing of the daemon runs on after it.
   */
  stop(opts?: { exiting?: boolean }): Promise<{ jobsCutShort: boolean }>;
}

/** The connections every module is built over. */
export interface Stores {
  redis: RedisLike;
  /** For the calls that hand tickets out under a lease (infra/redis-client.ts, `admit`); default `redis`. */
  admitRedis?: RedisLike;
  dbHandle: DbHandle;
}

/** What happens in one module that another, built later, acts on. */
export type DaemonEvents = EventEmitter<{
  /** A ticket joined an item's line in this process. */
  joined: [itemId: string];
  /** A job settled (done or failed for good): capacity may have freed up. */
  settled: [itemId: string];
  /** Reserved units went back to an item's stock. */
  returned: [itemId: string];
}>;

/**
 * What the configuration says that only the daemon's modules can judge, checked before anything
 * starts (main.ts: a configuration error, exit 2): key scopes naming a key that does not exist.
 */
export function checkSettings(config: Config): void {
  parseKeyScopes(config.FLOODGATE_KEY_SCOPES, config.FLOODGATE_SERVICE_KEYS);
}

/** Redis and Postgres (migrated): the configured ones, or local ones found or started (infra/). */
export async function openStores(config: Config, log: Logger) {
  const infra = await ensureStores(storeSettings(config), log);
  const redisAt = describeTarget(infra.redis, redactUrl);
  const wait = { waitMs: config.FLOODGATE_START_WAIT_MS, log };
  const redis = await untilReachable('redis', redisAt, () => connectRedis(infra.redis, 'api', log), wait);
  const admitRedis = await connectRedis(infra.redis, 'admit', log).catch((err) => Promise.reject(storeFailure('redis', redisAt, err)));
  // A Redis set to evict keys drops a line's keys at its memory limit (a user's second ticket and
  // order, an operator's cap lost, a sale that never resumed): not started on. (BullMQ only wrote
  // a warning to stderr once its queues connected.)
  const evicting = (await memoryState(redis).catch(() => null))?.evicting;
  if (evicting) {
    redis.disconnect();
    admitRedis.disconnect();
    throw new SetupNeeded(`${redisAt}: ${evictionHazard(evicting)}`);
  }
  // A user INFO is refused to runs, but blind to Redis's memory and eviction policy (and BullMQ's
  // version check is skipped: service/jobs.ts).
  const infoRefused = await infoRefusal(redis).catch(() => null);
  if (infoRefused)
    log.warn({ redis: redisAt, err: infoRefused }, "redis refuses INFO to the daemon's user: its memory and maxmemory-policy cannot be read, so the eviction check and the memory guard (FLOODGATE_REDIS_MEMORY_LIMIT) are off; grant +info to the user");
  // Waited for until it answers a query, each try bounded; the migrations then take what they take.
  await untilReachable('postgres', redactUrl(infra.pgUrl), () => pingDb(infra.pgUrl), wait);
  await migrateDb(infra.pgUrl, log).catch((err) => Promise.reject(storeFailure('postgres', redactUrl(infra.pgUrl), err)));
  const dbHandle = connectDb(infra.pgUrl, { max: 10, timeoutMs: config.FLOODGATE_PG_TIMEOUT_MS });
  /** `pgTimeoutSec`: how long Postgres's statements still out may take before their connections are closed (default 5 s). */
  const close = async (pgTimeoutSec?: number) => {
    redis.disconnect();
    admitRedis.disconnect();
    await dbHandle.close(pgTimeoutSec);
    await infra.stop();
  };
  return { redis, admitRedis, dbHandle, redisTarget: infra.redis, pgUrl: infra.pgUrl, close, infoRefused: infoRefused !== null };
}

/**
 * How long a pull or a job waits for the outcome ledger's look at its tickets (admissions.dropHeldEnds):
 * a small part of the shortest lease a pull gives (1 s), which runs while it waits.
 */
const HELD_ENDS_TIMEOUT_MS = 200;
/**
 * Sale calls under way with none answered this long read as Postgres away for the items that sell
 * through it (views `paused`, no admissions) until one settles: a batch of sales takes
 * milliseconds, on a slow Postgres a second or two; the pressure signal (scheduler/pg-pressure.ts)
 * aims sales at under 5 s, and this does not cut in before it.
 */
const PG_STALL_MS = 5000;
/** How long a cut waits for the item's sales (queue/definitions.ts boughtWhileWaiting), and how many of the latest sales and of the latest succeeded ends it reads. */
const SALES_READ_TIMEOUT_MS = 2000;
const SALES_READ_ROWS = 20_000;
/**
 * How long a pre-queue draw waits for Postgres to record its size (admissions.ts runDraw) before it
 * gives the try up; the sweep tries again at its next round, and nothing is drawn meanwhile.
 */
const DRAW_SIZE_TIMEOUT_MS = 2000;
class PgAway extends Error {}

/** The modules over the stores, none of them running: what the daemon, the CLI and the HTTP tests share. */
export function wireModules(config: Config, log: Logger, clock: Clock, { redis, admitRedis, dbHandle }: Stores, handlers: HandlerRegistry = createHandlerRegistry()) {
  const events: DaemonEvents = new EventEmitter();
  const metrics = createMetrics();
  // Whether Postgres answers, as the sales see it (no timer runs until a sale finds it down).
  const pg = createPgHealth(
    dbHandle.sql,
    log.child({ module: 'postgres' }),
    { probeMs: 250, probeTimeoutMs: 5000, stuckAfterMs: stuckAfterMsOf(config.FLOODGATE_PG_TIMEOUT_MS) },
    () => dbHandle.endStaleReadOnly(),
  );
  metrics.sources.pgOldestCall = () => pg.oldestMs(performance.now()) / 1000;
  const memory = createMemoryGuard(redis, config.FLOODGATE_REDIS_MEMORY_LIMIT, log.child({ module: 'redis-memory' }), readyProbeKey(config.FLOODGATE_REDIS_PREFIX));
  // Whether each item's own downstream (a webhook's service, a module's) answers its calls, as this process's calls find it.
  // (Shared through a field of the item's gate hash, which every daemon reads with the item's view.)
  const gateKey = (itemId: string) => itemKeys(config.FLOODGATE_REDIS_PREFIX, itemId).gate;
  const downstream = downstreamHealth({
    now: () => clock.now(),
    log: log.child({ module: 'service' }),
    times: config.FLOODGATE_JOB_ATTEMPTS,
    holdMs: config.FLOODGATE_DOWNSTREAM_HOLD_MS,
    shared: {
      read: (itemId) => {
        const v = queue.items.peek(itemId);
        return v && { until: v.snap.gateHash.dsAway ? Number(v.snap.gateHash.dsAway) : null, readAt: v.readAt, life: v.snap.incarnation };
      },
      mark: (itemId, until) => redis.hset(gateKey(itemId), 'dsAway', String(until)),
      clear: (itemId) => void redis.hdel(gateKey(itemId), 'dsAway').catch(() => {}),
    },
  });
  const store = createItemsStore(dbHandle.db);
  const drawSizes = createDrawSizes(dbHandle.sql);
  /** Items whose draw waits for Postgres to record its size (said once each, see drawSizes below). */
  const drawsWaiting = new Set<string>();
  /** The statement keeping each draw's size, while it runs (see drawSizes below). */
  const keeping = new Map<string, Promise<number>>();
  // Ids of tickets Redis lost or removed, answered from Postgres; the items' secrets are loaded
  // in the background (startDaemon), never on a request.
  const lostTickets = createLostTickets({
    clock,
    read: (ref) => readLostTicket(dbHandle.sql, ref),
    secrets: (since) => store.secrets(since),
    saleResult: (handler, sale) => {
      const spec = handler === undefined ? undefined : handlers.get(handler);
      return spec?.saleResult ? spec.saleResult(sale) : { id: sale.id };
    },
  });
  // What the line's admission, join and cancel scripts look at as they are sent: startDaemon's
  // fence.sendable (the hold after a Redis reconnect, or NOT_READY while a connection is down);
  // nothing in the CLI and the HTTP tests.
  const admitHold: { current(): Promise<unknown> | null } = { current: () => null };
  const queue = createLine({
    redis,
    admitRedis,
    admitHold: () => admitHold.current(),
    prefix: config.FLOODGATE_REDIS_PREFIX,
    clock,
    cacheMs: config.FLOODGATE_CACHE_MS,
    defaultKeyQuota: config.FLOODGATE_DEFAULT_KEY_QUOTA,
    memoryFull: () => memory.full,
    onJoined: (id) => events.emit('joined', id),
    onWaited: (itemId, predictedMs, actualMs) => {
      metrics.waitSeconds.observe({ item: itemId }, actualMs / 1000);
      if (predictedMs !== null && actualMs > 0) metrics.etaError.observe({ item: itemId }, Math.abs(actualMs - predictedMs) / actualMs);
    },
    archived: (ref) => readOutcome(dbHandle.sql, ref) as ReturnType<NonNullable<LineDeps['archived']>>,
    lost: lostTickets,
    // Down, or sale calls under way with none answered for PG_STALL_MS (a silent Postgres fails
    // nothing until the driver's timeout): waiting users read `paused`, and nothing more is admitted onto it.
    // So too an item whose handler this daemon does not have (a module another daemon loaded, or
    // none does any more): nothing runs its tickets here, and they read an ETA counting down to nothing.
    // (And between the tries of sales while Postgres refuses their writes for want of a resource:
    // a try read as `open` for its moment; db/health.ts refusing.)
    // (And an item whose own downstream does not answer its calls: service/downstream-health.ts.)
    storeAway: (handler, itemId) => {
      const spec = handlers.get(handler);
      const now = performance.now();
      if (!spec || memory.refusing !== null) return true;
      if (spec.stockTable) return !pg.up || pg.stalledMs(now) > PG_STALL_MS || pg.refusing(now) !== null;
      // (Not for an item whose handler runs nothing here any more: made `external` while away, nothing would clear it.)
      return !!spec.handle && !spec.external && downstream.away(itemId);
    },
    // Bounded: a Postgres that stalls (silent, not down) must not hold every pull and webhook job
    // for the driver's own timeout; unread, the tickets run as before (it takes a rollback too).
    // Not at all while Postgres is known down (every pull and job waited out the bound).
    heldEnds: (refs) => (pg.up ? withTimeout(readEnds(dbHandle.sql, refs) as Promise<Map<string, Outcome>>, HELD_ENDS_TIMEOUT_MS, `outcome ledger read took over ${HELD_ENDS_TIMEOUT_MS} ms`) : Promise.reject(new PgAway())),
    saleReleased: (itemId, ref, userId) =>
      pg.up ? withTimeout(releasedAndReturned(dbHandle.sql, itemId, ref, userId), HELD_ENDS_TIMEOUT_MS, `order read took over ${HELD_ENDS_TIMEOUT_MS} ms`) : Promise.resolve(false),
    onHeldEndsUnread: (err) => {
      if (!(err instanceof PgAway)) log.warn({ err: String(err) }, 'outcome ledger not read for tickets about to run (they run)');
    },
    // A draw's size is recorded before the draw is shown, and a draw waits for it: Postgres away,
    // nothing is drawn (the tickets read as awaiting it; the sweep tries again each round).
    // Said once per item when its draw starts to wait, and once when it is drawn after all: the loops that draw report their failures throttled, so a draw held back by Postgres
    // could go unsaid while that loop was still reported failing for something else.
    drawSizes: {
      keep: async (itemId, seedHash, n) => {
        try {
          if (!pg.up) throw new PgAway('postgres away: pre-queue draw size not recorded');
          // One statement in flight per draw: a try that gave up at 2 s leaves its statement running
          // (nothing cancels it), and the next try waits on that one rather than sending another
          // (behind a lock on the table, each try took a connection until the pool was full and an
          // unrelated item's write timed out — a review).
          const key = `${itemId}\u0000${seedHash}`;
          let kept = keeping.get(key);
          if (!kept) {
            kept = drawSizes.keep(itemId, seedHash, n).finally(() => keeping.delete(key));
            kept.catch(() => {}); // (its waiters see the failure; none may be left)
            keeping.set(key, kept);
          }
          return await withTimeout(kept, DRAW_SIZE_TIMEOUT_MS, `pre-queue draw size not recorded within ${DRAW_SIZE_TIMEOUT_MS} ms`);
        } catch (err) {
          if (!drawsWaiting.has(itemId)) {
            drawsWaiting.add(itemId);
            log.warn({ itemId, err: String(err) }, 'pre-queue draw waits for postgres to record its size');
          }
          throw err;
        }
      },
      // (Drawn, by this daemon or another: the one place a wait said is over, so it is not kept for good.)
      drawn: (itemId) => void (drawsWaiting.delete(itemId) && log.info({ itemId }, 'pre-queue drawn after waiting for its size')),
      recorded: () => (pg.up ? withTimeout(drawSizes.recorded(), DRAW_SIZE_TIMEOUT_MS, `pre-queue draw sizes not read within ${DRAW_SIZE_TIMEOUT_MS} ms`) : Promise.reject(new PgAway('postgres away: pre-queue draw sizes not read'))),
    },
    // What a cut looks at (queue/definitions.ts): the ends the ledger holds as succeeded, and for a
    // handler that sells through Postgres its live sales too (one the ledger has not written yet; a
    // released order's ticket told succeeded stays so). Bounded: the cut waits for it.
    salesOf: (itemId, handler) => {
      if (!pg.up || pg.stalledMs(performance.now()) > PG_STALL_MS) return Promise.reject(new PgAway());
      const table = handlers.get(handler)?.stockTable;
      // Postgres ends the read's statements at the bound; the wait here, a little longer, is for a Postgres that does not answer at all.
      const bound = SALES_READ_TIMEOUT_MS + 500;
      return withTimeout(buyersOf(dbHandle.sql, itemId, table ?? null, SALES_READ_ROWS, SALES_READ_TIMEOUT_MS), bound, `sales read took over ${bound} ms`);
    },
    // Postgres away (known down or stalled, or the read's connection lost or refused): a sell-out
    // or the window's end waits for it (nothing is admitted meanwhile). Answering too slowly (a
    // Postgres that stays slow): the cut goes on without the look, as a close does (one that
    // waited on it never ended the window).
    onSalesUnread: (itemId, err) => {
      const away = err instanceof PgAway || isPostgresUnavailable(err);
      log.warn({ itemId, err: String(err) }, away ? 'sales of an item to cut not read (postgres away): a sell-out or window end waits, a close goes on' : 'sales of an item to cut not read in time: the cut goes on without them');
      return away ? 'wait' : 'go';
    },
    onWindowEndFailed: (itemId, err) => log.warn({ itemId, err: String(err) }, "sale window's end not cut yet: tried again at the next round"),
  });
  const gateStore = createGateStore(redis, config.FLOODGATE_REDIS_PREFIX, clock);
  const stock = createStockCounters({ redis, prefix: config.FLOODGATE_REDIS_PREFIX, clock, items: queue.items });
  const series = createSeriesStore(redis, config.FLOODGATE_REDIS_PREFIX, clock);
  const stockRows = createStockRows(dbHandle.sql);
  // Operators' writes survive a Redis rollback (their revisions: catalog/op-revs.ts).
  const opRevRows = createOpRevRows(dbHandle.sql);
  const opMarks = createOpMarks(redis, config.FLOODGATE_REDIS_PREFIX);
  const opRevs = createOpRevs({
    rows: opRevRows,
    marks: opMarks,
    apply: (scope) => catalog.reapply(scope),
    log: log.child({ module: 'op-revs' }),
  });
  // Postgres pressure: each sell's time caps what seckill/coupon items may hold admitted (the
  // dispatcher enforces it; the item view shows it as the gate's effective maxInFlight).
  const pgPressure = createPgPressure(clock);
  const catalog = createCatalog({
    queue,
    store,
    stockRows,
    counters: stock,
    gates: gateStore,
    handlers,
    clock,
    log: log.child({ module: 'catalog' }),
    autoCap: config.FLOODGATE_AUTO_START_LIMIT,
    selfLimitedCap: (c) => pgPressure.cap(c),
    ops: { within: opRevs.within, locked: opRevRows.locked, revs: opRevRows.revs, mark: (scope, rev) => opMarks.set(scope, rev, { top: false }) },
  });
  const reservations = createReservations({ sql: dbHandle.sql, queue, stock, log: log.child({ module: 'reservations' }), onReturned: (itemId) => events.emit('returned', itemId), now: () => clock.now() });
  return { clock, events, handlers, metrics, pg, memory, downstream, queue, stock, stockRows, series, store, gateStore, catalog, opRevs, opLocked: opRevRows.locked, reservations, lostTickets, pgPressure, admitHold };
}

export type Modules = ReturnType<typeof wireModules>;

/** The HTTP API over the modules; `tokens` when admission tokens are signed (the daemon always). */
export interface AppOptions {
  tokens?: Tokens;
  /** While a Redis reconnect's check runs: what joins, polls, cancels and pulls wait for (daemon.ts fence). */
  admitHold?: () => Promise<unknown> | null;
  /** How many Redis reconnects this process has seen. */
  reconnects?: () => number;
  /** True once a graceful stop has begun: /readyz answers 503 from then on. */
  stopping?: () => boolean;
}

export function wireApp(config: Config, log: Logger, { redis, dbHandle }: Stores, m: Modules, { tokens, admitHold, reconnects, stopping }: AppOptions = {}) {
  const { queue, metrics } = m;
  // From the item views this daemon holds that are still true (items.allViews: held ones read
  // after the item's last change notice; the others read, at most FLOODGATE_CACHE_MS old).
  // One gauge view per snapshot read, so the text of an item not read again is written once (item-gauges.ts).
  const gaugeViews = new WeakMap<object, ItemGaugeView>();
  const gaugeView = ({ snap }: CachedItem): ItemGaugeView => {
    let g = gaugeViews.get(snap);
    if (!g) gaugeViews.set(snap, (g = { itemId: snap.def.itemId, waiting: snap.counts.waiting, admitted: snap.counts.admitted, gate: snap.gate, ended: snap.closed || snap.soldOut, controller: controllerView(snap), stockLeft: snap.stockLeft }));
    return g;
  };
  const itemViews = async () => (await queue.items.allViews()).map(gaugeView);
  const storesReady = async (): Promise<{ redis: boolean; postgres: boolean; why?: string }> => {
    // Redis as the line uses it: one that takes writes. PING alone read `ok` while Redis was a
    // replica (every join refused READONLY), as `select 1` did for a read-only Postgres.
    const [r, p] = await Promise.all([probe(() => redis.set(readyProbeKey(config.FLOODGATE_REDIS_PREFIX), '1', 'PX', 5000), READY_TIMEOUT_MS - 100), probe(async () => {
        if (!(await writable(dbHandle.sql))) {
          void m.pg.readOnlySeen();
          throw new Error('postgres is read-only');
        }
      }, READY_TIMEOUT_MS - 100)]);
    // Set to evict keys (after the start, which refuses it): it takes writes and may drop a line's keys.
    const evicting = m.memory.evicting;
    if (evicting) return { redis: false, postgres: p, why: evictionHazard(evicting) };
    // Answering and refusing writes (MISCONF: a full disk under its AOF; READONLY): said as that,
    // not as "not answering" (the guard's word, read once a second).
    const refused = m.memory.refusing;
    if (!r && refused && m.memory.answered) return { redis: false, postgres: p, why: `redis refuses writes: ${refused}` };
    // Postgres answering, writable by its sessions' word, and refusing the sale's writes (a full disk).
    const refusing = m.pg.refusing(performance.now());
    if (refusing) return { redis: r, postgres: false, why: refusing };
    return { redis: r, postgres: p };
  };
  return createApp({
    queue,
    series: m.series,
    inviteUses: createInviteUses(redis, config.FLOODGATE_REDIS_PREFIX, createInviteUseRows(dbHandle.sql)),
    catalog: m.catalog,
    handlers: m.handlers,
    metrics,
    log: log.child({ module: 'api' }),
    keys: { service: config.FLOODGATE_SERVICE_KEYS, operator: config.FLOODGATE_OPERATOR_KEYS },
    bodyLimitBytes: config.FLOODGATE_BODY_LIMIT,
    reservations: m.reservations,
    corsOrigins: config.FLOODGATE_CORS_ORIGINS,
    maxStreams: config.FLOODGATE_MAX_STREAMS,
    scopes: parseKeyScopes(config.FLOODGATE_KEY_SCOPES, config.FLOODGATE_SERVICE_KEYS),
    tokens,
    metricsKey: config.FLOODGATE_METRICS_KEY,
    clock: m.clock,
    watchClock: m.clock,
    // A stop under way (drainHttp): a load balancer that asks takes this daemon out of its pool
    // while it still answers, before its connections close. (The stores are asked still: they stay
    // open until the answers are done.)
    ready: async () => ({ ...(await storesReady()), ...(stopping?.() && { stopping: true }) }),
    itemViews,
    // Several processes on one port (FLOODGATE_PROCESSES): a scrape answers for all of them.
    scrape: isClusterWorker() ? workerMetrics(metrics) : undefined,
    admitHold,
    reconnects,
  });
}

/** Stores and modules, with the deployment's own handlers registered: what the daemon and the CLI share. */
export async function openCore(config: Config, log: Logger, clock: Clock) {
  // The module first: one that cannot load stops the start before it waits for (or starts) the stores.
  const handlers = createHandlerRegistry();
  if (config.FLOODGATE_HANDLERS_MODULE) await loadHandlers(config.FLOODGATE_HANDLERS_MODULE, handlers, log);
  const stores = await openStores(config, log);
  return { stores, ...wireModules(config, log, clock, stores, handlers) };
}

export async function startDaemon(config: Config, log: Logger, baseClock: Clock = steadyClock()): Promise<Daemon> {
  // The daemon keeps Redis's time: daemons on machines whose clocks disagree agree on leases.
  const time = redisTimeClock(baseClock);
  const clock = time.clock;
  const core = await openCore(config, log, clock);
  const slewKey = clockSlewKey(config.FLOODGATE_REDIS_PREFIX);
  await time.start(() => serverTime(core.stores.redis), log.child({ module: 'clock' }), {
    read: () => core.stores.redis.get(slewKey),
    write: (value, ttlMs) => core.stores.redis.set(slewKey, value, 'PX', ttlMs),
  });
  const { stores, events, handlers, metrics, pg, queue, store, gateStore, catalog, reservations } = core;
  const { redis, dbHandle } = stores;
  const me = `${os.hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const samples = createSampleRecorder(gateStore, (itemId) => {
    const snap = queue.items.peek(itemId)?.snap;
    return (snap && controllerView(snap)?.probeStart) ?? null;
  });
  const restored = await catalog.restore();
  const redrawLost = (when: string) =>
    queue.admissions.redrawLost().then(
      (n) => void (n && log.warn({ drawn: n }, `pre-queue draws redis had lost drawn again over their recorded sizes (${when})`)),
      (err: unknown) => log.warn({ err: String(err) }, `pre-queue draws not checked against their recorded sizes (${when}): the sweep draws them`),
    );
  // Before anything is admitted: a Redis that came back from older data while no daemon ran (a
  // restored snapshot, an AOF that lost its last second) may hold an item an operator had closed.
  await core.opRevs.check({ all: true }).catch((err) => log.warn({ err: String(err) }, 'operator writes not checked at start'));
  // And an item such a Redis holds that Postgres removed (retention) or never had: closed, before
  // its waiting tickets could be admitted and sold.
  await catalog.retireUnknown().catch((err) => log.warn({ err: String(err) }, 'items without a live row not checked at start'));
  // And a pre-queue whose draw such a Redis lost: drawn again over the size Postgres recorded,
  // before a join can take a seq inside it (admissions.redrawLost).
  await redrawLost('at start');
  // After the restore (which fills in the secrets of items defined before they were kept).
  await core.lostTickets.load().catch((err) => log.warn({ err: String(err) }, 'item secrets not read'));
  await queue.items.activateAll();
  if (restored) log.warn({ restored }, 'items restored into redis from postgres');
  const tokenStore = createTokenKeyStore(dbHandle.sql);
  const keyRing = createKeyRing(tokenStore, clock);
  await keyRing.start();
  const tokens = createTokens({ keys: keyRing, revocations: tokenStore, redis, prefix: config.FLOODGATE_REDIS_PREFIX, queue, clock, log: log.child({ module: 'tokens' }), issuer: config.FLOODGATE_PUBLIC_URL ?? 'floodgate' });
  // A Redis that restarts without its data (or is flushed) loses every line: re-create the items
  // from Postgres at once on a reconnect, and within a second of a flush (no reconnect to see).
  const restoreLost = () =>
    catalog.restoreIfLost().then(async (n) => {
      if (!n) return;
      log.warn({ restored: n }, 'items restored into redis from postgres');
      // (A pre-queue drawn before the loss is drawn again at once over its recorded size; a join
      // meanwhile waits for that draw, join-5.lua.)
      await redrawLost('after a restore');
      await queue.items.activateAll();
    });
  // A reconnect may be to a Redis that restarted from older data (a rollback): until this daemon
  // has compared the operators' writes with Postgres's (catalog/op-revs.ts), its dispatcher admits
  // nothing and pulls, joins, polls and cancels wait, so a close the rollback took cannot let a
  // ticket it had ended be admitted, handed out or cancelled, or a newcomer join (at most
  // FLOODGATE_RECONNECT_HOLD_MS: a Postgres that does not answer does not stop admissions).
  const fence = createReconnectFence({
    connections: [redis, stores.admitRedis],
    holdMs: config.FLOODGATE_RECONNECT_HOLD_MS,
    log,
    check: () => {
      // Abandonment counts again from now (polls answered 503 meanwhile recorded nothing), before any
      // admission after the reconnect can expire a head ticket.
      const idleClocks = queue.tickets.restartIdleClocks().catch((err) => log.warn({ err: String(err) }, 'abandonment clocks not restarted after a reconnect'));
      // A pre-queue whose draw the rollback took is drawn again over its recorded size, after the
      // operators' writes (one may be what gave the item its pre-queue) and before any join: a join
      // would fix the draw's size at the join counter the rollback left, and take a seq inside it.
      const writesThenDraws = core.opRevs.check({ all: true }).finally(() => redrawLost('after a reconnect'));
      return Promise.all([writesThenDraws, catalog.retireUnknown(), idleClocks]);
    },
  });
  core.admitHold.current = fence.sendable;
  const fenceUntilChecked = () => {
    // (And no ticket is answered from what this process kept of it before: tickets.ts forgetRecords.)
    queue.tickets.forgetRecords();
    fence.raise();
  };
  stores.admitRedis.on('ready', fenceUntilChecked);
  // Winners a Redis rollback put back in the line of an item held on its reservations, where no
  // unit comes back to admit them: held in doubt until their orders answer (service/held-winners.ts).
  const heldWinners = startHeldWinnerWatch(
    {
      queue,
      pg,
      sellsThroughPostgres: (handler) => !!handlers.get(handler)?.stockTable,
      log: log.child({ module: 'held-winners' }),
      now: () => clock.now(),
    },
    { everyMs: 1000, retryMs: 5000 },
  );
  // After a reconnect every item is active again while each loop looks once (items.ts ACTIVATE_ALL_MS): what an outage left undone is picked up.
  const afterReconnect = () => {
    // A restart may have rolled Redis back past operators' writes: every scope's mark is compared.
    fenceUntilChecked();
    // And past a held item's winners' admissions: such items are looked at again.
    heldWinners.recheck();
    // activateAll first: it also drops the copy of the item set read before, which the loss check reads.
    void queue.items
      .activateAll()
      .then(() => restoreLost())
      .catch((err) => log.warn({ err: String(err) }, 'restore after reconnect failed'));
  };
  redis.on('ready', afterReconnect);
  // On a Redis Cluster one master's failover is this daemon's reconnect for that master's slots,
  // and its replica may have lagged (a rollback of those items), but the cluster connection stays
  // ready throughout: only its slot map changes. Without this, a close the failover took stayed
  // undone for up to the minute's full compare (newcomers joined the closed item), and holders
  // whose polls were answered 503 meanwhile were expired as abandoned at the next admission.
  // (Both connections watch, each refreshing its own map: the first to see a change acts for both;
  // the map each starts from is the one it holds now, its first refresh long done.)
  const mastersOf = (conn: Cluster) => conn.slots.map((nodes) => nodes?.[0] ?? '').join(',');
  let seenMasters: string | null = null;
  for (const conn of [redis, stores.admitRedis]) {
    if (!isCluster(conn)) continue;
    seenMasters ??= mastersOf(conn);
    conn.on('refresh', () => {
      const now = mastersOf(conn);
      if (now === seenMasters) return;
      seenMasters = now;
      log.warn({ connection: conn === redis ? 'api' : 'admissions' }, 'redis cluster slots moved to other masters (a failover, or a reshard): operators\' writes compared and abandonment clocks restarted, as after a reconnect');
      afterReconnect();
    });
    // And one node's connection made again while the Cluster stayed ready (the node restarted in
    // place, or its connection was cut): the node took nothing before this (infra/redis-client.ts).
    conn.on(NODE_BACK_EVENT, (node: string) => {
      log.warn({ connection: conn === redis ? 'api' : 'admissions', node }, 'redis cluster node connected again (a restart in place, or a cut): operators\' writes compared and abandonment clocks restarted, as after a reconnect');
      afterReconnect();
    });
  }

  const bullRedis = await connectRedis(stores.redisTarget, 'jobs', log);
  // Postgres pressure: each sell's time caps what seckill/coupon items may hold admitted.
  const { pgPressure } = core;
  // (Those whose view this daemon holds, still served by a handler it runs: not a deleted item, nor one made `external` while away.)
  metrics.sources.downstreamAway = () => core.downstream.awayItems().filter((id) => queue.items.peek(id)?.storeAway());
  metrics.sources.pgPressure = () => {
    // For the largest own cap among the handlers that sell through Postgres (seckill, coupon: 1000).
    const own = Math.max(0, ...handlers.names().map((n) => handlers.get(n)?.selfLimited?.maxInFlight ?? 0));
    const cap = pgPressure.cap(own);
    return { ...pgPressure.view(), cap };
  };
  const service = createService({
    bullRedis,
    sql: dbHandle.sql,
    pg,
    downstream: core.downstream,
    queue,
    stock: core.stock,
    unsure: createUnsureCalls({
      redis,
      prefix: config.FLOODGATE_REDIS_PREFIX,
      clock,
      endOf: async (ref) => (await readEnds(dbHandle.sql, [ref])).get(ref) ?? null,
    }),
    handlers,
    log: log.child({ module: 'service' }),
    jobs: {
      prefix: config.FLOODGATE_REDIS_PREFIX,
      attempts: config.FLOODGATE_JOB_ATTEMPTS,
      batch: config.FLOODGATE_JOB_BATCH,
      backoffMs: config.FLOODGATE_JOB_BACKOFF_MS,
      concurrency: config.FLOODGATE_WORKER_CONCURRENCY,
      lockDurationMs: config.FLOODGATE_JOB_LOCK_MS,
      skipVersionCheck: stores.infoRefused,
      stalledIntervalMs: Math.max(500, Math.round(config.FLOODGATE_JOB_LOCK_MS / 2)),
    },
    now: () => clock.now(),
    onSell: (ms) => pgPressure.record(ms),
    onSample: (s) => {
      // Only a controller reads the shared samples, and none steps a self-limited handler's gate
      // (seckill, coupon): at 200 such items on sale their writes cost a tenth of the daemon's CPU.
      const handler = queue.items.peek(s.itemId)?.snap.def.handler;
      // (Nor a drop sent back while the item's downstream is away: runner.ts Sample.sentBack.)
      if (!s.sentBack && (!handler || !handlers.get(handler)?.selfLimited)) samples.record(s);
      metrics.downstreamLatency.observe({ item: s.itemId }, s.latencyMs / 1000);
      metrics.downstreamCalls.inc({ item: s.itemId, result: s.result });
    },
    onSettled: (itemId, status) => {
      metrics.settles.inc({ item: itemId, status });
      events.emit('settled', itemId);
    },
  });
  const dispatcher = startDispatcher(
    { queue, handlers, jobs: service.jobs, clock, log: log.child({ module: 'dispatcher' }), onAdmitted: (itemId, n) => metrics.admissions.inc({ item: itemId }, n), selfLimitedCap: (c) => pgPressure.cap(c), hold: () => fence.current(), storeTrying: (handler) => !!handlers.get(handler)?.stockTable && core.pg.trying() && core.pg.stalledMs(performance.now()) <= PG_STALL_MS && core.memory.refusing === null, probe: (itemId) => (core.memory.refusing === null ? core.downstream.probe(itemId) : 0) },
    { idleMs: 100, batch: 200, dispatchLeaseMs: config.FLOODGATE_DISPATCH_LEASE_MS, autoCap: config.FLOODGATE_AUTO_START_LIMIT },
  );
  events.on('joined', (itemId) => dispatcher.wake(itemId));
  events.on('settled', () => dispatcher.wake());
  events.on('returned', (itemId) => dispatcher.wake(itemId));
  pg.onUp((busy) => {
    dispatcher.wake();
    // After an outage the stock counters are set again from Postgres; not after a pause for a busy
    // Postgres (a lock or statement timeout): nothing was lost, and a recount of every item, each
    // taking its stock row's lock, on a Postgres that is timing out would only feed the timeouts.
    if (busy) return;
    void catalog.reconcile({ idleOnly: true }).catch((err) => log.warn({ err: describeError(err) }, 'reconcile after postgres came back failed'));
  });

  const probesSeen = new Map<string, number>();
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
        // scrape shows (item-gauges.ts); in-flight as the controller counted it and probes are the leader's.
        published: (itemId, s, v) => {
          metrics.gateInFlight.set({ item: itemId }, v.inflight);
          const seen = probesSeen.get(itemId) ?? s.probes;
          if (s.probes > seen) metrics.gateProbes.inc({ item: itemId }, s.probes - seen);
          probesSeen.set(itemId, s.probes);
        },
        // Not this daemon's to show once it no longer drives the gate (another leads it, it closed):
        // kept, its last count stood for good, and a scrape over FLOODGATE_PROCESSES took the
        // highest of the processes' counts.
        // (And its probe count starts again from the published one when it leads again: another
        // daemon's probes meanwhile were counted there, and were counted here too.)
        resting: (itemId) => (metrics.gateInFlight.remove({ item: itemId }), probesSeen.delete(itemId)),
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

  const ledgerFeed = createLedgerFeed(redis, config.FLOODGATE_REDIS_PREFIX, me, () => clock.now());
  const ledger = startLedger(
    { queue, feed: ledgerFeed, sql: dbHandle.sql, log: log.child({ module: 'ledger' }), metrics },
    { everyMs: 500, batch: 1000, busyElu: 0.7, maxDeferMs: 15_000, stateTtlSec: Math.ceil(config.FLOODGATE_TICKET_STATE_TTL_MS / 1000) },
  );

  // This daemon's own per-item series (counters, histograms) of items no longer defined: dropped
  // once an item is missing from the shared set in two reads a minute apart (one read could miss
  // an item another daemon made an instant before, whose series would then go backwards).
  let missingBefore = new Set<string>();
  const forgetRemovedItems = async () => {
    const ids = new Set(await queue.items.itemIds({ fresh: true }));
    // (The primary of FLOODGATE_PROCESSES hides removed items' series by these lists: cluster-metrics.ts.)
    if (isClusterWorker()) tellItems(ids);
    const missing = new Set<string>();
    const keep = (itemId: string) => {
      if (ids.has(itemId)) return true;
      missing.add(itemId);
      return !missingBefore.has(itemId);
    };
    await forgetItems(metrics.registry, keep);
    for (const itemId of probesSeen.keys()) if (!keep(itemId)) probesSeen.delete(itemId);
    // And what the line and the ledger hold of them (views, notices, stream groups).
    queue.items.forget(keep);
    ledgerFeed.forget(keep);
    missingBefore = missing;
  };

  const inviteUseRows = createInviteUseRows(dbHandle.sql);
  const loops = [
    ledger,
    heldWinners,
    // Reservations past their deadline are released within a second, by whichever daemon sees them first.
    // (Its Postgres unreachable says so to the sales' health as theirs do: on an item held while
    // every unit is reserved, no sale runs, and waiting users read `awaiting_returns` through an
    // outage that returns none, the item `held`, rather than `paused`; a review.)
    every(250, 'reservation sweep', () => (pg.up ? reservations.sweep().catch((err: unknown) => {
      if (isPostgresUnavailable(err)) pg.markDown(String((err as { code?: string }).code ?? err), isPostgresBusy(err));
      throw err;
    }) : Promise.resolve()), log),
    every(500, 'lease sweep', () => queue.admissions.sweep(), log),
    every(1000, 'poll touch flush', () => queue.tickets.flush(), log),
    every(50, 'gate sample flush', () => samples.flush(), log),
    startStockKeeper({ queue, catalog, pg, log: log.child({ module: 'stock' }), left: core.stockRows.left }, { everyMs: 2000 }),
    startDoubtResolver(
      {
        queue,
        handlers,
        sql: dbHandle.sql,
        pg,
        jobs: service.jobs,
        log: log.child({ module: 'doubt' }),
        now: () => clock.now(),
        onResolved: (itemId, how, n) => metrics.doubtResolved.inc({ item: itemId, how }, n),
      },
      { everyMs: 1000, graceMs: config.FLOODGATE_DOUBT_GRACE_MS, dispatchLeaseMs: config.FLOODGATE_DISPATCH_LEASE_MS },
    ),
    startRetention(
      { queue, store, clock, log: log.child({ module: 'retention' }), purgeInviteUses: (nowMs) => (pg.up ? inviteUseRows.purge(nowMs) : Promise.resolve(0)), locked: core.opLocked },
      { everyMs: 60_000, retentionMs: config.FLOODGATE_ITEM_RETENTION_MS },
    ),
    every(1000, 'redis loss check', restoreLost, log),
    every(OP_REV_CHECK_MS, 'operator writes check', () => core.opRevs.check(), log),
    // On a cluster a failover may roll back one master's items (and their marks) without a
    // reconnect of this daemon or a change of the highest mark: every scope compared each minute.
    ...(isCluster(redis) ? [every(OP_REV_FULL_MS, 'operator writes full compare', () => core.opRevs.check({ all: true }), log)] : []),
    every(60_000, 'item secrets', () => core.lostTickets.load(), log),
    every(60_000, 'metric series of removed items', forgetRemovedItems, log),
    every(1000, 'redis memory', () => core.memory.check().then(() => (metrics.redisMemory.set(core.memory.ratio), metrics.redisEvicting.set(core.memory.evicting ? 1 : 0))), log),
    every(5000, 'file descriptors', descriptorWatch(log).check, log),
    startSeriesRecorder({ queue, series: core.series, clock, log: log.child({ module: 'series' }), effective: (item) => catalog.gateOf(item).effective }, { everyMs: 500 }),
  ];

  // A graceful stop under way (stop(), drainHttp): every answer is its connection's last, and /readyz says 503.
  let draining = false;
  const app = wireApp(config, log, stores, core, { tokens, admitHold: fence.current, reconnects: fence.raised, stopping: () => draining });

  // The answers not finished yet, for the stop (drainHttp): it waits for them, and ends the streams.
  const open = new Set<ServerResponse>();
  // Per connection, its app answers not closed yet (below).
  const owedOn = new WeakMap<object, Set<ServerResponse>>();
  // Per connection, its requests in a row that came while an answer before them was not written yet.
  const queuedOn = new WeakMap<object, number>();
  const server: ServerType = await new Promise((resolve, reject) => {
    // The flood's poll and join are answered before the app is asked (api/hot-poll.ts, hot-join.ts).
    // node-server's own listener, with an answer of ours for what it cannot make a request of.
    const listener = getRequestListener(app.fetch, { hostname: config.HOST, errorHandler: unservableRequest });
    const createServer = ((opts: ServerOptions) =>
      halfOpen(answerClientErrors(createHttpServer({ ...opts, requireHostHeader: false, ...CLIENT_TIMEOUTS }, (req, res) => {
        // Stopping: this answer is the connection's last (`Connection: close`), so the client's
        // next call goes to a daemon that stays.
        if (draining) res.shouldKeepAlive = false;
        // A client that pipelines more than PIPELINED_MAX requests behind an answer not written
        // yet is cut. Node makes a pipelined request's answer wait, whole, until the one before it
        // is written (one a turn of the event loop) while it goes on reading and parsing: 100
        // connections that pipelined 5,000 polls each (reading nothing, or too slowly) took the
        // daemon past 3.5 GB in 30 s, unready, then out of memory (a review; a bare Node server
        // with 800-byte answers grows alike). Browsers, proxies and load balancers do not pipeline.
        const socket = req.socket;
        // (Cut: the rest of the packet it was reading still comes, and is dropped.)
        if (socket.destroyed) return;
        if (res.socket === null) {
          const behind = (queuedOn.get(socket) ?? 0) + 1;
          if (behind > PIPELINED_MAX) return void socket.destroy();
          queuedOn.set(socket, behind);
        } else queuedOn.delete(socket);
        if (refusedWithoutHost(req, res) || refusedDotSegment(req, res)) return;
        // (A Host of another shape goes the app's way, where @hono/node-server reads it or answers
        // 400: the hot join served a Host it could not read, a review's fuzzing.)
        const host = req.headers.host;
        if ((host === undefined || plainHost(host)) && app.hot(req, res)) return;
        // Only the app's answers are tracked: an event stream is one of them, while the flood's
        // hot join and poll are written whole and pay nothing for the stop.
        open.add(res);
        // An answer queued behind another on a pipelined connection is never told its socket
        // closed (Node emits 'close' only on the answer the socket is writing): its client gone,
        // it stayed here for good with what it held (a review: ~340 MB kept per burst of 200
        // pipelined GETs of the docs' script, and an event stream's place on its ticket taken for
        // good, four such refusing the ticket's streams). Its socket's close ends it, as it ends
        // the answer the socket is writing — one listener per socket (one per request warned of
        // a leak from the tenth pipelined request on).
        let owed = owedOn.get(socket);
        if (!owed) {
          const answers = (owed = new Set<ServerResponse>());
          owedOn.set(socket, answers);
          socket.once('close', () => {
            // (Only those the socket was not given yet: Node closes the one it was given itself.)
            for (const r of [...answers]) if (!r.socket) r.destroy().emit('close');
          });
        }
        owed.add(res);
        res.once('close', () => {
          open.delete(res);
          owed.delete(res);
        });
        listener(req, res);
      })))) as typeof createHttpServer;
    // A port taken or a host that does not resolve fails the start (main.ts stops the stores it
    // started): uncaught, it exited with a stack naming neither, and left a redis-server running.
    const refused = (err: NodeJS.ErrnoException) =>
      reject(new SetupNeeded(`cannot listen on ${config.HOST}:${config.PORT} (HOST, PORT): ${err.code === 'EADDRINUSE' ? 'the port is in use' : err.code === 'EADDRNOTAVAIL' ? 'no such address on this machine' : err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN' ? 'the host does not resolve' : (err.code ?? err.message)}`));
    const s = serve({ fetch: app.fetch, port: config.PORT, hostname: config.HOST, createServer }, () => {
      s.off('error', refused);
      resolve(s);
    });
    s.once('error', refused);
  });
  const address = server.address();
  const bound = typeof address === 'object' && address ? address : { address: config.HOST, port: config.PORT, family: 'IPv4' };
  const port = bound.port;
  const hostOf = (a: string) => (bound.family === 'IPv6' ? `[${a}]` : a);
  // `listen` is where the socket is bound; `url` is how to reach it from this machine.
  const local = bound.address === '0.0.0.0' ? '127.0.0.1' : bound.address === '::' ? '::1' : bound.address;
  const url = `http://${hostOf(local)}:${port}`;
  log.info({ listen: `${hostOf(bound.address)}:${port}`, url, redis: describeTarget(stores.redisTarget, redactUrl), postgres: redactUrl(stores.pgUrl) }, 'floodgate listening');
  // The stock counters of idle items from Postgres, in the background once listening: a lock, a
  // row read and a recount per item, 21 s for 2,000 idle items before the daemon listened (a
  // review's measure), and a Postgres error in that time ended the start. The stock keeper sets an
  // idle item's counter from Postgres within a round anyway; this is the start's quicker pass.
  const reconciling = new AbortController();
  const startReconcile = config.FLOODGATE_RECONCILE_ON_START
    ? catalog.reconcile({ idleOnly: true, signal: reconciling.signal }).catch((err) => log.warn({ err: String(err) }, "start's reconcile stopped part-way; the stock keeper counts the rest"))
    : Promise.resolve();

  let stopping: Promise<{ jobsCutShort: boolean }> | null = null;
  return {
    url,
    port,
    app,
    stop: (opts = {}) =>
      (stopping ??= (async () => {
        // main.ts exits 1 FLOODGATE_SHUTDOWN_MS after the signal, whatever is still running.
        const stopBy = Date.now() + config.FLOODGATE_SHUTDOWN_MS;
        log.info('stopping');
        draining = true;
        reconciling.abort();
        // The loops start nothing new from now (the other daemons sweep, count stock and resolve
        // doubts; the ledger's final drain below writes what this one's jobs end): a stock recount
        // begun seconds into a stop on a slow Postgres ran the budget out (exit 1, a review). A
        // round under way is waited for below, as before.
        const loopsStopped = Promise.all(loops.map((l) => l.stop()));
        // The three at once: the controller's stop hands its leader leases over, and waiting for
        // the HTTP drain first kept the other daemons without a controller for that long too.
        // (Joins still answered meanwhile are admitted by the other daemons' dispatchers.)
        service.stopTaking();
        // The drain within the budget too: a client that stopped sending mid-body held it 5 s
        // whatever the budget (a 3 s budget ran out with no sale at all: exit 1).
        const httpMs = Math.max(MIN_DRAIN_MS, config.FLOODGATE_SHUTDOWN_MS - STOP_TAIL_MS - MIN_WORKERS_MS);
        // The grace within it too, before the drain, and at most half of it: the drain's wait is a
        // bound for clients that stopped sending, the grace the common case (served after the
        // drain's 5 s, a budget under 8.5 s left it less than a second, under 7.5 s none: a review).
        const graceMs = Math.min(config.FLOODGATE_DRAIN_GRACE_MS, Math.floor(httpMs / 2));
        const drainMs = Math.min(HTTP_DRAIN_MS, httpMs - graceMs);
        await Promise.all([drainHttp(server as Server, open, log, { graceMs, drainMs }), dispatcher.stop(), controller.stop()]);
        // The jobs running get what is left of the budget after the HTTP drain, less what the rest
        // of the stop needs (STOP_TAIL_MS): a webhook call an operator gave a long stop budget for
        // finishes here instead of being dropped and run again elsewhere.
        const left = stopBy - Date.now();
        const { dropped } = await service.stop({ workersMs: Math.max(MIN_WORKERS_MS, left - STOP_TAIL_MS), queuesMs: Math.min(QUEUES_CLOSE_MS, Math.max(1000, left - STOP_TAIL_MS / 2)) });
        // Each step after the jobs within what is left of the budget, keeping TAIL_CLOSE_MS for the
        // stores' close: a loop's round under way (a stock recount, seven statements) and the final
        // drains on a Postgres 300 ms away each way took the stop past its budget beside a full
        // suite's load (exit 1, "shutdown timed out"). What a step leaves undone is what a crash
        // leaves: a round another daemon's loop runs, ledger entries Redis keeps for the next drain.
        const tail = async (what: string, step: Promise<unknown>) => {
          if (!opts.exiting) return void (await step);
          if (!(await settlesWithin(step, Math.max(0, stopBy - TAIL_CLOSE_MS - Date.now())))) log.warn({ step: what }, 'stop: step left unfinished at the end of the stop budget (FLOODGATE_SHUTDOWN_MS)');
        };
        await tail('loop rounds', Promise.all([loopsStopped, startReconcile]));
        time.stop();
        await tail('tokens', tokens.stop());
        pg.stop();
        await tail('ticket writes', queue.tickets.flush().catch(() => {}));
        // The latency samples of the jobs that ended during the stop, for the controllers (their
        // loop stopped at the signal, with the others).
        await tail('gate samples', samples.flush().catch(() => {}));
        await tail('ledger drain', ledger.drain().catch((err) => log.warn({ err: String(err) }, 'final ledger drain failed')));
        bullRedis.disconnect();
        // Before an exit, the statements still out (those of a step left unfinished) get what is
        // left of the budget, less 300 ms (postgres.js's end() gives them 5 s by default).
        await stores.close(opts.exiting ? Math.max(0.05, (stopBy - 300 - Date.now()) / 1000) : undefined);
        log.info({ jobsCutShort: dropped > 0 }, 'stopped');
        return { jobsCutShort: dropped > 0 };
      })()),
  };
}

/**
 * What the stop keeps of FLOODGATE_SHUTDOWN_MS for its steps after the jobs: the batched writes'
 * drain, the job queues' close, the loops, the final ledger drain to Postgres and the stores'
 * close (0.1-0.5 s measured; the rest is a busy machine's margin). The workers' close gets what
 * is left after the HTTP drain and this.
 */
export const STOP_TAIL_MS = 2000;

/** What the stop's last steps keep of the budget for the stores' close (a few ms measured, unless statements are still out). */
const TAIL_CLOSE_MS = 500;


/** The least the workers' close is given, however small the budget: with no job running it takes a few ms. */
const MIN_WORKERS_MS = 500;

/** The most the stop waits for the job queues' close (a Redis gone for good never ends it: service.ts). */
const QUEUES_CLOSE_MS = 10_000;

/**
 * How long the stop waits for answers in progress before it closes their connections: a request's
 * own budgets (500 ms a Redis command, FLOODGATE_PG_TIMEOUT_MS a Postgres statement) end it long
 * before, so only a client that stopped reading is cut.
 */
export const HTTP_DRAIN_MS = 5000;

/**
 * How long a client may take to send a request: its headers within 10 s, the whole request (a
 * body is 16 KiB at most) within 30 s, looked at every second. Node's own (60 s, 300 s, looked at
 * every 30 s) let a connection that sent nothing, or its headers a byte a second, hold a file
 * descriptor for ~87 s (a review): at ~230 such connections a second a 20,000-descriptor limit
 * filled. An event stream is unaffected: these bound what the client sends, not the answer.
 */
const CLIENT_TIMEOUTS = { headersTimeout: 10_000, requestTimeout: 30_000, connectionsCheckingInterval: 1000 };

/**
 * Requests in a row a connection may pipeline behind an answer not written yet before the daemon
 * cuts it (see the server's listener). The memory a cut connection held is bounded by what Node
 * parsed of its last packet (~64 KB: ~1,000 small requests).
 */
export const PIPELINED_MAX = 256;

/** The least the HTTP drain is given, however small the budget. */
const MIN_DRAIN_MS = 250;

/**
 * Lets the answers in progress finish, each the last of its connection (`Connection: close`), then
 * stops taking connections. Node's server.close() alone waits for every connection to close, and a
 * ticket's event stream closes only when the ticket ends: a SIGTERM while users followed waiting
 * tickets held the stop until FLOODGATE_SHUTDOWN_MS forced the process out (exit 1), its
 * dispatcher admitting and its jobs cut short meanwhile (test/rolling-restart.test.ts).
 *
 * First the grace (`graceMs`, FLOODGATE_DRAIN_GRACE_MS): the daemon still listens and answers
 * everything, each answer its connection's last, and /readyz says 503, so that a load balancer
 * takes it out of its pool and each client's next call goes on a new connection, elsewhere. Its
 * kept-alive connections are left open meanwhile: one closed while idle is one its client may be
 * writing its next request on at that moment, and that request is reset, unanswered (a review:
 * 13 of 16 keep-alive clients' joins and polls in flight at a SIGTERM got ECONNRESET, when idle
 * connections were closed at once; a proxy passes such a reset on as a 502). It ends early once no
 * connection is left. Then the listener closes and idle connections with it, and the answers
 * still in progress get the rest of `drainMs`.
 *
 * An event stream is ended at once: its body is delimited by the connection's close
 * (api/routes/ticket-events.ts), so closing the connection ends it as the client expects, and the
 * browser reconnects (its `retry`) through the load balancer to a daemon that stays, whose first
 * event is the ticket's current view. Destroyed rather than ended: the watch may still write to it
 * before it hears the close, and a write after end() would throw.
 */
async function drainHttp(server: Server, open: Set<ServerResponse>, log: Logger, { graceMs, drainMs }: { graceMs: number; drainMs: number }) {
  for (const res of open) if (!res.headersSent) res.shouldKeepAlive = false;
  // An answer begun but not finished is a stream: every other answer is written whole in one go
  // (@hono/node-server, api/hot-*.ts). Looked at again every 50 ms, as a stream accepted just
  // before the stop (or during the grace) writes its head on a later turn (ticket-events.ts).
  const endStreams = () => {
    for (const res of open) if (res.headersSent && !res.writableEnded) res.destroy();
  };
  const graceUntil = Date.now() + graceMs;
  while (Date.now() < graceUntil) {
    endStreams();
    if ((await connectionsOf(server)) === 0) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  const until = Date.now() + drainMs;
  // Idle connections too: one whose answer was on its way at the close went idle, kept alive, after it.
  for (;;) {
    endStreams();
    server.closeIdleConnections();
    if (await settlesWithin(closed, 50)) return;
    if (Date.now() > until) break;
  }
  log.warn({ open: open.size, afterMs: drainMs }, 'answers still open at the stop; their connections are closed');
  server.closeAllConnections();
  await closed;
}

/** The server's open connections (null: it could not say). */
const connectionsOf = (server: Server) => new Promise<number | null>((resolve) => server.getConnections((err, n) => resolve(err ? null : n)));

/**
 * Registers a deployment's own handlers: the module exports `handlers` (an array of HandlerSpec).
 * What goes wrong is said plainly, naming the module and the spec (SetupNeeded: no stack): a
 * syntax error read `SyntaxError: Unexpected end of input` with a stack, naming neither.
 */
async function loadHandlers(modulePath: string, registry: HandlerRegistry, log: Logger) {
  const said = (what: string) => new SetupNeeded(`FLOODGATE_HANDLERS_MODULE ${modulePath}: ${what}`);
  let mod: { handlers?: unknown; default?: unknown };
  try {
    mod = (await importModule(modulePath)) as typeof mod;
  } catch (err) {
    throw said(`cannot be loaded: ${String((err as Error)?.message ?? err)}`);
  }
  const specs = mod.handlers ?? mod.default;
  if (!Array.isArray(specs)) throw said('must export `handlers`, an array of handler specs');
  specs.forEach((spec, i) => {
    try {
      registry.register(spec as HandlerSpec);
    } catch (err) {
      throw said(`handlers[${i}]: ${(err as Error).message}`);
    }
  });
  log.info({ module: modulePath, handlers: specs.map((s) => (s as HandlerSpec).name) }, 'custom handlers registered');
}

/**
 * Imports a deployment's module. One written in TypeScript is compiled by tsx's loader, registered
 * here on first need: the daemon itself runs built (dist/floodgate.mjs) under plain node, which
 * refuses a .ts file (under tsx or vitest it imports at once).
 */
async function importModule(modulePath: string): Promise<unknown> {
  const url = pathToFileURL(path.resolve(modulePath)).href;
  try {
    return await import(url);
  } catch (err) {
    if ((err as { code?: string }).code !== 'ERR_UNKNOWN_FILE_EXTENSION') throw err;
    const { register } = await import('tsx/esm/api');
    register();
    return import(`${url}?tsx`); // a fresh URL: node keeps the failed load of the first
  }
}

/**
 * A client that sends its request and then closes its side (`shutdown(SHUT_WR)`, a `curl` fed from
 * a pipe, some load balancers' health checks) is answered before the connection ends. By Node's
 * default its requests were dropped unanswered while what they asked was done: a join queued the
 * user, who was told nothing (a review's find).
 */
function halfOpen<S extends object>(server: S): S {
  (server as { httpAllowHalfOpen?: boolean }).httpAllowHalfOpen = true;
  return server;
}

/**
 * A Host header @hono/node-server takes (name[:port], a port of at most 65535; uppercase it
 * reads through the URL parser, as it does an IPv6 address, which goes the app's way here).
 */
const PLAIN_HOST = /^[A-Za-z0-9._-]+(?::(\d{1,5}))?$/;
function plainHost(host: string): boolean {
  const m = PLAIN_HOST.exec(host);
  return m !== null && (m[1] === undefined || Number(m[1]) <= 65535);
}
