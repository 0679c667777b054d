/**
 * The invite page (/join/{itemId}?invite=…): solves the item's proof-of-work challenge in a Web
 * Worker where one is asked, joins with the invite, then shows the waiting page for the ticket.
 */
import { $ } from './dom';
import { texts, type Lang } from './i18n';

const data = document.body.dataset;
const itemId = data.item!;
const lang = (data.lang === 'zh' ? 'zh' : 'en') as Lang;
const t = texts[lang];
const invite = new URLSearchParams(location.search).get('invite') ?? '';
const status = $('#status');
const bar = $<HTMLProgressElement>('#bar');

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

function refuse(reason: string | undefined) {
  status.textContent = t.joinFailed;
  $('#note').textContent = reason === 'invite_expired' ? t.inviteExpired : t.inviteInvalid;
  bar.hidden = true;
}

async function run() {
  if (!invite) return refuse('invite_invalid');
  status.textContent = t.joining;
  let pow: { challenge: string; nonce: string } | undefined;
  const ch = await fetch(`/v1/items/${encodeURIComponent(itemId)}/challenge`, { cache: 'no-store' });
  if (!ch.ok) return refuse('invite_invalid');
  const { challenge, difficulty } = (await ch.json()) as { challenge: string; difficulty: number };
  if (difficulty > 0) {
    status.textContent = t.solving;
    pow = { challenge, nonce: await solve(challenge, difficulty) };
  }
  const res = await fetch('/v1/join', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(pow ? { invite, pow } : { invite }) });
  const body = await res.json().catch(() => null);
  if (res.ok) return location.replace(`/wait/${encodeURIComponent(body.ticketId)}?lang=${lang}`);
  if (res.status === 410) {
    status.textContent = body?.error?.code === 'sold_out' ? t.soldOut : t.closed;
    bar.hidden = true;
    return;
  }
  refuse(body?.error?.details?.reason);
}

run().catch(() => refuse(undefined));
