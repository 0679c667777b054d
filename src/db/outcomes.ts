import type postgres from 'postgres';

export interface OutcomeRow {
  ticketId: string;
  itemId: string;
  userId: string;
  status: string;
  reason: string | null;
  result: unknown;
  joinedAt: Date;
  admittedAt: Date | null;
  finishedAt: Date;
}

/** Appends ended tickets to the outcome ledger in one statement; a row already there is kept. */
export async function insertOutcomes(sql: postgres.Sql, rows: OutcomeRow[]): Promise<number> {
  if (!rows.length) return 0;
  const res = await sql`
    insert into ticket_outcomes (ticket_id, item_id, user_id, status, reason, result, joined_at, admitted_at, finished_at)
    select t, i, u, s, r, res::jsonb, j::timestamptz, a::timestamptz, f::timestamptz from unnest(
      ${rows.map((r) => r.ticketId)}::text[], ${rows.map((r) => r.itemId)}::text[], ${rows.map((r) => r.userId)}::text[],
      ${rows.map((r) => r.status)}::text[], ${rows.map((r) => r.reason)}::text[],
      ${rows.map((r) => (r.result === null || r.result === undefined ? null : JSON.stringify(r.result)))}::text[],
      ${rows.map((r) => r.joinedAt.toISOString())}::text[], ${rows.map((r) => r.admittedAt?.toISOString() ?? null)}::text[],
      ${rows.map((r) => r.finishedAt.toISOString())}::text[]) as v(t, i, u, s, r, res, j, a, f)
    on conflict (ticket_id) do nothing`;
  return res.count;
}
