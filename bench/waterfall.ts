/**
 * One hop of a chain, step by step: every workflow task and activity of every workflow of the rig between a bead's
 * `gt done` accepted and its dependent's agent started, read from the recorded histories, with what started and ended
 * each step. docs/performance.md lists the critical path by hand; this is the same path as each report measured it.
 * Shown for chains (width 1), where every hop is on the critical path; the hop chosen is the median one.
 */
import { activityName, decode, type HistoryEvent, type RunHistory } from './histories';
import type { BeadTimeline } from './orchestrated';

export interface WaterfallStep {
  /** ms from the hop's start (the bead's `gt done` accepted); a step begun before it starts below zero. */
  from: number;
  to: number;
  workflow: string;
  what: string;
}

export interface HopWaterfall {
  /** The dependent bead's index: the hop runs from bead `bead − 1`'s `gt done` to this bead's agent. */
  bead: number;
  hopMs: number;
  steps: WaterfallStep[];
}

/** Events that hand a workflow something to decide on: they come before the workflow task that takes them. */
const INPUTS = new Set([
  'WorkflowExecutionStarted',
  'WorkflowExecutionSignaled',
  'WorkflowExecutionCancelRequested',
  'ActivityTaskCompleted',
  'ActivityTaskFailed',
  'ActivityTaskTimedOut',
  'ActivityTaskCanceled',
  'ChildWorkflowExecutionStarted',
  'ChildWorkflowExecutionCompleted',
  'ChildWorkflowExecutionFailed',
  'TimerFired',
  'ExternalWorkflowExecutionSignaled',
]);
const TASK_ENDS = new Set(['WorkflowTaskCompleted', 'WorkflowTaskFailed', 'WorkflowTaskTimedOut']);
const ACTIVITY_ENDS = new Set([
  'ActivityTaskCompleted',
  'ActivityTaskFailed',
  'ActivityTaskTimedOut',
  'ActivityTaskCanceled',
]);

const scheduledIdOf = (e: HistoryEvent): number | undefined => {
  const r = e.raw;
  const attrs =
    r.activityTaskStartedEventAttributes ??
    r.workflowTaskStartedEventAttributes ??
    r.activityTaskCompletedEventAttributes ??
    r.activityTaskFailedEventAttributes ??
    r.activityTaskTimedOutEventAttributes ??
    r.activityTaskCanceledEventAttributes ??
    r.workflowTaskCompletedEventAttributes ??
    r.workflowTaskFailedEventAttributes ??
    r.workflowTaskTimedOutEventAttributes;
  return attrs?.scheduledEventId == null ? undefined : Number(attrs.scheduledEventId);
};

/** What an event is, in a few words: the name of its activity, signal, update, child or local activity. */
function describe(e: HistoryEvent, activities: ReadonlyMap<number, string>): string {
  const r = e.raw;
  const activity = (id: number | undefined) => (id === undefined ? '?' : (activities.get(id) ?? '?'));
  switch (e.type) {
    case 'WorkflowExecutionStarted':
      return 'start';
    case 'WorkflowExecutionSignaled':
      return `signal ${r.workflowExecutionSignaledEventAttributes?.signalName ?? '?'}`;
    case 'ActivityTaskScheduled':
      return `schedule ${activityName(e) ?? '?'}`;
    case 'ActivityTaskCompleted':
    case 'ActivityTaskFailed':
    case 'ActivityTaskTimedOut':
    case 'ActivityTaskCanceled':
      return `${activity(scheduledIdOf(e))} ${e.type.slice('ActivityTask'.length).toLowerCase()}`;
    case 'MarkerRecorded': {
      const m = r.markerRecordedEventAttributes;
      if (m?.markerName !== 'core_local_activity') return 'patch marker';
      const data = decode(m.details?.data) as { activity_type?: string } | undefined;
      return `local activity ${data?.activity_type ?? '?'}`;
    }
    case 'UpsertWorkflowSearchAttributes':
      return 'upsert';
    case 'StartChildWorkflowExecutionInitiated':
      return `start child ${r.startChildWorkflowExecutionInitiatedEventAttributes?.workflowType?.name ?? '?'}`;
    case 'ChildWorkflowExecutionStarted':
      return 'child started';
    case 'ChildWorkflowExecutionCompleted':
      return 'child completed';
    case 'SignalExternalWorkflowExecutionInitiated':
      return `send ${r.signalExternalWorkflowExecutionInitiatedEventAttributes?.signalName ?? '?'}`;
    case 'WorkflowExecutionUpdateAccepted':
      return `update ${r.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input?.name ?? '?'}`;
    case 'WorkflowExecutionUpdateCompleted':
      return 'update answered';
    case 'TimerStarted':
      return 'timer';
    case 'TimerCanceled':
      return 'timer cancelled';
    case 'TimerFired':
      return 'timer fired';
    case 'WorkflowExecutionCompleted':
      return 'complete';
    case 'WorkflowExecutionContinuedAsNew':
      return 'continue as new';
    default:
      return e.type;
  }
}

/** The middle element of a sorted list (the lower one of an even count): a step table must be one that happened. */
const middle = <T>(sorted: readonly T[]): T | undefined => sorted[Math.floor((sorted.length - 1) / 2)];

/** How long a task or activity waited for a worker to take it, when it did. */
const startedAfter = (scheduled: number, started: number | undefined) =>
  started !== undefined && started > scheduled ? `, started after ${started - scheduled} ms` : '';

/** Repeats in a row said once: `upsert ×2`. */
function joined(parts: string[]): string {
  const out: string[] = [];
  for (let i = 0; i < parts.length;) {
    let j = i;
    while (parts[j + 1] === parts[i]) j++;
    out.push(j > i ? `${parts[i]} ×${j - i + 1}` : parts[i]!);
    i = j + 1;
  }
  return out.join(', ');
}

/**
 * A history's workflow tasks (from scheduled to completed: what they took, what they did) and activities (from
 * scheduled to closed), in absolute ms.
 */
export function historySteps(events: readonly HistoryEvent[]): { from: number; to: number; what: string }[] {
  const activities = new Map<number, string>();
  for (const e of events) if (e.type === 'ActivityTaskScheduled') activities.set(e.id, activityName(e) ?? '?');
  const steps: { from: number; to: number; what: string }[] = [];
  const tasks = new Map<number, { from: number; inputs: string[]; started?: number }>();
  const activityStarts = new Map<number, { scheduled: number; started?: number }>();
  let inputs: string[] = [];
  for (let i = 0; i < events.length; i++) {
    const e = events[i]!;
    if (INPUTS.has(e.type)) inputs.push(describe(e, activities));
    if (e.type === 'WorkflowTaskScheduled') {
      tasks.set(e.id, { from: e.time, inputs });
      inputs = [];
    } else if (e.type === 'WorkflowTaskStarted') {
      const task = tasks.get(scheduledIdOf(e) ?? -1);
      if (task) task.started = e.time;
    } else if (TASK_ENDS.has(e.type)) {
      const task = tasks.get(scheduledIdOf(e) ?? -1);
      if (!task) continue;
      // What the task decided: the events it recorded, up to the next input or task.
      const did: string[] = [];
      for (let j = i + 1; j < events.length; j++) {
        const next = events[j]!;
        if (INPUTS.has(next.type) || next.type === 'WorkflowTaskScheduled' || next.type === 'ActivityTaskStarted')
          break;
        did.push(describe(next, activities));
      }
      const took = task.inputs.length ? ` (${joined(task.inputs)})` : '';
      const failed = e.type === 'WorkflowTaskCompleted' ? '' : ` ${e.type.slice('WorkflowTask'.length).toLowerCase()}`;
      const what = `task${took}${failed}${startedAfter(task.from, task.started)}${did.length ? `: ${joined(did)}` : ''}`;
      steps.push({ from: task.from, to: e.time, what });
    } else if (e.type === 'ActivityTaskScheduled') {
      activityStarts.set(e.id, { scheduled: e.time });
    } else if (e.type === 'ActivityTaskStarted') {
      const a = activityStarts.get(scheduledIdOf(e) ?? -1);
      if (a) a.started = e.time;
    }
    if (ACTIVITY_ENDS.has(e.type)) {
      const id = scheduledIdOf(e) ?? -1;
      const a = activityStarts.get(id);
      if (!a) continue;
      const what = `activity ${activities.get(id) ?? '?'}${startedAfter(a.scheduled, a.started)}`;
      steps.push({ from: a.scheduled, to: e.time, what });
    }
  }
  return steps;
}

/** `bead 4`, `merge request 4`, `refinery`, …: which workflow, short. */
function workflowLabel(h: RunHistory): string {
  const index = /-b(\d+)(?:-bad)?(?::\d+)?$/.exec(h.workflowId)?.[1];
  return index === undefined ? h.kind : `${h.kind.replace('-', ' ')} ${index}`;
}

/**
 * The median hop of a chain (`gt done` accepted → the dependent's agent started), step by step: every step of every
 * workflow that overlaps it, and the agents' side (`gt done` returned, the agent started) from the agents' clock.
 */
export function hopWaterfall(
  beads: readonly BeadTimeline[],
  histories: readonly RunHistory[],
): HopWaterfall | undefined {
  const byIndex = new Map(beads.map((b) => [b.index, b]));
  const hops = beads
    .map((b) => ({ b, dep: byIndex.get(b.index - 1) }))
    .filter(
      (h): h is { b: BeadTimeline & { agentStartedAt: number }; dep: BeadTimeline & { doneAcceptedAt: number } } =>
        h.b.agentStartedAt !== undefined && h.dep?.doneAcceptedAt !== undefined,
    )
    .map((h) => ({ ...h, ms: h.b.agentStartedAt - h.dep.doneAcceptedAt }))
    .sort((x, y) => x.ms - y.ms);
  const hop = middle(hops);
  if (!hop) return undefined;
  const t0 = hop.dep.doneAcceptedAt;
  const t1 = hop.b.agentStartedAt;
  const steps: WaterfallStep[] = [];
  for (const h of histories) {
    const workflow = workflowLabel(h);
    for (const s of historySteps(h.events))
      if (s.to >= t0 && s.from <= t1) steps.push({ from: s.from - t0, to: s.to - t0, workflow, what: s.what });
  }
  const agent = (at: number | undefined, index: number, what: string) =>
    at !== undefined && steps.push({ from: at - t0, to: at - t0, workflow: `agent ${index}`, what });
  agent(hop.dep.doneReturnedAt, hop.dep.index, '`gt done` returned');
  agent(t1, hop.b.index, 'started');
  steps.sort((x, y) => x.from - y.from || x.to - y.to);
  return { bead: hop.b.index, hopMs: hop.ms, steps };
}

/**
 * The report's section: for each chain scenario, the waterfall of the repeat whose chosen hop is the median of the
 * repeats' (so one slow or quick repeat does not decide it).
 */
export function renderWaterfalls(
  convoys: readonly { n: number; width: number; repeats: readonly { waterfall?: HopWaterfall }[] }[],
): string[] {
  const lines: string[] = [];
  for (const c of convoys) {
    const all = c.repeats.flatMap((r) => (r.waterfall ? [r.waterfall] : [])).sort((a, b) => a.hopMs - b.hopMs);
    const w = middle(all);
    if (!w) continue;
    lines.push(
      `### N=${c.n} w=${c.width}: bead ${w.bead - 1}'s \`gt done\` accepted → bead ${w.bead}'s agent started, ${Math.round(w.hopMs)} ms, step by step`,
      '',
      `The median hop of the median repeat, from every workflow's history (bench/waterfall.ts): a workflow task from scheduled to completed, with what it took (in brackets) and what it did; an activity from scheduled to closed. ms from the \`gt done\` accepted.`,
      '',
      '| from | to | workflow | step |',
      '|---:|---:|---|---|',
      ...w.steps.map((s) => `| ${Math.round(s.from)} | ${Math.round(s.to)} | ${s.workflow} | ${s.what} |`),
      '',
    );
  }
  return lines;
}
