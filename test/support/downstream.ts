import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { whenDone } from './cleanup.js';

/** A request as it came on the wire. */
export interface Seen {
  rawHeaders: string[];
  headers: IncomingMessage['headers'];
  body: string;
}

/** A webhook downstream on loopback that records every request and answers as `answer` says; closed after the file. */
export async function recordingDownstream(answer: (req: Seen, res: ServerResponse) => void) {
  const seen: Seen[] = [];
  const server: Server = createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    const s = { rawHeaders: req.rawHeaders, headers: req.headers, body };
    seen.push(s);
    answer(s, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  whenDone(() => {
    server.closeAllConnections();
    return new Promise((r) => server.close(r));
  });
  return { seen, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook` };
}
