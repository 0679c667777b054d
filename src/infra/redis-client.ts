import type { Socket } from 'node:net';
import { Cluster, Redis, type ClusterOptions, type Command, type RedisOptions } from 'ioredis';
import StandaloneConnectorModule from 'ioredis/built/connectors/StandaloneConnector.js';
import type { Logger } from '../kernel/logger.js';
import { giveUpWhenSilent, redisReplies } from '../kernel/silent-socket.js';
import { runOnceScripts, type RedisLike } from '../redis/client.js';

/**
 * The daemon's two kinds of Redis connection.
 *
 * `api` serves HTTP and the background loops. It must fail fast while Redis is unreachable: no
 * offline queue (a command on a broken connection is refused at once, "Stream isn't writeable"),
 * a 500 ms command timeout (a command on a connection that has not noticed yet), and reconnects
 * every 50–500 ms. ioredis's defaults (offline queue, no timeout, 20 retries, backoff to 2 s) held
 * a request 12–15 s before it failed. Commands given before the first 'ready' are refused too, so
 * `connectRedis` resolves only once the connection is ready.
 *
 * `admit` is `api` with a longer command timeout, for the calls that hand tickets out under a lease
 * (admit, settle, extend, sweep): what such a call did in Redis stands whether or not its reply is
 * read, so a reply that comes late must still be read. With the 500 ms timeout, an admit whose reply
 * came after it (Redis held up for 0.8 s) left its tickets admitted with no job until their
 * dispatch lease ran out, 15 s later; a worker's pull lost its tickets the same way.
 *
 * `jobs` is BullMQ's: it needs `maxRetriesPerRequest: null` and keeps ioredis's offline queue,
 * which its blocking and retrying logic expects.
 */

export const API_COMMAND_TIMEOUT_MS = 500;
export const ADMIT_COMMAND_TIMEOUT_MS = 5000;
/**
 * On a cluster, a command may be sent twice (a MOVED or a lost node refreshes the slot map and
 * sends it again, 100 ms later): each send has API_COMMAND_TIMEOUT_MS, the whole command this.
 */
const CLUSTER_COMMAND_TIMEOUT_MS = 1200;
const RECONNECT_MAX_MS = 500;
const READY_TIMEOUT_MS = 10_000;
/** An outage logs its first error and then at most one line per this many ms, not one per retry. */
const ERROR_LOG_EVERY_MS = 30_000;
/** ioredis's message for a command failed by a connection that closed (utils CONNECTION_CLOSED_ERROR_MSG). */
const CONNECTION_CLOSED = 'Connection is closed.';
/** What a run-once script (runOnceScripts) whose connection closed before its reply came fails with, instead of being sent again. */
export const RAN_MAYBE = 'Connection is closed before Redis answered: the script may have run, and is not run again';
/** What any other command of the API's or the admissions' connection (one server) whose connection closed before its reply came fails with. */
export const NOT_RESENT = 'Connection is closed before Redis answered: the command is not sent again';

/** Where the daemon's Redis is: one server's URL, or a Redis Cluster's seed nodes (FLOODGATE_REDIS_CLUSTER). */
export type RedisTarget = { url: string } | { cluster: { host: string; port: number }[] };

/**
 * How long a connection may owe replies with no byte coming before it is given up and made again
 * (kernel/silent-socket.ts): through a path that drops packets no reset comes, and ioredis went on
 * timing out command after command on the dead connection for as long as the kernel retransmits
 * (~15 minutes; every request 503). `api` and `admit` send no blocking command: a few seconds
 * past their command timeouts (a late reply to an admit must still be read). `jobs` carries
 * BullMQ's commands, whose scripts are short, and its blocking pops, which wait for a job up to
 * their own timeout (the watch adds it: redisReplies()); 7 s, past Redis's own 5 s
 * busy-reply-threshold (a long script anywhere holds every reply until BUSY answers begin, and a
 * BullMQ connection given up then has its commands resent by ioredis, after they ran). It was
 * 15 s for every BullMQ connection, which stopped a sale ~17 s when Redis fell silent (chaos
 * bench, redis-silent).
 */
export const SILENCE_MS = { api: 3000, admit: ADMIT_COMMAND_TIMEOUT_MS + 1000, jobs: 7000 } as const;

// The module's class: a CommonJS default export, which Node's ESM import hands over inside the
// module object (TypeScript's view) and a bundler or vitest as the class itself.
const StandaloneConnector = StandaloneConnectorModule.default ?? (StandaloneConnectorModule as unknown as typeof StandaloneConnectorModule.default);

/** ioredis's own connector (TCP, TLS, a Unix socket), whose streams are given up when silent. */
function silenceWatched(kind: keyof typeof SILENCE_MS): NonNullable<RedisOptions['Connector']> {
  return class extends StandaloneConnector {
    constructor(options: unknown) {
      super(options as ConstructorParameters<typeof StandaloneConnector>[0]);
    }
    async connect(emit: Parameters<InstanceType<typeof StandaloneConnector>['connect']>[0]) {
      const stream = await super.connect(emit);
      giveUpWhenSilent(stream as Socket, SILENCE_MS[kind], `Redis (${kind})`, redisReplies());
      return stream;
    }
  };
}

/** The command timeout is ours (timeOutCommands below), not ioredis's `commandTimeout`. */
const apiOptions: RedisOptions = {
  enableAutoPipelining: true,
  enableOfflineQueue: false,
  maxRetriesPerRequest: 1,
  connectTimeout: 2000,
  retryStrategy: (times) => Math.min(times * 50, RECONNECT_MAX_MS),
};

/**
 * On a cluster, `api` keeps the same fail-fast node connections, reads and writes on masters only
 * (a replica's copy lags, and the line's scripts write), and follows a failover by itself: a
 * command refused by a dead or demoted node (connection lost, MOVED, CLUSTERDOWN) makes ioredis
 * refresh the slot map and send it again, up to `maxRedirections` times.
 * The cluster-level offline queue stays on (a choice, not yet measured against the alternative):
 * ioredis uses it only while the Cluster object itself is not ready (at connect, and when every
 * node is lost), and with it off a command given during a slot-map refresh is refused at once
 * ("Cluster isn't ready"). The node connections' 500 ms command timeout (ours, set on each node
 * connection as the cluster makes it) bounds each command once sent, and the failover test saw the sale through with it on. Not yet checked: whether a
 * command queued while the whole cluster is unreachable waits longer than the single-node 1 s
 * promise of a 503 (test/outage-redis.test.ts covers one server only).
 */
const apiClusterOptions: ClusterOptions = {
  scaleReads: 'master',
  enableAutoPipelining: true,
  enableOfflineQueue: true,
  retryDelayOnFailover: 100,
  retryDelayOnClusterDown: 100,
  retryDelayOnTryAgain: 100,
  maxRedirections: 16,
  slotsRefreshTimeout: 1000,
  clusterRetryStrategy: (times) => Math.min(times * 50, RECONNECT_MAX_MS),
  redisOptions: { maxRetriesPerRequest: 1, connectTimeout: 2000 },
  // Connected once the node hook below is on: the seed nodes are made inside connect().
  lazyConnect: true,
};

export async function connectRedis(target: RedisTarget, kind: 'api' | 'admit' | 'jobs', log: Logger): Promise<RedisLike> {
  let redis: RedisLike;
  const ms = kind === 'admit' ? ADMIT_COMMAND_TIMEOUT_MS : API_COMMAND_TIMEOUT_MS;
  if ('cluster' in target) {
    if (kind !== 'jobs') {
      const cluster = new Cluster(target.cluster, { ...apiClusterOptions, redisOptions: { ...apiClusterOptions.redisOptions, Connector: silenceWatched(kind) } });
      const runIds = new Map<string, string | null>();
      cluster.on('+node', (node: Redis) => {
        // (Innermost: what it keeps has passed the others, and what it sends on goes through them again.)
        nothingBeforeBack(cluster, node, runIds);
        timeOutCommands(node, ms);
        notRunTwiceOnNode(node);
      });
      // And a bound on the whole command, redirections and the cluster's offline queue included:
      // with every node gone a command waited in that queue for as long as the cluster kept
      // reconnecting (a join held past a minute; test/cluster-outage.test.ts).
      timeOutCommands(cluster, ms + CLUSTER_COMMAND_TIMEOUT_MS - API_COMMAND_TIMEOUT_MS);
      notSentAfterOutage(cluster);
      cluster.connect().catch(() => {}); // whenReady below reports a cluster that never gets ready
      redis = cluster;
    } else {
      // BullMQ checks maxRetriesPerRequest on the node options; its prefixes carry a hash tag (keys.ts).
      redis = new Cluster(target.cluster, { scaleReads: 'master', maxRedirections: 16, redisOptions: { maxRetriesPerRequest: null, Connector: silenceWatched('jobs') } });
    }
  } else if (kind !== 'jobs') {
    const single = new Redis(target.url, { ...apiOptions, Connector: silenceWatched(kind) });
    timeOutCommands(single, ms);
    notRunTwiceOnServer(single);
    redis = single;
  } else redis = new Redis(target.url, { maxRetriesPerRequest: null, Connector: silenceWatched('jobs') });
  // (BullMQ's own connections are duplicates of `jobs`: ioredis copies the Connector into them.)
  logOutages(redis, log.child({ redis: kind }));
  if (kind !== 'jobs') await whenReady(redis);
  return redis;
}

/** Cluster seeds as FLOODGATE_REDIS_CLUSTER takes them: an IPv6 host in brackets. */
export const seedList = (nodes: { host: string; port: number }[]) => nodes.map((n) => (n.host.includes(':') ? `[${n.host}]:${n.port}` : `${n.host}:${n.port}`)).join(',');

/** For logs: the URL without a password, or the cluster's seeds. */
export const describeTarget = (t: RedisTarget, redact: (url: string) => string) => ('cluster' in t ? `cluster ${seedList(t.cluster)}` : redact(t.url));

/**
 * ioredis's `commandTimeout`, except that a reply already received wins. ioredis rejects from a
 * plain timer; after the event loop was held up (a busy CPU, a long GC pause, a 2-core machine
 * running a test suite beside the daemon) the timers run before the sockets are read, so a
 * command whose answer had arrived in a millisecond was failed as "timed out" and its HTTP
 * request answered 503 — a false "Redis unavailable". Here the timer only schedules the rejection
 * for after the next poll phase (setImmediate): answers waiting in the socket are read first, and a
 * Redis that truly does not answer still fails the command one loop turn after `ms`.
 */
function timeOutCommands(redis: RedisLike, ms: number) {
  const send = redis.sendCommand.bind(redis) as (command: Command, ...rest: unknown[]) => unknown;
  // The commands sent and not yet looked at, oldest first, each with the time it times out. All
  // have the same budget, so those times only grow: one timer walking from the oldest does what a
  // timer per command did (a Timeout made and cleared around every join's Redis call), and runs
  // only while commands are out. A command times out between `ms` and `ms + tick` after it was sent.
  // An entry is about one sending: a cluster's pipeline sends its commands again after a MOVED or a
  // failover with fresh promises (initPromise), and such a command is timed from its new sending,
  // not failed by the entry of its first (which broke the retry: a sale hung through a failover).
  // Commands sent in one synchronous run (a pipeline's, an auto-pipelined batch's, a MULTI's) share
  // one deadline, so they time out in the same sweep: a lost connection's resend then finds all of
  // them failed or none (see the skip below). Timed on the monotonic clock.
  const tick = Math.max(10, Math.min(100, Math.floor(ms / 5)));
  let sent: { command: Command; promise: Promise<unknown>; at: number }[] = [];
  let oldest = 0;
  let timer: NodeJS.Timeout | null = null;
  let runAt: number | null = null;
  const deadline = () => {
    if (runAt === null) {
      runAt = performance.now() + ms;
      queueMicrotask(() => (runAt = null));
    }
    return runAt;
  };
  const sweep = () => {
    const now = performance.now();
    for (; oldest < sent.length; oldest++) {
      const { command, promise, at } = sent[oldest];
      const pending = () => command.promise === promise && !command.isSettled;
      if (!pending()) continue;
      if (at > now) break;
      setImmediate(() => {
        if (pending()) command.reject(new Error(`Command timed out: ${command.name}`));
      });
    }
    if (oldest === sent.length) {
      sent = [];
      oldest = 0;
      clearInterval(timer!);
      timer = null;
    } else if (oldest > 1024 && oldest * 2 > sent.length) {
      sent = sent.slice(oldest);
      oldest = 0;
    }
  };
  redis.sendCommand = ((command: Command, ...rest: unknown[]) => {
    // A command whose caller was already told it failed is not sent again. ioredis resends the
    // commands a lost connection left unanswered once it is made anew (autoResendUnfulfilledCommands),
    // the ones this timer failed too: a join answered 503 took effect seconds later, and an admit
    // given up on admitted its tickets with no job to run them (they waited out the 15 s dispatch
    // lease). Commands still in time are sent again as before (a Redis that restarted at once).
    // A pipeline's commands are all failed or none (one deadline); its writer still counts the
    // skipped one (an empty write), or it would hold back the bytes of the rest while their replies
    // were awaited — every later reply on the connection handed to the wrong command.
    // Nor one that Redis may have run already and must not run twice (notRunTwiceOnServer).
    if (command.isSettled) {
      countUnsent(rest[0]);
      return command.promise;
    }
    sent.push({ command, promise: command.promise, at: deadline() });
    if (!timer) (timer = setInterval(sweep, tick)).unref();
    return send(command, ...rest);
  }) as never;
}

/**
 * A command of a pipeline not sent (failed instead): the pipeline's writer counts every command of
 * it and writes them all with the last one counted, so this one still counts, with an empty write,
 * at once (held back to the connection's 'ready', a later command of another caller went out
 * before the pipeline's and every reply after it went to the wrong command: a review). Counted
 * last on a connection with no socket yet, it means every other command of the pipeline was
 * failed too (the others wait in the connection's offline queue uncounted): nothing to write, and
 * the writer's throw (no socket) is that.
 */
function countUnsent(stream: unknown) {
  const s = stream as { isPipeline?: boolean; write?(data: string): void; destination?: { redis?: Redis } } | undefined;
  if (!s?.isPipeline) return;
  try {
    s.write!('');
  } catch (err) {
    if (s.destination?.redis?.stream) throw err;
  }
}

/** A command failed instead of sent (its caller told `message`, if nobody told it before), counted in its pipeline as countUnsent says. */
function failUnsent(command: Command, stream: unknown, message: string) {
  if (!command.isSettled) command.reject(new Error(message));
  countUnsent(stream);
}

/**
 * Commands of runOnceScripts, known at their first sending, by SHA1: written on a connection that
 * has not run the script, ioredis turns one into an EVAL of its source, and a cluster may send it
 * on to another node so.
 */
const runOnce = new WeakSet<Command>();
const markRunOnce = (command: Command) => {
  if (command.name === 'evalsha' && runOnceScripts.has(String(command.args[0]))) runOnce.add(command);
};

/**
 * The run-once guard on one Redis server. A connection that closed keeps the commands it sent and
 * heard no answer to (ioredis's prevCommandQueue, set by the time 'close' is emitted, on the next
 * tick) and sends them again once it is back; those Redis must not run twice fail here first (an
 * outage to their callers: 503, the round tried again), and timeOutCommands skips them as settled.
 * And so do all the others: ioredis sends them inside its ready handler, before the 'ready' event
 * on which the daemon raises its hold after a reconnect (redis/reconnect-fence.ts), so on a Redis
 * that came back rolled back past an operator's close a join sent again was taken (202) before the
 * check put the close back, and a cancel told its user `cancelled_by_user` after `item_closed`.
 * Such a command is asked again by its caller, as after any outage (a join then answers the ticket
 * it made, a cancel the ticket's end). Only a Redis back within one reconnect attempt (~50 ms)
 * reached them: a longer outage failed them at the second attempt (maxRetriesPerRequest: 1).
 */
function notRunTwiceOnServer(redis: Redis) {
  const send = redis.sendCommand.bind(redis) as (command: Command, ...rest: unknown[]) => unknown;
  redis.sendCommand = ((command: Command, ...rest: unknown[]) => {
    markRunOnce(command);
    return send(command, ...rest);
  }) as never;
  redis.on('close', () => {
    const unanswered = (redis as unknown as { prevCommandQueue?: { length: number; peekAt(i: number): { command: Command } | undefined } | null }).prevCommandQueue;
    for (let i = 0; unanswered && i < unanswered.length; i++) {
      const command = unanswered.peekAt(i)?.command;
      if (command && !command.isSettled) command.reject(new Error(runOnce.has(command) ? RAN_MAYBE : NOT_RESENT));
    }
  });
}

/** What a command given while every node of the Redis Cluster was lost fails with once the Cluster is back. */
export const QUEUED_IN_OUTAGE = 'Connection is closed: the Redis Cluster was unreachable when the command was given, and it is not sent to the cluster that came back';

/**
 * The single server's NOT_RESENT, on a Redis Cluster. While every node is lost the Cluster is not
 * `ready` and keeps each command given to it (or sent again 100 ms after its node's connection
 * closed) in its own offline queue; its ready handler sends that queue right after its status
 * turns `ready`, a tick before the 'ready' event on which the daemon raises its hold after a
 * reconnect (redis/reconnect-fence.ts). So a join, a cancel or an admission queued in the outage
 * ran on restarted nodes, rolled back past an operator's close, before the check that puts the
 * close back. Here they fail instead (an outage to their callers, who ask again, as after any
 * outage); only the queue of the Cluster's first connect, before connectRedis hands it out, is
 * sent. Each command is bounded anyway by its time-out (timeOutCommands), so what this fails is
 * what was given in the last second or so (the admissions' connection: ~6 s) before the Cluster
 * came back. A command of a pipeline counts as written (countUnsent): a pipeline queued so has all
 * its commands there (they go out in one synchronous run, against one status).
 */
function notSentAfterOutage(cluster: Cluster) {
  type Queued = { command: Command; stream?: unknown };
  const c = cluster as unknown as { offlineQueue: { length: number; shift(): Queued | undefined }; executeOfflineCommands(): void; resetOfflineQueue(): void };
  const sendQueued = c.executeOfflineCommands.bind(c);
  let connected = false;
  c.executeOfflineCommands = () => {
    if (!connected) {
      connected = true;
      return sendQueued();
    }
    const queued = c.offlineQueue;
    c.resetOfflineQueue();
    for (let item = queued.shift(); item; item = queued.shift()) {
      // (A run-once script whose node's connection closed after writing it, queued by the Cluster's resend: RAN_MAYBE says so.)
      failUnsent(item.command, item.stream, owedOnNodes.has(item.command) ? RAN_MAYBE : QUEUED_IN_OUTAGE);
    }
  };
}

/** What a command given to a Redis Cluster node that came back restarted fails with (NODE_BACK_EVENT: the daemon holds and compares). */
export const NODE_BACK = 'Connection is closed: a Redis Cluster node came back restarted, and nothing given before the daemon compares what the restart may have lost is sent to it';
/** The Cluster's event, with the node's `host:port`, when a node came back restarted: a reconnect, for that node's slots (daemon.ts). */
export const NODE_BACK_EVENT = 'floodgate:node-back';
/** What ioredis sends on a node's connection as it makes it (its ready check, a password, a role). */
const CONNECTION_SETUP = new Set(['info', 'auth', 'hello', 'select', 'client', 'readonly', 'readwrite', 'cluster']);

const runIdOf = (info: string) => /^run_id:(\w+)/m.exec(info)?.[1] ?? null;

/**
 * A Cluster node's connection made again while the Cluster is ready: the node's own connection
 * ended (the node restarted in place, a network cut, an idle close, a silent socket given up) and
 * a command for its slots brought it back. Nothing told the daemon: the Cluster stayed `ready` and
 * its slot map did not change, so no hold was raised, and a node restarted from older data (a
 * host crash before its AOF was written) was read and written at once, an operator's lost close
 * undone until the next compare, up to 2 s later (a review reproduced it). Such a node's
 * connection now keeps what it is given (all but its own setup) until it is ready and has said
 * which process it is (INFO's run_id, new at every start). The same process as before (a cut, an
 * idle close): sent on, in order, as if nothing had happened. Another process, or one never
 * heard: a restart — what was kept fails (NODE_BACK, a 503; its caller asks again) and the Cluster
 * emits NODE_BACK_EVENT, on which the daemon raises its hold as after a reconnect. A connection
 * that closes before that fails what it kept as a closed connection does (the Cluster sends it
 * again 100 ms later). The nodes of the Cluster's first connect, and of a connect after every node
 * was lost (its own 'ready' raises the hold), are not held so: the Cluster is not `ready` as it
 * makes them; their run_id is noted all the same.
 */
function nothingBeforeBack(cluster: Cluster, node: Redis, runIds: Map<string, string | null>) {
  // (The Cluster's '+node' passes the connection alone; the pool names a node so: util getNodeKey.)
  const key = `${node.options.host}:${node.options.port}`;
  const back = runIds.has(key) && cluster.status === 'ready';
  if (!runIds.has(key)) runIds.set(key, null);
  const whoIs = () => (node.info('server') as Promise<string>).then(runIdOf, () => null);
  if (!back) {
    node.once('ready', () => void whoIs().then((id) => id && runIds.set(key, id)));
    return;
  }
  const send = node.sendCommand.bind(node) as (command: Command, ...rest: unknown[]) => unknown;
  let kept: [Command, unknown[]][] | null = [];
  const release = (each: (command: Command, rest: unknown[]) => void) => {
    const all = kept ?? [];
    kept = null;
    for (const [command, rest] of all) each(command, rest);
  };
  node.sendCommand = ((command: Command, ...rest: unknown[]) => {
    if (!kept || CONNECTION_SETUP.has(command.name)) return send(command, ...rest);
    // (A node's connection is made by its first command: one kept here makes it all the same.)
    if (node.status === 'wait') node.connect().catch(() => {});
    kept.push([command, rest]);
    return command.promise;
  }) as never;
  const closed = () => release((command, rest) => failUnsent(command, rest[0], CONNECTION_CLOSED));
  node.once('close', closed);
  node.once('ready', async () => {
    const was = runIds.get(key);
    const id = await whoIs();
    node.off('close', closed);
    if (!kept) return; // (closed meanwhile)
    if (id !== null && id === was) {
      // The same process: nothing was lost. Sent through the node's outermost sendCommand, as
      // first given: the run-once guard marks a script owed only as it is written (sent past it,
      // a kept script whose reply the next cut lost was sent again and ran twice: a review, +5
      // gave 10). (A command timed out meanwhile is not sent: timeOutCommands.)
      release((command, rest) => (command.isSettled ? countUnsent(rest[0]) : void node.sendCommand(command, ...(rest as [never]))));
      return;
    }
    if (id !== null) runIds.set(key, id);
    release((command, rest) => failUnsent(command, rest[0], NODE_BACK));
    cluster.emit(NODE_BACK_EVENT, key);
  });
}

/** Run-once commands a cluster node wrote and then closed without their reply: Redis may have run them. */
const owedOnNodes = new WeakSet<Command>();

/**
 * The run-once guard on a Redis Cluster's node. A node's connection has no
 * reconnect of its own: its close fails every command it holds with "Connection is closed." and
 * the cluster sends each again 100 ms later (a pipeline's, all of them, if all failed alike), on the
 * slot's master as it then stands — a script Redis had run before the close, its reply lost, ran
 * twice (a move of units between sub-lines sent once as +5 added 10). The same error comes for a
 * command the node never wrote (its offline queue, while connecting), whose resend is right. So a
 * runOnceScripts command is marked owed when its sending was written (it was then at the back of
 * the node's queue of commands awaiting replies) and that sending's error says the connection
 * closed; the close's error itself goes on unchanged (a pipeline with other commands in it is sent
 * again as before, and those answer), and the resend, on whichever node, fails the owed command
 * instead of writing it: an outage to its caller (503, the round tried again). What a cluster sends
 * again after a MOVED, an ASK or a TRYAGAIN (replies: Redis did not run it) goes out as before.
 */
function notRunTwiceOnNode(node: Redis) {
  const send = node.sendCommand.bind(node) as (command: Command, ...rest: unknown[]) => unknown;
  const awaiting = node as unknown as { commandQueue: { peekBack(): { command: Command } | undefined } };
  node.sendCommand = ((command: Command, ...rest: unknown[]) => {
    if (owedOnNodes.has(command)) {
      failUnsent(command, rest[0], RAN_MAYBE);
      return command.promise;
    }
    markRunOnce(command);
    const out = send(command, ...rest);
    if (runOnce.has(command) && !command.isSettled && awaiting.commandQueue.peekBack()?.command === command) {
      // For this sending only: whatever ends it (a reply, MOVED, a time-out, the close) puts the one before back.
      const reject = command.reject;
      command.reject = (err: Error) => {
        command.reject = reject;
        if (err?.message === CONNECTION_CLOSED) owedOnNodes.add(command);
        reject.call(command, err);
      };
    }
    return out;
  }) as never;
}

function whenReady(redis: RedisLike): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise((resolve, reject) => {
    // What the connection met names why it never got ready (refused, a password), so the start
    // waits only for what passes by itself (infra/start-wait.ts). One server's first error ends the
    // wait (it was 10 s of silence before a start said anything); a cluster's nodes may fail one by
    // one on the way to ready, so it gets the whole time, and its last error is the cause.
    let last: unknown;
    const give = (err: Error) => {
      clearTimeout(timer);
      redis.off('ready', onReady);
      redis.off('error', onError);
      redis.disconnect();
      reject(err);
    };
    const onError = (err: unknown) => {
      last = err;
      if (!(redis instanceof Cluster)) give(new Error(`redis not ready: ${(err as Error)?.message ?? err}`, { cause: err }));
    };
    const timer = setTimeout(() => give(new Error(`redis not ready within ${READY_TIMEOUT_MS} ms`, { cause: last })), READY_TIMEOUT_MS);
    const onReady = () => {
      clearTimeout(timer);
      redis.off('error', onError);
      resolve();
    };
    redis.once('ready', onReady);
    redis.on('error', onError);
  });
}

/** Logs a connection's outage once when it starts, then rarely, and once when it ends. */
function logOutages(redis: RedisLike, log: Logger) {
  let down = false;
  let lastLogged = 0;
  let suppressed = 0;
  redis.on('error', (err: Error) => {
    const now = Date.now();
    if (!down || now - lastLogged >= ERROR_LOG_EVERY_MS) {
      log.warn({ err: err.message, suppressed }, down ? 'redis still unreachable' : 'redis error');
      lastLogged = now;
      suppressed = 0;
    } else suppressed++;
    down = true;
  });
  redis.on('ready', () => {
    if (down) log.info('redis reachable again');
    down = false;
  });
}
