import type { Redis } from 'ioredis';
import { itemKeys, PAGE_SIZE } from './keys.js';
import type { ItemSnapshot } from './snapshot.js';
import { makeTicketId } from './ticket-id.js';
import type { Cut, OutcomeStatus } from './types.js';
import { parseRecord, stateOfChar } from './views.js';

/** A ticket that reached its terminal state, as the outcome ledger stores it. */
export interface EndedTicket {
  ticketId: string;
  itemId: string;
  userId: string;
  status: OutcomeStatus;
  reason: string | null;
  result: unknown;
  joinedAt: Date;
  admittedAt: Date | null;
  finishedAt: Date;
}

const GROUP = 'ledger';
const CLAIM_IDLE_MS = 30_000;

/**
 * Reads each item's `done` stream through a consumer group, so with many daemons every ended
 * ticket is delivered to one of them; entries a dead daemon left unacknowledged are claimed after
 * 30 s. A cut entry ({from, to}) is expanded here by reading the ticket pages of that range.
 */
export function createLedgerFeed(redis: Redis, prefix: string, consumer: string) {
  const grouped = new Set<string>();

  async function ensureGroup(key: string) {
    if (grouped.has(key)) return;
    try {
      await redis.xgroup('CREATE', key, GROUP, '0', 'MKSTREAM');
    } catch (err) {
      if (!String(err).includes('BUSYGROUP')) throw err;
    }
    grouped.add(key);
  }

  /** The tickets an entry stands for; null for a cut the snapshot does not know yet. */
  async function expand(snap: ItemSnapshot, fields: string[]): Promise<EndedTicket[] | null> {
    const f = Object.fromEntries(Array.from({ length: fields.length / 2 }, (_, i) => [fields[2 * i], fields[2 * i + 1]]));
    if (f.s && f.o !== undefined) {
      const rec = parseRecord(f.r, snap.epoch);
      const outcome = JSON.parse(f.o) as { status: OutcomeStatus; result?: unknown; reason?: string };
      return [row(snap, Number(f.s), rec.userId, rec.createdAt, outcome.status, outcome.reason ?? null, outcome.result ?? null, f.a || undefined, Number(f.f))];
    }
    const k = itemKeys(prefix, snap.def.itemId);
    if (f.s) {
      // An entry written before entries carried the outcome (a daemon of an earlier version).
      const seq = Number(f.s);
      const [record, x] = await Promise.all([redis.hget(`${k.base}t:${Math.floor(seq / PAGE_SIZE)}`, String(seq)), redis.hgetall(k.x(seq))]);
      if (!record || !x.outcome) return [];
      const rec = parseRecord(record, snap.epoch);
      const outcome = JSON.parse(x.outcome) as { status: OutcomeStatus; result?: unknown; reason?: string };
      return [row(snap, seq, rec.userId, rec.createdAt, outcome.status, outcome.reason ?? null, outcome.result ?? null, x.admittedAt, Number(x.finishedAt))];
    }
    const from = Number(f.from);
    const to = Number(f.to);
    const cut = snap.cuts.find((c: Cut) => c[0] === to);
    // The cut happened after the snapshot was read: the next round's fresher snapshot has it.
    if (!cut) return null;
    const out: EndedTicket[] = [];
    for (let page = Math.floor(from / PAGE_SIZE); page <= Math.floor(to / PAGE_SIZE); page++) {
      const records = await redis.hgetall(`${k.base}t:${page}`);
      for (const [s, record] of Object.entries(records)) {
        const seq = Number(s);
        if (seq < from || seq > to || record[0] !== 'w') continue;
        const rec = parseRecord(record, snap.epoch);
        out.push(row(snap, seq, rec.userId, rec.createdAt, stateOfChar(cut[1]) as OutcomeStatus, cut[2], null, undefined, cut[3]));
      }
    }
    return out;
  }

  return {
    /** Up to `count` stream entries of the item, expanded to ended tickets. */
    async read(snap: ItemSnapshot, count: number): Promise<{ ids: string[]; tickets: EndedTicket[] }> {
      const key = itemKeys(prefix, snap.def.itemId).done;
      await ensureGroup(key);
      // Own entries not yet acknowledged first (a round that failed), then a dead daemon's, then new ones.
      const own = (await redis.xreadgroup('GROUP', GROUP, consumer, 'COUNT', count, 'STREAMS', key, '0').catch((err) => {
        // The stream is gone (a Redis loss; the item was re-created): make the group again next round.
        if (String(err).includes('NOGROUP')) grouped.delete(key);
        throw err;
      })) as [string, [string, string[]][]][] | null;
      let entries = (own?.[0]?.[1] ?? []).filter(([, fields]) => fields !== null);
      if (entries.length < count) {
        const claimed = (await redis.xautoclaim(key, GROUP, consumer, CLAIM_IDLE_MS, '0', 'COUNT', count - entries.length)) as [string, [string, string[]][]];
        entries = entries.concat(claimed[1] ?? []);
      }
      if (entries.length < count) {
        const fresh = (await redis.xreadgroup('GROUP', GROUP, consumer, 'COUNT', count - entries.length, 'STREAMS', key, '>')) as [string, [string, string[]][]][] | null;
        entries = entries.concat(fresh?.[0]?.[1] ?? []);
      }
      const expanded = await Promise.all(entries.map(([, fields]) => expand(snap, fields)));
      // Entries up to the first one that cannot be expanded yet; it and the rest wait for the next round.
      const pending = expanded.indexOf(null);
      const upTo = pending === -1 ? entries.length : pending;
      return { ids: entries.slice(0, upTo).map(([id]) => id), tickets: (expanded.slice(0, upTo) as EndedTicket[][]).flat() };
    },
    async ack(itemId: string, ids: string[]) {
      if (!ids.length) return;
      const key = itemKeys(prefix, itemId).done;
      await redis.multi().xack(key, GROUP, ...ids).xdel(key, ...ids).exec();
    },
  };
}

function row(snap: ItemSnapshot, seq: number, userId: string, joinedAt: number, status: OutcomeStatus, reason: string | null, result: unknown, admittedAt: string | undefined, finishedAt: number): EndedTicket {
  return {
    ticketId: makeTicketId(snap.def.itemId, seq, snap.secret),
    itemId: snap.def.itemId,
    userId,
    status,
    reason,
    result,
    joinedAt: new Date(joinedAt),
    admittedAt: admittedAt ? new Date(Number(admittedAt)) : null,
    finishedAt: new Date(finishedAt),
  };
}

export type LedgerFeed = ReturnType<typeof createLedgerFeed>;
