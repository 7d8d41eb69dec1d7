/** Activities that talk to Temporal itself: things workflow code cannot do (signal-with-start). */
import { metricMeter } from '@temporalio/activity';
import { WorkflowExecutionAlreadyStartedError, WorkflowIdReusePolicy, type Client } from '@temporalio/client';
import { z } from 'zod';
import { EscalationInput, escalationWorkflowId } from '../domain/escalation';
import { refineryWorkflowId } from '../domain/ids';
import { enqueueSignal } from '../domain/messages';
import { MergeTicket } from '../domain/refinery';
import { RigConfig } from '../domain/rig';
import { SA } from '../domain/search-attributes';
import { countTownEvent } from '../domain/metrics';
import { parseActivityInput } from './validation';

export interface TownDeps {
  client: Client;
  taskQueue: string;
  hostQueue: string;
  /** This host's GT_HOME (mirrors, candidates, gate logs). */
  gtHome: string;
}

export const EnqueueInput = z.object({ rig: RigConfig, ticket: MergeTicket });
export type EnqueueInput = z.input<typeof EnqueueInput>;

export function createTownActivities(deps: TownDeps) {
  return {
    /** Answered by whichever worker polls the town queue: that worker's host will own the agent run. */
    claimHost(): Promise<{ hostQueue: string }> {
      return Promise.resolve({ hostQueue: deps.hostQueue });
    },

    /** Hands a merge request to its rig's refinery, starting the refinery if it is not running. */
    async enqueueMergeRequest(raw: EnqueueInput): Promise<void> {
      const { rig, ticket } = parseActivityInput(EnqueueInput, raw);
      await deps.client.workflow.signalWithStart('refineryWorkflow', {
        workflowId: refineryWorkflowId(rig.name),
        taskQueue: deps.taskQueue,
        args: [{ rig }],
        signal: enqueueSignal,
        signalArgs: [ticket],
        typedSearchAttributes: [
          { key: SA.kind, value: 'refinery' },
          { key: SA.rig, value: rig.name },
        ],
        memo: { repo: rig.repo, branch: rig.branch },
      });
    },

    /** Raises an escalation once per id: a retried or repeated raise finds the existing one. */
    async raiseEscalation(raw: EscalationInput): Promise<{ escalationId: string; created: boolean }> {
      const input = parseActivityInput(EscalationInput, raw);
      const workflowId = escalationWorkflowId(input.id);
      try {
        await deps.client.workflow.start('escalationWorkflow', {
          workflowId,
          taskQueue: deps.taskQueue,
          args: [input],
          workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
          typedSearchAttributes: [
            { key: SA.kind, value: 'escalation' },
            { key: SA.status, value: 'open' },
            ...(input.rig ? [{ key: SA.rig, value: input.rig }] : []),
            ...(input.beadId ? [{ key: SA.beadId, value: input.beadId }] : []),
            ...(input.convoyId ? [{ key: SA.convoyId, value: input.convoyId }] : []),
            ...(input.runId ? [{ key: SA.runId, value: input.runId }] : []),
          ],
          memo: { severity: input.severity, reason: input.reason.slice(0, 500) },
          staticSummary: `${input.severity} escalation (${input.source}): ${input.reason.slice(0, 120)}`,
        });
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
