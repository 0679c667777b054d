import { once } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { connectDb } from '../src/db/client.js';
import { Command } from 'ioredis';
import { blockingTimeoutMs, giveUpWhenSilent, postgresExchanges, redisReplies } from '../src/kernel/silent-socket.js';
import { testDb } from './support/db.js';

const db = await testDb();

/** A Postgres message: its type byte, then an int32 length counting itself and the body. */
const message = (type: string, body: number) => {
  const b = Buffer.alloc(5 + body, 0x5a); // a body full of 'Z's: only framing may find the types
  b[0] = type.charCodeAt(0);
  b.writeInt32BE(4 + body, 1);
  return b;
};
const startup = (code = 196608, extra = 12) => {
  const b = Buffer.alloc(8 + extra, 0x53);
  b.writeInt32BE(8 + extra, 0);
  b.writeInt32BE(code, 4);
  return b;
};
/** `bytes` cut at the given points. */
const cut = (bytes: Buffer, at: number[]) => {
  const points = [...new Set(at.map((p) => p % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(from, p));
    from = p;
  }
  return out.filter((c) => c.length);
};

describe('counting Postgres exchanges from the bytes', () => {
  it('owes one answer per StartupMessage, Sync and Query until its ReadyForQuery, and a Flush the message that ends its answer, however the bytes are cut', () => {
    const types = fc.constantFrom('P', 'B', 'D', 'E', 'S', 'Q', 'C', 'H', 'p');
    fc.assert(
      fc.property(
        fc.array(fc.tuple(types, fc.nat(40)), { maxLength: 30 }),
        fc.array(fc.tuple(fc.constantFrom('1', '2', 't', 'T', 'n', 'D', 's', 'C', 'E', 'N', 'S', 'A', 'Z'), fc.nat(40)), { maxLength: 30 }),
        fc.array(fc.nat(2000)),
        fc.array(fc.nat(2000)),
        (sent, received, sentCuts, receivedCuts) => {
          const t = postgresExchanges();
          const out = Buffer.concat([startup(), ...sent.map(([ty, n]) => message(ty, n))]);
          const back = Buffer.concat(received.map(([ty, n]) => message(ty, ty === 'Z' ? 1 : n)));
          for (const c of cut(out, sentCuts)) t.sent(c);
          for (const c of cut(back, receivedCuts)) t.received(c);
          // The rules, message by message (the bytes above come in arbitrary chunks).
          let owed = 1;
          let flushAfter: number | null = null;
          for (const [ty] of sent) {
            if (ty === 'S' || ty === 'Q') owed++;
            else if (ty === 'H') flushAfter = owed;
          }
          let answered = 0;
          for (const [ty] of received) {
            if (ty === 'Z') answered++;
            if (flushAfter !== null && (ty === 'Z' ? answered > flushAfter : answered >= flushAfter && 'TnsCI3E'.includes(ty))) flushAfter = null;
          }
          expect(t.waiting).toBe(owed > answered || flushAfter !== null);
        },
      ),
    );
  });

  it('owes the answer to a Parse, Describe and Flush sent with no Sync (a statement described before its first run)', () => {
    const t = postgresExchanges();
    t.sent(startup());
    t.received(message('Z', 1));
    expect(t.waiting).toBe(false);
    t.sent(Buffer.concat([message('P', 20), message('D', 6), message('H', 0)]));
    expect(t.waiting).toBe(true);
    t.received(Buffer.concat([message('1', 0), message('t', 6), message('N', 30)])); // ParseComplete, ParameterDescription, a notice
    expect(t.waiting).toBe(true); // the description is not whole yet
    t.received(message('T', 27)); // RowDescription: it is
    expect(t.waiting).toBe(false);
    t.sent(Buffer.concat([message('B', 12), message('E', 5), message('H', 0), message('S', 0)]));
    expect(t.waiting).toBe(true);
    t.received(Buffer.concat([message('2', 0), message('C', 9)]));
    expect(t.waiting).toBe(true); // the Sync's ReadyForQuery is still owed
    t.received(message('Z', 1));
    expect(t.waiting).toBe(false);
  });

  it('owes nothing for a CancelRequest', () => {
    const t = postgresExchanges();
    t.sent(startup(80877102, 8));
    expect(t.waiting).toBe(false);
  });
});

describe('a watched Postgres connection', () => {
  it('is left alone while it owes nothing, and is not given up for an idle time before its next query', { timeout: 20_000 }, async () => {
    const handle = connectDb(db.url, { max: 1, timeoutMs: 300 });
    try {
      const [{ pid }] = await handle.sql`select pg_backend_pid() as pid`;
      // Idle three times the timeout (nothing owed), then a query: answered on the same connection.
      await new Promise((r) => setTimeout(r, 1000));
      const [again] = await handle.sql`select pg_backend_pid() as pid, pg_sleep(0.1)`;
      expect(again.pid).toBe(pid);
      // A statement that outlasts the timeout is given up (the daemon runs none: the cost of the watch).
      const err = await handle.sql`select pg_sleep(2)`.then(() => null, (e: { code?: string }) => e);
      expect(err?.code).toBe('ETIMEDOUT');
    } finally {
      await handle.sql.end({ timeout: 1 });
    }
  });
});

describe("Redis replies: a blocking command's own wait", () => {
  const written = (name: string, args: (string | Buffer)[]) => new Command(name, args).toWritable(null as never);
  it('reads the timeout of a blocking pop from the command ioredis writes, and nothing else', () => {
    expect(blockingTimeoutMs(written('bzpopmin', ['bull:{q}:marker', '1']))).toBe(1000);
    expect(blockingTimeoutMs(written('BLPOP', ['a', 'b', '2.5']))).toBe(2500);
    expect(blockingTimeoutMs(written('blmove', ['a', 'b', 'LEFT', 'RIGHT', '0']))).toBe(Infinity);
    expect(blockingTimeoutMs(written('bzpopmin', [Buffer.from('k'), '3']))).toBe(3000);
    expect(blockingTimeoutMs(written('get', ['bzpopmin']))).toBe(0);
    expect(blockingTimeoutMs(written('evalsha', ['abc', '1', 'k', '5']))).toBe(0);
    const t = redisReplies();
    t.sent(written('bzpopmin', ['k', '4']));
    expect([t.waiting, t.graceMs]).toEqual([true, 4000]);
    t.received(Buffer.from('*-1\r\n'));
    expect([t.waiting, t.graceMs]).toEqual([false, 0]);
  });
});

describe('siblings of a connection given up for silence', () => {
  it("gives up at once the idle connections to the same server that heard nothing since its wait began, and no others", { timeout: 10_000 }, async () => {
    // A server that answers each chunk with one byte, except on the connections it was told to mute.
    const muted = new Set<number>();
    const servers: Server[] = [];
    const serve = async () => {
      const server = createServer((s) => {
        s.once('data', (d) => {
          const id = d[0];
          s.write('!');
          s.on('data', () => void (muted.has(id) || s.write('!')));
        });
      });
      servers.push(server);
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      return (server.address() as { port: number }).port;
    };
    const [port, otherPort] = [await serve(), await serve()];
    const open = async (id: number, to = port) => {
      const s = connect(to, '127.0.0.1');
      await once(s, 'connect');
      giveUpWhenSilent(s, 300, `conn ${id}`);
      const ended = new Promise<string | null>((resolve) => {
        let why: string | null = null;
        s.on('error', (e) => void (why = e.message));
        s.on('close', () => resolve(why));
      });
      s.write(Buffer.from([id]));
      await once(s, 'data');
      return { s, ended };
    };
    const [a, b, c, d] = [await open(1), await open(2), await open(3), await open(4, otherPort)];
    const state = (x: { s: Socket }) => (x.s.destroyed ? 'given up' : 'open');
    try {
      muted.add(1).add(2);
      a.s.write('?'); // owes an answer that never comes
      await new Promise((r) => setTimeout(r, 50));
      c.s.write('?'); // heard after a's wait began: alive
      await once(c.s, 'data');
      expect(await a.ended).toMatch(/conn 1 sent nothing/);
      expect(await b.ended).toMatch(/conn 2: idle, and heard nothing since/);
      expect([state(c), state(d)]).toEqual(['open', 'open']);
    } finally {
      for (const x of [a, b, c, d]) x.s.destroy();
      for (const srv of servers) srv.close();
    }
  });
});

describe('a watched connection whose answer is already in the socket', () => {
  it('is not given up after the event loop was held past its time: the answer is read first', { timeout: 10_000 }, async () => {
    // The server (in this process) holds the loop 700 ms once its answer is on its way: the answer
    // waits in the client's socket while the watch's 300 ms (and a tick) go by.
    const hold = (ms: number) => {
      for (const until = Date.now() + ms; Date.now() < until; );
    };
    const server = createServer((s) => s.on('data', () => s.write('!', () => hold(700))).on('error', () => {}));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const s = connect((server.address() as { port: number }).port, '127.0.0.1');
    await once(s, 'connect');
    let lost: string | null = null;
    s.on('error', (e) => void (lost = e.message));
    giveUpWhenSilent(s, 300, 'held');
    try {
      const answered = once(s, 'data');
      s.write('?');
      await answered;
      await new Promise((r) => setTimeout(r, 400));
      expect(lost).toBeNull();
      expect(s.destroyed).toBe(false);
    } finally {
      s.destroy();
      server.close();
    }
  });
});
