import { describe, expect, it } from 'vitest';
import { systemClock } from '../src/kernel/clock.js';
import { ticketRef } from '../src/kernel/ticket-ref.js';
import { createLine } from '../src/queue/line.js';
import { testRedis } from './support/redis.js';

/**
 * Two cuts at once (a review of this stop): a sell-out's cut reads who bought from Postgres (up to
 * 2 s), and meanwhile an operator's close ends the line without that read. The sell-out's script
 * then held in doubt a buyer's ticket the close had ended — a cut leaves the records of what it
 * ended as they were — so the ticket read `admitted` again after `cancelled`, the counters went to
 * -1, and the script's answer came back as "no such item". A ticket an earlier cut ended is left
 * ended. (Postgres's answer is the test's here: the race is between the two scripts.)
 */
const { redis, newPrefix } = testRedis();

describe('a cut whose look at the buyers overlaps another cut', () => {
  it('does not bring back a ticket the other cut ended', async () => {
    const prefix = newPrefix();
    let release!: () => void;
    const later = new Promise<void>((r) => (release = r));
    let buyers: { userId: string; ref: string }[] = [];
    const slow = createLine({ redis, prefix, clock: systemClock, cacheMs: 0, salesOf: async () => (await later, buyers) });
    const quick = createLine({ redis, prefix, clock: systemClock, cacheMs: 0, salesOf: () => Promise.reject(new Error('postgres away')) });
    await quick.definitions.define(
      { itemId: 'race', handler: 'seckill', config: { stock: 3 }, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' },
      { mode: 'closed', rate: null, maxInFlight: null },
      { reopen: false },
    );
    const ids: string[] = [];
    for (const u of ['u1', 'u2', 'u3']) ids.push((await quick.tickets.join('race', u, null)).ticket.ticketId);
    buyers = [{ userId: 'u1', ref: ticketRef(ids[0]) }];

    const soldOut = slow.definitions.cut('race', 'sold_out');
    // The close while the sell-out reads Postgres (its read could not be made: it goes on, as an operator's close does).
    await new Promise((r) => setTimeout(r, 50));
    expect(await quick.definitions.cut('race', 'closed')).toBe(3);
    release();
    await soldOut; // before: threw "No such item" (the script's -1)
    const counts = await redis.hgetall(`${prefix}{race}:ctr`);
    for (const k of ['waiting', 'admitted', 'doubt', 'rejected', 'cancelled']) expect(Number(counts[k] ?? 0), k).toBeGreaterThanOrEqual(0);
    expect(Number(counts.cancelled)).toBe(3);
    expect(Number(counts.doubt ?? 0)).toBe(0);
    for (const id of ids) expect((await quick.tickets.status(id)).state).toBe('cancelled');
  });
});
