/** Activities that talk to Temporal itself: things workflow code cannot do (signal-with-start). */
import { activityInfo, log, metricMeter } from '@temporalio/activity';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { BeadReportMessage } from '../domain/convoy';
import { z } from 'zod';
import { EscalationInput } from '../domain/escalation';
import { type BeadReport, beadReportSignal, enqueueSignal, mergeResultSignal } from '../domain/messages';
import { ConvoyId, convoyWorkflowId } from '../domain/ids';
import { MergeResult, MergeTicket, type MergeTicketInput } from '../domain/refinery';
import { RigConfig } from '../domain/rig';
import { escalationStart, refineryStart, withSignal } from '../domain/starts';
import { countTownEvent } from '../domain/metrics';
import { parseActivityInput } from '../domain/validation';
import { runningRigConfig } from './rig-config';

export interface TownDeps {
  client: Client;
  taskQueue: string;
  hostQueue: string;
  /** This host's GT_HOME (mirrors, candidates, gate logs). */
  gtHome: string;
}

export const EnqueueInput = z.object({ rig: RigConfig, ticket: MergeTicket });
export type EnqueueInput = z.input<typeof EnqueueInput>;

export const DeliverOutcomeInput = z.object({
  result: MergeResult,
  convoy: z.object({ convoyId: ConvoyId, report: BeadReportMessage }).optional(),
});
export type DeliverOutcomeInput = z.input<typeof DeliverOutcomeInput>;

/** What deliverMergeOutcome told: whether each receiver was there to hear it. */
export interface DeliveredOutcome {
  mrId: string;
  mergeRequest: boolean;
  convoy?: { convoyId: string; beadId: string; reported: boolean };
}

/**
 * Whether a signal reached its workflow: false when the workflow is gone (for a delivery nobody waits for, not an
 * error: the sender logs it or frees what it held); any other failure is thrown.
 */
export async function delivered(send: Promise<void>): Promise<boolean> {
  try {
    await send;
    return true;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}

/** Tells a convoy of a bead's outcome: false when the convoy is gone. */
export const convoyReporter =
  (client: Client) =>
  (convoyId: string, report: BeadReport): Promise<boolean> =>
    delivered(client.workflow.getHandle(convoyWorkflowId(convoyId)).signal(beadReportSignal, report));

/** Whether a workflow still runs: false once it closed or is gone; any other failure (the server's) is thrown. */
export async function workflowStillRuns(client: Client, workflowId: string): Promise<boolean> {
  try {
    return (await client.workflow.getHandle(workflowId).describe()).status.name === 'RUNNING';
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}

/** Attempts of queueMergeRequest that fail to read the rig before it goes by the merge request's own configuration. */
const RIG_READ_ATTEMPTS = 5;

/** Hands a ticket to its rig's refinery, starting the refinery if it is not running. */
async function handTicket(client: Client, taskQueue: string, rig: RigConfig, ticket: MergeTicketInput): Promise<void> {
  // Started as `gt rig add` starts it (domain/starts.ts) if it is not running: same attributes, same summary.
  const start = refineryStart({ taskQueue, input: { rig } });
  await client.workflow.signalWithStart(start.workflowType, withSignal(start, enqueueSignal, [ticket]));
}

/** Hands a ticket over under `rig`, unless that asks for a review: then the merge request does, after it. */
async function queueUnlessReviewed(
  client: Client,
  taskQueue: string,
  rig: RigConfig,
  ticket: MergeTicketInput,
): Promise<{ rig: RigConfig; queued: boolean }> {
  if (rig.reviewer) return { rig, queued: false };
  await handTicket(client, taskQueue, rig, ticket);
  return { rig, queued: true };
}

/**
 * queueMergeRequest for a run's supervision on its host (activities/agent-runs.ts): the rig as its refinery holds it
 * (the run's own for a rig without a running refinery), then the hand-off. Given the rig, it begins the read at once,
 * so the caller's own work (the branch's import) runs beside it; given the ticket, it hands it over under what the
 * read found. Any failure is the caller's to handle.
 */
export type MergeRequestQueuer = (
  rig: RigConfig,
) => (ticket: MergeTicketInput) => Promise<{ rig: RigConfig; queued: boolean }>;
export function mergeRequestQueuer(client: Client, taskQueue: string): MergeRequestQueuer {
  return (given) => {
    const read = runningRigConfig(client, given.name);
    read.catch(() => undefined); // a failed read is the hand-off's to throw, when it comes (or nobody's)
    return async (ticket) => queueUnlessReviewed(client, taskQueue, (await read) ?? given, ticket);
  };
}

export function createTownActivities(deps: TownDeps) {
  const reportToConvoy = convoyReporter(deps.client);
  /** The rig's configuration as its refinery holds it; the given one for a rig without a running refinery. */
  const currentRigOr = async (given: RigConfig): Promise<RigConfig> => {
    try {
      return (await runningRigConfig(deps.client, given.name)) ?? given;
    } catch (err) {
      if (activityInfo().attempt < RIG_READ_ATTEMPTS) throw err;
      log.warn("could not read the rig configuration; going by the merge request's own", { error: String(err) });
      return given;
    }
  };
  return {
    /**
     * The answering worker's host will own the agent run: whichever worker polls the town queue, or, run as a local
     * activity (a bead's run not retrying a failure), the worker running the bead's workflow task.
     */
    claimHost(): Promise<{ hostQueue: string }> {
      return Promise.resolve({ hostQueue: deps.hostQueue });
    },

    /**
     * Hands a merge request to its rig's refinery, starting the refinery if it is not running. The merge request runs
     * it as a local activity, which may run again when its workflow task is retried: the refinery ignores repeats.
     */
    async enqueueMergeRequest(raw: EnqueueInput): Promise<void> {
      const { rig, ticket } = parseActivityInput(EnqueueInput, raw);
      await handTicket(deps.client, deps.taskQueue, rig, ticket);
    },

    /**
     * The merge request's first step in one local activity (patched() 'merge-request-queues-in-one-step'): reads the
     * rig's current configuration, and unless it asks for a review, hands the ticket to the refinery under it. Returns
     * the configuration it went by. A rig that cannot be read keeps the merge request's own after a few attempts, as
     * the separate read did; the hand-off is retried as patiently as ever (the refinery ignores repeats).
     */
    async queueMergeRequest(raw: EnqueueInput): Promise<{ rig: RigConfig; queued: boolean }> {
      const input = parseActivityInput(EnqueueInput, raw);
      return queueUnlessReviewed(deps.client, deps.taskQueue, await currentRigOr(input.rig), input.ticket);
    },

    /**
     * A merge section's outcome to its merge request, and a convoy bead's merge to its convoy. The refinery runs it as
     * a local activity: a marker in its history where the two signals cost four events and the workflow tasks their
     * acknowledgements scheduled, and both are sent while its workflow task is still open. Both receivers ignore a
     * repeat (a retried workflow task's). A receiver that is gone (a cancelled bead's merge request, a removed convoy)
     * is answered false; any other failure fails the call, and the refinery signals as before.
     */
    async deliverMergeOutcome(raw: DeliverOutcomeInput): Promise<DeliveredOutcome> {
      const { result, convoy } = parseActivityInput(DeliverOutcomeInput, raw);
      const [mergeRequest, reported] = await Promise.all([
        delivered(deps.client.workflow.getHandle(result.mrId).signal(mergeResultSignal, result)),
        convoy && reportToConvoy(convoy.convoyId, convoy.report),
      ]);
      // What was told to whom: the answer is what the refinery's history keeps of it (its marker).
      return {
        mrId: result.mrId,
        mergeRequest,
        ...(convoy && reported !== undefined
          ? { convoy: { convoyId: convoy.convoyId, beadId: convoy.report.beadId, reported } }
          : {}),
      };
    },

    /** Raises an escalation once per id: a retried or repeated raise finds the existing one. */
    async raiseEscalation(raw: EscalationInput): Promise<{ escalationId: string; created: boolean }> {
      const input = parseActivityInput(EscalationInput, raw);
      try {
        const start = escalationStart({ taskQueue: deps.taskQueue, input });
        await deps.client.workflow.start(start.workflowType, start.options);
        countTownEvent(metricMeter, 'escalations', {
          rig: input.rig ?? '',
          severity: input.severity,
          source: input.source,
        });
        return { escalationId: input.id, created: true };
      } catch (err) {
        if (err instanceof WorkflowExecutionAlreadyStartedError) return { escalationId: input.id, created: false };
        throw err;
      }
    },
  };
}

export type TownActivities = ReturnType<typeof createTownActivities>;
