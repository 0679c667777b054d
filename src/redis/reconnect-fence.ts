import type { Logger } from '../kernel/logger.js';
import type { RedisLike } from './client.js';

/**
 * The hold after a Redis reconnect (daemon.ts): until the daemon has compared what a rollback may
 * have taken with Postgres (`check`), `current()` is a promise that admissions, pulls, joins,
 * polls and cancels wait for; null when nothing is held.
 *
 * The daemon talks to Redis over more than one connection (the API's and the admissions'), and
 * each reconnects on its own. The check runs only once every one of them is ready again: run when
 * the first came back, it read Redis through a connection still down, failed at once, and the hold
 * ended with it — and the other connection, back a moment later, admitted a ticket an operator's
 * close (lost in the rollback) had ended (test/fault-rollback-operators.test.ts, under three busy
 * loops, failed 2 runs of 15 with only this fixed: admissions.ts tells the rest). A check that fails is run again until it
 * passes or `holdMs` is up: a Postgres that does not answer does not stop the sale.
 */
export interface ReconnectFence {
  /** A reconnect (or what counts as one): holds from now until the check has run. */
  raise(): void;
  current(): Promise<unknown> | null;
  /** How many holds were raised so far: a read that began before a raise may have read the rolled-back data. */
  raised(): number;
  /**
   * What a script that a rolled-back Redis must not see first waits for as it is sent
   * (whenUnheld): the hold, or null; and while any connection is not ready (reconnecting, or back
   * but its 'ready' — which raises the hold — not yet emitted, its status `ready` or not) it throws NOT_READY at once, as a
   * command sent then would fail. Looked at while every connection was ready, a script goes out
   * within an event-loop turn or two (the batched scripts wait for setImmediate: redis/scripts.ts),
   * far less than a reconnect takes (≥ 50 ms); looked at while one was down, it could go out a
   * turn later on the new connection, inside the hold raised meanwhile (a review: a join looked at
   * while its connection was `connect`, was written once it was ready, and ran while the hold was
   * up, before the check had put the lost close back).
   */
  sendable(): Promise<unknown> | null;
}

/** How long a failed check waits before it is run again, within the hold. */
export const CHECK_RETRY_MS = 200;

/** Resolves after `ms` (null: never), or at once when `signal` aborts; its timer does not outlive it. */
function until(signal: AbortSignal, ms: number | null): Promise<null> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(null);
    const done = () => {
      if (timer) clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve(null);
    };
    const timer = ms === null ? null : setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

/** What a script fails with when it would be sent while a connection of the daemon's is not ready (a 503 to its caller). */
export const NOT_READY = 'Connection is closed: a Redis connection is reconnecting, and nothing that a rolled-back Redis must not see first is sent until the hold after it';

export function createReconnectFence(deps: {
  connections: RedisLike[];
  /** What is compared once every connection is ready; its failure is logged and ends the hold. */
  check(): Promise<unknown>;
  holdMs: number;
  log: Logger;
}): ReconnectFence {
  let fence: Promise<unknown> | null = null;
  let raised = 0;
  // The connections whose 'ready' was emitted since they last closed. ioredis turns a connection's
  // status `ready` a tick before it emits 'ready' (setStatus: process.nextTick), and the hold is
  // raised on the event: a script looked at in that tick saw a ready connection and no hold, and
  // went out before the check (the window is one tick; the status alone let it through).
  const announced = new Set(deps.connections.filter((conn) => conn.status === 'ready'));
  for (const conn of deps.connections) {
    conn.on('close', () => announced.delete(conn));
    conn.on('ready', () => announced.add(conn));
  }

  /**
   * Resolves once every connection is ready; rejects if `signal` aborts first (the hold's time is
   * up). (Not events.once: a failed reconnect's 'error' would reject it.)
   */
  const ready = (conn: RedisLike, signal: AbortSignal) =>
    new Promise<void>((resolve, reject) => {
      const onReady = () => (signal.removeEventListener('abort', onAbort), resolve());
      const onAbort = () => (conn.off('ready', onReady), reject(signal.reason));
      conn.once('ready', onReady);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  const allReady = async (signal: AbortSignal) => {
    for (const conn of deps.connections) {
      while (conn.status !== 'ready') await ready(conn, signal);
    }
  };

  /**
   * The check, tried again every CHECK_RETRY_MS while it fails, until it passes or the hold's time
   * is up (then it rejects with its last failure). It ended the hold at its first failure: a
   * Cluster master restarted in place is back before its peers take it back, and for a second or
   * so every read answered CLUSTERDOWN — the check failed at once, the hold ended unchecked, and a
   * newcomer joined the item an operator had closed (test/cluster-restart-fence.test.ts, under
   * two busy loops). A Postgres that does not answer holds no longer than before (`holdMs`).
   */
  const checkUntilDone = async (signal: AbortSignal) => {
    // (One for every try: a listener each, never removed, warned of a leak at the eleventh.)
    const timeUp = until(signal, null);
    for (;;) {
      const failed = await Promise.race([deps.check().then(() => null, (err: unknown) => ({ err })), timeUp]);
      if (failed === null && !signal.aborted) return;
      if (signal.aborted) throw failed?.err ?? new Error(`the hold's time (${deps.holdMs} ms) was up before the check ended; it goes on without holding`);
      await until(signal, CHECK_RETRY_MS);
      if (signal.aborted) throw failed!.err;
    }
  };

  return {
    raise() {
      raised++;
      const timeUp = new AbortController();
      const timer = setTimeout(() => timeUp.abort(), deps.holdMs);
      let connected = false;
      const checked: Promise<unknown> = allReady(timeUp.signal)
        .then(() => ((connected = true), checkUntilDone(timeUp.signal)))
        .catch((err: unknown) => {
          if (!connected) deps.log.warn({ holdMs: deps.holdMs }, 'redis connections not all ready within the hold after a reconnect');
          else deps.log.warn({ err: String(err) }, 'operator writes not checked after a reconnect');
        })
        .finally(() => {
          clearTimeout(timer);
          if (fence === checked) fence = null;
        });
      fence = checked;
    },
    current: () => fence,
    raised: () => raised,
    sendable() {
      for (const conn of deps.connections) if (conn.status !== 'ready' || !announced.has(conn)) throw new Error(NOT_READY);
      return fence;
    },
  };
}

/**
 * `send` once no hold is up (`hold`: the fence's sendable()), at once when none is. Where a script
 * that a rolled-back Redis must not see first (an admission, a join, a cancel) is sent: a look made
 * once at the start of a round or a request, before an await, let a script made while Redis was
 * down go out after the reconnect, inside the hold (admissions.ts). `waited`: a hold delayed it
 * (what was stamped before is stale). A `hold` that throws (sendable's NOT_READY) is a rejection.
 */
export function whenUnheld<T>(hold: (() => Promise<unknown> | null) | undefined, send: (waited: boolean) => Promise<T>, waited = false): Promise<T> {
  let held: Promise<unknown> | null | undefined;
  try {
    held = hold?.();
  } catch (err) {
    // (ReconnectFence.sendable's NOT_READY: a rejection, as the send's own failure would be.)
    return Promise.reject(err);
  }
  if (!held) return send(waited);
  const again = () => whenUnheld(hold, send, true);
  return held.then(again, again);
}

