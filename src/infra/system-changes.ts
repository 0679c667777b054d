import { mkdir } from 'node:fs/promises';
import type { Logger } from '../kernel/logger.js';

/**
 * The changes a zero-config start may make to the machine itself: installing a package, adding a
 * system account, widening a directory's mode. They are allowed only when no store is configured
 * (neither REDIS_URL nor DATABASE_URL) and FLOODGATE_PROVISION=auto, the default; each is logged on
 * one line (`changing the system`, with the command) before it runs. When they are not allowed none
 * is made: the start fails with a SetupNeeded error that names the command and the way around it.
 */
export interface SystemChanges {
  readonly allowed: boolean;
  /**
   * Runs `change` after logging `command` and `why`; when changes are not allowed, throws
   * SetupNeeded instead, saying that `command` is needed and `instead` what else would do.
   */
  make<T>(step: { command: string; why: string; instead: string }, change: () => Promise<T>): Promise<T>;
}

export class SetupNeeded extends Error {
  override name = 'SetupNeeded';
}

/** `refusal` says why changes are off, for the error (e.g. "FLOODGATE_PROVISION=off"). */
export function systemChanges(opts: { allowed: true; log: Logger } | { allowed: false; refusal: string }): SystemChanges {
  return {
    allowed: opts.allowed,
    async make(step, change) {
      if (!opts.allowed)
        throw new SetupNeeded(`${step.why}, which needs \`${step.command}\`; floodgate does not run it (${opts.refusal}). Run it yourself, or ${step.instead}.`);
      opts.log.warn({ command: step.command, why: step.why }, 'changing the system');
      return change();
    },
  };
}

/** The policy the daemon's configuration gives: changes only with provisioning on and no store configured. */
export function provisionPolicy(mode: 'auto' | 'off', configured: { redis: boolean; postgres: boolean }, log: Logger): SystemChanges {
  if (mode === 'off') return systemChanges({ allowed: false, refusal: 'FLOODGATE_PROVISION=off' });
  const named = [configured.redis && 'REDIS_URL', configured.postgres && 'DATABASE_URL'].filter(Boolean);
  if (named.length) return systemChanges({ allowed: false, refusal: `${named.join(' and ')} ${named.length > 1 ? 'are' : 'is'} set, so the machine is not set up for you` });
  return systemChanges({ allowed: true, log });
}

/**
 * Makes a data directory of a store the daemon starts itself (FLOODGATE_DATA_DIR), or says plainly
 * why it cannot: a file in the way ended the start with a bare `EEXIST` and a stack.
 */
export async function makeDataDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true }).catch((err: NodeJS.ErrnoException) => {
    const why =
      err.code === 'EEXIST' || err.code === 'ENOTDIR'
        ? 'a file is in the way (it must be a directory)'
        : err.code === 'EACCES' || err.code === 'EPERM'
          ? 'not allowed to create it'
          : err.code === 'EROFS'
            ? 'the file system is read-only'
            : err.code === 'ENOSPC'
              ? 'no space left on the device'
              : (err.code ?? err.message);
    throw new SetupNeeded(`cannot make the data directory ${dir} (FLOODGATE_DATA_DIR): ${why}`);
  });
}
