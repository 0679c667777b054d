import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { http } from './support/http.js';

/**
 * The tests' HTTP helper itself: a call is failed by its own 60 s timer only. CI once failed a
 * GET as "no answer in 60 s" 33 s into its test: a new socket keeps the agent's 3 s idle timeout
 * until it has connected, and the request relayed that timeout as its own when the worker's event
 * loop was held for 3 s with the connect pending.
 */
describe('the tests’ HTTP helper', () => {
  const server = createServer((_req, res) => res.end('{"ok":true}'));
  let base = '';
  beforeAll(async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it("answers a call whose connect waited out the agent's idle timeout behind a busy event loop", async () => {
    // A port no socket of the pool has reached yet: the call connects anew.
    const call = http(base, 'GET', '/');
    const until = Date.now() + 3300;
    while (Date.now() < until); // the worker busy while the connect is pending
    expect(await call).toEqual({ status: 200, body: { ok: true } });
  });
});
