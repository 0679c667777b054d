import { FloodgateError } from '../kernel/errors.js';

/** The one place where the Lua scripts' integer codes become errors. */
const joinCodes: Record<number, () => FloodgateError> = {
  [-1]: () => new FloodgateError('item_not_found', 'No such item.'),
  [-2]: () => new FloodgateError('not_open', 'The sale has not opened yet.'),
  [-3]: () => new FloodgateError('closed', 'The item is closed.'),
  [-4]: () => new FloodgateError('sold_out', 'The item is sold out.'),
  [-5]: () => new FloodgateError('queue_full', 'The line is full; try again later.', undefined, 5),
  [-6]: () => new FloodgateError('blocked', 'This user is blocked for this item.'),
};

const ticketCodes: Record<number, () => FloodgateError> = {
  [-1]: () => new FloodgateError('ticket_not_found', 'No such ticket.'),
  [-2]: () => new FloodgateError('lease_lost', 'The lease expired or was superseded.'),
  [-3]: () => new FloodgateError('conflict', 'A different outcome was already written under this lease.'),
};

export function joinError(code: number): FloodgateError {
  return (joinCodes[code] ?? (() => new FloodgateError('internal', `join returned ${code}`)))();
}

/** A join over a quota (-7): Retry-After in whole seconds, at least 1. */
export function quotaError(waitMs: number, quota: string): FloodgateError {
  const retryAfterSec = Math.max(1, Math.ceil(waitMs / 1000));
  return new FloodgateError('rate_limited', `Too many joins (${quota} quota); try again later.`, { quota, retryAfterSec }, retryAfterSec);
}

export function settleError(code: number): FloodgateError {
  return (ticketCodes[code] ?? (() => new FloodgateError('internal', `settle returned ${code}`)))();
}

export function cancelError(code: number): FloodgateError {
  if (code === -2) return new FloodgateError('not_cancellable', 'Only a waiting ticket can be cancelled.');
  return settleError(code);
}
