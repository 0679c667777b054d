import { describe, expect, it } from 'vitest';
import { manualClock } from '../src/kernel/clock.js';
import { createLogger } from '../src/kernel/logger.js';
import { AWAY_IDLE_MS, AWAY_SILENCE_MS, downstreamHealth, PROBE_MAX_MS, unanswered } from '../src/service/downstream-health.js';

const HOLD_MS = 60_000;
import { DropError } from '../src/service/handler.js';

/** An item's downstream as one process's calls find it (service/downstream-health.ts), on a clock the test moves. */
function health() {
  const clock = manualClock();
  const h = downstreamHealth({ now: clock.now, log: createLogger('silent'), times: 3, holdMs: HOLD_MS });
  return { clock, h };
}

describe('downstream health', () => {
  it('takes the downstream as away after unanswered calls of five tickets and a second without an answer', () => {
    const { clock, h } = health();
    h.answered('i', 100);
    for (let seq = 1; seq <= 5; seq++) h.dropped('i', seq, 'connection_refused');
    // Answered a moment ago: a busy service, not one that is gone.
    expect([h.away('i'), h.failing('i')]).toEqual([false, true]);
    clock.advance(AWAY_SILENCE_MS);
    h.dropped('i', 6, 'connection_refused');
    expect(h.away('i')).toBe(true);
    expect(h.awayItems()).toEqual(['i']);
    h.answered('i', 7);
    expect([h.away('i'), h.failing('i'), h.awayItems()]).toEqual([false, false, []]);
  });

  it('never over the calls of fewer than five tickets, nor while calls are answered between', () => {
    const { clock, h } = health();
    for (let n = 0; n < 20; n++) {
      h.dropped('few', n % 4, 'timeout');
      clock.advance(500);
    }
    expect([h.away('few'), h.failing('few')]).toEqual([false, false]);
    for (let n = 0; n < 20; n++) {
      h.dropped('busy', n, 'http_502');
      if (n % 4 === 3) h.answered('busy', 1000 + n);
      clock.advance(500);
    }
    expect(h.away('busy')).toBe(false);
  });

  it("counts as answers a 429, a 409, a drop that asked for a wait and a module's own reason", () => {
    expect([new DropError('http_429'), new DropError('http_409'), new DropError('http_503', 1000), new DropError('downstream_busy'), new DropError('http_5xx')].map(unanswered)).toEqual([false, false, false, false, false]);
    expect(['connection_refused', 'connection_reset', 'dns_failure', 'timeout', 'connection_error', 'http_500', 'http_503', 'http_599'].map((r) => unanswered(new DropError(r)))).toEqual(Array(8).fill(true));
  });

  it('probes after a backoff, each probe twice the tickets of the last, up to 32', () => {
    const { clock, h } = health();
    for (let seq = 1; seq <= 5; seq++) h.dropped('i', seq, 'timeout');
    expect(h.away('i')).toBe(true); // (never answered in this process)
    const sizes: number[] = [];
    for (let t = 0; t <= 12_000; t += 100) {
      const n = h.probe('i');
      if (n) sizes.push(n, t);
      clock.advance(100);
    }
    // 0.5 s, then 0.5 s and 1 s more, then every PROBE_MAX_MS.
    expect(sizes).toEqual([1, 500, 2, 1000, 4, 2000, 8, 2000 + PROBE_MAX_MS, 16, 2000 + 2 * PROBE_MAX_MS, 32, 2000 + 3 * PROBE_MAX_MS, 32, 2000 + 4 * PROBE_MAX_MS, 32, 2000 + 5 * PROBE_MAX_MS]);
    expect(h.probe('up')).toBe(0);
  });

  it('sends a ticket back however long nothing is answered, but not one whose calls alone fail while others are answered', () => {
    const { h } = health();
    for (let seq = 1; seq <= 5; seq++) h.dropped('i', seq, 'timeout');
    for (let n = 0; n < 50; n++) expect(h.sendBack('i', 1)).toBe(true);
    // Ticket 2 is sent back; others' calls are answered between its tries (times: 3).
    const back: boolean[] = [];
    for (let n = 0; n < 5; n++) {
      back.push(h.sendBack('i', 2));
      h.answered('i', 100 + n);
    }
    // (Spent: the usual way from then on.)
    expect(back).toEqual([true, true, true, false, false]);
    // Answered itself: forgotten.
    h.sendBack('i', 3);
    h.answered('i', 3);
    h.answered('i', 4);
    expect([h.sendBack('i', 3), h.sendBack('i', 3)]).toEqual([true, true]);
  });

  it('does not take the service as away again over tickets sent back while others were answered', () => {
    const { clock, h } = health();
    for (let seq = 1; seq <= 5; seq++) h.dropped('i', seq, 'http_500');
    expect(h.away('i')).toBe(true);
    for (let seq = 1; seq <= 5; seq++) expect(h.sendBack('i', seq)).toBe(true);
    // A probe reached a healthy ticket: the service answers.
    h.answered('i', 99);
    expect(h.away('i')).toBe(false);
    // The five fail again, alone: their own calls, not the service.
    clock.advance(AWAY_SILENCE_MS);
    for (let seq = 1; seq <= 5; seq++) h.dropped('i', seq, 'http_500');
    expect([h.away('i'), h.failing('i')]).toEqual([false, false]);
    // Fresh tickets failing all the same: an outage again.
    for (let seq = 6; seq <= 10; seq++) h.dropped('i', seq, 'http_500');
    expect(h.away('i')).toBe(true);
  });

  it('sends a ticket back for HOLD_MS from its first time at most, so the same few probes cannot hold the line for good', () => {
    const { clock, h } = health();
    for (let seq = 1; seq <= 5; seq++) h.dropped('i', seq, 'timeout');
    expect(h.sendBack('i', 1)).toBe(true);
    clock.advance(HOLD_MS - 1);
    expect([h.sendBack('i', 1), h.sendBack('i', 2)]).toEqual([true, true]);
    clock.advance(1);
    expect([h.sendBack('i', 1), h.sendBack('i', 1), h.sendBack('i', 2)]).toEqual([false, false, true]);
  });

  it("shares what one daemon learns: the others read its mark, and an answer on any of them ends it everywhere", () => {
    const clock = manualClock();
    // The mark as the views read it: written at once here, read by a view taken at `viewAt`.
    const mark = { until: null as number | null, viewAt: clock.now() };
    const shared = {
      read: () => ({ until: mark.until, readAt: mark.viewAt }),
      mark: async (_: string, until: number) => void (mark.until = until),
      clear: () => void (mark.until = null),
    };
    const a = downstreamHealth({ now: clock.now, log: createLogger('silent'), times: 3, holdMs: HOLD_MS, shared });
    const b = downstreamHealth({ now: clock.now, log: createLogger('silent'), times: 3, holdMs: HOLD_MS, shared });
    for (let seq = 1; seq <= 5; seq++) a.dropped('i', seq, 'connection_refused');
    expect([a.away('i'), b.away('i')]).toEqual([true, true]);
    // Only a daemon that saw the drops probes; the other admits nothing meanwhile.
    clock.advance(600);
    mark.viewAt = clock.now();
    expect([a.probe('i'), b.probe('i')]).toEqual([1, 0]);
    // Unrenewed (the marking daemon gone), the mark lapses.
    clock.advance(5000);
    expect(b.away('i')).toBe(false);
    mark.viewAt = clock.now();
    expect(a.probe('i')).toBe(2); // renewed
    expect(b.away('i')).toBe(true);
    // A daemon whose own calls are answered is not paused by another's mark (that one's own route may be what fails).
    b.answered('i', 41);
    expect(b.away('i')).toBe(false);
    clock.advance(AWAY_SILENCE_MS);
    mark.until = clock.now() + 5000;
    expect(b.away('i')).toBe(true);
    // Answered on the other daemon: cleared; the marking daemon sees it on its next view and ends its own.
    b.answered('i', 40);
    expect(b.away('i')).toBe(false);
    clock.advance(1000);
    mark.viewAt = clock.now();
    expect([a.probe('i'), a.away('i'), a.awayItems()]).toEqual([0, false, []]);
  });
  it('starts afresh on an item deleted and made again: its new life neither reads away nor finds its seqs spent', () => {
    const clock = manualClock();
    const view = { life: 'secret|1' };
    const shared = {
      read: () => ({ until: null, readAt: clock.now(), life: view.life }),
      mark: async () => undefined,
      clear: () => undefined,
    };
    const h = downstreamHealth({ now: clock.now, log: createLogger('silent'), times: 3, holdMs: HOLD_MS, shared });
    for (let seq = 1; seq <= 5; seq++) h.dropped('i', seq, 'connection_refused');
    expect([h.away('i'), h.sendBack('i', 1)]).toEqual([true, true]);
    clock.advance(HOLD_MS);
    expect(h.sendBack('i', 1)).toBe(false);
    // Deleted and made again (define-5.lua's born token): the view of the new life says so.
    view.life = 'secret|2';
    expect([h.away('i'), h.failing('i'), h.probe('i'), h.awayItems()]).toEqual([false, false, 0, []]);
    expect(h.sendBack('i', 1)).toBe(true);
  });
  it('takes the downstream as unknown again once nothing has been probed for AWAY_IDLE_MS (no ticket left to call), not away for good', () => {
    const { clock, h } = health();
    for (let seq = 1; seq <= 5; seq++) h.dropped('i', seq, 'connection_refused');
    expect(h.away('i')).toBe(true);
    // Probed while tickets wait: away as long as the probes go unanswered.
    for (let t = 0; t < 3 * AWAY_IDLE_MS; t += 500) {
      clock.advance(500);
      h.probe('i');
    }
    expect([h.away('i'), h.awayItems()]).toEqual([true, ['i']]);
    // The line emptied (cancelled, closed): no probe asked for. Before: away, and its gauge 1, for good.
    clock.advance(AWAY_IDLE_MS);
    expect([h.away('i'), h.awayItems(), h.failing('i')]).toEqual([false, [], false]);
  });
});
