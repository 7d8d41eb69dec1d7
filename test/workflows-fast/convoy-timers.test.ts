/**
 * Fast tier, the convoy's timer and its continue-as-new: a bead whose report never reaches the convoy is caught by
 * the reconcile timer (`reconcileEvery`), and a convoy forced to continue as new every 50 events carries its DAG
 * through every continuation and still lands. The real convoy workflow on the time-skipping test server; starting
 * beads is a stub that reports each bead merged at once (all but one).
 */
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ConvoyResult } from '../../domain/convoy';
import { convoyWorkflowId } from '../../domain/ids';
import { beadReportSignal, convoyStateQuery } from '../../domain/messages';
import { skipReason, startTimeSkipping, withWorker } from '../helpers/time-skipping';

const MINUTE = 60_000;
const BEADS = 12;
/** Late in the chain: by the time the convoy waits on it, its history is past the forced threshold whatever the timing. */
const LOST = 'fast-cvy-b9';

describe.skipIf(skipReason)('convoy timers and continue-as-new (time-skipping)', { timeout: 30_000 }, () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await startTimeSkipping();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  it('finds a lost report on its reconcile timer and lands a 12-bead chain across continuations', async () => {
    const convoyId = 'fast-cvy';
    const started: string[] = [];
    const inspected: string[] = [];
    const activities = () => ({
      prepareConvoy: () => Promise.resolve({ targetBranch: 'main', capacity: 4 }),
      /**
       * Every bead merges just after it started and reports so, except one whose report is lost on the way. Idempotent
       * like the real start: a bead started before (a local activity run again) is `existing`, and reports once.
       */
      startConvoyBeads: async ({ beads }: { beads: { id: string }[] }) => {
        const repeated = beads.filter(({ id }) => started.includes(id)).map(({ id }) => id);
        for (const { id } of beads) {
          if (repeated.includes(id)) continue;
          started.push(id);
          // Reported from within the start, so the report is in before the convoy's task completes. A report sent
          // on a timer instead could reach the time-skipping test server while it completed a task that continues
          // as new; it then answered "invalid history builder state for action" and never gave the convoy another
          // task (seen under load; the real server refuses that continue-as-new and the task is retried).
          if (id !== LOST)
            await env.client.workflow
              .getHandle(convoyWorkflowId(convoyId))
              .signal(beadReportSignal, { beadId: id, status: 'closed', commit: 'a'.repeat(40) });
        }
        return {
          results: beads.map(({ id }) => ({ beadId: id, outcome: repeated.includes(id) ? 'existing' : 'started' })),
          capacity: 4,
        };
      },
      /** Every bead asked about has merged (it just could not say so). */
      inspectConvoyBeads: ({ beadIds }: { beadIds: string[] }) => {
        inspected.push(...beadIds);
        return Promise.resolve(beadIds.map((beadId) => ({ beadId, status: 'closed', commit: 'b'.repeat(40) })));
      },
    });
    const spec = {
      id: convoyId,
      title: 'fast chain',
      rig: 'fast',
      beads: Array.from({ length: BEADS }, (_, i) => ({
        id: `b${i + 1}`,
        title: `bead ${i + 1}`,
        dependsOn: i ? [`b${i}`] : [],
      })),
    };
    const r = await withWorker(env, activities, async (taskQueue) => {
      const handle = await env.client.workflow.start('convoyWorkflow', {
        workflowId: convoyWorkflowId(convoyId),
        taskQueue,
        args: [{ spec, options: { continueAsNewAfterEvents: 50, reconcileEvery: 10 * MINUTE } }],
      });
      const value = (await handle.result()) as ConvoyResult;
      const state = await handle.query(convoyStateQuery);
      let runs = 0;
      for (let runId: string | undefined = handle.firstExecutionRunId; runId; runs++) {
        const { events } = await env.client.workflow.getHandle(handle.workflowId, runId).fetchHistory();
        runId = events!.at(-1)!.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
      }
      return { value, state, runs };
    });

    expect(r.value).toMatchObject({ convoyId, status: 'landed', counts: { total: BEADS, closed: BEADS } });
    expect(started).toEqual(spec.beads.map((b) => `${convoyId}-${b.id}`));
    // The lost report was found by asking about the running bead when the reconcile timer fired.
    expect(inspected).toContain(LOST);
    expect(r.state.beads.find((b) => b.beadId === LOST)).toMatchObject({ status: 'closed', commit: 'b'.repeat(40) });
    const lostRecord = r.state.beads.find((b) => b.beadId === LOST)!;
    expect(Date.parse(lostRecord.endedAt!) - Date.parse(lostRecord.startedAt!)).toBeGreaterThanOrEqual(10 * MINUTE);
    // Forced continuations (how many depends on when reports land; at least the one before waiting on the lost bead),
    // each counted in the state it carried.
    expect(r.runs).toBeGreaterThanOrEqual(2);
    expect(r.state.continuedAsNew).toBe(r.runs - 1);
  });

  it('takes a report that came in before the task that started its bead completed (local start, task refused)', async () => {
    // Each bead reports while its start is still running. Once the history is past the forced threshold, the task
    // that started a bead ends in a continue-as-new the server refuses (a signal came in), so the retried task sees
    // the report before the bead is running, starts it again and finds it `existing`.
    const convoyId = 'fast-early';
    const started: string[] = [];
    const repeats: string[] = [];
    const inspected: string[] = [];
    const activities = () => ({
      prepareConvoy: () => Promise.resolve({ targetBranch: 'main', capacity: 4 }),
      startConvoyBeads: async ({ beads }: { beads: { id: string }[] }) => {
        const results = [];
        for (const { id } of beads) {
          if (started.includes(id)) {
            repeats.push(id);
            results.push({ beadId: id, outcome: 'existing' });
            continue;
          }
          started.push(id);
          await env.client.workflow
            .getHandle(convoyWorkflowId(convoyId))
            .signal(beadReportSignal, { beadId: id, status: 'closed', commit: 'c'.repeat(40) });
          results.push({ beadId: id, outcome: 'started' });
        }
        return { results, capacity: 4 };
      },
      inspectConvoyBeads: ({ beadIds }: { beadIds: string[] }) => {
        inspected.push(...beadIds);
        return Promise.resolve(beadIds.map((beadId) => ({ beadId, status: 'closed', commit: 'd'.repeat(40) })));
      },
    });
    const spec = {
      id: convoyId,
      title: 'early reports',
      rig: 'fast',
      beads: Array.from({ length: BEADS }, (_, i) => ({
        id: `b${i + 1}`,
        title: `bead ${i + 1}`,
        dependsOn: i ? [`b${i}`] : [],
      })),
    };
    const value = await withWorker(env, activities, async (taskQueue) => {
      const handle = await env.client.workflow.start('convoyWorkflow', {
        workflowId: convoyWorkflowId(convoyId),
        taskQueue,
        args: [{ spec, options: { continueAsNewAfterEvents: 50, reconcileEvery: 60 * MINUTE } }],
      });
      return (await handle.result()) as ConvoyResult;
    });
    expect(value).toMatchObject({ convoyId, status: 'landed', counts: { total: BEADS, closed: BEADS } });
    expect(started).toEqual(spec.beads.map((b) => `${convoyId}-${b.id}`));
    expect(repeats.length, 'a start was repeated: the refused task happened').toBeGreaterThan(0);
    // Every report was taken when it came: none had to be found by the reconcile timer.
    expect(inspected).toEqual([]);
  });
});
