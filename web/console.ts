/**
 * The operator console (/console): asks for an operator key (kept in this tab's session storage
 * only), lists items, and per item draws the last 15 minutes (uPlot, bundled and served by the
 * daemon), the gate controls with the controller's opinion beside them, and the audit log.
 * Routes: #/ (items) and #/item/<itemId>.
 */
import uPlot from 'uplot';
import { $, el, LATER, retryDelay, sleep } from './dom';

const KEY = 'fg.operatorKey';
const app = $('#app');
let timer: number | undefined;
let charts: uPlot[] = [];

class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

/** Reads asked again after a "not now" (503 when Redis is slow, 429): one busy second must not sign the operator out or blank the page. */
const READ_TRIES = 4;

async function api<T>(method: string, path: string, body?: unknown, key = sessionStorage.getItem(KEY) ?? ''): Promise<T> {
  const headers: Record<string, string> = { authorization: `Bearer ${key}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const send = () => fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  let res = await send();
  for (let attempt = 0; method === 'GET' && LATER.has(res.status) && attempt < READ_TRIES - 1; attempt++) {
    await sleep(retryDelay(res, attempt));
    res = await send();
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new HttpError(res.status, data?.error?.code ?? 'error', data?.error?.message ?? res.statusText);
  return data as T;
}

interface Item {
  itemId: string;
  handler: string;
  state: string;
  counts: Record<string, number>;
  remaining: number | null;
  gate: { mode: string; rate: number | null; maxInFlight: number | null; effective: { rate: number | null; maxInFlight: number | null }; controller: { limit: number; rate: number | null; p50Ms: number | null; p99Ms: number | null } | null };
}
interface Point { t: number; waiting: number; admitted: number; succeeded: number; rejected: number; failed: number; rate: number | null; maxInFlight: number | null; ctlRate: number | null; ctlLimit: number | null; p50Ms: number | null; p99Ms: number | null }

const fmt = (n: number | null | undefined) => (n === null || n === undefined ? '—' : String(Math.round(n * 100) / 100));

/** Which page is shown: a load still answering (reads are asked again for seconds after a 503) draws nothing once the operator moved on. */
let shown = 0;

/**
 * A page's loads: `begin()` at a load's start gives what it asks before it draws — whether it is
 * still the page shown and no later load has drawn already (one answered late drew older data
 * over newer); `onPage()` whether the page is still shown.
 */
function pageLoads() {
  const page = shown;
  let begun = 0;
  let drawn = 0;
  const onPage = () => page === shown;
  return {
    onPage,
    begin() {
      const n = ++begun;
      return () => onPage() && n >= drawn && ((drawn = n), true);
    },
  };
}

function reset() {
  shown++;
  clearInterval(timer);
  charts.forEach((c) => c.destroy());
  charts = [];
  app.replaceChildren();
}

function login(message = '') {
  reset();
  const input = el('input', { id: 'key', type: 'password', autocomplete: 'off', placeholder: 'operator key' });
  const form = el('form', { id: 'login' }, el('h1', {}, 'Floodgate console'), el('label', { for: 'key' }, 'Operator key'), input, el('button', { type: 'submit', class: 'primary' }, 'Sign in'), el('p', { id: 'error', class: 'error' }, message));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      await api('GET', '/v1/items', undefined, (input as HTMLInputElement).value);
      sessionStorage.setItem(KEY, (input as HTMLInputElement).value);
      location.hash = '#/';
      route();
    } catch (err) {
      $('#error').textContent = err instanceof HttpError && (err.status === 401 || err.status === 403) ? 'That key is not an operator key.' : String((err as Error).message);
    }
  });
  app.append(form);
  input.focus();
}

/** Every failure lands here, said in `box` (the page's error line): a dropped key sends the operator back to sign in. */
function failed(err: unknown, box = '#error', prefix = '') {
  if (err instanceof HttpError && (err.status === 401 || err.status === 403)) {
    sessionStorage.removeItem(KEY);
    return login('Signed out: the key was refused.');
  }
  const line = document.querySelector(box);
  if (line) line.textContent = prefix + String((err as Error).message);
}

/** A page's reads done: what failed said on its error line, which is cleared once they all answer (it stayed after an outage ended). */
function loaded(errors: unknown[]) {
  if (errors.length) failed(errors[0]);
  else $('#error').textContent = '';
}

function header(...extra: Node[]) {
  const out = el('button', { type: 'button', id: 'logout' }, 'Sign out');
  out.addEventListener('click', () => {
    sessionStorage.removeItem(KEY);
    login();
  });
  return el('header', {}, el('a', { href: '#/' }, el('strong', {}, 'Floodgate')), ...extra, out);
}

async function listPage() {
  reset();
  const tbody = el('tbody');
  const table = el('table', { id: 'items' }, el('thead', {}, el('tr', {}, ...['item', 'state', 'waiting', 'admitted/s', 'gate', 'left', ''].map((h) => el('th', {}, h)))), tbody);
  app.append(header(), el('h1', {}, 'Items'), el('p', { id: 'error', class: 'error' }), el('p', { id: 'action-error', class: 'error' }), table, createForm());
  const loads = pageLoads();
  const load = async () => {
    const mayDraw = loads.begin();
    const { items } = await api<{ items: Item[] }>('GET', '/v1/items');
    const rates = await Promise.all(items.map((i) => api<{ points: Point[] }>('GET', `/v1/items/${encodeURIComponent(i.itemId)}/series?windowMs=10000`).then((s) => (s.points.length ? s.points.reduce((a, p) => a + p.admitted, 0) / s.points.length : 0)).catch(() => null)));
    // (Not over a newer load's table, nor onto another page.)
    if (!mayDraw()) return;
    loaded([]);
    tbody.replaceChildren(
      ...items.map((i, n) => {
        const close = el('button', { type: 'button', 'data-close': i.itemId }, 'Close');
        close.addEventListener('click', async () => {
          if (!confirm(`Close ${i.itemId}? Waiting tickets end cancelled.`)) return;
          $('#action-error').textContent = '';
          await api('DELETE', `/v1/items/${encodeURIComponent(i.itemId)}`).catch((err) => failed(err, '#action-error', `${i.itemId} not closed: `));
          void load();
        });
        return el('tr', { 'data-item': i.itemId }, el('td', {}, el('a', { href: `#/item/${encodeURIComponent(i.itemId)}` }, i.itemId)), el('td', {}, i.state), el('td', {}, String(i.counts.waiting)), el('td', {}, fmt(rates[n])), el('td', {}, `${i.gate.mode} ${fmt(i.gate.effective.rate)}/s ≤${fmt(i.gate.effective.maxInFlight)}`), el('td', {}, fmt(i.remaining)), el('td', {}, i.state === 'closed' ? '' : close));
      }),
    );
  };
  const onFail = (err: unknown) => void (loads.onPage() && failed(err));
  await load().catch(onFail);
  timer = window.setInterval(() => void load().catch(onFail), 2000);
}

function createForm() {
  const f = (id: string, label: string, input: HTMLElement) => el('label', { for: id }, label, input);
  const handler = el('select', { id: 'new-handler' }, ...['seckill', 'coupon', 'external', 'webhook'].map((h) => el('option', { value: h }, h)));
  const form = el('form', { id: 'create' }, el('h2', {}, 'Create an item'), f('new-id', 'Item id', el('input', { id: 'new-id', required: '', pattern: '[A-Za-z0-9][A-Za-z0-9._:-]{0,127}' })), f('new-handler', 'Handler', handler), f('new-config', 'Config (JSON)', el('input', { id: 'new-config', value: '{"stock": 100}' })), f('new-title', 'Waiting page title', el('input', { id: 'new-title' })), f('new-return', 'Return URL', el('input', { id: 'new-return', type: 'url' })), el('button', { type: 'submit', class: 'primary' }, 'Create'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const v = (id: string) => (document.getElementById(id) as HTMLInputElement).value.trim();
    try {
      const title = v('new-title');
      const body: Record<string, unknown> = { handler: v('new-handler'), config: JSON.parse(v('new-config') || '{}') };
      if (title) body.waitingRoom = { title, returnUrl: v('new-return') || null };
      await api('PUT', `/v1/items/${encodeURIComponent(v('new-id'))}`, body);
      location.hash = `#/item/${encodeURIComponent(v('new-id'))}`;
    } catch (err) {
      failed(err, '#action-error', 'Not created: ');
    }
  });
  return form;
}

const chartDefs: { id: string; title: string; series: { label: string; key: keyof Point; stroke: string; dash?: number[] }[] }[] = [
  { id: 'waiting', title: 'Waiting', series: [{ label: 'waiting', key: 'waiting', stroke: '#0b6bcb' }] },
  { id: 'admitted', title: 'Admitted per second', series: [{ label: 'admitted/s', key: 'admitted', stroke: '#7a3ec8' }] },
  { id: 'outcomes', title: 'Outcomes per second', series: [{ label: 'succeeded/s', key: 'succeeded', stroke: '#1a7f37' }, { label: 'rejected/s', key: 'rejected', stroke: '#b42318' }, { label: 'failed/s', key: 'failed', stroke: '#b26b00' }] },
  { id: 'gate', title: 'Gate: rate and in-flight limit', series: [{ label: 'rate', key: 'rate', stroke: '#0b6bcb' }, { label: 'in-flight limit', key: 'maxInFlight', stroke: '#7a3ec8' }, { label: 'controller rate', key: 'ctlRate', stroke: '#0b6bcb', dash: [4, 4] }, { label: 'controller limit', key: 'ctlLimit', stroke: '#7a3ec8', dash: [4, 4] }] },
  { id: 'latency', title: 'Downstream latency (ms)', series: [{ label: 'p50', key: 'p50Ms', stroke: '#1a7f37' }, { label: 'p99', key: 'p99Ms', stroke: '#b42318' }] },
];

function chartData(points: Point[], def: (typeof chartDefs)[number]): uPlot.AlignedData {
  return [points.map((p) => p.t / 1000), ...def.series.map((s) => points.map((p) => p[s.key] as number | null))];
}

async function itemPage(itemId: string) {
  reset();
  const path = `/v1/items/${encodeURIComponent(itemId)}`;
  const mode = el('select', { id: 'mode' }, ...['auto', 'manual', 'closed'].map((m) => el('option', { value: m }, m)));
  const rate = el('input', { id: 'rate', type: 'number', min: '0.01', step: 'any', placeholder: 'none' });
  const mif = el('input', { id: 'mif', type: 'number', min: '1', step: '1', placeholder: 'none' });
  const gateForm = el('form', { id: 'gate' }, el('h2', {}, 'Gate'), el('label', { for: 'mode' }, 'Mode', mode), el('label', { for: 'rate' }, 'Rate /s', rate), el('label', { for: 'mif' }, 'In-flight cap', mif), el('button', { type: 'submit', class: 'primary', id: 'apply' }, 'Apply'), el('p', { id: 'apply-error', class: 'error' }), el('p', { id: 'shadow' }), el('p', { id: 'effective' }));
  const summary = el('p', { id: 'summary' });
  const chartsBox = el('div', { id: 'charts' });
  const audit = el('tbody');
  app.append(header(el('span', {}, ` / ${itemId}`)), el('h1', {}, itemId), summary, el('p', { id: 'error', class: 'error' }), el('div', { class: 'cols' }, chartsBox, gateForm), el('h2', {}, 'Audit log'), el('p', { id: 'audit-error', class: 'error' }), el('table', { id: 'audit' }, el('thead', {}, el('tr', {}, ...['when', 'who', 'from', 'to', 'why'].map((h) => el('th', {}, h)))), audit));
  // The form shows the gate as it is, until the operator edits it; an edit made while an earlier
  // apply is still answering stays (a loaded daemon answered the first apply after the operator
  // had chosen the next mode, and the refresh put the old one back before the click).
  // Edits made, and how many of them an answered apply carried: the form is the operator's while they differ.
  let edits = 0;
  let applied = 0;
  gateForm.addEventListener('input', () => void edits++);
  gateForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const patch: Record<string, unknown> = { mode: (mode as HTMLSelectElement).value };
    const r = (rate as HTMLInputElement).value;
    const m = (mif as HTMLInputElement).value;
    // An empty field is no ceiling: named in `clear` (a null is refused, as the API says).
    const clear: string[] = [];
    if (r === '') clear.push('rate');
    else patch.rate = Number(r);
    if (m === '') clear.push('maxInFlight');
    else patch.maxInFlight = Number(m);
    if (clear.length) patch.clear = clear;
    const sent = edits;
    $('#apply-error').textContent = '';
    try {
      await api('PATCH', `${path}/gate`, patch);
    } catch (err) {
      // Not applied: said beside the button, and the form shows the gate as it is again (it kept
      // the mode that was refused, `closed` while the sale went on, for as long as the page was open).
      failed(err, '#apply-error', 'Not applied: ');
    }
    applied = Math.max(applied, sent);
    void load();
  });
  for (const def of chartDefs) {
    const box = el('figure', { id: `chart-${def.id}`, class: 'chart' }, el('figcaption', {}, def.title));
    chartsBox.append(box);
    const width = Math.max(260, (box.clientWidth || 320) - 12);
    charts.push(new uPlot({ width, height: 160, scales: { x: { time: true } }, series: [{}, ...def.series.map((s) => ({ label: s.label, stroke: s.stroke, dash: s.dash, width: 1.5, spanGaps: false }))], axes: [{}, { size: 50 }] }, chartData([], def), box));
  }
  // Reads asked again after a 503 take seconds, so loads overlap (pageLoads).
  const loads = pageLoads();
  async function load() {
    const mayDraw = loads.begin();
    // Each read on its own: the audit log is read from Postgres, the item and its series from Redis,
    // and one read's 503 (Postgres away) blanked none of the others — the item read `open` for the
    // whole outage while the API said `paused`.
    const [item, series, log] = await Promise.allSettled([api<Item>('GET', path), api<{ points: Point[] }>('GET', `${path}/series?windowMs=900000`), api<{ entries: { at: string; actor: string; from: unknown; to: unknown; reason: string }[] }>('GET', `${path}/audit?limit=100`)]);
    // (Drawn on the page it was begun for only: another item's page would show this one's gate.)
    if (!mayDraw()) return;
    const denied = [item, series, log].find((r) => r.status === 'rejected' && r.reason instanceof HttpError && (r.reason.status === 401 || r.reason.status === 403));
    if (denied) return failed((denied as PromiseRejectedResult).reason);
    if (log.status === 'fulfilled') {
      $('#audit-error').textContent = '';
      audit.replaceChildren(...log.value.entries.map((e) => el('tr', {}, el('td', {}, new Date(e.at).toLocaleTimeString()), el('td', {}, e.actor), el('td', {}, JSON.stringify(e.from)), el('td', {}, JSON.stringify(e.to)), el('td', {}, e.reason))));
    } else failed(log.reason, '#audit-error', 'Audit log not read: ');
    if (series.status === 'fulfilled') {
      charts.forEach((c, i) => c.setData(chartData(series.value.points, chartDefs[i])));
      document.body.dataset.points = String(series.value.points.length);
    }
    loaded([item, series].flatMap((r) => (r.status === 'rejected' ? [r.reason] : [])));
    if (item.status === 'fulfilled') drawItem(item.value);
  }
  function drawItem(item: Item) {
    // Every counter the item view has: tickets that failed, were cancelled or expired are ended tickets too.
    const c = item.counts;
    summary.textContent = `${item.handler} · ${item.state} · waiting ${c.waiting} · admitted ${c.admitted} · succeeded ${c.succeeded} · rejected ${c.rejected} · failed ${c.failed} · cancelled ${c.cancelled} · expired ${c.expired} · left ${fmt(item.remaining)}`;
    const g = item.gate;
    if (edits === applied) {
      (mode as HTMLSelectElement).value = g.mode;
      (rate as HTMLInputElement).value = g.rate === null ? '' : String(g.rate);
      (mif as HTMLInputElement).value = g.maxInFlight === null ? '' : String(g.maxInFlight);
    }
    $('#effective').textContent = g.mode === 'closed' ? 'Enforced: closed, nothing admitted' : `Enforced: ${g.mode}, ${fmt(g.effective.rate)}/s, in flight ≤ ${fmt(g.effective.maxInFlight)}`;
    $('#shadow').textContent = g.controller ? `Controller${g.mode === 'auto' ? '' : ' (shadow)'}: ${fmt(g.controller.rate)}/s, limit ${g.controller.limit}, p50 ${fmt(g.controller.p50Ms)} ms, p99 ${fmt(g.controller.p99Ms)} ms` : 'Controller: no opinion yet';
  }
  const onFail = (err: unknown) => void (loads.onPage() && failed(err));
  await load().catch(onFail);
  timer = window.setInterval(() => void load().catch(onFail), 2000);
}

/** An item id as the daemon takes one (ITEM_ID in src/api/schemas.ts). */
const ITEM_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;

/** The item a `#/item/<itemId>` hash names, or null: a hash anyone may write into a link (a malformed escape threw, and left a blank page). */
function hashItem(hash: string): string | null {
  const m = /^#\/item\/(.+)$/.exec(hash);
  if (!m) return null;
  try {
    const id = decodeURIComponent(m[1]);
    return ITEM_ID.test(id) ? id : null;
  } catch {
    return null;
  }
}

function route() {
  if (!sessionStorage.getItem(KEY)) return login();
  const itemId = hashItem(location.hash);
  if (itemId) void itemPage(itemId);
  else void listPage();
}

window.addEventListener('hashchange', route);
route();
