/** The scenario sets `npm run bench -- <name>` can run. Add new ones (flash-sale, gate, …) here. */
import type { BenchContext } from '../lib/harness.js';
import { queueScenario } from './queue.js';

export interface ScenarioOutput {
  /** The run's tables and notes (markdown, headings from ### down). */
  markdown: string;
}

export interface Scenario {
  title: string;
  run(ctx: BenchContext): Promise<ScenarioOutput>;
}

export const scenarios: Record<string, Scenario> = {
  queue: { title: 'queue: join, poll, reject-when-full, depth, memory', run: queueScenario },
};

export const DEFAULT_SCENARIO = 'queue';
