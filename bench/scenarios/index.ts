/** The scenario sets `npm run bench -- <name>` can run. A scenario imports nothing from here (the types are in lib/harness.ts). */
import type { Scenario } from '../lib/harness.js';
import { overheadScenario } from './overhead.js';
import { queueScenario } from './queue/index.js';

export const scenarios: Record<string, Scenario> = {
  queue: { title: 'queue: join, poll, reject-when-full, depth, memory', run: queueScenario },
  overhead: { title: 'overhead: bare Hono with and without the middleware the daemon mounts', run: overheadScenario },
  'flash-sale': { title: 'flash-sale: 10k units, 100k users × 2 joins, orders/s vs the synchronous design', run: async (ctx) => (await import('./flash-sale/index.js')).flashSaleScenario(ctx) },
  accepted: { title: 'accepted: 10k users join once each for 10k units; the daemon CPU per accepted join + its order (also part of flash-sale)', run: async (ctx) => (await import('./flash-sale/accepted.js')).acceptedScenario(ctx) },
  chaos: { title: 'chaos: a flash sale through Postgres and Redis faults, hostile input and a redirecting webhook; losses per fault', timeoutS: 900, run: async (ctx) => (await import('./chaos/index.js')).chaosScenario(ctx) },
  access: { title: 'access: joins with quotas vs without, admitted polls with tokens vs without, the pre-queue draw of 100k and 1M', run: async (ctx) => (await import('./access.js')).accessScenario(ctx) },
  events: { title: 'events: 20,000 open SSE streams on one daemon: memory per stream, CPU while the line moves, sell-out to last terminal event', run: async (ctx) => (await import('./events.js')).eventsScenario(ctx) },
  'many-items': { title: 'many-items: an idle daemon with 10,000 items: CPU, Redis commands, /metrics and the item list', timeoutS: 900, run: async (ctx) => (await import('./many-items.js')).manyItemsScenario(ctx) },
  cluster: { title: 'cluster: joins/s through 1, 2 and 3 daemon processes on a 3-master Redis Cluster vs one redis-server', run: async (ctx) => (await import('./cluster.js')).clusterScenario(ctx) },
  spread: { title: 'spread: one flash sale with its stock as 1, 10, 50 and 200 items, orders/s against one item', timeoutS: 900, run: async (ctx) => (await import('./spread.js')).spreadScenario(ctx) },
  flame: { title: 'flame: the join, poll and refusal paths and the bare Hono app under load with the CPU profiler: flame graphs (docs/flame-*.svg) and CPU per request', run: async (ctx) => (await import('./flame.js')).flameScenario(ctx) },
  'gate-sim': { title: 'gate-sim: the control law alone on the downstream family in the virtual-clock simulation, over 32 seeds per member, against a fixed limit', run: async (ctx) => (await import('./gate-sim.js')).gateSimScenario(ctx) },
  gate: { title: 'gate: the auto gate on a family of nine downstreams stepping C → C/4 → C, with a tuned manual gate and the BullMQ limiter as baselines', timeoutS: 900, run: async (ctx) => (await import('./gate.js')).gateScenario(ctx) },
};

export const DEFAULT_SCENARIO = 'queue';
