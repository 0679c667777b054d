import { Redis } from 'ioredis';
import { withTimeout } from '../kernel/wait.js';

export const REDIS_HOST = '127.0.0.1';
/** How long a socket may take to open: nothing listening is refused at once, a dropped SYN waits this long. */
const CONNECT_TIMEOUT_MS = 500;
/**
 * How long something that accepted the socket may take to answer: a Redis on a machine at load 17
 * took over 500 ms (a test run's setup called it "not a usable Redis"); a server that is not Redis
 * never answers, and is named after this wait.
 */
const REPLY_TIMEOUT_MS = 5000;

/** `pong`: a usable Redis; `refused`: nothing listens; `other`: something listens that is not a usable Redis. */
export type RedisProbe = { state: 'pong' } | { state: 'refused' } | { state: 'other'; error: string };

export async function probeRedis(port: number): Promise<RedisProbe> {
  const client = new Redis({
    host: REDIS_HOST,
    port,
    lazyConnect: true,
    connectTimeout: CONNECT_TIMEOUT_MS,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
  // The socket-level 'connect' event tells "nothing listens" apart from "something listens but is not a usable Redis".
  let connected = false;
  client.on('connect', () => (connected = true));
  // Without a listener ioredis reports connection errors as unhandled 'error' events.
  client.on('error', () => {});
  try {
    await withTimeout(client.connect(), REPLY_TIMEOUT_MS, `no handshake reply within ${REPLY_TIMEOUT_MS} ms`);
    const reply = await withTimeout(client.ping(), REPLY_TIMEOUT_MS, `no PING reply within ${REPLY_TIMEOUT_MS} ms`);
    return reply === 'PONG' ? { state: 'pong' } : { state: 'other', error: `unexpected reply ${reply}` };
  } catch (err) {
    if (!connected) return { state: 'refused' };
    return { state: 'other', error: err instanceof Error ? err.message : String(err) };
  } finally {
    client.disconnect();
  }
}

/** The process id the Redis answering on `port` reports (INFO server), or null if it does not say. */
export async function redisProcessId(port: number): Promise<number | null> {
  const client = new Redis({ host: REDIS_HOST, port, lazyConnect: true, connectTimeout: CONNECT_TIMEOUT_MS, maxRetriesPerRequest: 0, retryStrategy: () => null, enableOfflineQueue: false });
  client.on('error', () => {});
  try {
    await withTimeout(client.connect(), REPLY_TIMEOUT_MS, `no handshake reply within ${REPLY_TIMEOUT_MS} ms`);
    const info = await withTimeout(client.info('server'), REPLY_TIMEOUT_MS, `no INFO reply within ${REPLY_TIMEOUT_MS} ms`);
    const m = /^process_id:(\d+)\r?$/m.exec(info);
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  } finally {
    client.disconnect();
  }
}
