/**
 * Fast tier, the refinery's continue-as-new with a forced low threshold (`continueAsNewEvery: 2` sections): the
 * queue, the stats and the record of tickets already seen cross every continuation, so nothing waiting is lost and
 * a ticket announced again after it merged is not merged twice. The real refinery workflow on the time-skipping
 * test server with a stubbed merge activity.
 */
import { Client } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refineryWorkflowId } from '../../domain/ids';
import { enqueueSignal, pauseRefineryUpdate } from '../../domain/messages';
import type { MergeTicketInput } from '../../domain/refinery';
import type { RefineryInput } from '../../workflows/refinery';
import {
  continuationInputs,
  deliveryActivity,
  skipReason,
  startTimeSkipping,
  testRig,
  withWorker,
} from '../helpers/time-skipping';

const ticket = (n: number): MergeTicketInput => ({
  mrId: `mr:ref-${n}:1`,
  beadId: `ref-${n}`,
  round: 1,
  title: `bead ${n}`,
  branch: `gt/ref-${n}`,
  headSha: String(n).repeat(40).slice(0, 40),
  targetBranch: 'main',
  enqueuedAt: n,
});

describe.skipIf(skipReason)('refinery continue-as-new (time-skipping)', { timeout: 30_000 }, () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await startTimeSkipping();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  it('carries its queue, stats and seen tickets across continue-as-new every 2 sections', async () => {
    const merged: string[] = [];
    const activities = (taskQueue: string) => ({
      ...deliveryActivity(env.client, taskQueue),
      mergeCandidate: ({ tickets }: { tickets: { mrId: string }[] }) => {
        merged.push(...tickets.map((t) => t.mrId));
        return Promise.resolve({
          kind: 'merged',
          commit: 'e'.repeat(40),
          merged: tickets.map((t) => ({ mrId: t.mrId, commit: 'e'.repeat(40) })),
          gateRuns: 1,
          alreadyMerged: false,
        });
      },
    });
    const r = await withWorker(env, activities, async (taskQueue) => {
      // The refinery never ends: its state is read by query, and no result() lets the server skip to its run timeout.
      const client = new Client({ connection: env.connection });
      const rig = testRig({ name: 'fast-ref', batchSize: 1 });
      const handle = await client.workflow.start('refineryWorkflow', {
        workflowId: refineryWorkflowId(rig.name),
        taskQueue,
        args: [{ rig, continueAsNewEvery: 2, paused: true }],
      });
      // Queries to a run that continued as new hang on the test server: progress is read from the stub's calls, and
      // what crossed each continuation from the continue-as-new events themselves.
      const mergedCount = async (n: number) => {
        while (merged.length < n) await new Promise((resolve) => setTimeout(resolve, 20));
      };
      const signal = (n: number) =>
        client.workflow.getHandle(handle.workflowId).signal(enqueueSignal, ticket(n) as never);
      // Queued while paused, so the first continuation has three tickets to carry whatever the timing.
      for (let n = 1; n <= 5; n++) await signal(n);
      await client.workflow
        .getHandle(handle.workflowId)
        .executeUpdate(pauseRefineryUpdate, { args: [{ paused: false }] });
      await mergedCount(5);
      // Announced again after it merged (an MR re-announcing itself): the carried record of seen tickets drops it.
      await signal(1);
      await signal(6);
      await mergedCount(6);
      const continuations = (n: number) =>
        continuationInputs<RefineryInput>(client, handle.workflowId, handle.firstExecutionRunId, n);
      const carried = await continuations(3);
      await handle.terminate('test over');
      return { carried };
    });

    expect(merged).toEqual(['mr:ref-1:1', 'mr:ref-2:1', 'mr:ref-3:1', 'mr:ref-4:1', 'mr:ref-5:1', 'mr:ref-6:1']);
    // Every two sections a continuation, each carrying what was still waiting and everything seen and counted so far.
    expect(r.carried.map((c) => c.stats?.merged)).toEqual([2, 4, 6]);
    expect(r.carried[0]!.queue!.map((t) => t.mrId)).toEqual(['mr:ref-3:1', 'mr:ref-4:1', 'mr:ref-5:1']);
    expect(r.carried[2]!.seen).toEqual(merged.map((mrId, i) => `${mrId}@${ticket(i + 1).headSha}`));
    expect(r.carried.every((c) => c.continueAsNewEvery === 2)).toBe(true);
  });
});
