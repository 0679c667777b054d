import { Redis } from 'ioredis';
import { withTimeout } from '../kernel/wait.js';

export const REDIS_HOST = '127.0.0.1';
const PROBE_TIMEOUT_MS = 500;

/** `pong`: a usable Redis; `refused`: nothing listens; `other`: something listens that is not a usable Redis. */
export type RedisProbe = { state: 'pong' } | { state: 'refused' } | { state: 'other'; error: string };

export async function probeRedis(port: number): Promise<RedisProbe> {
  const client = new Redis({
    host: REDIS_HOST,
    port,
    lazyConnect: true,
    connectTimeout: PROBE_TIMEOUT_MS,
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
    await withTimeout(client.connect(), PROBE_TIMEOUT_MS, 'no handshake reply within 500 ms');
    const reply = await withTimeout(client.ping(), PROBE_TIMEOUT_MS, 'no PING reply within 500 ms');
    return reply === 'PONG' ? { state: 'pong' } : { state: 'other', error: `unexpected reply ${reply}` };
  } catch (err) {
    if (!connected) return { state: 'refused' };
    return { state: 'other', error: err instanceof Error ? err.message : String(err) };
  } finally {
    client.disconnect();
  }
}
