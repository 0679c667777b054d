import { afterEach, describe, expect, it, vi } from 'vitest';
import { every } from '../src/kernel/loop.js';
import { recordingLogger } from './support/daemon-inproc.js';

afterEach(() => void vi.useRealTimers());

const said = (lines: string, what: string) => (lines.match(new RegExp(`"msg":"${what}"`, 'g')) ?? []).length;

describe('a loop that fails', () => {
  it('is said failed once while it fails and succeeds by turns, and recovered once it has gone 5 s without failing', async () => {
    // A Redis refusing writes, and a round with nothing to write: `failed` and `recovered` every
    // 500 ms, the `recovered` false (a review).
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
    const logs = recordingLogger('info', 1000);
    let round = 0;
    let flapping = true;
    const loop = every(500, 'flap', async () => {
      if (flapping && round++ % 2 === 0) throw new Error('MISCONF');
    }, logs.log);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(said(logs.lines(), 'loop failed')).toBe(1);
    expect(said(logs.lines(), 'loop recovered')).toBe(0);
    flapping = false;
    await vi.advanceTimersByTimeAsync(4000);
    expect(said(logs.lines(), 'loop recovered')).toBe(0);
    await vi.advanceTimersByTimeAsync(2000);
    expect(said(logs.lines(), 'loop recovered')).toBe(1);
    await loop.stop();
  });

  it('that goes on failing is said again once a minute, with how many rounds failed', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
    const logs = recordingLogger('info', 1000);
    const loop = every(1000, 'down', async () => {
      throw new Error('down');
    }, logs.log);
    await vi.advanceTimersByTimeAsync(150_000);
    expect(said(logs.lines(), 'loop failed')).toBe(1);
    expect(said(logs.lines(), 'loop still failing')).toBe(2);
    expect(logs.lines()).toMatch(/"failedRounds":6\d/);
    await loop.stop();
  });
});
