import { Hono, type Context } from 'hono';
import { FloodgateError } from '../../kernel/errors.js';
import { toFloodgateError } from '../errors.js';
import { ITEM_ID } from '../schemas.js';
import type { ApiContext } from '../context.js';
import type { WebAssets } from '../web-assets.js';

type Lang = 'en' | 'zh';

/**
 * No inline script or style anywhere, nothing from another host: a ticket id in the page's URL
 * is a credential, so the page also sends no Referer to where it links.
 */
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "worker-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const pageHeaders = {
  'Content-Type': 'text/html; charset=utf-8',
  'Content-Security-Policy': CSP,
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  // A page names its hashed assets, which change with every build: the page itself is not kept.
  'Cache-Control': 'no-cache',
};

const escape = (s: string) => s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);

/**
 * The returnUrl as this daemon's URL parser reads it (WHATWG, as the item's schema checked it):
 * its host in ASCII, so that a browser goes where the daemon thought (Chromium refused some
 * Unicode hosts Node accepts, and the admitted user stayed on the page); anything but http(s), never.
 */
function returnHref(url: string | null | undefined): string {
  if (!url) return '';
  try {
    const u = new URL(url);
    return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : '';
  } catch {
    return '';
  }
}

/** `?lang=en|zh`, else the first of en/zh in Accept-Language by weight, else English. */
export function pickLang(query: string | undefined, accept: string | undefined): Lang {
  if (query === 'en' || query === 'zh') return query;
  const tags = (accept ?? '')
    .split(',')
    .map((part, i) => {
      const [tag, ...params] = part.trim().toLowerCase().split(';');
      const q = params.map((p) => /^\s*q=([\d.]+)/.exec(p)?.[1]).find(Boolean);
      return { tag, q: q === undefined ? 1 : Number(q), i };
    })
    .filter((x) => x.q > 0)
    .sort((a, b) => b.q - a.q || a.i - b.i);
  for (const { tag } of tags) {
    if (tag.startsWith('zh')) return 'zh';
    if (tag.startsWith('en')) return 'en';
  }
  return 'en';
}

const words = {
  en: { waiting: 'Waiting room', loading: 'Loading…', notFound: 'This page does not exist, or the link is not valid.', error: 'Something went wrong. Please try again in a moment.', console: 'Floodgate console' },
  zh: { waiting: '排队等候', loading: '加载中…', notFound: '页面不存在，或链接无效。', error: '出了点问题，请稍后再试。', console: 'Floodgate 控制台' },
};

function page(assets: WebAssets, o: { lang: Lang; title: string; css: string; script?: string; data?: Record<string, string>; main: string; refreshS?: number }) {
  const data = Object.entries(o.data ?? {})
    .map(([k, v]) => ` data-${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}="${escape(v)}"`)
    .join('');
  return `<!doctype html>
<html lang="${o.lang === 'zh' ? 'zh-CN' : 'en'}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">${o.refreshS ? `<meta http-equiv="refresh" content="${o.refreshS}">` : ''}
<title>${escape(o.title)}</title><link rel="stylesheet" href="${assets.url(o.css)}"></head>
<body${data}><main>${o.main}</main>${o.script ? `<script src="${assets.url(o.script)}" defer></script>` : ''}</body></html>`;
}

const langLinks = '<nav class="langs"><a href="?lang=en" hreflang="en">English</a><a href="?lang=zh" hreflang="zh">中文</a></nav>';

/**
 * The pages: the waiting page (/wait/{ticketId}), the invite page (/join/{itemId}), the operator
 * console (/console), and their bundled scripts and styles (/assets/…, immutable). A bad id is a
 * 404 page, an outage a 503 page: an HTML answer with no stack, never a 500.
 */
export function pageRoutes(ctx: ApiContext, assets: () => Promise<WebAssets>) {
  const app = new Hono();

  async function errorPage(c: Context, err: unknown, lang: Lang) {
    // (An outage is said as one — logged as the API logs it — and anything else is logged as unexpected.)
    const fe = toFloodgateError(err, ctx.log);
    const status = fe.status < 500 ? 404 : 503;
    const w = words[lang];
    // An outage's page asks again by itself (a user who reloaded the waiting page while Redis was
    // away was left on a page with no script, that never came back), after 20-40 s at random: a
    // crowd that reloaded together must not come back together, nor often (browsers ignore a
    // navigation's Retry-After). Not for a fault of the daemon's own: reloading cannot mend it.
    const refreshS = fe.code === 'unavailable' ? 20 + Math.floor(Math.random() * 21) : undefined;
    const html = page(await assets(), { lang, title: w.waiting, css: 'page.css', main: `${langLinks}<h1>${status === 404 ? '404' : '503'}</h1><p>${status === 404 ? w.notFound : w.error}</p>`, ...(refreshS ? { refreshS } : {}) });
    return c.body(html, status, { ...pageHeaders, 'Cache-Control': 'no-store' });
  }

  app.get('/wait/:ticketId', async (c) => {
    const lang = pickLang(c.req.query('lang'), c.req.header('accept-language'));
    try {
      const view = await ctx.queue.tickets.status(c.req.param('ticketId'));
      const room = (await ctx.queue.items.item(view.itemId))?.snap.def.waitingRoom ?? null;
      const title = room?.title ?? words[lang].waiting;
      const main = `${langLinks}<h1>${escape(title)}</h1><p id="status">${words[lang].loading}</p><p id="place"></p><p id="eta"></p>
<progress id="bar" max="100" value="0"></progress><p><button id="leave" type="button" hidden></button></p><p id="leave-note" role="status"></p><p id="note"></p><p id="mode"></p>`;
      const data = { ticket: view.ticketId, lang, returnUrl: returnHref(room?.returnUrl) };
      return c.body(page(await assets(), { lang, title, css: 'page.css', script: 'wait.js', data, main }), 200, { ...pageHeaders, 'Cache-Control': 'no-store' });
    } catch (err) {
      return errorPage(c, err, lang);
    }
  });

  app.get('/join/:itemId', async (c) => {
    const lang = pickLang(c.req.query('lang'), c.req.header('accept-language'));
    const itemId = c.req.param('itemId');
    try {
      // (An id the item set lacks costs no snapshot read: this page is open to anyone.)
      const item = ITEM_ID.test(itemId) && (await ctx.queue.items.isKnown(itemId)) ? await ctx.queue.items.item(itemId) : null;
      if (!item) throw new FloodgateError('item_not_found', 'No such item.');
      const title = item.snap.def.waitingRoom?.title ?? words[lang].waiting;
      const main = `${langLinks}<h1>${escape(title)}</h1><p id="status">${words[lang].loading}</p><progress id="bar" max="100"></progress><p id="note"></p>`;
      const data = { item: itemId, lang, worker: (await assets()).url('pow-worker.js') };
      return c.body(page(await assets(), { lang, title, css: 'page.css', script: 'join.js', data, main }), 200, { ...pageHeaders, 'Cache-Control': 'no-store' });
    } catch (err) {
      return errorPage(c, err, lang);
    }
  });

  app.get('/console', async (c) => {
    const main = '<div id="app"></div>';
    return c.body(page(await assets(), { lang: 'en', title: words.en.console, css: 'console.css', script: 'console.js', main }), 200, pageHeaders);
  });

  app.get('/assets/:name', async (c) => {
    const asset = (await assets()).get(c.req.param('name'));
    if (!asset) return c.json({ error: { code: 'not_found', message: 'No such asset.' } }, 404);
    return c.body(asset.body as Uint8Array<ArrayBuffer>, 200, {
      'Content-Type': asset.type,
      'Cache-Control': 'public, max-age=31536000, immutable',
      'X-Content-Type-Options': 'nosniff',
    });
  });

  return app;
}
