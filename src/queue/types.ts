export const ticketStates = ['waiting', 'admitted', 'succeeded', 'rejected', 'failed', 'cancelled', 'expired'] as const;
export type TicketState = (typeof ticketStates)[number];
/** extend-leases-3.lua's answer per ticket: 0 superseded, 1 extended, 2 extended and admitted before (an earlier run's outcome unknown). */
export type LeaseHeld = 0 | 1 | 2;

export type OutcomeStatus = 'succeeded' | 'rejected' | 'failed' | 'cancelled' | 'expired';

export interface Outcome {
  status: OutcomeStatus;
  result?: unknown;
  reason?: string;
}

export interface TicketView {
  ticketId: string;
  itemId: string;
  userId: string;
  state: TicketState;
  /** null for a pre-queued ticket before the draw. */
  position?: number | null;
  /** When a pre-queued ticket's place is drawn (opensAt), until it is. */
  drawAt?: string;
  etaMs?: number;
  pollAfterMs?: number;
  /** Why a waiting ticket is not moving: not_open, paused, awaiting_returns. */
  reason?: string;
  /** With reason awaiting_returns: what holds the units, reservations or sales still running (views.ts). */
  returnsFrom?: 'reservations' | 'sales';
  outcome?: Outcome;
  createdAt: string;
  updatedAt: string;
  admittedAt?: string;
  /** The name of the key that created the ticket (operators only). */
  source?: string;
  /** A signed token for admitted and succeeded tickets (tokens/). */
  admissionToken?: string;
}

export type GateMode = 'auto' | 'manual' | 'closed';

export interface GateSettings {
  mode: GateMode;
  /** Tickets per second; null = no rate cap. */
  rate: number | null;
  /** Admitted-but-unsettled tickets; null = no cap. */
  maxInFlight: number | null;
}

/** What the line needs to know of an item; the durable definition lives in Postgres. */
/**
 * May a user whose earlier ticket ended join again? 'any': after any end; 'unless_succeeded': not
 * after a success (their join is answered that ticket, 200); 'unless_succeeded:N': not after N
 * successes (a coupon's perUser N).
 */
export type Rejoin = 'any' | 'unless_succeeded' | `unless_succeeded:${number}`;

/** The Rejoin a stored string names ('any' for anything else). */
export const rejoinOf = (s: string | undefined): Rejoin => (s === 'unless_succeeded' || /^unless_succeeded:[1-9]\d{0,5}$/.test(s ?? '') ? (s as Rejoin) : 'any');

export interface LineDefinition {
  itemId: string;
  handler: string;
  config: Record<string, unknown>;
  capacity: number | null;
  abandonAfterMs: number | null;
  opensAt: number | null;
  closesAt: number | null;
  /** May a user whose earlier ticket ended join again (Rejoin)? */
  rejoin: Rejoin;
  /** Join quotas (all attempts counted, across daemons); null = none set. */
  quotas?: Quotas | null;
  /** Lifetime of admission tokens (ms); null = the default. */
  tokenTtlMs?: number | null;
  /** Joins are accepted this long before opensAt, into a pre-queue drawn at opensAt; null = none. */
  preQueueFromMs?: number | null;
  /** What the waiting page shows and where it sends an admitted user (null: no title, no redirect). */
  waitingRoom?: WaitingRoom | null;
  /** Proof of work asked of users who join with an invite (null: none). */
  pow?: { difficulty: number } | null;
  /** Sub-lines the line is split into (queue/split-line.ts); 1 or absent: one line. */
  lines?: number;
}

/** Lifetime of admission tokens where the item sets none (API.md). */
export const DEFAULT_TOKEN_TTL_MS = 600_000;

export interface Quota {
  limit: number;
  windowMs: number;
}
export interface Quotas {
  perUser?: Quota;
  perKey?: Quota;
}

export interface WaitingRoom {
  title: string;
  returnUrl?: string | null;
}

export const counterNames = ['waiting', 'admitted', 'succeeded', 'rejected', 'failed', 'cancelled', 'expired'] as const;
export type Counts = Record<(typeof counterNames)[number], number>;

export interface AdmittedTicket {
  ticketId: string;
  seq: number;
  itemId: string;
  userId: string;
  payload: Record<string, unknown> | null;
  position: number;
  leaseId: string;
  leaseExpiresAt: string;
  createdAt: number;
  /** Its record as stored at its seq, without the state character: who it is (SettleInput.record). */
  record: string;
}

/**
 * [last seq it ended, state char, reason, when, served before it (absent in cuts made before it
 * was recorded), tickets of its range it held in doubt instead (absent: none; cut-8.lua's `hold`)]:
 * see lua/_lib.lua, "cuts".
 */
export type Cut = [number, string, string, number, number?, number?];
