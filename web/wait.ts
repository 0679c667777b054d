/**
 * The waiting page (/wait/{ticketId}): follows the ticket over the events stream and falls back
 * to polling when the stream cannot be had; shows place, wait, a progress bar and the result in
 * words; offers "leave the line" while the ticket can still leave, and says so when a leave fails;
 * on admitted/succeeded sends the user to the item's returnUrl (with ?admission=<admissionToken>
 * when the ticket carries one).
 */
import { $, LATER, retryDelay, sleep } from './dom';
import { texts, type Lang } from './i18n';

interface View {
  ticketId: string;
  state: string;
  position?: number | null;
  etaMs?: number;
  pollAfterMs?: number;
  reason?: string;
  returnsFrom?: string;
  admittedAt?: string;
  outcome?: { status: string; reason?: string; result?: Record<string, unknown> };
  admissionToken?: string;
}

const body = document.body.dataset;
const ticketId = body.ticket!;
const lang = (body.lang === 'zh' ? 'zh' : 'en') as Lang;
const returnUrl = body.returnUrl || '';
const t = texts[lang];
const api = `/v1/tickets/${encodeURIComponent(ticketId)}`;
const terminal = (s: string) => s !== 'waiting' && s !== 'admitted';

// The first place seen is the bar's zero; kept per tab so a reload does not reset the bar.
const startKey = `fg.start.${ticketId}`;
let redirectAt = 0;
let last: View | null = null;
let token = '';

function resultText(v: View): string {
  const o = v.outcome;
  if (v.state === 'succeeded') {
    const r = o?.result ?? {};
    if (typeof r.orderId === 'string' || typeof r.orderId === 'number') return `${t.succeeded} ${t.orderNo(String(r.orderId))}`;
    if (typeof r.claimId === 'string' || typeof r.claimId === 'number') return `${t.succeeded} ${t.couponNo(String(r.claimId))}`;
    return t.succeeded;
  }
  const reason = o?.reason ?? '';
  if (v.state === 'cancelled') return reason === 'cancelled_by_user' ? t.cancelled : t.closed;
  if (v.state === 'expired') return t.expired;
  if (v.state === 'failed') return t.failed;
  if (reason === 'sold_out') return t.soldOut;
  if (reason === 'already_purchased') return t.already;
  if (reason === 'limit_reached') return t.limit;
  if (reason === 'blocked') return t.blocked;
  if (reason === 'reservation_released') return t.reservationReleased;
  return t.rejected(reason || v.state);
}

/** Why a waiting ticket is not moving, in words; units awaited back from unpaid reservations and from sales still running are told apart. */
function waitingText(v: View): string {
  if (v.reason === 'not_open') return v.position === null ? t.notOpenDraw : t.notOpen;
  if (v.reason === 'paused') return t.paused;
  if (v.reason === 'awaiting_returns') return v.returnsFrom === 'reservations' ? t.awaitingReservations : v.returnsFrom === 'sales' ? t.awaitingSales : t.awaitingReturns;
  // Back at the head after its run was cut short (a waiting ticket that was admitted before).
  // ("At the front" only at place 1: tickets returned before it may stand ahead.)
  if (v.admittedAt) return v.position === 1 ? t.again : t.againBack;
  return t.waiting;
}

/** A leave the daemon refused (409): the button does not come back, whatever a stale view says. */
let leaveRefused = false;
/** What the line under the button says: why leaving is no longer possible, or why a leave failed. */
let leaveNote: '' | 'closed' | 'failed' = '';

/**
 * Only a waiting ticket that was never admitted can leave: one back at the head after its run
 * was cut short carries admittedAt, and its cancel is refused (409 not_cancellable) because its
 * sale or call may already have happened.
 */
const canLeave = (v: View) => v.state === 'waiting' && !v.admittedAt && !leaveRefused;

function noteLeave(kind: typeof leaveNote, text = '') {
  leaveNote = kind;
  $('#leave-note').textContent = text;
}

function render(v: View) {
  // An ended ticket stays ended: a view from before its end (a stream's, or a poll's, read a moment
  // before the leave that answered `cancelled` reached it) would show its place and the button again.
  if (last && terminal(last.state) && !terminal(v.state)) return;
  last = v;
  if (v.admissionToken) token = v.admissionToken;
  document.documentElement.dataset.state = v.state;
  const status = $('#status');
  const place = $('#place');
  const eta = $('#eta');
  const bar = $<HTMLProgressElement>('#bar');
  const leave = $<HTMLButtonElement>('#leave');
  if (v.state === 'waiting') {
    const pos = v.position ?? 0;
    const start = Math.max(pos, Number(sessionStorage.getItem(startKey) ?? 0));
    sessionStorage.setItem(startKey, String(start));
    status.textContent = waitingText(v);
    place.textContent = pos ? `${t.position(pos)} · ${t.ahead(pos - 1)}` : '';
    eta.textContent = v.etaMs !== undefined ? t.eta(t.minutes(Math.round(v.etaMs / 60000))) : t.etaUnknown;
    bar.max = 100;
    bar.value = start > 0 ? Math.round(((start - pos + 1) / start) * 100) : 0;
  } else {
    place.textContent = '';
    eta.textContent = '';
    bar.value = v.state === 'admitted' || v.state === 'succeeded' ? 100 : bar.value;
    status.textContent = v.state === 'admitted' ? t.admitted : resultText(v);
    if ((v.state === 'admitted' || v.state === 'succeeded') && returnUrl) redirectSoon();
  }
  leave.hidden = !canLeave(v);
  // An ended ticket's status says how it ended; a failed leave is moot once the button is gone;
  // a ticket back at the head says why it has no button.
  if (terminal(v.state) || (leave.hidden && leaveNote === 'failed')) noteLeave('');
  if (v.state === 'waiting' && v.admittedAt) noteLeave('closed', t.leaveClosed);
}

/**
 * The daemon no longer knows the ticket (404: Redis lost it in a fault and Postgres holds no end
 * of it, or its item was removed). The last view shown must not stay on the page as if the user
 * still waited in line: say so, and stop.
 */
/** How long a ticket the daemon does not know is asked for again before the page gives up. */
const GONE_FOR_GOOD_MS = 60_000;

function gone(forGood = true) {
  document.documentElement.dataset.state = forGood ? 'gone' : 'checking';
  // (Not "join again" while it is still asked for: a webhook ticket whose call went through, its
  // user joining again under a new key, got a second order.)
  $('#status').textContent = forGood ? t.gone : t.checking;
  $('#place').textContent = '';
  $('#eta').textContent = '';
  $('#mode').textContent = '';
  $<HTMLProgressElement>('#bar').value = 0;
  $<HTMLButtonElement>('#leave').hidden = true;
  noteLeave('');
}

/** Sends the user on after a moment (so the result can be read), with the token if a view carried one. */
function redirectSoon() {
  if (redirectAt) return;
  redirectAt = Date.now();
  $('#note').textContent = t.redirecting;
  setTimeout(() => {
    const url = new URL(returnUrl);
    if (token) url.searchParams.set('admission', token);
    location.assign(url.toString());
  }, 1200);
}

function mode(text: string) {
  $('#mode').textContent = text;
}

/**
 * Polls the ticket as often as the view says (pollAfterMs, 1–10 s). A daemon that answers "not
 * now" (503 when Redis is slow, 429) or not at all is asked again as its Retry-After says, or
 * after 1 s doubling to 30 s: a hundred thousand pages must not come back every 2 s to a daemon
 * that is struggling.
 */
async function poll() {
  mode(t.polling);
  /** When the daemon first said it does not know the ticket. */
  let goneSince: number | null = null;
  for (let failures = 0; ; ) {
    let wait: number;
    const res = await fetch(api, { cache: 'no-store' }).catch(() => null);
    const v = res?.ok ? ((await res.json().catch(() => null)) as View | null) : null;
    if (v) {
      failures = 0;
      goneSince = null;
      render(v);
      if (terminal(v.state)) return;
      wait = Math.min(Math.max(v.pollAfterMs ?? 2000, 1000), 10_000);
      mode(t.polling);
    } else if (res?.status === 404) {
      // Said at once, but asked again for a minute: after a Redis loss the daemon believes
      // Postgres's "nothing" for 30 s only (a sale in flight at the loss may commit later, and the
      // ticket then reads succeeded). The page stopped at the first 404 for good.
      goneSince ??= Date.now();
      if (Date.now() - goneSince > GONE_FOR_GOOD_MS) return gone();
      gone(false);
      wait = 10_000;
    } else {
      mode(res && LATER.has(res.status) ? t.busy : t.lost);
      wait = retryDelay(res, failures++);
    }
    await sleep(wait);
  }
}

function follow() {
  if (!('EventSource' in window)) return void poll();
  const es = new EventSource(`${api}/events`);
  let fellBack = false;
  es.addEventListener('ticket', (e) => {
    mode(t.live);
    const v = JSON.parse((e as MessageEvent).data) as View;
    render(v);
    if (terminal(v.state)) es.close();
  });
  // A stream refused or cut (a proxy that buffers, a blocked endpoint): poll instead, for good.
  es.onerror = () => {
    if (fellBack || (last && terminal(last.state))) return es.close();
    fellBack = true;
    es.close();
    void poll();
  };
}

/**
 * Leaves the line, and says what happened when it could not: refused (409: the ticket's turn came
 * meanwhile, or the sale ended; the ticket as it is now is shown), a daemon that answers "not now"
 * or not at all, or anything else (the button stays: the user may try again, and the next view
 * shows whether the ticket still waits).
 */
async function leaveLine() {
  const b = $<HTMLButtonElement>('#leave');
  b.disabled = true;
  b.textContent = t.leaving;
  noteLeave('');
  try {
    const res = await fetch(api, { method: 'DELETE', cache: 'no-store' }).catch(() => null);
    const v = res?.ok ? ((await res.json().catch(() => null)) as View | null) : null;
    if (v) return render(v);
    if (res?.status === 409) {
      leaveRefused = true;
      b.hidden = true;
      const now = await fetch(api, { cache: 'no-store' }).catch(() => null);
      const fresh = now?.ok ? ((await now.json().catch(() => null)) as View | null) : null;
      if (fresh) render(fresh);
      // An ended ticket's status already says how it ended; otherwise its turn has begun. Unread,
      // the ticket is only known to be waiting no longer.
      if (!fresh) noteLeave('closed', t.leaveRefused);
      else if (!terminal(fresh.state)) noteLeave('closed', t.leaveClosed);
      return;
    }
    if (res?.status === 404) return gone();
    noteLeave('failed', !res ? t.leaveLost : LATER.has(res.status) ? t.leaveBusy : t.leaveFailed);
  } finally {
    b.disabled = false;
    b.textContent = t.leave;
  }
}

$<HTMLButtonElement>('#leave').addEventListener('click', () => void leaveLine());

$('#leave').textContent = t.leave;
follow();
