/**
 * The invite page (/join/{itemId}?invite=…): solves the item's proof-of-work challenge in a Web
 * Worker where one is asked, joins with the invite, then shows the waiting page for the ticket.
 *
 * At the opening second of a sale the daemon may answer 503 (Redis slow or away) or 429 (a quota),
 * and a join before the opening is 425: none of these is the user's fault, so the page waits as
 * told (Retry-After, or until opensAt) and tries again, keeping the solution it has; the daemon
 * lets the same invite present its challenge again. A challenge that expired while it waited
 * (403 pow_required) is replaced and solved anew.
 */
import { $, jitter, LATER, retryDelay, sleep } from './dom';
import { texts, type Lang } from './i18n';

const data = document.body.dataset;
const itemId = data.item!;
const lang = (data.lang === 'zh' ? 'zh' : 'en') as Lang;
const t = texts[lang];
const invite = new URLSearchParams(location.search).get('invite') ?? '';
const status = $('#status');
const bar = $<HTMLProgressElement>('#bar');

// The language links keep the invite: a bare `?lang=` dropped it, and the page then called the invite not valid.
for (const a of document.querySelectorAll<HTMLAnchorElement>('.langs a')) {
  const u = new URL(location.href);
  u.searchParams.set('lang', a.hreflang);
  a.href = u.pathname + u.search;
}

function solve(challenge: string, difficulty: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const w = new Worker(data.worker!);
    w.onmessage = (e) => {
      if (e.data.progress !== undefined) bar.value = Math.round(e.data.progress * 100);
      if (e.data.nonce !== undefined) {
        w.terminate();
        resolve(e.data.nonce);
      }
    };
    w.onerror = (e) => reject(new Error(e.message));
    w.postMessage({ challenge, difficulty });
  });
}

/** The answer to `req` that is not a "not now", after waiting between tries as the daemon asks. */
async function persist(req: () => Promise<Response>): Promise<Response> {
  for (let attempt = 0; ; attempt++) {
    const res = await req().catch(() => null);
    if (res && !LATER.has(res.status)) return res;
    let ms = retryDelay(res, attempt);
    if (res?.status === 425) {
      const d = (await res.json().catch(() => null))?.error?.details;
      // (With a pre-queue its joins are taken from joinsFrom: waiting for opensAt missed the draw.)
      const until = Date.parse(d?.joinsFrom ?? d?.opensAt) - Date.parse(d?.now);
      status.textContent = t.joinNotOpen;
      if (until > 0) ms = jitter(Math.min(60_000, until + Math.random() * 1000));
    } else status.textContent = t.busy;
    await sleep(ms);
  }
}

/** The daemon's refusal in the user's words: "not valid" only where the invite itself is (a blocked user's valid invite read "not valid"). */
function refuse(reason: string | undefined, code?: string) {
  status.textContent = t.joinFailed;
  $('#note').textContent = code === 'blocked' ? t.joinBlocked : code === 'item_not_found' ? t.noSuchSale : reason === 'invite_expired' ? t.inviteExpired : t.inviteInvalid;
  bar.hidden = true;
}

async function run() {
  if (!invite) return refuse('invite_invalid');
  for (let round = 0; round < 5; round++) {
    status.textContent = t.joining;
    let pow: { challenge: string; nonce: string } | undefined;
    const ch = await persist(() => fetch(`/v1/items/${encodeURIComponent(itemId)}/challenge`, { cache: 'no-store' }));
    if (!ch.ok) return refuse('invite_invalid');
    const { challenge, difficulty } = (await ch.json()) as { challenge: string; difficulty: number };
    if (difficulty > 0) {
      status.textContent = t.solving;
      pow = { challenge, nonce: await solve(challenge, difficulty) };
    }
    const body = JSON.stringify(pow ? { invite, pow } : { invite });
    const res = await persist(() => fetch('/v1/join', { method: 'POST', headers: { 'content-type': 'application/json' }, body }));
    const answer = await res.json().catch(() => null);
    if (res.ok) return location.replace(`/wait/${encodeURIComponent(answer.ticketId)}?lang=${lang}`);
    if (res.status === 410) {
      status.textContent = answer?.error?.code === 'sold_out' ? t.soldOut : t.closed;
      bar.hidden = true;
      return;
    }
    // The challenge expired while the page waited: fetch and solve a new one.
    if (answer?.error?.code !== 'pow_required') return refuse(answer?.error?.details?.reason, answer?.error?.code);
  }
  refuse(undefined);
}

run().catch(() => refuse(undefined));
