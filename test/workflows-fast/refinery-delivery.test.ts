/**
 * Fast tier, how the refinery tells a merge request its outcome: from a local activity (no signal in its history), and
 * when that fails, by signal as before — the merge request hears it either way; an outcome that found no merge request
 * (its bead handed the ticket over, and the merge was quicker than the merge request's start) is kept and given to the
 * ticket announced again. Real merge-request and refinery workflows (the ticket handed over through the real
 * activities), a stubbed merge.
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRigConfigActivities } from '../../activities/rig-config';
import { createTownActivities } from '../../activities/town';
import { refineryWorkflowId } from '../../domain/ids';
import { refineryStateQuery } from '../../domain/messages';
import type { MergeOutcome } from '../../domain/outcomes';
import { mergeRequestStart, refineryStart } from '../../domain/starts';
import { mergeTicket } from '../../workflows/merge-request-state';
import { eventually } from '../helpers/town';
import { deliveryActivity, skipReason, startTimeSkipping, testRig, withWorker } from '../helpers/time-skipping';

const COMMIT = 'e'.repeat(40);

/** The merge section's stub: every candidate lands at once (its size counted); `told`: the section told the convoy. */
const landsAtOnce =
  (merges: number[], told = false) =>
  ({ tickets }: { tickets: { mrId: string }[] }) => {
    merges.push(tickets.length);
    return Promise.resolve({
      kind: 'merged',
      commit: COMMIT,
      merged: tickets.map((t) => ({ mrId: t.mrId, commit: COMMIT })),
      gateRuns: 1,
      alreadyMerged: false,
      ...(told ? { convoyTold: tickets.map((t) => t.mrId) } : {}),
    });
  };

describe.skipIf(skipReason)('refinery outcome delivery (time-skipping)', { timeout: 30_000 }, () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await startTimeSkipping();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  /** One merge request through a refinery whose merge lands at once; its outcome and the refinery's history. */
  const mergeOne = async (
    rigName: string,
    delivery: (taskQueue: string) => object,
    /** A convoy bead's merge request; `told`: the merge section told its convoy as it pushed. */
    convoy?: { told: boolean },
  ) => {
    const rig = testRig({ name: rigName, batchSize: 1 });
    const attempts: number[] = [];
    return withWorker(
      env,
      (taskQueue) => {
        const town = createTownActivities({
          client: env.client,
          taskQueue,
          hostQueue: taskQueue,
          gtHome: '/nonexistent',
        });
        return {
          ...createRigConfigActivities({ client: env.client }),
          queueMergeRequest: (raw: Parameters<typeof town.queueMergeRequest>[0]) => town.queueMergeRequest(raw),
          mergeCandidate: landsAtOnce(attempts, convoy?.told),
          ...delivery(taskQueue),
        };
      },
      async (taskQueue) => {
        const mr = mergeRequestStart({
          mrId: `mr:${rigName}-1:1`,
          bead: { id: `${rigName}-1`, title: 'one', priority: 2 },
          rig,
          round: 1,
          branch: `gt/${rigName}-1`,
          headSha: '1'.repeat(40),
          targetBranch: rig.branch,
          ...(convoy ? { convoyId: 'fast-convoy', convoyBead: {} } : {}),
        });
        const handle = await env.client.workflow.start(mr.workflowType, { ...mr.options, taskQueue });
        const outcome = (await handle.result()) as MergeOutcome;
        const refinery = env.client.workflow.getHandle(refineryWorkflowId(rig.name));
        const signalled = ((await refinery.fetchHistory()).events ?? []).flatMap(
          (e) => e.signalExternalWorkflowExecutionInitiatedEventAttributes?.signalName ?? [],
        );
        return { outcome, signalled, attempts };
      },
    );
  };

  it('tells the merge request from a local activity', async () => {
    const r = await mergeOne('fast-deliver', (taskQueue) => deliveryActivity(env.client, taskQueue));
    expect(r.outcome).toMatchObject({ kind: 'merged', commit: COMMIT });
    expect(r.signalled).toEqual([]);
  });

  it('leaves a convoy the merge section told to it, and tells the merge request the convoy knows', async () => {
    for (const told of [true, false]) {
      const asked: { convoy?: { convoyId: string } }[] = [];
      const r = await mergeOne(
        `fast-deliver-convoy-${told}`,
        (taskQueue) => {
          const { deliverMergeOutcome } = deliveryActivity(env.client, taskQueue);
          return {
            deliverMergeOutcome: (raw: Parameters<typeof deliverMergeOutcome>[0]) => {
              asked.push(raw);
              return deliverMergeOutcome(raw);
            },
          };
        },
        { told },
      );
      expect(r.outcome).toMatchObject({ kind: 'merged', commit: COMMIT, convoyTold: true });
      // Told by the section: the refinery tells the merge request only; else the convoy (gone here) as well.
      expect(asked.map((a) => a.convoy?.convoyId)).toEqual([told ? undefined : 'fast-convoy']);
    }
  });

  it('signals the outcome when the local activity keeps failing', async () => {
    let tries = 0;
    const r = await mergeOne('fast-deliver-fallback', () => ({
      deliverMergeOutcome: () => {
        tries++;
        return Promise.reject(new Error('the frontend is unreachable (stub)'));
      },
    }));
    expect(r.outcome).toMatchObject({ kind: 'merged', commit: COMMIT });
    expect(tries).toBe(3);
    expect(r.signalled).toEqual(['mergeResult']);
  });

  it('keeps an outcome its merge request was not there to hear, and gives it to the ticket announced again', async () => {
    const rig = testRig({ name: 'fast-deliver-late', batchSize: 1 });
    const input = {
      mrId: 'mr:fast-deliver-late-1:1',
      bead: { id: 'fast-deliver-late-1', title: 'late', priority: 2 },
      rig,
      round: 1,
      branch: 'gt/fast-deliver-late-1',
      headSha: '2'.repeat(40),
      targetBranch: rig.branch,
    };
    const told: boolean[] = [];
    const merges: number[] = [];
    const outcome = await withWorker(
      env,
      (taskQueue) => {
        const town = createTownActivities({ client: env.client, taskQueue, hostQueue: taskQueue, gtHome: '/none' });
        const { deliverMergeOutcome } = deliveryActivity(env.client, taskQueue);
        return {
          ...createRigConfigActivities({ client: env.client }),
          enqueueMergeRequest: (raw: Parameters<typeof town.enqueueMergeRequest>[0]) => town.enqueueMergeRequest(raw),
          mergeCandidate: landsAtOnce(merges),
          deliverMergeOutcome: async (raw: Parameters<typeof deliverMergeOutcome>[0]) => {
            const r = await deliverMergeOutcome(raw);
            told.push(r.mergeRequest);
            return r;
          },
        };
      },
      async (taskQueue) => {
        // A refinery that continues as new after every section: the kept outcome must ride along.
        const start = refineryStart({ taskQueue, input: { rig, continueAsNewEvery: 1 } });
        await env.client.workflow.start(start.workflowType, start.options);
        // The bead's hand-off (activities/town.ts queueMergeRequest, as its local activity runs it), and a merge
        // request that has not started yet.
        const town = createTownActivities({ client: env.client, taskQueue, hostQueue: taskQueue, gtHome: '/none' });
        expect(await town.queueMergeRequest({ rig, ticket: mergeTicket(input) })).toMatchObject({ queued: true });
        const refinery = env.client.workflow.getHandle(refineryWorkflowId(rig.name));
        await eventually(async () => (await refinery.query(refineryStateQuery)).recent.length > 0 && told.length > 0);
        expect((await refinery.query(refineryStateQuery)).recent.map((r) => r.mrId)).toEqual([input.mrId]);
        expect(told).toEqual([false]);
        // It starts now, as its bead says the ticket is handed over: it announces itself again after its first wait.
        const mr = mergeRequestStart({ ...input, queued: true as const });
        const handle = await env.client.workflow.start(mr.workflowType, { ...mr.options, taskQueue });
        return (await handle.result()) as MergeOutcome;
      },
    );
    expect(outcome).toMatchObject({ kind: 'merged', commit: COMMIT });
    // Merged once; told twice: to nobody, then to the merge request whose ticket came again.
    expect(merges).toEqual([1]);
    expect(told).toEqual([false, true]);
  });
});
