import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll } from 'vitest';
import type { Browser, BrowserContext, Page, Response } from 'playwright-core';

/** Debian's chromium; the browser tests are skipped (and say so) where it is not installed. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) console.warn(`browser tests skipped: no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);

/** One headless Chromium for the file, closed after it. */
export async function launchBrowser(): Promise<Browser> {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  afterAll(() => browser.close());
  return browser;
}

/**
 * One browser context for a file's pages, in English: each test opens a page of its own in it
 * rather than a context of its own (browser.newPage), which spares Chromium a profile per test.
 * The pages share cookies and local storage, which the waiting, join and console pages do not
 * use (sessionStorage, which they do, is per page); a test that needs another locale or a clean
 * profile makes its own context.
 */
export async function sharedContext(browser: Browser): Promise<BrowserContext> {
  const context = await browser.newContext({ locale: 'en-US' });
  afterAll(() => context.close());
  return context;
}

/** `page.goto` as a user loads a page: a `503` page (a busy machine) loaded again, every 200 ms for up to 30 s. */
export async function open(page: Page, url: string): Promise<Response | null> {
  const until = Date.now() + 30_000;
  for (;;) {
    const res = await page.goto(url);
    if (res?.status() !== 503 || Date.now() > until) return res;
    await new Promise((r) => setTimeout(r, 200));
  }
}

export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1280, height: 800 };

/**
 * Saves the page at desktop and phone width into docs/screenshots/ when FLOODGATE_SCREENSHOTS=1
 * (kept in the repo and shown in the README; a plain test run leaves the files alone).
 */
export async function screenshot(page: Page, name: string) {
  if (process.env.FLOODGATE_SCREENSHOTS !== '1') return;
  const dir = path.resolve(import.meta.dirname, '../../docs/screenshots');
  mkdirSync(dir, { recursive: true });
  const size = page.viewportSize();
  for (const [label, vp] of [['desktop', DESKTOP], ['phone', PHONE]] as const) {
    await page.setViewportSize(vp);
    await page.screenshot({ path: path.join(dir, `${name}-${label}.png`) });
  }
  if (size) await page.setViewportSize(size);
}
