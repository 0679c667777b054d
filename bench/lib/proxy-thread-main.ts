/** The proxy thread's side (bench/lib/proxy-thread.ts): one proxy, driven by messages. */
import { parentPort, workerData } from 'node:worker_threads';
import { proxyFor, type TcpProxy } from '../../test/support/proxy.js';

let proxy: TcpProxy | null = null;

parentPort!.on('message', async ({ id, op }: { id: number; op: 'start' | 'cut' | 'restore' | 'silence' | 'close' }) => {
  try {
    let value: unknown;
    if (op === 'start') {
      const started = await proxyFor((workerData as { url: string }).url);
      proxy = started.proxy;
      value = { port: proxy.port, url: started.url };
    } else if (op === 'silence') proxy!.silence();
    else await proxy![op]();
    parentPort!.postMessage({ id, value });
  } catch (err) {
    parentPort!.postMessage({ id, error: (err as Error).message });
  }
});
