/**
 * The bench's outputs: a JSON report (everything, per repeat and summarized), a short Markdown summary and its SVG
 * charts, written as bench/reports/<time>.{json,md}, <time>-<chart>.svg, plus latest.md. Earlier reports are never
 * touched (except by an explicit `--render` of one), so runs can be compared.
 */
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { benchCharts, type ChartName } from './charts';
import {
  BREAKDOWN_HOPS,
  HOPS,
  queueModeLabel,
  type ConvoyRepeatFigures,
  type CpuFigures,
  type Hop,
  type QueueRepeatFigures,
} from './analysis';
import type { MachineInfo } from './machine';
import type { HandoffFigures } from './handoff';
import { renderCliStartup, type CliStartupFigures } from './cli-startup';
import { spread, type Spread } from './stats';
import { renderWaterfalls } from './waterfall';

export interface ConvoyScenarioReport {
  n: number;
  width: number;
  driver: string;
  repeats: ConvoyRepeatFigures[];
  /** Runs that did not land (the figures above leave them out). */
  failures: string[];
  summary: ConvoySummary;
}

export interface ConvoySummary {
  makespanMs?: Spread;
  floorMakespanMs?: Spread;
  ratio?: Spread;
  overheadP50?: Spread;
  overheadP95?: Spread;
  overheadP99?: Spread;
  hops: Partial<Record<Hop, { p50?: Spread; p99?: Spread }>>;
  history: {
    eventsPerBead?: Spread;
    eventsPerMr?: Spread;
    eventsPerConvoy?: Spread;
    convoyRuns?: Spread;
    eventsRefinery?: Spread;
    refineryRuns?: Spread;
    eventsDispatchGate?: Spread;
    dispatchGateRuns?: Spread;
    actionsPerBead?: Spread;
    actionsPerMr?: Spread;
    actionsPerConvoy?: Spread;
    actionsPerBeadAllIn?: Spread;
    largestHistory?: Spread;
    /** Which kind of workflow had the largest history, in the repeat where it was largest. */
    largestHistoryKind?: string;
  };
  /** CPU per bead (bench/analysis.ts CpuFigures), over the repeats that measured it. */
  cpu: Partial<Record<keyof CpuFigures, Spread>>;
}

export interface QueueScenarioReport {
  mode: 'one-at-a-time' | 'batching' | 'speculative';
  batchSize: number;
  /** Speculative mode: candidates gated at once at most. */
  speculation?: number;
  repeats: QueueRepeatFigures[];
  failures: string[];
  summary: Partial<
    Record<'gateRuns' | 'gateRunsPerMerged' | 'drainMs' | 'makespanMs' | 'mergedPerMinute' | 'merged', Spread>
  >;
}

export interface BenchReport {
  bench: 'gastown-temporal';
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  machine: MachineInfo;
  /** Other work on the machine skews every figure: compare with the load at the start. */
  loadAverageAtEnd: number[];
  parameters: Record<string, unknown>;
  /** Temporal's own hand-off latency on this stack (absent in reports from before it was measured). */
  handoff?: HandoffFigures[];
  /** How long `gt` takes to start (absent in reports from before it was measured). */
  cliStartup?: CliStartupFigures;
  convoys: ConvoyScenarioReport[];
  mergeQueue: QueueScenarioReport[];
  notes: string[];
}

export function summarizeConvoy(repeats: ConvoyRepeatFigures[]): ConvoySummary {
  const of = (f: (r: ConvoyRepeatFigures) => number | undefined) => spread(repeats.map(f));
  const kind = (
    k: string,
    f: (x: {
      eventsMedian: number;
      actionsMedian: number;
      runs: number;
      actionsTotal: number;
      eventsMax: number;
    }) => number,
  ) =>
    of((r) => {
      const x = r.history.byKind[k];
      return x ? f(x) : undefined;
    });
  return {
    makespanMs: of((r) => r.makespanMs),
    floorMakespanMs: of((r) => r.floorMakespanMs),
    ratio: of((r) => r.ratio),
    overheadP50: of((r) => r.overhead.p50),
    overheadP95: of((r) => r.overhead.p95),
    overheadP99: of((r) => r.overhead.p99),
    hops: Object.fromEntries(
      // A hop added later is absent from older reports' repeats.
      (Object.keys(HOPS) as Hop[]).map((h) => [h, { p50: of((r) => r.hops[h]?.p50), p99: of((r) => r.hops[h]?.p99) }]),
    ),
    history: {
      eventsPerBead: kind('bead', (x) => x.eventsMedian),
      eventsPerMr: kind('merge-request', (x) => x.eventsMedian),
      eventsPerConvoy: kind('convoy', (x) => x.eventsMedian),
      convoyRuns: kind('convoy', (x) => x.runs),
      eventsRefinery: kind('refinery', (x) => x.eventsMax),
      refineryRuns: kind('refinery', (x) => x.runs),
      eventsDispatchGate: kind('dispatch-gate', (x) => x.eventsMax),
      dispatchGateRuns: kind('dispatch-gate', (x) => x.runs),
      actionsPerBead: kind('bead', (x) => x.actionsMedian),
      actionsPerMr: kind('merge-request', (x) => x.actionsMedian),
      actionsPerConvoy: kind('convoy', (x) => x.actionsTotal),
      actionsPerBeadAllIn: of((r) => r.history.actionsPerBeadAllIn),
      largestHistory: of((r) => r.history.largestRun.events),
      largestHistoryKind: [...repeats].sort((a, b) => b.history.largestRun.events - a.history.largestRun.events)[0]
        ?.history.largestRun.kind,
    },
    cpu: Object.fromEntries(CPU_FIGURES.map((k) => [k, of((r) => r.cpu?.[k])])),
  };
}

export function summarizeQueue(repeats: QueueRepeatFigures[]): QueueScenarioReport['summary'] {
  const of = (f: (r: QueueRepeatFigures) => number) => spread(repeats.map(f));
  return {
    merged: of((r) => r.merged),
    gateRuns: of((r) => r.gateRuns),
    gateRunsPerMerged: of((r) => r.gateRunsPerMerged),
    drainMs: of((r) => r.drainMs),
    makespanMs: of((r) => r.makespanMs),
    mergedPerMinute: of((r) => r.mergedPerMinute),
  };
}

// --- Markdown ---

const time = (v: number) => (Math.abs(v) < 1000 ? `${Math.round(v)} ms` : `${(v / 1000).toFixed(2)} s`);
const num = (v: number, digits = 1) => (Number.isInteger(v) ? String(v) : v.toFixed(digits));

function cell(s: Spread | undefined, fmt: (v: number) => string = time): string {
  if (!s) return '–';
  return s.repeats > 1 && s.min !== s.max ? `${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})` : fmt(s.median);
}

const coreMs = (v: number) => `${v.toFixed(1)} ms`;

/** A step's CPU (bench/handoff.ts StepCost): measured with our settings only, and not in reports before 2026-12-04. */
function costCell(figures: HandoffFigures[]): string {
  const costs = figures.flatMap((h) => (h.cost ? [h.cost] : []));
  if (!costs.length) return '–';
  return `${cell(spread(costs.map((c) => c.serverMs)), coreMs)} / ${cell(spread(costs.map((c) => c.workerMs)), coreMs)}`;
}

/** Chart files by name (relative to the Markdown); each is embedded after the table it draws. */
export type ChartFiles = Partial<Record<ChartName, string>>;

export function renderMarkdown(r: BenchReport, charts: ChartFiles = {}): string {
  const m = r.machine;
  const lines: string[] = [];
  const embed = (...names: ChartName[]) => {
    const present = names.filter((n) => charts[n]);
    if (present.length) lines.push(present.map((n) => `![${n}](${charts[n]})`).join(' '), '');
  };
  lines.push(`# Bench report ${r.startedAt}`, '');
  lines.push(
    `${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, ${m.platform}; load average ${m.loadAverageAtStart.join(' / ')} at the start, ${r.loadAverageAtEnd.join(' / ')} at the end.`,
    `Node ${m.node}, Temporal SDK ${m.temporalSdk}, ${m.temporalCli}, ${m.git}${m.gtCommandStartMs === undefined ? '' : `; \`gt --version\` ${time(m.gtCommandStartMs)}`}. Code ${m.code.commit}` +
      (m.code.uncommittedFiles ? ` with ${m.code.uncommittedFiles} uncommitted file(s)` : '') +
      `. Took ${time(r.durationMs)}.`,
    '',
    'Figures are medians over repeats, with (min–max) when repeats differ. Definitions: bench/README.md.',
    '',
  );

  if (r.cliStartup) lines.push(...renderCliStartup(r.cliStartup));

  if (r.handoff?.length) {
    // Reports written before the setting existed measured Temporal's defaults only.
    const readersOf = (h: HandoffFigures) => h.queueReaders ?? 'server-default';
    const settings = [...new Set(r.handoff.map(readersOf))];
    lines.push(
      `## Temporal hand-off on this stack (a bare worker, ${r.handoff[0]!.steps} no-op steps in a row, ${r.handoff.filter((h) => readersOf(h) === settings[0]).length} repeats)`,
      '',
      settings.length > 1
        ? "Our server settings (provisioning/server-settings.ts: the history queue readers, from 2026-11-30 the SQLite journal, from 2026-12-02 eager activities, whose task is handed over with the workflow task's answer: scheduled → started 0 ms; from 2026-12-03 the dev server's search-attribute cache; the stack as `gt up` runs it) and Temporal's defaults (a second dev server); why: docs/performance.md. Every step of a bead passes through such hand-offs."
        : `Server settings: ${settings[0]} only (docs/performance.md). Every step of a bead passes through such hand-offs.`,
      '',
      `| server settings | per activity step | activity task scheduled → started p50 / p95 | workflow task p50 / p95 | per 1 ms timer step | visibility lag after an upsert per step | CPU per activity step, ${r.handoff.find((h) => h.cost)?.cost?.chains ?? 'many'} chains at once: server / worker |`,
      '|---|---|---|---|---|---|---|',
    );
    for (const setting of settings) {
      const of = (f: (h: HandoffFigures) => number | undefined) =>
        spread(r.handoff!.filter((h) => readersOf(h) === setting).map(f));
      lines.push(
        `| ${setting} | ${cell(of((h) => h.perStepMs))} | ${cell(of((h) => h.activityTaskMs.p50))} / ${cell(of((h) => h.activityTaskMs.p95))} | ${cell(of((h) => h.workflowTaskMs.p50))} / ${cell(of((h) => h.workflowTaskMs.p95))} | ${cell(of((h) => h.timerStepMs))} | ${cell(of((h) => h.visibilityLagMs))} | ${costCell(r.handoff.filter((h) => readersOf(h) === setting))} |`,
      );
    }
    lines.push('');
    embed('handoff');
  }

  if (r.convoys.length) {
    lines.push('## Convoys against the floor (same beads, DAG, agent, merges and gates done by a plain script)', '');
    lines.push(
      '| N | width | repeats | makespan | floor | ratio | per-bead overhead p50 | p95 | p99 |',
      '|---|---|---|---|---|---|---|---|---|',
    );
    for (const c of r.convoys) {
      const s = c.summary;
      lines.push(
        `| ${c.n} | ${c.width} | ${c.repeats.length}${c.failures.length ? ` (+${c.failures.length} failed)` : ''} | ${cell(s.makespanMs)} | ${cell(s.floorMakespanMs)} | ${cell(s.ratio, (v) => `${v.toFixed(2)}×`)} | ${cell(s.overheadP50)} | ${cell(s.overheadP95)} | ${cell(s.overheadP99)} |`,
      );
    }
    lines.push('');
    embed('makespan', 'ratio');
    lines.push('## Hop latency, p50 / p99', '');
    const hopKeys = (Object.keys(HOPS) as Hop[]).filter((h) => r.convoys.some((c) => c.summary.hops[h]?.p50));
    lines.push(
      `| hop | ${r.convoys.map((c) => `N=${c.n} w=${c.width}`).join(' | ')} |`,
      `|---|${r.convoys.map(() => '---').join('|')}|`,
    );
    for (const h of hopKeys) {
      const row = r.convoys.map((c) => {
        const x = c.summary.hops[h];
        return x?.p50 ? `${time(x.p50.median)} / ${x.p99 ? time(x.p99.median) : '–'}` : '–';
      });
      lines.push(`| ${BREAKDOWN_HOPS.has(h) ? `↳ ${HOPS[h]}` : HOPS[h]} | ${row.join(' | ')} |`);
    }
    lines.push('');
    embed('hops');
    lines.push(...renderWaterfalls(r.convoys));
    lines.push('## History events and Temporal actions (actions approximated from events; see bench/README.md)', '');
    lines.push(
      '| N | width | events / bead | events / MR | convoy events (runs) | refinery events (runs) | dispatch-gate events (runs) | actions / bead | actions / MR | actions / convoy | all-in actions per bead | largest history |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|',
    );
    for (const c of r.convoys) {
      const h = c.summary.history;
      const n = (s: Spread | undefined) => cell(s, (v) => num(v, 0));
      lines.push(
        `| ${c.n} | ${c.width} | ${n(h.eventsPerBead)} | ${n(h.eventsPerMr)} | ${n(h.eventsPerConvoy)} (${n(h.convoyRuns)}) | ${n(h.eventsRefinery)} (${n(h.refineryRuns)}) | ${n(h.eventsDispatchGate)} (${n(h.dispatchGateRuns)}) | ${n(h.actionsPerBead)} | ${n(h.actionsPerMr)} | ${n(h.actionsPerConvoy)} | ${cell(h.actionsPerBeadAllIn, (v) => num(v))} | ${n(h.largestHistory)}${h.largestHistoryKind ? ` (${h.largestHistoryKind})` : ''} |`,
      );
    }
    lines.push('');
    lines.push(...renderCpu(r.convoys));
  }

  if (r.mergeQueue.length) {
    const q0 = r.mergeQueue[0]!.repeats[0];
    lines.push(
      `## Merge queue with a slow gate (${String(r.parameters.gateSeconds)} s)${q0 ? `: ${q0.mrs} MRs, ${q0.bad} bad` : ''}`,
      '',
      '| mode | repeats | merged | gate runs | gate runs / merged MR | queue drain | makespan (agents included) | merged / min |',
      '|---|---|---|---|---|---|---|---|',
    );
    for (const q of r.mergeQueue) {
      const s = q.summary;
      lines.push(
        `| ${queueModeLabel(q)} | ${q.repeats.length}${q.failures.length ? ` (+${q.failures.length} failed)` : ''} | ${cell(s.merged, (v) => num(v, 0))} | ${cell(s.gateRuns, (v) => num(v, 0))} | ${cell(s.gateRunsPerMerged, (v) => v.toFixed(2))} | ${cell(s.drainMs)} | ${cell(s.makespanMs)} | ${cell(s.mergedPerMinute, (v) => v.toFixed(1))} |`,
      );
    }
    lines.push('');
    embed('queue');
  }

  const failures = [...r.convoys.flatMap((c) => c.failures), ...r.mergeQueue.flatMap((q) => q.failures)];
  if (failures.length || r.notes.length) {
    lines.push('## Notes', '');
    for (const n of [...r.notes, ...failures]) lines.push(`- ${n}`);
    lines.push('');
  }
  return lines.join('\n');
}

/** Writes `<stamp>-<chart>.svg` next to the report for every chart it has figures for; returns their file names. */
export function writeCharts(dir: string, stamp: string, report: BenchReport): ChartFiles {
  const files: ChartFiles = {};
  for (const chart of benchCharts(report)) {
    const file = `${stamp}-${chart.name}.svg`;
    writeFileSync(join(dir, file), chart.svg);
    files[chart.name] = file;
  }
  return files;
}

/** Writes the Markdown and charts of an earlier JSON report again (summaries recomputed from its repeats); latest.md only if it is the newest. */
export function rerender(jsonPath: string): string {
  const report = JSON.parse(readFileSync(jsonPath, 'utf8')) as BenchReport;
  for (const c of report.convoys) c.summary = summarizeConvoy(c.repeats);
  for (const q of report.mergeQueue) q.summary = summarizeQueue(q.repeats);
  const md = jsonPath.replace(/\.json$/, '.md');
  const dir = dirname(jsonPath);
  writeFileSync(md, renderMarkdown(report, writeCharts(dir, basename(jsonPath, '.json'), report)));
  const newest = readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .at(-1);
  if (newest === basename(jsonPath)) copyFileSync(md, join(dir, 'latest.md'));
  return md;
}

/** Writes `<stamp>.json`, `<stamp>.md`, the charts and (unless `latest` is false: a partial run) `latest.md`; returns their paths. */
export function writeReport(
  dir: string,
  report: BenchReport,
  { latest: updateLatest = true } = {},
): { json: string; md: string; latest?: string } {
  mkdirSync(dir, { recursive: true });
  const stamp = report.startedAt.replace(/[:.]/g, '-');
  const json = join(dir, `${stamp}.json`);
  const md = join(dir, `${stamp}.md`);
  const latest = join(dir, 'latest.md');
  writeFileSync(json, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(md, renderMarkdown(report, writeCharts(dir, stamp, report)));
  if (!updateLatest) return { json, md };
  copyFileSync(md, latest);
  return { json, md, latest };
}

const CPU_FIGURES = [
  'floorPerBeadMs',
  'perBeadMs',
  'serverPerBeadMs',
  'workerPerBeadMs',
  'restPerBeadMs',
  'floorBusy',
  'busy',
] as const satisfies readonly (keyof CpuFigures)[];

function renderCpu(convoys: ConvoyScenarioReport[]): string[] {
  const measured = convoys.filter((c) => c.summary.cpu.perBeadMs);
  if (!measured.length) return [];
  const ms = (v: number) => `${Math.round(v)} ms`;
  const share = (v: number) => `${Math.round(v * 100)} %`;
  const lines = [
    '## CPU per bead (core-ms, the whole machine over each run; bench/cpu.ts)',
    '',
    'With more agents than cores the cores are saturated, and the makespan ratio is then the ratio of CPU per bead. The rest is what the town starts (git, the agents and their `gt done`, the process helper) and anything else that ran meanwhile.',
    '',
    '| N | width | floor | ours | ratio | Temporal server | worker | rest | cores busy, floor / ours |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const c of measured) {
    const s = c.summary.cpu;
    const ratio =
      s.perBeadMs && s.floorPerBeadMs ? `${(s.perBeadMs.median / s.floorPerBeadMs.median).toFixed(2)}×` : '–';
    lines.push(
      `| ${c.n} | ${c.width} | ${cell(s.floorPerBeadMs, ms)} | ${cell(s.perBeadMs, ms)} | ${ratio} | ${cell(s.serverPerBeadMs, ms)} | ${cell(s.workerPerBeadMs, ms)} | ${cell(s.restPerBeadMs, ms)} | ${cell(s.floorBusy, share)} / ${cell(s.busy, share)} |`,
    );
  }
  lines.push('');
  return lines;
}
