import { spawn } from 'node:child_process';
import type { Logger } from '../kernel/logger.js';
import type { SystemChanges } from './system-changes.js';
import { tail } from '../kernel/wait.js';

/**
 * Installs a Debian package as a system change (system-changes.ts): `apt-get install`, and once
 * more after `apt-get update` when the first try fails (a fresh machine often has no package
 * lists yet). Resolves whether or not it worked; the caller looks for what it needed.
 */
export async function aptInstall(pkg: string, changes: SystemChanges, log: Logger, env: NodeJS.ProcessEnv, instead: string): Promise<void> {
  const install = ['install', '-y', '--no-install-recommends', pkg];
  const why = `${pkg} is not installed`;
  const step = (args: string[]) => ({ command: `apt-get ${args.join(' ')}`, why, instead });
  let result = await changes.make(step(install), () => run('apt-get', install, env));
  if (result.code !== 0) {
    log.info({ exitCode: result.code, output: tail(result.output, 10) }, 'apt-get install failed, running apt-get update');
    const update = await changes.make(step(['update']), () => run('apt-get', ['update'], env));
    if (update.code !== 0) log.warn({ exitCode: update.code, output: tail(update.output, 10) }, 'apt-get update failed');
    result = await changes.make(step(install), () => run('apt-get', install, env));
  }
  if (result.code === 0) log.info({ package: pkg }, 'installed package');
  else log.error({ package: pkg, exitCode: result.code, output: tail(result.output, 20) }, 'apt-get install failed');
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    let output = '';
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, DEBIAN_FRONTEND: 'noninteractive' } });
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', (err) => resolve({ code: null, output: output + String(err) }));
    child.on('close', (code) => resolve({ code, output }));
  });
}
