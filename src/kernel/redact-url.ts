/**
 * A connection URL fit for a log line: its password replaced by `***`
 * (`redis://:s3cret@h:6379` → `redis://:***@h:6379`). A string that does not parse as a URL has
 * anything between `:` and `@` masked instead.
 */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (!u.password) return url;
    u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/:[^:@/]*@/, ':***@');
  }
}
