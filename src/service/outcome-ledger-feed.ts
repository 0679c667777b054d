import type { RedisLike } from '../redis/client.js';
import { itemKeys, PAGE_SIZE, subLineTag } from '../redis/keys.js';
import { createScriptRunner, scripts } from '../redis/scripts.js';
import type { ItemSnapshot } from '../queue/snapshot.js';
import { ticketRef } from '../kernel/ticket-ref.js';
import { splitSeq, subLineSeq } from '../queue/split-line.js';
import { makeTicketId } from '../queue/ticket-id.js';
import type { Cut, OutcomeStatus } from '../queue/types.js';
import { parseRecord, stateOfChar } from '../queue/views.js';

/** A ticket that reached its terminal state, as the outcome ledger stores it. */
export interface EndedTicket {
  /** The ticket's seq in its item, as its id carries it (not stored: it lets the ledger forget the ticket's state in Redis). */
  seq: number;
  /** The ticket's ref (kernel/ticket-ref.ts), stored as `ticket_id`: Postgres never holds a working id. */
  ticketId: string;
  itemId: string;
  userId: string;
  status: OutcomeStatus;
  reason: string | null;
  result: unknown;
  joinedAt: Date;
  admittedAt: Date | null;
  finishedAt: Date;
  /** The name of the key that created the ticket. */
  source: string | null;
}

/** A done-stream entry that could not be read as tickets (its id is among those read, to acknowledge). */
export interface UnreadableEntry {
  id: string;
  fields: string[];
  error: unknown;
}

const GROUP = 'ledger';
const CLAIM_IDLE_MS = 30_000;
/** How often one stream is asked for a dead daemon's entries (XAUTOCLAIM): those are 30 s idle at least, so 5 s more is nothing. */
const CLAIM_EVERY_MS = 5_000;

/**
 * Reads each item's `done` stream through a consumer group, so with many daemons every ended
 * ticket is delivered to one of them; entries a dead daemon left unacknowledged are claimed after
 * 30 s. A cut entry ({from, to}) is expanded here by reading the ticket pages of that range.
 *
 * A split item (queue/split-line.ts) has one `done` stream per sub-line, on the sub-line's own tag
 * (slot), each read and acknowledged as an unsplit item's, by its index `line` (0 … K−1; 0 for
 * an unsplit item). Its entries carry the sub-line's local seqs and its cuts are the sub-line's
 * own (its meta); a row carries the item's seq, so the ticket id it names is the one the user got.
 *
 * A round asks a stream for what it needs, not three things every time (200 items on sale made
 * 1,200 stream calls a second): its own unacknowledged entries only while some that it was handed
 * are not acknowledged (a round that failed, or stopped at a cut not yet seen), a dead daemon's
 * only every CLAIM_EVERY_MS, new ones always.
 */
/** What one read of a line hands over: its entries' ids, the ended tickets they stand for, and the view they were read with. */
export interface FeedRead {
  snap: ItemSnapshot | null;
  ids: string[];
  tickets: EndedTicket[];
  /** The item seqs of the tickets each entry of `ids` stands for (what its ack lets leave Redis). */
  seqsOf: number[][];
  unreadable: UnreadableEntry[];
}

class RedisReadFailed extends Error {}

export function createLedgerFeed(redis: RedisLike, prefix: string, consumer: string, now: () => number = Date.now) {
  const { run } = createScriptRunner(redis, prefix);
  const grouped = new Set<string>();
  /** Per stream: ids handed to this consumer and not acknowledged by it yet. */
  const unacked = new Map<string, Set<string>>();
  /** Per stream: when it was last asked for a dead daemon's entries. */
  const claimedAt = new Map<string, number>();
  const handed = (key: string, ids: string[]) => {
    if (!ids.length) return;
    let set = unacked.get(key);
    if (!set) unacked.set(key, (set = new Set()));
    for (const id of ids) set.add(id);
  };
  /** A sub-line's keys and its local seqs as the item's (the identity for an unsplit item's line 0). */
  const lineOf = (def: { itemId: string; lines?: number }, line: number) => ({
    keys: itemKeys(prefix, subLineTag(def.itemId, line)),
    itemSeq: (local: number) => splitSeq(line, local, def.lines ?? 1),
  });

  async function ensureGroup(key: string) {
    if (grouped.has(key)) return;
    try {
      await redis.xgroup('CREATE', key, GROUP, '0', 'MKSTREAM');
    } catch (err) {
      if (!String(err).includes('BUSYGROUP')) throw err;
    }
    grouped.add(key);
  }

  /** A read of Redis that failed (a connection lost a moment, a stall given up): the entry waits for a later round. */
  const fromRedis = <T>(p: Promise<T>): Promise<T> =>
    p.catch((err: unknown) => {
      throw new RedisReadFailed(String(err));
    });

  /** The tickets an entry stands for; null for a cut the snapshot does not know yet. */
  async function expand(snap: ItemSnapshot, line: number, fields: string[]): Promise<EndedTicket[] | null> {
    const f = Object.fromEntries(Array.from({ length: fields.length / 2 }, (_, i) => [fields[2 * i], fields[2 * i + 1]]));
    const { keys: k, itemSeq } = lineOf(snap.def, line);
    if (f.s && f.o !== undefined) {
      const rec = parseRecord(f.r, snap.epoch);
      const outcome = JSON.parse(f.o) as { status: OutcomeStatus; result?: unknown; reason?: string };
      return [row(snap, itemSeq(Number(f.s)), rec.userId, rec.createdAt, outcome.status, outcome.reason ?? null, outcome.result ?? null, f.a || undefined, Number(f.f), f.k || null)];
    }
    if (f.s) {
      // An entry written before entries carried the outcome (a daemon of an earlier version).
      const seq = Number(f.s);
      const [record, x] = await fromRedis(Promise.all([redis.hget(k.page(seq), String(seq)), redis.hgetall(k.x(seq))]));
      if (!record || !x.outcome) return [];
      const rec = parseRecord(record, snap.epoch);
      const outcome = JSON.parse(x.outcome) as { status: OutcomeStatus; result?: unknown; reason?: string };
      return [row(snap, itemSeq(seq), rec.userId, rec.createdAt, outcome.status, outcome.reason ?? null, outcome.result ?? null, x.admittedAt, Number(x.finishedAt))];
    }
    const from = Number(f.from);
    const to = Number(f.to);
    // Sub-line 0's cuts are the item's (the snapshot's); another sub-line's are in its own meta,
    // written by the same script as the entry, so read now they hold it.
    const cuts: Cut[] = line === 0 ? snap.cuts : JSON.parse((await fromRedis(redis.hget(k.meta, 'cuts'))) ?? '[]');
    const cut = cuts.find((c: Cut) => c[0] === to);
    // The cut happened after the snapshot was read: the next round's fresher snapshot has it.
    if (!cut) return null;
    const out: EndedTicket[] = [];
    for (let page = Math.floor(from / PAGE_SIZE); page <= Math.floor(to / PAGE_SIZE); page++) {
      const [records, sources] = await fromRedis(Promise.all([redis.hgetall(k.page(page * PAGE_SIZE)), redis.hgetall(k.sourcePage(page * PAGE_SIZE))]));
      for (const [s, record] of Object.entries(records)) {
        const seq = Number(s);
        if (seq < from || seq > to || record[0] !== 'w') continue;
        const rec = parseRecord(record, snap.epoch);
        out.push(row(snap, itemSeq(seq), rec.userId, rec.createdAt, stateOfChar(cut[1]) as OutcomeStatus, cut[2], null, undefined, cut[3], sources[s] ?? null));
      }
    }
    return out;
  }

  const feed = {
    /** Up to `count` entries of the item's stream (a split item's: sub-line `line`'s), expanded to ended tickets. */
    read(snap: ItemSnapshot, count: number, line = 0): Promise<FeedRead> {
      return feed.readFrom(snap.def, count, line, async () => snap);
    },
    /**
     * As read, with the item's view asked for only once the stream has handed entries (a quiet
     * item's round reads no view), and then read after them, so it holds every cut they name.
     * `snap` is the view they were expanded with (null when none were handed, or the item is gone:
     * then they wait for a later round).
     */
    async readFrom(def: { itemId: string; lines?: number }, count: number, line: number, snapshot: () => Promise<ItemSnapshot | null>): Promise<FeedRead> {
      const key = lineOf(def, line).keys.done;
      await ensureGroup(key);
      const gone = (err: unknown) => {
        // The stream is gone (a Redis loss; the item was re-created): make the group again next round.
        if (String(err).includes('NOGROUP')) {
          grouped.delete(key);
          unacked.delete(key);
        }
        throw err;
      };
      // Own entries not yet acknowledged first (a round that failed), then a dead daemon's, then new ones.
      let entries: [string, string[]][] = [];
      if (unacked.get(key)?.size) {
        const own = (await redis.xreadgroup('GROUP', GROUP, consumer, 'COUNT', count, 'STREAMS', key, '0').catch(gone)) as [string, [string, string[]][]][] | null;
        entries = (own?.[0]?.[1] ?? []).filter(([, fields]) => fields !== null);
        // What Redis no longer holds for this consumer (acknowledged, or deleted) is not owed.
        if (entries.length < count) {
          if (entries.length) unacked.set(key, new Set(entries.map(([id]) => id)));
          else unacked.delete(key);
        }
      }
      if (entries.length < count && now() - (claimedAt.get(key) ?? -Infinity) >= CLAIM_EVERY_MS) {
        const claimed = (await redis.xautoclaim(key, GROUP, consumer, CLAIM_IDLE_MS, '0', 'COUNT', count - entries.length).catch(gone)) as [string, [string, string[]][]];
        claimedAt.set(key, now());
        const got = claimed[1] ?? [];
        handed(key, got.map(([id]) => id));
        // (Full: there may be more to claim; the next round asks again.)
        if (got.length >= count - entries.length) claimedAt.delete(key);
        entries = entries.concat(got);
      }
      if (entries.length < count) {
        const fresh = (await redis.xreadgroup('GROUP', GROUP, consumer, 'COUNT', count - entries.length, 'STREAMS', key, '>').catch(gone)) as [string, [string, string[]][]][] | null;
        const got = fresh?.[0]?.[1] ?? [];
        handed(key, got.map(([id]) => id));
        entries = entries.concat(got);
      }
      if (!entries.length) return { snap: null, ids: [], tickets: [], seqsOf: [], unreadable: [] };
      const snap = await snapshot();
      if (!snap) return { snap: null, ids: [], tickets: [], seqsOf: [], unreadable: [] };
      // An entry that cannot be read at all (it throws) must not hold up the others: it is handed
      // back as unreadable, for the ledger to park and acknowledge. Not one whose expansion a Redis
      // read failed for a moment: it waits, as a cut the snapshot does not know yet does (parked,
      // a cut's every ticket lost its row for good, and answered 404 once retention removed the item).
      const unreadable: UnreadableEntry[] = [];
      const expanded = await Promise.all(
        entries.map(([id, fields]) =>
          expand(snap, line, fields).catch((error: unknown) => {
            if (error instanceof RedisReadFailed) return null;
            unreadable.push({ id, fields, error });
            return [];
          }),
        ),
      );
      // Entries up to the first one that cannot be expanded yet; it and the rest wait for the next round.
      const pending = expanded.indexOf(null);
      const upTo = pending === -1 ? entries.length : pending;
      const ids = entries.slice(0, upTo).map(([id]) => id);
      const acked = new Set(ids);
      const upToEntries = expanded.slice(0, upTo) as EndedTicket[][];
      return { snap, ids, tickets: upToEntries.flat(), seqsOf: upToEntries.map((ts) => ts.map((t) => t.seq)), unreadable: unreadable.filter((u) => acked.has(u.id)) };
    },
    /** Lets go of what it holds of the done streams of items `keep` refuses (removed ones: a stream's group and claim time were kept for good). */
    forget(keep: (itemId: string) => boolean) {
      // `<prefix>{<itemId>}:done`, or `{<itemId>~<k>}` for a split item's sub-line k (item ids hold no `~`).
      const itemOf = (key: string) => key.slice(prefix.length + 1, key.lastIndexOf('}')).replace(/~\d+$/, '');
      for (const m of [grouped, claimedAt, unacked]) for (const key of m.keys()) if (!keep(itemOf(key))) m.delete(key);
    },
    /**
     * Acknowledges entries whose rows are committed, and lets the ended tickets' own state leave
     * Redis: the payload and the unit marker at once, the hash of times and outcome after
     * `stateTtlSec` (a client repeating an outcome write, or polling, within that time is answered
     * from it; later the ticket's view comes from Postgres) — only for entries still there to
     * acknowledge (ack-ended-3.lua: after a flush or a rollback their seqs are other tickets').
     * The line's record of the ticket stays until the item's keys are removed. `ids` and `seqsOf`
     * (per entry, the item's seqs: FeedRead.seqsOf) are those read from `line`: every key it
     * touches is on that sub-line's tag, so the script stays on one slot.
     */
    async ack(def: { itemId: string; lines?: number }, ids: string[], seqsOf: number[][] = [], stateTtlSec = 600, line = 0) {
      if (!ids.length) return;
      const k = lineOf(def, line).keys;
      const rest = ids.flatMap((id, i) => [id, (seqsOf[i] ?? []).map((seq) => subLineSeq(seq, def.lines ?? 1).local).join(',')]);
      await run(scripts.ackEnded, subLineTag(def.itemId, line), now(), { group: GROUP, ttl: stateTtlSec }, rest);
      const set = unacked.get(k.done);
      if (set) {
        for (const id of ids) set.delete(id);
        if (!set.size) unacked.delete(k.done);
      }
    },
  };
  return feed;
}

function row(snap: ItemSnapshot, seq: number, userId: string, joinedAt: number, status: OutcomeStatus, reason: string | null, result: unknown, admittedAt: string | undefined, finishedAt: number, source: string | null = null): EndedTicket {
  return {
    seq,
    ticketId: ticketRef(makeTicketId(snap.def.itemId, seq, snap.secret, { joinedRel: joinedAt - snap.epoch, userId })),
    itemId: snap.def.itemId,
    userId,
    status,
    reason,
    result,
    joinedAt: new Date(joinedAt),
    admittedAt: admittedAt ? new Date(Number(admittedAt)) : null,
    finishedAt: new Date(finishedAt),
    source,
  };
}

export type LedgerFeed = ReturnType<typeof createLedgerFeed>;
