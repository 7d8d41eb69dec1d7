/**
 * Fast tier, the hand-off of a bead's merge request ticket to the refinery (workflows/bead.ts): a bead cancelled while
 * the hand-off is being retried takes the ticket back, since a try that failed may still have reached the refinery
 * and no merge request exists yet to withdraw it; so does a bead cancelled as its run's supervision hands the ticket
 * over (activities/agent-runs.ts), and one whose supervision's answer was lost after the hand-over (whatever the head).
 * A bead whose own import finds its run's branch already merged as the round's merge request (that lost hand-over,
 * merged meanwhile) takes it as handed in rather than as a run that committed nothing.
 * Real bead, merge-request and dispatch-gate workflows, stubbed activities.
 */
import { ApplicationFailure, Context } from '@temporalio/activity';
import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import type proto from '@temporalio/proto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { beadWorkflowId, refineryWorkflowId } from '../../domain/ids';
import { doneUpdate } from '../../domain/messages';
import { beadActivities, HEAD, MERGED_COMMIT } from '../helpers/bead-stubs';
import { eventually } from '../helpers/town';
import { patchIds, skipReason, startTimeSkipping, testRig, withWorker } from '../helpers/time-skipping';

/** The withdraw signals a bead's history sent: to whom, and what. */
const withdrawals = (events: proto.temporal.api.history.v1.IHistoryEvent[]) =>
  events.flatMap((e) => {
    const a = e.signalExternalWorkflowExecutionInitiatedEventAttributes;
    return a?.signalName === 'withdraw'
      ? [[a.workflowExecution?.workflowId, JSON.parse(Buffer.from(a.input!.payloads![0]!.data!).toString()) as unknown]]
      : [];
  });

const startBead = (env: TestWorkflowEnvironment, id: string, taskQueue: string) =>
  env.client.workflow.start('beadWorkflow', {
    workflowId: beadWorkflowId(id),
    taskQueue,
    args: [{ bead: { id, title: `fast ${id}` }, rig: testRig({ name: id }) }],
  });

/** Cancels the bead and reads its history once it has ended. */
async function cancelledHistory(handle: WorkflowHandle) {
  await handle.cancel();
  await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
  return (await handle.fetchHistory()).events ?? [];
}

/** The agent's `gt done`, accepted by the bead as the run's supervision sees it. */
const acceptDone = (env: TestWorkflowEnvironment, run: { runId: string; workflowId: string }) =>
  env.client.workflow
    .getHandle(run.workflowId)
    .executeUpdate(doneUpdate, { args: [{ runId: run.runId, summary: 'done (stub)' }] });

/** A supervision waiting for its agent's exit: heartbeats until its cancellation, which it throws. */
async function beatUntilCancelled(): Promise<never> {
  const ctx = Context.current();
  for (;;) {
    ctx.heartbeat();
    await ctx.sleep(20);
  }
}

/**
 * Runs bead `id` with the given stubs (its own hand-off's answer: queued, unless `queueMergeRequest` says otherwise)
 * and cancels it once `ready` holds; its history, and the tickets its own hand-off tried (each reaching the refinery).
 */
async function cancelledBead(
  env: TestWorkflowEnvironment,
  id: string,
  stubs: { superviseAgentRun?: (input: never) => Promise<unknown>; queueMergeRequest?: () => Promise<unknown> },
  ready: (handle: WorkflowHandle, tries: string[]) => boolean | Promise<boolean>,
  what: string,
) {
  const tries: string[] = [];
  const events = await withWorker(
    env,
    (taskQueue) => ({
      ...beadActivities(env, taskQueue, () => 'done', 0, { supervisionCancelled: [], escalations: [] }),
      queueMergeRequest: ({ ticket }: { ticket: { mrId: string } }) => {
        tries.push(ticket.mrId);
        return stubs.queueMergeRequest?.() ?? Promise.resolve({ queued: true });
      },
      ...(stubs.superviseAgentRun ? { superviseAgentRun: stubs.superviseAgentRun } : {}),
    }),
    async (taskQueue) => {
      const handle = await startBead(env, id, taskQueue);
      await eventually(() => ready(handle, tries), 10_000, what);
      return cancelledHistory(handle);
    },
  );
  return { events, tries };
}

describe.skipIf(skipReason)('the bead hands its ticket over (time-skipping)', { timeout: 30_000 }, () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await startTimeSkipping();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  it('takes the ticket back when it is cancelled while the hand-off is retried', async () => {
    const id = 'fast-handoff-cancel';
    const { events, tries } = await cancelledBead(
      env,
      id,
      // Every try fails as one whose signal reached the server and whose answer was lost would.
      { queueMergeRequest: () => Promise.reject(new Error('the frontend did not answer (stub)')) },
      (_, tries) => tries.length >= 2,
      'the hand-off retried',
    );
    expect(new Set(tries)).toEqual(new Set([`mr:${id}:1`]));
    expect(withdrawals(events)).toEqual([[refineryWorkflowId(id), { mrId: `mr:${id}:1`, headSha: HEAD }]]);
    // No merge request was started for the ticket.
    expect(events.some((e) => e.startChildWorkflowExecutionInitiatedEventAttributes)).toBe(false);
  });

  it('takes the ticket back when it is cancelled as its run’s supervision hands the ticket over', async () => {
    const id = 'fast-handoff-at-exit';
    const given: unknown[] = [];
    const { events, tries } = await cancelledBead(
      env,
      id,
      // The agent's gt done is accepted and it exits; the host publishes the branch and hands the ticket over just
      // as the bead's cancel reaches the supervision, which answers with what it did rather than as cancelled.
      {
        superviseAgentRun: async (input: { runId: string; workflowId: string; rig: unknown; enqueue?: unknown }) => {
          given.push(input.enqueue);
          await acceptDone(env, input);
          await beatUntilCancelled().catch(() => undefined);
          return {
            runId: input.runId,
            exitCode: 0,
            adopted: false,
            published: { headSha: HEAD, commitsAhead: 1, uncommittedChanges: false },
            enqueued: { rig: input.rig, queued: true },
          };
        },
      },
      async (handle) =>
        ((await handle.fetchHistory()).events ?? []).some((e) => e.workflowExecutionUpdateCompletedEventAttributes),
      'gt done accepted',
    );
    // The supervision was given the round's ticket but for its head.
    expect(given).toMatchObject([{ ticket: { mrId: `mr:${id}:1`, beadId: id, round: 1 } }]);
    expect(given[0]).not.toHaveProperty('ticket.headSha');
    expect(withdrawals(events)).toEqual([[refineryWorkflowId(id), { mrId: `mr:${id}:1`, headSha: HEAD }]]);
    expect(tries).toEqual([]);
    expect(events.some((e) => e.startChildWorkflowExecutionInitiatedEventAttributes)).toBe(false);
  });

  it('takes back, whatever its head, a ticket its supervision handed over unheard', async () => {
    const id = 'fast-handoff-unheard';
    const attempts: number[] = [];
    const { events, tries } = await cancelledBead(
      env,
      id,
      // The first attempt sees the gt done accepted, hands the ticket over and dies with its worker before it
      // answers; the retry, on a worker whose gateway never saw that gt done, has nothing to publish and is still
      // waiting for the agent's exit when the bead is cancelled.
      {
        superviseAgentRun: async (input: { runId: string; workflowId: string }) => {
          const { attempt } = Context.current().info;
          attempts.push(attempt);
          if (attempt > 1) return beatUntilCancelled();
          await acceptDone(env, input);
          throw ApplicationFailure.retryable('the worker died after handing the ticket over (stub)');
        },
      },
      () => attempts.includes(2),
      'the supervision retried',
    );
    expect(withdrawals(events)).toEqual([[refineryWorkflowId(id), { mrId: `mr:${id}:1` }]]);
    expect(tries).toEqual([]);
    expect(events.some((e) => e.startChildWorkflowExecutionInitiatedEventAttributes)).toBe(false);
  });

  it('takes a run’s branch the refinery already merged as the round’s merge request as handed in', async () => {
    const id = 'fast-handoff-merged';
    const published: unknown[] = [];
    const handedBy: string[] = [];
    const { result, history } = await withWorker(
      env,
      (taskQueue) => {
        const stubs = beadActivities(env, taskQueue, () => 'done', 0, { supervisionCancelled: [], escalations: [] });
        return {
          ...stubs,
          queueMergeRequest: (input: Parameters<typeof stubs.queueMergeRequest>[0]) => {
            handedBy.push(String(Context.current().info.workflowExecution?.workflowId));
            return stubs.queueMergeRequest(input);
          },
          // The supervision's attempt that handed the ticket over was given up on, and the refinery merged it: the
          // bead's own import finds nothing ahead of the target, and the refinery's mark of this round's request.
          publishBranch: (input: unknown) => {
            published.push(input);
            return Promise.resolve({
              headSha: HEAD,
              commitsAhead: 0,
              uncommittedChanges: false,
              mergedAs: MERGED_COMMIT,
            });
          },
        };
      },
      async (taskQueue) => {
        const handle = await startBead(env, id, taskQueue);
        return { result: (await handle.result()) as unknown, history: await handle.fetchHistory() };
      },
    );
    // The import was told which request to look for; the merge request started on that head heard the merge.
    expect(published).toMatchObject([{ mrId: `mr:${id}:1` }]);
    expect(result).toMatchObject({ beadId: id, status: 'closed', commit: MERGED_COMMIT });
    // Announced by the merge request, which is there to be given the refinery's kept answer at once (the bead's own
    // hand-off would find none yet, and the merge request would wait for its first announcement).
    expect(handedBy).toEqual([`mr:${id}:1`]);
    expect(patchIds(history).join(' ')).toContain('bead-takes-merged-branch');
    await Worker.runReplayHistory({ workflowBundle: { codePath: inject('workflowBundlePath') } }, history);
  });
});
