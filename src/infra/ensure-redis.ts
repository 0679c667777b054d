import { spawn, type ChildProcess } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, mkdir, open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';

export interface EnsuredRedis {
  url: string;
  started: boolean;
  stop(): Promise<void>;
}

export interface EnsureRedisOptions {
  url?: string;
  dataDir: string;
  log: Logger;
  autoInstall: boolean;
  port?: number;
  /** The environment child processes inherit and PATH is searched in (main passes the process environment). */
  env: NodeJS.ProcessEnv;
}

const HOST = '127.0.0.1';
const DEFAULT_PORT = 6379;
const PROBE_TIMEOUT_MS = 500;
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const LOG_FILE = 'redis-server.log';

type Probe = { state: 'pong' } | { state: 'refused' } | { state: 'other'; error: string };

/** Returns a Redis URL: the configured one, a local Redis on the port, or a redis-server we start ourselves. */
export async function ensureRedis(opts: EnsureRedisOptions): Promise<EnsuredRedis> {
  if (opts.url) return { url: opts.url, started: false, stop: async () => {} };

  const { log } = opts;
  const port = opts.port ?? DEFAULT_PORT;
  const url = `redis://${HOST}:${port}`;

  const first = await probeRedis(port);
  if (first.state === 'pong') {
    log.info({ url }, 'using local redis');
    return { url, started: false, stop: async () => {} };
  }
  if (first.state === 'other') throw portBusyError(port, first.error);

  let bin = await findOnPath('redis-server', opts.env);
  if (!bin && opts.autoInstall && process.getuid?.() !== 0) {
    log.warn({}, 'redis-server missing and auto-install needs root');
  }
  if (!bin && opts.autoInstall && process.getuid?.() === 0) {
    await aptInstallRedis(log, opts.env);
    bin = await findOnPath('redis-server', opts.env);
    // The Debian package may have started its own service on the default port while installing.
    const again = await probeRedis(port);
    if (again.state === 'pong') {
      log.info({ url }, 'using local redis');
      return { url, started: false, stop: async () => {} };
    }
  }
  if (!bin) {
    throw new Error(
      'redis-server was not found on PATH and no Redis answers on ' +
        `${HOST}:${port}. Install it (Debian/Ubuntu: "apt-get install -y redis-server") ` +
        'or set REDIS_URL to an existing Redis.',
    );
  }

  return startRedisServer(bin, port, path.resolve(opts.dataDir), log);
}

async function probeRedis(port: number): Promise<Probe> {
  const client = new Redis({
    host: HOST,
    port,
    lazyConnect: true,
    connectTimeout: PROBE_TIMEOUT_MS,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    enableOfflineQueue: false,
  });
  // The socket-level 'connect' event tells "nothing listens" apart from "something listens but is not a usable Redis".
  let connected = false;
  client.on('connect', () => (connected = true));
  // Without a listener ioredis reports connection errors as unhandled 'error' events.
  client.on('error', () => {});
  try {
    await withTimeout(client.connect(), PROBE_TIMEOUT_MS, 'no handshake reply within 500 ms');
    const reply = await withTimeout(client.ping(), PROBE_TIMEOUT_MS, 'no PING reply within 500 ms');
    return reply === 'PONG' ? { state: 'pong' } : { state: 'other', error: `unexpected reply ${reply}` };
  } catch (err) {
    if (!connected) return { state: 'refused' };
    return { state: 'other', error: err instanceof Error ? err.message : String(err) };
  } finally {
    client.disconnect();
  }
}

function portBusyError(port: number, detail: string): Error {
  return new Error(
    `something is listening on ${HOST}:${port} but it did not answer a Redis PING (${detail}). ` +
      'Free the port, pick another one, or set REDIS_URL.',
  );
}

async function findOnPath(name: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not in this PATH entry
    }
  }
  return undefined;
}

async function aptInstallRedis(log: Logger, env: NodeJS.ProcessEnv): Promise<void> {
  const install = ['install', '-y', '--no-install-recommends', 'redis-server'];
  log.info({ command: `apt-get ${install.join(' ')}` }, 'installing redis-server');
  let result = await run('apt-get', install, env);
  if (result.code !== 0) {
    // A fresh machine often has no package lists yet; refresh them and retry once.
    log.info({ exitCode: result.code, output: tail(result.output, 10) }, 'apt-get install failed, running apt-get update');
    const update = await run('apt-get', ['update'], env);
    if (update.code !== 0) log.warn({ exitCode: update.code, output: tail(update.output, 10) }, 'apt-get update failed');
    log.info({ command: `apt-get ${install.join(' ')}` }, 'installing redis-server');
    result = await run('apt-get', install, env);
  }
  if (result.code === 0) log.info({}, 'installed redis-server');
  else log.error({ exitCode: result.code, output: tail(result.output, 20) }, 'apt-get install redis-server failed');
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    let output = '';
    const child = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...env, DEBIAN_FRONTEND: 'noninteractive' },
    });
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', (err) => resolve({ code: null, output: output + String(err) }));
    child.on('close', (code) => resolve({ code, output }));
  });
}

async function startRedisServer(bin: string, port: number, dataDir: string, log: Logger): Promise<EnsuredRedis> {
  await mkdir(dataDir, { recursive: true });
  const logPath = path.join(dataDir, LOG_FILE);
  const logFile = await open(logPath, 'a');
  let child: ChildProcess;
  try {
    child = spawn(
      bin,
      [
        '--port', String(port),
        '--bind', HOST,
        '--dir', dataDir,
        '--daemonize', 'no',
        '--appendonly', 'yes',
        '--appendfsync', 'everysec',
        '--maxmemory-policy', 'noeviction',
        '--save', '',
      ],
      { detached: false, stdio: ['ignore', logFile.fd, logFile.fd] },
    );
  } finally {
    // The child has its own copy of the descriptor.
    await logFile.close();
  }

  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null }));
  });
  // Exits during startup surface as the thrown error, after startup only stop() may end it.
  let exitExpected = true;
  void exited.then(({ code, signal }) => {
    if (!exitExpected) log.error({ code, signal, logPath }, 'redis-server exited unexpectedly');
  });

  const url = `redis://${HOST}:${port}`;
  let exitedEarly = false;
  void exited.then(() => (exitedEarly = true));
  const deadline = Date.now() + START_TIMEOUT_MS;
  let ready = false;
  while (!ready && !exitedEarly && Date.now() < deadline) {
    ready = (await probeRedis(port)).state === 'pong';
    if (!ready) await sleep(100);
  }
  if (!ready) {
    await killAndWait(child, exited);
    const why = exitedEarly ? 'exited during startup' : `did not answer PING within ${START_TIMEOUT_MS} ms`;
    throw new Error(`redis-server ${why}; last lines of ${logPath}:\n${await tailFile(logPath, 20)}`);
  }

  exitExpected = false;
  log.info({ url, dataDir, pid: child.pid }, 'started redis-server');
  let stopped: Promise<void> | undefined;
  return {
    url,
    started: true,
    stop: () => {
      exitExpected = true;
      stopped ??= killAndWait(child, exited).then(() => log.info({ url }, 'stopped redis-server'));
      return stopped;
    },
  };
}

async function killAndWait(child: ChildProcess, exited: Promise<unknown>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timedOut = await Promise.race([exited.then(() => false), sleep(STOP_TIMEOUT_MS).then(() => true)]);
  if (timedOut) {
    child.kill('SIGKILL');
    await exited;
  }
}

async function tailFile(file: string, lines: number): Promise<string> {
  try {
    return tail(await readFile(file, 'utf8'), lines);
  } catch {
    return '(no log output)';
  }
}

function tail(text: string, lines: number): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
