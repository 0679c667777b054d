/**
 * The `gate` bench's report: one row per downstream of the family × phase × contender, with
 * delivered ÷ capacity, time flooded and recovery, each auto row judged against the targets.
 */
import { meets, T_DELIVERED, T_FLOODED, type PhaseResult } from './gate-analysis.js';
import type { Downstream } from './gate-family.js';
import { mdTable } from './report.js';

export interface MemberResult {
  d: Downstream;
  runs: { name: string; phases: PhaseResult[]; notes: string[] }[];
  plot: string | null;
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const rec = (r: PhaseResult) => (r.recoveryS === null ? 'never' : `${r.recoveryS.toFixed(1)} s`);
const PHASE = ['C (cold start)', 'C/4', 'C'];

export function gateReport(members: MemberResult[], machine: string): string {
  const rows = members.flatMap(({ d, runs }) =>
    runs.flatMap((run) =>
      run.phases.map((r, i) => [
        i === 0 && run === runs[0] ? `**${d.name}** (${d.about})` : '',
        i === 0 ? run.name : '',
        PHASE[i],
        r.delivered.toFixed(2),
        pct(r.flooded),
        rec(r),
        `${r.e503}`,
        r.p50 === null ? '–' : r.p50.toFixed(0),
        run.name === 'auto' ? (meets(d, r) ? 'yes' : '**no**') : '',
      ]),
    ),
  );
  const auto = members.flatMap(({ d, runs }) => (runs.find((r) => r.name === 'auto')?.phases ?? []).map((r) => ({ d, r })));
  const met = auto.filter(({ d, r }) => meets(d, r)).length;
  return [
    `### Per downstream × phase (${machine})`,
    '',
    mdTable(['downstream', 'contender', 'phase', 'delivered ÷ capacity', 'time flooded', 'recovery', '503s', 'p50 ms', 'auto meets targets'], rows),
    '',
    `Auto gate: ${met} of ${auto.length} rows meet every target (delivered ≥ ${T_DELIVERED}, flooded ≤ ${pct(T_FLOODED)}, recovery ≤ 2 s after a step and from the cold start, ≤ 5 round trips for the 500 ms member).`,
    '',
    '### Plots',
    '',
    ...members.filter((m) => m.plot).map((m) => `- ${m.d.name}: [${m.plot}](${m.plot})`),
    '',
    '### Method',
    '',
    `- The family (bench/lib/gate-family.ts, the same module the simulation test drives): ${members.map((m) => m.d.name).join(', ')}. Each steps C → C/4 → C, phases of max(8 s, 30 × its service time), its first calls 10× slow (a cold start); its own process answers real HTTP.`,
    '- Contenders, one after another against the same schedule: the daemon\'s `auto` gate on a fresh item (cold start), a `manual` gate tuned for phase 1 (K + 25% in flight, C + 10% per second), and a BullMQ worker with BullMQ\'s limiter at C per second (no daemon). Lines are filled beforehand so they never run dry.',
    '- **delivered ÷ capacity**: 200s over the true capacity integrated over the phase (phase 1 from the first answer). **time flooded**: share of the phase with a backlog over K. **recovery**: from the phase start (phase 1: the first answer) to the first 2 s in which every 1 s window delivered ≥ 0.85 of capacity with < 5% flooded.',
    '',
    '### Notes',
    '',
    ...members.flatMap(({ d, runs }) => runs.flatMap((r) => r.notes.map((n) => `- ${d.name} / ${r.name}: ${n}`))),
  ].join('\n');
}
