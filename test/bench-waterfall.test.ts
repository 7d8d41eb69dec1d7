/**
 * The bench's waterfall of a chain's hop (bench/waterfall.ts): the median hop is chosen, every workflow's tasks and
 * activities that overlap it are told with what started and ended them, and nothing outside it is. Histories are built
 * here event by event, as the server records them (the bench reads them from a real server in every report).
 */
import { defaultPayloadConverter } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import type { HistoryEvent, RunHistory } from '../bench/histories';
import type { BeadTimeline } from '../bench/orchestrated';
import { historySteps, hopWaterfall, renderWaterfalls, type HopWaterfall } from '../bench/waterfall';

/**
 * A history event: its id, type, time (ms) and attributes, as bench/histories.ts parses them (ids written as numbers
 * where the protobuf types say Long: the bench reads every id with Number()).
 */
const ev = (id: number, type: string, time: number, raw: Record<string, unknown> = {}): HistoryEvent => ({
  id,
  type,
  time,
  raw,
});
const payloads = (value: unknown) => ({ payloads: [defaultPayloadConverter.toPayload(value)] });
/** A workflow task's three events, ids `id` to `id + 2`. */
const task = (id: number, scheduled: number, started: number, completed: number): HistoryEvent[] => [
  ev(id, 'WorkflowTaskScheduled', scheduled),
  ev(id + 1, 'WorkflowTaskStarted', started, { workflowTaskStartedEventAttributes: { scheduledEventId: id } }),
  ev(id + 2, 'WorkflowTaskCompleted', completed, { workflowTaskCompletedEventAttributes: { scheduledEventId: id } }),
];

/** A bead's last steps: its supervision ends, it hands its ticket over and starts its merge request. */
const beadHistory: HistoryEvent[] = [
  ev(1, 'WorkflowExecutionStarted', 0),
  ...task(2, 0, 0, 5),
  ev(5, 'ActivityTaskScheduled', 5, { activityTaskScheduledEventAttributes: { activityType: { name: 'launchRun' } } }),
  ev(6, 'ActivityTaskStarted', 12, { activityTaskStartedEventAttributes: { scheduledEventId: 5 } }),
  ev(7, 'ActivityTaskCompleted', 40, { activityTaskCompletedEventAttributes: { scheduledEventId: 5 } }),
  ...task(8, 40, 41, 50),
  ev(11, 'ActivityTaskScheduled', 50, {
    activityTaskScheduledEventAttributes: { activityType: { name: 'superviseAgentRun' } },
  }),
  ...task(12, 1000, 1002, 1010),
  ev(15, 'WorkflowExecutionUpdateAccepted', 1010, {
    workflowExecutionUpdateAcceptedEventAttributes: { acceptedRequest: { input: { name: 'gt_done' } } },
  }),
  ev(16, 'WorkflowExecutionUpdateCompleted', 1010),
  ev(17, 'TimerCanceled', 1010),
  ev(18, 'ActivityTaskStarted', 52, { activityTaskStartedEventAttributes: { scheduledEventId: 11 } }),
  ev(19, 'ActivityTaskCompleted', 1100, { activityTaskCompletedEventAttributes: { scheduledEventId: 11 } }),
  ...task(20, 1100, 1103, 1130),
  ev(23, 'UpsertWorkflowSearchAttributes', 1130),
  ev(24, 'UpsertWorkflowSearchAttributes', 1130),
  ev(25, 'MarkerRecorded', 1130, {
    markerRecordedEventAttributes: {
      markerName: 'core_local_activity',
      details: { data: payloads({ activity_type: 'queueMergeRequest' }) },
    },
  }),
  ev(26, 'StartChildWorkflowExecutionInitiated', 1130, {
    startChildWorkflowExecutionInitiatedEventAttributes: { workflowType: { name: 'mergeRequestWorkflow' } },
  }),
];

const refineryHistory: HistoryEvent[] = [
  ev(40, 'WorkflowExecutionSignaled', 1120, { workflowExecutionSignaledEventAttributes: { signalName: 'enqueue' } }),
  ...task(41, 1120, 1121, 1135),
  ev(44, 'ActivityTaskScheduled', 1135, {
    activityTaskScheduledEventAttributes: { activityType: { name: 'mergeCandidate' } },
  }),
  ev(45, 'ActivityTaskStarted', 1135, { activityTaskStartedEventAttributes: { scheduledEventId: 44 } }),
  ev(46, 'ActivityTaskCompleted', 1250, { activityTaskCompletedEventAttributes: { scheduledEventId: 44 } }),
];

const run = (workflowId: string, kind: string, events: HistoryEvent[]): RunHistory => ({
  workflowId,
  runId: 'r',
  workflowType: `${kind}Workflow`,
  kind,
  events,
});

const bead = (index: number, t: Partial<BeadTimeline>): BeadTimeline => ({
  beadId: `c-b${index}`,
  index,
  workflowStartedAt: NaN,
  ...t,
});

describe('the bench waterfall of a hop', () => {
  it('tells each workflow task by what it took and did, each activity by its name, both with their wait', () => {
    expect(historySteps(beadHistory)).toEqual([
      { from: 0, to: 5, what: 'task (start): schedule launchRun' },
      { from: 5, to: 40, what: 'activity launchRun, started after 7 ms' },
      { from: 40, to: 50, what: 'task (launchRun completed), started after 1 ms: schedule superviseAgentRun' },
      {
        from: 1000,
        to: 1010,
        what: 'task, started after 2 ms: update gt_done, update answered, timer cancelled',
      },
      { from: 50, to: 1100, what: 'activity superviseAgentRun, started after 2 ms' },
      {
        from: 1100,
        to: 1130,
        what: 'task (superviseAgentRun completed), started after 3 ms: upsert ×2, local activity queueMergeRequest, start child mergeRequestWorkflow',
      },
    ]);
  });

  it("lays the median hop's steps from every workflow over it, and nothing outside it", () => {
    // Hops: bead 0 → 1 300 ms, bead 1 → 2 500 ms, bead 2 → 3 400 ms (the median).
    const beads = [
      bead(0, { doneAcceptedAt: 0 }),
      bead(1, { agentStartedAt: 300, doneAcceptedAt: 500 }),
      bead(2, { agentStartedAt: 1000, doneAcceptedAt: 1010, doneReturnedAt: 1030 }),
      bead(3, { agentStartedAt: 1410 }),
    ];
    const w = hopWaterfall(beads, [
      run('bead:c-b2', 'bead', beadHistory),
      run('refinery:c', 'refinery', refineryHistory),
    ]);
    expect(w?.bead).toBe(3);
    expect(w?.hopMs).toBe(400);
    expect(w?.steps.map((s) => [s.from, s.to, s.workflow, s.what.split(',')[0]])).toEqual([
      // The supervision began long before the hop and ends within it; the bead's first steps are left out.
      [-960, 90, 'bead 2', 'activity superviseAgentRun'],
      [-10, 0, 'bead 2', 'task'],
      [20, 20, 'agent 2', '`gt done` returned'],
      [90, 120, 'bead 2', 'task (superviseAgentRun completed)'],
      [110, 125, 'refinery', 'task (signal enqueue)'],
      [125, 240, 'refinery', 'activity mergeCandidate'],
      [400, 400, 'agent 3', 'started'],
    ]);
  });

  it("reports the waterfall of the repeat whose hop is the median of the repeats'", () => {
    const of = (bead: number, hopMs: number): HopWaterfall => ({
      bead,
      hopMs,
      steps: [{ from: 0, to: hopMs, workflow: `bead ${bead}`, what: 'activity launchRun' }],
    });
    const lines = renderWaterfalls([
      { n: 10, width: 1, repeats: [{ waterfall: of(4, 450) }, { waterfall: of(6, 380) }, { waterfall: of(2, 900) }] },
      // Wide scenarios have none.
      { n: 100, width: 16, repeats: [{}] },
    ]);
    expect(lines[0]).toBe("### N=10 w=1: bead 3's `gt done` accepted → bead 4's agent started, 450 ms, step by step");
    expect(lines).toContain('| 0 | 450 | bead 4 | activity launchRun |');
    expect(lines.filter((l) => l.startsWith('###'))).toHaveLength(1);
  });
});
