/**
 * One error class and one catalogue for every failure that crosses a module boundary.
 * The catalogue fixes each code's HTTP status (docs/api.md) so the API's onError never guesses.
 */
export const errorCatalogue = {
  invalid_request: 400,
  unauthorized: 401,
  forbidden: 403,
  blocked: 403,
  pow_required: 403,
  item_not_found: 404,
  ticket_not_found: 404,
  not_found: 404,
  method_not_allowed: 405,
  not_cancellable: 409,
  lease_lost: 409,
  conflict: 409,
  reservation_expired: 409,
  sold_out: 410,
  closed: 410,
  payload_too_large: 413,
  unsupported_media_type: 415,
  not_open: 425,
  queue_full: 429,
  rate_limited: 429,
  unavailable: 503,
  internal: 500,
} as const;

export type ErrorCode = keyof typeof errorCatalogue;

export class FloodgateError extends Error {
  readonly status: number;
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;
  /** Seconds a client should wait before retrying (sets Retry-After). */
  readonly retryAfterSec?: number;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, retryAfterSec?: number) {
    // These are answers, not bugs: a stack trace is never shown, and capturing one made a
    // rejection (429 queue_full under a flood) measurably dearer.
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message);
    Error.stackTraceLimit = limit;
    this.name = 'FloodgateError';
    this.code = code;
    this.details = details;
    this.retryAfterSec = retryAfterSec;
    this.status = errorCatalogue[code];
  }
}

export const fail = (
  code: ErrorCode,
  message: string,
  details?: Record<string, unknown>,
  retryAfterSec?: number,
): never => {
  throw new FloodgateError(code, message, details, retryAfterSec);
};
