import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { killLeftChildren, trackChild } from './support/children.js';

const runDir = mkdtempSync(path.join(os.tmpdir(), 'fg-children-'));
afterAll(() => rmSync(runDir, { recursive: true, force: true }));

describe("the run's list of servers tests started", () => {
  it('kills a listed child still running at the end of the run, and forgets one that exited', async () => {
    const left = spawn('sleep', ['600'], { stdio: 'ignore' });
    const gone = spawn('sleep', ['0'], { stdio: 'ignore' });
    trackChild(left, 'sleep', runDir);
    trackChild(gone, 'sleep', runDir);
    await new Promise((r) => gone.once('exit', r));
    const exited = new Promise((r) => left.once('exit', (_code, signal) => r(signal)));
    expect(killLeftChildren(runDir)).toEqual([`sleep (pid ${left.pid})`]);
    expect(await exited).toBe('SIGKILL');
    expect(killLeftChildren(runDir)).toEqual([]);
  });
});
