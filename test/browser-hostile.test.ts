/**
 * The pages against strings an attacker chooses: titles, results and reasons, returnUrls, ids in
 * paths and hashes. Nothing they carry may run, become markup, send the user elsewhere than the
 * operator said, leak the ticket id, or leave a blank page; the pages' security headers are checked
 * on every kind of answer.
 */
import { describe, expect, it } from 'vitest';
import { browserDaemon } from './support/browser-daemon.js';
import type { Page } from 'playwright-core';
import { OP, SVC } from './support/daemon-inproc.js';
import { hasChromium, open, PHONE } from './support/browser.js';

const { daemon, call, browser, context, get, join, pull } = await browserDaemon();

/** Markup that would show if a string were read as HTML: a script that sets a flag, an element, a handler. */
const HOSTILE = `</title></h1><script>window.pwned=1</script><b id="inj">x</b><img id="inj2" src="x" onerror="window.pwned=2">"' &amp;`;

/** Script errors, script that ran, elements that came from a string: none of them may happen. */
async function clean(page: Page, errors: string[]) {
  expect(errors).toEqual([]);
  expect(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned)).toBeUndefined();
  expect(await page.locator('#inj, #inj2').count()).toBe(0);
}

function watch(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  return errors;
}

describe('the pages refuse to be turned against their users', () => {
  it('refuses returnUrls that are not plain http(s) URLs, whatever the trick', async () => {
    const tricks = ['javascript:alert(1)', ' javascript:alert(1)', 'java\tscript:alert(1)', 'JaVaScRiPt:alert(1)', 'data:text/html,<script>alert(1)</script>', 'vbscript:x', '//evil.example/x', '/\\evil.example', '\\\\evil.example', 'https:evil.example', 'https:/evil.example', 'https:\\\\evil.example', '\u0000https://evil.example', 'https://evil.example/\u0000', 'http://[::1', 'https://a b.example', 'ftp://evil.example/'];
    for (const returnUrl of tricks) {
      const r = await call('PUT', '/v1/items/h-url', { handler: 'external', waitingRoom: { title: 'x', returnUrl } });
      expect([returnUrl, r.status]).toEqual([returnUrl, 400]);
    }
  });

  it('sends the security headers on every page and error page', async () => {
    await call('PUT', '/v1/items/h-head', { handler: 'external' });
    const ticket = await join('h-head', 'u');
    for (const [path, status] of [[`/wait/${ticket}`, 200], ['/wait/nope', 404], ['/join/h-head?invite=x', 200], ['/join/nope', 404], ['/join/%ZZ', 404], ['/console', 200]] as const) {
      const res = await get(daemon.url + path);
      await res.body?.cancel();
      expect([path, res.status]).toEqual([path, status]);
      const h = Object.fromEntries(['content-type', 'x-content-type-options', 'referrer-policy', 'x-frame-options'].map((k) => [k, res.headers.get(k)]));
      expect(h).toEqual({ 'content-type': 'text/html; charset=utf-8', 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer', 'x-frame-options': 'DENY' });
      const csp = res.headers.get('content-security-policy') ?? '';
      for (const d of ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "base-uri 'none'", "form-action 'self'"]) expect(csp).toContain(d);
      expect(csp).not.toContain('unsafe');
    }
  });
});

describe.skipIf(!hasChromium)('hostile strings in Chromium', () => {
  it('shows a hostile title, result and reason as text, wrapped on a phone, on the waiting and invite pages', async () => {
    await call('PUT', '/v1/items/h-text', { handler: 'external', gate: { mode: 'manual', rate: 1000 }, waitingRoom: { title: HOSTILE } });
    const won = await join('h-text', 'won');
    const lost = await join('h-text', 'lost');
    const [a, b] = await pull('h-text', 2);
    // An order number as long as a webhook may answer one, with no place to break.
    const orderId = `${HOSTILE}${'9'.repeat(300)}`;
    expect((await call('POST', `/v1/tickets/${a.ticketId}/outcome`, { leaseId: a.leaseId, status: 'succeeded', result: { orderId } }, SVC)).status).toBe(200);
    expect((await call('POST', `/v1/tickets/${b.ticketId}/outcome`, { leaseId: b.leaseId, status: 'rejected', reason: HOSTILE.slice(0, 128) }, SVC)).status).toBe(200);
    const page = await context!.newPage();
    await page.setViewportSize(PHONE);
    const errors = watch(page);
    await open(page, `${daemon.url}/wait/${won}?lang=en`);
    await expect.poll(() => page.textContent('#status')).toBe(`Done: your order is placed. Order number ${orderId}`);
    expect(await page.textContent('h1')).toBe(HOSTILE);
    expect(await page.title()).toBe(HOSTILE);
    // Nothing wider than the phone: the page does not scroll sideways.
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(PHONE.width);
    await clean(page, errors);
    await open(page, `${daemon.url}/wait/${lost}?lang=en`);
    await expect.poll(() => page.textContent('#status')).toBe(`Not possible this time (${HOSTILE.slice(0, 128)}).`);
    await clean(page, errors);
    await open(page, `${daemon.url}/join/h-text?lang=en&invite=${encodeURIComponent(HOSTILE)}`);
    await expect.poll(() => page.textContent('#note')).toBe('This invitation is not valid.');
    expect(await page.textContent('h1')).toBe(HOSTILE);
    await clean(page, errors);
    await page.close();
  });

  it('takes an admitted user to the returnUrl the operator set, as the daemon read it, with no Referer', async () => {
    // A host the daemon accepts and Chromium refuses as written (an RTL digit after a Latin letter,
    // the IDNA bidi rule) but reads in its ASCII form; and a backslash the URL parser reads as "/".
    const cases = [
      { returnUrl: 'https://shop\u0661.example/checkout?x=1', host: new URL('https://shop\u0661.example/').hostname, path: '/checkout' },
      { returnUrl: 'https://shop.example\\@evil.example/', host: 'shop.example', path: '/@evil.example/' },
    ];
    for (const [n, c] of cases.entries()) {
      const item = `h-go-${n}`;
      await call('PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'manual', rate: 1000 }, waitingRoom: { title: 'Go', returnUrl: c.returnUrl } });
      const id = await join(item, 'goer');
      const page = await context!.newPage();
      const errors = watch(page);
      const shop: { url: string; referer?: string }[] = [];
      await page.route((u) => u.origin !== daemon.url, (r) => {
        shop.push({ url: r.request().url(), referer: r.request().headers().referer });
        return r.fulfill({ status: 200, contentType: 'text/html', body: 'the shop' });
      });
      // The admitted view as a daemon that issues admission tokens sends it.
      const view = { ticketId: id, itemId: item, userId: 'goer', state: 'admitted', pollAfterMs: 1000, admissionToken: 'eyJ.test.sig', createdAt: '', updatedAt: '' };
      await page.route('**/events', (r) => r.fulfill({ status: 200, contentType: 'text/event-stream', body: `event: ticket\ndata: ${JSON.stringify(view)}\n\n` }));
      await open(page, `${daemon.url}/wait/${id}`);
      await expect.poll(() => shop.length, { timeout: 15_000 }).toBeGreaterThan(0);
      const to = new URL(shop[0].url);
      expect([to.protocol, to.hostname, to.pathname, to.searchParams.get('admission')]).toEqual(['https:', c.host, c.path, 'eyJ.test.sig']);
      expect(shop[0].referer).toBeUndefined();
      expect(errors).toEqual([]);
      await page.close();
    }
  });

  it("keeps the invite when the user switches the invite page's language", async () => {
    await call('PUT', '/v1/items/h-lang', { handler: 'external', gate: { mode: 'closed' } });
    const { url } = (await call('POST', '/v1/items/h-lang/invites', { userId: 'polyglot', ttlMs: 60_000 }, SVC)).body;
    const page = await context!.newPage();
    const errors = watch(page);
    // The daemon is busy for a minute: the page stays on the invite while the user picks a language.
    await page.route('**/challenge', (r) => r.fulfill({ status: 503, headers: { 'retry-after': '60' }, contentType: 'application/json', body: '{"error":{"code":"unavailable","message":"busy"}}' }));
    await open(page, `${daemon.url}${url}&lang=en`);
    await expect.poll(() => page.textContent('#status')).toBe('Very busy right now, trying again…');
    await page.click('.langs a[hreflang="zh"]');
    await expect.poll(() => page.textContent('#status')).toBe('当前人数较多，正在重试…');
    const now = new URL(page.url());
    expect([now.pathname, now.searchParams.get('invite'), now.searchParams.get('lang')]).toEqual(['/join/h-lang', new URL(url, daemon.url).searchParams.get('invite'), 'zh']);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('shows the console, not a blank page, for a hash an attacker wrote', async () => {
    await call('PUT', '/v1/items/h-console', { handler: 'external' });
    const page = await context!.newPage();
    const errors = watch(page);
    await open(page, `${daemon.url}/console`);
    await page.evaluate((k) => sessionStorage.setItem('fg.operatorKey', k), OP);
    for (const hash of ['#/item/%E0%A4%A', '#/item/%', `#/item/${encodeURIComponent(HOSTILE)}`, '#/item/..', '#/item/.']) {
      await page.evaluate((h) => void (location.hash = h), hash);
      await page.reload();
      // The item list (none of these names an item): never an empty page.
      await expect.poll(() => page.locator('#items tr[data-item="h-console"]').count()).toBe(1);
      expect(await page.textContent('header')).toContain('Floodgate');
    }
    await clean(page, errors);
    await page.close();
  });
});
