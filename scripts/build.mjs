// Builds the daemon into one file, dist/floodgate.mjs (+ its source map), for `npm start`: the
// TypeScript is compiled once here (about half a second) instead of module by module at every
// start: a daemon's start and stop took 3.3–4.2 s of CPU through tsx's loader, 1.6–1.8 s built. Packages stay in
// node_modules; the Lua scripts, migrations and web/ are read from the repo at run time
// (src/kernel/package-root.ts). Written to a temporary name and renamed, so daemons started
// together from one checkout never run a half-written file.
import { build } from 'esbuild';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const outfile = path.join(root, 'dist/floodgate.mjs');
const started = Date.now();
const result = await build({
  absWorkingDir: root,
  entryPoints: ['src/main.ts'],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  sourcemap: 'linked',
  write: false,
  logLevel: 'warning',
});
mkdirSync(path.dirname(outfile), { recursive: true });
for (const file of result.outputFiles) {
  const tmp = `${file.path}.${process.pid}.tmp`;
  writeFileSync(tmp, file.contents);
  renameSync(tmp, file.path);
}
if (process.argv.includes('--verbose')) console.error(`built ${path.relative(root, outfile)} in ${Date.now() - started} ms`);
