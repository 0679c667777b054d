/** A self-contained HTML reference built from the OpenAPI document (no CDN, works offline). */
export function docsPage(doc: { info: { title: string; version: string }; paths?: Record<string, Record<string, { summary?: string; tags?: string[] }>> }): string {
  const esc = (s: string) => s.replace(/[&<>"]/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[ch]!);
  const rows = Object.entries(doc.paths ?? {}).flatMap(([path, ops]) =>
    Object.entries(ops).map(
      ([method, op]) =>
        `<tr><td><code>${method.toUpperCase()}</code></td><td><code>${esc(path)}</code></td><td>${esc(op.summary ?? '')}</td><td>${esc((op.tags ?? []).join(', '))}</td></tr>`,
    ),
  );
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(doc.info.title)}</title>
<style>body{font:15px system-ui,sans-serif;margin:2em;max-width:70em}td{padding:.3em .8em;border-bottom:1px solid #ddd}</style></head>
<body><h1>${esc(doc.info.title)} <small>${esc(doc.info.version)}</small></h1>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a>. Auth: <code>Authorization: Bearer &lt;key&gt;</code>.</p>
<table><thead><tr><th>Method</th><th>Path</th><th>What</th><th>Group</th></tr></thead><tbody>${rows.join('\n')}</tbody></table></body></html>`;
}
