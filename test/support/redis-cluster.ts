import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { afterAll } from 'vitest';
import { itemKeys, opRevsKey } from '../../src/redis/keys.js';
import { trackChild } from './children.js';
import { freePort } from './proxy.js';

const run = promisify(execFile);

export interface ClusterNodeProc {
  port: number;
  /** SIGKILLs the node (no restart): its replica, if any, is promoted after the node timeout. */
  kill(): Promise<void>;
  /** Starts a killed node again on its own files (nodes.conf, the AOF): what it wrote before its last fsync is back. */
  restart(): Promise<void>;
  /** The node's files (nodes.conf, appendonlydir): copied while it is killed, put back for a restart from older data. */
  dir: string;
}

export interface OwnCluster {
  /** `host:port,…` of every node: what FLOODGATE_REDIS_CLUSTER takes. */
  seeds: string;
  nodes: ClusterNodeProc[];
  /** The port of the master that serves `key`'s slot now. */
  masterOf(key: string): Promise<number>;
  /** Waits until every live node says `cluster_state:ok` and `key`'s slot is served by a master other than `notPort`. */
  waitPromoted(key: string, notPort: number, timeoutMs?: number): Promise<number>;
  /** Waits until every live node says `cluster_state:ok` (a restarted node taken back). */
  untilOk(timeoutMs?: number): Promise<void>;
  /** A plain connection to one node (closed after the file). */
  node(port: number): Redis;
  /**
   * Moves `key`'s slot to the master on `toPort` as `redis-cli --cluster reshard` does: SETSLOT
   * IMPORTING on the target, MIGRATING on the source, the slot's keys MIGRATEd `batch` at a time
   * (`pauseMs` between batches, so that a test's requests land mid-move), then SETSLOT NODE on
   * the target, the source and the other masters. Resolves to the keys moved. `first`: keys
   * moved before the others, after which `midway` runs (the slot half moved).
   */
  moveSlot(key: string, toPort: number, opts?: { batch?: number; pauseMs?: number; first?: string[]; midway?: () => Promise<unknown> }): Promise<number>;
}

/** Node timeout: how long a killed master stays failing before its replica takes over. */
export const NODE_TIMEOUT_MS = 1000;

/**
 * A Redis Cluster of this test file's own: `masters` masters (+ `replicas` each), from the
 * distribution's redis-server on free ports, with AOFs in a temporary folder; killed and removed
 * after the file. Resolves once every node reports `cluster_state:ok`.
 */
export async function ownCluster(opts: { masters?: number; replicas?: number } = {}): Promise<OwnCluster> {
  const masters = opts.masters ?? 3;
  const replicas = opts.replicas ?? 0;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'fg-cluster-'));
  const procs = new Map<number, ChildProcess>();
  const conns: Redis[] = [];
  const ports: number[] = [];
  for (let i = 0; i < masters * (1 + replicas); i++) ports.push(await freePort({ bus: true }));

  const killPort = async (port: number) => {
    const p = procs.get(port);
    procs.delete(port);
    if (!p || p.exitCode !== null) return;
    const exited = new Promise((resolve) => p.once('exit', resolve));
    p.kill('SIGKILL');
    await exited;
  };
  // Also on exit: a file whose earlier afterAll timed out skips this one, and the nodes would outlive it.
  const killAllNow = () => procs.forEach((p) => p.kill('SIGKILL'));
  process.once('exit', killAllNow);
  afterAll(async () => {
    process.off('exit', killAllNow);
    for (const c of conns) c.disconnect();
    await Promise.all([...procs.keys()].map(killPort));
    rmSync(dir, { recursive: true, force: true });
  });

  await Promise.all(ports.map((port) => startNode(port, dir, procs)));
  const args = ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', String(replicas), '--cluster-yes'];
  await run('redis-cli', args, { timeout: 30_000 });

  const node = (port: number) => {
    const c = new Redis({ host: '127.0.0.1', port, maxRetriesPerRequest: 1, lazyConnect: false, retryStrategy: () => null });
    c.on('error', () => {});
    conns.push(c);
    return c;
  };
  const probes = new Map<number, Redis>();
  // (Made again after its node was killed: a probe does not reconnect.)
  const probe = (port: number) => {
    const known = probes.get(port);
    if (known && known.status !== 'end' && known.status !== 'close') return known;
    probes.set(port, node(port));
    return probes.get(port)!;
  };
  const live = () => ports.filter((p) => procs.has(p));

  async function until<T>(what: string, fn: () => Promise<T | null>, timeoutMs: number): Promise<T> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const v = await fn().catch(() => null);
      if (v !== null) return v;
      if (Date.now() > end) throw new Error(`cluster: ${what} not within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const allOk = async () => {
    const infos = await Promise.all(live().map((p) => probe(p).cluster('INFO') as Promise<string>));
    return infos.every((i) => i.includes('cluster_state:ok')) ? true : null;
  };
  const masterOf = async (key: string) => {
    const slot = Number(await probe(live()[0]).cluster('KEYSLOT', key));
    const slots = await probe(live()[0]).cluster('SLOTS');
    const range = slots.find(([a, b]) => slot >= a && slot <= b);
    if (!range?.[2]) throw new Error(`slot ${slot} unserved`);
    return range[2][1];
  };
  await until('cluster_state:ok', allOk, 30_000);
  // Replicas report ok before their replication link is up: wait for every one to be in sync.
  if (replicas) {
    await until(
      'replicas in sync',
      async () => {
        const infos = await Promise.all(live().map((p) => probe(p).info('replication')));
        return infos.every((i) => i.includes('role:master') || i.includes('master_link_status:up')) ? true : null;
      },
      30_000,
    );
  }

  return {
    seeds: ports.map((p) => `127.0.0.1:${p}`).join(','),
    nodes: ports.map((port) => ({ port, kill: () => killPort(port), restart: () => startNode(port, dir, procs), dir: path.join(dir, String(port)) })),
    masterOf,
    waitPromoted: (key, notPort, timeoutMs = 30_000) =>
      until(
        'failover',
        async () => {
          if (!(await allOk())) return null;
          const m = await masterOf(key);
          return m !== notPort ? m : null;
        },
        timeoutMs,
      ),
    node,
    untilOk: async (timeoutMs = 30_000) => void (await until('cluster_state:ok', allOk, timeoutMs)),
    moveSlot: async (key, toPort, { batch = 1, pauseMs = 0, first = [], midway } = {}) => {
      const slot = Number(await probe(live()[0]).cluster('KEYSLOT', key));
      const fromPort = await masterOf(key);
      if (fromPort === toPort) throw new Error(`slot ${slot} is on ${toPort} already`);
      const from = probe(fromPort);
      const to = probe(toPort);
      const fromId = (await from.cluster('MYID')) as string;
      const toId = (await to.cluster('MYID')) as string;
      await to.cluster('SETSLOT', slot, 'IMPORTING', fromId);
      await from.cluster('SETSLOT', slot, 'MIGRATING', toId);
      let moved = 0;
      if (first.length) {
        await from.migrate('127.0.0.1', toPort, '', 0, 5000, 'KEYS', ...first);
        moved += first.length;
      }
      if (midway) await midway();
      for (;;) {
        const keys = (await from.cluster('GETKEYSINSLOT', slot, batch)) as string[];
        if (!keys.length) break;
        await from.migrate('127.0.0.1', toPort, '', 0, 5000, 'KEYS', ...keys);
        moved += keys.length;
        if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
      }
      await to.cluster('SETSLOT', slot, 'NODE', toId);
      await from.cluster('SETSLOT', slot, 'NODE', toId);
      const masters = await Promise.all(live().map(async (p) => ((await probe(p).info('replication')).includes('role:master') ? p : null)));
      for (const p of masters) if (p !== null && p !== toPort && p !== fromPort) await probe(p).cluster('SETSLOT', slot, 'NODE', toId);
      return moved;
    },
  };
}

function startNode(port: number, root: string, procs: Map<number, ChildProcess>): Promise<void> {
  const dir = path.join(root, String(port));
  mkdirSync(dir, { recursive: true });
  // repl-diskless-sync-delay 0: a replica's first full sync starts at once (by default a master
  // waits 5 s for more replicas to share the transfer, and ownCluster waits for every replica to be
  // in sync: a cluster with replicas took 6.2 s to build, 2.1 s with it).
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', String(NODE_TIMEOUT_MS), '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--daemonize', 'no', '--repl-diskless-sync-delay', '0'];
  const p = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  trackChild(p, 'redis-server');
  procs.set(port, p);
  let out = '';
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server ${port} did not start:\n${out}`)), 10_000);
    const onData = (d: Buffer) => {
      out += d;
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        // Keep draining: a full pipe would block the server.
        resolve();
      }
    };
    p.stdout!.on('data', onData);
    p.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`redis-server ${port} exited ${code}:\n${out}`));
    });
  });
}

/**
 * An item id (`stem-N`, the first that fits) whose keys are on a master other than the one
 * holding the operators' global mark, and that `fits` (say, a master with a replica): what a
 * fault on that master rolls back leaves the mark standing.
 */
export async function itemOffTheMarksMaster(cluster: OwnCluster, prefix: string, stem: string, fits: (port: number) => Promise<boolean> = async () => true): Promise<{ item: string; port: number }> {
  const markMaster = await cluster.masterOf(opRevsKey(prefix));
  for (let i = 0; ; i++) {
    const port = await cluster.masterOf(itemKeys(prefix, `${stem}-${i}`).meta);
    if (port !== markMaster && (await fits(port))) return { item: `${stem}-${i}`, port };
  }
}
