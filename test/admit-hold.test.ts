import { describe, expect, it } from 'vitest';
import { manualClock, systemClock } from '../src/kernel/clock.js';
import { createLine } from '../src/queue/line.js';
import { testRedis } from './support/redis.js';

/**
 * The hold after a Redis reconnect (redis/reconnect-fence.ts) is waited for where an admission is
 * sent, not only where a dispatcher round or a route begins: a round that looked at the hold while
 * Redis was down (none yet) and sent its admit script after the reconnect admitted a ticket an
 * operator's close, lost in a rollback and not yet put back, had ended. Here the hold is the
 * test's, and the check it stands for (putting the close back) is the other line's cut.
 */
const { redis, newPrefix } = testRedis();

function holdable() {
  let hold: Promise<void> | null = null;
  let lift = () => {};
  return {
    current: () => hold,
    raise: () => {
      hold = new Promise<void>((r) => (lift = () => ((hold = null), r())));
    },
    lift: () => lift(),
  };
}

const define = (line: ReturnType<typeof createLine>, itemId: string) =>
  line.definitions.define(
    { itemId, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' },
    { mode: 'manual', rate: null, maxInFlight: null },
    { reopen: false },
  );

/** A line under the test's hold, and another (an operator's daemon, the check's writes) without one. */
function lines() {
  const prefix = newPrefix();
  const hold = holdable();
  const line = createLine({ redis, prefix, clock: systemClock, cacheMs: 0, admitHold: hold.current });
  const operator = createLine({ redis, prefix, clock: systemClock, cacheMs: 0 });
  return { prefix, hold, line, operator };
}

describe('an admission sent while a reconnect hold is up', () => {
  it('waits for the hold, and then sees what the check put back: nothing a close ended is admitted', async () => {
    const { prefix, hold, line, operator } = lines();
    await define(line, 'held');
    for (const u of ['bob', 'carol']) await line.tickets.join('held', u, null);

    hold.raise();
    let answered = false;
    const round = line.admissions.admitRound('held', 10, 30_000).finally(() => (answered = true));
    // The round is made and waits: its script not sent (before: both tickets admitted at once).
    await new Promise((r) => setTimeout(r, 100));
    expect(answered).toBe(false);
    expect(Number(await redis.hget(`${prefix}{held}:ctr`, 'admitted') ?? 0)).toBe(0);
    // The check: the close comes back; then the hold is lifted.
    expect(await operator.definitions.cut('held', 'closed')).toBe(2);
    hold.lift();
    expect((await round).tickets).toEqual([]);
    expect(Number(await redis.hget(`${prefix}{held}:ctr`, 'admitted') ?? 0)).toBe(0);
  });

  it('goes at once when no hold is up, and a relaunch waits as an admission does', async () => {
    const { hold, line } = lines();
    await define(line, 'open');
    await line.tickets.join('open', 'dave', null);
    const got = await line.admissions.admitRound('open', 10, 30_000);
    expect(got.tickets.map((t) => t.userId)).toEqual(['dave']);

    hold.raise();
    let answered = false;
    const relaunch = line.admissions.relaunchDoubts('open', [got.tickets[0]!.seq], 30_000).finally(() => (answered = true));
    await new Promise((r) => setTimeout(r, 100));
    expect(answered).toBe(false);
    hold.lift();
    await relaunch;
  });

  it('a join waits as well, and is refused by the close the check put back', async () => {
    const { prefix, hold, line, operator } = lines();
    await define(line, 'joining');
    hold.raise();
    let answered = false;
    const join = line.tickets.join('joining', 'erin', null).finally(() => (answered = true));
    join.catch(() => {});
    await new Promise((r) => setTimeout(r, 100));
    expect(answered).toBe(false);
    await operator.definitions.cut('joining', 'closed');
    hold.lift();
    await expect(join).rejects.toMatchObject({ code: 'closed' });
  });

  it('a cancel waits as well, and then answers the end the close put back (item_closed), not its own', async () => {
    const { hold, line, operator } = lines();
    await define(line, 'leaving');
    const { ticket } = await line.tickets.join('leaving', 'frank', null);
    hold.raise();
    let answered = false;
    const cancel = line.tickets.cancel(ticket.ticketId).finally(() => (answered = true));
    await new Promise((r) => setTimeout(r, 100));
    expect(answered).toBe(false);
    await operator.definitions.cut('leaving', 'closed');
    hold.lift();
    const closed = { state: 'cancelled', outcome: { status: 'cancelled', reason: 'item_closed' } };
    expect(await cancel).toMatchObject(closed);
    expect(await line.tickets.status(ticket.ticketId)).toMatchObject(closed);
  });

  it("a split line's admission the hold kept past the sale window's end admits nobody, and the line ends as the window did", async () => {
    const hold = holdable();
    const clock = manualClock();
    const line = createLine({ redis, prefix: newPrefix(), clock, cacheMs: 0, admitHold: hold.current });
    const window = { itemId: 'window', handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: clock.now() + 1000, rejoin: 'any', lines: 2 } as const;
    await line.definitions.define(window, { mode: 'manual', rate: null, maxInFlight: null }, { reopen: false });
    for (const u of ['gina', 'hugo', 'ida']) await line.tickets.join('window', u, null);

    hold.raise();
    const round = line.admissions.admitRound('window', 10, 30_000);
    await new Promise((r) => setTimeout(r, 100));
    // The hold outlasts the window (the round took the time before it: the window was open).
    clock.advance(2000);
    hold.lift();
    expect((await round).tickets).toEqual([]); // before: all three admitted, a second after the window's end
    await expect.poll(async () => (await line.items.item('window', { fresh: true }))!.snap.counts).toMatchObject({ waiting: 0, admitted: 0 });
  });
});
