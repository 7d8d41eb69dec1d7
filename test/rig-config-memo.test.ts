/**
 * A rig's current configuration is read from its refinery's memo (activities/rig-config.ts), not by a query: every
 * merge request and dispatch gate reads it, and a query waits for the refinery's worker — busy merging, or replaying
 * the refinery's history when it is not cached — where the memo is the server's record. The refinery's start writes
 * it, `gt rig update` keeps it current, and a refinery started before the memo held it is still asked by a query.
 */
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRigConfigActivities } from '../activities/rig-config';
import { createTownActivities, type EnqueueInput } from '../activities/town';
import { refineryWorkflowId } from '../domain/ids';
import { updateRigUpdate } from '../domain/messages';
import { RigConfig } from '../domain/rig';
import { refineryStart } from '../domain/starts';
import type { refineryWorkflow } from '../workflows/refinery';
import { createRepo } from './helpers/repo';
import { startTestTown, type TestTown } from './helpers/town';

let t: TestTown;
beforeAll(async () => {
  t = await startTestTown();
});
afterAll(async () => {
  await t?.stop();
});

const read = (rig: string) => {
  const activities = createRigConfigActivities({ client: t.client });
  return new MockActivityEnvironment().run((i: { rig: string }) => activities.currentRigConfig(i), { rig });
};

describe("the rig's current configuration", () => {
  it('is read from the memo, without a query: even while no worker runs the refinery', async () => {
    const repo = await createRepo();
    const rig = RigConfig.parse({ name: 'memo-unserved', repo: repo.origin, agent: 'true', maxPolecats: 7 });
    // No worker polls this queue: the refinery never runs a workflow task, so a query could never be answered.
    const start = refineryStart({ taskQueue: 'nobody-polls-this-queue', input: { rig } });
    await t.client.workflow.start<typeof refineryWorkflow>(start.workflowType, start.options);
    try {
      expect(await read('memo-unserved')).toEqual(rig);
    } finally {
      await t.client.workflow.getHandle(refineryWorkflowId('memo-unserved')).terminate('test over');
    }
  });

  it('follows `gt rig update`, and comes from a query for a refinery started without it in its memo', async () => {
    const repo = await createRepo();
    await t.addRig({ name: 'memo-updated', repo: repo.origin, agent: 'true', maxPolecats: 1 });
    expect(await read('memo-updated')).toMatchObject({ name: 'memo-updated', maxPolecats: 1 });
    const handle = t.client.workflow.getHandle(refineryWorkflowId('memo-updated'));
    await handle.executeUpdate(updateRigUpdate, { args: [{ maxPolecats: 3 }] });
    expect((await handle.describe()).memo?.config).toMatchObject({ maxPolecats: 3 });
    expect(await read('memo-updated')).toMatchObject({ maxPolecats: 3 });

    // Started as refineries were before the memo held the configuration.
    const old = RigConfig.parse({ name: 'memo-old', repo: repo.origin, agent: 'true', maxPolecats: 2 });
    const start = refineryStart({ taskQueue: t.taskQueue, input: { rig: old } });
    await t.client.workflow.start<typeof refineryWorkflow>(start.workflowType, {
      ...start.options,
      memo: { repo: old.repo, branch: old.branch },
    });
    const oldHandle = t.client.workflow.getHandle(refineryWorkflowId('memo-old'));
    expect((await oldHandle.describe()).memo?.config).toBeUndefined();
    expect(await read('memo-old')).toMatchObject({ name: 'memo-old', maxPolecats: 2 });
    await oldHandle.terminate('test over');
  });

  it("decides a merge request's review by it: queueMergeRequest hands the ticket over only to a rig without a reviewer", async () => {
    const repo = await createRepo();
    const activities = createTownActivities({
      client: t.client,
      taskQueue: 'nobody-polls-this-queue',
      hostQueue: 'nobody-polls-this-host',
      gtHome: '/nonexistent',
    });
    const queue = (rig: RigConfig, mrId: string) =>
      new MockActivityEnvironment().run((i: EnqueueInput) => activities.queueMergeRequest(i), {
        rig,
        ticket: {
          mrId,
          beadId: 'qm-1',
          round: 1,
          title: 'T',
          branch: 'gt/qm-1',
          headSha: 'a'.repeat(40),
          targetBranch: 'main',
          enqueuedAt: 1,
        },
      });
    const enqueued = async (rig: string) => {
      const history = await t.client.workflow.getHandle(refineryWorkflowId(rig)).fetchHistory();
      return (history.events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'enqueue')
        .length;
    };
    // Refineries no worker serves: what they hold is their start's configuration, read from the memo.
    const started = async (rig: RigConfig) => {
      const start = refineryStart({ taskQueue: 'nobody-polls-this-queue', input: { rig } });
      await t.client.workflow.start<typeof refineryWorkflow>(start.workflowType, start.options);
    };
    const plain = RigConfig.parse({ name: 'qm-plain', repo: repo.origin, agent: 'true' });
    const reviewed = RigConfig.parse({ name: 'qm-reviewed', repo: repo.origin, agent: 'true', reviewer: 'true' });
    await started(plain);
    await started(reviewed);
    try {
      // A reviewer added after the bead was slung: no hand-off, and the merge request learns the reviewer.
      expect(await queue({ ...reviewed, reviewer: undefined }, 'mr:qm-1:1')).toEqual({ rig: reviewed, queued: false });
      expect(await enqueued('qm-reviewed')).toBe(0);
      // A reviewer removed since: handed over at once.
      expect(await queue({ ...plain, reviewer: 'true' }, 'mr:qm-1:2')).toEqual({ rig: plain, queued: true });
      expect(await enqueued('qm-plain')).toBe(1);
    } finally {
      for (const rig of ['qm-plain', 'qm-reviewed'])
        await t.client.workflow.getHandle(refineryWorkflowId(rig)).terminate('test over');
    }
  });
});
