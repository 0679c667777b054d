import type postgres from 'postgres';

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
  /** Gives the locks' session back to the pool (before the pool ends: an end waits for a reserved connection). */
  close(): void;
}

const LOCK_RETRY_MS = 20;

export function createOpRevRows(sql: postgres.Sql): OpRevRows {
  /** The one session this process holds its scope locks in (reserved from the pool while any is held). */
  let held: Promise<postgres.ReservedSql> | null = null;
  let current: postgres.ReservedSql | null = null;
  const session = () =>
    (held ??= sql.reserve().then(
      (conn) => (current = conn),
      (err) => {
        held = null;
        throw err;
      },
    ));
  /** A session whose query failed, or that no lock uses any more, is given back (once); the next lock reserves another. */
  const lost = (conn: postgres.ReservedSql) => {
    if (current !== conn) return;
    current = null;
    held = null;
    conn.release();
  };
  const chains = new Map<string, Promise<void>>();
  /** Locks held or being taken in the session. */
  let users = 0;
  return {
    close: () => void (current && lost(current)),
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
      users++;
      try {
        const name = `floodgate:op:${scope}`;
        const conn = await session();
        try {
          // Tried, not waited for: a wait would hold the shared session's other queries behind it.
          while (!(await conn`select pg_try_advisory_lock(hashtextextended(${name}, 0)) as ok`)[0]!.ok) await new Promise((r) => setTimeout(r, LOCK_RETRY_MS));
        } catch (err) {
          lost(conn);
          throw err;
        }
        try {
          return await fn();
        } finally {
          // (A session that is gone took its locks with it.)
          await conn`select pg_advisory_unlock(hashtextextended(${name}, 0))`.catch(() => lost(conn));
        }
      } finally {
        // The session goes back to the pool once no lock is held (an idle reserved connection
        // would hold the pool's end for its whole timeout).
        if (--users === 0 && current) lost(current);
        done();
        if (chains.get(scope) === tail) chains.delete(scope);
      }
    },
  };
}
