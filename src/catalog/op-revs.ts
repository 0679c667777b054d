import type { OpRevRows } from '../db/op-revs.js';
import { FloodgateError } from '../kernel/errors.js';
import type { Logger } from '../kernel/logger.js';
import type { OpMarks } from '../queue/op-marks.js';

/**
 * Operators' writes survive a Redis rollback. Every write an operator makes (an item's definition,
 * its gate, its close, its blocks; scope '*': the blocks of every item) goes to Postgres first and
 * Redis after, as before, and now also takes a revision from one Postgres sequence, kept by scope
 * (drizzle/0017 `op_revs`), which Redis then keeps beside the data it marks: an item's meta `opRev`
 * (on the item's own slot, so it rolls back with the item), and the highest in a global zset.
 *
 * A rollback (AOF everysec losing its last second, a restored snapshot, a lagging replica promoted)
 * takes the write and its mark together (Redis's log is in order: a mark that survived, survived
 * with what came before it). So a mark behind Postgres's revision is a write Redis lost, and the
 * daemon applies Postgres's state of that scope again (`apply`: the catalog's row, the blocks).
 * Before, an operator's close in that second came undone (its tickets waiting again, told
 * `cancelled` before; the item taking joins), as did a gate change, a redefinition or a block.
 *
 * When: every OP_REV_CHECK_MS the global mark is compared with Postgres's highest revision (one
 * ZSCORE and one indexed read), and after every Redis reconnect every scope's mark (a rollback is a
 * restart; on a cluster a failover may roll back one master's items and not the global key); the
 * daemon's dispatcher admits nothing after a reconnect until that compare is done (daemon.ts).
 *
 * The writes of one scope and its repairs are serialised across daemons by a Postgres advisory
 * lock (session-level: every lock of a daemon in one session it reserves while any is held, so
 * operators' writes take one pooled connection however many run: db/op-revs.ts): a repair that read Postgres's state
 * before an operator's newer write can never put its older state into Redis after that write.
 */
export interface OpRevs {
  /**
   * Runs an operator's write of `scope` (an item id, or '*') under the scope's lock, then records
   * its revision in Postgres and marks Redis with it. A write refused for what was asked (a 4xx)
   * changed nothing and takes no revision; one that failed part-way (a store down) takes one
   * without the mark, so the next check applies what Postgres holds; one whose revision could not be
   * recorded (Postgres gone that moment) has it recorded at the next check.
   */
  within<T>(scope: string, write: () => Promise<T>): Promise<T>;
  /** Repairs the scopes Redis is behind on; `all`: compares every scope's mark (after a reconnect). Returns how many it repaired. */
  check(opts?: { all?: boolean }): Promise<number>;
}

export interface OpRevsDeps {
  /** Postgres's revisions and the scopes' locks (db/op-revs.ts). */
  rows: OpRevRows;
  /** Redis's marks (queue/op-marks.ts). */
  marks: OpMarks;
  /** Puts Postgres's state of `scope` into Redis; false when Redis does not hold the item (a restore's work, not this). */
  apply(scope: string): Promise<boolean>;
  log: Logger;
}

/** How often the daemon compares the global mark with Postgres's (ms; daemon.ts). */
export const OP_REV_CHECK_MS = 2_000;
/** How often a daemon on a Redis Cluster compares every scope's mark (ms; daemon.ts). */
export const OP_REV_FULL_MS = 60_000;

export function createOpRevs(deps: OpRevsDeps): OpRevs {
  const { rows, marks, log } = deps;
  let checking: Promise<number> | null = null;
  let next: Promise<number> | null = null;
  let nextAll = false;

  /** A write refused for what it asked (validation, conflict, not found, not allowed) changed nothing. */
  const refused = (err: unknown) => err instanceof FloodgateError && err.status >= 400 && err.status < 500;

  /**
   * Scopes whose write is done but whose revision Postgres did not record (it went away between the
   * two). Without one, a later rollback of that write would go unnoticed; so the revision is taken
   * again at the next check — only taken, not marked in Redis: Redis may have lost the write
   * meanwhile, and a revision above its mark makes the check apply Postgres's state (at worst once
   * more than needed).
   */
  const unrecorded = new Set<string>();

  async function record(): Promise<void> {
    for (const scope of [...unrecorded]) {
      await rows.bump(scope);
      unrecorded.delete(scope);
      log.info({ scope }, 'an operator write’s revision recorded late');
    }
  }

  async function repair(all: boolean): Promise<number> {
    await record();
    const floor = all ? 0 : await marks.top();
    const pgTop = await rows.top();
    if (!all && pgTop <= floor) return 0;
    const scopes = await rows.above(floor);
    const held = await Promise.all(scopes.map((r) => marks.of(r.scope)));
    let repaired = 0;
    let failed: unknown = null;
    for (let i = 0; i < scopes.length; i++) {
      if (held[i]! >= scopes[i]!.rev) continue;
      const { scope } = scopes[i]!;
      // One scope that cannot be repaired now (its lock held elsewhere, a store failing) does not
      // hold the others: it is left to the next round, and the highest mark is not raised past it.
      await rows.locked(scope, async () => {
        // Read again under the lock: an operator's write may have come (and marked) meanwhile.
        const rev = await rows.rev(scope);
        if ((await marks.of(scope)) >= rev) return;
        try {
          if (!(await deps.apply(scope))) return;
        } catch (err) {
          if (!refused(err)) throw err;
          // A stored definition today's rules refuse (as restore finds them): said once, not retried every check.
          log.error({ scope, err: (err as Error).message }, 'an operator write Redis had lost could not be applied again: its stored definition is refused now; define it again');
          return await marks.set(scope, rev);
        }
        await marks.set(scope, rev);
        repaired++;
        // (Redis lacked the write's mark: a rollback took both, or the write itself was cut short
        // before its mark — a connection killed mid-write — when Redis may have lost nothing.)
        log.warn({ scope, rev }, 'an operator write whose mark Redis lacks (lost in a rollback, or the write cut short) was applied again from postgres');
      }).catch((err) => {
        failed ??= err;
        log.warn({ scope, err: String(err) }, 'an operator write Redis lost not applied again yet');
      });
    }
    if (failed) throw failed;
    await marks.raiseTop(pgTop);
    return repaired;
  }

  /** One check at a time; one asked while another runs runs after it (shared by all asked meanwhile, a full compare if any asked for one). */
  function check(opts: { all?: boolean } = {}): Promise<number> {
    const all = opts.all ?? false;
    if (!checking) return run(all);
    nextAll ||= all;
    return (next ??= checking
      .catch(() => 0)
      .then(() => {
        const a = nextAll;
        next = null;
        nextAll = false;
        return run(a);
      }));
  }

  function run(all: boolean): Promise<number> {
    const p: Promise<number> = repair(all).finally(() => {
      if (checking === p) checking = null;
    });
    checking = p;
    return p;
  }

  return {
    within: (scope, write) =>
      rows.locked(scope, async () => {
        // A revision taken before the write as well: a daemon stopped part-way through it (killed
        // between a split item's sub-lines' cuts) leaves Postgres's revision above Redis's mark,
        // and the next check, on any daemon, applies Postgres's state. Taken only after the write,
        // nothing was left to find: the close's other sub-lines stayed open, their tickets waiting
        // (a review). A write refused for what it asked changed nothing: Redis is marked back up
        // to it when it was current before.
        const [revWas, markWas] = await Promise.all([rows.rev(scope), marks.of(scope)]);
        const ahead = await rows.bump(scope);
        let out: Awaited<ReturnType<typeof write>>;
        try {
          out = await write();
        } catch (err) {
          // Part-way: Postgres may hold what Redis does not; the next check applies it.
          if (!refused(err)) await rows.bump(scope).catch(() => unrecorded.add(scope));
          else if (markWas >= revWas) await marks.set(scope, ahead).catch(() => {});
          throw err;
        }
        // The write is done: a revision or a mark that fails now (a store gone this moment) is
        // logged, not answered as the write's failure; a missing mark only makes the next check
        // apply again what Redis already holds, a missing revision is taken at the next check.
        let rev: number;
        try {
          rev = await rows.bump(scope);
        } catch (err) {
          unrecorded.add(scope);
          log.warn({ scope, err: String(err) }, 'operator write done, its revision not recorded yet');
          return out;
        }
        unrecorded.delete(scope); // this revision covers an earlier write's that was not recorded
        await marks.set(scope, rev).catch((err) => log.warn({ scope, err: String(err) }, 'operator write done, Redis not marked with its revision'));
        return out;
      }),
    check,
  };
}
