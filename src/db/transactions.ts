import type postgres from 'postgres';

/** Per pool: how long the server may keep one of its transactions idle (ms). */
const idleLimits = new WeakMap<postgres.Sql, number>();

/** Sets the idle limit of `sql`'s transactions (db/client.ts: half the answer timeout). */
export function limitIdleTransactions(sql: postgres.Sql, ms: number): void {
  idleLimits.set(sql, ms);
}

/**
 * `sql.begin`, with the server told to end the session should the transaction sit idle longer
 * than the pool's limit (`SET LOCAL idle_in_transaction_session_timeout`). A transaction left open
 * by a connection the daemon gave up on as silent (kernel/silent-socket.ts) holds its row locks
 * until the server hears the connection is gone — hours through a path that drops packets — and
 * the next sale of the item on a new connection would wait on them and be given up in turn. Set
 * per transaction, not as a startup parameter: PgBouncer refuses startup parameters it does not
 * know, and in its transaction mode a session setting would not follow the transaction anyway.
 */
export function begin<T>(sql: postgres.Sql, run: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> {
  const ms = idleLimits.get(sql);
  return sql.begin(async (tx) => {
    // And a lock waited for no longer than the connection is (twice the idle limit, less a second):
    // the server gives the wait up (55P03, busy) before the daemon gives up the connection, which
    // left the server's session waiting on the lock, another every 15 s, as long as it was held.
    if (ms) await tx`select set_config('idle_in_transaction_session_timeout', ${String(ms)}, true), set_config('lock_timeout', ${String(Math.max(250, 2 * ms - 1000))}, true)`;
    return run(tx);
  }) as Promise<T>;
}
