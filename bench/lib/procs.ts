/**
 * Child processes of a bench run: each in its own process group, all killed on exit, error or
 * Ctrl-C. Output is kept (last lines in memory, all of it in a log file) for the report.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface Child {
  name: string;
  proc: ChildProcess;
  /** Lines of output with pino level >= 50 (error, fatal) or not JSON at all. */
  problems: string[];
  exited: Promise<number | null>;
  alive(): boolean;
  stop(): Promise<void>;
}

const children = new Set<Child>();

/**
 * Runs `node --import tsx <file>` (what `tsx <file>` does, without the extra wrapper process): the
 * bench's own helpers (load generators, downstreams). BENCH_NODE_ARGS adds node flags to the children this way started (e.g. `--cpu-prof
 * --cpu-prof-dir=/tmp/prof` for a flame graph of the daemon under the scenario's load).
 */
export function spawnTsx(name: string, file: string, opts: { env?: Record<string, string>; args?: string[]; logFile?: string } = {}): Child {
  return spawnChild(name, process.execPath, [...benchNodeArgs(), '--import', 'tsx', file, ...(opts.args ?? [])], opts);
}

/** Runs a built JavaScript file (the daemon: dist/floodgate.mjs) with node, BENCH_NODE_ARGS as for spawnTsx, then `nodeArgs`. */
export function spawnNode(name: string, file: string, opts: { env?: Record<string, string>; args?: string[]; nodeArgs?: string[]; logFile?: string } = {}): Child {
  return spawnChild(name, process.execPath, [...benchNodeArgs(), ...(opts.nodeArgs ?? []), '--enable-source-maps', file, ...(opts.args ?? [])], opts);
}

const benchNodeArgs = () => (process.env.BENCH_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);

/** Any program (e.g. a redis-server the scenario owns), kept and killed like the node children. */
export function spawnChild(name: string, command: string, args: string[], opts: { env?: Record<string, string>; logFile?: string; cwd?: string } = {}): Child {
  const proc = spawn(command, args, {
    cwd: opts.cwd ?? repoRoot,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const log = opts.logFile ? createWriteStream(opts.logFile, { flags: 'a' }) : null;
  const problems: string[] = [];
  const onData = (buf: Buffer) => {
    log?.write(buf);
    for (const line of buf.toString('utf8').split('\n')) {
      if (!line.trim()) continue;
      let level = 60;
      try {
        level = (JSON.parse(line) as { level?: number }).level ?? 60;
      } catch {
        /* not a log line: keep it */
      }
      if (level >= 50 && problems.length < 200) problems.push(line.slice(0, 2000));
    }
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  let done = false;
  const exited = new Promise<number | null>((resolve) =>
    proc.once('exit', (code) => {
      done = true;
      children.delete(child);
      log?.end();
      resolve(code);
    }),
  );
  const child: Child = {
    name,
    proc,
    problems,
    exited,
    alive: () => !done,
    async stop() {
      if (done) return;
      signal(proc, 'SIGTERM');
      const timer = setTimeout(() => signal(proc, 'SIGKILL'), 8000);
      await exited;
      clearTimeout(timer);
    },
  };
  children.add(child);
  return child;
}

function signal(proc: ChildProcess, sig: NodeJS.Signals) {
  if (proc.pid === undefined) return;
  try {
    process.kill(-proc.pid, sig); // the whole group this child leads
  } catch {
    try {
      proc.kill(sig);
    } catch {
      /* already gone */
    }
  }
}

export async function stopAll(): Promise<void> {
  await Promise.all([...children].map((c) => c.stop()));
}

/** Last resort, synchronous (process 'exit'). */
export function killAllNow(): void {
  for (const c of children) signal(c.proc, 'SIGKILL');
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** Waits until GET <url>/healthz answers 200, failing early if the child dies. */
export async function waitHealthy(child: Child, url: string, timeoutMs = 60_000): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    if (!child.alive()) throw new Error(`${child.name} exited before it was ready:\n${child.problems.slice(-20).join('\n')}`);
    try {
      const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) return Date.now() - t0;
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${child.name} not healthy after ${timeoutMs} ms`);
}
