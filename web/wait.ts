/**
 * The waiting page (/wait/{ticketId}): follows the ticket over the events stream and falls back
 * to polling when the stream cannot be had; shows place, wait, a progress bar and the result in
 * words; offers "leave the line"; on admitted/succeeded sends the user to the item's returnUrl
 * (with ?admission=<admissionToken> when the ticket carries one).
 */
import { $, LATER, retryDelay, sleep } from './dom';
import { texts, type Lang } from './i18n';

interface View {
  ticketId: string;
  state: string;
  position?: number;
  etaMs?: number;
  pollAfterMs?: number;
  reason?: string;
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
  return t.rejected(reason || v.state);
}

function render(v: View) {
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
    status.textContent = v.reason === 'not_open' ? t.notOpen : v.reason === 'paused' ? t.paused : v.reason === 'awaiting_returns' ? t.awaitingReturns : t.waiting;
    place.textContent = pos ? `${t.position(pos)} · ${t.ahead(pos - 1)}` : '';
    eta.textContent = v.etaMs !== undefined ? t.eta(t.minutes(Math.round(v.etaMs / 60000))) : t.etaUnknown;
    bar.max = 100;
    bar.value = start > 0 ? Math.round(((start - pos + 1) / start) * 100) : 0;
    leave.hidden = false;
  } else {
    leave.hidden = true;
    place.textContent = '';
    eta.textContent = '';
    bar.value = v.state === 'admitted' || v.state === 'succeeded' ? 100 : bar.value;
    status.textContent = v.state === 'admitted' ? t.admitted : resultText(v);
    if ((v.state === 'admitted' || v.state === 'succeeded') && returnUrl) redirectSoon();
  }
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
  for (let failures = 0; ; ) {
    let wait: number;
    const res = await fetch(api, { cache: 'no-store' }).catch(() => null);
    const v = res?.ok ? ((await res.json().catch(() => null)) as View | null) : null;
    if (v) {
      failures = 0;
      render(v);
      if (terminal(v.state)) return;
      wait = Math.min(Math.max(v.pollAfterMs ?? 2000, 1000), 10_000);
      mode(t.polling);
    } else if (res?.status === 404) return;
    else {
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

$<HTMLButtonElement>('#leave').addEventListener('click', async () => {
  const b = $<HTMLButtonElement>('#leave');
  b.disabled = true;
  b.textContent = t.leaving;
  try {
    const res = await fetch(api, { method: 'DELETE' });
    if (res.ok) render((await res.json()) as View);
  } finally {
    b.disabled = false;
    b.textContent = t.leave;
  }
});

$('#leave').textContent = t.leave;
follow();
