/**
 * A V8 CPU profile (`node --cpu-prof`, a .cpuprofile file) as a flame graph in SVG, and the
 * figures a reader compares across two of them: CPU time per request, and where the time goes
 * by room (the daemon's own code by folder, each npm package, Node's internals, GC).
 *
 * Only the samples of a window are kept (the load, not the start-up or the stop); idle samples
 * are left out, so the graph is the CPU the process spent, 100% wide.
 */
import { readFile } from 'node:fs/promises';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  /** µs, on the profiled process's monotonic clock. */
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export async function readProfile(file: string): Promise<CpuProfile> {
  return JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
}

/** Where a frame's code lives, for colour and for the per-room table. */
export function roomOf(url: string, name: string): string {
  if (name === '(garbage collector)') return 'GC';
  if (name === '(program)' || (!url && name.startsWith('('))) return 'V8 (program)';
  if (!url) return 'V8 builtins';
  if (url.startsWith('node:')) return 'Node (node:*)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1];
  const own = /\/(src|bench)\/([^/]+)\//.exec(url);
  if (own) return `${own[1]}/${own[2]}`;
  return 'other';
}

function frameName(f: CallFrame): string {
  const fn = f.functionName || '(anonymous)';
  if (!f.url) return fn;
  const file = f.url.replace(/^file:\/\//, '').replace(/^.*node_modules\//, '').replace(/^.*?\/(src|bench)\//, '$1/');
  return `${fn} ${file}:${f.lineNumber + 1}`;
}

interface Tree {
  name: string;
  room: string;
  value: number;
  children: Map<string, Tree>;
}

/**
 * The profile's samples within [fromUs, toUs] after its start (µs; default: all), idle left out,
 * folded into a tree; `us`: the CPU time they stand for.
 */
export function fold(p: CpuProfile, window: { fromUs?: number; toUs?: number } = {}): { tree: Tree; us: number; rooms: Map<string, number> } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const tree: Tree = { name: 'all', room: '', value: 0, children: new Map() };
  const rooms = new Map<string, number>();
  let t = 0;
  let us = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i];
    // A sample's weight is the time until the next one (the sampling interval drifts).
    const w = p.timeDeltas[i + 1] ?? 0;
    if (t < (window.fromUs ?? -Infinity) || t > (window.toUs ?? Infinity)) continue;
    const leaf = byId.get(p.samples[i])!;
    if (leaf.callFrame.functionName === '(idle)') continue;
    const stack: ProfileNode[] = [];
    for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
      const n = byId.get(id)!;
      if (n.callFrame.functionName !== '(root)') stack.push(n);
    }
    us += w;
    tree.value += w;
    const leafRoom = roomOf(leaf.callFrame.url, leaf.callFrame.functionName);
    rooms.set(leafRoom, (rooms.get(leafRoom) ?? 0) + w);
    let at = tree;
    for (let j = stack.length - 1; j >= 0; j--) {
      const f = stack[j].callFrame;
      const name = frameName(f);
      let next = at.children.get(name);
      if (!next) at.children.set(name, (next = { name, room: roomOf(f.url, f.functionName), value: 0, children: new Map() }));
      next.value += w;
      at = next;
    }
  }
  return { tree, us, rooms };
}

const escape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/** A stable colour per room: the daemon's own code warm, packages yellow-green, Node blue, V8 grey. */
function colour(room: string): string {
  if (room.startsWith('src/')) return `hsl(${12 + (hash(room) % 24)}, 80%, 62%)`;
  if (room.startsWith('Node')) return 'hsl(205, 55%, 68%)';
  if (room === 'GC' || room.startsWith('V8')) return 'hsl(0, 0%, 72%)';
  return `hsl(${48 + (hash(room) % 60)}, 70%, 58%)`;
}
function hash(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
  return h;
}

/** The tree as an SVG flame graph (root at the bottom), `title` and `subtitle` above it. */
export function flameSvg(tree: Tree, title: string, subtitle: string, width = 1200): string {
  const rowH = 16;
  const depthOf = (n: Tree): number => 1 + Math.max(0, ...[...n.children.values()].map(depthOf));
  const depth = depthOf(tree);
  const top = 50;
  const height = top + depth * rowH + 10;
  const scale = (width - 20) / Math.max(1, tree.value);
  const out: string[] = [];
  const draw = (n: Tree, x: number, level: number) => {
    const w = n.value * scale;
    if (w < 0.3) return;
    const y = height - 10 - (level + 1) * rowH;
    const pct = ((n.value / tree.value) * 100).toFixed(2);
    const label = w > 40 ? escape(n.name.length * 6.2 > w - 6 ? `${n.name.slice(0, Math.max(0, Math.floor((w - 6) / 6.2) - 2))}..` : n.name) : '';
    out.push(`<g><title>${escape(n.name)} (${n.room || 'all'}): ${pct}%</title><rect x="${x.toFixed(1)}" y="${y}" width="${w.toFixed(1)}" height="${rowH - 1}" fill="${n.room ? colour(n.room) : 'hsl(0,0%,85%)'}" rx="2"/>${label ? `<text x="${(x + 3).toFixed(1)}" y="${y + 11.5}">${label}</text>` : ''}</g>`);
    let cx = x;
    for (const c of [...n.children.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      draw(c, cx, level + 1);
      cx += c.value * scale;
    }
  };
  draw(tree, 10, 0);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="monospace" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fdfdf8"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">${escape(title)}</text>`,
    `<text x="10" y="38" font-size="12">${escape(subtitle)}</text>`,
    ...out,
    '</svg>',
    '',
  ].join('\n');
}
