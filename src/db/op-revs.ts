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
  /** The highest revision of any scope (0: none). */
  top(): Promise<number>;
  /** Scopes whose latest revision is above `floor`: '*', and items that are not archived. */
  above(floor: number): Promise<{ scope: string; rev: number }[]>;
  /**
   * Runs `fn` holding the scope's session advisory lock, on a connection reserved for it: at most
   * LOCK_CONNECTIONS per daemon, so operators' writes never hold the pool the sales need.
   */
  locked<T>(scope: string, fn: () => Promise<T>): Promise<T>;
}

const LOCK_CONNECTIONS = 2;

export function createOpRevRows(sql: postgres.Sql): OpRevRows {
  let free = LOCK_CONNECTIONS;
  const queued: (() => void)[] = [];
  return {
    async bump(scope) {
      const [r] = await sql`insert into op_revs (scope, rev) values (${scope}, nextval('floodgate_op_rev_seq')) on conflict (scope) do update set rev = excluded.rev returning rev`;
      return Number(r!.rev);
    },
    async rev(scope) {
      const [r] = await sql`select rev from op_revs where scope = ${scope}`;
      return Number(r?.rev ?? 0);
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
      if (free > 0) free--;
      else await new Promise<void>((r) => queued.push(r));
      try {
        const conn = await sql.reserve();
        const name = `floodgate:op:${scope}`;
        try {
          await conn`select pg_advisory_lock(hashtextextended(${name}, 0))`;
          try {
            return await fn();
          } finally {
            await conn`select pg_advisory_unlock(hashtextextended(${name}, 0))`.catch(() => {});
          }
        } finally {
          conn.release();
        }
      } finally {
        const next = queued.shift();
        if (next) next();
        else free++;
      }
    },
  };
}
