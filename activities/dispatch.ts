/** Activities of the dispatch gate: things workflow code cannot do (signal-with-start, describing other workflows). */
import { isDeepStrictEqual } from 'node:util';
import { WithStartWorkflowOperation, WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import type { SignalDefinition } from '@temporalio/common';
import { z } from 'zod';
import {
  type DispatchAnswer,
  dispatchGateWorkflowId,
  DispatchGrant,
  dispatchGrantSignal,
  DispatchRelease,
  dispatchReleaseSignal,
  DispatchReport,
  dispatchReportSignal,
  DispatchRequest,
  dispatchRequestSignal,
  requestDispatchUpdate,
} from '../domain/dispatch';
import { RigName } from '../domain/ids';
import { dispatchGateStart, withSignal } from '../domain/starts';
import { parseActivityInput } from '../domain/validation';
import { delivered, workflowStillRuns } from './town';

export interface DispatchDeps {
  client: Client;
  taskQueue: string;
  /**
   * How many requests of this worker may wait for the gate's answer at once (default 10). A bead asks from a local
   * activity, whose workflow task keeps its slot on this worker until the answer comes, and the answer needs a
   * workflow task of the gate, which may have to run here: kept well below the worker's workflow task slots, those
   * waits can never take the slot the gate needs. Requests beyond it are asked by signal and granted by signal.
   */
  answerWaits?: number;
  /** This worker's host queue: a request that asks to claim the host with its slot gets it in a granted answer. */
  hostQueue?: string;
}

export const RequestSlotInput = z.object({
  rig: RigName,
  request: DispatchRequest,
  /** false: ask by signal and be granted by signal (a formula's parallel legs, below). */
  answer: z.boolean().default(true),
  /**
   * true (a bead's request run as a local activity, for a run not retrying a failure): a granted answer also claims
   * this worker's host for the run, as the local claimHost would have in the next local activity.
   */
  claimHost: z.boolean().default(false),
});
export type RequestSlotInput = z.input<typeof RequestSlotInput>;

/** The gate's answer; with `hostQueue` when the request claimed the host too and was granted. */
export type SlotAnswer = DispatchAnswer & { hostQueue?: string };

export const ReleaseSlotInput = z.object({ rig: RigName, release: DispatchRelease });
export type ReleaseSlotInput = z.input<typeof ReleaseSlotInput>;

export const ReportStartInput = z.object({ rig: RigName, report: DispatchReport });
export type ReportStartInput = z.input<typeof ReportStartInput>;

export const DeliverGrantsInput = z.object({
  grants: z.array(DispatchGrant.extend({ workflowId: z.string().min(1).max(300) })).max(1000),
});
export type DeliverGrantsInput = z.input<typeof DeliverGrantsInput>;

export const ClosedWorkflowsInput = z.object({ workflowIds: z.array(z.string().min(1)).max(1000) });

/**
 * Signals a rig's gate. It takes a repeat as a no-op (a run is counted and freed once), and a gate that no longer runs
 * (the rig was removed) has nothing to count or free: not an error.
 */
async function signalGate<A>(client: Client, rig: string, signal: SignalDefinition<[A]>, arg: A): Promise<void> {
  await delivered(client.workflow.getHandle(dispatchGateWorkflowId(rig)).signal(signal, arg));
}

/**
 * Tells a rig's gate whether a granted run's agent started (its breaker counts consecutive failures): from the bead's
 * local activity (reportDispatchStart), or from the host's launchRun as the agent starts.
 */
export function dispatchStartReporter(client: Client) {
  return (rig: string, report: z.input<typeof DispatchReport>) => signalGate(client, rig, dispatchReportSignal, report);
}

/**
 * Gives a run's slot back to its rig's gate: from the bead's local activity (releaseDispatchSlot), or from the host's
 * supervision as the run's agent exits.
 */
export function dispatchSlotReleaser(client: Client) {
  return (rig: string, runId: string) => signalGate(client, rig, dispatchReleaseSignal, { runId });
}

/**
 * Asks a rig's gate for a run's slot, starting the gate (on the town queue `taskQueue`) if the rig has none yet, and
 * returns its answer: granted now (no grant signal follows) or queued (the grant comes by signal to the run's
 * workflow). Repeated asks are deduped by run id: a waiting run stays queued once, a holder is answered granted again.
 * Asked by signal (answered queued, granted by signal, as before the answer) when `answer` is false, and when the gate
 * runs code from before the answer (a fleet mid-upgrade: it refuses the update). From a bead's local activity
 * (requestDispatchSlot), or from the host's launch of a run that asks as it prepares (launchRunWhenGranted).
 */
export function dispatchSlotRequester(client: Client, taskQueue: string) {
  return async (rig: string, request: DispatchRequest, answer = true): Promise<DispatchAnswer> => {
    // Started with the settings this bead has, as an operator's pause would start it (domain/starts.ts).
    const { maxPolecats, breakerThreshold, breakerProbeInterval } = request;
    const settings = { maxPolecats, breakerThreshold, breakerProbeInterval };
    const start = dispatchGateStart({ taskQueue, input: { rig, settings } });
    const bySignal = async () => {
      await client.workflow.signalWithStart(start.workflowType, withSignal(start, dispatchRequestSignal, [request]));
      return { granted: false, probe: false };
    };
    if (!answer) return bySignal();
    try {
      return await client.workflow.executeUpdateWithStart(requestDispatchUpdate, {
        args: [request],
        startWorkflowOperation: new WithStartWorkflowOperation(start.workflowType, {
          ...start.options,
          workflowIdConflictPolicy: 'USE_EXISTING',
        }),
      });
    } catch (err) {
      if (!(err instanceof WorkflowUpdateFailedError && /No registered handler for update/.test(String(err.cause))))
        throw err;
      return bySignal();
    }
  };
}

/** How long an answer asked ahead waits for its launch: longer than any launch takes to be scheduled and picked up. */
const ASKED_AHEAD_KEPT_MS = 60_000;

/**
 * Requests asked of the gate ahead of their launch, in this worker process: a convoy's worker asks for the first run of
 * a bead it has just started and does not launch itself (activities/convoy.ts, launch-ahead.ts), and that run's
 * launchRunWhenGranted, which the bead schedules on this worker's host queue (`BeadWorkflowInput.startedOn`), takes the
 * answer instead of asking again. The request is the one the launch makes, asked once the bead's workflow exists (so a
 * queued run's grant finds it), only ≈ the bead's first workflow task earlier. An answer nobody takes is dropped after
 * ASKED_AHEAD_KEPT_MS; the run's own ask, should its launch come later or elsewhere (a restarted worker), is a repeat
 * the gate answers the same.
 */
export function dispatchAsksAhead(requestSlot: (rig: string, request: DispatchRequest) => Promise<DispatchAnswer>) {
  const asked = new Map<string, { request: DispatchRequest; answer: Promise<DispatchAnswer> }>();
  return {
    ask(rig: string, request: DispatchRequest): void {
      const answer = requestSlot(rig, request);
      // Taken or not, never an unhandled rejection: the launch that takes a failed one asks itself.
      answer.catch(() => undefined);
      asked.set(request.runId, { request, answer });
      setTimeout(
        () => asked.get(request.runId)?.answer === answer && asked.delete(request.runId),
        ASKED_AHEAD_KEPT_MS,
      ).unref();
    },
    /** The answer asked ahead for exactly this request, once (undefined: none, or for other settings). */
    take(request: DispatchRequest): Promise<DispatchAnswer> | undefined {
      const ahead = asked.get(request.runId);
      asked.delete(request.runId);
      return ahead && isDeepStrictEqual(ahead.request, request) ? ahead.answer : undefined;
    },
  };
}
export type DispatchAsksAhead = ReturnType<typeof dispatchAsksAhead>;

export function createDispatchActivities(deps: DispatchDeps) {
  const reportStart = dispatchStartReporter(deps.client);
  const requestSlot = dispatchSlotRequester(deps.client, deps.taskQueue);
  const answerWaits = deps.answerWaits ?? 10;
  let waitingForAnswers = 0;
  return {
    /**
     * Asks the rig's gate for a slot (dispatchSlotRequester): granted in the answer, the bead starts its run in the
     * same workflow task. A bead runs it as a local activity, which a retried workflow task runs again. Asked by
     * signal when `answerWaits` requests of this worker wait already.
     */
    async requestDispatchSlot(raw: RequestSlotInput): Promise<SlotAnswer> {
      const { rig, request, answer, claimHost } = parseActivityInput(RequestSlotInput, raw);
      if (!answer || waitingForAnswers >= answerWaits) return requestSlot(rig, request, false);
      waitingForAnswers++;
      try {
        const given = await requestSlot(rig, request);
        return claimHost && given.granted && deps.hostQueue ? { ...given, hostQueue: deps.hostQueue } : given;
      } finally {
        waitingForAnswers--;
      }
    },

    /**
     * Tells the rig's gate whether a granted run's agent started (dispatchStartReporter). A bead runs it as a local
     * activity: a marker in its history where a signal was two events and a workflow task for its acknowledgement.
     */
    async reportDispatchStart(raw: ReportStartInput): Promise<void> {
      const { rig, report } = parseActivityInput(ReportStartInput, raw);
      await reportStart(rig, report);
    },

    /**
     * Gives a run's slot back to the rig's gate. A bead runs it as a local activity: a marker in its history where the
     * signal cost its initiation and its acknowledgement (and the workflow task that took it, when no other event
     * called for one); a retried workflow task's repeat changes nothing.
     */
    async releaseDispatchSlot(raw: ReleaseSlotInput): Promise<void> {
      const { rig, release } = parseActivityInput(ReleaseSlotInput, raw);
      await signalGate(deps.client, rig, dispatchReleaseSignal, release);
    },

    /**
     * The gate's grants, all at once: a marker in the gate's history for the lot, and each bead hears its grant while
     * the gate's workflow task is still open, where a signal each cost two events, and the gate sent the next only
     * once the last one's acknowledgement had come back in a workflow task of its own. Returns the runs whose bead
     * workflow is gone (terminated by hand: their slots are free again). Any other failure fails the call (the gate
     * then signals as before); a bead granted twice by a retry keeps one grant.
     */
    async deliverDispatchGrants(raw: DeliverGrantsInput): Promise<{ gone: string[] }> {
      const { grants } = parseActivityInput(DeliverGrantsInput, raw);
      const reached = await Promise.all(
        grants.map(({ workflowId, runId, probe }) =>
          delivered(deps.client.workflow.getHandle(workflowId).signal(dispatchGrantSignal, { runId, probe })),
        ),
      );
      return { gone: grants.filter((_, i) => !reached[i]).map((g) => g.runId) };
    },

    /** Which of these workflows are no longer running (their slots can be reclaimed). */
    async closedWorkflows(raw: z.input<typeof ClosedWorkflowsInput>): Promise<string[]> {
      const { workflowIds } = parseActivityInput(ClosedWorkflowsInput, raw);
      const closed: string[] = [];
      for (const id of workflowIds) if (!(await workflowStillRuns(deps.client, id))) closed.push(id);
      return closed;
    },
  };
}

export type DispatchActivities = ReturnType<typeof createDispatchActivities>;
