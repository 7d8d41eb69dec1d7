/**
 * SVG charts of a bench report, written next to its Markdown and embedded in it: makespan and ratio against N per
 * width, the hop latency distribution, one step of Temporal's bare hand-off against Gas Town's hops, and the merge
 * queue's drain by mode.
 *
 * Invariants:
 * - Hand-written SVG, no dependencies and nothing external (fonts are the viewer's sans-serif), so a chart renders
 *   the same on GitHub, in an editor preview and in a browser, and diffs as text.
 * - Charts are pure functions of the report: `--render` of an old JSON report draws the same charts as the run did.
 * - A chart is drawn only when the report holds its figures (a queue-only report has no makespan chart), so every
 *   chart embedded in the Markdown exists.
 */
import { HOPS, queueModeLabel, type Hop } from './analysis';
import type { BenchReport } from './report';
import { spread, type Spread } from './stats';

export type ChartName = 'makespan' | 'ratio' | 'hops' | 'handoff' | 'queue';
export interface Chart {
  name: ChartName;
  /** Alt text in the Markdown. */
  title: string;
  svg: string;
}

const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4b5563'];
const FONT = 'font-family="Helvetica, Arial, sans-serif"';
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const r1 = (v: number) => Math.round(v * 10) / 10;
const seconds = (ms: number) => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`);
/** Axis ticks are round numbers: no trailing zeros. */
const tickTime = (ms: number) => (ms === 0 ? '0' : ms < 1000 ? `${ms} ms` : `${r1(ms / 1000)} s`);

function frame(width: number, height: number, title: string, body: string[]): string {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT} font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}

/** 0 and a round maximum at or above `max`, with 4–6 ticks between. */
function linearTicks(max: number): number[] {
  const raw = max / 5 || 1;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let v = 0; v < max + step * 0.999; v += step) ticks.push(r1(v * 1000) / 1000);
  return ticks;
}

/** Powers of ten and their halves and fifths that cover [min, max], for log axes. */
function logTicks(min: number, max: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++)
    for (const m of [1, 2, 5]) ticks.push(m * 10 ** e);
  const inside = ticks.filter((t) => t >= min / 1.0001 && t <= max * 1.0001);
  const lower = [...ticks].reverse().find((t) => t <= min) ?? min;
  const upper = ticks.find((t) => t >= max) ?? max;
  return [...new Set([lower, ...inside, upper])];
}

interface Series {
  name: string;
  color: string;
  dashed?: boolean;
  points: { x: number; y: Spread }[];
}

/** Lines over log axes (N against a time or a ratio), min–max whiskers where repeats differ, each median labelled. */
function lineChart(o: {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  format: (v: number) => string;
  yFloor?: number;
}): string {
  const W = 760;
  const H = 420;
  const m = { l: 70, r: 190, t: 40, b: 50 };
  const xs = [...new Set(o.series.flatMap((s) => s.points.map((p) => p.x)))].sort((a, b) => a - b);
  const xTicks = logTicks(xs[0]!, xs.at(-1)!);
  // Half a step of room either side, so points at the ends are not on the axes.
  const [x0, x1] = [Math.log10(xs[0]!) - 0.2, Math.log10(xs.at(-1)!) + 0.2];
  const ys = o.series.flatMap((s) => s.points.flatMap((p) => [p.y.min, p.y.max])).concat(o.yFloor ?? []);
  const yTicks = logTicks(Math.min(...ys), Math.max(...ys));
  const [y0, y1] = [Math.log10(yTicks[0]!), Math.log10(yTicks.at(-1)!)];
  const px = (x: number) => m.l + ((Math.log10(x) - x0) / (x1 - x0)) * (W - m.l - m.r);
  const py = (y: number) => H - m.b - ((Math.log10(y) - y0) / (y1 - y0)) * (H - m.t - m.b);
  const body: string[] = [];
  for (const t of yTicks)
    body.push(
      `<line x1="${m.l}" x2="${W - m.r}" y1="${r1(py(t))}" y2="${r1(py(t))}" stroke="#e5e7eb"/>`,
      `<text x="${m.l - 6}" y="${r1(py(t)) + 4}" text-anchor="end" fill="#374151">${esc(o.format(t))}</text>`,
    );
  for (const t of xTicks.filter((x) => Math.log10(x) >= x0 && Math.log10(x) <= x1)) {
    body.push(
      `<line x1="${r1(px(t))}" x2="${r1(px(t))}" y1="${H - m.b}" y2="${H - m.b + 5}" stroke="#374151"/>`,
      `<text x="${r1(px(t))}" y="${H - m.b + 18}" text-anchor="middle" fill="#374151">${t}</text>`,
    );
  }
  if (o.yFloor !== undefined)
    body.push(
      `<line x1="${m.l}" x2="${W - m.r}" y1="${r1(py(o.yFloor))}" y2="${r1(py(o.yFloor))}" stroke="#9ca3af" stroke-dasharray="2 3"/>`,
    );
  body.push(
    `<line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="#374151"/>`,
    `<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" stroke="#374151"/>`,
    `<text x="${(m.l + W - m.r) / 2}" y="${H - 12}" text-anchor="middle">${esc(o.xLabel)}</text>`,
    `<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`,
  );
  o.series.forEach((s, i) => {
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    if (pts.length > 1)
      body.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="2"${dash} points="${pts.map((p) => `${r1(px(p.x))},${r1(py(p.y.median))}`).join(' ')}"/>`,
      );
    for (const p of pts) {
      const [x, y] = [r1(px(p.x)), r1(py(p.y.median))];
      if (p.y.max > p.y.min)
        body.push(
          `<line x1="${x}" x2="${x}" y1="${r1(py(p.y.min))}" y2="${r1(py(p.y.max))}" stroke="${s.color}" stroke-width="1.5"/>`,
        );
      body.push(
        `<circle class="point" cx="${x}" cy="${y}" r="4" fill="${s.dashed ? 'white' : s.color}" stroke="${s.color}" stroke-width="2"/>`,
        `<text x="${x + 8}" y="${y + 4}" fill="${s.color}" font-size="11">${esc(o.format(p.y.median))}</text>`,
      );
    }
    const ly = m.t + 10 + i * 20;
    body.push(
      `<line x1="${W - m.r + 20}" x2="${W - m.r + 50}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"${dash}/>`,
      `<text x="${W - m.r + 56}" y="${ly + 4}">${esc(s.name)}</text>`,
    );
  });
  return frame(W, H, o.title, body);
}

interface Bar {
  label: string;
  value: number;
  lo?: number;
  hi?: number;
  color: string;
  note?: string;
}

/** Horizontal bars (optionally grouped under headings), linear or log scale, whiskers from lo to hi. */
function barChart(o: {
  title: string;
  groups: { heading?: string; bars: Bar[] }[];
  format: (v: number) => string;
  log?: boolean;
  xLabel: string;
}): string {
  const W = 900;
  const m = { l: 330, r: 270, t: 44, b: 46 };
  const rowH = 22;
  const rows = o.groups.reduce((n, g) => n + g.bars.length + (g.heading ? 1 : 0), 0);
  const H = m.t + rows * rowH + m.b;
  const all = o.groups.flatMap((g) => g.bars);
  const max = Math.max(...all.map((b) => b.hi ?? b.value));
  const min = Math.min(...all.map((b) => b.lo ?? b.value));
  const ticks = o.log ? logTicks(Math.max(1, min), max) : linearTicks(max);
  const [t0, t1] = o.log ? [Math.log10(ticks[0]!), Math.log10(ticks.at(-1)!)] : [0, ticks.at(-1)!];
  const px = (v: number) =>
    m.l + (((o.log ? Math.log10(Math.max(v, ticks[0]!)) : v) - t0) / (t1 - t0)) * (W - m.l - m.r);
  const body: string[] = [];
  const bottom = H - m.b;
  for (const t of ticks)
    body.push(
      `<line x1="${r1(px(t))}" x2="${r1(px(t))}" y1="${m.t}" y2="${bottom}" stroke="#e5e7eb"/>`,
      `<text x="${r1(px(t))}" y="${bottom + 16}" text-anchor="middle" fill="#374151">${esc(tickTime(t))}</text>`,
    );
  body.push(
    `<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${bottom}" stroke="#374151"/>`,
    `<text x="${(m.l + W - m.r) / 2}" y="${H - 10}" text-anchor="middle">${esc(o.xLabel)}</text>`,
  );
  let y = m.t;
  for (const g of o.groups) {
    if (g.heading) {
      body.push(`<text x="8" y="${y + 15}" font-weight="bold">${esc(g.heading)}</text>`);
      y += rowH;
    }
    for (const b of g.bars) {
      const base = o.log ? px(ticks[0]!) : m.l;
      body.push(
        `<text x="${m.l - 8}" y="${y + 15}" text-anchor="end">${esc(b.label)}</text>`,
        `<rect class="bar" x="${r1(base)}" y="${y + 4}" width="${r1(Math.max(1, px(b.value) - base))}" height="${rowH - 8}" fill="${b.color}" opacity="0.85"/>`,
      );
      if (b.lo !== undefined && b.hi !== undefined && b.hi > b.lo)
        body.push(
          `<line x1="${r1(px(b.lo))}" x2="${r1(px(b.hi))}" y1="${y + rowH / 2}" y2="${y + rowH / 2}" stroke="#111827" stroke-width="1.5"/>`,
        );
      body.push(
        `<text x="${r1(Math.max(px(b.value), px(b.hi ?? b.value))) + 6}" y="${y + 15}" font-size="11" fill="#111827">${esc(o.format(b.value))}${b.note ? ` · ${esc(b.note)}` : ''}</text>`,
      );
      y += rowH;
    }
  }
  return frame(W, H, o.title, body);
}

/** p50 → p99 of each hop per scenario on a log axis, a dot at p50 and a tick at p95 (medians over repeats). */
function hopChart(r: BenchReport): string {
  const W = 820;
  const hops = (Object.keys(HOPS) as Hop[]).filter((h) =>
    r.convoys.some((c) => c.repeats.some((x) => x.hops[h]?.p50 !== undefined)),
  );
  const scen = r.convoys.map((c, i) => ({ name: `N=${c.n} w=${c.width}`, color: PALETTE[i % PALETTE.length]!, c }));
  const lane = 9;
  const rowH = scen.length * lane + 12;
  const m = { l: 360, r: 30, t: 44, b: 70 };
  const H = m.t + hops.length * rowH + m.b;
  const med = (c: (typeof scen)[number]['c'], h: Hop, k: 'p50' | 'p95' | 'p99') =>
    spread(c.repeats.map((x) => x.hops[h]?.[k]))?.median;
  const values = hops
    .flatMap((h) => scen.flatMap((s) => [med(s.c, h, 'p50'), med(s.c, h, 'p99')]))
    .filter((v): v is number => v !== undefined && v > 0);
  const ticks = logTicks(Math.max(1, Math.min(...values)), Math.max(...values));
  const [t0, t1] = [Math.log10(ticks[0]!), Math.log10(ticks.at(-1)!)];
  const px = (v: number) => r1(m.l + ((Math.log10(Math.max(v, ticks[0]!)) - t0) / (t1 - t0)) * (W - m.l - m.r));
  const bottom = H - m.b;
  const body: string[] = [];
  for (const t of ticks)
    body.push(
      `<line x1="${px(t)}" x2="${px(t)}" y1="${m.t}" y2="${bottom}" stroke="#e5e7eb"/>`,
      `<text x="${px(t)}" y="${bottom + 16}" text-anchor="middle" font-size="10" fill="#374151">${esc(tickTime(t))}</text>`,
    );
  hops.forEach((h, i) => {
    const y = m.t + i * rowH;
    if (i % 2) body.push(`<rect x="0" y="${y}" width="${W}" height="${rowH}" fill="#f9fafb"/>`);
    body.push(
      `<text x="${m.l - 8}" y="${y + rowH / 2 + 4}" text-anchor="end">${esc(HOPS[h].replace(/`/g, ''))}</text>`,
    );
    scen.forEach((s, j) => {
      const [p50, p95, p99] = [med(s.c, h, 'p50'), med(s.c, h, 'p95'), med(s.c, h, 'p99')];
      if (p50 === undefined) return;
      const ly = y + 6 + j * lane + lane / 2;
      body.push(
        `<line x1="${px(p50)}" x2="${px(p99 ?? p50)}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="3" opacity="0.6"/>`,
        `<circle class="p50" cx="${px(p50)}" cy="${ly}" r="3.5" fill="${s.color}"/>`,
      );
      if (p95 !== undefined)
        body.push(
          `<line x1="${px(p95)}" x2="${px(p95)}" y1="${ly - 4}" y2="${ly + 4}" stroke="${s.color}" stroke-width="1.5"/>`,
        );
    });
  });
  body.push(
    `<line x1="${m.l}" x2="${W - m.r}" y1="${bottom}" y2="${bottom}" stroke="#374151"/>`,
    `<text x="${(m.l + W - m.r) / 2}" y="${bottom + 34}" text-anchor="middle">latency (log scale): dot p50, tick p95, line to p99; medians over repeats</text>`,
  );
  scen.forEach((s, j) =>
    body.push(
      `<circle cx="${m.l + j * 120}" cy="${H - 14}" r="4" fill="${s.color}"/>`,
      `<text x="${m.l + j * 120 + 8}" y="${H - 10}">${esc(s.name)}</text>`,
    ),
  );
  return frame(W, H, 'Hop latency distribution', body);
}

const byWidth = (r: BenchReport) => {
  const widths = [...new Set(r.convoys.map((c) => c.width))].sort((a, b) => a - b);
  return widths.map((w, i) => ({
    w,
    color: PALETTE[i % PALETTE.length]!,
    runs: r.convoys.filter((c) => c.width === w),
  }));
};

export function benchCharts(r: BenchReport): Chart[] {
  const charts: Chart[] = [];
  const withMakespan = r.convoys.filter((c) => c.summary.makespanMs && c.summary.floorMakespanMs);
  if (withMakespan.length) {
    const series = byWidth({ ...r, convoys: withMakespan }).flatMap(({ w, color, runs }) => [
      { name: `width ${w}`, color, points: runs.map((c) => ({ x: c.n, y: c.summary.makespanMs! })) },
      {
        name: `width ${w}, floor`,
        color,
        dashed: true,
        points: runs.map((c) => ({ x: c.n, y: c.summary.floorMakespanMs! })),
      },
    ]);
    charts.push({
      name: 'makespan',
      title: 'Convoy makespan vs N, per width (dashed: the floor)',
      svg: lineChart({
        title: 'Convoy makespan vs N (dashed: the floor script)',
        xLabel: 'N beads (log scale)',
        yLabel: 'makespan (s, log scale)',
        series: series.map((s) => ({
          ...s,
          points: s.points.map((p) => ({
            x: p.x,
            y: { ...p.y, median: p.y.median / 1000, min: p.y.min / 1000, max: p.y.max / 1000 },
          })),
        })),
        format: (v) => (v < 10 ? `${Math.round(v * 100) / 100} s` : `${r1(v)} s`),
      }),
    });
    const ratios = byWidth({ ...r, convoys: withMakespan.filter((c) => c.summary.ratio) }).map(
      ({ w, color, runs }) => ({
        name: `width ${w}`,
        color,
        points: runs.map((c) => ({ x: c.n, y: c.summary.ratio! })),
      }),
    );
    charts.push({
      name: 'ratio',
      title: 'Makespan / floor vs N, per width',
      svg: lineChart({
        title: 'Orchestrated makespan / floor vs N',
        xLabel: 'N beads (log scale)',
        yLabel: 'ratio (×, log scale)',
        series: ratios,
        format: (v) => `${r1(v)}×`,
        yFloor: 1,
      }),
    });
  }
  if (r.convoys.some((c) => c.repeats.length))
    charts.push({ name: 'hops', title: 'Hop latency distribution per scenario', svg: hopChart(r) });

  if (r.handoff?.length) {
    const of = (f: (h: NonNullable<BenchReport['handoff']>[number]) => number | undefined) => spread(r.handoff!.map(f));
    const bar = (label: string, s: Spread | undefined, color: string): Bar[] =>
      s ? [{ label, value: s.median, lo: s.min, hi: s.max, color }] : [];
    const groups: { heading?: string; bars: Bar[] }[] = [
      {
        heading: `Temporal hand-off, bare worker (${r.handoff.length} repeats)`,
        bars: [
          ...bar(
            'activity task: scheduled → started (p50)',
            of((h) => h.activityTaskMs.p50),
            '#6b7280',
          ),
          ...bar(
            'workflow task: scheduled → started (p50)',
            of((h) => h.workflowTaskMs.p50),
            '#6b7280',
          ),
          ...bar(
            'one step: activity + workflow task',
            of((h) => h.perStepMs),
            '#374151',
          ),
        ],
      },
    ];
    const chain = [...r.convoys].filter((c) => c.repeats.length).sort((a, b) => a.width - b.width || a.n - b.n)[0];
    if (chain) {
      const hop = (h: Hop) => chain.summary.hops[h]?.p50;
      groups.push({
        heading: `Gas Town hops, p50 (N=${chain.n}, width ${chain.width})`,
        bars: [
          ...bar('gt done accepted → merge started', hop('doneToMergeStarted'), '#2563eb'),
          ...bar('merge started → merged', hop('mergeStartedToMerged'), '#2563eb'),
          ...bar('merged → dependent’s agent started', hop('mergedToDependentAgentStarted'), '#2563eb'),
          ...bar('gt done accepted → next agent started', hop('doneToDependentAgentStarted'), '#1e3a8a'),
        ],
      });
    }
    charts.push({
      name: 'handoff',
      title: "One step of Temporal's bare hand-off vs Gas Town's hops",
      svg: barChart({
        title: 'Hand-off baseline vs our hops (whiskers: min–max over repeats)',
        groups,
        format: seconds,
        xLabel: 'time',
        log: false,
      }),
    });
  }

  const queue = r.mergeQueue.filter((q) => q.summary.drainMs);
  if (queue.length) {
    const bars = queue.map((q, i) => {
      const s = q.summary;
      const note = [
        s.gateRuns && `${r1(s.gateRuns.median)} gate runs`,
        s.mergedPerMinute && `${r1(s.mergedPerMinute.median)} merged/min`,
      ]
        .filter(Boolean)
        .join(', ');
      return {
        label: `${queueModeLabel(q)} · ${q.repeats.length} repeat(s)`,
        value: s.drainMs!.median,
        lo: s.drainMs!.min,
        hi: s.drainMs!.max,
        color: PALETTE[i % PALETTE.length]!,
        note,
      };
    });
    const q0 = queue[0]!.repeats[0];
    charts.push({
      name: 'queue',
      title: 'Merge queue drain by mode',
      svg: barChart({
        title: `Merge queue drain by mode${q0 ? ` (${q0.mrs} MRs, ${q0.bad} bad, ${String(r.parameters.gateSeconds)} s gate)` : ''}`,
        groups: [{ bars }],
        format: seconds,
        xLabel: 'queue drain (whiskers: min–max over repeats)',
      }),
    });
  }
  return charts;
}
