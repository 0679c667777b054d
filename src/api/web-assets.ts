import { createHash } from 'node:crypto';
import path from 'node:path';
import { packageRoot } from '../kernel/package-root.js';
import { build } from 'esbuild';

/** The browser code of the pages, under web/ in the repo: one entry per page (and the proof-of-work worker). */
const entries = ['wait.ts', 'join.ts', 'pow-worker.ts', 'console.ts', 'page.css', 'console.css'];
const webDir = path.join(packageRoot(), 'web');

export interface Asset {
  body: Uint8Array;
  type: string;
}

export interface WebAssets {
  /** Served name of an entry (`wait.ts` → `wait.3f9a…js`): its hash makes it cacheable for ever. */
  url(entry: string): string;
  get(name: string): Asset | undefined;
}

/**
 * Bundles web/ with esbuild in memory, once per process (about a tenth of a second), so the pages
 * need no build step and no third-party host: uPlot and everything else come from node_modules
 * through this daemon. Names carry a content hash, so they are served `immutable`.
 */
export async function buildWebAssets(): Promise<WebAssets> {
  const out = await build({
    entryPoints: entries.map((e) => path.join(webDir, e)),
    bundle: true,
    write: false,
    minify: true,
    format: 'iife',
    target: ['es2020'],
    outdir: '/out',
    logLevel: 'silent',
  });
  const byName = new Map<string, Asset>();
  const urls = new Map<string, string>();
  for (const f of out.outputFiles) {
    const base = path.basename(f.path);
    const ext = path.extname(base);
    const stem = base.slice(0, -ext.length);
    const hash = createHash('sha256').update(f.contents).digest('hex').slice(0, 12);
    const name = `${stem}.${hash}${ext}`;
    byName.set(name, { body: f.contents, type: ext === '.css' ? 'text/css; charset=utf-8' : 'text/javascript; charset=utf-8' });
    urls.set(`${stem}${ext}`, `/assets/${name}`);
  }
  return {
    url: (entry) => urls.get(entry.replace(/\.ts$/, '.js')) ?? '/assets/missing',
    get: (name) => byName.get(name),
  };
}
