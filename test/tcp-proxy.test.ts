import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tcpProxy, type TcpProxy } from './support/proxy.js';

/** Connects, sends `msg`, resolves with the echo, or rejects with the socket's error code. */
function echoThrough(port: number, msg: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(msg));
    s.once('data', (d) => {
      s.end();
      resolve(d.toString());
    });
    s.once('error', (err) => reject(err));
  });
}

describe('the TCP proxy (chaos faults, Postgres fault tests)', () => {
  let echo: Server;
  let proxy: TcpProxy;
  const sockets = new Set<Socket>();

  beforeAll(async () => {
    echo = createServer((s) => {
      sockets.add(s);
      s.on('error', () => {}); // the proxy resets its upstream side when cut
      s.pipe(s);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    const addr = echo.address();
    proxy = await tcpProxy({ host: '127.0.0.1', port: typeof addr === 'object' && addr ? addr.port : 0 });
  });
  afterAll(async () => {
    await proxy.close();
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => echo.close(() => r()));
  });

  it('resets open connections and refuses new ones while cut, and carries traffic again once restored', async () => {
    expect(await echoThrough(proxy.port, 'before')).toBe('before');

    const open: Socket = connect(proxy.port, '127.0.0.1');
    await new Promise((r) => open.once('connect', r));
    const closed = new Promise<boolean>((r) => open.once('close', (hadError) => r(hadError)));
    open.on('error', () => {});
    await proxy.cut();
    expect(await closed).toBe(true);
    await expect(echoThrough(proxy.port, 'during')).rejects.toMatchObject({ code: 'ECONNREFUSED' });

    await proxy.restore();
    expect(await echoThrough(proxy.port, 'after')).toBe('after');
  });
});
