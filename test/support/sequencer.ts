/**
 * Starts the slowest test files first. With files spread over a few workers, the suite lasts as
 * long as its most loaded worker; a 30 s file that starts last adds its 30 s to the end. vitest
 * orders by the durations it cached on an earlier run, and a clean clone (CI) has none: there it
 * would order by file size, which says little about time. The list holds the files that took more
 * than ~5 s in a run on the 2-core machine (2 Dec 2026), slowest first; a file missing from it only
 * starts later, so it can be out of date without breaking anything.
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const SLOWEST_FIRST = [
  'cluster-sublines',
  'e2e-gate-auto',
  'gate-postgres-pressure',
  'e2e-gate-failover',
  'e2e-reservations',
  'browser-wait',
  'fault-postgres',
  'processes',
  'cluster-sale',
  'gate-pace',
  'browser-console',
  'idle-items',
  'reservations',
  'e2e-crash',
  'fault-redis-restart',
  'outage-postgres',
  'outage-redis',
  'coupon-webhook',
  'ticket-events',
  'first-run',
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
