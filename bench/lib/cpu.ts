/**
 * CPU accounting from /proc, so each load says how busy the server, the load generator and Redis
 * were, and how much CPU went to processes outside the bench (a shared machine is noisy).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

const TICK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export interface CpuSnap {
  at: number;
  busy: number;
  procs: Record<string, number>;
}

/** [ppid, utime + stime] of a process, or null when it is gone. */
function statOf(pid: number): [number, number] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return [Number(f[1]), Number(f[11]) + Number(f[12])];
  } catch {
    return null;
  }
}

/**
 * CPU ticks of a process and of every process under it (the workers of a daemon run with
 * FLOODGATE_PROCESSES, tsx's esbuild service): NaN when the process itself is gone.
 */
function procTicks(pid: number): number {
  const own = statOf(pid);
  if (!own) return NaN;
  const parent = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    const p = Number(name);
    if (!Number.isInteger(p) || p === pid) continue;
    const st = statOf(p);
    if (st) (parent.set(p, st[0]), ticks.set(p, st[1]));
  }
  const under = (p: number): boolean => {
    for (let q = parent.get(p), hops = 0; q !== undefined && hops < 64; q = parent.get(q), hops++) if (q === pid) return true;
    return false;
  };
  let sum = own[1];
  for (const [p, t] of ticks) if (under(p)) sum += t;
  return sum;
}

/** `pids`: name → pid of the processes to account for separately. */
export function cpuSnap(pids: Record<string, number | undefined>): CpuSnap {
  const [, ...f] = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq, steal] = f.map(Number);
  const procs: Record<string, number> = {};
  for (const [name, pid] of Object.entries(pids)) if (pid) procs[name] = procTicks(pid);
  return { at: performance.now(), busy: user + nice + system + irq + softirq + steal, procs };
}

/** Cores used between two snapshots: per named process, and `other` = everything else. */
export function cpuUse(a: CpuSnap, b: CpuSnap): Record<string, number> {
  const secs = (b.at - a.at) / 1000;
  const out: Record<string, number> = {};
  let ours = 0;
  for (const name of Object.keys(a.procs)) {
    const d = b.procs[name] - a.procs[name];
    if (Number.isFinite(d)) {
      out[name] = d / TICK / secs;
      ours += d;
    }
  }
  out.other = Math.max(0, (b.busy - a.busy - ours) / TICK / secs);
  return out;
}
