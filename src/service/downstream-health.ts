import type { Logger } from '../kernel/logger.js';
import type { DropError } from './handler.js';

/** Drops in a row, none answered between them, that may mark an item's downstream away. */
export const AWAY_DROPS = 5;
/** …once nothing it was sent has been answered for this long (ms): a busy service that answers some calls is not away. */
export const AWAY_SILENCE_MS = 1000;
/**
 * …and they were the calls of this many tickets at least: a few tickets whose calls fail while
 * nothing else runs are told `failed` as before (their own payloads may be what the service cannot
 * take; nothing tells the two apart), while an outage mid-sale fails the calls of dozens.
 */
export const AWAY_TICKETS = 5;
/** The first probe's wait after the downstream was marked away (ms), doubled after each probe up to PROBE_MAX_MS. */
export const PROBE_FIRST_MS = 500;
export const PROBE_MAX_MS = 2000;
/**
 * The most tickets a probe admits: the first admits one, each next twice as many. Returned tickets
 * are admitted lowest seq first, and a ticket whose call goes unanswered returns: with probes of
 * four at most, six tickets whose own payloads the service fails held the line paused for 5
 * minutes while healthy tickets waited behind them (a review). Growing, a probe reaches past them
 * within seconds; 32 calls every 2 s cost a service that is down nothing.
 */
export const PROBE_MAX_TICKETS = 32;

/**
 * How long an away lasts with no probe made (ms): probes are asked for only while tickets wait
 * behind an open gate, and with none (a line cancelled or abandoned empty, an item closed or sold
 * out) nothing could ever answer one — the item read `paused` and its gauge 1 for good on the daemon
 * that saw the drops, and the first join, hours later, marked it away again for every daemon (a
 * review). Then the downstream is taken as unknown: the next calls say what it is.
 */
export const AWAY_IDLE_MS = 10_000;
/** How long a daemon's mark that an item's downstream is away lasts unless renewed (ms); it renews it every RENEW_MS while it probes. */
export const MARK_MS = 5000;
const RENEW_MS = 1000;

/** The drops that say no answer came: the webhook's codes for calls that got none, and a 5xx. */
const noAnswerReasons = new Set(['connection_refused', 'connection_reset', 'dns_failure', 'timeout', 'connection_error']);

/**
 * Whether a drop says the downstream did not answer: no connection, a connection lost, no answer
 * in time (`connection_refused`, `connection_reset`, `dns_failure`, `timeout`,
 * `connection_error`), or a 5xx (`http_5xx`) that asked for no particular wait. A 429 or a 409 is
 * an answer (the gate and the runner deal with them), and so is a drop with a Retry-After (the
 * runner pauses the item's calls for it already), or a module's own reason (`downstream_busy`: a
 * saturated downstream is the gate's to meter, not an outage). A module whose calls get no answer
 * says so with these codes.
 */
export function unanswered(err: DropError): boolean {
  return err.retryAfterMs === undefined && (noAnswerReasons.has(err.reason) || /^http_5\d\d$/.test(err.reason));
}

interface ItemHealth {
  /** Unanswered drops since the last answer. */
  streak: number;
  /** Tickets whose calls those were (up to AWAY_TICKETS of them). */
  streakSeqs: Set<number>;
  /** When a call was last answered (clock ms; −Infinity: never, in this process). */
  answeredAt: number;
  /** Calls answered so far. */
  answers: number;
  /** Since when the downstream is taken as away (clock ms), or null. */
  awaySince: number | null;
  probeAt: number;
  probeWaitMs: number;
  /** When a probe was last given tickets (clock ms). */
  probedAt: number;
  /** Probes taken since it was marked away. */
  probes: number;
  /** When this process last wrote the shared mark (clock ms). */
  markedAt: number;
  /** When this process last cleared another's mark (clock ms): once a second at most. */
  clearedAt: number;
  /** This process's last write of the mark failed (Redis refused it): a view without it says nothing of another daemon's answer. */
  markFailed: boolean;
  /**
   * Tickets sent back to the line (seq → how often while calls of other tickets were answered, the
   * count of answers at its last send-back, and when it was first sent back; n Infinity: spent).
   */
  sentBack: Map<number, { n: number; answers: number; first: number }>;
  /** The life of the item this was learnt of (snapshot.ts `incarnation`), when known. */
  life: string | undefined;
}

/**
 * What this process knows of each item's downstream (a webhook's service, a module's): a run of
 * drops that were not answered (AWAY_DROPS of them, of AWAY_TICKETS tickets or more, and nothing
 * answered for AWAY_SILENCE_MS) marks it away. While it is away the item admits nobody but a
 * probe now and then (dispatcher), its waiting tickets read `paused` (views), and a ticket whose call is not answered goes back to the
 * head of the line instead of spending its attempts (runner): during a 20 s outage a manual gate at
 * 50/s failed 777 users (`connection_refused`) in a review, some of them with their orders made by
 * the call that was cut. The first answer of any call (a success, a refusal, a 429: the service is
 * there) ends it, and admissions resume at the gate's pace.
 *
 * Probes back off (PROBE_FIRST_MS doubling to PROBE_MAX_MS), and each admits twice the tickets of
 * the last (up to PROBE_MAX_TICKETS): returned tickets run first, in line order, and tickets whose
 * own calls are never answered (a payload that hangs its service) must not be the only ones tried. A
 * ticket sent back `times` (the job attempts) times while calls of other tickets were answered
 * between goes the usual way (retried, then `failed`): it, not the service, is what fails. While
 * nothing is answered, a ticket is sent back for `holdMs` from its first time (an outage shorter
 * than that fails nobody); then it spends its attempts as usual.
 *
 * What one daemon learns, the others read (`shared`): its mark on the item (in the gate's hash,
 * MARK_MS, renewed while it probes) makes their views read `paused`, their dispatchers admit
 * nothing (only a daemon that saw the drops itself probes), and their runs send unanswered tickets
 * back. Any daemon's answer clears the mark, and a daemon that marked it and finds it cleared by
 * another ends its own. Before, each daemon learned on its own: a review saw one daemon's views
 * count down an ETA for 3–9 s while another's read paused (one that made no calls, never). A
 * daemon whose own calls were answered within AWAY_SILENCE_MS ignores the mark: it can reach the
 * service, whatever the marking daemon cannot.
 */
export function downstreamHealth(deps: {
  now(): number;
  log: Logger;
  times: number;
  /**
   * How long a ticket may be sent back from its first time (ms; FLOODGATE_DOWNSTREAM_HOLD_MS): then
   * it goes the usual way, however long the outage. Returned tickets are admitted lowest seq first
   * and a probe no faster than the gate's pace allows, so the probes try the same few: tickets whose
   * own calls are never answered (a payload the service fails) would otherwise hold the line paused
   * for good, the service never tried with another (a review: six of them, 5 minutes).
   */
  holdMs: number;
  /** The mark the daemons share (daemon.ts: a field of the item's gate hash, read with the item's view). */
  shared?: {
    /** The mark as this process's view of the item holds it (until, clock ms, or null), and when that view was read; null with no view. */
    read(itemId: string): { until: number | null; readAt: number; life?: string } | null;
    mark(itemId: string, until: number): Promise<unknown>;
    clear(itemId: string): void;
  };
}) {
  const items = new Map<string, ItemHealth>();
  /** The run of drops ends, and an away with it (logged as `said`); whether there was one. */
  function ends(itemId: string, h: ItemHealth, now: number, said: string): boolean {
    h.streak = 0;
    h.streakSeqs.clear();
    if (h.awaySince === null) return false;
    deps.log.info({ itemId, awayMs: now - h.awaySince }, said);
    h.awaySince = null;
    return true;
  }
  /**
   * What this process learnt of the item's downstream, if of the item's present life: an item
   * deleted and made again (a new URL, say) starts afresh. Before, it read `paused` until a probe
   * was answered, and its tickets whose seqs matched tickets of the old life spent before were
   * failed at their first unanswered call (seqs start again at 1).
   */
  const current = (itemId: string): ItemHealth | undefined => {
    const h = items.get(itemId);
    if (!h) return undefined;
    const now = deps.now();
    if (h.awaySince !== null && now - Math.max(h.awaySince, h.probedAt) >= AWAY_IDLE_MS) ends(itemId, h, now, 'downstream not probed for a while (nothing to call): taken as unknown again; the next calls say whether it answers');
    const life = deps.shared?.read(itemId)?.life;
    if (life === undefined || h.life === life) return h;
    if (h.life === undefined) {
      h.life = life;
      return h;
    }
    items.delete(itemId);
    return undefined;
  };
  /** A daemon's mark (another's or this one's) on the item, not lapsed. */
  const markPresent = (itemId: string): boolean => {
    const r = deps.shared?.read(itemId);
    return !!r && r.until !== null && r.until > deps.now();
  };
  const writeMark = (itemId: string, h: ItemHealth, now: number) => {
    h.markedAt = now;
    h.markFailed = false;
    deps.shared?.mark(itemId, now + MARK_MS).catch(() => (h.markFailed = true));
  };
  const failing = (h: ItemHealth) => h.streak >= AWAY_DROPS && h.streakSeqs.size >= AWAY_TICKETS;
  /** An answer (here, or one another daemon's cleared mark stands for): the run of drops ends, and an away with it. */
  const heard = (itemId: string, h: ItemHealth, now: number, where: string) => {
    h.answeredAt = now;
    return ends(itemId, h, now, `downstream answers again${where}: the item admits at its gate's pace`);
  };
  const entry = (itemId: string): ItemHealth => {
    let h = current(itemId);
    if (!h) {
      if (items.size >= 100_000) for (const [id, old] of items) if (old.awaySince === null) items.delete(id);
      h = { streak: 0, streakSeqs: new Set(), answeredAt: -Infinity, answers: 0, awaySince: null, probeAt: 0, probeWaitMs: PROBE_FIRST_MS, probes: 0, markedAt: -Infinity, clearedAt: -Infinity, markFailed: false, sentBack: new Map(), life: deps.shared?.read(itemId)?.life, probedAt: -Infinity };
      items.set(itemId, h);
    }
    return h;
  };

  return {
    /** A call of the item's was answered (whatever the answer), for its ticket `seq`. */
    answered(itemId: string, seq: number): void {
      const h = entry(itemId);
      const now = deps.now();
      h.answers++;
      if (h.sentBack.size) h.sentBack.delete(seq);
      if (heard(itemId, h, now, '')) deps.shared?.clear(itemId);
      else if (now - h.clearedAt >= RENEW_MS && markPresent(itemId)) {
        h.clearedAt = now;
        deps.shared?.clear(itemId);
      }
    },
    /** A call of the item's, for its ticket `seq`, got no answer (`unanswered`). */
    dropped(itemId: string, seq: number, reason: string): void {
      const h = entry(itemId);
      const now = deps.now();
      h.streak++;
      // Not a ticket sent back before while calls of others were answered: its own call may be
      // what fails (a review: six such tickets alone at the end of a line marked the service away
      // again, for 5 minutes, each called every 2 s). Their drops go the usual way.
      const back = h.sentBack.get(seq);
      const suspect = back !== undefined && (back.n >= 1 || h.answers > back.answers);
      if (!suspect && h.streakSeqs.size < AWAY_TICKETS) h.streakSeqs.add(seq);
      if (h.awaySince === null && failing(h) && now - h.answeredAt >= AWAY_SILENCE_MS) {
        h.awaySince = now;
        h.probeWaitMs = PROBE_FIRST_MS;
        h.probeAt = now + PROBE_FIRST_MS;
        h.probes = 0;
        writeMark(itemId, h, now);
        deps.log.warn({ itemId, drops: h.streak, reason }, 'downstream not answering: the item admits nobody but a probe now and then, its waiting tickets read paused, and calls not answered go back to the head of the line');
      }
    },
    /**
     * Taken as away here, or marked away by another daemon — unless this process's own calls were
     * answered within AWAY_SILENCE_MS: a daemon that cannot reach the service (its own route, its
     * resolver) must not pause daemons that can (a review).
     */
    away(itemId: string): boolean {
      const h = current(itemId);
      if (h?.awaySince != null) return true;
      return markPresent(itemId) && (!h || deps.now() - h.answeredAt >= AWAY_SILENCE_MS);
    },
    /** Whether the drops since the last answer are enough to mark it away (the time aside): a ticket's last attempt is then sent back, not failed. */
    failing: (itemId: string): boolean => {
      const h = current(itemId);
      return !!h && failing(h);
    },
    /**
     * Whether a ticket whose call was not answered goes back to the head of the line, or the usual
     * way: once sent back `times` times with calls of others answered since each time before, or
     * `holdMs` after its first time (from then on, for good).
     */
    sendBack(itemId: string, seq: number): boolean {
      const h = entry(itemId);
      const now = deps.now();
      const was = h.sentBack.get(seq);
      const n = was === undefined ? 0 : was.n + (h.answers > was.answers ? 1 : 0);
      const first = was?.first ?? now;
      if (n >= deps.times || now - first >= deps.holdMs) {
        h.sentBack.set(seq, { n: Infinity, answers: h.answers, first });
        return false;
      }
      if (h.sentBack.size >= 100_000) h.sentBack.clear();
      h.sentBack.set(seq, { n, answers: h.answers, first });
      return true;
    },
    /** While away: how many tickets may be admitted now to try the downstream (0: none; then the next probe waits longer). */
    probe(itemId: string): number {
      const h = current(itemId);
      if (!h || h.awaySince === null) return 0;
      const now = deps.now();
      if (deps.shared && now - h.markedAt >= RENEW_MS) {
        // Cleared by another daemon since this one marked it (a view read well after the mark shows
        // none of it): a call was answered there. Ended here too.
        const r = deps.shared.read(itemId);
        if (!h.markFailed && r && r.readAt > h.markedAt + 200 && (r.until === null || r.until <= h.markedAt)) {
          // (Taken as an answer: five more unanswered calls and a second of silence before it is marked again.)
          heard(itemId, h, now, ' (on another daemon)');
          return 0;
        }
        writeMark(itemId, h, now);
      }
      if (now < h.probeAt) return 0;
      h.probedAt = now;
      h.probeAt = now + h.probeWaitMs;
      h.probeWaitMs = Math.min(PROBE_MAX_MS, h.probeWaitMs * 2);
      h.probes++;
      return Math.min(PROBE_MAX_TICKETS, 2 ** Math.min(h.probes - 1, 10));
    },
    /** Items taken as away now. */
    awayItems: (): string[] => [...items.keys()].filter((id) => current(id)?.awaySince != null),
  };
}

export type DownstreamHealth = ReturnType<typeof downstreamHealth>;
