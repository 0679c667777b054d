import { describe, expect, it } from 'vitest';
import { groupGivesUp } from '../src/processes.js';

/**
 * When a group of daemon processes (FLOODGATE_PROCESSES) stops because its workers die: the rule
 * alone, on the timelines that matter (the group itself: test/processes-faults.test.ts).
 */
describe('a group whose workers die', () => {
  const slots = (...f: number[]) => new Map(f.map((n, i) => [i, n] as const));

  it('never stops while one serves', () => {
    expect(groupGivesUp({ deathsLastMinute: 50, serving: 1, neverServed: slots(9, 9), processes: 2 })).toBe(null);
  });

  it('stops on five deaths in a minute with none serving (a crash loop)', () => {
    expect(groupGivesUp({ deathsLastMinute: 4, serving: 0, neverServed: slots(), processes: 2 })).toBe(null);
    expect(groupGivesUp({ deathsLastMinute: 5, serving: 0, neverServed: slots(), processes: 2 })).toBe('crash loop');
  });

  it('stops when every slot failed two starts in a row, however far apart (a start waits 60 s for its stores)', () => {
    // Both killed (they had served), then each start waits 60 s and dies, 0.5 s and 1 s later again:
    // deaths at 0, 0, 60, 60, 121, 121 s, never five in one minute. Before: the group never stopped.
    const timeline: [deathsLastMinute: number, neverServed: Map<number, number>, expected: string | null][] = [
      [2, slots(), null], // the kills
      [3, slots(1), null], // slot 0's first failed start, 60 s later
      [4, slots(1, 1), null],
      [3, slots(2, 1), null], // 121 s: the kills are out of the minute
      [4, slots(2, 2), 'no worker can start'],
    ];
    for (const [deathsLastMinute, neverServed, expected] of timeline) expect(groupGivesUp({ deathsLastMinute, serving: 0, neverServed, processes: 2 })).toBe(expected);
    // A slot that has not failed twice yet (or never failed) keeps the group going.
    expect(groupGivesUp({ deathsLastMinute: 1, serving: 0, neverServed: slots(5), processes: 2 })).toBe(null);
  });
});
