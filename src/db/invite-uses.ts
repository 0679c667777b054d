import type postgres from 'postgres';

/**
 * SQL for invites' uses (drizzle/0020): the ticket each invite's first use made (sealed by the
 * caller: Postgres holds no ticket id), keyed by the invite's item and nonce, kept until
 * `expires_at` (a minute after the invite's own expiry).
 * Every statement is one primary-key lookup or insert: nothing here waits on another invite.
 */
export function createInviteUseRows(sql: postgres.Sql) {
  return {
    /** The sealed ticket the invite's recorded use made, if its row has not expired at `nowMs`. */
    async ticketOf(itemId: string, nonce: string, nowMs: number): Promise<string | null> {
      const [row] = await sql<{ ticket_sealed: string }[]>`select ticket_sealed from invite_uses
        where item_id = ${itemId} and nonce = ${nonce} and expires_at > ${new Date(nowMs).toISOString()}::timestamptz`;
      return row?.ticket_sealed ?? null;
    },
    /**
     * Records the invite's use; if a use was recorded first, returns that one's ticket. One
     * statement: the insert, else the row that stopped it (read again if it committed after this
     * statement's snapshot).
     */
    async claim(itemId: string, nonce: string, sealed: string, expiresAtMs: number): Promise<string> {
      const at = new Date(expiresAtMs).toISOString();
      for (let tries = 0; tries < 5; tries++) {
        const [row] = await sql<{ ticket_sealed: string }[]>`with ins as (
            insert into invite_uses (item_id, nonce, ticket_sealed, expires_at) values (${itemId}, ${nonce}, ${sealed}, ${at}::timestamptz)
            on conflict (item_id, nonce) do nothing returning ticket_sealed)
          select ticket_sealed from ins union all select ticket_sealed from invite_uses where item_id = ${itemId} and nonce = ${nonce} limit 1`;
        if (row) return row.ticket_sealed;
      }
      throw new Error(`invite use of ${itemId} neither recorded nor found`);
    },
    /** Deletes rows expired at `nowMs`, up to `limit` at a time; returns how many went. */
    async purge(nowMs: number, limit = 10_000): Promise<number> {
      const res = await sql`delete from invite_uses where ctid in (
        select ctid from invite_uses where expires_at <= ${new Date(nowMs).toISOString()}::timestamptz limit ${limit})`;
      return res.count;
    },
  };
}

export type InviteUseRows = ReturnType<typeof createInviteUseRows>;
