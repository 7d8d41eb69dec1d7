/**
 * Fast tier, tickets taken back from the refinery's queue (workflows/refinery.ts): a withdraw naming a head takes only
 * that ticket, and one without a head every ticket of its merge request, as a cancelled bead sends when its run's
 * supervision may have handed the round's ticket over without the bead hearing which head (workflows/bead.ts). The real
 * refinery workflow on the time-skipping test server, paused so that nothing it holds is merged.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refineryWorkflowId } from '../../domain/ids';
import { enqueueSignal, refineryStateQuery, withdrawSignal } from '../../domain/messages';
import type { MergeTicketInput } from '../../domain/refinery';
import { eventually } from '../helpers/town';
import { deliveryActivity, skipReason, startTimeSkipping, testRig, withWorker } from '../helpers/time-skipping';

const ticket = (bead: string, head: string): MergeTicketInput => ({
  mrId: `mr:${bead}:1`,
  beadId: bead,
  round: 1,
  title: `bead ${bead}`,
  branch: `gt/${bead}`,
  headSha: head.repeat(40),
  targetBranch: 'main',
  enqueuedAt: 1,
});

describe.skipIf(skipReason)('refinery withdrawals (time-skipping)', { timeout: 30_000 }, () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await startTimeSkipping();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  it('takes back the named head, or every head of a merge request when none is named', async () => {
    const queued = await withWorker(
      env,
      (taskQueue) => ({
        ...deliveryActivity(env.client, taskQueue),
        mergeCandidate: () => Promise.reject(new Error('a paused refinery merges nothing (stub)')),
      }),
      async (taskQueue) => {
        const rig = testRig({ name: 'fast-withdraw' });
        const handle = await env.client.workflow.start('refineryWorkflow', {
          workflowId: refineryWorkflowId(rig.name),
          taskQueue,
          args: [{ rig, paused: true }],
        });
        const queue = async () =>
          (await handle.query(refineryStateQuery)).queue.map((t) => `${t.mrId}@${t.headSha[0]}`);
        for (const t of [ticket('a', '1'), ticket('a', '2'), ticket('b', '3'), ticket('c', '4')])
          await handle.signal(enqueueSignal, t as never);
        await eventually(async () => (await queue()).length === 4, 10_000, 'four tickets queued');
        await handle.signal(withdrawSignal, { mrId: 'mr:a:1' });
        await handle.signal(withdrawSignal, { mrId: 'mr:b:1', headSha: '9'.repeat(40) });
        await handle.signal(withdrawSignal, { mrId: 'mr:c:1', headSha: '4'.repeat(40) });
        // Signals are taken in order: once c's is, a's and b's were too.
        await eventually(async () => !(await queue()).includes('mr:c:1@4'), 10_000, 'c withdrawn');
        const left = await queue();
        await handle.terminate('test over');
        return left;
      },
    );
    expect(queued).toEqual(['mr:b:1@3']);
  });
});
