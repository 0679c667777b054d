import type { MiddlewareHandler } from 'hono';
import { FloodgateError } from '../kernel/errors.js';

/**
 * For an endpoint that takes no body, after its key is checked (a body is no reason to answer 400
 * before 401/403): a body is refused, not ignored — `PUT …/blocks/alice` with {"blocked":false}
 * blocked alice, and a close, a cancel and a key rotation went ahead under a body of any type. An
 * empty body, an empty object or `null` (what some clients send with every call) is none. The body
 * is already bounded (limitBody).
 */
export const noBody: MiddlewareHandler = async (c, next) => {
  const text = (await c.req.text()).trim();
  if (text !== '') {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      value = undefined;
    }
    const none = value === null || (typeof value === 'object' && !Array.isArray(value) && Object.keys(value as object).length === 0);
    if (!none) throw new FloodgateError('invalid_request', `${c.req.method} on this path takes no body.`);
  }
  await next();
};
