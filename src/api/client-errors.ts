import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { RequestError } from '@hono/node-server';

/**
 * Requests Node's HTTP parser refuses before any handler sees them — a malformed request line or
 * header, an unknown method, headers past the size limit (16 KiB), a bad chunk — were answered with
 * Node's bare `400`/`431` and no body. They get the contract's JSON error instead (docs/api.md,
 * Errors: `400 invalid_request`), and the connection is closed, as Node does (the parser's state is
 * lost). Headers too large keep their own status, 431, with the same body shape.
 */
/** The start of a connection's first bytes, while it has served no request: its first request's method. */
const firstBytes = new WeakMap<Duplex, string>();
/** Requests of a connection not answered yet (finished or closed); the event a connection emits as each is. */
const owed = new WeakMap<Duplex, Set<IncomingMessage>>();
const ANSWERED = 'floodgate:answered';
/** Connections whose refusal is decided (written, or waiting for the answers before it): Node reports an error for every chunk that follows. */
const refusing = new WeakSet<Duplex>();

export function answerClientErrors<S extends Server>(server: S): S {
  // A request the parser refuses may come in several chunks (headers past the limit, over a real
  // network), and its error's packet is the last one: the method is read from the connection's first.
  server.on('connection', (socket: Duplex) => socket.prependOnceListener('data', (chunk: Buffer) => firstBytes.set(socket, chunk.subarray(0, 5).toString('latin1'))));
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    firstBytes.delete(req.socket);
    if (res.writableFinished) return;
    const socket = req.socket;
    const reqs = owed.get(socket) ?? new Set<IncomingMessage>();
    owed.set(socket, reqs.add(req));
    const answered = () => {
      if (reqs.delete(req) && refusing.has(socket)) socket.emit(ANSWERED);
    };
    res.once('finish', answered).once('close', answered);
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // Gone already, or a request that timed out: nothing to say to it.
    if (err.code === 'ECONNRESET' || err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || !socket.writable) return void socket.destroy();
    // Decided at the first error: nothing after it is read (each later chunk was an error of its
    // own, and each added a refusal: listeners piling up behind an open event stream, a review).
    if (refusing.has(socket)) return;
    refusing.add(socket);
    socket.pause();
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
    // A HEAD request gets the headers alone: a body after them broke the client's framing (Node's
    // own client read "Data after Connection: close" instead of the 431).
    // (The connection's first request, read from its first bytes; a later one, from the packet.)
    const first = firstBytes.get(socket);
    const head = (first ?? (err as { rawPacket?: Buffer }).rawPacket?.subarray(0, 5).toString('latin1')) === 'HEAD ';
    const refuse = () => {
      if (socket.writable) socket.end(rawAnswer(tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request', tooLarge ? 'The request line or headers are too large (16 KiB at most).' : 'The request is not valid HTTP.', head));
      else socket.destroy();
    };
    // After the answers the connection owes to whole requests before it (pipelined in the same
    // packet): written at once, the refusal took the place of the first one's answer — a valid join
    // followed by garbage took effect and its client read the 400 as its answer (a review). Not
    // after one that has not had all its body: the error is in that body (a bad chunk, the client
    // gone mid-body), which comes no further, and that request waits on the close.
    const before = owed.get(socket);
    const whole = () => !!before && [...before].some((r) => r.complete);
    if (!whole()) return refuse();
    const onAnswered = () => {
      if (whole()) return;
      socket.off(ANSWERED, onAnswered);
      refuse();
    };
    socket.on(ANSWERED, onAnswered);
  });
  // Node's own answers to these had no body either: an `Expect` other than 100-continue (417), and
  // CONNECT (no answer at all: the socket was closed). (A missing Host: refusedWithoutHost.)
  server.on('checkExpectation', (_req: IncomingMessage, res: ServerResponse) => {
    res.shouldKeepAlive = false;
    jsonError(res, 417, 'Only "Expect: 100-continue" is understood.');
  });
  server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
    if (socket.writable) socket.end(rawAnswer('400 Bad Request', 'CONNECT is not served here.'));
    else socket.destroy();
  });
  return server;
}

/** The contract's JSON error on a bare socket, closing it. */
function rawAnswer(status: string, message: string, head = false): string {
  const body = errorBody(message);
  return `HTTP/1.1 ${status}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${head ? '' : body}`;
}

const errorBody = (message: string) => JSON.stringify({ error: { code: 'invalid_request', message } });

function jsonError(res: ServerResponse, status: number, message: string) {
  const body = errorBody(message);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
  res.end(body);
}

/**
 * An HTTP/1.1 request without a Host header, answered `400` with the JSON error (the server is
 * made with `requireHostHeader: false`, so Node's bare `400` does not come first). Returns whether
 * it answered.
 */
export function refusedWithoutHost(req: IncomingMessage, res: ServerResponse): boolean {
  if (req.headers.host !== undefined || req.httpVersionMajor !== 1 || req.httpVersionMinor !== 1) return false;
  res.shouldKeepAlive = false;
  jsonError(res, 400, 'An HTTP/1.1 request needs a Host header.');
  return true;
}

/** A `.` or `..` path segment, as typed or percent-encoded (`%2e`, in either case, as WHATWG URLs read it), in the path (before any `?` or `#`, which no request should hold). */
const DOT_SEGMENT = /^[^?#]*\/(?:\.|%2e){1,2}(?=[/?#]|$)/i;

/**
 * A request whose path has a dot segment, answered `400` with the JSON error. The URL parser
 * resolves them before the request is routed, so `/v1/items/%2e%2e/blocks/u1` reached the global
 * block of u1 (`/v1/blocks/u1`: 200, every item), and a ticket's cancel URL closed an item (a
 * review's fuzzing): no name of the API is `.` or `..`, so a path holding one is refused whole.
 * Returns whether it answered.
 */
export function refusedDotSegment(req: IncomingMessage, res: ServerResponse): boolean {
  if (!DOT_SEGMENT.test(req.url ?? '')) return false;
  jsonError(res, 400, 'A path segment may not be "." or ".." (as typed or percent-encoded).');
  return true;
}

/**
 * What @hono/node-server cannot make a request of (a backslash in the path, a bad Host, an absolute
 * URL of another scheme): its own answer was a bare `400` with no body.
 */
export function unservableRequest(err: unknown): Response {
  const refused = err instanceof RequestError;
  const body = refused ? errorBody('The request URL or Host cannot be read.') : JSON.stringify({ error: { code: 'internal', message: 'Internal error.' } });
  // (Closed after, as every answer to what HTTP itself refuses: docs/api.md.)
  return new Response(body, { status: refused ? 400 : 500, headers: { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-store', ...(refused ? { Connection: 'close' } : {}) } });
}
