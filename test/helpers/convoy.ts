/** Convoy test helpers: spec files, and reading what happened from workflow histories (the order of events is the evidence). */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import { stringify } from 'yaml';
import type { ConvoySpecInput } from '../../domain/convoy';

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

export function writeSpec(spec: ConvoySpecInput | Record<string, unknown>, ext: 'yaml' | 'json' = 'yaml'): string {
  const path = join(mkdtempSync(join(tmpdir(), 'gt-convoy-')), `spec.${ext}`);
  writeFileSync(path, ext === 'json' ? JSON.stringify(spec) : stringify(spec));
  return path;
}

export const eventTimeMs = (e: HistoryEvent) =>
  Number(e.eventTime?.seconds ?? 0) * 1000 + Math.floor((e.eventTime?.nanos ?? 0) / 1e6);

const decode = (payloads: temporal.api.common.v1.IPayloads | null | undefined): unknown[] =>
  (payloads?.payloads ?? []).map((p) => defaultPayloadConverter.fromPayload(p));

/** Every run of a workflow (continue-as-new makes several), oldest first. */
export async function runsOf(client: Client, workflowId: string): Promise<{ runId: string; historyLength: number }[]> {
  const runs: { runId: string; historyLength: number; start: number }[] = [];
  for await (const wf of client.workflow.list({ query: `WorkflowId = '${workflowId}'` }))
    runs.push({ runId: wf.runId, historyLength: wf.historyLength, start: wf.startTime.getTime() });
  return runs.sort((a, b) => a.start - b.start);
}

/** A bead report the convoy took (`from`: the workflow that signalled it) or a start of beads it scheduled. */
export interface TimelineEvent {
  kind: 'report' | 'start';
  beadId: string;
  status?: string;
  at: number;
  from?: string;
}

/** The convoy's history across all its runs: bead reports received and bead starts scheduled, in order. */

export async function convoyTimeline(client: Client, convoyId: string): Promise<TimelineEvent[]> {
  const timeline: TimelineEvent[] = [];
  for (const run of await runsOf(client, `convoy:${convoyId}`)) {
    const history = await client.workflow.getHandle(`convoy:${convoyId}`, run.runId).fetchHistory();
    for (const e of history.events ?? []) {
      const signal = e.workflowExecutionSignaledEventAttributes;
      if (signal?.signalName === 'beadReport') {
        const [report] = decode(signal.input) as [{ beadId: string; status: string; reportedBy?: string }];
        // A workflow's signal names it; the refinery's report, sent from its local activity, says it in the report.
        const from = signal.externalWorkflowExecution?.workflowId ?? report.reportedBy;
        timeline.push({ kind: 'report', beadId: report.beadId, status: report.status, at: eventTimeMs(e), from });
      }
      const scheduled = e.activityTaskScheduledEventAttributes;
      if (scheduled?.activityType?.name === 'startConvoyBeads') {
        const [input] = decode(scheduled.input) as [{ beads: { id: string }[] }];
        for (const b of input.beads) timeline.push({ kind: 'start', beadId: b.id, at: eventTimeMs(e) });
      }
      // Since 'convoy-starts-beads-locally' a local activity: its marker keeps the answer (every bead asked for), not
      // the input, and is written when the workflow task that ran it completes.
      const marker = e.markerRecordedEventAttributes;
      if (marker?.markerName === 'core_local_activity') {
        const [data] = decode(marker.details?.data) as [{ activity_type: string }];
        if (data.activity_type === 'startConvoyBeads') {
          const [answer] = decode(marker.details?.result) as [{ results: { beadId: string }[] }];
          for (const r of answer.results) timeline.push({ kind: 'start', beadId: r.beadId, at: eventTimeMs(e) });
        }
      }
    }
  }
  return timeline;
}

/**
 * When the rig's refinery reported each convoy bead's merge to its convoy, across its runs: the completion of the
 * workflow task that signalled it, the start of the one whose local activity sent it, or the start of the merge
 * section that sent it as its push landed. Bead id → time and sender. A bead reported twice fails the test.
 */
export async function refineryMerges(
  client: Client,
  rig: string,
): Promise<Map<string, { at: number; by: 'signal' | 'local activity' | 'merge section' }>> {
  const merges = new Map<string, { at: number; by: 'signal' | 'local activity' | 'merge section' }>();
  const reported = (beadId: string, at: number, by: 'signal' | 'local activity' | 'merge section') => {
    if (merges.has(beadId)) throw new Error(`the refinery reported ${beadId} twice`);
    merges.set(beadId, { at, by });
  };
  for (const run of await runsOf(client, `refinery:${rig}`)) {
    const history = await client.workflow.getHandle(`refinery:${rig}`, run.runId).fetchHistory();
    /** The start of the workflow task under way: a local activity runs in it, before its marker is written. */
    let taskStarted = 0;
    /** The merge sections by their scheduled event: the beads of their tickets and when they started. */
    const sections = new Map<string, { beads: Map<string, string>; started?: number }>();
    for (const e of history.events ?? []) {
      if (e.workflowTaskStartedEventAttributes) taskStarted = eventTimeMs(e);
      const scheduled = e.activityTaskScheduledEventAttributes;
      if (scheduled?.activityType?.name === 'mergeCandidate') {
        const [input] = decode(scheduled.input) as [{ tickets: { mrId: string; beadId: string }[] }];
        sections.set(String(e.eventId), { beads: new Map(input.tickets.map((t) => [t.mrId, t.beadId])) });
      }
      const started = e.activityTaskStartedEventAttributes;
      const section = sections.get(String(started?.scheduledEventId));
      if (section) section.started = eventTimeMs(e);
      const completed = e.activityTaskCompletedEventAttributes;
      const done = sections.get(String(completed?.scheduledEventId));
      if (done) {
        const [result] = decode(completed!.result) as [{ convoyTold?: string[] }];
        for (const mrId of result.convoyTold ?? []) reported(done.beads.get(mrId)!, done.started!, 'merge section');
      }
      const sent = e.signalExternalWorkflowExecutionInitiatedEventAttributes;
      if (sent?.signalName === 'beadReport') {
        const [report] = decode(sent.input) as [{ beadId: string }];
        reported(report.beadId, eventTimeMs(e), 'signal');
      }
      // Since 'refinery-delivers-locally' the report goes from a local activity, whose answer names the bead.
      const marker = e.markerRecordedEventAttributes;
      if (marker?.markerName === 'core_local_activity') {
        const [data] = decode(marker.details?.data) as [{ activity_type: string }];
        if (data.activity_type !== 'deliverMergeOutcome') continue;
        const [answer] = decode(marker.details?.result) as [{ convoy?: { beadId: string; reported: boolean } }];
        if (answer.convoy?.reported) reported(answer.convoy.beadId, taskStarted, 'local activity');
      }
    }
  }
  return merges;
}

/** When a bead's workflow started (the first event of its history). */
export async function beadStartedAt(client: Client, beadId: string): Promise<number> {
  const history = await client.workflow.getHandle(`bead:${beadId}`).fetchHistory();
  return eventTimeMs(history.events![0]!);
}

/**
 * A bead's first launch, from its history: the commits its target was said to hold (launchRun's `targetHas`) and
 * whether its host fetched the mirror for it.
 */
export async function firstLaunchOf(
  client: Client,
  beadId: string,
): Promise<{ targetHas?: string[]; fetched?: boolean }> {
  const events = (await client.workflow.getHandle(`bead:${beadId}`).fetchHistory()).events ?? [];
  // launchRunWhenGranted for a bead a convoy started (it asks the gate as it prepares), launchRun otherwise.
  const launches = ['launchRun', 'launchRunWhenGranted'];
  const scheduled = events.find((e) =>
    launches.includes(e.activityTaskScheduledEventAttributes?.activityType?.name ?? ''),
  );
  const completed = events.find(
    (e) => e.activityTaskCompletedEventAttributes?.scheduledEventId?.toString() === scheduled?.eventId?.toString(),
  );
  const [input] = decode(scheduled?.activityTaskScheduledEventAttributes?.input) as [{ targetHas?: string[] }];
  const [result] = decode(completed?.activityTaskCompletedEventAttributes?.result) as [
    { prepared: { fetched?: boolean } },
  ];
  return { targetHas: input?.targetHas, fetched: result?.prepared.fetched };
}

/** Whether a workflow with this id was ever started. */
export function workflowExists(client: Client, workflowId: string): Promise<boolean> {
  return client.workflow
    .getHandle(workflowId)
    .describe()
    .then(
      () => true,
      (err: unknown) => {
        if (err instanceof WorkflowNotFoundError) return false;
        throw err;
      },
    );
}

/** Whether a bead workflow was ever started (dependents of a failed bead must never be). */
export const beadExists = (client: Client, beadId: string) => workflowExists(client, `bead:${beadId}`);
