import { TrieRouter } from 'hono/router/trie-router';

/**
 * Which methods a path answers, from the app's own route table, so the not-found handler can
 * tell a wrong method on a known path (`405` with `Allow`) from an unknown path (`404`). Unlike
 * hono's methodNotAllowed middleware this costs nothing on the requests that match a route: it
 * runs only once a request has already missed. HEAD comes with GET (Hono answers it from GET).
 *
 *   const allowed = allowedMethods(app.routes);
 *   allowed('/v1/tickets/abc')  // ['GET', 'HEAD', 'DELETE']
 *   allowed('/nowhere')         // []
 */
export function allowedMethods(routes: readonly { method: string; path: string }[]): (path: string) => string[] {
  let router: TrieRouter<string> | undefined;
  return (path) => {
    // Built on first use: by then every route is registered. Middleware (method ALL) is no endpoint.
    if (!router) {
      router = new TrieRouter<string>();
      for (const r of routes) if (r.method !== 'ALL') router.add('ALL', r.path, r.method.toUpperCase());
    }
    const methods = new Set(router.match('ALL', path)[0].map(([method]) => method));
    if (methods.has('GET')) methods.add('HEAD');
    return ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'].filter((m) => methods.has(m));
  };
}
