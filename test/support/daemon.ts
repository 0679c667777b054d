import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { trackChild } from './children.js';
import { redisUrl } from './redis.js';

const root = path.resolve(import.meta.dirname, '../..');
/** The daemon as `npm start` runs it (scripts/build.mjs). */
export const builtDaemon = path.join(root, 'dist/floodgate.mjs');

/**
 * The settings of a daemon process on the tests' Redis and a test database: its own key prefix,
 * service key `svc` and operator key `op`, and any others given.
 */
export const processEnv = (databaseUrl: string, prefix: string, more: Record<string, string> = {}) => ({
  REDIS_URL: redisUrl(),
  DATABASE_URL: databaseUrl,
  FLOODGATE_REDIS_PREFIX: prefix,
  FLOODGATE_SERVICE_KEYS: 'svc',
  FLOODGATE_OPERATOR_KEYS: 'op',
  ...more,
});

export interface RunningDaemon {
  url: string;
  proc: ChildProcess;
  output(): string;
  /** Sends a signal and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * Starts the daemon as a user would (`npm start`: dist/floodgate.mjs, which the tests' global
 * setup builds), on a free port, and waits until it says it listens. `cwd` (default: the repository) is where it looks for `.env` and keeps `.floodgate`.
 */
export async function startDaemonProcess(
  env: Record<string, string>,
  opts: { cwd?: string; /** Processes that must say they listen (FLOODGATE_PROCESSES). */ listening?: number; /** Sees the output as it comes, before the start is done, with the process (to signal it mid-start). */ onOutput?: (all: string, proc: ChildProcess) => void; /** In a process group of its own, which stop() signals whole, as a terminal's Ctrl-C does. */ group?: boolean } = {},
): Promise<RunningDaemon> {
  const proc = spawn(process.execPath, ['--enable-source-maps', builtDaemon], {
    cwd: opts.cwd ?? root,
    env: { ...process.env, PORT: '0', LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: opts.group,
  });
  trackChild(proc, 'floodgate.mjs');
  let out = '';
  const add = (d: Buffer) => {
    out += d;
    opts.onOutput?.(out, proc);
  };
  proc.stdout!.on('data', add);
  proc.stderr!.on('data', add);
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.kill('SIGKILL'); // never leak a daemon the test could not use
      reject(new Error(`daemon did not start:\n${out}`));
    }, 30_000);
    const onData = () => {
      const all = [...out.matchAll(/"url":"(http:\/\/127\.0\.0\.1:\d+)".*"msg":"floodgate listening"/g)];
      const m = all.length >= (opts.listening ?? 1) ? all[0] : null;
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    proc.stdout!.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer); // a daemon that exited at start leaves no 30 s timer behind
      reject(new Error(`daemon exited ${code}:\n${out}`));
    });
  });
  return {
    url,
    proc,
    output: () => out,
    stop: async (signal = 'SIGTERM') => {
      if (proc.exitCode === null) {
        if (opts.group) process.kill(-proc.pid!, signal);
        else proc.kill(signal);
      }
      return exited;
    },
  };
}
