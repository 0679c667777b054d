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

  it('delays every chunk both ways and keeps them in order, through a busy event loop and a delay lowered mid-stream', async () => {
    const s = connect(proxy.port, '127.0.0.1');
    s.setNoDelay(true);
    await new Promise((r) => s.once('connect', r));
    const n = 3000;
    const sent = Array.from({ length: n }, (_, i) => `${i};`).join('');
    let got = '';
    const all = new Promise<void>((resolve) => s.on('data', (d) => (got += d.toString()).length >= sent.length && resolve()));
    proxy.delay(20);
    // Chunks written one by one across many turns of an event loop kept busy (the proxy's timers
    // are filed from the loop's cached time, which a busy turn leaves behind the clock).
    for (let i = 0; i < n; i++) {
      s.write(`${i};`);
      if (i % 10 === 0) {
        const t = Date.now();
        while (Date.now() - t < 1); // busy
        await new Promise((r) => setImmediate(r));
      }
      if (i === n / 2) proxy.delay(0); // later chunks may not overtake the held ones
    }
    await all;
    // Closed both ways before the file's end resets what is still open.
    const closed = new Promise((r) => s.once('close', r));
    s.end();
    await closed;
    expect(got).toBe(sent);
  });

  /** A client through the proxy whose first message came back: it, the server's end, what it heard, what the server had read. */
  async function echoedOnce() {
    const serverSide = new Promise<Socket>((r) => echo.once('connection', r));
    const a = connect(proxy.port, '127.0.0.1');
    a.on('error', () => {});
    await new Promise((r) => a.once('connect', r));
    const upstream = await serverSide;
    let heard = '';
    a.on('data', (d) => (heard += d.toString()));
    a.write('before');
    await new Promise<void>((r) => { const check = () => (heard === 'before' ? r() : a.once('data', check)); check(); });
    return { a, upstream, heard: () => heard, readBefore: upstream.bytesRead };
  }

  it('silences open connections both ways without closing either end, and lets new ones through', async () => {
    const { a, upstream, heard, readBefore } = await echoedOnce();

    proxy.silence();
    a.write('lost');
    // Each round trip on a new connection goes through the proxy's loop after A's chunk came in.
    expect(await echoThrough(proxy.port, 'new')).toBe('new');
    const aClosed = new Promise((r) => a.once('close', r));
    a.destroy();
    await aClosed;
    expect(await echoThrough(proxy.port, 'still')).toBe('still');
    expect(heard()).toBe('before');
    expect(upstream.bytesRead).toBe(readBefore);
    // The server never heard of the client's close: its end is open until the proxy closes.
    expect(upstream.destroyed || upstream.readableEnded).toBe(false);
  });

  it("drops the open connections' answers while their requests pass, and lets new ones through", async () => {
    const { a, upstream, heard, readBefore } = await echoedOnce();

    proxy.dropReplies();
    a.write('asked');
    await new Promise<void>((r) => { const check = () => (upstream.bytesRead > readBefore ? r() : upstream.once('data', check)); check(); });
    expect(await echoThrough(proxy.port, 'new')).toBe('new');
    // The server heard it (and echoed it); the client did not hear the echo.
    expect(upstream.bytesRead - readBefore).toBe('asked'.length);
    expect(heard()).toBe('before');
    a.destroy();
  });
});
