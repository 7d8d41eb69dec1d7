/**
 * Fast tier, tickets taken back from the refinery's queue (workflows/refinery.ts): a withdraw naming a head takes only
 * that ticket, and one without a head every ticket of its merge request, as a cancelled bead sends when its run's
 * supervision may have handed the round's ticket over without the bead hearing which head (workflows/bead.ts); and a
 * ticket of a withdrawn merge request is never queued again, whether it comes late or its section fails; nor is its
 * outcome kept for a merge request that will not come, where it would push out one a merge request yet to start asks
 * for. The real refinery workflow on the time-skipping test server, paused (or with a stubbed merge).
 */
import { ApplicationFailure } from '@temporalio/common';
import type { WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { refineryWorkflowId } from '../../domain/ids';
import { enqueueSignal, refineryStateQuery, withdrawSignal } from '../../domain/messages';
import type { MergeTicketInput } from '../../domain/refinery';
import { eventually } from '../helpers/town';
import {
  deliveryActivity,
  patchIds,
  skipReason,
  startTimeSkipping,
  testRig,
  withWorker,
} from '../helpers/time-skipping';

const MERGED = 'e'.repeat(40);

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

  /** The real refinery of rig `name`, paused, and its queue as `<mrId>@<the head's first digit>`; terminated after. */
  const withPausedRefinery = <T>(
    name: string,
    body: (signal: WorkflowHandle['signal'], queue: () => Promise<string[]>) => Promise<T>,
  ) =>
    withWorker(
      env,
      (taskQueue) => ({
        ...deliveryActivity(env.client, taskQueue),
        mergeCandidate: () => Promise.reject(new Error('a paused refinery merges nothing (stub)')),
      }),
      async (taskQueue) => {
        const rig = testRig({ name });
        const handle = await env.client.workflow.start('refineryWorkflow', {
          workflowId: refineryWorkflowId(rig.name),
          taskQueue,
          args: [{ rig, paused: true }],
        });
        const queue = async () =>
          (await handle.query(refineryStateQuery)).queue.map((t) => `${t.mrId}@${t.headSha[0]}`);
        const result = await body(handle.signal.bind(handle), queue);
        await handle.terminate('test over');
        return { result, history: await handle.fetchHistory() };
      },
    );

  it('takes back the named head, or every head of a merge request when none is named', async () => {
    const { result: queued } = await withPausedRefinery('fast-withdraw', async (signal, queue) => {
      for (const t of [ticket('a', '1'), ticket('a', '2'), ticket('b', '3'), ticket('c', '4')])
        await signal(enqueueSignal, t as never);
      await eventually(async () => (await queue()).length === 4, 10_000, 'four tickets queued');
      await signal(withdrawSignal, { mrId: 'mr:a:1' });
      await signal(withdrawSignal, { mrId: 'mr:b:1', headSha: '9'.repeat(40) });
      await signal(withdrawSignal, { mrId: 'mr:c:1', headSha: '4'.repeat(40) });
      // Signals are taken in order: once c's is, a's and b's were too.
      await eventually(async () => !(await queue()).includes('mr:c:1@4'), 10_000, 'c withdrawn');
      return queue();
    });
    expect(queued).toEqual(['mr:b:1@3']);
  });

  it('drops a ticket that comes after its merge request was withdrawn, whatever its head', async () => {
    const { result: queued, history } = await withPausedRefinery('fast-withdraw-late', async (signal, queue) => {
      // A cancelled bead's withdraw without a head, a cancelled merge request's with its head; then the tickets of
      // both come late (a supervision attempt handing its round's over, a merge request's announcement in flight).
      await signal(withdrawSignal, { mrId: 'mr:a:1' });
      await signal(withdrawSignal, { mrId: 'mr:b:1', headSha: '2'.repeat(40) });
      for (const t of [ticket('a', '1'), ticket('b', '2'), ticket('b', '3'), ticket('c', '4')])
        await signal(enqueueSignal, t as never);
      await eventually(async () => (await queue()).includes('mr:c:1@4'), 10_000, 'c queued');
      return queue();
    });
    expect(queued).toEqual(['mr:c:1@4']);
    // The new branch's marker is in the history, and the history replays on the code that made it.
    expect(patchIds(history).join(' ')).toContain('refinery-drops-withdrawn');
    await Worker.runReplayHistory({ workflowBundle: { codePath: inject('workflowBundlePath') } }, history);
  });

  it('does not put a withdrawn ticket back into the queue when its section fails', async () => {
    const merged: string[] = [];
    let fail!: () => void;
    const failed = new Promise<void>((resolve) => (fail = resolve));
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const queued = await withWorker(
      env,
      (taskQueue) => ({
        ...deliveryActivity(env.client, taskQueue),
        // a's section fails on infrastructure once told to; any later one stays in its section until the test ends.
        mergeCandidate: async ({ tickets }: { tickets: { mrId: string }[] }) => {
          merged.push(...tickets.map((t) => t.mrId));
          await (merged.length === 1 ? failed : released);
          throw ApplicationFailure.nonRetryable('the repository is unreachable (stub)');
        },
      }),
      async (taskQueue) => {
        const rig = testRig({ name: 'fast-withdraw-section' });
        const handle = await env.client.workflow.start('refineryWorkflow', {
          workflowId: refineryWorkflowId(rig.name),
          taskQueue,
          args: [{ rig }],
        });
        const state = () => handle.query(refineryStateQuery);
        try {
          await handle.signal(enqueueSignal, ticket('a', '1') as never);
          await eventually(() => merged.length === 1, 10_000, "a's section");
          // Withdrawn while its section runs (its bead cancelled); then the section fails, and c comes.
          await handle.signal(withdrawSignal, { mrId: 'mr:a:1' });
          fail();
          await handle.signal(enqueueSignal, ticket('c', '4') as never);
          await eventually(() => merged.length >= 2, 10_000, 'the next section');
          const left = (await state()).queue.map((t) => t.mrId);
          await handle.terminate('test over');
          return left;
        } finally {
          release();
        }
      },
    );
    expect(merged).toEqual(['mr:a:1', 'mr:c:1']);
    expect(queued).toEqual([]);
  });

  it('keeps no outcome of a withdrawn merge request, so none pushes out one a merge request yet to start asks for', async () => {
    const rig = testRig({ name: 'fast-withdraw-kept', batchSize: 1 });
    // The ticket of a merge request that starts late (its bead handed the ticket over, or took its merged branch as
    // handed in): merged before it starts, and announced again by it.
    const late = ticket('late', '1');
    // Cancelled merges, each kind as many as the outcomes the refinery keeps: ten withdrawn after their outcomes were
    // kept (cancelled before their merge requests started), ten while their sections ran.
    const cancelled = Array.from({ length: 20 }, (_, i) => ticket(`gone${i}`, String((i % 8) + 2)));
    const midSection = new Set(cancelled.slice(10).map((t) => t.mrId));
    const heard: string[] = [];
    let letGo: (() => void) | undefined;
    const history = await withWorker(
      env,
      (taskQueue) => {
        const { deliverMergeOutcome } = deliveryActivity(env.client, taskQueue);
        return {
          // No merge request is running: every outcome goes unheard (and is kept, or not).
          deliverMergeOutcome: async (raw: Parameters<typeof deliverMergeOutcome>[0]) => {
            heard.push(raw.result.mrId);
            return deliverMergeOutcome(raw);
          },
          mergeCandidate: async ({ tickets }: { tickets: { mrId: string }[] }) => {
            if (midSection.has(tickets[0]!.mrId)) await new Promise<void>((resolve) => (letGo = resolve));
            return {
              kind: 'merged',
              commit: MERGED,
              merged: tickets.map((t) => ({ mrId: t.mrId, commit: MERGED })),
              gateRuns: 1,
              alreadyMerged: false,
            };
          },
        };
      },
      async (taskQueue) => {
        const refinery = await env.client.workflow.start('refineryWorkflow', {
          workflowId: refineryWorkflowId(rig.name),
          taskQueue,
          args: [{ rig }],
        });
        const told = (n: number, what: string) => eventually(() => heard.length === n, 10_000, what);
        await refinery.signal(enqueueSignal, late as never);
        await told(1, "late's outcome, unheard");
        for (const [i, t] of cancelled.entries()) {
          await refinery.signal(enqueueSignal, t as never);
          if (midSection.has(t.mrId)) {
            await eventually(() => letGo !== undefined, 10_000, `${t.mrId}'s section`);
            await refinery.signal(withdrawSignal, { mrId: t.mrId });
            const go = letGo!;
            letGo = undefined;
            go();
          }
          await told(i + 2, `${t.mrId}'s outcome`);
          if (!midSection.has(t.mrId)) await refinery.signal(withdrawSignal, { mrId: t.mrId, headSha: t.headSha });
        }
        // The late merge request announces its ticket: the outcome kept for it is given again.
        await refinery.signal(enqueueSignal, late as never);
        await told(22, "late's outcome, given again");
        await refinery.terminate('test over');
        return refinery.fetchHistory();
      },
    );
    expect(heard.filter((mrId) => mrId === late.mrId)).toHaveLength(2);
    expect(patchIds(history).join(' ')).toContain('refinery-forgets-withdrawn-outcomes');
    await Worker.runReplayHistory({ workflowBundle: { codePath: inject('workflowBundlePath') } }, history);
  });
});
