import { describe, expect, it } from 'vitest';
import { browserDaemon } from './support/browser-daemon.js';
import { SVC } from './support/daemon-inproc.js';
import { holdStockRow } from './support/db.js';
import { unlinkPrefix } from './support/redis.js';
import { hasChromium, open, screenshot } from './support/browser.js';

// The tests' pages in one context, but for the one in Chinese.
const { db, daemon, call, browser, context, get, join, pull, redis, prefix } = await browserDaemon();

/** An item whose waiting page sends admitted users back to the daemon's /healthz, and one user's ticket in it. */
async function returningItem(item: string, userId: string) {
  await call('PUT', `/v1/items/${item}`, { handler: 'external', waitingRoom: { title: item, returnUrl: `${daemon.url}/healthz?from=wait` } });
  return { id: await join(item, userId), page: await context!.newPage() };
}

/** A user follows ticket 3 of 3 to its order, over the stream or (with it blocked) by polling. */
async function followToOrder(item: string, blockEvents: boolean) {
  await call('PUT', `/v1/items/${item}`, { handler: 'external', gate: { mode: 'manual', rate: 1000 }, waitingRoom: { title: 'Phone X launch' } });
  for (const u of ['a', 'b']) await join(item, u);
  const mine = await join(item, 'me');
  const page = await context!.newPage();
  const streams: string[] = [];
  page.on('request', (r) => r.url().endsWith('/events') && streams.push(r.url()));
  if (blockEvents) await page.route('**/events', (r) => r.abort());
  await open(page, `${daemon.url}/wait/${mine}`);
  await expect.poll(() => page.textContent('h1')).toBe('Phone X launch');
  await expect.poll(() => page.textContent('#place'), { timeout: 10_000 }).toContain('Your place in line: 3');
  expect(await page.textContent('#eta')).toContain('Estimated wait');
  await expect.poll(() => page.textContent('#mode')).toBe(blockEvents ? 'Updating every few seconds' : 'Live updates');
  if (!blockEvents) await screenshot(page, 'wait');
  for (const t of await pull(item, 2)) await call('POST', `/v1/tickets/${t.ticketId}/outcome`, { leaseId: t.leaseId, status: 'succeeded' }, SVC);
  await expect.poll(() => page.textContent('#place'), { timeout: 10_000 }).toContain('Your place in line: 1');
  expect(Number(await page.getAttribute('#bar', 'value'))).toBeGreaterThan(50);
  const [t] = await pull(item, 1);
  await call('POST', `/v1/tickets/${t.ticketId}/outcome`, { leaseId: t.leaseId, status: 'succeeded', result: { orderId: 'A-1001' } }, SVC);
  await expect.poll(() => page.textContent('#status'), { timeout: 10_000 }).toBe('Done: your order is placed. Order number A-1001');
  if (!blockEvents) await screenshot(page, 'wait-done');
  expect(await page.isHidden('#leave')).toBe(true);
  expect(streams.length).toBeGreaterThan(0);
  await page.close();
}

describe.skipIf(!hasChromium)('the waiting page in Chromium', () => {
  it('follows a ticket from place 3 to its order over the events stream', () => followToOrder('w-events', false));

  it('falls back to polling when the events stream is blocked', () => followToOrder('w-poll', true));

  it('says so when the daemon no longer knows the ticket (Redis lost it), instead of showing the last place as if the user still waited', async () => {
    await call('PUT', '/v1/items/w-gone', { handler: 'external', gate: { mode: 'closed' } });
    await join('w-gone', 'first');
    const id = await join('w-gone', 'lost');
    const page = await context!.newPage();
    await open(page, `${daemon.url}/wait/${id}`);
    await expect.poll(() => page.textContent('#place')).toContain('Your place in line: 2');
    // The item's keys go, as in a Redis that lost its data: the daemon makes the item again from
    // Postgres, which holds nothing of a waiting ticket.
    await unlinkPrefix(redis, `${prefix}{w-gone}`);
    await expect.poll(async () => (await call('GET', `/v1/tickets/${id}`, undefined, null)).status, { timeout: 15_000 }).toBe(404);
    // Asked again for a minute before it is given up: meanwhile the user is not told to join again
    // (a webhook ticket whose call went through would make a second order under a new key).
    await expect.poll(() => page.textContent('#status'), { timeout: 15_000 }).toBe('The service cannot find this ticket just now (it may have been lost in a fault on our side). Checking again for a minute, in case it went through: please wait before joining again.');
    expect(await page.textContent('#place')).toBe('');
    expect(await page.isHidden('#leave')).toBe(true);
    await page.close();
  });

  it('asks again for a minute after a 404, and shows the ticket if the daemon comes to know it (a sale that committed after a Redis loss)', { timeout: 60_000 }, async () => {
    await call('PUT', '/v1/items/w-back', { handler: 'external', gate: { mode: 'closed' } });
    const id = await join('w-back', 'back');
    const page = await context!.newPage();
    // The stream refused (the page polls), and the first answers 404: the ticket is not known.
    await page.route('**/events', (r) => r.abort());
    let unknown = true;
    await page.route(`**/v1/tickets/${id}`, (r) => (unknown ? r.fulfill({ status: 404, contentType: 'application/json', body: '{"error":{"code":"ticket_not_found","message":"No such ticket."}}' }) : r.continue()));
    await open(page, `${daemon.url}/wait/${id}`);
    await expect.poll(() => page.textContent('#status'), { timeout: 15_000 }).toContain('Checking again for a minute');
    unknown = false;
    // (Before: the page stopped asking at the first 404, for good.)
    await expect.poll(() => page.textContent('#place'), { timeout: 20_000 }).toContain('Your place in line: 1');
    await page.close();
  });

  it('does not tell a ticket back in line behind others that it is at the front', async () => {
    await call('PUT', '/v1/items/w-behind', { handler: 'external', gate: { mode: 'closed' } });
    const id = await join('w-behind', 'behind');
    const page = await context!.newPage();
    await page.route('**/events', (r) => r.abort());
    // Its run was cut short and it went back to the head, where tickets returned before it stand.
    await page.route(`**/v1/tickets/${id}`, async (r) => {
      const res = await r.fetch();
      const v = await res.json();
      await r.fulfill({ response: res, json: { ...v, position: 3, admittedAt: v.createdAt, reason: undefined } });
    });
    await open(page, `${daemon.url}/wait/${id}`);
    await expect.poll(() => page.textContent('#status')).toBe('Your turn began but could not finish. You are back in line, among the first, and it will be tried again.');
    await page.close();
  });

  it('lets the user leave the line, in Chinese from Accept-Language', async () => {
    await call('PUT', '/v1/items/w-leave', { handler: 'external', gate: { mode: 'closed' } });
    const id = await join('w-leave', 'leaver');
    // A context of its own: the shared one's locale sets Accept-Language to English for its pages.
    const page = await browser!.newPage({ locale: 'zh-CN', extraHTTPHeaders: { 'accept-language': 'zh-CN,zh;q=0.9,en;q=0.5' } });
    await open(page, `${daemon.url}/wait/${id}`);
    await expect.poll(() => page.textContent('#status')).toBe('排队暂时暂停，您的位置会保留。');
    await screenshot(page, 'wait-zh');
    await page.click('#leave');
    await expect.poll(() => page.textContent('#status')).toBe('您已离开队伍。');
    expect((await call('GET', `/v1/tickets/${id}`, undefined, null)).body.state).toBe('cancelled');
    await page.close();
  });

  it('says what holds the units a buyer waits for: sales still running (no reservations), or reservations not yet paid for', async () => {
    // No reservations: the one unit is the first buyer's, whose sale is still running (its stock
    // row is held locked, as a long report would hold it). Nothing is reserved.
    await call('PUT', '/v1/items/w-selling', { handler: 'seckill', config: { stock: 1 }, gate: { mode: 'manual', rate: 1000 }, waitingRoom: { title: 'Last one' } });
    const page = await context!.newPage();
    const lock = await holdStockRow(db.sql, 'w-selling');
    try {
      const first = await join('w-selling', 'first');
      await expect.poll(async () => (await call('GET', `/v1/tickets/${first}`, undefined, null)).body.state, { timeout: 10_000 }).toBe('admitted');
      const mine = await join('w-selling', 'me');
      await open(page, `${daemon.url}/wait/${mine}`);
      await expect.poll(() => page.textContent('#status'), { timeout: 10_000 }).toBe('The last units are going to people ahead of you right now. If one of theirs does not go through, it comes back; you keep your place.');
      expect((await call('GET', `/v1/tickets/${mine}`, undefined, null)).body).toMatchObject({ state: 'waiting', reason: 'awaiting_returns', returnsFrom: 'sales' });
      await screenshot(page, 'wait-awaiting-sales');
    } finally {
      await lock.release();
    }
    // The first buyer's sale goes through: the item is sold out, and the page says so.
    await expect.poll(() => page.textContent('#status'), { timeout: 15_000 }).toBe('Sorry, it is sold out.');

    // Reservations: the one unit is reserved by a buyer who has not paid yet.
    await call('PUT', '/v1/items/w-reserved', { handler: 'seckill', config: { stock: 1, reserveMs: 600_000 }, gate: { mode: 'manual', rate: 1000 } });
    const reserver = await join('w-reserved', 'first');
    await expect.poll(async () => (await call('GET', `/v1/tickets/${reserver}`, undefined, null)).body.state, { timeout: 10_000 }).toBe('succeeded');
    const mine = await join('w-reserved', 'me');
    await open(page, `${daemon.url}/wait/${mine}`);
    await expect.poll(() => page.textContent('#status'), { timeout: 10_000 }).toBe('Every unit left is reserved or being sold right now. Units reserved by buyers who have not paid yet may come back; you keep your place.');
    expect((await call('GET', `/v1/tickets/${mine}`, undefined, null)).body).toMatchObject({ reason: 'awaiting_returns', returnsFrom: 'reservations' });
    await page.close();
  });

  it('offers no "leave the line" to a ticket back at the head after its lease ran out (its cancel is refused), and says why', async () => {
    await call('PUT', '/v1/items/w-again', { handler: 'external', gate: { mode: 'manual', rate: 1000 } });
    const mine = await join('w-again', 'again');
    const [p] = (await call('POST', '/v1/items/w-again/pull', { max: 1, leaseMs: 1000 }, SVC)).body.tickets;
    expect(p.ticketId).toBe(mine);
    // The worker never answers: once the lease runs out the ticket is back at the head, waiting.
    await expect.poll(async () => (await call('GET', `/v1/tickets/${mine}`, undefined, null)).body.state, { timeout: 15_000 }).toBe('waiting');
    const cancel = await call('DELETE', `/v1/tickets/${mine}`, undefined, null);
    expect([cancel.status, cancel.body.error?.code]).toEqual([409, 'not_cancellable']);
    const page = await context!.newPage();
    await open(page, `${daemon.url}/wait/${mine}`);
    await expect.poll(() => page.textContent('#status')).toBe('Your turn began but could not finish. You are at the front of the line, and it will be tried again.');
    expect(await page.textContent('#place')).toContain('Your place in line: 1');
    expect(await page.isHidden('#leave')).toBe(true);
    expect(await page.textContent('#leave-note')).toBe('You can no longer leave the line: your turn has already begun, and its result will be shown here.');
    await page.close();
  });

  it('says what happened when leaving fails: busy (503), no answer, refused as the turn came (409)', async () => {
    await call('PUT', '/v1/items/w-leave-fail', { handler: 'external', gate: { mode: 'manual', rate: 1000 } });
    const mine = await join('w-leave-fail', 'stayer');
    const page = await context!.newPage();
    // The first leave finds the daemon busy, the second no answer at all; at the third the user's
    // turn comes as they click, and the daemon refuses to cancel the admitted ticket.
    const answers = ['busy', 'none'];
    await page.route(`**/v1/tickets/${encodeURIComponent(mine)}`, async (r) => {
      if (r.request().method() !== 'DELETE') return r.continue();
      const next = answers.shift();
      if (next === 'busy') return r.fulfill({ status: 503, headers: { 'retry-after': '1' }, contentType: 'application/json', body: '{"error":{"code":"unavailable","message":"busy"}}' });
      if (next === 'none') return r.abort('connectionreset');
      await pull('w-leave-fail', 1);
      return r.continue();
    });
    await open(page, `${daemon.url}/wait/${mine}`);
    await expect.poll(() => page.isVisible('#leave')).toBe(true);
    await page.click('#leave');
    await expect.poll(() => page.textContent('#leave-note')).toBe('Could not leave the line just now: the service is very busy. Please try again.');
    expect(await page.isVisible('#leave')).toBe(true);
    await page.click('#leave');
    await expect.poll(() => page.textContent('#leave-note')).toBe('Could not leave the line: no connection to the service. Please try again.');
    expect((await call('GET', `/v1/tickets/${mine}`, undefined, null)).body.state).toBe('waiting');
    await page.click('#leave');
    await expect.poll(() => page.textContent('#leave-note')).toBe('You can no longer leave the line: your turn has already begun, and its result will be shown here.');
    await expect.poll(() => page.textContent('#status'), { timeout: 10_000 }).toBe('It is your turn! Placing your order…');
    expect(await page.isHidden('#leave')).toBe(true);
    expect((await call('GET', `/v1/tickets/${mine}`, undefined, null)).body.state).toBe('admitted');
    await page.close();
  });

  it('stays on "You left the line" when a view read before the leave arrives after it (the place and the button came back)', { timeout: 120_000 }, async () => {
    await call('PUT', '/v1/items/w-left', { handler: 'external', gate: { mode: 'closed' } });
    const mine = await join('w-left', 'leaver');
    const page = await context!.newPage();
    // Polling (the stream blocked); the first poll after the leave is answered with the view from
    // before it, the next ones by the daemon.
    await page.route('**/events', (r) => r.abort());
    const before = (await call('GET', `/v1/tickets/${mine}`, undefined, null)).body;
    let left = false;
    let pollsAfter = 0;
    // The first poll answered after the leave gets the view from before it, handed to the page once
    // it shows the leave. (Decided when the poll's answer came, not when it was sent: a poll sent
    // just before the leave and answered after it read `cancelled`, the page stopped polling, and
    // no poll came to be given the old view — CI failed so once.)
    let showLeave = () => {};
    const leaveShown = new Promise<void>((resolve) => (showLeave = resolve));
    await page.route(`**/v1/tickets/${encodeURIComponent(mine)}`, async (r) => {
      const res = await r.fetch();
      if (r.request().method() === 'DELETE') {
        left = true;
        return r.fulfill({ response: res });
      }
      if (!left || pollsAfter++ > 0) return r.fulfill({ response: res });
      await leaveShown;
      return r.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ ...before, pollAfterMs: 1000 }) });
    });
    await open(page, `${daemon.url}/wait/${mine}`);
    await expect.poll(() => page.isVisible('#leave')).toBe(true);
    // Every status the page shows from here on, in order.
    await page.evaluate(() => {
      const seen: string[] = ((window as unknown as { seen: string[] }).seen = []);
      const el = document.getElementById('status')!;
      new MutationObserver(() => seen.push(el.textContent ?? '')).observe(el, { childList: true, characterData: true, subtree: true });
    });
    await page.click('#leave');
    await expect.poll(() => page.textContent('#status')).toBe('You left the line.');
    showLeave();
    // The stale poll answered, and the page has polled again since (so it has taken the stale one in).
    // (Up to a minute: polls answered 503 on a busy machine before the leave back off, up to 30 s.)
    await expect.poll(() => pollsAfter, { timeout: 75_000 }).toBeGreaterThanOrEqual(2);
    const seen = await page.evaluate(() => (window as unknown as { seen: string[] }).seen);
    // (Before: "You left the line.", then "You are in line" with its place and the button, then back.)
    expect(seen.slice(seen.indexOf('You left the line.'))).toEqual(seen.slice(seen.indexOf('You left the line.')).map(() => 'You left the line.'));
    expect(await page.isHidden('#leave')).toBe(true);
    await page.close();
  });

  it("tells a pre-queued user that places are drawn at the opening, and a blocked user's ended ticket why", async () => {
    await call('PUT', '/v1/items/w-draw', { handler: 'external', opensAt: new Date(Date.now() + 600_000).toISOString(), preQueue: { fromMs: 3_600_000 } });
    const early = await join('w-draw', 'early');
    expect((await call('GET', `/v1/tickets/${early}`, undefined, null)).body).toMatchObject({ state: 'waiting', position: null, reason: 'not_open' });
    const page = await context!.newPage();
    await open(page, `${daemon.url}/wait/${early}`);
    await expect.poll(() => page.textContent('#status')).toBe('The sale has not opened yet. When it opens, places in line are drawn at random among everyone who joined before.');
    expect(await page.textContent('#place')).toBe('');

    // A user blocked while waiting: their ticket ends rejected / blocked as it reaches the head.
    await call('PUT', '/v1/items/w-late-block', { handler: 'external', gate: { mode: 'manual', rate: 1000 } });
    const late = await join('w-late-block', 'late-bad');
    expect((await call('PUT', '/v1/items/w-late-block/blocks/late-bad')).status).toBe(200);
    await open(page, `${daemon.url}/wait/${late}`);
    await expect.poll(() => page.textContent('#status')).toBe('You are in line');
    expect(await pull('w-late-block', 1)).toEqual([]);
    await expect.poll(() => page.textContent('#status'), { timeout: 10_000 }).toBe('This account may not take part in this sale.');
    expect((await call('GET', `/v1/tickets/${late}`, undefined, null)).body.outcome).toMatchObject({ status: 'rejected', reason: 'blocked' });
    await page.close();
  });

  it('tells a buyer whose reservation was released so, and that they may join again', async () => {
    const { id, page } = await returningItem('w-released', 'late-payer');
    // The ended view a ticket run again after its order's release reads (docs/api.md, Reservations).
    const view = { ticketId: id, itemId: 'w-released', userId: 'late-payer', state: 'rejected', outcome: { status: 'rejected', reason: 'reservation_released' }, createdAt: '', updatedAt: '' };
    await page.route('**/events', (r) => r.fulfill({ status: 200, contentType: 'text/event-stream', body: `event: ticket\ndata: ${JSON.stringify(view)}\n\n` }));
    await open(page, `${daemon.url}/wait/${id}`);
    await expect.poll(() => page.textContent('#status')).toBe('Your reservation was released (not paid in time, or released by the shop). You may join the line again.');
    await page.close();
  });

  it('sends an admitted user to the item returnUrl (passing the admission token when the ticket has one)', async () => {
    const { id, page } = await returningItem('w-go', 'goer');
    await open(page, `${daemon.url}/wait/${id}?lang=en`);
    await expect.poll(() => page.textContent('#status')).toBe('You are in line');
    await pull('w-go', 1);
    await page.waitForURL((u) => u.pathname === '/healthz', { timeout: 10_000 });
    expect(new URL(page.url()).searchParams.get('from')).toBe('wait');
    await page.close();
  });

  it('passes the ticket view admissionToken on as ?admission=', async () => {
    const { id, page } = await returningItem('w-tok', 'tok');
    // The admitted view as a daemon that issues admission tokens sends it.
    const view = { ticketId: id, itemId: 'w-tok', userId: 'tok', state: 'admitted', pollAfterMs: 1000, admissionToken: 'eyJ.test.sig', createdAt: '', updatedAt: '' };
    await page.route('**/events', (r) => r.fulfill({ status: 200, contentType: 'text/event-stream', body: `event: ticket\ndata: ${JSON.stringify(view)}\n\n` }));
    await open(page, `${daemon.url}/wait/${id}`);
    await page.waitForURL((u) => u.pathname === '/healthz', { timeout: 10_000 });
    expect(new URL(page.url()).searchParams.get('admission')).toBe('eyJ.test.sig');
    await page.close();
  });

  it('joins from an invite after solving the proof of work in a Web Worker, and a replayed invite shows the same ticket', async () => {
    await call('PUT', '/v1/items/w-inv', { handler: 'external', gate: { mode: 'closed' }, pow: { difficulty: 12 }, waitingRoom: { title: 'Invite only' } });
    const { url } = (await call('POST', '/v1/items/w-inv/invites', { userId: 'invited', ttlMs: 60_000 }, SVC)).body;
    const page = await context!.newPage();
    const workers: string[] = [];
    page.on('worker', (w) => workers.push(w.url()));
    await open(page, daemon.url + url + '&lang=en');
    await page.waitForURL((u) => u.pathname.startsWith('/wait/'), { timeout: 20_000 });
    const ticketId = decodeURIComponent(new URL(page.url()).pathname.slice('/wait/'.length));
    await expect.poll(() => page.textContent('h1')).toBe('Invite only');
    await expect.poll(() => page.textContent('#place')).toContain('Your place in line: 1');
    expect(workers.some((w) => /pow-worker\.[0-9a-f]+\.js$/.test(w))).toBe(true);
    expect((await call('GET', `/v1/tickets/${ticketId}`, undefined, null)).body.userId).toBe('invited');
    await open(page, daemon.url + url);
    await page.waitForURL((u) => u.pathname === `/wait/${ticketId}` || u.pathname === `/wait/${encodeURIComponent(ticketId)}`, { timeout: 20_000 });
    await open(page, `${daemon.url}/join/w-inv?invite=forged.sig&lang=en`);
    await expect.poll(() => page.textContent('#note')).toBe('This invitation is not valid.');
    await screenshot(page, 'join-refused');
    await page.close();
  });

  it("joins a pre-queue when it takes joins (details.joinsFrom), not at the opening after the draw", async () => {
    await call('PUT', '/v1/items/w-preq', { handler: 'external', gate: { mode: 'closed' } });
    const { url } = (await call('POST', '/v1/items/w-preq/invites', { userId: 'early-bird', ttlMs: 60_000 }, SVC)).body;
    const page = await context!.newPage();
    // The first join is refused as a pre-queue's before its joins open: the opening an hour on,
    // joins taken 2 s on. (Before: the page waited for the opening, at most a minute at a time,
    // and joined after the draw, behind users who came later.)
    let refused = 0;
    await page.route('**/v1/join', (r) => {
      if (refused++) return r.continue();
      const now = Date.now();
      const details = { opensAt: new Date(now + 3_600_000).toISOString(), now: new Date(now).toISOString(), joinsFrom: new Date(now + 2000).toISOString() };
      return r.fulfill({ status: 425, contentType: 'application/json', body: JSON.stringify({ error: { code: 'not_open', message: 'The sale has not opened yet.', details } }) });
    });
    const opened = Date.now();
    await open(page, daemon.url + url + '&lang=en');
    await page.waitForURL((u) => u.pathname.startsWith('/wait/'), { timeout: 20_000 });
    expect(refused).toBe(2);
    expect(Date.now() - opened).toBeLessThan(20_000);
    await page.close();
  });

  it("tells a blocked user that they may not join, not that their valid invite is invalid", async () => {
    await call('PUT', '/v1/items/w-blocked', { handler: 'external', gate: { mode: 'closed' } });
    const { url } = (await call('POST', '/v1/items/w-blocked/invites', { userId: 'bad-guy', ttlMs: 60_000 }, SVC)).body;
    expect((await call('PUT', '/v1/items/w-blocked/blocks/bad-guy')).status).toBe(200);
    const page = await context!.newPage();
    await open(page, daemon.url + url + '&lang=en');
    await expect.poll(() => page.textContent('#note')).toBe('This account may not join this sale.');
    await page.close();
  });

  it('keeps trying through 503s at the join, with the solution it has, as Retry-After asks', async () => {
    await call('PUT', '/v1/items/w-busy', { handler: 'external', gate: { mode: 'closed' }, pow: { difficulty: 8 } });
    const { url } = (await call('POST', '/v1/items/w-busy/invites', { userId: 'patient', ttlMs: 60_000 }, SVC)).body;
    const page = await context!.newPage();
    const sent: string[] = [];
    let challenges = 0;
    page.on('response', (r) => r.url().endsWith('/challenge') && r.status() === 200 && challenges++);
    // The daemon is "busy" twice (as it is when Redis stalls at the opening second), then answers
    // (and on a busy machine its own 503s are asked again the same way).
    await page.route('**/v1/join', async (r) => {
      sent.push(r.request().postData() ?? '');
      if (sent.length <= 2) return r.fulfill({ status: 503, headers: { 'retry-after': '1' }, contentType: 'application/json', body: '{"error":{"code":"unavailable","message":"busy"}}' });
      return r.continue();
    });
    await open(page, daemon.url + url + '&lang=en');
    await expect.poll(() => page.textContent('#status')).toBe('Very busy right now, trying again…');
    await page.waitForURL((u) => u.pathname.startsWith('/wait/'), { timeout: 20_000 });
    expect(sent.length).toBeGreaterThanOrEqual(3);
    expect(new Set(sent).size).toBe(1);
    expect(challenges).toBe(1);
    const ticketId = decodeURIComponent(new URL(page.url()).pathname.slice('/wait/'.length));
    expect((await call('GET', `/v1/tickets/${ticketId}`, undefined, null)).body.userId).toBe('patient');
    await page.close();
  });

  it('polls as Retry-After asks when the daemon answers 503, and says it is busy', async () => {
    await call('PUT', '/v1/items/w-slow', { handler: 'external', gate: { mode: 'closed' } });
    const mine = await join('w-slow', 'slow');
    const page = await context!.newPage();
    await page.route('**/events', (r) => r.abort());
    // A poll answered "busy, come back in 3 s", then the daemon's own answers.
    const polls: number[] = [];
    await page.route(`**/v1/tickets/${encodeURIComponent(mine)}`, async (r) => {
      polls.push(Date.now());
      if (polls.length === 1) return r.fulfill({ status: 503, headers: { 'retry-after': '3' }, contentType: 'application/json', body: '{"error":{"code":"unavailable","message":"busy"}}' });
      return r.continue();
    });
    await open(page, `${daemon.url}/wait/${mine}`);
    await expect.poll(() => page.textContent('#mode')).toBe('Very busy right now, trying again…');
    await expect.poll(() => page.textContent('#place'), { timeout: 20_000 }).toContain('Your place in line: 1');
    // 3 s less the 20% spread; the page's own rhythm after an error was 2 s.
    expect(polls[1] - polls[0]).toBeGreaterThanOrEqual(2_400);
    await expect.poll(() => page.textContent('#mode')).toBe('Updating every few seconds');
    await page.close();
  });

  it('backs off through an outage whose every 503 says Retry-After: 1, instead of asking every second', { timeout: 40_000 }, async () => {
    await call('PUT', '/v1/items/w-outage', { handler: 'external', gate: { mode: 'closed' } });
    const mine = await join('w-outage', 'outage');
    const page = await context!.newPage();
    await page.route('**/events', (r) => r.abort());
    const polls: number[] = [];
    await page.route(`**/v1/tickets/${encodeURIComponent(mine)}`, async (r) => {
      polls.push(Date.now());
      if (polls.length <= 4) return r.fulfill({ status: 503, headers: { 'retry-after': '1' }, contentType: 'application/json', body: '{"error":{"code":"unavailable","message":"busy"}}' });
      return r.continue();
    });
    await open(page, `${daemon.url}/wait/${mine}`);
    await expect.poll(() => page.textContent('#place'), { timeout: 30_000 }).toContain('Your place in line: 1');
    // 1 s doubling (±20%): the fourth ask comes ≥ 3.2 s after the third (before: ~1 s, every time).
    expect(polls[3] - polls[2]).toBeGreaterThanOrEqual(3_200);
    expect(polls[4] - polls[3]).toBeGreaterThanOrEqual(6_400);
    await page.close();
  });

  it('shows a 404 page for ids it did not issue, with a strict CSP and no inline script', async () => {
    for (const id of ['nope', 'YQ.1.AAAAAAAAAAAAAAAAAAAAAA', 'x'.repeat(2000), '%3Cscript%3E']) {
      const res = await get(`${daemon.url}/wait/${id}`);
      expect(res.status).toBe(404);
      const html = await res.text();
      expect(html).toContain('404');
      expect(html).not.toMatch(/at .*\.ts:\d+/);
    }
    await call('PUT', '/v1/items/w-csp', { handler: 'external' });
    const res = await get(`${daemon.url}/wait/${await join('w-csp', 'u')}`);
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
    const html = await res.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(html).not.toMatch(/https?:\/\//);
    const ev = await get(`${daemon.url}/v1/tickets/${await join('w-csp', 'u2')}/events`, { headers: { origin: 'https://shop.example' } });
    expect(ev.headers.get('content-type')).toContain('text/event-stream');
    expect(ev.headers.get('access-control-allow-origin')).toBe('*');
    await ev.body?.cancel();
    const asset = /src="(\/assets\/wait\.[0-9a-f]+\.js)"/.exec(html)![1];
    const js = await get(daemon.url + asset);
    expect(js.headers.get('cache-control')).toContain('immutable');
  });
});
