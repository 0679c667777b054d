import type { ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { inject } from 'vitest';

/**
 * Servers a test starts as processes (redis-server, the daemon) must not outlive the run: a file
 * kills its own in afterAll, and on its worker's exit, but a worker that vitest ends with a signal
 * (a hook timed out, the run was stopped) runs neither, and a child of a dead parent lives on (a
 * 3-node cluster was found still running after a failed run). So each such child is also listed
 * here, under the run's folder, and the run's teardown (test/global-setup.ts) kills what is left.
 */
export function trackChild(proc: ChildProcess, what: string, runDir = inject('runDir')) {
  if (!proc.pid) return;
  const dir = path.join(runDir, 'children');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, String(proc.pid));
  writeFileSync(file, what);
  proc.once('exit', () => rmSync(file, { force: true }));
}

/** Kills every listed child still alive whose command line still names what it was (a pid can be reused). */
export function killLeftChildren(runDir: string): string[] {
  const dir = path.join(runDir, 'children');
  const killed: string[] = [];
  let pids: string[] = [];
  try {
    pids = readdirSync(dir);
  } catch {
    return killed;
  }
  for (const pid of pids) {
    const what = readFileSync(path.join(dir, pid), 'utf8');
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue; // gone
    }
    if (!cmdline.includes(what)) continue;
    try {
      process.kill(Number(pid), 'SIGKILL');
      killed.push(`${what} (pid ${pid})`);
    } catch {
      /* gone meanwhile */
    }
  }
  return killed;
}
