/**
 * The `gate` bench's BullMQ contender: a plain BullMQ Worker, rate-limited by BullMQ's own limiter
 * (`{ limiter: { max, duration } }`), that calls the simulated downstream directly — no daemon.
 * Jobs are added by the bench beforehand (attempts and backoff like the daemon's defaults).
 *
 * `node --import tsx bench/lib/gate-bullmq.ts <spec.json>`; prints a JSON `ready` line once
 * connected, starts consuming on SIGUSR2, closes on SIGTERM (printing its counts).
 */
import { readFileSync } from 'node:fs';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';

export interface BullContenderSpec {
  redisUrl: string;
  prefix: string;
  queue: string;
  url: string;
  concurrency: number;
  limiter: { max: number; duration: number };
  timeoutMs: number;
}

const spec = JSON.parse(readFileSync(process.argv[2], 'utf8')) as BullContenderSpec;
const connection = new Redis(spec.redisUrl, { maxRetriesPerRequest: null });
const counts = { ok: 0, drop: 0 };
const say = (msg: string, extra: Record<string, unknown> = {}) => console.log(JSON.stringify({ level: 30, msg, ...extra }));

const worker = new Worker(
  spec.queue,
  async (job) => {
    let res: Response;
    try {
      res = await fetch(spec.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': String(job.id) },
        body: JSON.stringify(job.data),
        signal: AbortSignal.timeout(spec.timeoutMs),
      });
      await res.text();
    } catch (err) {
      counts.drop++;
      throw err;
    }
    if (!res.ok) {
      counts.drop++;
      throw new Error(`http_${res.status}`);
    }
    counts.ok++;
  },
  { connection, prefix: spec.prefix, concurrency: spec.concurrency, limiter: spec.limiter, autorun: false },
);
worker.on('error', (err) => console.error(JSON.stringify({ level: 50, msg: 'worker error', err: String(err) })));

await worker.waitUntilReady();
say('ready');
process.once('SIGUSR2', () => {
  say('running');
  void worker.run();
});
process.once('SIGTERM', () => {
  void (async () => {
    await worker.close(true).catch(() => {});
    say('closed', counts);
    connection.disconnect();
    process.exit(0);
  })();
});
