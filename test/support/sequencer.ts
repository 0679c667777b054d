/**
 * Starts the slowest test files first. With files spread over a few workers, the suite lasts as
 * long as its most loaded worker; a 30 s file that starts last adds its 30 s to the end. vitest
 * orders by the durations it cached on an earlier run, and a clean clone (CI) has none: there it
 * would order by file size, which says little about time. The list holds the files that took more
 * than ~5 s of a worker's time (first line to last afterAll, so a cluster's or a browser's start
 * counts) in two full runs on the 2-core machine (3 Dec 2026), slowest first by their mean share of
 * the run; the seconds noted are that share of a ~120 s run on 4 workers. A file missing from it
 * only starts later, so it can be out of date without breaking anything.
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const SLOWEST_FIRST = [
  // Added 5 Dec 2026 from one full run on the 2-core machine (the file's whole time, alone on its worker).
  'processes-faults', // ~130 s
  'rolling-restart', // ~90 s
  'split-edges', // ~30 s
  'cluster-reshard', // ~26 s
  'cluster-sublines', // ~49 s
  'e2e-gate-auto', // ~35 s
  'gate-pace', // ~28 s
  'gate-postgres-pressure', // ~25 s
  'browser-console', // ~20 s
  'cluster-sale', // ~19 s
  'browser-wait', // ~18 s
  'e2e-gate-failover', // ~18 s
  'split-sale', // ~14 s
  'processes', // ~12 s
  'e2e-crash', // ~11 s
  'reservations', // ~11 s
  'split-ledger', // ~11 s
  'fault-postgres', // ~10 s
  'service-sharing', // ~10 s
  'api-tickets', // ~9 s
  'idle-items', // ~9 s
  'cluster-outage', // ~9 s
  'cluster-restart-fence', // ~10 s (added 7 Dec, evening)
  'cluster-outage-queue', // ~5 s (added 7 Dec, evening)
  'reconcile', // ~8 s
  'ticket-events', // ~8 s
  'e2e-reservations', // ~8 s
  'outage-redis', // ~8 s
  'e2e-zero-config', // ~7 s
  'infra', // ~7 s
  'reservations-property', // ~7 s
  'fault-redis-restart', // ~7 s
  'e2e-daemons', // ~7 s
  'coupon-webhook', // ~6 s
  'eta', // ~6 s
  'gate-manual', // ~6 s
  'sales', // ~5 s
  'seckill', // ~5 s
  'first-run', // ~5 s
];

function rank(spec: TestSpecification): number {
  const name = spec.moduleId.split('/').at(-1)!.replace(/\.test\.ts$/, '');
  const i = SLOWEST_FIRST.indexOf(name);
  return i === -1 ? SLOWEST_FIRST.length : i;
}

export default class SlowestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    return sorted.map((spec, i) => ({ spec, i })).sort((a, b) => rank(a.spec) - rank(b.spec) || a.i - b.i).map(({ spec }) => spec);
  }
}
