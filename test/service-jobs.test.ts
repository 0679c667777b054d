import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { jobQueuePrefix } from '../src/redis/keys.js';
import { createJobQueues, jobGroups, queueName, type TicketJob } from '../src/service/jobs.js';
import { closeWorkers } from '../src/service/service.js';
import { createLogger } from '../src/kernel/logger.js';
import { settlesWithin } from '../src/kernel/wait.js';
import type { AdmittedTicket } from '../src/queue/types.js';
import { redisUrl, testRedis } from './support/redis.js';

const t = testRedis();
const conn = new Redis(redisUrl(), { maxRetriesPerRequest: null });
afterAll(() => conn.disconnect());

const admitted = (item: string, n: number): AdmittedTicket[] =>
  Array.from({ length: n }, (_, i) => ({ ticketId: `${item}.${i + 1}`, seq: i + 1, userId: `u${i}`, payload: null, leaseId: `${item}-l${i + 1}` }) as AdmittedTicket);

describe('job queues', () => {
  it("stops a worker's lock renewal when its close does not finish in time (a job that never ends)", async () => {
    const prefix = t.newPrefix();
    const name = 'hangs';
    const opts = { connection: conn, prefix: jobQueuePrefix(prefix, name) };
    const q = new Queue(name, opts);
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    let release!: () => void;
    const hung = new Promise<void>((r) => (release = r));
    const w = new Worker(name, async () => (started(), hung), { ...opts, connection: conn.duplicate(), lockDuration: 2000 });
    try {
      await q.add('j', {});
      await running;
      await closeWorkers([w], createLogger('silent'), 200);
      // Before: still renewing, a timer rescheduling itself after the stop (the leak check's find).
      expect((w as unknown as { lockManager: { isRunning(): boolean } }).lockManager.isRunning()).toBe(false);
    } finally {
      release();
      await settlesWithin(w.close(), 2000);
      await q.obliterate({ force: true });
      await q.close();
    }
  });

  it("queue a round's tickets of one handler in jobs of up to `batch` tickets, grouped by item, in admission order", async () => {
    const prefix = t.newPrefix();
    const jobs = createJobQueues(conn, { prefix, attempts: 3, backoffMs: 100, concurrency: 4, lockDurationMs: 10_000, stalledIntervalMs: 5000, batch: 4 }, (err) => console.error("job queue error", err));
    await jobs.dispatch('seckill', [
      { itemId: 'a', tickets: admitted('a', 3) },
      { itemId: 'b', tickets: admitted('b', 2) },
      { itemId: 'c', tickets: admitted('c', 4) },
    ]);
    const q = new Queue<TicketJob>(queueName('seckill'), { connection: conn, prefix: jobQueuePrefix(prefix, queueName('seckill')) });
    const queued = (await q.getJobs(['waiting'])).sort((x, y) => x.timestamp - y.timestamp || (x.id! < y.id! ? -1 : 1));
    const shape = (d: TicketJob) => d.groups.map((g) => `${g.itemId}:${g.tickets.map((k) => k.seq).join(',')}`).join(' ');
    // 9 tickets, 4 a job: three jobs (not one per item), an item split where a job fills up.
    expect(queued.map((j) => shape(j.data)).sort()).toEqual(['a:1,2,3 b:1', 'b:2 c:1,2,3', 'c:4'].sort());
    // The job id is its first ticket's lease id: the same admission queued twice adds nothing.
    expect(queued.map((j) => j.id).sort()).toEqual(['b-a-l1', 'b-b-l2', 'b-c-l4']);
    await jobs.dispatch('seckill', [{ itemId: 'a', tickets: admitted('a', 3) }, { itemId: 'b', tickets: admitted('b', 1) }]);
    expect(await q.getJobCounts('waiting')).toEqual({ waiting: 3 });
    await q.obliterate({ force: true });
    await q.close();
    await jobs.close();
  });

  it("read a job an earlier version queued (one item's tickets) as one group", () => {
    const tickets = admitted('x', 2).map(({ ticketId, seq, userId, payload, leaseId }) => ({ ticketId, seq, userId, payload, leaseId }));
    expect(jobGroups({ itemId: 'x', handler: 'seckill', tickets })).toEqual([{ itemId: 'x', tickets }]);
    expect(jobGroups({ handler: 'seckill', groups: [{ itemId: 'x', tickets }] })).toEqual([{ itemId: 'x', tickets }]);
  });
});
