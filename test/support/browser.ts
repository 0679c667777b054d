import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll } from 'vitest';
import type { Browser, Page } from 'playwright-core';

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
