import { expect } from 'vitest';
import { scripts, type ScriptRunner } from '../../src/redis/scripts.js';

/** One call of every script on an item (defined with handler `external`), in an order where each finds what it needs. */
export function everyScriptCall(run: ScriptRunner['run'], item: string, now: number): Record<keyof typeof scripts, () => Promise<unknown>> {
  return {
    define: () => run(scripts.define, item, now, { secret: 'ab', definition: '{"handler":"external"}', gate: '', reopen: '0', epoch: '', born: 'b1', drawSeed: 'cd' }),
    join: () => run(scripts.join, item, now, { userId: 'u1', payload: '', source: '', defaultKeyQuota: '', memoryFull: '', uncounted: '' }),
    readTicket: () => run(scripts.readTicket, item, now, { seq: 1 }),
    admit: () => run(scripts.admit, item, now, { max: 1, leaseMs: 1000, leasePrefix: 'p.', autoCap: '', version: '' }),
    settle: () => run(scripts.settle, item, now, {}, [1, 'p.1', 'succeeded', '{"status":"succeeded"}', '0', '0', '']),
    extendLeases: () => run(scripts.extendLeases, item, now, { until: now + 1000 }, [1, 'p.1']),
    sweep: () => run(scripts.sweep, item, now, {}),
    readDoubt: () => run(scripts.readDoubt, item, now, { until: now }),
    relaunch: () => run(scripts.relaunch, item, now, { leaseMs: 1000, leasePrefix: 'r.' }, [1]),
    resolveDoubt: () => run(scripts.resolveDoubt, item, now, {}, [1, '']),
    cancel: () => run(scripts.cancel, item, now, { seq: 1, outcome: '{}', record: 'x' }),
    trimCancels: () => run(scripts.trimCancels, item, now, { lastN: 1, bound: 0, cutSeq: '' }, ['1-0']),
    holdBought: () => run(scripts.holdBought, item, now, {}, [1]),
    cut: () => run(scripts.cut, item, now, { stateChar: 'c', reason: 'item_closed', flag: 'closed', decidedAt: '', windowEnd: '', hold: '' }),
    draw: () => run(scripts.draw, item, now, { op: 'begin', first: '', order: '', places: '', size: '' }),
    block: () => run(scripts.block, item, now, { userId: 'u2', bit: 1, on: '1' }),
    setStock: () => run(scripts.setStock, item, now, { units: 3, shards: 2, idleOnly: '0', admissions: '', unitsWere: '' }),
    takeStock: () => run(scripts.takeStock, item, now, {}, [2]),
    refundStock: () => run(scripts.refundStock, item, now, { seq: 2, forfeit: '0', upTo: '' }),
    returnUnit: () => run(scripts.returnUnit, item, now, { cap: '' }, ['7', 'u1']),
    forgetUser: () => run(scripts.forgetUser, item, now, { userId: 'u9', seq: 1 }),
    lead: () => run(scripts.lead, item, now, { me: 'd1', ttlMs: 1000 }),
    gatePublish: () => run(scripts.gatePublish, item, now, { me: 'd1' }, ['aLimit', '5']),
    seriesAdd: () => run(scripts.seriesAdd, item, now, { second: 5, point: '{}', keep: 60 }),
    snapshot: () => run(scripts.snapshot, item, now, { probe: '' }),
    ackEnded: () => run(scripts.ackEnded, item, now, { group: 'g', ttl: 60 }, ['0-1', '1']),
    splitNumber: () => run(scripts.splitNumber, item, now, { userId: 'u3', source: '', defaultKeyQuota: '' }),
    splitJoin: () => run(scripts.splitJoin, item, now, { userId: 'u3', num: 5, payload: '', source: 'k1' }),
    splitPeek: () => run(scripts.splitPeek, item, now, { upTo: 10, max: 5 }),
    splitAdmit: () => run(scripts.splitAdmit, item, now, { leaseMs: 1000, leasePrefix: 'q.' }, [1]),
    splitUnits: () => run(scripts.splitUnits, item, now, { delta: 1 }),
    splitGate: () => run(scripts.splitGate, item, now, { op: 'lock', token: 't', want: '', inFlight: '', autoCap: '', taken: '', lastNum: '', version: '' }),
  };
}

/** What everyScriptCall's calls answer, run in order on a fresh item (closed by `cut` before the split scripts run: no join number is taken, and the gate's lock is refused). */
export function everyScriptReply(now: number) {
  return { define: [2, expect.any(String), expect.any(Number)], join: [0, 1, expect.any(String), 0], admit: [0, 1, 1, expect.any(String), '', 'p.1', now + 1000], settle: [1], readDoubt: [], relaunch: [], resolveDoubt: 0, holdBought: 0, trimCancels: 0, extendLeases: [0], lead: 1, gatePublish: 1, seriesAdd: 1, snapshot: [expect.arrayContaining(['handler', 'external']), expect.any(Array), expect.any(Array), expect.any(Array), expect.any(Number), expect.any(String), ''], ackEnded: 0, takeStock: [2, 1], refundStock: 1, returnUnit: 1, forgetUser: 0, splitNumber: [0, 0], splitJoin: [-3, 0, '', 0], splitPeek: [0, 10, expect.any(Number)], splitAdmit: [0], splitUnits: 1, splitGate: -3 };
}
