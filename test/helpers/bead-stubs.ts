/**
 * Stubbed activities for beads in the fast workflow tier: plain functions standing for agent runs, git and the
 * refinery, so the real bead, merge-request and dispatch-gate workflows run on the time-skipping test server.
 */
import { Context } from '@temporalio/activity';
import { WorkflowNotFoundError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { msToTs } from '@temporalio/common/lib/time';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { createDispatchActivities } from '../../activities/dispatch';
import { createRigConfigActivities } from '../../activities/rig-config';
import { doneUpdate, mergeResultSignal } from '../../domain/messages';

/** The head every stubbed run publishes. */
export const HEAD = 'c0ffee'.padEnd(40, '0');
export const MERGED_COMMIT = 'f'.repeat(40);

type Ticket = { mrId: string; headSha: string; targetBranch: string };

/** How a run's agent behaves: never reports (stall), fails to start, or finishes with gt done. */
export type Agent = 'silent' | 'unstartable' | 'done';

export interface Observed {
  supervisionCancelled: string[];
  /** Wall-clock milliseconds each silent agent ran until the bead stopped it. */
  escalations: string[];
}

/**
 * Stubs of every activity a bead and its merge request call. The dispatch gate is the real workflow (signal-with-
 * started by the real activity); the refinery answers at once that the branch merged.
 */
export function beadActivities(
  env: TestWorkflowEnvironment,
  taskQueue: string,
  agentFor: (runId: string) => Agent,
  silentFor: number,
  observed: Observed,
) {
  const { client } = env;
  const prepareRun = () =>
    Promise.resolve({
      host: 'stub-host',
      worktree: '/nonexistent/worktree',
      promptFile: '/nonexistent/prompt.md',
      branch: 'gt/x',
      baseSha: '0'.repeat(40),
      staleRunsStopped: [],
    });
  const startAgentRun = ({ runId }: { runId: string }) => {
    if (agentFor(runId) === 'unstartable')
      throw ApplicationFailure.nonRetryable('the runtime refused the agent (stub)', 'AgentStartRefused');
    return Promise.resolve({ handle: { runtime: 'process', runId, ref: '1' }, adopted: false, host: 'stub-host' });
  };
  /**
   * The refinery's answer, given as soon as the merge request is there to hear it: a bead hands its ticket over just
   * before it starts its merge request (workflows/bead.ts). Not awaited by the hand-off, as the refinery's is not.
   */
  const mergeAtOnce = async (ticket: Ticket) => {
    for (let tries = 0; tries < 500; tries++) {
      try {
        return await client.workflow.getHandle(ticket.mrId).signal(mergeResultSignal, {
          mrId: ticket.mrId,
          headSha: ticket.headSha,
          outcome: { kind: 'merged', commit: MERGED_COMMIT, targetBranch: ticket.targetBranch },
        });
      } catch (err) {
        if (!(err instanceof WorkflowNotFoundError)) throw err;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
    }
  };
  return {
    ...createDispatchActivities({ client, taskQueue }),
    // The real one: these rigs have no refinery, so the gate keeps the settings it was started with.
    ...createRigConfigActivities({ client }),
    claimHost: () => Promise.resolve({ hostQueue: taskQueue }),
    prepareRun,
    startAgentRun,
    /** Both in one, as the real launchRun does them. */
    launchRun: async ({ runId }: { runId: string }) => ({
      prepared: await prepareRun(),
      started: await startAgentRun({ runId }),
    }),
    /**
     * A good agent calls gt done and exits. A silent one says nothing for `silentFor` of workflow time, then runs until
     * the bead stops it (the cancellation arrives through its heartbeats). The test server stops skipping time while
     * an activity is in flight (activities run in real time): this one stands for an agent that takes no real time,
     * so it lets time skip for `silentFor` (the server takes its hold back when that time has passed).
     */
    async superviseAgentRun({ runId, workflowId }: { runId: string; workflowId: string }) {
      if (agentFor(runId) === 'done') {
        await client.workflow
          .getHandle(workflowId)
          .executeUpdate(doneUpdate, { args: [{ runId, summary: 'done (stub)' }] });
        return { runId, exitCode: 0, adopted: false };
      }
      const ctx = Context.current();
      await env.connection.testService!.unlockTimeSkippingWithSleep({ duration: msToTs(silentFor) });
      try {
        for (;;) {
          ctx.heartbeat();
          await ctx.sleep(20);
        }
      } catch (err) {
        observed.supervisionCancelled.push(runId);
        throw err;
      }
    },
    // A cancelled bead makes sure its runs' agents are gone; these stand for none.
    stopRunAgent: () => Promise.resolve({ stopped: false }),
    publishBranch: () => Promise.resolve({ headSha: HEAD, commitsAhead: 1, uncommittedChanges: false }),
    // The bead's hand-off of the ticket (the rig read, the signal-with-start of the refinery): it merges at once.
    queueMergeRequest: ({ rig, ticket }: { rig: unknown; ticket: Ticket }) => {
      mergeAtOnce(ticket).catch(() => undefined);
      return Promise.resolve({ rig, queued: true });
    },
    // The merge request announcing itself again, should the time-skipping server pass its first wait first.
    enqueueMergeRequest: ({ ticket }: { ticket: Ticket }) => mergeAtOnce(ticket),
    raiseEscalation: ({ id }: { id: string }) => {
      observed.escalations.push(id);
      return Promise.resolve({ escalationId: id, created: true });
    },
  };
}
