/**
 * Reading a scenario back from Temporal: every workflow run of the scenario's rig (beads, merge requests, convoy,
 * refinery, dispatch gate, escalations — each continue-as-new run separately), its events, the Temporal Cloud
 * actions those events stand for, and the timestamps the hop latencies are computed from.
 */
import type { Client } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import proto, { type temporal } from '@temporalio/proto';
import type { HostQueueActivities, TownQueueActivities } from '../activities';
import { doneUpdate, enqueueSignal } from '../domain/messages';
import { SA } from '../domain/search-attributes';

type RawEvent = temporal.api.history.v1.IHistoryEvent;
// A CommonJS module: its enums are reached through the default export.
const { EventType } = proto.temporal.api.enums.v1;

export interface HistoryEvent {
  id: number;
  /** Event type without its prefix, e.g. `ActivityTaskScheduled`. */
  type: string;
  time: number;
  raw: RawEvent;
}

export interface RunHistory {
  workflowId: string;
  runId: string;
  workflowType: string;
  kind: string;
  events: HistoryEvent[];
}

const MERGE_ACTIVITY = 'mergeCandidate' satisfies keyof TownQueueActivities;
/** Speculative refineries gate candidates with one activity and land passing chains with another. */
const SPECULATIVE_GATE_ACTIVITY = 'gateSpeculative' satisfies keyof TownQueueActivities;
const LAND_ACTIVITY = 'landChain' satisfies keyof TownQueueActivities;
const SUPERVISE_ACTIVITY = 'superviseAgentRun' satisfies keyof HostQueueActivities;
const ENQUEUE_SIGNAL = enqueueSignal.name;

const camel = (name: string) =>
  name
    .replace(/^EVENT_TYPE_/, '')
    .toLowerCase()
    .replace(/(^|_)([a-z])/g, (_, _sep: string, c: string) => c.toUpperCase());

const ms = (
  ts: { seconds?: number | { toNumber(): number } | null; nanos?: number | null } | null | undefined,
): number => {
  if (!ts) return NaN;
  const seconds = typeof ts.seconds === 'number' ? ts.seconds : (ts.seconds?.toNumber() ?? 0);
  return seconds * 1000 + Math.floor((ts.nanos ?? 0) / 1e6);
};

/** JSON payloads back to values; anything else (an encrypted payload) reads as undefined. */
export function decode(payloads: temporal.api.common.v1.IPayloads | null | undefined): unknown {
  const first = payloads?.payloads?.[0];
  if (!first) return undefined;
  try {
    return defaultPayloadConverter.fromPayload(first);
  } catch {
    return undefined;
  }
}

export function parseEvents(events: RawEvent[]): HistoryEvent[] {
  return events.map((raw) => ({
    id: Number(raw.eventId),
    type: camel(EventType[raw.eventType ?? 0] ?? 'UNKNOWN'),
    time: ms(raw.eventTime),
    raw,
  }));
}

async function mapLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i]!);
  });
  await Promise.all(lanes);
  return out;
}

/**
 * Every run of every workflow of the rig. Visibility is eventually consistent, so the listing is repeated until it
 * holds every workflow id the caller knows must exist.
 */
export async function fetchRigHistories(
  client: Client,
  rig: string,
  mustInclude: readonly string[],
): Promise<RunHistory[]> {
  const query = `${SA.rig.name} = '${rig}'`;
  let listed: { workflowId: string; runId: string; workflowType: string; kind: string }[] = [];
  for (let tries = 0; tries < 50; tries++) {
    listed = [];
    for await (const wf of client.workflow.list({ query })) {
      listed.push({
        workflowId: wf.workflowId,
        runId: wf.runId,
        workflowType: wf.type,
        kind: String(wf.typedSearchAttributes.get(SA.kind) ?? wf.type),
      });
    }
    const ids = new Set(listed.map((w) => w.workflowId));
    if (mustInclude.every((id) => ids.has(id))) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  return mapLimited(listed, 8, async (wf) => {
    const history = await client.workflow.getHandle(wf.workflowId, wf.runId).fetchHistory();
    return { ...wf, events: parseEvents(history.events ?? []) };
  });
}

// --- actions ---

/** Categories of Temporal Cloud actions this bench can see in histories. */
export type ActionCategory =
  | 'workflowStarted'
  | 'activityAttempts'
  | 'heartbeatsEstimated'
  | 'timers'
  | 'signals'
  | 'updates'
  | 'searchAttributeUpserts';
export type Actions = Record<ActionCategory, number> & { total: number };

/** The SDK sends at most one heartbeat per 80 % of the heartbeat timeout (plus the first one right away). */
const HEARTBEAT_THROTTLE = 0.8;

/**
 * Billable actions approximated from a run's events (see bench/README.md for the mapping and what it leaves out):
 * a workflow start (client, child, continue-as-new, signal-with-start) is counted where the workflow starts, a
 * signal or update where it is received, every activity attempt, every timer (including `condition` timeouts),
 * every search-attribute upsert, and an estimate of the heartbeats the server received.
 */
export function actionsOf(events: readonly HistoryEvent[]): Actions {
  const a: Actions = {
    workflowStarted: 0,
    activityAttempts: 0,
    heartbeatsEstimated: 0,
    timers: 0,
    signals: 0,
    updates: 0,
    searchAttributeUpserts: 0,
    total: 0,
  };
  const scheduled = new Map<number, { heartbeatMs: number }>();
  const started = new Map<number, { time: number; attempt: number }>();
  for (const e of events) {
    const r = e.raw;
    switch (e.type) {
      case 'WorkflowExecutionStarted':
        a.workflowStarted++;
        break;
      case 'TimerStarted':
        a.timers++;
        break;
      case 'WorkflowExecutionSignaled':
        a.signals++;
        break;
      case 'WorkflowExecutionUpdateAccepted':
        a.updates++;
        break;
      case 'UpsertWorkflowSearchAttributes':
        a.searchAttributeUpserts++;
        break;
      case 'ActivityTaskScheduled':
        scheduled.set(e.id, { heartbeatMs: ms(r.activityTaskScheduledEventAttributes?.heartbeatTimeout) || 0 });
        break;
      case 'ActivityTaskStarted': {
        const attrs = r.activityTaskStartedEventAttributes!;
        started.set(Number(attrs.scheduledEventId), { time: e.time, attempt: attrs.attempt ?? 1 });
        break;
      }
      default: {
        const closing =
          r.activityTaskCompletedEventAttributes ??
          r.activityTaskFailedEventAttributes ??
          r.activityTaskTimedOutEventAttributes ??
          r.activityTaskCanceledEventAttributes;
        if (!closing) break;
        const id = Number(closing.scheduledEventId);
        const s = started.get(id);
        const heartbeatMs = scheduled.get(id)?.heartbeatMs ?? 0;
        if (s && heartbeatMs > 0)
          a.heartbeatsEstimated += 1 + Math.floor((e.time - s.time) / (HEARTBEAT_THROTTLE * heartbeatMs));
      }
    }
  }
  for (const id of scheduled.keys()) a.activityAttempts += started.get(id)?.attempt ?? 1;
  a.total =
    a.workflowStarted +
    a.activityAttempts +
    a.heartbeatsEstimated +
    a.timers +
    a.signals +
    a.updates +
    a.searchAttributeUpserts;
  return a;
}

// --- timelines ---

/** The activity type an `ActivityTaskScheduled` event names. */
export const activityName = (e: HistoryEvent) => e.raw.activityTaskScheduledEventAttributes?.activityType?.name;

export interface BeadEvents {
  workflowStartedAt: number;
  /** When the run's supervision (which launches the agent) started, for each run in order. */
  supervisionStartedAt: number[];
  doneAcceptedAt?: number;
  closedAt?: number;
  /** The bead's result status (closed, failed, cancelled), and why when it did not close. */
  status?: string;
  reason?: string;
}

export function beadEvents(events: readonly HistoryEvent[]): BeadEvents {
  const completed = events.find((e) => e.type === 'WorkflowExecutionCompleted');
  const superviseIds = new Set(
    events.filter((e) => e.type === 'ActivityTaskScheduled' && activityName(e) === SUPERVISE_ACTIVITY).map((e) => e.id),
  );
  return {
    workflowStartedAt: events.find((e) => e.type === 'WorkflowExecutionStarted')?.time ?? NaN,
    supervisionStartedAt: events
      .filter(
        (e) =>
          e.type === 'ActivityTaskStarted' &&
          superviseIds.has(Number(e.raw.activityTaskStartedEventAttributes?.scheduledEventId)),
      )
      .map((e) => e.time),
    doneAcceptedAt: events.find(
      (e) =>
        e.type === 'WorkflowExecutionUpdateAccepted' &&
        e.raw.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input?.name === doneUpdate.name,
    )?.time,
    closedAt: completed?.time,
    ...(decode(completed?.raw.workflowExecutionCompletedEventAttributes?.result) as
      { status?: string; reason?: string } | undefined),
  };
}

/**
 * One step of the refinery's merge work: a gated candidate (a single MR, a batch, a bisection probe, or a speculative
 * candidate: the MRs of its chain) or, on speculative rigs, the landing of a passing chain (no gate run).
 */
export interface MergeSection {
  mrIds: string[];
  startedAt: number;
  endedAt?: number;
  kind?: string;
  gateRuns: number;
  /** MR ids that landed with this candidate. */
  merged: string[];
}

interface CandidateInput {
  tickets?: { mrId: string }[];
  chain?: { ticket: { mrId: string } }[];
}
interface CandidateOutput {
  kind?: string;
  gateRuns?: number;
  merged?: { mrId: string }[];
}

/**
 * When each merge request's ticket first reached the refinery (its `enqueue` signal, or the signal-with-start's):
 * handed over by the merge request, or since 2026-12-03 by its bead as it starts the merge request.
 */
export function ticketsReceived(events: readonly HistoryEvent[]): Map<string, number> {
  const at = new Map<string, number>();
  for (const e of events) {
    const signal = e.raw.workflowExecutionSignaledEventAttributes;
    if (signal?.signalName !== ENQUEUE_SIGNAL) continue;
    const mrId = (decode(signal.input) as { mrId?: string } | undefined)?.mrId;
    if (mrId && !at.has(mrId)) at.set(mrId, e.time);
  }
  return at;
}

export function mergeSections(events: readonly HistoryEvent[]): MergeSection[] {
  const byScheduled = new Map<number, MergeSection & { activity: string }>();
  const section = (scheduledEventId: unknown) => byScheduled.get(Number(scheduledEventId));
  for (const e of events) {
    const activity = e.type === 'ActivityTaskScheduled' ? activityName(e) : undefined;
    if (activity === MERGE_ACTIVITY || activity === SPECULATIVE_GATE_ACTIVITY || activity === LAND_ACTIVITY) {
      const input = decode(e.raw.activityTaskScheduledEventAttributes?.input) as CandidateInput | undefined;
      byScheduled.set(e.id, {
        activity,
        mrIds: input?.tickets?.map((t) => t.mrId) ?? input?.chain?.map((l) => l.ticket.mrId) ?? [],
        startedAt: NaN,
        gateRuns: 0,
        merged: [],
      });
      continue;
    }
    const startedAttrs = e.raw.activityTaskStartedEventAttributes;
    if (startedAttrs) {
      const s = section(startedAttrs.scheduledEventId);
      if (s) s.startedAt = e.time;
      continue;
    }
    // A discarded speculative candidate stopped part way: its gate ran (the refinery counts it the same way).
    const cancelled = e.raw.activityTaskCanceledEventAttributes;
    if (cancelled) {
      const s = section(cancelled.scheduledEventId);
      if (s) [s.endedAt, s.kind, s.gateRuns] = [e.time, 'cancelled', s.activity === SPECULATIVE_GATE_ACTIVITY ? 1 : 0];
      continue;
    }
    const done = e.raw.activityTaskCompletedEventAttributes;
    if (done) {
      const s = section(done.scheduledEventId);
      if (!s) continue;
      const result = decode(done.result) as CandidateOutput | undefined;
      s.endedAt = e.time;
      s.kind = result?.kind;
      s.gateRuns = result?.gateRuns ?? 0;
      s.merged =
        result?.kind !== 'merged'
          ? []
          : s.activity === LAND_ACTIVITY
            ? s.mrIds
            : (result.merged ?? []).map((m) => m.mrId);
    }
  }
  return [...byScheduled.values()].map(({ activity: _activity, ...s }) => s).sort((a, b) => a.startedAt - b.startedAt);
}
