import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { OpenAPIHono, createRoute } from '@hono/zod-openapi';
import { FloodgateError } from '../kernel/errors.js';

/**
 * `/docs`: the API reference, Swagger UI over `/openapi.json`, served by the daemon itself from
 * the swagger-ui-dist package: no CDN, works offline and behind a firewall. Its files live under
 * `/docs/assets/<hash>/`, the hash naming the viewer's version and our start script, so a browser
 * may keep them for a year; the page itself is kept five minutes. A strict Content-Security-Policy
 * lets the page run only its own scripts and talk only to this origin ("Try it out" included).
 */
const uiDir = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
const uiVersion = (JSON.parse(readFileSync(join(uiDir, 'package.json'), 'utf8')) as { version: string }).version;

// No inline script: the page's CSP allows scripts from this origin only.
const startScript = `window.addEventListener('load', function () {
  window.ui = SwaggerUIBundle({
    url: '/openapi.json', dom_id: '#swagger-ui', deepLinking: true,
    validatorUrl: null, // the default asks a public validator service for a badge
    presets: [SwaggerUIBundle.presets.apis], layout: 'BaseLayout',
  });
});
`;

const assetTypes: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'text/javascript; charset=utf-8',
  'favicon-32x32.png': 'image/png',
  'start.js': 'text/javascript; charset=utf-8',
};

const hash = createHash('sha256').update(`${uiVersion}\n${startScript}`).digest('hex').slice(0, 12);
export const docsAssetBase = `/docs/assets/${hash}`;

export const docsCsp = [
  "default-src 'none'",
  "script-src 'self'",
  // Swagger UI sets style attributes from script.
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const page = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Floodgate API reference</title>
<link rel="stylesheet" href="${docsAssetBase}/swagger-ui.css">
<link rel="icon" type="image/png" href="${docsAssetBase}/favicon-32x32.png">
</head><body>
<noscript><p>This reference needs JavaScript. The OpenAPI document itself is at <a href="/openapi.json">/openapi.json</a>.</p></noscript>
<div id="swagger-ui"></div>
<script src="${docsAssetBase}/swagger-ui-bundle.js"></script>
<script src="${docsAssetBase}/start.js"></script>
</body></html>
`;

/** Read (and gzipped) on first request, then kept: the bundle is 1.7 MB, 0.5 MB gzipped. */
const loaded = new Map<string, { raw: Buffer; gz: Buffer }>();
function asset(name: string) {
  let a = loaded.get(name);
  if (!a) {
    const raw = name === 'start.js' ? Buffer.from(startScript) : readFileSync(join(uiDir, name));
    a = { raw, gz: gzipSync(raw) };
    loaded.set(name, a);
  }
  return a;
}

const html = { 'text/html': { schema: { type: 'string' as const } } };

export function docsRoutes() {
  const app = new OpenAPIHono();
  app.openAPIRegistry.registerPath(
    createRoute({ method: 'get', path: '/docs', tags: ['operations'], summary: 'This API reference, as a web page', responses: { 200: { content: html, description: 'The page' } } }),
  );
  app.get('/docs', (c) => {
    c.header('Content-Security-Policy', docsCsp);
    c.header('X-Content-Type-Options', 'nosniff');
    c.header('Referrer-Policy', 'no-referrer');
    c.header('Cache-Control', 'public, max-age=300');
    return c.html(page);
  });
  app.get('/docs/assets/:hash/:file', (c) => {
    const { file } = c.req.param();
    const type = assetTypes[file];
    if (c.req.param('hash') !== hash || !type) throw new FloodgateError('not_found', 'No such file.');
    const { raw, gz } = asset(file);
    const zipped = /\bgzip\b/.test(c.req.header('accept-encoding') ?? '') && type !== 'image/png';
    c.header('Content-Type', type);
    c.header('Cache-Control', 'public, max-age=31536000, immutable');
    c.header('X-Content-Type-Options', 'nosniff');
    c.header('Vary', 'Accept-Encoding');
    if (zipped) c.header('Content-Encoding', 'gzip');
    // The file's own bytes, not a copy per request (1.7 MB for the script, held until written).
    const bytes = zipped ? gz : raw;
    return c.body(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) as Uint8Array<ArrayBuffer>, 200);
  });
  return app;
}
