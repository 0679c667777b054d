import type { z } from '@hono/zod-openapi';
import { jsonIssues } from '../kernel/json-issues.js';
import { textProblem } from '../kernel/safe-text.js';

/**
 * The door for hostile bytes (docs/api.md, Identifiers): every string the daemon accepts, at any
 * depth and as object keys too, is well-formed Unicode without NUL, and no body nests deeper than
 * MAX_JSON_DEPTH levels (kernel/json-issues.ts says why; the webhook holds its downstream's
 * answers to the same bound).
 */

/** A zod refinement for a whole request body: each problem becomes an issue naming its field. */
export function refineJson(value: unknown, ctx: z.RefinementCtx): void {
  for (const { path, message } of jsonIssues(value)) ctx.addIssue({ code: 'custom', path, message });
}

/** A zod refinement for one string field. */
export function refineText(value: string, ctx: z.RefinementCtx): void {
  const problem = textProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
}
