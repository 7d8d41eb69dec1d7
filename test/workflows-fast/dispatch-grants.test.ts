/**
 * Fast tier, how the dispatch gate delivers its grants: all that are due at once, from one local activity (no grant
 * signal, and so no acknowledgement to wait for before the next), and a grant to a bead workflow that is gone frees
 * its slot for the next run. Real bead, merge-request and dispatch-gate workflows, stubbed activities.
 */
import { Client } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDispatchActivities } from '../../activities/dispatch';
import type { BeadResult } from '../../domain/bead';
import {
  dispatchGateWorkflowId,
  dispatchStateQuery,
  gateSettingsOf,
  pauseDispatchUpdate,
  resumeDispatchUpdate,
} from '../../domain/dispatch';
import { beadWorkflowId } from '../../domain/ids';
import { dispatchGateStart } from '../../domain/starts';
import { beadActivities } from '../helpers/bead-stubs';
import { skipReason, startTimeSkipping, testRig, withWorker } from '../helpers/time-skipping';

describe.skipIf(skipReason)('dispatch grants (time-skipping)', { timeout: 30_000 }, () => {
  let env: TestWorkflowEnvironment;
  beforeAll(async () => {
    env = await startTimeSkipping();
  });
  afterAll(async () => {
    await env?.teardown();
  });

  /** The bead stubs, with the gate's deliveries counted: how many grants each call carried. */
  const counted = (taskQueue: string, calls: number[]) => {
    const stubs = beadActivities(env, taskQueue, () => 'done', 0, { supervisionCancelled: [], escalations: [] });
    return {
      ...stubs,
      deliverDispatchGrants: (input: Parameters<typeof stubs.deliverDispatchGrants>[0]) => {
        calls.push(input.grants.length);
        return stubs.deliverDispatchGrants(input);
      },
    };
  };

  it('delivers every grant that is due in one local activity, without a signal each', async () => {
    const rig = testRig({ name: 'fast-grants-at-once', maxPolecats: 3 });
    const calls: number[] = [];
    const r = await withWorker(
      env,
      (taskQueue) => counted(taskQueue, calls),
      async (taskQueue) => {
        const plain = new Client({ connection: env.connection });
        // Paused, the gate queues the three runs; resumed, all three are due together.
        const start = dispatchGateStart({ taskQueue, input: { rig: rig.name, settings: gateSettingsOf(rig) } });
        const gate = await plain.workflow.start(start.workflowType, start.options);
        await gate.executeUpdate(pauseDispatchUpdate, { args: [{ reason: 'queue them', by: 'test' }] });
        const beads = await Promise.all(
          ['at-once-1', 'at-once-2', 'at-once-3'].map((id) =>
            plain.workflow.start('beadWorkflow', {
              workflowId: beadWorkflowId(id),
              taskQueue,
              args: [{ bead: { id, title: id }, rig }],
            }),
          ),
        );
        while ((await gate.query(dispatchStateQuery)).waiting.length < 3)
          await new Promise((resolve) => setTimeout(resolve, 20));
        await gate.executeUpdate(resumeDispatchUpdate, { args: [{ by: 'test' }] });
        const results = await Promise.all(beads.map(async (b) => (await b.result()) as BeadResult));
        return { results, events: (await gate.fetchHistory()).events ?? [] };
      },
    );
    expect(r.results.map((b) => b.status)).toEqual(['closed', 'closed', 'closed']);
    expect(calls).toEqual([3]);
    const signalled = r.events.flatMap(
      (e) => e.signalExternalWorkflowExecutionInitiatedEventAttributes?.signalName ?? [],
    );
    expect(signalled).not.toContain('dispatchGrant');
  });

  it('frees the slot of a grant whose bead workflow is gone', async () => {
    const rig = testRig({ name: 'fast-grants-ghost', maxPolecats: 1 });
    const calls: number[] = [];
    const r = await withWorker(
      env,
      (taskQueue) => counted(taskQueue, calls),
      async (taskQueue) => {
        const plain = new Client({ connection: env.connection });
        const gate = plain.workflow.getHandle(dispatchGateWorkflowId(rig.name));
        // A run of a bead workflow that does not exist takes the rig's only slot first.
        await createDispatchActivities({ client: plain, taskQueue }).requestDispatchSlot({
          rig: rig.name,
          request: {
            beadId: 'ghost',
            runId: 'ghost/r1/a1',
            workflowId: beadWorkflowId('ghost'),
            maxPolecats: rig.maxPolecats,
            breakerThreshold: rig.policy.breakerThreshold,
            breakerProbeInterval: rig.policy.breakerProbeInterval,
          },
        });
        const beads = await Promise.all(
          ['grant-1', 'grant-2'].map((id) =>
            plain.workflow.start('beadWorkflow', {
              workflowId: beadWorkflowId(id),
              taskQueue,
              args: [{ bead: { id, title: id }, rig }],
            }),
          ),
        );
        const results = await Promise.all(beads.map(async (b) => (await b.result()) as BeadResult));
        let state = await gate.query(dispatchStateQuery);
        while (state.running.length || state.granted < 3) {
          await new Promise((resolve) => setTimeout(resolve, 20));
          state = await gate.query(dispatchStateQuery);
        }
        return { results, state };
      },
    );
    expect(r.results.map((b) => b.status)).toEqual(['closed', 'closed']);
    // The ghost's grant, then each bead's: three grants, none left running, the ghost's slot given to a bead.
    expect(r.state).toMatchObject({ granted: 3, running: [], waiting: [] });
    // One delivery each: the ghost's (gone: its slot freed), then each bead's in turn.
    expect(calls).toEqual([1, 1, 1]);
  });
});
