import type { Socket } from 'node:net';

/** What a watched connection has asked and been answered, as its bytes go by. */
export interface AnswerTracker {
  sent(chunk: Buffer | string | Uint8Array): void;
  received(chunk: Buffer): void;
  /** Whether an answer is still owed. */
  readonly waiting: boolean;
  /** How much longer than the watch's `ms` the answer owed may legitimately take (a blocking command's own timeout). */
  readonly graceMs?: number;
  /** Called once the connection was given up as silent (after its socket was destroyed). */
  onGiveUp?(): void;
}

/**
 * Gives up on a store's connection that has waited `ms` for an answer with no byte coming: it is
 * destroyed with an ETIMEDOUT error, which its client (postgres.js, ioredis) takes for a lost
 * connection — it fails what was in flight and connects again. `tracker` says whether an answer
 * is owed (default: something was written since the last bytes came in).
 *
 * Why: neither client has a timeout that ends a connection. Through a path that drops packets (a
 * partition, a failover that moved the address, a NAT that forgot the flow) no reset ever comes,
 * and the kernel retransmits an unanswered write for ~15 minutes before it fails the socket;
 * until then every call on the connection waits (Postgres) or times out one by one on a
 * connection that is never replaced (Redis). An idle connection owes nothing and is left alone;
 * so, for `ms`, is a call that legitimately takes long (a long statement): `ms` must exceed the
 * longest such call, or the tracker must say how long it may take (`graceMs`: redisReplies() reads
 * a blocking pop's own timeout). Writes do not count as life (a socket's own idle
 * timeout does count them: a client that keeps sending to a dead peer would never be given up).
 */
export function giveUpWhenSilent(socket: Socket, ms: number, what: string, tracker: AnswerTracker = writtenSinceRead()): void {
  // Timed on the monotonic clock: a step of the wall clock (NTP) is not a silence.
  const entry: Watched = { socket, ms, what, tracker, quietSince: performance.now(), heardAt: performance.now() };
  const write = socket.write;
  socket.write = function (this: Socket, ...args: Parameters<Socket['write']>) {
    const data = args[0] as Buffer | string | Uint8Array;
    if (data.length === 0) return write.apply(this, args); // asks nothing
    const owed = tracker.waiting;
    tracker.sent(data);
    // The wait for an answer starts when one is first owed, not when the last bytes came (maybe long ago).
    if (!owed && tracker.waiting) entry.quietSince = performance.now();
    return write.apply(this, args);
  } as Socket['write'];
  socket.on('data', (chunk: Buffer) => {
    entry.quietSince = entry.heardAt = performance.now();
    tracker.received(chunk);
  });
  watched.add(entry);
  socket.once('close', () => watched.delete(entry));
  timer ??= setInterval(check, CHECK_EVERY_MS).unref();
}

interface Watched {
  socket: Socket;
  ms: number;
  what: string;
  tracker: AnswerTracker;
  /** When the last byte came in, or the wait for an answer began if later. */
  quietSince: number;
  /** When the last byte came in (or the watch began). */
  heardAt: number;
}

const CHECK_EVERY_MS = 250;
const watched = new Set<Watched>();
let timer: NodeJS.Timeout | null = null;

/** The server a socket talks to; null for a Unix socket or one not connected (no address to compare). */
const peer = (s: Socket) => (s.remoteAddress ? `${s.remoteAddress}:${s.remotePort}` : null);
const overdue = (w: Watched, now: number) => w.tracker.waiting && now - w.quietSince >= w.ms + (w.tracker.graceMs ?? 0);

/**
 * The timer finds the overdue connections; they are given up after the next poll phase, if still
 * overdue then (setImmediate). After the event loop was held up past a watch's time (a GC pause, a
 * busy CPU), the timers run before the sockets are read, and an answer already waiting in the
 * socket would have been thrown away with it (the command timeout in infra/redis-client.ts waits
 * the same way).
 */
function check() {
  const found = [...watched].filter((w) => overdue(w, performance.now()));
  if (found.length) setImmediate(() => giveUp(found));
  if (!watched.size && timer) {
    clearInterval(timer);
    timer = null;
  }
}

function giveUp(found: Watched[]) {
  const now = performance.now();
  for (const w of found) {
    if (!watched.has(w) || !overdue(w, now)) continue;
    watched.delete(w);
    const server = peer(w.socket);
    w.socket.destroy(Object.assign(new Error(`${w.what} sent nothing for ${Math.round(now - w.quietSince)} ms while an answer was owed`), { code: 'ETIMEDOUT' }));
    w.tracker.onGiveUp?.();
    // The path to that server has been dead since this connection's wait began. Its idle siblings
    // (same server) that have heard nothing since then go too, at once: they have nothing in
    // flight to lose, and each would otherwise find the silence only at its next use, a whole
    // window later — with Redis silent, the job queue's connection sat idle while admissions were
    // down, was first used when they came back, and held the sale 5 s more (chaos bench,
    // redis-silent). Siblings that owe an answer keep their own window (a late admit reply is read).
    if (server === null) continue;
    for (const x of watched) {
      if (x.tracker.waiting || x.heardAt >= w.quietSince || x.socket.connecting || peer(x.socket) !== server) continue;
      watched.delete(x);
      x.socket.destroy(Object.assign(new Error(`${x.what}: idle, and heard nothing since another connection to ${server} fell silent`), { code: 'ETIMEDOUT' }));
    }
  }
}

/**
 * An answer is owed when something was written since the last bytes came in (it does not parse
 * the protocol: replies to the first of several pipelined commands end the debt, and a silence on
 * the rest is noticed at the connection's next write).
 */
function writtenSinceRead(): AnswerTracker {
  let waiting = false;
  return {
    sent: () => void (waiting = true),
    received: () => void (waiting = false),
    get waiting() {
      return waiting;
    },
  };
}

/**
 * Redis's replies, as writtenSinceRead() owes them, and a blocking command's timeout as grace: a
 * blocking pop that waits its `timeout` seconds for an element and then answers nil is not a
 * silence. BullMQ's workers wait for jobs with BZPOPMIN (up to 10 s); without the grace, every
 * connection BullMQ makes had to be given 15 s of silence, and a sale stopped ~17 s when Redis fell
 * silent. The command is read from the head of the write (ioredis writes each command, or a
 * pipeline's commands, as one RESP array per write); its timeout is its last argument.
 */
export function redisReplies(): AnswerTracker {
  let waiting = false;
  let graceMs = 0;
  return {
    sent(data) {
      waiting = true;
      graceMs = Math.max(graceMs, blockingTimeoutMs(data));
    },
    received() {
      waiting = false;
      graceMs = 0;
    },
    get waiting() {
      return waiting;
    },
    get graceMs() {
      return graceMs;
    },
  };
}

/** The blocking commands whose timeout (seconds, 0 = for ever) is their last argument. */
const BLOCKING_HEAD = /^\*\d+\r\n\$\d+\r\n(bzpopmin|bzpopmax|blpop|brpop|brpoplpush|blmove)\r\n/i;

/** A write's blocking time in ms when it starts with a blocking command, else 0. */
export function blockingTimeoutMs(data: Buffer | string | Uint8Array): number {
  const bytes = typeof data === 'string' ? null : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  // The head alone first: every write of every Redis connection comes through here.
  if (!BLOCKING_HEAD.test(bytes ? bytes.toString('latin1', 0, 32) : data.slice(0, 32) as string)) return 0;
  const text = bytes ? bytes.toString('latin1') : (data as string);
  // "...$<n>\r\n<timeout>\r\n": the last line before the final CRLF.
  const end = text.endsWith('\r\n') ? text.length - 2 : text.length;
  const seconds = Number(text.slice(text.lastIndexOf('\r\n', end - 1) + 2, end));
  if (!Number.isFinite(seconds) || seconds < 0) return 0;
  return seconds === 0 ? Infinity : seconds * 1000;
}

/**
 * The Postgres wire protocol's exchanges: every StartupMessage, Sync and Query sent is owed one
 * ReadyForQuery, which ends every exchange (pipelined queries each owe their own); a Flush is owed
 * the answer after the exchanges sent before it, up to the message that ends it (FLUSH_ENDS):
 * postgres.js describes a statement's first run with Parse, Describe and Flush, and sends its Sync
 * only once the description came, so an answer is owed with no Sync out. Messages are framed by
 * their length (a type byte and an int32 length; the first message sent has no type byte), so a
 * message split across chunks is counted once. A CancelRequest is owed nothing.
 */
export function postgresExchanges(): AnswerTracker & { readonly backendKey: Buffer | null } {
  let owed = 0;
  let answered = 0;
  /** The server's BackendKeyData (process id and secret key, 8 bytes): what a CancelRequest for this session names. */
  let backendKey: Buffer | null = null;
  /** The Syncs (and the startup) sent before the last Flush whose answer has not ended yet; null when none. */
  let flushAfter: number | null = null;
  let first = true;
  // The first message: an int32 length (counting itself) and an int32 code, no type byte.
  const startup = lengthFramed(8, 0, (head) => {
    if (head.readInt32BE(4) !== CANCEL_CODE) owed++;
  });
  const outgoing = typedFrames((type) => {
    if (type === SYNC || type === QUERY) owed++;
    else if (type === FLUSH) flushAfter = owed;
  });
  const incoming = typedFrames(
    (type) => {
    if (type === READY) answered++;
    // The message that ends a Flush's answer, after the exchanges sent before it (a ReadyForQuery
    // past them means the answer came before it).
    if (flushAfter !== null && (type === READY ? answered > flushAfter : answered >= flushAfter && FLUSH_ENDS.has(type))) flushAfter = null;
    },
    (type) => type === BACKEND_KEY,
    (_type, body) => void (backendKey = Buffer.from(body.subarray(0, 8))),
  );
  return {
    sent(data) {
      const chunk = typeof data === 'string' ? Buffer.from(data) : Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      let i = 0;
      if (first) {
        i = startup(chunk, 0, true);
        if (i < 0) return; // the first message goes on in the next chunk
        first = false;
      }
      if (i < chunk.length) outgoing(chunk, i);
    },
    received: (chunk) => incoming(chunk, 0),
    get waiting() {
      return owed > answered || flushAfter !== null;
    },
    get backendKey() {
      return backendKey;
    },
  };
}

const SYNC = 0x53; // 'S' (sent)
const QUERY = 0x51; // 'Q'
const FLUSH = 0x48; // 'H'
/**
 * The messages that end what a Flush asked for: a statement's description (RowDescription T,
 * NoData n), a cursor's rows (PortalSuspended s, CommandComplete C, EmptyQueryResponse I), a
 * Close (CloseComplete 3), an error (E). Not the asynchronous ones (a notice, a parameter, a
 * notification) nor the first parts of an answer (ParseComplete, ParameterDescription, DataRow).
 */
const FLUSH_ENDS = new Set([0x54, 0x6e, 0x73, 0x43, 0x49, 0x33, 0x45]);
const READY = 0x5a; // 'Z' (received)
const BACKEND_KEY = 0x4b; // 'K' (received): process id and secret key
export const CANCEL_CODE = 80877102;

/**
 * Calls `onType` with each message's type byte, for a stream of messages of a type byte and an
 * int32 length (counting itself); and `onBody` with the body of those `wantBody` asks for.
 */
const typedFrames = (onType: (type: number) => void, wantBody?: (type: number) => boolean, onBody?: (type: number, body: Buffer) => void) =>
  lengthFramed(5, 1, (head) => onType(head[0]), wantBody && onBody ? { want: (head) => wantBody(head[0]), take: (head, body) => onBody(head[0], body) } : undefined);

/**
 * A stream of messages, each a head of `headLength` bytes holding an int32 length at `lengthAt`
 * (counting itself and what follows it), then the rest of the message: calls `onHead` with each
 * head, however the bytes are cut into chunks. Fed a chunk from `from`; with `one`, stops at the
 * end of the first whole message and returns where it ended (-1: not within this chunk).
 */
function lengthFramed(headLength: number, lengthAt: number, onHead: (head: Buffer) => void, body?: { want: (head: Buffer) => boolean; take: (head: Buffer, body: Buffer) => void }) {
  const head = Buffer.alloc(headLength);
  let have = 0;
  let skip = 0;
  /** The body being kept (a message `body.want` asked for), filled as it is skipped. */
  let kept: Buffer | null = null;
  let keptAt = 0;
  return (chunk: Buffer, from: number, one = false): number => {
    let i = from;
    while (i < chunk.length) {
      if (skip > 0) {
        const n = Math.min(skip, chunk.length - i);
        if (kept) {
          chunk.copy(kept, keptAt, i, i + n);
          keptAt += n;
        }
        skip -= n;
        i += n;
        if (skip === 0 && kept) {
          body!.take(head, kept);
          kept = null;
        }
        if (one && skip === 0) return i;
        continue;
      }
      head[have++] = chunk[i++];
      if (have === headLength) {
        onHead(head);
        have = 0;
        skip = head.readInt32BE(lengthAt) - (headLength - lengthAt);
        // (Small bodies only: a BackendKeyData's 8 bytes.)
        if (body && skip > 0 && skip <= 256 && body.want(head)) {
          kept = Buffer.alloc(skip);
          keptAt = 0;
        }
        if (one && skip <= 0) return i;
      }
    }
    return one ? -1 : i;
  };
}
