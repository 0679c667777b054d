/** Time is a dependency: modules take a Clock so tests can drive it instead of sleeping. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/**
 * Wall time that never steps: the wall clock as read at the start, moved on by the monotonic
 * clock. An NTP step or an operator's `date -s` leaves it alone; `drift()` says how far the wall
 * clock is from it now (a change in it is a step of the wall clock, or a suspended machine
 * resumed: the monotonic clock did not run meanwhile).
 */
export function steadyClock(wall: () => number = Date.now, mono: () => number = () => performance.now()): Clock & { drift(): number } {
  const wall0 = wall();
  const mono0 = mono();
  // Whole milliseconds, as Date.now() (times are stored and compared as integers).
  const now = () => wall0 + Math.floor(mono() - mono0);
  return { now, drift: () => wall() - now() };
}

/** A clock that only moves when told to; for deterministic tests. */
export function manualClock(start = Date.UTC(2026, 0, 1)): Clock & { advance(ms: number): void; set(ms: number): void } {
  let t = start;
  return {
    now: () => t,
    advance: (ms) => {
      t += ms;
    },
    set: (ms) => {
      t = ms;
    },
  };
}
