import { describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { createLine } from '../src/queue/line.js';
import { createSplitLine, subLineOf } from '../src/queue/split-line.js';
import { hashSlot, itemKeys, subLineTag } from '../src/redis/keys.js';
import { testRedis } from './support/redis.js';

/** The split line's paths that need no cluster: sub-line 0 is the item itself, renumbering, slots. */
const t = testRedis();
const clock = manualClock();

async function setup(itemId: string, lines: number) {
  const prefix = t.newPrefix();
  const line = createLine({ redis: t.redis, prefix, clock, cacheMs: 0 });
  await line.definitions.define({ itemId, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt: null, rejoin: 'any' }, { mode: 'manual', rate: null, maxInFlight: null }, { reopen: false });
  const split = createSplitLine({ redis: t.redis, prefix, clock });
  const item = { itemId, lines };
  await split.defineSubLines(item);
  return { prefix, line, split, item };
}

describe('the split line without a cluster', () => {
  it('with lines: 1 is the item itself: a user who joined the unsplit line holds that ticket in the split one', async () => {
    const { prefix, line, split, item } = await setup('one', 1);
    const joined = await line.tickets.join('one', 'u1', null);
    const again = await split.join(item, 'u1');
    expect(again).toMatchObject({ created: false, sub: 0 });
    expect(line.tickets.itemIdOf(joined.ticket.ticketId)).toBe('one');
    expect(await t.redis.hget(itemKeys(prefix, 'one').users, 'u1')).toBe(String(again.seq));
    const fresh = await split.join(item, 'u2');
    expect(fresh).toMatchObject({ created: true, seq: 2, sub: 0 });
    expect(await t.redis.hget(itemKeys(prefix, 'one').users, 'u2')).toBe('2');
  });

  it('takes a new join number while its sub-line is fenced past the one it took, and answers 503 after 8', async () => {
    const { prefix, split, item } = await setup('fenced', 4);
    const user = 'u-fenced';
    const sub = itemKeys(prefix, subLineTag('fenced', subLineOf(user, 4))).ctr;
    await t.redis.hset(sub, 'fence', 5);
    const j = await split.join(item, user);
    expect(j).toMatchObject({ created: true, num: 6 });
    await t.redis.hset(sub, 'fence', 100);
    await expect(split.join(item, findUserOn(subLineOf(user, 4), 4))).rejects.toMatchObject({ code: 'unavailable' });
    expect(Number(await t.redis.hget(itemKeys(prefix, 'fenced').ctr, 'jn'))).toBe(6 + 8);
  });

  it('refuses a blocked user on every sub-line (the item keeps the block list)', async () => {
    const { line, split, item } = await setup('blocking', 8);
    await line.definitions.blocks.set('blocking', 'bad-user', 'item', true);
    await expect(split.join(item, 'bad-user')).rejects.toMatchObject({ code: 'blocked' });
    expect(await split.join(item, 'good-user')).toMatchObject({ created: true });
  });

  it('says when the pace alone held a round, and in how many ms it lets the next ticket in (split-gate-4.lua allow)', async () => {
    const { prefix, split, item } = await setup('paced', 4);
    await t.redis.hset(itemKeys(prefix, 'paced').gate, { mode: 'manual', rate: '8' });
    for (let u = 0; u < 4; u++) await split.join(item, `p${u}`);
    const paced = { forMs: null as number | null };
    expect(await split.admit(item, 10, 60_000, undefined, paced)).toHaveLength(1);
    expect(paced.forMs).toBeNull();
    expect(await split.admit(item, 10, 60_000, undefined, paced)).toEqual([]);
    expect(paced.forMs).toBe(125);
    clock.advance(125);
    expect(await split.admit(item, 10, 60_000, undefined, paced)).toHaveLength(1);
    expect(paced.forMs).toBeNull();
  });

  it('gives the sub-lines of any item distinct slots', () => {
    for (const id of ['a', 'hot', 'item-1234', 'x.y:z']) {
      const slots = Array.from({ length: 64 }, (_, k) => hashSlot(`${subLineTag(id, k)}`));
      expect(new Set(slots).size).toBe(64);
      expect(subLineTag(id, 0)).toBe(id);
    }
  });
});

/** A user id whose sub-line of `lines` is `k`. */
function findUserOn(k: number, lines: number): string {
  for (let i = 0; ; i++) if (subLineOf(`v${i}`, lines) === k) return `v${i}`;
}
