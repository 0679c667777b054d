// Mends a defect of ioredis's auto-pipelining (5.x to 6.1.0; redis/ioredis#1931): when a pipeline
// answers without a reply for one of its commands, `executeAutoPipeline` spreads `results[i]`
// anyway, and the TypeError ("results[i] is not iterable") is thrown from the pipeline's callback,
// where no caller can catch it: the daemon exits (main.ts treats an uncaught exception as a bug),
// and every command of that pipeline waits until its timeout. Seen once on a Redis Cluster while
// its slots moved under load (test/cluster-reshard.test.ts). After this patch such a command
// fails with an error, as a command on a lost connection does, which the daemon already answers
// (503, the job retried under its key); the other commands of the pipeline get their replies.
// test/redis-client.test.ts shows it. Runs on `npm install` / `npm ci` (postinstall);
// idempotent; says what it did, and only warns if the code no longer has the shape it mends.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MARK = '/* floodgate: missing pipeline reply mended */';
const from = '                process.nextTick(callbacks[i], ...results[i]);\n';
const to =
  `                const reply = results && results[i]; ${MARK}\n` +
  '                if (Array.isArray(reply)) process.nextTick(callbacks[i], ...reply);\n' +
  '                else process.nextTick(callbacks[i], new Error("Redis: the pipeline answered no reply for this command (redis/ioredis#1931)"));\n';

const file = path.join(root, 'node_modules/ioredis/built/autoPipelining.js');
const text = existsSync(file) ? readFileSync(file, 'utf8') : null;
if (text !== null && !text.includes(MARK)) {
  if (text.split(from).length !== 2) {
    console.warn(`patch-ioredis: ${path.relative(root, file)} does not have the shape this patch mends; left as it is (check redis/ioredis#1931)`);
  } else {
    writeFileSync(file, text.replace(from, to));
    console.log(`patch-ioredis: mended ${path.relative(root, file)} (a pipeline reply that is missing fails its command instead of crashing the process)`);
  }
}
