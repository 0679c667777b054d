// Mends a defect of postgres.js 3.4.x that takes the process down (porsager/postgres#1154, #1208,
// PRs #1168, #1176, #1209, none released as of 3.4.10): a small write is deferred to setImmediate,
// and `nextWrite` then writes to the connection's socket without asking whether it closed
// meanwhile. On a connection whose server went away (a Postgres restart, a failover, a proxy
// that cut it) that threw `TypeError: Cannot read properties of null (reading 'write')` from the
// immediate, where no caller can catch it: the daemon died, and the query waited forever. The
// teardowns also cancelled the deferred write without forgetting it, so the next connection on
// that slot kept the stale bytes and never wrote again. After this patch such a write fails the
// connection's queries as CONNECTION_CLOSED (which the daemon treats as Postgres unreachable:
// the sale waits) and a teardown forgets what it cancelled. test/postgres-null-socket.test.ts
// shows it. Runs on `npm install` / `npm ci` (postinstall); idempotent; says what it did, and
// only warns if the driver's code no longer has the shape it mends (a release that fixed it).
//
// A second defect (found 7 Dec by a review: a sale stuck for good after a Postgres stall): a
// socket's error fails the connection's queries, but the connection stays in the pool's busy list
// until the socket's `close` comes, a moment later; a query handed to it in between is queued
// behind the failed one and written to the destroyed socket, and `closed(hadError)` fails nothing
// when the close came with an error (it takes error() to have done it). That query then waited
// forever, carried over to the next socket of the slot, which never took work again. After this
// patch the close fails whatever the connection still holds and forgets the failed query.
// test/postgres-error-close.test.ts shows it.
//
// A third (found 7 Dec in CI: Postgres made read-only mid-sale): a connection reserved with
// `sql.reserve()` (the operators' lock session, db/op-revs.ts) whose session the server ended while
// it was reserved went back to the pool's closed list at once, yet stayed the reserved handle's:
// a query on the handle ran on a connection with no socket (failed, and left the connection
// holding it), the handle's queued queries waited forever, and `release()` then put the dead
// connection in the pool's open list, where it failed every query handed to it (CONNECTION_CLOSED)
// for as long as the process lived — a third of a busy pool's queries in a plain repro, read by
// the daemon as Postgres unreachable: the sale paused again and again. After this patch the close
// ends the reservation: its queued and later queries fail as CONNECTION_CLOSED, and `release()`
// leaves the connection to the pool. test/postgres-reserve-close.test.ts shows it.
//
// Three more, found the same day by a review of the driver under ended sessions
// (test/postgres-ended-sessions.test.ts shows each): a `sql.reserve()` waiting for a connection was
// lost when any connection closed (the close handed it to the slot's reconnect, which drops a
// reserve): it never settled, and every operator write of the process waited on it for good; the
// error the server sent as it ended a session (57P01) was kept across the close and failed the
// first query of the next session (one more false "Postgres lost" per slot); and a transaction
// whose session ended sent its `rollback` to the slot's new connection, failing the pool's query
// that was connecting there, and its queued statements waited for good.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// Versioned: a tree mended by an earlier version of this script is brought up to this one.
const MARK = '/* floodgate: closed-socket write mended, v2 */';
const V1 = '/* floodgate: closed-socket write mended */';
// The guard cancels the deferred write too: called directly while one was pending, it would
// otherwise fire later with nothing to write, on whatever socket the connection has by then.
const guard = `    if (!socket) { ${MARK}\n      nextWriteTimer !== null && clearImmediate(nextWriteTimer)\n      chunk = nextWriteTimer = null\n      error(Errors.connection('CONNECTION_CLOSED', options))\n      return false\n    }\n`;
const v1Guard = `    if (!socket) { ${V1}\n      chunk = nextWriteTimer = null\n      error(Errors.connection('CONNECTION_CLOSED', options))\n      return false\n    }\n`;
const CLOSE_MARK = '/* floodgate: a close fails what the connection holds */';
const RESERVE_MARK = '/* floodgate: a close ends a reservation */';
const WAITING_MARK = '/* floodgate: a waiting reserve outlives a close */';
const STALE_MARK = '/* floodgate: a close forgets the ended session error */';
const BEGIN_MARK = '/* floodgate: a close ends a transaction */';
/** Each mend: its mark (present: applied), the text it replaces (once in the file) and with what, and what it does. */
const mends = [
  {
    file: 'connection.js',
    mark: MARK,
    says: 'a write to a closed connection fails its queries instead of crashing the process',
    see: 'porsager/postgres#1208',
    edits: [
      ['  function nextWrite(fn) {\n    const x = socket.write(chunk, fn)', `  function nextWrite(fn) {\n${guard}    const x = socket.write(chunk, fn)`],
      // terminate() and closed(): forget the cancelled write, not only cancel it.
      ['    clearImmediate(nextWriteTimer)\n    if (socket) {', '    clearImmediate(nextWriteTimer)\n    chunk = nextWriteTimer = null\n    if (socket) {'],
      ['    clearImmediate(nextWriteTimer)\n    socket.removeListener', '    clearImmediate(nextWriteTimer)\n    chunk = nextWriteTimer = null\n    socket.removeListener'],
    ],
  },
  {
    file: 'connection.js',
    mark: CLOSE_MARK,
    says: "a query handed to a connection between its socket's error and close fails instead of waiting forever",
    see: 'closed(hadError) in src/connection.js',
    edits: [
      [
        "    !hadError && (query || sent.length) && error(Errors.connection('CONNECTION_CLOSED', options, socket))\n",
        `    ;(query || sent.length) && error(Errors.connection('CONNECTION_CLOSED', options, socket)) ${CLOSE_MARK}\n    query = null\n`,
      ],
    ],
  },
  {
    file: 'index.js',
    mark: RESERVE_MARK,
    says: 'a reserved connection whose session ended fails its queries and is not handed back to the pool',
    see: 'reserve() and onclose() in src/index.js',
    edits: [
      [
        '    move(c, reserved)\n    c.reserved = () => queue.length\n      ? c.execute(queue.shift())\n      : move(c, reserved)\n    c.reserved.release = true\n',
        `    move(c, reserved)\n    const mine = c.reserved = () => queue.length\n      ? c.execute(queue.shift())\n      : move(c, reserved)\n    c.reserved.release = true\n    c.reserved.gone = (e) => { while (queue.length) queue.shift().reject(e) } ${RESERVE_MARK}\n`,
      ],
      [
        '    sql.release = () => {\n      c.reserved = null\n      onopen(c)\n    }\n',
        '    sql.release = () => {\n      if (c.reserved !== mine) return\n      c.reserved = null\n      onopen(c)\n    }\n',
      ],
      [
        '    function handler(q) {\n      c.queue === full\n',
        "    function handler(q) {\n      if (c.reserved !== mine) return q.reject(Errors.connection('CONNECTION_CLOSED', options))\n      c.queue === full\n",
      ],
      ['  function onclose(c, e) {\n    move(c, closed)\n    c.reserved = null\n', '  function onclose(c, e) {\n    move(c, closed)\n    c.reserved && c.reserved.gone && c.reserved.gone(e)\n    c.reserved = null\n'],
    ],
  },
  {
    file: 'index.js',
    mark: WAITING_MARK,
    says: 'a reserve waiting for a connection is served after a connection closes instead of being lost',
    see: 'reserve(), onopen() and onclose() in src/index.js',
    edits: [
      [
        '        const query = { reserve: resolve, reject }\n',
        `        const query = { reserve: c => (query.settled = true, resolve(c)), reject: e => (query.settled = true, reject(e)) } ${WAITING_MARK}\n`,
      ],
      ['      if (query.reserve)\n        return query.reserve(c)\n', '      if (query.reserve) {\n        if (query.settled) continue\n        return query.reserve(c)\n      }\n'],
      [
        '    queries.length && connect(c, queries.shift())\n',
        // The slot reconnects with it, and drops a reserve when ready: one not settled stays
        // queued, where the open connection's onopen() finds it.
        '    if (queries.length) {\n      const q = queries.shift()\n      q.reserve && !q.settled && queries.push(q)\n      connect(c, q)\n    }\n',
      ],
    ],
  },
  {
    file: 'index.js',
    mark: BEGIN_MARK,
    says: "a transaction whose session ended fails its statements instead of sending them to the slot's next connection",
    see: 'begin() in src/index.js',
    edits: [
      ['      , connection\n      , prepare = null\n', `      , connection\n      , prepare = null\n      , mine = null ${BEGIN_MARK}\n      , poolOptions = sql.options\n`],
      [
        '      function handler(q) {\n        q.catch(e => uncaughtError || (uncaughtError = e))\n        c.queue === full\n',
        "      function handler(q) {\n        q.catch(e => uncaughtError || (uncaughtError = e))\n        if (c.reserved !== mine) return q.reject(Errors.connection('CONNECTION_CLOSED', poolOptions))\n        c.queue === full\n",
      ],
      [
        '      connection = c\n      move(c, reserved)\n      c.reserved = () => queries.length\n        ? c.execute(queries.shift())\n        : move(c, reserved)\n    }\n',
        '      connection = c\n      move(c, reserved)\n      mine = c.reserved = () => queries.length\n        ? c.execute(queries.shift())\n        : move(c, reserved)\n      c.reserved.gone = (e) => { while (queries.length) queries.shift().reject(e) }\n    }\n',
      ],
    ],
  },
  {
    file: 'connection.js',
    mark: STALE_MARK,
    says: "a session's last error is not taken for the next session's",
    see: 'closed() in src/connection.js',
    edits: [
      ['    socket.removeAllListeners()\n    socket = null\n\n    if (initial)\n', `    socket.removeAllListeners()\n    socket = null\n    errorResponse = results = null ${STALE_MARK}\n    result = new Result()\n    rows = 0\n\n    if (initial)\n`],
    ],
  },
];

const dir = path.join(root, 'node_modules/postgres');
if (!existsSync(dir)) process.exit(0);
for (const rel of ['src', 'cjs/src', 'cf/src'].flatMap((d) => ['connection.js', 'index.js'].map((f) => `${d}/${f}`))) {
  const file = path.join(dir, rel);
  if (!existsSync(file)) continue;
  let text = readFileSync(file, 'utf8');
  const name = path.relative(root, file);
  if (text.includes(v1Guard)) {
    text = text.replace(v1Guard, guard);
    writeFileSync(file, text);
    console.log(`patch-postgres: brought ${name} up to this version of the mend`);
  }
  for (const m of mends) {
    if (!rel.endsWith(`/${m.file}`) || text.includes(m.mark)) continue;
    if (!m.edits.every(([from]) => text.split(from).length === 2)) {
      console.warn(`patch-postgres: ${name} does not have the shape this patch mends (${m.says}); left as it is (check ${m.see})`);
      continue;
    }
    for (const [from, to] of m.edits) text = text.replace(from, to);
    writeFileSync(file, text);
    console.log(`patch-postgres: mended ${name} (${m.says})`);
  }
}
