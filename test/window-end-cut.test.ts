import { describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { createLine } from '../src/queue/line.js';
import type { LineDefinition } from '../src/queue/types.js';
import { testRedis } from './support/redis.js';

const t = testRedis();
const T0 = 1_800_000_000_000;
const def = (itemId: string, closesAt: number, lines = 1): LineDefinition => ({ itemId, handler: 'external', config: {}, capacity: null, abandonAfterMs: null, opensAt: null, closesAt, rejoin: 'any', lines });

describe("the sale window's end: the cut checks closesAt as Redis holds it", () => {
  for (const lines of [1, 3]) {
    it(`cuts a line whose closesAt has passed, and not one an operator moved later after the caller read it (lines: ${lines})`, async () => {
      const clock = manualClock(T0);
      const line = createLine({ redis: t.redis, prefix: t.newPrefix(), clock, cacheMs: 250 });
      for (const id of ['ended', 'extended']) {
        await line.definitions.define(def(id, T0 + 1000, lines), null, { reopen: false });
        for (const u of ['u1', 'u2']) await line.tickets.join(id, u, null);
      }
      clock.advance(1500);
      // The caller read both as past their end; then an operator moved one's closesAt ten minutes on.
      for (const id of ['ended', 'extended']) expect((await line.items.item(id, { fresh: true }))!.snap.def.closesAt).toBe(T0 + 1000);
      await line.definitions.define(def('extended', T0 + 600_000, lines), null, { reopen: false });
      expect(await line.definitions.cut('ended', 'window_end')).toBe(2);
      expect(await line.definitions.cut('extended', 'window_end')).toBeNull();
      expect((await line.items.item('ended', { fresh: true }))!.snap.counts).toMatchObject({ waiting: 0, cancelled: 2 });
      const kept = (await line.items.item('extended', { fresh: true }))!.snap;
      expect(kept.closed).toBe(false);
      expect(kept.counts.waiting).toBe(2);
      // An operator's close is no window's end: it cuts whatever closesAt says.
      expect(await line.definitions.cut('extended', 'closed')).toBe(2);
    });
  }
});
