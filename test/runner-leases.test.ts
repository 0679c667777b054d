import type { Job } from 'bullmq';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createLogger } from '../src/kernel/logger.js';
import type { AdmittedTicket } from '../src/queue/types.js';
import type { HandlerSpec } from '../src/service/handler.js';
import type { QueuedJob } from '../src/service/jobs.js';
import { createHandlerRegistry } from '../src/service/registry.js';
import { createRunner } from '../src/service/runner.js';
import { SERVICE, testApp } from './support/app.js';

/**
 * A job runs only the tickets whose leases are still the ones it was given. A ticket whose lease
 * ran out before its job ran (its daemon died between the admission and the job's queueing, or a
 * stall outlasted the dispatch lease) came back to the line and was offered again: it runs under
 * its new lease, in its new job. The job that carries it late must not run it a second time, even
 * when it carries another ticket that is still its own (before, one ticket still held ran them all).
 */
const t = await testApp();

describe('a job whose tickets were partly offered again', () => {
  it('runs the tickets it still holds and leaves out the one offered again', async () => {
    const { call, queue } = t.build();
    const item = t.uniqueItem();
    expect((await call('PUT', `/v1/items/${item}`, { handler: 'webhook', config: { url: 'http://127.0.0.1:2/unused' }, gate: { mode: 'manual', rate: 1000, maxInFlight: 10 } })).status).toBe(201);
    for (const u of ['ua', 'ub']) expect((await call('POST', `/v1/items/${item}/tickets`, { userId: u }, SERVICE)).status).toBe(202);

    // A daemon admits both and queues their job late (it died first, or stalled past the lease).
    const [a, b] = await queue.admissions.admit(item, 2, 60_000);
    expect([a.userId, b.userId]).toEqual(['ua', 'ub']);
    // a's lease runs out meanwhile: the sweep puts it back at the head, and it is admitted again.
    expect(await queue.admissions.extendLeases(item, [{ seq: a.seq, leaseId: a.leaseId }], Date.now() - 1)).toEqual([1]);
    expect(await queue.admissions.sweep()).toBe(1);
    const [again] = await queue.admissions.admit(item, 1, 60_000);
    expect([again.seq, again.leaseId === a.leaseId]).toEqual([a.seq, false]);
    // Its new lease says it was admitted before (its handler is told: a webhook's 409 then is "still processing").
    expect(await queue.admissions.extendLeases(item, [{ seq: again.seq, leaseId: again.leaseId }, { seq: b.seq, leaseId: b.leaseId }], Date.now() + 60_000)).toEqual([2, 1]);

    const ran: string[] = [];
    const counting: HandlerSpec = {
      name: 'webhook',
      config: z.record(z.string(), z.unknown()),
      rejoin: () => 'any',
      external: false,
      async handle(ticket) {
        ran.push(ticket.userId);
        return { status: 'succeeded' };
      },
    };
    const run = createRunner({
      item: (id) => queue.items.item(id),
      handlers: createHandlerRegistry([counting]),
      log: createLogger('silent'),
      attempts: 3,
      settle: async (s) => (await queue.admissions.settleMany(s.itemId, [s]))[0],
      context: () => ({}) as never,
      onSample: () => {},
      now: () => Date.now(),
      onSettled: () => {},
      leaseMs: () => 30_000,
      runLeaseMs: 3000,
      renew: (itemId, tickets, until) => queue.admissions.extendLeases(itemId, tickets, until),
    });
    const late = (ts: AdmittedTicket[]) => ({ handler: 'webhook', groups: [{ itemId: item, tickets: ts.map(({ ticketId, seq, userId, payload, leaseId, record }) => ({ ticketId, seq, userId, payload, leaseId, record })) }] });
    await run({ data: late([a, b]), attemptsMade: 0, opts: {} } as unknown as Job<QueuedJob>);
    expect(ran).toEqual(['ub']); // before: ['ua', 'ub'], a run a second time beside its new job
    expect((await call('GET', `/v1/items/${item}`)).body.counts).toMatchObject({ admitted: 1, succeeded: 1 });

    // Its new job runs it.
    await run({ data: late([again]), attemptsMade: 0, opts: {} } as unknown as Job<QueuedJob>);
    expect(ran).toEqual(['ub', 'ua']);
    expect((await call('GET', `/v1/items/${item}`)).body.counts).toMatchObject({ admitted: 0, succeeded: 2 });
  });
});
