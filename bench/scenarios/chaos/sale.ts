/**
 * The buyers of one chaos sale: `buyers` distinct users join at a steady `ratePerS` (from this
 * process, with the bench's fetch helper), each retrying a 503, another 5xx, a refused connection
 * or a timeout a few times as a client would. Optionally `hostileEvery`: after every n-th buyer one
 * extra join whose userId or payload holds `\u0000` or a lone surrogate. Every answer is recorded.
 * When the sale is quiet, `readFinal` reads every accepted ticket once.
 */
import { call, SERVICE_KEY } from '../../lib/api.js';
import { sleep, type Env } from './setup.js';

export interface Buyer {
  userId: string;
  hostile: boolean;
  /** Every status answered to this buyer's joins, in order (0 = no answer: refused, reset, timeout). */
  answers: number[];
  /** The last join's status and error code. */
  status: number;
  code?: string;
  ticketId?: string;
  /** When the accepting request was sent and its answer (200/202) arrived (ms, this process's clock). */
  sentAt?: number;
  acceptedAt?: number;
  /** The ticket after the sale went quiet: its status code and view. */
  final?: { status: number; state?: string; reason?: string; result?: Record<string, unknown> };
}

export interface SaleOpts {
  buyers: number;
  ratePerS: number;
  hostileEvery?: number;
  userPrefix: string;
}

export interface SaleRun {
  buyers: Buyer[];
  /** Buyers launched so far (valid ones). */
  launched(): number;
  /** Resolves once `n` valid buyers have been launched. */
  launchedAtLeast(n: number): Promise<void>;
  /** Successful joins (200/202), with the time their answer arrived. */
  joinsOk: number[];
  /** All buyers have their final answer. */
  done: Promise<void>;
}

const RETRIES = 6;
const RETRY_MS = 500;
const TIMEOUT_MS = 10_000;

/** A lone surrogate and a NUL, in the places a client could put them. */
const hostileBody = (i: number, userId: string) =>
  [
    { userId: `${userId}\ud800`, payload: { note: 'lone high surrogate in userId' } },
    { userId, payload: { note: `nul\u0000inside` } },
    { userId, payload: { [`k\udc00`]: 'lone low surrogate in a payload key' } },
    { userId: `${userId}\u0000`, payload: {} },
  ][i % 4];

export function startSale(env: Env, itemId: string, opts: SaleOpts): SaleRun {
  const buyers: Buyer[] = [];
  const joinsOk: number[] = [];
  let launched = 0;
  const waiters: { n: number; resolve: () => void }[] = [];
  const joinPath = `/v1/items/${itemId}/tickets`;

  const buy = async (b: Buyer, body: unknown) => {
    for (let attempt = 0; attempt < RETRIES; attempt++) {
      let status = 0;
      let res: Awaited<ReturnType<typeof call>> | null = null;
      const sentAt = Date.now();
      try {
        res = await call(env.daemon.url, 'POST', joinPath, SERVICE_KEY, body, { timeoutMs: TIMEOUT_MS });
        status = res.status;
      } catch {
        status = 0;
      }
      b.answers.push(status);
      b.status = status;
      b.code = (res?.body.error as { code?: string } | undefined)?.code;
      if (status === 200 || status === 202) {
        b.ticketId = res!.body.ticketId as string;
        b.sentAt = sentAt;
        b.acceptedAt = Date.now();
        joinsOk.push(b.acceptedAt);
        return;
      }
      if (status !== 0 && status < 500) return;
      await sleep(RETRY_MS);
    }
  };

  const done = (async () => {
    const pending: Promise<void>[] = [];
    const t0 = Date.now();
    for (let i = 0; i < opts.buyers; i++) {
      const due = t0 + (i * 1000) / opts.ratePerS;
      if (due > Date.now()) await sleep(due - Date.now());
      const b: Buyer = { userId: `${opts.userPrefix}${i}`, hostile: false, answers: [], status: 0 };
      buyers.push(b);
      pending.push(buy(b, { userId: b.userId }));
      launched++;
      for (const w of waiters.filter((x) => launched >= x.n)) w.resolve();
      if (opts.hostileEvery && i % opts.hostileEvery === opts.hostileEvery - 1) {
        const h: Buyer = { userId: `${opts.userPrefix}h${i}`, hostile: true, answers: [], status: 0 };
        buyers.push(h);
        pending.push(buy(h, hostileBody(i / opts.hostileEvery, h.userId)));
      }
    }
    await Promise.all(pending);
  })();

  return {
    buyers,
    joinsOk,
    launched: () => launched,
    launchedAtLeast: (n) => (launched >= n ? Promise.resolve() : new Promise((resolve) => waiters.push({ n, resolve }))),
    done,
  };
}

/** Reads every accepted ticket once (a 503 is asked again), `conc` at a time. */
export async function readFinal(env: Env, buyers: Buyer[], conc = 32): Promise<number[]> {
  const answers: number[] = [];
  const todo = buyers.filter((b) => b.ticketId);
  let next = 0;
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (next < todo.length) {
        const b = todo[next++];
        for (let attempt = 0; attempt < 4; attempt++) {
          let r: Awaited<ReturnType<typeof call>> | null = null;
          try {
            r = await call(env.daemon.url, 'GET', `/v1/tickets/${b.ticketId}`, null, undefined, { timeoutMs: TIMEOUT_MS });
          } catch {
            /* no answer: ask again */
          }
          answers.push(r?.status ?? 0);
          if (r && r.status !== 503 && r.status < 500) {
            const outcome = r.body.outcome as { reason?: string; result?: Record<string, unknown> } | undefined;
            b.final = { status: r.status, state: r.body.state as string | undefined, reason: outcome?.reason, result: outcome?.result };
            break;
          }
          b.final = { status: r?.status ?? 0 };
          await sleep(RETRY_MS);
        }
      }
    }),
  );
  return answers;
}
