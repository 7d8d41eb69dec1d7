/**
 * Fast tier, the bead's hand-off of its merge request's ticket to the refinery (workflows/bead.ts): a bead cancelled
 * while the hand-off is being retried takes the ticket back, since a try that failed may still have reached the
 * refinery and no merge request exists yet to withdraw it. Real bead and dispatch-gate workflows, stubbed activities.
 */
import { WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { beadWorkflowId, refineryWorkflowId } from '../../domain/ids';
import { beadActivities, HEAD } from '../helpers/bead-stubs';
import { eventually } from '../helpers/town';
import { skipReason, startTimeSkipping, testRig, withWorker } from '../helpers/time-skipping';

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
    const tries: string[] = [];
    const events = await withWorker(
      env,
      (taskQueue) => ({
        ...beadActivities(env, taskQueue, () => 'done', 0, { supervisionCancelled: [], escalations: [] }),
        // Every try fails as one whose signal reached the server and whose answer was lost would.
        queueMergeRequest: ({ ticket }: { ticket: { mrId: string } }) => {
          tries.push(ticket.mrId);
          return Promise.reject(new Error('the frontend did not answer (stub)'));
        },
      }),
      async (taskQueue) => {
        const handle = await env.client.workflow.start('beadWorkflow', {
          workflowId: beadWorkflowId(id),
          taskQueue,
          args: [{ bead: { id, title: `fast ${id}` }, rig: testRig({ name: id }) }],
        });
        await eventually(() => tries.length >= 2, 10_000, 'the hand-off retried');
        await handle.cancel();
        await expect(handle.result()).rejects.toBeInstanceOf(WorkflowFailedError);
        return (await handle.fetchHistory()).events ?? [];
      },
    );
    expect(new Set(tries)).toEqual(new Set([`mr:${id}:1`]));
    const withdrawn = events.flatMap((e) => {
      const a = e.signalExternalWorkflowExecutionInitiatedEventAttributes;
      return a?.signalName === 'withdraw'
        ? [[a.workflowExecution?.workflowId, JSON.parse(Buffer.from(a.input!.payloads![0]!.data!).toString())]]
        : [];
    });
    expect(withdrawn).toEqual([[refineryWorkflowId(id), { mrId: `mr:${id}:1`, headSha: HEAD }]]);
    // No merge request was started for the ticket.
    expect(events.some((e) => e.startChildWorkflowExecutionInitiatedEventAttributes)).toBe(false);
  });
});
