/**
 * Fast tier, the adaptive batch limit: a batch that fails its gates halves the next batch, one that lands whole
 * doubles it back up to the rig's batchSize, and the limit crosses continue-as-new. The real refinery workflow on the
 * time-skipping test server with a stubbed merge activity that fails every candidate holding the bad MR. A new
 * batchSize from `gt rig update` resets it to the new cap.
 */
import { Client } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { refineryWorkflowId } from '../../domain/ids';
import { enqueueSignal, pauseRefineryUpdate, refineryStateQuery, updateRigUpdate } from '../../domain/messages';
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
  mrId: `mr:lim-${n}:1`,
  beadId: `lim-${n}`,
  round: 1,
  title: `bead ${n}`,
  branch: `gt/lim-${n}`,
  headSha: String(n).repeat(40).slice(0, 40),
  targetBranch: 'main',
  enqueuedAt: n,
});
const BAD = 'mr:lim-2:1';

/**
 * A stubbed merge that records each candidate's MRs and answers `failed(ids)` when it says so, else lands them all.
 */
const mergeStub = (candidates: string[][], failed: (ids: string[]) => object | undefined) => () => ({
  mergeCandidate: ({ tickets }: { tickets: { mrId: string }[] }) => {
    const ids = tickets.map((t) => t.mrId);
    candidates.push(ids);
    return Promise.resolve(
      failed(ids) ?? {
        kind: 'merged',
        commit: 'e'.repeat(40),
        merged: ids.map((mrId) => ({ mrId, commit: 'e'.repeat(40) })),
        gateRuns: 1,
        alreadyMerged: false,
      },
    );
  },
});
/** Fails every candidate holding the bad MR. */
const mergeRecording = (candidates: string[][]) =>
  mergeStub(candidates, (ids) =>
    ids.includes(BAD)
      ? { kind: 'gates_failed', outcome: { kind: 'gates_failed', gate: 'test', feedback: 'gate failed' }, gateRuns: 1 }
      : undefined,
  );
/** CLASH conflicts whenever it is built behind another MR. */
const CLASH = 'mr:lim-2:1';
const mergeConflicting = (candidates: string[][]) =>
  mergeStub(candidates, (ids) =>
    ids.indexOf(CLASH) > 0
      ? {
          kind: 'excluded',
          mrId: CLASH,
          outcome: { kind: 'conflict', paths: ['shared.txt'], feedback: 'conflicts with the target' },
          gateRuns: 0,
        }
      : undefined,
  );

describe.skipIf(skipReason)('refinery batch limit (time-skipping)', { timeout: 30_000 }, () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await startTimeSkipping();
  });
  afterAll(async () => {
    await env?.teardown();
  });
  /** A merge stub's activities, with the refinery's real delivery of outcomes beside them. */
  const withDelivery = (stub: () => object) => (taskQueue: string) => ({
    ...deliveryActivity(env.client, taskQueue),
    ...stub(),
  });

  it('halves the batch after a failed one, doubles it after a landed one, and carries it across continue-as-new', async () => {
    const candidates: string[][] = [];
    const activities = mergeRecording(candidates);
    const carried = await withWorker(env, withDelivery(activities), async (taskQueue) => {
      const client = new Client({ connection: env.connection });
      const rig = testRig({ name: 'fast-lim', batchSize: 4 });
      const handle = await client.workflow.start('refineryWorkflow', {
        workflowId: refineryWorkflowId(rig.name),
        taskQueue,
        args: [{ rig, continueAsNewEvery: 1, paused: true }],
      });
      const latest = () => client.workflow.getHandle(handle.workflowId);
      const pause = (paused: boolean) => latest().executeUpdate(pauseRefineryUpdate, { args: [{ paused }] });
      const candidatesMade = async (n: number) => {
        while (candidates.length < n) await new Promise((resolve) => setTimeout(resolve, 20));
      };
      const continuations = (n: number) =>
        continuationInputs<RefineryInput>(client, handle.workflowId, handle.firstExecutionRunId, n);
      // Four waiting, the second bad: [1..4] fails, bisection lands [1], finds 2, lands [3,4] — one section.
      for (let n = 1; n <= 4; n++) await latest().signal(enqueueSignal, ticket(n) as never);
      await pause(false);
      await candidatesMade(4);
      await continuations(1);
      // Four more waiting at once: the halved limit takes two, lands them, doubles, takes the other two.
      await pause(true);
      for (let n = 5; n <= 8; n++) await latest().signal(enqueueSignal, ticket(n) as never);
      await pause(false);
      await candidatesMade(6);
      const inputs = await continuations(3);
      await latest().terminate('test over');
      return inputs;
    });

    expect(candidates).toEqual([
      ['mr:lim-1:1', BAD, 'mr:lim-3:1', 'mr:lim-4:1'],
      ['mr:lim-1:1', BAD],
      ['mr:lim-1:1'],
      ['mr:lim-3:1', 'mr:lim-4:1'],
      ['mr:lim-5:1', 'mr:lim-6:1'],
      ['mr:lim-7:1', 'mr:lim-8:1'],
    ]);
    // What each section left for the next, as it crossed continue-as-new: halved, then doubled back to the cap.
    expect(carried.slice(0, 3).map((c) => c.batchLimit)).toEqual([2, 4, 4]);
  });

  it('starts again from a new batch size set by `gt rig update`, whatever the failures before', async () => {
    const candidates: string[][] = [];
    const activities = mergeRecording(candidates);
    const limits = await withWorker(env, withDelivery(activities), async (taskQueue) => {
      const client = new Client({ connection: env.connection });
      const rig = testRig({ name: 'fast-lim-update', batchSize: 4 });
      const handle = await client.workflow.start('refineryWorkflow', {
        workflowId: refineryWorkflowId(rig.name),
        taskQueue,
        args: [{ rig, paused: true }],
      });
      const pause = (paused: boolean) => handle.executeUpdate(pauseRefineryUpdate, { args: [{ paused }] });
      const candidatesMade = async (n: number) => {
        while (candidates.length < n) await new Promise((resolve) => setTimeout(resolve, 20));
      };
      const state = () => handle.query(refineryStateQuery);
      // The failed batch of four halves the limit: the section's end (its four outcomes delivered) leaves 2.
      for (let n = 1; n <= 4; n++) await handle.signal(enqueueSignal, ticket(n) as never);
      await pause(false);
      await candidatesMade(4);
      while ((await state()).recent.length < 4) await new Promise((resolve) => setTimeout(resolve, 20));
      await pause(true);
      const afterFailure = (await state()).batchLimit;
      // The operator raises the cap to 6: the next batch takes six at once.
      await handle.executeUpdate(updateRigUpdate, { args: [{ batchSize: 6 }] });
      const afterUpdate = (await state()).batchLimit;
      for (let n = 5; n <= 10; n++) await handle.signal(enqueueSignal, ticket(n) as never);
      await pause(false);
      await candidatesMade(5);
      await handle.terminate('test over');
      return { afterFailure, afterUpdate };
    });

    expect(limits).toEqual({ afterFailure: 2, afterUpdate: 6 });
    expect(candidates[4]).toEqual([
      'mr:lim-5:1',
      'mr:lim-6:1',
      'mr:lim-7:1',
      'mr:lim-8:1',
      'mr:lim-9:1',
      'mr:lim-10:1',
    ]);
  });
  it('tries an MR that conflicts behind another in its batch again once the batch has landed, instead of sending it back', async () => {
    const candidates: string[][] = [];
    const recent = await withWorker(env, withDelivery(mergeConflicting(candidates)), async (taskQueue) => {
      const client = new Client({ connection: env.connection });
      const rig = testRig({ name: 'fast-clash', batchSize: 4 });
      const handle = await client.workflow.start('refineryWorkflow', {
        workflowId: refineryWorkflowId(rig.name),
        taskQueue,
        args: [{ rig, paused: true }],
      });
      for (let n = 1; n <= 3; n++) await handle.signal(enqueueSignal, ticket(n) as never);
      await handle.executeUpdate(pauseRefineryUpdate, { args: [{ paused: false }] });
      const state = () => handle.query(refineryStateQuery);
      while ((await state()).recent.length < 3) await new Promise((resolve) => setTimeout(resolve, 20));
      const { recent } = await state();
      await handle.terminate('test over');
      return recent;
    });

    // [1, 2, 3]: 2 conflicts behind 1; the rest lands; then 2 alone, on the target with 1 and 3, lands too.
    expect(candidates).toEqual([['mr:lim-1:1', CLASH, 'mr:lim-3:1'], ['mr:lim-1:1', 'mr:lim-3:1'], [CLASH]]);
    expect(recent.map((r) => [r.mrId, r.outcome])).toEqual([
      ['mr:lim-1:1', 'merged'],
      ['mr:lim-3:1', 'merged'],
      [CLASH, 'merged'],
    ]);
  });
});
