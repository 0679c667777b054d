import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { FloodgateError } from '../kernel/errors.js';

/**
 * Request bodies over `maxBytes` get 413 payload_too_large. hono's bodyLimit wraps every request
 * body in a counting stream, which on @hono/node-server forces a full Request object and cost about
 * two thirds of the throughput of a small JSON POST (and of GETs) in our benchmark. A declared
 * Content-Length is checked for free here; only a body without one (chunked) goes through the
 * counting stream.
 */
export function limitBody(maxBytes: number): MiddlewareHandler {
  const tooLarge = () => {
    throw new FloodgateError('payload_too_large', `The request body is over ${maxBytes} bytes.`);
  };
  const streaming = bodyLimit({ maxSize: maxBytes, onError: tooLarge });
  return async (c, next) => {
    // (DELETE too: it takes no body, and api/no-body.ts reads one to refuse it — 300 MiB unbounded, ~1 GB of memory.)
    if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    const declared = c.req.header('content-length');
    if (declared !== undefined) {
      if (Number(declared) > maxBytes) tooLarge();
      return next();
    }
    return streaming(c, next);
  };
}
