import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { startDaemonProcess, processEnv, type RunningDaemon } from './support/daemon.js';
import { waitFor } from './support/daemon-inproc.js';
import { testDb } from './support/db.js';
import { recordingDownstream } from './support/downstream.js';
import { http } from './support/http.js';
import { ownRedis } from './support/redis-server.js';

const redisServer = await ownRedis();
const db = await testDb();
let daemon: RunningDaemon | null = null;
afterAll(async () => {
  await daemon?.stop('SIGKILL');
});

/** The lines of the daemon's output that are not its JSON log lines. */
const rawLines = (out: string) => out.split('\n').filter((l) => l.trim() && !l.startsWith('{'));

describe("the daemon's output", () => {
  it('holds only its JSON log lines: no raw error stacks from the job queues', async () => {
    daemon = await startDaemonProcess(processEnv(db.url, `fgl:${randomBytes(4).toString('hex')}:`, { REDIS_URL: redisServer.url }));
    const d = daemon;
    expect((await http(d.url, 'PUT', '/v1/items/log-sk', { handler: 'seckill', config: { stock: 10 } }, 'op')).status).toBe(201);
    // A sale, so the seckill handler's job queue exists (queues are made at the first dispatch).
    expect((await http(d.url, 'POST', '/v1/items/log-sk/tickets', { userId: 'u1' }, 'svc')).status).toBe(202);
    await waitFor(() => db.sql`select 1 from ticket_outcomes where user_id = 'u1'`, (r) => r.length === 1);

    await redisServer.kill();
    // Every connection has met the refusal: the jobs connection's own warning (the queue's errors
    // are that connection's, passed on) and the workers' (BullMQ's other connection).
    const said = (msg: string) => d.output().includes(`"msg":"${msg}"`);
    await waitFor(async () => said('redis error') && said('redis error (workers)') && said('job queue error'), (ok) => ok, 15_000);
    await redisServer.start();
    await waitFor(() => http(d.url, 'GET', '/readyz'), (r) => r.status === 200, 20_000);

    expect(rawLines(d.output())).toEqual([]);
  });

  it('holds no warning of a leak for a webhook job whose tickets all call at once', async () => {
    const d = daemon!;
    // Answers a moment later, so every call of the job is out at once.
    const hook = await recordingDownstream((_req, res) => void setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'), 50));
    expect((await http(d.url, 'PUT', '/v1/items/log-wh', { handler: 'webhook', config: { url: hook.url }, gate: { mode: 'closed' } }, 'op')).status).toBe(201);
    for (let i = 0; i < 30; i++) expect((await http(d.url, 'POST', '/v1/items/log-wh/tickets', { userId: `w${i}` }, 'svc')).status).toBe(202);
    // All 30 admitted in one round: one job, one group, one deadline signal for the 30 calls.
    // (Each call listens for its abort: past 10, Node printed a MaxListenersExceededWarning.)
    expect((await http(d.url, 'PATCH', '/v1/items/log-wh/gate', { mode: 'manual', maxInFlight: 100 }, 'op')).status).toBe(200);
    await waitFor(() => db.sql`select count(*)::int as n from ticket_outcomes where item_id = 'log-wh'`.then((r) => r[0].n as number), (n) => n === 30);
    expect(hook.seen.length).toBe(30);
    expect(rawLines(d.output())).toEqual([]);
  });
});
