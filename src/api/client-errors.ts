import type { Server } from 'node:http';
import type { Duplex } from 'node:stream';

/**
 * Requests Node's HTTP parser refuses before any handler sees them — a malformed request line or
 * header, an unknown method, headers past the size limit (16 KiB), a bad chunk — were answered with
 * Node's bare `400`/`431` and no body. They get the contract's JSON error instead (docs/api.md,
 * Errors: `400 invalid_request`), and the connection is closed, as Node does (the parser's state is
 * lost). Headers too large keep their own status, 431, with the same body shape.
 */
export function answerClientErrors<S extends Server>(server: S): S {
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    // Gone already, or a request that timed out: nothing to say to it.
    if (err.code === 'ECONNRESET' || err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || !socket.writable) return void socket.destroy();
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
    const body = JSON.stringify({
      error: { code: 'invalid_request', message: tooLarge ? 'The request line or headers are too large (16 KiB at most).' : 'The request is not valid HTTP.' },
    });
    socket.end(
      `HTTP/1.1 ${tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\n` +
        `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n${body}`,
    );
  });
  return server;
}
