import { against, type BenchContext, type Server } from '../../lib/harness.js';
import { runLoad } from '../../lib/load.js';
import { auth } from './settings.js';

/** Joins `n` new users (autocannon, `amount`) and returns every ticket id, in line order. */
export async function fill(ctx: BenchContext, daemon: Server, itemId: string, n: number, userPrefix: string): Promise<string[]> {
  const spec = against(daemon, { connections: 10, headers: auth, gen: { kind: 'join', path: `/v1/items/${itemId}/tickets`, userPrefix, sampleEvery: 1 } })('');
  const r = await runLoad(ctx.tmpDir, { ...spec, amount: n });
  const ids = r.samples.sort((a, b) => a.position - b.position).map((s) => s.ticketId);
  if (ids.length < n) throw new Error(`filling ${itemId}: only ${ids.length} tickets, statuses ${JSON.stringify(r.status)}`);
  return ids;
}
