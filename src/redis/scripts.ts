import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';

const luaDir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'lua');

/** Loads every `name-<numKeys>.lua` in lua/, splicing `-- @include _lib` lines, as ioredis commands. */
export function loadScripts(): { name: string; numberOfKeys: number; lua: string }[] {
  const files = readdirSync(luaDir).filter((f) => /^[a-z-]+-\d+\.lua$/.test(f));
  return files.map((file) => {
    const [, name, keys] = /^([a-z-]+)-(\d+)\.lua$/.exec(file)!;
    const lua = readFileSync(path.join(luaDir, file), 'utf8').replace(/^-- @include (\w+)$/gm, (_, inc: string) =>
      readFileSync(path.join(luaDir, `${inc}.lua`), 'utf8'),
    );
    return { name: camel(name), numberOfKeys: Number(keys), lua };
  });
}

const camel = (s: string) => s.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

type Cmd = (...args: (string | number)[]) => Promise<unknown>;
export interface ScriptedRedis extends Redis {
  join: Cmd;
  admit: Cmd;
  settle: Cmd;
  cancel: Cmd;
  cut: Cmd;
  sweep: Cmd;
  readTicket: Cmd;
  define: Cmd;
  takeStock: Cmd;
  refundStock: Cmd;
  returnUnit: Cmd;
  setStock: Cmd;
  extendLeases: Cmd;
  lead: Cmd;
  block: Cmd;
  draw: Cmd;
  seriesAdd: Cmd;
}

const cache = loadScripts();

export function withScripts(redis: Redis): ScriptedRedis {
  for (const s of cache) {
    if (!(s.name in redis)) redis.defineCommand(s.name, { numberOfKeys: s.numberOfKeys, lua: s.lua });
  }
  return redis as ScriptedRedis;
}
