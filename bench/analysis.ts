/**
 * From timelines to figures: makespan against the floor, per-bead overhead, hop latencies, and what each kind of
 * workflow costs in history events and (approximate) Temporal Cloud actions. One set of figures per repeat; the
 * report takes medians over repeats.
 */
import type { CpuSpent } from './cpu';
import type { FloorRun } from './floor';
import { actionsOf, type Actions, type RunHistory } from './histories';
import { readyAt, type BeadTimeline, type OrchestratedRun } from './orchestrated';
import { dependencyOf } from './scenario';
import { percentiles, type Percentiles } from './stats';
import { hopWaterfall, type HopWaterfall } from './waterfall';

const diff = (to: number | undefined, from: number | undefined) =>
  to === undefined || from === undefined || !Number.isFinite(to) || !Number.isFinite(from) ? undefined : to - from;
const defined = (xs: (number | undefined)[]) => xs.filter((x): x is number => x !== undefined);

/**
 * Hops between the steps of a bead's life; each is measured from recorded timestamps only. Reports show the hops they
 * have samples of: the two around the merge request's start are no longer measured (the bead hands the ticket over
 * before it starts the merge request, since 2026-12-03) and stay for the reports from before, whose charts draw them.
 */
export const HOPS = {
  doneToMergeStarted: '`gt done` accepted → merge started',
  mergeStartedToMerged: 'merge started → merged',
  mergedToDependentAgentStarted: 'merged → dependent bead’s agent started',
  doneToDependentAgentStarted: '`gt done` accepted → dependent bead’s agent started',
  doneToMrStarted: '`gt done` accepted → merge request started',
  mrStartedToMergeStarted: 'merge request started → merge started (queue wait)',
  doneToTicket: '`gt done` accepted → ticket with the refinery',
  ticketToMergeStarted: 'ticket with the refinery → merge started (queue wait)',
  mergedToDependentStarted: 'merged → dependent bead workflow started',
  mergedToClosed: 'merged → bead closed',
  closedToDependentStarted: 'bead closed → dependent bead workflow started',
  dependentStartedToAgentStarted: 'dependent bead workflow started → its agent started',
  gtDoneCommand: 'agent: `gt done` command, call → return',
  commitToDoneAccepted: 'agent: commit made → `gt done` accepted',
} as const;
/** Hops that break the main ones down (shown indented in the summary). */
export const BREAKDOWN_HOPS: ReadonlySet<string> = new Set([
  'doneToMrStarted',
  'mrStartedToMergeStarted',
  'doneToTicket',
  'ticketToMergeStarted',
  'mergedToDependentStarted',
  'mergedToClosed',
  'closedToDependentStarted',
  'dependentStartedToAgentStarted',
]);
export type Hop = keyof typeof HOPS;

export function hopSamples(beads: readonly BeadTimeline[], width: number): Record<Hop, number[]> {
  const byIndex = new Map(beads.map((b) => [b.index, b]));
  const s = Object.fromEntries(Object.keys(HOPS).map((k) => [k, [] as number[]])) as Record<Hop, number[]>;
  const add = (hop: Hop, v: number | undefined) => v !== undefined && s[hop].push(v);
  for (const b of beads) {
    add('doneToMergeStarted', diff(b.mergeStartedAt, b.doneAcceptedAt));
    add('mergeStartedToMerged', diff(b.mergedAt, b.mergeStartedAt));
    add('doneToTicket', diff(b.ticketAt, b.doneAcceptedAt));
    add('ticketToMergeStarted', diff(b.mergeStartedAt, b.ticketAt));
    add('mergedToClosed', diff(b.closedAt, b.mergedAt));
    add('gtDoneCommand', diff(b.doneReturnedAt, b.committedAt));
    add('commitToDoneAccepted', diff(b.doneAcceptedAt, b.committedAt));
    const depIndex = dependencyOf(b.index, width);
    const dep = depIndex === undefined ? undefined : byIndex.get(depIndex);
    if (!dep) continue;
    add('mergedToDependentAgentStarted', diff(b.agentStartedAt, dep.mergedAt));
    add('doneToDependentAgentStarted', diff(b.agentStartedAt, dep.doneAcceptedAt));
    add('mergedToDependentStarted', diff(b.workflowStartedAt, dep.mergedAt));
    // Negative since the refinery reports a convoy bead's merge to the convoy itself: the dependent starts first.
    add('closedToDependentStarted', diff(b.workflowStartedAt, dep.closedAt));
    add('dependentStartedToAgentStarted', diff(b.agentStartedAt, b.workflowStartedAt));
  }
  return s;
}

export interface ConvoyRepeatFigures {
  makespanMs: number;
  floorMakespanMs: number;
  ratio: number;
  merged: number;
  /** Orchestrated minus floor time from "could start" to "merged", per bead (same bead of the same DAG). */
  overhead: Percentiles;
  latency: Percentiles;
  floorLatency: Percentiles;
  hops: Record<Hop, Percentiles>;
  history: HistoryFigures;
  /** Absent in reports from before it was measured, and where /proc cannot be read. */
  cpu?: CpuFigures;
  /** A chain's median hop, step by step (width 1 only; absent in reports from before 2026-12-03 14:37). */
  waterfall?: HopWaterfall;
}

/**
 * CPU per bead over the floor's run and over ours (bench/cpu.ts), in core-ms: the machine's busy time and, of ours,
 * the Temporal server's, the worker's (the bench's process) and the rest (git, agents, the process helper).
 */
export interface CpuFigures {
  floorPerBeadMs: number;
  perBeadMs: number;
  serverPerBeadMs?: number;
  workerPerBeadMs: number;
  restPerBeadMs: number;
  /** How busy the machine's cores were over each run, 0–1. */
  floorBusy: number;
  busy: number;
}

export function cpuFigures(
  ours: CpuSpent | undefined,
  floor: CpuSpent | undefined,
  beads: number,
): CpuFigures | undefined {
  if (!ours || !floor || beads === 0) return undefined;
  const busy = (c: CpuSpent) => (c.wallMs > 0 ? c.machineMs / (c.wallMs * c.cores) : 0);
  return {
    floorPerBeadMs: floor.machineMs / beads,
    perBeadMs: ours.machineMs / beads,
    ...(ours.serverMs !== undefined ? { serverPerBeadMs: ours.serverMs / beads } : {}),
    workerPerBeadMs: ours.selfMs / beads,
    restPerBeadMs: (ours.machineMs - (ours.serverMs ?? 0) - ours.selfMs) / beads,
    floorBusy: busy(floor),
    busy: busy(ours),
  };
}

export function convoyFigures(run: OrchestratedRun, floor: FloorRun, width: number): ConvoyRepeatFigures {
  const latency = (r: { startedAt: number; beads: { index: number; mergedAt?: number }[] }) =>
    new Map(r.beads.map((b) => [b.index, diff(b.mergedAt, readyAt(r, b.index, width))] as const));
  const orch = latency(run);
  const base = latency(floor);
  const overhead = defined([...orch].map(([i, v]) => diff(v, base.get(i))));
  const hops = hopSamples(run.beads, width);
  const cpu = cpuFigures(run.cpu, floor.cpu, run.beads.length);
  const waterfall = width === 1 ? hopWaterfall(run.beads, run.histories) : undefined;
  return {
    makespanMs: run.makespanMs,
    floorMakespanMs: floor.makespanMs,
    ratio: run.makespanMs / floor.makespanMs,
    merged: run.beads.filter((b) => b.mergedAt !== undefined).length,
    overhead: percentiles(overhead),
    latency: percentiles(defined([...orch.values()])),
    floorLatency: percentiles(defined([...base.values()])),
    hops: Object.fromEntries(Object.entries(hops).map(([k, v]) => [k, percentiles(v)])) as Record<Hop, Percentiles>,
    history: historyFigures(run.histories, run.beads.length),
    ...(cpu ? { cpu } : {}),
    ...(waterfall ? { waterfall } : {}),
  };
}

// --- history and actions ---

export interface KindFigures {
  /** Workflow executions of this kind (a continue-as-new chain counts once). */
  workflows: number;
  runs: number;
  /** Events per workflow (all its runs): median and largest. */
  eventsMedian: number;
  eventsMax: number;
  actionsMedian: number;
  actionsTotal: number;
  actions: Actions;
}

export interface HistoryFigures {
  byKind: Record<string, KindFigures>;
  /** All events / actions of every workflow of the rig, divided by its beads: what one bead costs all-in. */
  eventsPerBeadAllIn: number;
  actionsPerBeadAllIn: number;
  largestRun: { kind: string; workflowId: string; events: number };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? 0 : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const sumActions = (list: Actions[]): Actions => {
  const total: Actions = {
    workflowStarted: 0,
    activityAttempts: 0,
    heartbeatsEstimated: 0,
    timers: 0,
    signals: 0,
    updates: 0,
    searchAttributeUpserts: 0,
    total: 0,
  };
  for (const a of list) for (const k of Object.keys(total) as (keyof Actions)[]) total[k] += a[k];
  return total;
};

export function historyFigures(histories: readonly RunHistory[], beads: number): HistoryFigures {
  const byWorkflow = new Map<string, { kind: string; runs: RunHistory[] }>();
  for (const h of histories) {
    const w = byWorkflow.get(h.workflowId) ?? { kind: h.kind, runs: [] };
    w.runs.push(h);
    byWorkflow.set(h.workflowId, w);
  }
  const byKind: Record<string, KindFigures> = {};
  const kinds = new Set([...byWorkflow.values()].map((w) => w.kind));
  for (const kind of kinds) {
    const workflows = [...byWorkflow.values()].filter((w) => w.kind === kind);
    const events = workflows.map((w) => w.runs.reduce((n, r) => n + r.events.length, 0));
    const actions = workflows.map((w) => sumActions(w.runs.map((r) => actionsOf(r.events))));
    const all = sumActions(actions);
    byKind[kind] = {
      workflows: workflows.length,
      runs: workflows.reduce((n, w) => n + w.runs.length, 0),
      eventsMedian: median(events),
      eventsMax: Math.max(...events),
      actionsMedian: median(actions.map((a) => a.total)),
      actionsTotal: all.total,
      actions: all,
    };
  }
  const largest = [...histories].sort((a, b) => b.events.length - a.events.length)[0];
  const totalEvents = histories.reduce((n, h) => n + h.events.length, 0);
  const totalActions = Object.values(byKind).reduce((n, k) => n + k.actionsTotal, 0);
  return {
    byKind,
    eventsPerBeadAllIn: totalEvents / Math.max(1, beads),
    actionsPerBeadAllIn: totalActions / Math.max(1, beads),
    largestRun: {
      kind: largest?.kind ?? '-',
      workflowId: largest?.workflowId ?? '-',
      events: largest?.events.length ?? 0,
    },
  };
}

// --- merge queue ---

/** A merge-queue mode as the report names it: `batching (batch 8)`, `speculative (8 at once)`. */
export const queueModeLabel = (q: { mode: string; batchSize: number; speculation?: number }) =>
  q.mode === 'batching'
    ? `batching (batch ${q.batchSize})`
    : q.mode === 'speculative'
      ? `speculative (${q.speculation} at once)`
      : q.mode;

export interface QueueRepeatFigures {
  batchSize: number;
  speculation?: number;
  mrs: number;
  bad: number;
  merged: number;
  rejected: number;
  gateRuns: number;
  gateRunsPerMerged: number;
  /** From the refinery's release (every MR queued) to its last merge section's end. */
  drainMs: number;
  /** From the convoy's start to its end (agents included). */
  makespanMs: number;
  mergedPerMinute: number;
  sections: number;
}

export function queueFigures(
  run: OrchestratedRun,
  mode: { batchSize: number; speculation: number },
  bad: number,
): QueueRepeatFigures {
  const merged = run.beads.filter((b) => b.status === 'closed').length;
  const gateRuns = run.sections.reduce((n, s) => n + s.gateRuns, 0);
  const lastEnd = Math.max(...run.sections.map((s) => s.endedAt ?? 0));
  const drainMs = lastEnd - (run.queueReleasedAt ?? run.startedAt);
  return {
    ...mode,
    mrs: run.beads.length,
    bad,
    merged,
    rejected: run.beads.length - merged,
    gateRuns,
    gateRunsPerMerged: merged ? gateRuns / merged : NaN,
    drainMs,
    makespanMs: run.makespanMs,
    mergedPerMinute: drainMs > 0 ? (merged * 60_000) / drainMs : NaN,
    sections: run.sections.length,
  };
}
