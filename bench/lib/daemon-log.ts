import { readFile } from 'node:fs/promises';

/** The daemon's warning lines (level 40), counted by message. */
export async function daemonWarnings(file: string): Promise<{ total: number; top: [string, number][] }> {
  const by = new Map<string, number>();
  let total = 0;
  const text = await readFile(file, 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const j = JSON.parse(line) as { level?: number; msg?: string; err?: unknown };
      if (j.level !== 40) continue;
      total++;
      const key = `${j.msg ?? ''}${j.err ? `: ${String(typeof j.err === 'string' ? j.err : JSON.stringify(j.err)).slice(0, 160)}` : ''}`;
      by.set(key, (by.get(key) ?? 0) + 1);
    } catch {
      /* not JSON */
    }
  }
  return { total, top: [...by].sort((a, b) => b[1] - a[1]).slice(0, 5) };
}
