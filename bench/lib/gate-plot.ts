/**
 * The `gate` bench's plot: a hand-written SVG of one run over time, in three panels sharing the
 * time axis — in flight (the controller's limit, the daemon's admitted count, what the downstream
 * holds, and its worker count K), latency (the downstream's own p50, the controller's p50 and
 * baseline), and deliveries per second against the capacity C. Probes are shaded.
 */
import { writeFile } from 'node:fs/promises';

export interface PlotPoll {
  /** Seconds since the run started. */
  t: number;
  limit: number | null;
  admitted: number | null;
  p50Ms: number | null;
  baseMs: number | null;
  probing: boolean;
}

export interface PlotBucket {
  ok: number;
  e503: number;
  p50: number | null;
  inService: number;
  backlog: number;
  k: number;
  /** True capacity at the bucket (calls/s). */
  capPerS: number;
}

export interface PlotData {
  title: string;
  subtitle: string;
  totalS: number;
  bucketMs: number;
  s0Ms: number;
  phases: { fromS: number; toS: number; k: number; c: number }[];
  polls: PlotPoll[];
  buckets: PlotBucket[];
}

const W = 980;
const LEFT = 64;
const RIGHT = 180;
const PANEL_H = 190;
const GAP = 46;
const TOP = 64;

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const f1 = (n: number) => (Math.round(n * 10) / 10).toString();

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

interface Series {
  label: string;
  color: string;
  dash?: string;
  width?: number;
  /** [t seconds, value]; null values break the line. */
  pts: [number, number | null][];
  step?: boolean;
}

export async function writeGatePlot(file: string, d: PlotData): Promise<void> {
  const plotW = W - LEFT - RIGHT;
  const x = (t: number) => LEFT + (Math.max(0, Math.min(d.totalS, t)) / d.totalS) * plotW;
  const out: string[] = [];
  const H = TOP + 3 * PANEL_H + 2 * GAP + 40;
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${LEFT}" y="22" font-size="15" font-weight="bold">${esc(d.title)}</text>`);
  out.push(`<text x="${LEFT}" y="40" fill="#444">${esc(d.subtitle)}</text>`);

  // Probe intervals from the polls.
  const probes: [number, number][] = [];
  let from: number | null = null;
  for (const p of d.polls) {
    if (p.probing && from === null) from = p.t;
    if (!p.probing && from !== null) {
      probes.push([from, p.t]);
      from = null;
    }
  }
  if (from !== null) probes.push([from, d.totalS]);

  const bt = (i: number) => ((i + 0.5) * d.bucketMs) / 1000;
  const smooth = (vals: number[], n: number) => vals.map((_, i) => {
    const lo = Math.max(0, i - n + 1);
    let s = 0;
    for (let j = lo; j <= i; j++) s += vals[j];
    return s / (i - lo + 1);
  });
  const perS = 1000 / d.bucketMs;
  const okRate = smooth(d.buckets.map((b) => b.ok * perS), 5);
  const e503Rate = smooth(d.buckets.map((b) => b.e503 * perS), 5);

  const panels: { title: string; unit: string; series: Series[] }[] = [
    {
      title: 'in flight (calls)',
      unit: 'calls',
      series: [
        { label: 'K (downstream workers)', color: '#999', width: 2.5, pts: d.buckets.map((b, i) => [bt(i), b.k]) },
        { label: 'downstream holds (in service + backlog)', color: '#2ca02c', width: 1, pts: d.buckets.map((b, i) => [bt(i), b.inService + b.backlog]) },
        { label: 'daemon admitted (counts.admitted)', color: '#ff7f0e', width: 1.3, pts: d.polls.map((p) => [p.t, p.admitted]) },
        { label: 'controller limit', color: '#1f77b4', width: 1.8, pts: d.polls.map((p) => [p.t, p.limit]) },
      ],
    },
    {
      title: 'latency (ms)',
      unit: 'ms',
      series: [
        { label: 's0 (unloaded service time)', color: '#999', dash: '4 3', pts: [[0, d.s0Ms], [d.totalS, d.s0Ms]] },
        { label: 'downstream p50 (per 100 ms)', color: '#2ca02c', width: 1, pts: d.buckets.map((b, i) => [bt(i), b.p50]) },
        { label: 'controller p50 (last window)', color: '#1f77b4', width: 1.6, pts: d.polls.map((p) => [p.t, p.p50Ms]) },
        { label: 'controller baseline', color: '#1f77b4', dash: '5 3', width: 1.2, pts: d.polls.map((p) => [p.t, p.baseMs]) },
      ],
    },
    {
      title: 'per second (500 ms moving average)',
      unit: '/s',
      series: [
        { label: 'capacity C', color: '#999', width: 2.5, pts: d.buckets.map((b, i) => [bt(i), b.capPerS]) },
        { label: '0.85 × C', color: '#999', dash: '4 3', pts: d.buckets.map((b, i) => [bt(i), 0.85 * b.capPerS]) },
        { label: 'delivered (200s)', color: '#2ca02c', width: 1.4, pts: okRate.map((v, i) => [bt(i), v]) },
        { label: '503s', color: '#d62728', width: 1.2, pts: e503Rate.map((v, i) => [bt(i), v]) },
      ],
    },
  ];

  panels.forEach((panel, pi) => {
    const top = TOP + pi * (PANEL_H + GAP);
    const bottom = top + PANEL_H;
    let vmax = 0;
    for (const s of panel.series) for (const [, v] of s.pts) if (v !== null && Number.isFinite(v)) vmax = Math.max(vmax, v);
    // Keep latency spikes from flattening the panel: cap at 6 × s0 unless most points exceed it.
    if (panel.unit === 'ms') vmax = Math.min(vmax, Math.max(6 * d.s0Ms, 1));
    const ymax = niceMax(vmax * 1.05);
    const y = (v: number) => bottom - (Math.min(v, ymax) / ymax) * PANEL_H;
    out.push(`<text x="${LEFT}" y="${top - 8}" font-weight="bold">${esc(panel.title)}</text>`);
    for (const [a, b] of probes) out.push(`<rect x="${x(a).toFixed(1)}" y="${top}" width="${Math.max(1, x(b) - x(a)).toFixed(1)}" height="${PANEL_H}" fill="#fff3c4"/>`);
    out.push(`<rect x="${LEFT}" y="${top}" width="${plotW}" height="${PANEL_H}" fill="none" stroke="#333"/>`);
    for (let i = 0; i <= 5; i++) {
      const v = (ymax * i) / 5;
      out.push(`<line x1="${LEFT}" x2="${LEFT + plotW}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#eee"/>`);
      out.push(`<text x="${LEFT - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end" fill="#444">${f1(v)}</text>`);
    }
    const tickS = d.totalS > 40 ? 10 : d.totalS > 15 ? 5 : 1;
    for (let t = 0; t <= d.totalS + 1e-9; t += tickS) {
      out.push(`<line x1="${x(t).toFixed(1)}" x2="${x(t).toFixed(1)}" y1="${bottom}" y2="${bottom + 4}" stroke="#333"/>`);
      out.push(`<text x="${x(t).toFixed(1)}" y="${bottom + 16}" text-anchor="middle" fill="#444">${t}</text>`);
    }
    for (const p of d.phases.slice(1)) out.push(`<line x1="${x(p.fromS).toFixed(1)}" x2="${x(p.fromS).toFixed(1)}" y1="${top}" y2="${bottom}" stroke="#666" stroke-dasharray="2 2"/>`);
    if (pi === 0)
      d.phases.forEach((p) =>
        out.push(`<text x="${((x(p.fromS) + x(p.toS)) / 2).toFixed(1)}" y="${top + 13}" text-anchor="middle" fill="#555">K=${p.k}, C=${Math.round(p.c)}/s</text>`),
      );
    panel.series.forEach((s, si) => {
      let path = '';
      let pen = false;
      let prevY: number | null = null;
      for (const [t, v] of s.pts) {
        if (v === null || !Number.isFinite(v)) {
          pen = false;
          continue;
        }
        const px = x(t).toFixed(1);
        const py = y(v).toFixed(1);
        if (s.step && pen && prevY !== null) path += ` L${px},${prevY.toFixed(1)}`;
        path += `${pen ? ' L' : ' M'}${px},${py}`;
        pen = true;
        prevY = y(v);
      }
      if (path) out.push(`<path d="${path.trim()}" fill="none" stroke="${s.color}" stroke-width="${s.width ?? 1}"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
      const ly = top + 10 + si * 30;
      const lx = LEFT + plotW + 12;
      out.push(`<line x1="${lx}" x2="${lx + 18}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="${Math.max(1.5, s.width ?? 1)}"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
      const words = s.label.split(' ');
      let line = '';
      const lines: string[] = [];
      for (const w of words) {
        if ((line + ' ' + w).trim().length > 22) {
          lines.push(line.trim());
          line = w;
        } else line += ` ${w}`;
      }
      if (line.trim()) lines.push(line.trim());
      lines.slice(0, 2).forEach((l, li) => out.push(`<text x="${lx + 24}" y="${ly + 4 + li * 12}" fill="#222">${esc(l)}</text>`));
    });
    if (pi === 0 && probes.length) {
      const ly = top + 10 + panel.series.length * 30;
      const lx = LEFT + plotW + 12;
      out.push(`<rect x="${lx}" y="${ly - 6}" width="18" height="12" fill="#fff3c4" stroke="#ddd"/>`);
      out.push(`<text x="${lx + 24}" y="${ly + 4}" fill="#222">probe</text>`);
    }
  });
  out.push(`<text x="${LEFT + plotW / 2}" y="${H - 12}" text-anchor="middle" fill="#444">seconds since the run started</text>`);
  out.push('</svg>');
  await writeFile(file, `${out.join('\n')}\n`);
}
