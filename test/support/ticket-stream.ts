import { request, type ClientRequest } from 'node:http';
import net from 'node:net';
/**
 * Reads a ticket's event stream from an app (`app.request`, no port): `views` gathers each `ticket`
 * event's view, `next()` resolves with the next one, or null once the stream ended; `done` settles
 * when it ends.
 */
export function followTicket(app: { request(path: string): Response | Promise<Response> }, ticketId: string) {
  const res = Promise.resolve(app.request(`/v1/tickets/${ticketId}/events`));
  const views: any[] = [];
  let comments = 0;
  let ended = false;
  let wake = () => {};
  const done = (async () => {
    const r = await res;
    const reader = r.body!.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (block.startsWith(':')) comments++;
        const data = block.split('\n').find((l) => l.startsWith('data: '));
        if (block.includes('event: ticket') && data) views.push(JSON.parse(data.slice(6)));
        wake();
      }
    }
    ended = true;
    wake();
  })();
  let read = 0;
  return {
    res,
    done,
    views,
    comments: () => comments,
    async next(timeoutMs = 10_000): Promise<any> {
      const until = Date.now() + timeoutMs;
      while (read >= views.length && !ended && Date.now() < until) await new Promise<void>((r) => ((wake = r), setTimeout(r, 50)));
      return read < views.length ? views[read++] : null;
    },
  };
}

/**
 * A user's browser following a ticket's event stream on one daemon over a connection of its own
 * (node:http, no pooled agent: a daemon stopping or killed closes exactly this connection):
 * every view it was told, `first` once the first came, `ended` once the stream closed or broke.
 * The request is pushed onto `open` for the file's teardown to destroy.
 */
export function watchOverHttp(base: string, ticketId: string, open: ClientRequest[]) {
  const views: any[] = [];
  let buf = '';
  let told!: () => void;
  const first = new Promise<void>((r) => (told = r));
  const ended = new Promise<void>((resolve) => {
    const req = request(`${base}/v1/tickets/${ticketId}/events`, { agent: false, headers: { accept: 'text/event-stream' } }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        for (let i; (i = buf.indexOf('\n\n')) >= 0; ) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = block.split('\n').find((l) => l.startsWith('data: '));
          if (block.includes('event: ticket') && data) views.push(JSON.parse(data.slice(6)));
        }
        if (views.length) told();
      });
      res.on('close', () => resolve());
      res.on('error', () => resolve());
    });
    req.on('error', () => resolve());
    req.end();
    open.push(req);
  });
  return { views, first, ended };
}

/**
 * One stream read off a raw socket, as a browser's EventSource gets it: every byte until the server
 * closes (`closed` settles then; a socket error is kept in `error()`).
 */
export function rawTicketStream(baseUrl: string, ticketId: string) {
  const url = new URL(baseUrl);
  const sock = net.connect(Number(url.port), url.hostname);
  sock.write(`GET /v1/tickets/${ticketId}/events HTTP/1.1\r\nHost: ${url.host}\r\nAccept: text/event-stream\r\n\r\n`);
  let text = '';
  let error: Error | null = null;
  sock.setEncoding('utf8');
  sock.on('data', (s: string) => (text += s));
  sock.on('error', (err) => (error = err));
  const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
  return { text: () => text, closed, sock, error: () => error };
}
