import type postgres from 'postgres';
import { FloodgateError } from '../kernel/errors.js';

/**
 * Postgres's side of the operators' write revisions (drizzle/0017; catalog/op-revs.ts says why):
 * one sequence, the latest revision per scope (an item id, or '*'), and a lock per scope that
 * every daemon's writes and repairs of that scope take.
 */
export interface OpRevRows {
  /** A new revision for `scope` (from the sequence), recorded as its latest. */
  bump(scope: string): Promise<number>;
  /** The scope's latest revision (0: none). */
  rev(scope: string): Promise<number>;
  /** The latest revisions of these scopes (those with none are left out). */
  revs(scopes: string[]): Promise<Map<string, number>>;
  /** The highest revision of any scope (0: none). */
  top(): Promise<number>;
  /** Scopes whose latest revision is above `floor`: '*', and items that are not archived. */
  above(floor: number): Promise<{ scope: string; rev: number }[]>;
  /**
   * Runs `fn` holding the scope's advisory lock. The locks of every scope live in one session this
   * process reserves once (a session may hold many locks), so operators' writes take one pooled
   * connection however many run at once, and run at once; writes of one scope in this process
   * queue for each other first (a session's lock is re-entrant for itself).
   */
  locked<T>(scope: string, fn: () => Promise<T>): Promise<T>;
}

const LOCK_RETRY_MS = 20;
/** How long a lock is tried for before the write fails (503) or a repair leaves the scope to its next round. */
export const LOCK_WAIT_MS = 15_000;

/**
 * The scope's lock was not had within LOCK_WAIT_MS: another daemon holds it (or the session of a
 * daemon cut off from Postgres, until Postgres sees it go). An operator's write answers 503.
 */
export class LockBusy extends FloodgateError {
  constructor(scope: string) {
    super('unavailable', `Another write of ${scope === '*' ? 'the blocks of every item' : `item ${scope}`} is under way; try again shortly.`, undefined, 1);
  }
}

interface Session {
  conn: Promise<postgres.ReservedSql>;
  /** Locks held or being taken in it. */
  users: number;
  /** A query of it failed: no new lock goes to it, and the last user gives it back. */
  broken: boolean;
}

export function createOpRevRows(sql: postgres.Sql): OpRevRows {
  /** The session this process takes new scope locks in (reserved from the pool while any is held). */
  let current: Session | null = null;
  const chains = new Map<string, Promise<void>>();
  const take = (): Session => {
    if (!current || current.broken) {
      const conn = sql.reserve();
      const s: Session = { conn, users: 0, broken: false };
      conn.catch(() => (s.broken = true));
      current = s;
    }
    current.users++;
    return current;
  };
  /**
   * The last user of a session gives it back: with nothing held in it (a lock whose unlock failed
   * is let go with every other, or with the session itself if it is gone).
   */
  const leave = (s: Session) => {
    if (--s.users > 0) return;
    if (current === s) current = null;
    void s.conn
      .then(async (conn) => {
        if (s.broken) await conn`select pg_advisory_unlock_all()`.catch(() => {});
        conn.release();
      })
      .catch(() => {});
  };
  return {
    async bump(scope) {
      const [r] = await sql`insert into op_revs (scope, rev) values (${scope}, nextval('floodgate_op_rev_seq')) on conflict (scope) do update set rev = excluded.rev returning rev`;
      return Number(r!.rev);
    },
    async rev(scope) {
      const [r] = await sql`select rev from op_revs where scope = ${scope}`;
      return Number(r?.rev ?? 0);
    },
    async revs(scopes) {
      const out = new Map<string, number>();
      for (let i = 0; i < scopes.length; i += 5000) {
        const rows = await sql<{ scope: string; rev: string }[]>`select scope, rev from op_revs where scope = any(${scopes.slice(i, i + 5000)})`;
        for (const r of rows) out.set(r.scope, Number(r.rev));
      }
      return out;
    },
    async top() {
      const [r] = await sql`select coalesce(max(rev), 0)::bigint as top from op_revs`;
      return Number(r!.top);
    },
    async above(floor) {
      const rows = await sql<{ scope: string; rev: string }[]>`
        select o.scope, o.rev from op_revs o
        where o.rev > ${floor} and (o.scope = '*' or exists (select 1 from items i where i.item_id = o.scope and i.archived_at is null))`;
      return rows.map((r) => ({ scope: r.scope, rev: Number(r.rev) }));
    },
    async locked(scope, fn) {
      // In this process: one at a time per scope (a session takes its own lock again at once).
      const before = chains.get(scope) ?? Promise.resolve();
      let done!: () => void;
      const mine = new Promise<void>((r) => (done = r));
      const tail = before.then(() => mine);
      chains.set(scope, tail);
      await before;
      const s = take();
      try {
        const name = `floodgate:op:${scope}`;
        let conn: postgres.ReservedSql;
        try {
          conn = await s.conn;
          // Tried, not waited for: a wait would hold the shared session's other queries behind it.
          const until = Date.now() + LOCK_WAIT_MS;
          while (!(await conn`select pg_try_advisory_lock(hashtextextended(${name}, 0)) as ok`)[0]!.ok) {
            if (Date.now() > until) throw new LockBusy(scope);
            await new Promise((r) => setTimeout(r, LOCK_RETRY_MS));
          }
        } catch (err) {
          if (!(err instanceof LockBusy)) s.broken = true;
          throw err;
        }
        try {
          return await fn();
        } finally {
          await conn`select pg_advisory_unlock(hashtextextended(${name}, 0))`.catch(() => (s.broken = true));
        }
      } finally {
        leave(s);
        done();
        if (chains.get(scope) === tail) chains.delete(scope);
      }
    },
  };
}
