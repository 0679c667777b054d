/**
 * A TCP proxy (test/support/proxy.ts) on a thread of its own, for a scenario that also generates
 * load: on the load generator's event loop, a retry storm (every join answered 503 at once while
 * Redis was silent, each buyer asking again) held the loop up to 3.5 s, and the proxy's new
 * connections then looked silent to the daemon, which gave them up in turn (chaos bench, 5 Dec:
 * joins refused ~30 s after a silence instead of ~3 s, in 4 runs of 9).
 */
import { Worker } from 'node:worker_threads';

export interface ProxyThread {
  readonly port: number;
  /** The URL given, through the proxy. */
  readonly url: string;
  cut(): Promise<void>;
  restore(): Promise<void>;
  silence(): Promise<void>;
  close(): Promise<void>;
}

type Op = 'start' | 'cut' | 'restore' | 'silence' | 'close';

export async function proxyThreadFor(url: string): Promise<ProxyThread> {
  const worker = new Worker(new URL('./ts-worker.mjs', import.meta.url), { workerData: { entry: new URL('./proxy-thread-main.ts', import.meta.url).href, url } });
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  let seq = 0;
  worker.on('message', (m: { id: number; value?: unknown; error?: string }) => {
    const p = pending.get(m.id);
    pending.delete(m.id);
    if (m.error) p?.reject(new Error(m.error));
    else p?.resolve(m.value);
  });
  worker.on('error', (err) => {
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  });
  const ask = <T>(op: Op) =>
    new Promise<T>((resolve, reject) => {
      const id = ++seq;
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      worker.postMessage({ id, op });
    });
  const started = await ask<{ port: number; url: string }>('start');
  return {
    port: started.port,
    url: started.url,
    cut: () => ask('cut'),
    restore: () => ask('restore'),
    silence: () => ask('silence'),
    async close() {
      await ask('close');
      await worker.terminate();
    },
  };
}
