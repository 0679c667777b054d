import { inProcessDaemon, SVC } from './daemon-inproc.js';
import { testDb } from './db.js';
import { hasChromium, launchBrowser, sharedContext } from './browser.js';
import { fetchPast503, retrying503 } from './joins.js';
import { testRedis } from './redis.js';

/**
 * What the browser tests of the pages share: a daemon of their own (its own prefix and database),
 * its client asking again on a 503, a Chromium and one context for the file's pages (null where
 * Chromium is missing), a plain fetch past 503s, the join and pull the pages' tickets come from,
 * and the daemon's Redis client and prefix (to take its data away, as a fault does).
 */
export async function browserDaemon() {
  const { redis, newPrefix } = testRedis();
  const prefix = newPrefix();
  const db = await testDb();
  const { daemon, call: callOnce } = await inProcessDaemon({ prefix, databaseUrl: db.url });
  const call = retrying503(callOnce);
  const browser = hasChromium ? await launchBrowser() : null;
  const context = browser ? await sharedContext(browser) : null;
  const join = async (item: string, userId: string) => (await call('POST', `/v1/items/${item}/tickets`, { userId }, SVC)).body.ticketId as string;
  const pull = async (item: string, max: number) => (await call('POST', `/v1/items/${item}/pull`, { max }, SVC)).body.tickets as { ticketId: string; leaseId: string }[];
  return { db, daemon, call, browser, context, get: fetchPast503, join, pull, redis, prefix };
}
