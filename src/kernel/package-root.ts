import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The folder of Floodgate's package.json, found by walking up from this module: the daemon reads
 * files of the repo at run time (the Lua scripts, the migrations, web/), and the same code runs
 * from `src/` (tests, tsx) and from the one-file build in `dist/` (`npm start`), which sit at
 * different depths.
 */
export function packageRoot(from = path.dirname(fileURLToPath(import.meta.url))): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const manifest = path.join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'floodgate') return dir;
    if (path.dirname(dir) === dir) throw new Error(`no floodgate package.json above ${from}`);
  }
}
