import { ErrorBody } from './schemas.js';

const err = (description: string) => ({ content: { 'application/json': { schema: ErrorBody } }, description });

/** The error responses every route may give (see API.md, Errors). */
export const errorResponses = {
  400: err('invalid_request'),
  401: err('unauthorized'),
  403: err('forbidden'),
  404: err('item_not_found / ticket_not_found'),
  409: err('conflict / lease_lost / not_cancellable'),
  410: err('sold_out / closed'),
  413: err('payload_too_large'),
  425: err('not_open'),
  429: err('queue_full / rate_limited'),
  503: err('unavailable'),
} as const;
